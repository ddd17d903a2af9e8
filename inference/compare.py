"""Several fitted posteriors of the same data in one table and one set of plots.

``compare({"map": post1, "mean_field": post2}, train=..., test=..., ood=...)``
converts each Posterior to InferenceData (or takes InferenceData as it is), then
reports predictive metrics on the test set (or, without one, on the training
set), ``az.compare`` on PSIS-LOO for the runs with more than one draw, and
overlaid reliability diagrams.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import arviz_io, plots
from .metrics import evaluate

TABLE_KEYS = ("accuracy", "nll", "ece", "aece", "brier", "entropy", "mi", "ood_auroc", "ood_aupr", "ood_auroc_mi",
              "ood_aupr_mi", "tv", "tv_max", "kl", "fit_seconds")  # the last four where a study adds them


def stacked(ds, name):
    """A (chain, draw, ...) variable as a torch tensor [S, ...]."""
    v = ds[name].values
    return torch.as_tensor(v.reshape(-1, *v.shape[2:]))


def predictions(idata):
    """(probs [S, N, K], y [N], split name): test predictions if the run has them, else the training data."""
    pred, labels = arviz_io.group(idata, "predictions"), arviz_io.group(idata, "predictions_constant_data")
    if pred is not None and "probs" in pred and labels is not None:
        return stacked(pred, "probs"), torch.as_tensor(labels["y"].values), "test"
    pp, obs = arviz_io.group(idata, "posterior_predictive"), arviz_io.group(idata, "observed_data")
    if pp is None or obs is None or "probs" not in pp:
        raise ValueError("InferenceData has neither test predictions nor posterior_predictive probs with observed_data")
    return stacked(pp, "probs"), torch.as_tensor(obs["y"].values), "train"


def metrics(idata, bins=15):
    """``evaluate`` on a run's stored predictions (test if present), OOD scores when ``ood_probs`` is stored."""
    probs, y, split = predictions(idata)
    pred = arviz_io.group(idata, "predictions")
    ood = stacked(pred, "ood_probs") if pred is not None and "ood_probs" in pred else None
    return {**evaluate(probs, y, ood, bins), "split": split}


def num_draws(idata):
    post = arviz_io.group(idata, "log_likelihood")
    return 0 if post is None else post.sizes["chain"] * post.sizes["draw"]


@dataclass
class Comparison:
    """``metrics``: label -> metrics dict; ``loo``: the ``az.compare`` DataFrame (None with fewer than two
    runs that have several draws); ``idata``: label -> InferenceData; ``no_loo``: labels left out of LOO."""

    metrics: dict
    loo: object
    idata: dict
    no_loo: list = field(default_factory=list)

    def markdown(self):
        """The metric table and (if any) the LOO table as Markdown."""
        keys = [k for k in TABLE_KEYS if any(k in m for m in self.metrics.values())]
        lines = ["| run | data | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        for label, m in self.metrics.items():
            lines.append(f"| {label} | {m['split']} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
        if self.loo is not None:
            cols = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning"]
            lines += ["", "| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for label, row in self.loo.iterrows():
                lines.append(f"| {label} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
        if self.no_loo:
            lines += ["", f"Not in LOO (one draw: a point estimate): {', '.join(self.no_loo)}."]
        return "\n".join(lines) + "\n"

    def to_json(self):
        out = {"metrics": self.metrics, "no_loo": self.no_loo}
        if self.loo is not None:
            out["loo"] = json.loads(self.loo.to_json(orient="index"))
        return out

    def plot(self, out_dir, bins=15):
        """Write reliability.png (overlaid), metrics.png, entropy.png (with OOD inputs where stored) and,
        with LOO, loo_compare.png; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        preds, entropies = {}, {}
        for label, idata in self.idata.items():
            probs, y, split = predictions(idata)
            preds[f"{label} ({split})"] = (probs, y)
            entropies[f"{label} ({split})"] = probs
            pred = arviz_io.group(idata, "predictions")
            if pred is not None and "ood_probs" in pred:
                entropies[f"{label} (OOD)"] = stacked(pred, "ood_probs")
        paths = [plots.reliability_diagram(preds, out / "reliability.png", bins),
                 plots.metric_bars(self.metrics, out / "metrics.png", ("accuracy", "nll", "ece", "aece", "brier", "mi")),
                 plots.entropy_histogram(entropies, out / "entropy.png")]
        if self.loo is not None:
            paths.append(plots.loo_compare(self.loo, out / "loo_compare.png"))
        return paths


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.floating, np.integer)):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def compare(runs, train=None, test=None, ood=None, num_samples=100, seed=0, bins=15):
    """Compare ``{label: Posterior or InferenceData}`` fitted to the same data.

    Posteriors are converted with ``to_inference_data(post, *train, test=test, ood=ood)``
    (``train`` is needed for them: ``(x, y[, mask])`` or a ``Split``), keeping no
    weight sites. LOO needs the same observations in every run.
    """
    import arviz as az

    idata = {}
    for label, run in runs.items():
        if hasattr(run, "predict"):
            if train is None:
                raise ValueError(f"run '{label}' is a Posterior: pass train=(x, y[, mask]) to convert it")
            x, y, mask = arviz_io.unpack(train)
            run = arviz_io.to_inference_data(run, x, y, mask, num_samples=num_samples, var_names=[], test=test,
                                             ood=ood, seed=seed)
        idata[label] = run
    table = {label: metrics(d, bins) for label, d in idata.items()}
    several = {label: d for label, d in idata.items() if num_draws(d) > 1}
    loo = az.compare(several) if len(several) > 1 else None  # PSIS-LOO: the default in ArviZ 0.x and 1.x
    return Comparison(table, loo, idata, [label for label in idata if label not in several])
