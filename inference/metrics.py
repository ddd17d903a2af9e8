"""Predictive metrics computed from per-draw class probabilities [S, N, K].

A plain [N, K] array counts as one draw. Point-prediction metrics (accuracy, NLL,
Brier, calibration) use the posterior predictive ``mean_probs``; the uncertainty
split uses the draws: predictive entropy H[E_s p_s] = expected entropy E_s H[p_s]
(aleatoric) + mutual information (epistemic). Out-of-distribution scores treat
OOD inputs as the positive class and a higher uncertainty as more OOD-like.
"""
import numpy as np
import torch
from scipy.stats import rankdata

from core.checks import check_predictions

EPS = 1e-12


def mean_probs(probs):
    """Posterior predictive p(y | x, D) ~ mean over draws, [N, K]."""
    return probs.mean(0) if probs.dim() == 3 else probs


def _draws(probs):
    return probs.double() if probs.dim() == 3 else probs.double().unsqueeze(0)


def accuracy(probs, y):
    return (mean_probs(probs).argmax(-1) == y).double().mean().item()


def nll(probs, y):
    """Mean negative log posterior-predictive probability of the true class."""
    p = mean_probs(probs).double().gather(-1, y[:, None]).squeeze(-1)
    return -p.clamp_min(EPS).log().mean().item()


def brier(probs, y):
    """Multi-class Brier score: mean over points of sum_k (p_k - 1[y = k])^2 (0 to 2)."""
    p = mean_probs(probs).double()
    onehot = torch.nn.functional.one_hot(y, p.shape[-1]).double()
    return ((p - onehot) ** 2).sum(-1).mean().item()


def entropy(p):
    """Entropy in nats over the last axis, 0 log 0 = 0."""
    p = p.double()
    return -(p * p.clamp_min(EPS).log()).sum(-1)


def predictive_entropy(probs):
    """Total uncertainty per input: H[mean_s p_s(y | x)], [N]."""
    return entropy(mean_probs(_draws(probs)))


def expected_entropy(probs):
    """Aleatoric part per input: mean_s H[p_s(y | x)], [N]."""
    return entropy(_draws(probs)).mean(0)


def mutual_information(probs):
    """Epistemic part per input: I[y; theta | x] = H[E p] - E H[p] >= 0, [N] (0 for one draw)."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def reliability(probs, y, bins=15, adaptive=False):
    """Confidence bins for a reliability diagram and ECE.

    Bins are ``bins`` equal-width intervals (lo, hi] of the top-class confidence,
    or with ``adaptive=True`` ``bins`` groups of (nearly) equal count in order of
    confidence. Returns a dict of numpy arrays over the non-empty bins:
    ``confidence`` (mean), ``accuracy``, ``count``, ``lo`` and ``hi`` (edges).
    """
    p = mean_probs(probs).double()
    conf, pred = p.max(-1)
    conf, correct = conf.cpu().numpy(), (pred == y).cpu().numpy().astype(np.float64)
    if adaptive:
        order = np.argsort(conf, kind="stable")
        groups = [g for g in np.array_split(order, min(bins, len(conf))) if len(g)]
        lo, hi = [conf[g].min() for g in groups], [conf[g].max() for g in groups]
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
        index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # bin b holds (e_b, e_b+1]
        kept = [b for b in range(bins) if (index == b).any()]
        groups = [np.flatnonzero(index == b) for b in kept]
        lo, hi = edges[kept], edges[np.array(kept, dtype=int) + 1]
    return {"confidence": np.array([conf[g].mean() for g in groups]),
            "accuracy": np.array([correct[g].mean() for g in groups]),
            "count": np.array([len(g) for g in groups]), "lo": np.asarray(lo), "hi": np.asarray(hi)}


def _calibration_error(table):
    weights = table["count"] / table["count"].sum()
    return float((weights * np.abs(table["confidence"] - table["accuracy"])).sum())


def ece(probs, y, bins=15):
    """Expected calibration error: count-weighted |confidence - accuracy| over equal-width bins."""
    return _calibration_error(reliability(probs, y, bins))


def adaptive_ece(probs, y, bins=15):
    """ECE over equal-mass bins (each holds ~N/bins points), less biased where confidences cluster."""
    return _calibration_error(reliability(probs, y, bins, adaptive=True))


def auroc(scores, labels):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ValueError("AUROC needs both in-distribution and out-of-distribution points")
    ranks = rankdata(scores)  # average ranks handle ties (Mann-Whitney U)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def aupr(scores, labels):
    """Area under the precision-recall curve as average precision: sum_n (R_n - R_n-1) P_n over thresholds."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if labels.sum() == 0:
        raise ValueError("AUPR needs at least one out-of-distribution point")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of each distinct threshold
    tp = np.cumsum(labels)[last]
    precision = tp / (last + 1)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ood_scores(probs_in, probs_out):
    """AUROC and AUPR for telling OOD inputs (positives) from in-distribution ones, by entropy and by MI."""
    labels = np.r_[np.zeros(probs_in.shape[-2]), np.ones(probs_out.shape[-2])]
    out = {}
    for suffix, score in (("", predictive_entropy), ("_mi", mutual_information)):
        s = torch.cat([score(probs_in), score(probs_out)]).cpu().numpy()
        out[f"ood_auroc{suffix}"] = auroc(s, labels)
        out[f"ood_aupr{suffix}"] = aupr(s, labels)
    return out


def evaluate(probs, y, probs_ood=None, bins=15):
    """The metrics every run folder reports; OOD scores too when ``probs_ood`` (for OOD inputs) is given.

    Keys: accuracy, nll, ece, brier, aece, entropy (mean predictive entropy), mi
    (mean mutual information), and with ``probs_ood``: ood_auroc, ood_aupr (by
    predictive entropy), ood_auroc_mi, ood_aupr_mi (by mutual information).
    """
    check_predictions(probs, y)
    probs, y = probs.detach().cpu(), y.detach().cpu()
    out = {"accuracy": accuracy(probs, y), "nll": nll(probs, y), "ece": ece(probs, y, bins),
           "brier": brier(probs, y), "aece": adaptive_ece(probs, y, bins),
           "entropy": predictive_entropy(probs).mean().item(), "mi": mutual_information(probs).mean().item()}
    if probs_ood is not None:
        out.update(ood_scores(probs, probs_ood.detach().cpu()))
    return out
