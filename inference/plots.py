"""Workflow plots: prior predictive comparison, reliability diagrams, metric bars, diagnostics.

Every function draws on a fresh ``matplotlib.figure.Figure`` (no pyplot state, so
any backend works), saves it as PNG to ``path`` and returns the path. The ArviZ
plots (trace, Pareto k, LOO comparison) go through pyplot and close their figure.
"""
import numpy as np
from matplotlib.figure import Figure

from .metrics import predictive_entropy, reliability

COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def prior_check(checks, path):
    """Several priors side by side: per-draw logit scale, predictive entropy, majority-class share, attention.

    ``checks`` is a list of ``PriorPredictive``. The majority-class share is 1 for a
    degenerate draw (one class for every input); the legend gives each prior's
    degenerate share.
    """
    with_attention = any(c.attention for c in checks)
    fig = Figure(figsize=(4.4 * (4 if with_attention else 3), 3.8), layout="constrained")
    axes = fig.subplots(1, 4 if with_attention else 3)
    scales = [c.logit_rms().numpy() for c in checks]
    lo, hi = np.log10(max(min(s.min() for s in scales), 1e-6)), np.log10(max(max(s.max() for s in scales), 1e-5))
    log_bins = np.logspace(lo, hi + 1e-9, 30)
    k = checks[0].logits.shape[-1]
    for i, c in enumerate(checks):
        s = c.summary()
        color = COLORS[i % len(COLORS)]
        axes[0].hist(scales[i], bins=log_bins, alpha=0.5, color=color, label=f"{c.label} (rms {s['logit_scale']:.3g})")
        axes[1].hist(c.entropies().flatten().numpy(), bins=np.linspace(0, np.log(k), 30), alpha=0.5, color=color,
                     density=True, label=c.label)
        axes[2].hist(c.majority_share().numpy(), bins=np.linspace(1 / k, 1, 25), alpha=0.5, color=color,
                     label=f"{c.label}: degenerate {s['degenerate_share']:.0%}")
        if with_attention and c.attention:
            rows = np.concatenate([h.flatten().numpy() for h in c.attention.values()])
            axes[3].hist(rows, bins=30, alpha=0.5, color=color, density=True, label=c.label)
    axes[0].set(xscale="log", xlabel="RMS centred logit per draw", ylabel="draws", title="logit scale")
    axes[1].set(xlabel=f"entropy per draw and input (max {np.log(k):.2f})", ylabel="density",
                title="predictive entropy")
    axes[2].set(xlabel="majority-class share per draw", ylabel="draws", title="degenerate functions (share = 1)")
    if with_attention:
        axes[3].set(xlabel="attention row entropy (nats)", ylabel="density", title="attention rows")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Prior predictive check")
    return _save(fig, path)


def reliability_diagram(predictions, path, bins=15, title="Reliability"):
    """Overlaid reliability curves for ``{label: (probs, y)}``, with confidence histograms below."""
    fig = Figure(figsize=(5.5, 6))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for i, (label, (probs, y)) in enumerate(predictions.items()):
        table = reliability(probs, y, bins)
        color = COLORS[i % len(COLORS)]
        top.plot(table["confidence"], table["accuracy"], "o-", color=color, label=label)
        width = 1 / bins / len(predictions)  # side by side within each equal-width bin
        bottom.bar(table["lo"] + i * width, table["count"] / table["count"].sum(), width=width, align="edge",
                   color=color, alpha=0.7)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(-0.02, 1.02), title=title)
    top.legend(fontsize=7)
    bottom.set(xlabel="confidence (top-class probability)", ylabel="share")
    return _save(fig, path)


def metric_bars(table, path, keys=("accuracy", "nll", "ece", "brier")):
    """One bar panel per metric for ``{label: metrics dict}``."""
    keys = [k for k in keys if any(k in m for m in table.values())]
    fig = Figure(figsize=(3.2 * len(keys), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    labels = list(table)
    for ax, key in zip(axes, keys):
        values = [table[lab].get(key, np.nan) for lab in labels]
        ax.bar(range(len(labels)), values, color=[COLORS[i % len(COLORS)] for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(key)
    return _save(fig, path)


def entropy_histogram(predictions, path, title="Predictive entropy"):
    """Predictive entropy distributions for ``{label: probs}`` (e.g. in-distribution vs OOD)."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for i, (label, probs) in enumerate(predictions.items()):
        ax.hist(predictive_entropy(probs).numpy(), bins=30, alpha=0.5, density=True, color=COLORS[i % len(COLORS)],
                label=label)
    ax.set(xlabel="predictive entropy (nats)", ylabel="density", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def loss_curve(losses, path, title="Training loss (negative ELBO per data point)"):
    """The optimizer's loss per step; a symlog axis keeps early huge values and late small ones readable."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, dtype=float), lw=1)
    ax.set(xlabel="step", ylabel="loss", title=title, yscale="symlog")
    return _save(fig, path)


def rhat_histogram(rhat, path, title="Function-space R-hat (predictive probabilities)"):
    """Histogram of R-hat values with the 1.01 threshold marked."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    values = np.asarray(rhat, dtype=float).ravel()
    ax.hist(values[np.isfinite(values)], bins=30)
    ax.axvline(1.01, color="k", ls="--", lw=1, label="1.01")
    ax.set(xlabel="R-hat", ylabel="count", title=title)
    ax.legend()
    return _save(fig, path)


def _pyplot_save(axes, path):
    import matplotlib.pyplot as plt
    fig = np.asarray(axes).ravel()[0].get_figure()
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")  # titles clear of the tick labels above them
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def trace(idata, path, var_names, coords=None):
    """``az.plot_trace`` for the given posterior sites (keep them few, or select entries with ``coords``)."""
    import arviz as az
    return _pyplot_save(az.plot_trace(idata, var_names=list(var_names), coords=coords, compact=True), path)


def pareto_k(loo, path):
    """The Pareto k of each observation's PSIS-LOO weights, with the 0.7 and 1 thresholds (drawn here, not by
    ``az.plot_khat``, whose bin labels sit at the data's scale and blew a figure to 178,000 pixels wide when
    every k was above 1)."""
    k = np.asarray(loo.pareto_k).ravel()
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(np.arange(len(k)), k, s=10, color="C0")
    for threshold, color in ((0.7, "C1"), (1.0, "C3")):
        ax.axhline(threshold, color=color, ls="--", lw=1, label=f"k = {threshold}")
    ax.set(xlabel="observation", ylabel="Pareto k", title=f"{int((k > 0.7).sum())} of {len(k)} above 0.7")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def loo_compare(comparison, path):
    """``az.plot_compare`` of an ``az.compare`` table."""
    import arviz as az
    return _pyplot_save(az.plot_compare(comparison), path)
