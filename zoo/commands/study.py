"""bzoo study: the main job, every row and peer over datasets x seeds, resumable, here or on Dask; writes results.md.

Its flags are ``zoo.options.STUDY``, the same schema ``run_study`` checks its arguments against."""


def run(args):
    from zoo.options import STUDY
    from zoo.study import run_study

    from .common import check_device

    check_device(args.device)
    results, folder = run_study(**{name: getattr(args, name) for name in STUDY.names()})
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
