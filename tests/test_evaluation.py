"""The shared evaluation path: the model-free OOD detector against brute force and its two limits."""
import numpy as np
import torch

from zoo import data
from zoo.evaluation import Sets, evaluate_all, flat, knn_distance, reference_detector


def toy(n=40, length=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, length, 1)) + 1.5 * (np.arange(n) % 2)[:, None, None]
    y = np.arange(n) % 2
    return data.build("toy", x[:30], y[:30], x[30:], y[30:])


def test_knn_distance_is_the_kth_smallest_euclidean_distance():
    rng = np.random.default_rng(1)
    train, x = rng.normal(size=(25, 6)), rng.normal(size=(7, 6))
    brute = np.sort(np.sqrt(((x[:, None] - train[None]) ** 2).sum(-1)), axis=1)
    for k in (1, 3, 5):
        assert np.allclose(knn_distance(torch.tensor(train), torch.tensor(x), k).numpy(), brute[:, k - 1])


def test_flat_zeroes_padded_steps():
    x, mask = torch.ones(2, 3, 2), torch.tensor([[True, True, False], [True, False, False]])
    assert flat(x, mask).sum(1).tolist() == [4.0, 2.0]


def test_the_detector_separates_far_inputs_and_not_the_test_set_itself():
    ds = toy()
    far = reference_detector(ds, (ds.test.x + 50.0, ds.test.mask))
    same = reference_detector(ds, (ds.test.x.clone(), ds.test.mask))
    assert far == {"input": 1.0, "minirocket": far["minirocket"]} and far["minirocket"] > 0.9
    assert same["input"] == 0.5 and same["minirocket"] == 0.5  # identical sets: every score tied


def test_evaluate_all_scores_test_ood_and_every_shift():
    ds = toy()
    sets = Sets.build(ds, 0, 8, reference={"input": 0.7})

    def predict(x, mask, s):
        return torch.full((s, len(x), 2), 0.5)

    metrics, shift, probs = evaluate_all(predict, ds, sets, {"samples": 3, "shift_samples": 2, "bins": 5})
    assert metrics["ood_auroc"] == 0.5 and metrics["ood_reference"] == {"input": 0.7}
    assert len(shift) == 12 and all(abs(s["nll"] - np.log(2)) < 1e-6 for s in shift.values())
    assert probs.shape == (len(ds.test), 2)
