"""bzoo prior-check: what functions do one or more priors imply on a dataset, before any fitting?"""
from zoo import recipes

from .common import (add_data_arguments, add_model_arguments, add_run_arguments, build_model, check_output,
                     check_run_arguments, dataset_name, flag, load_data, seed_everything, self_contained)


def add_arguments(parser):
    add_data_arguments(parser)
    add_model_arguments(parser, many_priors=True)
    parser.add_argument("--num-samples", type=int, default=200, help="functions drawn per prior, at least 2")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="inputs to evaluate on")
    parser.add_argument("--sites", action="append", metavar="GLOB",
                        help="prior sites to store in the .nc (repeatable; default all)")
    add_run_arguments(parser)


def run(args):
    from fnmatch import fnmatchcase

    import matplotlib

    matplotlib.use("Agg")
    from inference import arviz_io, plots
    from core.checks import check, integer
    from inference.prior_predictive import prior_predictive
    from zoo.cli import UserError
    from zoo.runs import RunFolder

    device = check_run_arguments(args)
    check({"num_samples": args.num_samples}, {"num_samples": integer(2)}, UserError, flag)
    specs = args.prior or [recipes.PRIOR]
    dataset = load_data(args)
    split = getattr(dataset, args.split)
    models = {}
    for spec in specs:  # every prior is parsed and checked on the model before any draw
        seed_everything(args.seed)
        model = build_model(args, dataset, prior=spec)
        canonical = str(model.config()["prior"])
        if canonical in {str(m.config()["prior"]) for m in models.values()}:
            raise UserError(f"--prior '{spec}' is given twice (as {canonical})")
        models[spec] = model
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
    keys = ["logit_scale", "degenerate_share", "entropy_mean"]
    if any("attention_entropy_mean" in r for r in report.values()):
        keys.append("attention_entropy_mean")
    width = max(len(s) for s in specs)
    print(f"{dataset.name} ({args.split}, {len(split)} inputs), bayes={args.bayes}, {args.num_samples} draws per prior")
    print(f"{'prior':{width}s}  " + "  ".join(f"{k:>22s}" for k in keys))
    for spec, r in report.items():
        print(f"{spec:{width}s}  " + "  ".join(f"{r.get(k, float('nan')):22.4g}" for k in keys))
    print(f"wrote {out.target}")
    return 0
