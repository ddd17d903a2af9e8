"""The main job: where uncertainty lives x prior x guide, with peers, on one dataset.

``run_study`` fits every row of ``recipes.STUDY`` (or a chosen subset) on the same
data with the same seed, evaluates all of them on the same test set (and the OOD
set where one exists), compares them with ``inference.compare`` (metric table,
PSIS-LOO, overlaid reliability diagrams) and adds the peers a researcher would
otherwise use: the identical network trained by plain PyTorch, and aeon's
MiniRocket for accuracy on UCR data.
"""
import json
import time

import torch
from tqdm.auto import tqdm

from inference import evaluate, fit
from inference.compare import compare
from inference.mcmc import predictive_distance

from .. import recipes
from ..data.ood import ood_inputs
from .peers import minirocket, plain_pytorch


def fit_row(row, dataset, model_options, seed, device, steps_scale=1.0):
    """Fit one study row; returns (posterior, fit seconds)."""
    from ..models import TransformerClassifier

    torch.manual_seed(seed)
    model = TransformerClassifier(dataset.num_classes, input_dim=dataset.input_dim,
                                  **{**model_options, **row.get("model", {})},
                                  bayes=row.get("bayes", "weights"), prior=row.get("prior", recipes.PRIOR))
    options = recipes.fit_options(row["guide"], **row.get("options", {}))
    if "steps" in options:
        options["steps"] = max(1, int(options["steps"] * steps_scale))
    started = time.perf_counter()
    posterior = fit(model, dataset.train, guide=row["guide"], seed=seed, device=device, progress=False, **options)
    return posterior, time.perf_counter() - started


def run_study(dataset, out, rows=None, seed=0, device="cpu", num_samples=recipes.NUM_SAMPLES, steps_scale=1.0,
              reference=None, peers=True, model_options=None):
    """Fit and compare every row; write results.json, results.md and plots into RunFolder ``out``."""
    from ..models import default_patch

    sized = {"max_len": dataset.max_len, "patch": 1 if dataset.tokens else default_patch(dataset.max_len)}
    model_options = {**recipes.MODEL, **sized, **(model_options or {})}
    rows = recipes.STUDY if rows is None else rows
    ood = ood_inputs(dataset)
    test = (dataset.test.x, dataset.test.y, dataset.test.mask)
    posteriors, seconds = {}, {}
    for row in tqdm([*rows, *([reference] if reference else [])], desc="study"):
        posteriors[row["label"]], seconds[row["label"]] = fit_row(row, dataset, model_options, seed, device,
                                                                   steps_scale)
    comparison = compare(posteriors, train=dataset.train, test=test, ood=ood,
                         num_samples=num_samples, seed=seed)
    table = {label: {**m, "fit_seconds": seconds[label]} for label, m in comparison.metrics.items()}
    if reference:
        ref_probs = _test_probs(comparison.idata[reference["label"]])
        for label, idata in comparison.idata.items():
            table[label].update(predictive_distance(_test_probs(idata), ref_probs))
    if peers:
        map_steps = max(1, int(recipes.FIT["map"]["steps"] * steps_scale))
        probs, secs = plain_pytorch(dataset, model_options, seed, map_steps, recipes.FIT["map"]["lr"], device)
        table["plain PyTorch (peer)"] = {**evaluate(probs, dataset.test.y), "fit_seconds": secs, "split": "test"}
        rocket = minirocket(dataset, seed)
        if rocket is not None:
            table["MiniRocket (peer)"] = {**evaluate(*rocket[:1], dataset.test.y), "fit_seconds": rocket[1],
                                          "split": "test"}
    comparison.metrics = table
    plots = comparison.plot(out.root)
    results = {"dataset": dataset.name, "seed": seed, "model": model_options, "rows": rows,
               "reference": reference, **comparison.to_json()}
    out.write_json("results.json", results)
    out.path("results.md").write_text(markdown(dataset, rows, reference, comparison, seed))
    return results, plots


def _test_probs(idata):
    from inference.compare import predictions

    return predictions(idata)[0]


def markdown(dataset, rows, reference, comparison, seed):
    lines = [f"# Study on {dataset.name}", "",
             f"{len(dataset.train)} training and {len(dataset.test)} test sequences, {dataset.num_classes} classes, "
             f"seed {seed}. Metrics on the test set from the posterior predictive (lower is better except "
             "accuracy and OOD AUROC/AUPR). `fit_seconds` is wall time on this machine.", "",
             "| row | where | prior | guide | options |", "|---|---|---|---|---|"]
    for row in [*rows, *([reference] if reference else [])]:
        lines.append(f"| {row['label']} | {row.get('bayes', 'weights')} | {row.get('prior', recipes.PRIOR)} | "
                     f"{row['guide']} | {json.dumps(recipes.fit_options(row['guide'], **row.get('options', {})))} |")
    lines += ["", "## Results", "", comparison.markdown().replace("| run | data |", "| run | data |"),
              "", "Plots: `reliability.png`, `metrics.png`" + (", `loo_compare.png`" if comparison.loo is not None else "")
              + "."]
    return "\n".join(lines) + "\n"
