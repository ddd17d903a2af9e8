"""bzoo prior-check: what functions do one or more priors imply on a dataset, before any fitting?"""
import matplotlib

matplotlib.use("Agg")

from inference import arviz_io, plots  # noqa: E402
from inference.prior_predictive import prior_predictive  # noqa: E402
from zoo import recipes  # noqa: E402
from zoo.runs import RunFolder  # noqa: E402

from .common import (add_data_arguments, add_model_arguments, add_run_arguments, build_model,  # noqa: E402
                     check_device, load_data, seed_everything)

NAME = "prior-check"
HELP = "prior predictive check: logit scale, predictive entropy and degenerate functions per prior, side by side"


def add_arguments(parser):
    add_data_arguments(parser)
    add_model_arguments(parser, many_priors=True)
    parser.add_argument("--num-samples", type=int, default=200, help="functions drawn per prior (default 200)")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="inputs to evaluate on")
    parser.add_argument("--sites", action="append", metavar="GLOB",
                        help="prior sites to store in the .nc (repeatable; default all)")
    add_run_arguments(parser)


def run(args):
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2, got {args.num_samples}")
    specs = args.prior or [recipes.PRIOR]
    if len(set(specs)) < len(specs):
        raise ValueError(f"--prior given twice with the same spec: {specs}")
    device = check_device(args.device)
    out = RunFolder(args.out or f"runs/prior-check-{args.dataset if not args.data else 'data'}-{args.seed}",
                    args.overwrite)
    dataset = load_data(args)
    split = getattr(dataset, args.split)
    checks, report = [], {}
    for i, spec in enumerate(specs):
        seed_everything(args.seed)
        model = build_model(args, dataset, prior=spec).to(device)
        mask = None if split.mask is None else split.mask.to(device)
        check = prior_predictive(model, split.x.to(device), args.num_samples, mask, label=spec)
        name = f"prior_{i}.nc"
        arviz_io.write(check.to_arviz(args.sites, y=split.y, seed=args.seed), out.path(name))
        checks.append(check)
        report[spec] = {**check.summary(), "file": name}
    plots.prior_check(checks, out.path("prior_check.png"))
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
    print(f"wrote {out.root}")
    return 0
