"""bzoo study: the main job, the comparison of where uncertainty lives x prior x guide, with peers."""
from zoo import recipes
from zoo.runs import RunFolder
from zoo.study import run_study

from .common import add_data_arguments, check_device, load_data, seed_everything


def add_arguments(parser):
    add_data_arguments(parser)
    labels = [row["label"] for row in recipes.STUDY]
    parser.add_argument("--methods", help=f"comma-separated subset of the rows: {', '.join(labels)} (default all)")
    parser.add_argument("--reference", action="store_true",
                        help="add NUTS on a small transformer as the reference row (minutes)")
    parser.add_argument("--no-peers", action="store_true", help="skip the plain PyTorch and MiniRocket peers")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every row's optimizer steps (e.g. 0.05 for a smoke run)")
    parser.add_argument("--num-samples", type=int, default=recipes.NUM_SAMPLES, help="predictive draws (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/study-DATASET-SEED)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a study already in --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")


def select_rows(methods):
    if not methods:
        return recipes.STUDY
    by_label = {row["label"]: row for row in recipes.STUDY}
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in by_label]
    if unknown:
        raise ValueError(f"--methods: unknown row '{unknown[0]}'; rows are: {', '.join(by_label)}")
    return [by_label[m] for m in wanted]


def run(args):
    device = check_device(args.device)
    rows = select_rows(args.methods)
    name = "data" if args.data else args.dataset
    out = RunFolder(args.out or f"runs/study-{name}-{args.seed}", args.overwrite)
    dataset = load_data(args)
    seed_everything(args.seed)
    results, plots = run_study(dataset, out, rows, seed=args.seed, device=device, num_samples=args.num_samples,
                               steps_scale=args.steps_scale, reference=recipes.REFERENCE if args.reference else None,
                               peers=not args.no_peers)
    out.record({"command": "study", "dataset": dataset.name, "rows": rows, "steps_scale": args.steps_scale,
                "num_samples": args.num_samples, "device": str(device)}, args.seed)
    width = max(len(label) for label in results["metrics"])
    print(f"{'row':{width}s}  accuracy     nll     ece   brier  fit_s")
    for label, m in results["metrics"].items():
        print(f"{label:{width}s}  {m['accuracy']:8.4f} {m['nll']:7.4f} {m['ece']:7.4f} {m['brier']:7.4f} "
              f"{m['fit_seconds']:6.1f}")
    print(f"wrote {out.root}/results.md, results.json and {len(plots)} plots")
    return 0
