"""Far out-of-distribution inputs for any dataset: windows of another shipped dataset's series, preprocessed as the
target's own inputs are.

``ood_inputs(dataset)`` returns ``(x, mask)``, built deterministically (``seed``) so:

1. Source: the test series of a univariate UCR set other than the target (GunPoint, or
   ItalyPowerDemand when the target is GunPoint), in the source's *raw* units (its own
   standardization undone).
2. One OOD example per test series of the target, with that series' length, so the
   OOD set is as large as the test set and variable-length data keeps its length
   distribution and its mask (``mask`` is the test mask; None when all steps are real).
3. Each of the target's C channels is a random window (at least half the source's
   length) of a randomly drawn source series, linearly resampled to the example's
   length: channels come from different series, so they are unrelated.
4. Each channel then goes through the target's own preprocessing: standardized with
   the mean and standard deviation of the target's *training* channel
   (``dataset.preprocessing``), exactly as a raw input arriving at the fitted model
   would be. Nothing is normalized per series. Where the source's raw scale differs
   from the target's, the OOD set differs in scale too; ``scale(dataset, x, mask)``
   measures by how much (the ratio of standard deviations and the mean offset, per
   channel, against the target's test set), and a study reports it beside each OOD AUROC
   with a model-free detector's AUROC (``zoo.evaluation``), so the reader sees how hard
   each OOD set is. Padding is zero, as in the target.

Token data (a user's file of integer ids) gets uniformly random ids from the training
vocabulary, with the test series' lengths.
"""
import numpy as np
import torch

from core.checks import DataError

SOURCES = ("GunPoint", "ItalyPowerDemand")
MIN_WINDOW = 0.5  # a window covers at least this fraction of a source series


def ood_inputs(dataset, seed=0):
    """(x [M, T, C] float32 or [M, T] token ids, mask [M, T] or None): OOD inputs for ``dataset``, M = test size;
    a dataset that carries its own OOD set (a held-out class, ``near_ood``) gets that."""
    if dataset.ood is not None:
        return dataset.ood
    test = dataset.test
    rng = np.random.default_rng(seed)
    m, t = test.x.shape[:2]
    lengths = np.full(m, t) if test.mask is None else test.mask.sum(1).numpy()
    mask = None if test.mask is None else test.mask.clone()
    if dataset.tokens:
        vocab = int(dataset.train.x.max()) + 1
        x = torch.as_tensor(rng.integers(0, vocab, size=(m, t)), dtype=test.x.dtype)
        return (x if mask is None else x.masked_fill(~mask, 0)), mask
    source = source_series(dataset.name.split(":")[0])
    c = dataset.input_dim
    mean, std = standardization(dataset, c)
    x = np.zeros((m, t, c), dtype=np.float32)
    picks = rng.integers(0, len(source), size=(m, c))
    width = source.shape[1]
    for i, n in enumerate(lengths):
        for j in range(c):
            span = rng.integers(int(np.ceil(MIN_WINDOW * width)), width + 1)
            start = rng.integers(0, width - span + 1)
            grid = np.linspace(start, start + span - 1, n)
            raw = np.interp(grid, np.arange(width), source[picks[i, j]])
            x[i, :n, j] = (raw - mean[j]) / std[j]
    return torch.as_tensor(x), mask


def standardization(dataset, channels):
    """The target's per-channel training mean and standard deviation (identity where a dataset records none)."""
    pre = dataset.preprocessing or {}
    mean = np.asarray(pre.get("mean", np.zeros(channels)), dtype=np.float64).reshape(channels)
    std = np.asarray(pre.get("std", np.ones(channels)), dtype=np.float64).reshape(channels)
    return mean, std


def source_series(target):
    """[M, T] test series of the first source that is not ``target``, in the source's raw units (a DataError if
    none ships)."""
    from .shipped import available, load

    shipped = {n.lower() for n in available()}
    for name in SOURCES:
        if name.lower() != str(target).lower() and name.lower() in shipped:
            source = load(name)
            mean, std = standardization(source, 1)
            return source.test.x[..., 0].double().numpy() * std[0] + mean[0]
    raise DataError(f"no out-of-distribution source for '{target}': needs one of {', '.join(SOURCES)} from aeon")


def scale(dataset, x, mask=None):
    """How an input set's scale relates to the target's test set, per channel: ``std_ratio`` (its standard
    deviation over the test set's) and ``mean_offset`` (the difference of means in test standard deviations),
    each the largest over channels in absolute terms; None for token data."""
    if not x.is_floating_point():
        return None

    def moments(values, m):
        flat = values.reshape(-1, values.shape[-1]) if m is None else values[m]
        return flat.double().mean(0), flat.double().std(0)

    mu_x, sd_x = moments(x, mask)
    mu_t, sd_t = moments(dataset.test.x, dataset.test.mask)
    ratio = sd_x / sd_t.clamp_min(1e-12)
    offset = (mu_x - mu_t) / sd_t.clamp_min(1e-12)
    return {"std_ratio": float(ratio[(ratio.log()).abs().argmax()]),
            "mean_offset": float(offset[offset.abs().argmax()])}
