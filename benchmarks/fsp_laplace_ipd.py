"""FSP-Laplace against MAP and plain Laplace on ItalyPowerDemand (one seed), at the MAP recipe's steps and lr.

MAP and Laplace run at ``recipes.FIT`` (no selection); FSP-Laplace runs at the same steps, lr and warm-up and
chooses its GP prior's lengthscale among ``LENGTHSCALES`` (``recipes.SELECTION_BUDGET`` settings) by validation
NLL on a split carved from training, refitted on all of training (``zoo.study.cell.select_and_fit``: the study's
own protocol). Test is touched once per method. Prints accuracy, NLL, ECE, fit seconds and the ratio of
FSP-Laplace's one fit (the refit) to MAP's.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.fsp_laplace_ipd [--seed 0] [--steps-scale 1]
"""
import argparse
import json
import time

import torch

from inference import evaluate
from zoo import recipes
from zoo.study.cell import fit_row, select_and_fit
from zoo.study.plan import load_dataset

LENGTHSCALES = (0.5, 1, 2)
SPEC = "gp:kernel=rbf,lengthscale={}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=recipes.NUM_SAMPLES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(recipes.DATASET)
    evaluation = {**recipes.EVALUATION, "steps_scale": args.steps_scale, "samples": args.samples}
    rows = [{"label": "map", "guide": "map", "options": recipes.FIT["map"]},
            {"label": "laplace", "guide": "laplace", "options": recipes.FIT["laplace"]},
            {"label": "fsp-laplace", "guide": "fsp-laplace", "prior": SPEC.format(1),
             "options": recipes.FIT["map"], "select": {"prior": [SPEC.format(v) for v in LENGTHSCALES]}}]
    test = dataset.test
    results = {}
    for row in rows:
        started = time.perf_counter()
        if row.get("select"):
            predict, _, posterior, chosen, selection = select_and_fit(row, dataset, args.seed, "cpu", evaluation)
        else:
            predict, _, posterior = fit_row(row, dataset, dataset.train, args.seed, "cpu", evaluation)
            chosen, selection = {}, None
        torch.manual_seed(args.seed)
        probs = predict(test.x, test.mask, args.samples)
        metrics = evaluate(probs, test.y)
        results[row["label"]] = {
            "accuracy": metrics["accuracy"], "nll": metrics["nll"], "ece": metrics["ece"],
            "fit_seconds": posterior.info["fit_seconds"], "wall_seconds": time.perf_counter() - started,
            "chosen": chosen, "validation": [(c["values"], round(c["nll"], 4)) for c in selection["candidates"]]
            if selection else None,
            **{k: posterior.info[k] for k in ("rank", "prior_rank", "subset", "num_params") if k in posterior.info}}
        print(row["label"], json.dumps(results[row["label"]]), flush=True)
    ratio = results["fsp-laplace"]["fit_seconds"] / results["map"]["fit_seconds"]
    print(f"fsp_laplace_fit_ratio (one fit of fsp-laplace / one fit of map): {ratio:.2f}")


if __name__ == "__main__":
    main()
