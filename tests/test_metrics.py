"""Each metric against a hand-computed value and, where one exists, scikit-learn."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from inference import metrics as M

# Three points, two classes; confidences 0.85, 0.65, 0.75 sit inside distinct 0.1-wide bins.
PROBS = torch.tensor([[0.85, 0.15], [0.35, 0.65], [0.25, 0.75]], dtype=torch.float64)
Y = torch.tensor([0, 0, 1])


def test_point_metrics_by_hand():
    assert M.accuracy(PROBS, Y) == pytest.approx(2 / 3)
    assert M.nll(PROBS, Y) == pytest.approx(-(math.log(0.85) + math.log(0.35) + math.log(0.75)) / 3)
    assert M.brier(PROBS, Y) == pytest.approx((2 * 0.15 ** 2 + 2 * 0.65 ** 2 + 2 * 0.25 ** 2) / 3)


def test_ece_by_hand():
    assert M.ece(PROBS, Y, bins=10) == pytest.approx((0.15 + 0.65 + 0.25) / 3)  # one point per bin
    assert M.ece(PROBS, Y, bins=1) == pytest.approx(abs(0.75 - 2 / 3))
    assert M.adaptive_ece(PROBS, Y, bins=3) == pytest.approx((0.15 + 0.65 + 0.25) / 3)
    assert M.adaptive_ece(PROBS, Y, bins=1) == pytest.approx(abs(0.75 - 2 / 3))


def test_metrics_agree_with_sklearn():
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(200, generator=g, dtype=torch.float64)
    probs = torch.stack([1 - p1, p1], -1)
    y = (torch.rand(200, generator=g, dtype=torch.float64) < p1).long()
    # sklearn's binary Brier is the squared error of the positive class: half the multi-class sum.
    assert M.brier(probs, y) == pytest.approx(2 * brier_score_loss(y.numpy(), p1.numpy()))
    assert M.nll(probs, y) == pytest.approx(log_loss(y.numpy(), probs.numpy()))


def _ece_loop(probs, y, bins):
    """A second, direct implementation of equal-width-bin ECE."""
    conf, pred = probs.max(-1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = conf[inside].mean() - (pred[inside] == y[inside]).double().mean()
            total += inside.double().mean().item() * abs(gap.item())
    return total


def test_ece_matches_direct_loop_and_reliability_counts():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 4, (500,), generator=g)
    assert M.ece(probs, y, bins=15) == pytest.approx(_ece_loop(probs, y, 15))
    for adaptive in (False, True):
        table = M.reliability(probs, y, bins=15, adaptive=adaptive)
        assert table["count"].sum() == 500
        assert np.all(table["lo"] <= table["confidence"]) and np.all(table["confidence"] <= table["hi"])
    assert np.ptp(M.reliability(probs, y, bins=10, adaptive=True)["count"]) <= 1  # equal mass


def test_entropy_and_mutual_information_by_hand():
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident draws that disagree
    agree = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]])  # two unsure draws that agree
    assert M.predictive_entropy(disagree).item() == pytest.approx(math.log(2))
    assert M.mutual_information(disagree).item() == pytest.approx(math.log(2))
    assert M.predictive_entropy(agree).item() == pytest.approx(math.log(2))
    assert M.mutual_information(agree).item() == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_information(PROBS).max().item() == 0.0  # one draw has no epistemic part
    p = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
    h = lambda q: -sum(v * math.log(v) for v in q)  # noqa: E731
    assert M.expected_entropy(p).item() == pytest.approx((h([0.9, 0.1]) + h([0.5, 0.5])) / 2)
    assert M.predictive_entropy(p).item() == pytest.approx(h([0.7, 0.3]))


def test_auroc_aupr_by_hand_and_against_sklearn():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert M.auroc(scores, labels) == pytest.approx(0.75)
    assert M.aupr(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 300)
        scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: many ties
        assert M.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
        assert M.aupr(scores, labels) == pytest.approx(average_precision_score(labels, scores))
    with pytest.raises(ValueError, match="both"):
        M.auroc([0.1, 0.2], [1, 1])


def test_ood_scores_and_evaluate_keys():
    g = torch.Generator().manual_seed(2)
    confident = torch.softmax(torch.tensor([[4.0, -4.0]]).expand(20, 50, 2) + 0.1 * torch.randn(20, 50, 2, generator=g), -1)
    logits = 4 * torch.randn(20, 30, 2, generator=g)  # draws disagree on OOD inputs
    out = M.evaluate(confident, torch.zeros(50, dtype=torch.long), probs_ood=torch.softmax(logits, -1))
    assert {"accuracy", "nll", "ece", "brier", "aece", "entropy", "mi", "ood_auroc", "ood_aupr",
            "ood_auroc_mi", "ood_aupr_mi"} <= set(out)
    assert out["accuracy"] == 1.0
    assert out["ood_auroc"] > 0.95 and out["ood_auroc_mi"] > 0.95
