"""One evaluation of a fitted predictive, shared by ``bzoo fit`` and every study cell.

``evaluate_all(predict, dataset, seed, settings)`` scores ``predict(x, mask, num_samples) -> probs [S, N, K]``:

- on test: accuracy, NLL, ECE, Brier and the rest of ``inference.evaluate``;
- on the far-OOD set (``zoo.data.ood``): the AUROC of predictive entropy and of mutual
  information, beside ``ood_reference``, the AUROC of a model-free detector on the same
  inputs (``reference_detector``), and ``ood_scale``, the OOD set's scale against the test
  set's, so a reader sees how hard each OOD set is and why an AUROC may fall below 0.5;
- under graded shift (``zoo.data.shift``): accuracy and NLL on each shifted test set and
  their means.

The OOD inputs, the shifted sets and the detector depend on the dataset and seed alone, so
``Sets`` builds them once and callers keep it (a study worker caches one per dataset).
"""
from dataclasses import dataclass

import numpy as np
import torch

from inference import evaluate
from inference.metrics import accuracy, auroc, mean_probs, nll

from .data import Split
from .data.ood import ood_inputs, scale
from .data.shift import shifts

KNN = 5  # the detector scores a series by its distance to the 5th nearest training series
ROCKET_KERNELS = 10000


def knn_distance(train, x, k=KNN):
    """Each row of ``x`` [M, D]: the Euclidean distance to its ``k``-th nearest row of ``train`` [N, D]."""
    k = min(k, len(train))
    return torch.cdist(x.double(), train.double()).topk(k, dim=1, largest=False).values[:, -1]


def flat(x, mask):
    """[N, T, C] series as [N, T*C] vectors, padded steps zero (as the models see them)."""
    x = x if mask is None else x * mask[..., None]
    return x.reshape(len(x), -1)


def rocket_features(kept, splits, length, seed):
    """In a ``zoo.isolated.Child``: MiniRocket features of each (x, mask) in ``splits``, the transform fitted on the
    first; standardized per feature with the first's statistics."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    from .study.peers import rocket_inputs

    arrays = [rocket_inputs(x, mask, length) for x, mask in splits]
    transform = MiniRocket(n_kernels=ROCKET_KERNELS, random_state=seed).fit(arrays[0])
    features = [np.asarray(transform.transform(a), dtype=np.float64) for a in arrays]
    mean, std = features[0].mean(0), features[0].std(0) + 1e-8
    return [torch.as_tensor((f - mean) / std) for f in features]


def reference_detector(dataset, ood, seed=0):
    """AUROC of telling the OOD inputs from the test inputs by the distance to the ``KNN``-th nearest training
    series: ``input`` in input space, ``minirocket`` in standardized MiniRocket features (real-valued series)."""
    from .isolated import Child
    from .study.peers import ROCKET_MIN_LENGTH

    test, train = dataset.test, dataset.train
    labels = np.r_[np.zeros(len(test)), np.ones(len(ood[0]))]
    if not test.x.is_floating_point():
        return {"input": auroc(torch.cat([knn_distance(flat(train.x[..., None].float(), train.mask),
                                                       flat(x[..., None].float(), m))
                                          for x, m in ((test.x, test.mask), ood)]).numpy(), labels)}
    out = {"input": auroc(torch.cat([knn_distance(flat(train.x, train.mask), flat(x, m))
                                     for x, m in ((test.x, test.mask), ood)]).numpy(), labels)}
    with Child(torch.get_num_threads()) as child:
        f_train, f_test, f_ood = child.call(rocket_features, [(train.x, train.mask), (test.x, test.mask), ood],
                                            max(ROCKET_MIN_LENGTH, dataset.max_len), seed)
    out["minirocket"] = auroc(torch.cat([knn_distance(f_train, f_test), knn_distance(f_train, f_ood)]).numpy(),
                              labels)
    return out


@dataclass
class Sets:
    """The inputs an evaluation scores besides test: far-OOD (with its scale and reference detector) and shift."""

    ood: tuple | None  # (x, mask)
    ood_scale: dict | None
    ood_reference: dict | None
    shift: dict  # "kind:level" -> Split

    @classmethod
    def build(cls, dataset, seed, shift_inputs, reference=None):
        """The sets for ``dataset``; shift on at most ``shift_inputs`` test series drawn from ``seed``. ``reference``:
        the detector's AUROCs, the same for every seed and fit, so computed once per dataset and passed in
        (``zoo.study.detectors``)."""
        ood = ood_inputs(dataset)
        return cls(ood, scale(dataset, *ood), reference, shift_sets(dataset.test, seed, shift_inputs))


def shift_sets(test, seed, inputs):
    """The graded shifts of at most ``inputs`` test series (drawn from ``seed``), or {} for token data."""
    if not test.x.is_floating_point():
        return {}
    if len(test) > inputs:
        index = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:inputs].sort().values
        test = Split(test.x[index], test.y[index], None if test.mask is None else test.mask[index])
    return shifts(test, seed=seed)


def evaluate_all(predict, dataset, sets, settings):
    """``(metrics, shift, test_probs)``: metrics on test with OOD scores, the OOD set's scale and reference AUROC,
    and mean shift metrics; per-set shift metrics; the test predictive mean [N, K]. ``settings``: ``samples``,
    ``shift_samples`` and ``bins`` (``recipes.EVALUATION``)."""
    test = dataset.test
    probs = predict(test.x, test.mask, settings["samples"]).cpu()
    ood_probs = None if sets.ood is None else predict(*sets.ood, settings["samples"]).cpu()
    metrics = evaluate(probs, test.y, ood_probs, settings["bins"])
    metrics.setdefault("ood_auroc", None)
    metrics["ood_scale"] = sets.ood_scale
    if sets.ood_reference is not None:
        metrics["ood_reference"] = sets.ood_reference
    shift = {}
    for key, split in sets.shift.items():
        p = predict(split.x, split.mask, settings["shift_samples"]).cpu()
        shift[key] = {"accuracy": accuracy(p, split.y), "nll": nll(p, split.y)}
        del p
    metrics["shift_accuracy"] = float(np.mean([s["accuracy"] for s in shift.values()])) if shift else None
    metrics["shift_nll"] = float(np.mean([s["nll"] for s in shift.values()])) if shift else None
    return metrics, shift, mean_probs(probs).float()

