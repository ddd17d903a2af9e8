"""The statistics of a study: mean +- standard error over seeds, ranks across datasets, Friedman and Wilcoxon-Holm.

Per dataset and method, each metric is summarized over seeds by its mean and standard
error (sample standard deviation / sqrt(n); none for one seed). Across datasets, each
dataset's seed-mean is ranked among the methods (1 = best, ties share the average
rank) on the datasets where every method has a value; the Friedman test asks whether
the average ranks differ at all, and the critical-difference diagram (aeon's
``plot_critical_difference``: one-sided Wilcoxon signed-rank tests between methods
after a significant Friedman test, cliques at alpha 0.1 with aeon's Holm correction)
says which do. ``holm`` adjusts the pairwise p-values reported next to it.
"""
import math

import numpy as np
from scipy import stats

# metric -> True when higher is better; the order is the tables' column order
METRICS = {"accuracy": True, "nll": False, "ece": False, "brier": False, "ood_auroc": True, "shift_accuracy": True,
           "shift_nll": False, "fit_seconds": False, "predict_seconds": False}


def mean_se(values):
    """``{"mean", "se", "n"}`` of the finite values (se is None below two values; mean None with none)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "se": None, "n": 0}
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v))}


def metric_value(cell, metric):
    value = cell.get(metric, cell.get("extra", {}).get(metric))
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(cells, metrics):
    """``{dataset: {method: {metric: mean_se}}}`` over the finished cells (failed cells count as missing)."""
    groups = {}
    for cell in cells:
        if cell.get("status") != "ok":
            continue
        groups.setdefault(cell["dataset"], {}).setdefault(cell["method"], []).append(cell)
    return {d: {m: {k: mean_se([metric_value(c, k) for c in group]) for k in metrics} for m, group in methods.items()}
            for d, methods in groups.items()}


def matrix(summary, metric, datasets, methods):
    """[datasets, methods] of seed-means (NaN where missing)."""
    out = np.full((len(datasets), len(methods)), np.nan)
    for i, d in enumerate(datasets):
        for j, m in enumerate(methods):
            value = summary.get(d, {}).get(m, {}).get(metric, {}).get("mean")
            if value is not None:
                out[i, j] = value
    return out


def ranks(scores, higher_better):
    """Rank of each method within each dataset (row), 1 = best, ties sharing the average rank."""
    signed = -scores if higher_better else scores
    return np.vstack([stats.rankdata(row) for row in signed]) if len(scores) else np.empty_like(scores)


def complete(scores):
    """The rows (datasets) where every method has a value."""
    return scores[~np.isnan(scores).any(axis=1)]


def friedman(scores):
    """Friedman's chi-square (tie-corrected) and p-value on a complete [datasets, methods] table of scores.

    None when it does not apply (fewer than two datasets or three methods).
    """
    n, k = scores.shape
    if n < 2 or k < 3:
        return None
    statistic, p = stats.friedmanchisquare(*scores.T)
    return {"statistic": float(statistic), "p": float(p), "datasets": n, "methods": k}


def holm(p_values):
    """Holm's step-down adjusted p-values, in the order given."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def critical_difference(scores, labels, higher_better, path):
    """aeon's CD diagram of a complete [datasets, methods] table, saved to ``path``, with the tests behind it.

    Returns ``{"order", "average_ranks", "friedman", "pairs"}``: methods by average rank,
    the Friedman test, and for each pair (better first) the one-sided Wilcoxon
    signed-rank p-value (aeon's ``wilcoxon_test``, as the diagram uses) and its Holm
    adjustment over all pairs. None with fewer than two datasets or three methods.
    """
    if scores.shape[0] < 2 or scores.shape[1] < 3:
        return None
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from aeon.benchmarking.stats import wilcoxon_test
    from aeon.visualisation import plot_critical_difference

    avg = ranks(scores, higher_better).mean(axis=0)
    order = list(np.argsort(avg, kind="stable"))
    ordered = [labels[i] for i in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aeon warns on methods equal on every dataset: the table shows it
        fig, _ = plot_critical_difference(scores, list(labels), lower_better=not higher_better)
        p = wilcoxon_test(scores[:, order], ordered, lower_better=not higher_better)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    pairs = [(a, b) for a in range(len(order)) for b in range(a + 1, len(order))]
    raw = [float(p[a, b]) for a, b in pairs]
    return {"order": ordered, "average_ranks": [float(avg[i]) for i in order], "friedman": friedman(scores),
            "pairs": [{"a": ordered[a], "b": ordered[b], "p": r, "p_holm": float(h)}
                      for (a, b), r, h in zip(pairs, raw, holm(raw))]}
