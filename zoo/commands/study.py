"""bzoo study: the main job, every row and peer over datasets x seeds, resumable, here or on Dask; writes results.md."""
from zoo import data, recipes
from zoo.study import run_study


def add_arguments(parser):
    labels = [row["label"] for row in [*recipes.STUDY, *recipes.STUDY_PEERS]]
    parser.add_argument("--datasets",
                        help=f"comma-separated shipped datasets or .npz/.csv files, or 'all' (default "
                             f"{data.DEFAULT_DATASET}; see `bzoo datasets`)")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0)")
    parser.add_argument("--methods", help=f"comma-separated rows and peers: {', '.join(labels)} (default all)")
    parser.add_argument("--no-peers", action="store_true", help="leave the peers out of the default methods")
    parser.add_argument("--reference", action="store_true",
                        help="add the reference posterior (many MCLMC chains from a deep ensemble, on a small transformer) as a row; "
                             "cells then report tv, kl to it")
    parser.add_argument("--reference-arm", action="store_true",
                        help="every row and peer at the reference's network size, beside the reference row: distances "
                             "to the reference (tv, kl) are reported in this arm only, where they measure "
                             "approximation error on one network")
    parser.add_argument("--near-ood", action="store_true",
                        help="the near-OOD arm: each dataset (of 3 or more classes) trained without its last class, "
                             "whose test series are the OOD set")
    parser.add_argument("--quick", action="store_true",
                        help=f"a fast sweep: steps x{recipes.QUICK['steps_scale']}, {recipes.QUICK['samples']} draws "
                             "(docs/study.md)")
    parser.add_argument("--sweep", action="store_true",
                        help=f"the full sweep's budget: steps x{recipes.SWEEP['steps_scale']}, "
                             f"{recipes.SWEEP['samples']} draws, at most {recipes.SWEEP_GRID} values per selection "
                             "grid (docs/study.md)")
    parser.add_argument("--steps-scale", type=float, help="multiply every row's optimizer steps (default 1, or --quick's or --sweep's; this flag overrides them)")
    parser.add_argument("--num-samples", type=int,
                        help=f"predictive draws on test and OOD (default {recipes.EVALUATION['samples']})")
    parser.add_argument("--jobs", type=int, help="run cells on a local Dask cluster of N worker processes (default: cells run here, one by one)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run cells on an existing Dask cluster (default: none)")
    parser.add_argument("--shortest-first", action="store_true",
                        help="with --jobs/--scheduler, start the cheapest cells first, banking the most finished cells "
                             "before a deadline (default: longest first, the shortest total time)")
    parser.add_argument("--threads", type=int, help="torch threads per cell (default: the cores / --jobs)")
    parser.add_argument("--memory-budget", metavar="SIZE",
                        help="memory one cell may use, e.g. 4G (default: half the available memory / concurrent cells)")
    parser.add_argument("--out", metavar="DIR", help="study folder (default runs/study-DATASET-SEEDS); rerun to resume")
    parser.add_argument("--overwrite", action="store_true",
                        help="accept a study folder of another configuration (shared cells kept, nothing deleted)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the finished cells of this study in --out, list the missing ones "
                             "(with --out alone: the study its study.json names)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    from .common import check_device

    check_device(args.device)
    results, folder = run_study(args.out, args.datasets, args.seeds, args.methods, quick=args.quick,
                                sweep=args.sweep, peers=not args.no_peers, reference=args.reference,
                                steps_scale=args.steps_scale,
                                num_samples=args.num_samples, jobs=args.jobs, scheduler=args.scheduler,
                                memory_budget=args.memory_budget, overwrite=args.overwrite, device=args.device,
                                threads=args.threads, progress=not args.no_progress,
                                report_only=args.report_only, reference_arm=args.reference_arm,
                                shortest_first=args.shortest_first, near_ood=args.near_ood)
    summary = results["summary"]
    width = max([len(m) for m in results["study"]["methods"]] + [6])
    for dataset in results["study"]["datasets"]:
        print(f"{dataset}: mean over {len(results['study']['seeds'])} seed(s)")
        print(f"  {'method':{width}s}  accuracy     nll     ece   brier   fit_s")
        for method, m in summary.get(dataset, {}).items():
            cells = [m[k]["mean"] for k in ("accuracy", "nll", "ece", "brier", "fit_seconds")]
            print(f"  {method:{width}s}  " + " ".join("      –" if v is None else f"{v:7.4f}" for v in cells[:4])
                  + ("       –" if cells[4] is None else f" {cells[4]:7.1f}"))
    if results["failed"]:
        print(f"{len(results['failed'])} cell(s) failed; see results.md")
    if results["missing"]:
        cost = results["remaining_cpu_seconds"]
        print(f"{len(results['missing'])} cell(s) not run yet (listed in results.md)"
              + ("" if cost is None else f", about {cost / 3600:.1f} CPU hours"))
    print(f"wrote {folder.root}/results.md, results.json and plots")
    return 0
