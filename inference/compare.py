"""Several fitted posteriors of the same data in one table and one set of plots.

``compare({"map": post1, "mean_field": post2}, train=..., test=..., ood=...)``
converts each Posterior to InferenceData (or takes InferenceData as it is), then
reports predictive metrics on the test set (or, without one, on the training
set), ``az.compare`` on PSIS-LOO for the runs with more than one draw with the
Pareto k summary of each (a warning names every run with k > 0.7), and overlaid
reliability diagrams.
"""
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import arviz_io, plots
from .metrics import evaluate

TABLE_KEYS = ("accuracy", "nll", "ece", "aece", "brier", "entropy", "mi", "ood_auroc", "ood_aupr", "ood_auroc_mi",
              "ood_aupr_mi", "tv", "tv_max", "kl", "fit_seconds")  # the last four where a study adds them
PARETO_K_LIMITS = (0.7, 1.0)  # above 0.7 a point's PSIS-LOO term is unreliable; above 1 its ratio has no mean


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


def pareto_k_summary(pareto_k):
    """Max Pareto k and, for each of ``PARETO_K_LIMITS``, the count and share of points above it."""
    k = np.asarray(pareto_k, dtype=float).ravel()
    if k.size == 0:
        raise ValueError("pareto_k is empty: PSIS-LOO needs at least one observation")
    out = {"pareto_k_max": float(k.max()), "num_points": int(k.size)}
    for limit in PARETO_K_LIMITS:
        above = int((k > limit).sum())
        out[f"pareto_k_above_{limit:g}"] = above
        out[f"pareto_k_share_above_{limit:g}"] = above / k.size
    return out


def psis_loo(idata, label):
    """ArviZ's pointwise PSIS-LOO of one run and ``pareto_k_summary`` of it; warns, naming ``label``, where some
    k > 0.7. For draws from a variational q the importance ratios are against q: a large k there says that q's
    LOO terms cannot be trusted, whatever the fit's metrics say."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warning names no run; the one below does
        result = az.loo(idata, pointwise=True)
    summary = pareto_k_summary(result.pareto_k)  # the same name in ArviZ 0.x and 1.x
    bad, worst = summary["pareto_k_above_0.7"], summary["pareto_k_above_1"]
    if bad:
        warnings.warn(f"PSIS-LOO of '{label}': Pareto k > 0.7 for {bad} of {summary['num_points']} points "
                      f"({worst} above 1, max {summary['pareto_k_max']:.2f}); its elpd_loo is unreliable",
                      stacklevel=2)
    return result, summary


def num_draws(idata):
    post = arviz_io.group(idata, "log_likelihood")
    return 0 if post is None else post.sizes["chain"] * post.sizes["draw"]


@dataclass
class Comparison:
    """``metrics``: label -> metrics dict; ``loo``: the ``az.compare`` DataFrame (None with fewer than two
    runs that have several draws); ``idata``: label -> InferenceData; ``no_loo``: labels left out of LOO;
    ``pareto_k``: label -> ``pareto_k_summary`` of every run in ``loo``."""

    metrics: dict
    loo: object
    idata: dict
    no_loo: list = field(default_factory=list)
    pareto_k: dict = field(default_factory=dict)

    def markdown(self):
        """The metric table and (if any) the LOO table as Markdown."""
        keys = [k for k in TABLE_KEYS if any(k in m for m in self.metrics.values())]
        lines = ["| run | data | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        for label, m in self.metrics.items():
            lines.append(f"| {label} | {m['split']} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
        if self.loo is not None:
            cols = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning"]
            k_cols = {"max k": "pareto_k_max", "k > 0.7": "pareto_k_above_0.7", "k > 1": "pareto_k_above_1"}
            lines += ["", "| run | " + " | ".join([*cols, *k_cols]) + " |", "|---|" + "---|" * (len(cols) + 3)]
            for label, row in self.loo.iterrows():
                k = self.pareto_k.get(label, {})
                lines.append(f"| {label} | " + " | ".join([*(_fmt(row[c]) for c in cols),
                                                          *(_fmt(k.get(c)) for c in k_cols.values())]) + " |")
            lines += ["", "max k, k > 0.7, k > 1: Pareto k of each run's PSIS-LOO ratios (a point above 0.7 has an "
                      "unreliable LOO term). A variational run's draws come from q: its elpd_loo is q's, not the "
                      "posterior's."]
        if self.no_loo:
            lines += ["", f"Not in LOO (one draw: a point estimate): {', '.join(self.no_loo)}."]
        return "\n".join(lines) + "\n"

    def to_json(self):
        out = {"metrics": self.metrics, "no_loo": self.no_loo}
        if self.loo is not None:
            out["loo"] = json.loads(self.loo.to_json(orient="index"))
            out["pareto_k"] = self.pareto_k
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
    psis = {label: psis_loo(d, label) for label, d in several.items()} if len(several) > 1 else {}
    loo = az.compare({label: result for label, (result, _) in psis.items()}) if psis else None
    return Comparison(table, loo, idata, [label for label in idata if label not in several],
                      {label: summary for label, (_, summary) in psis.items()})
