"""bzoo prior-check: what functions do one or more priors imply on a dataset, before any fitting?"""
from zoo import recipes

from .common import (build_model, check_device, check_output, dataset_name, load_data, seed_everything,
                     self_contained)


def run(args):
    from fnmatch import fnmatchcase

    import matplotlib

    matplotlib.use("Agg")
    from inference import arviz_io, plots
    from inference.prior_predictive import prior_predictive
    from zoo.cli import UserError
    from zoo.runs import RunFolder

    device = check_device(args.device)  # the flags' values: zoo.options.PRIOR_CHECK, checked by zoo.cli
    specs = args.prior or [recipes.PRIOR]
    dataset = load_data(args)
    split = getattr(dataset, args.split)
    models = prior_models(args, dataset, specs)
    numbers = max(sum(v.numel() for v in m.initial_values().values()) for m in models.values())
    check_output(f"--num-samples {args.num_samples} for {len(specs)} prior(s)", args.num_samples * len(specs),
                 numbers, len(split), dataset.num_classes, len(split), ".", disk=False)
    checks = {}
    for spec, model in models.items():
        seed_everything(args.seed)
        model.to(device)
        mask = None if split.mask is None else split.mask.to(device)
        checks[spec] = prior_predictive(model, split.x.to(device), args.num_samples, mask, label=spec)
    names = list(next(iter(checks.values())).draws)
    for glob in args.sites or []:
        if not any(fnmatchcase(n, glob) for n in names):
            raise UserError(f"--sites '{glob}' matches no prior site; sites are: {', '.join(names)}")
    report = {}
    folder = args.out or f"runs/prior-check-{dataset_name(args)}-{args.seed}"
    with RunFolder(folder, args.overwrite) as out:
        check_output(f"--num-samples {args.num_samples} for {len(specs)} prior(s)", args.num_samples * len(specs),
                     numbers, len(split), dataset.num_classes, len(split), out.root, memory=False)
        for i, (spec, check_) in enumerate(checks.items()):
            self_contained(out, models[spec])
            name = f"prior_{i}.nc"
            arviz_io.write(check_.to_arviz(args.sites, y=split.y, seed=args.seed), out.path(name))
            report[spec] = {**check_.summary(), "file": name}
        plots.prior_check(list(checks.values()), out.path("prior_check.png"))
        out.write_json("prior_check.json", {"dataset": dataset.name, "split": args.split, "bayes": args.bayes,
                                             "num_samples": args.num_samples, "priors": report})
        out.record({"command": "prior-check", "dataset": dataset.name, "split": args.split, "priors": specs,
                    "model": {k: getattr(args, k) for k in (*recipes.MODEL, "dropout")}, "bayes": args.bayes,
                    "num_samples": args.num_samples, "device": str(device)}, args.seed)
    print(f"{dataset.name} ({args.split}, {len(split)} inputs), bayes={args.bayes}, {args.num_samples} draws per prior")
    print_table(report)
    print(f"wrote {out.target}")
    return 0


def prior_models(args, dataset, specs):
    """Prior spec -> the model under it, each parsed and checked on the model before any draw; a prior given twice
    (in any spelling) is refused."""
    from zoo.cli import UserError

    models = {}
    for spec in specs:
        seed_everything(args.seed)
        model = build_model(args, dataset, prior=spec)
        canonical = str(model.config()["prior"])
        if canonical in {str(m.config()["prior"]) for m in models.values()}:
            raise UserError(f"--prior '{spec}' is given twice (as {canonical})")
        models[spec] = model
    return models


def print_table(report):
    """One line per prior: logit scale, share of degenerate functions, predictive (and attention) entropy."""
    keys = ["logit_scale", "degenerate_share", "entropy_mean"]
    if any("attention_entropy_mean" in r for r in report.values()):
        keys.append("attention_entropy_mean")
    width = max(len(s) for s in report)
    print(f"{'prior':{width}s}  " + "  ".join(f"{k:>22s}" for k in keys))
    for spec, r in report.items():
        print(f"{spec:{width}s}  " + "  ".join(f"{r.get(k, float('nan')):22.4g}" for k in keys))
