"""Predictive metrics computed from per-draw class probabilities [S, N, K]."""
import torch


def mean_probs(probs):
    """Posterior predictive p(y | x, D) ~ mean over draws, [N, K]."""
    return probs.mean(0) if probs.dim() == 3 else probs


def accuracy(probs, y):
    return (mean_probs(probs).argmax(-1) == y).double().mean().item()


def nll(probs, y):
    """Mean negative log posterior-predictive probability of the true class."""
    p = mean_probs(probs).double().gather(-1, y[:, None]).squeeze(-1)
    return -p.clamp_min(1e-12).log().mean().item()


def brier(probs, y):
    """Multi-class Brier score: mean over points of sum_k (p_k - 1[y = k])^2 (0 to 2)."""
    p = mean_probs(probs).double()
    onehot = torch.nn.functional.one_hot(y, p.shape[-1]).double()
    return ((p - onehot) ** 2).sum(-1).mean().item()


def ece(probs, y, bins=15):
    """Expected calibration error with ``bins`` equal-width confidence bins."""
    p = mean_probs(probs).double()
    conf, pred = p.max(-1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.double().mean().item() * abs(conf[inside].mean().item() - correct[inside].mean().item())
    return total


def evaluate(probs, y):
    """The metrics every run folder reports."""
    probs, y = probs.detach().cpu(), y.detach().cpu()
    return {"accuracy": accuracy(probs, y), "nll": nll(probs, y), "ece": ece(probs, y), "brier": brier(probs, y)}
