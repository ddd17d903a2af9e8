"""Out-of-distribution inputs for any dataset: windows of another shipped dataset's series, shaped like its test set.

``ood_inputs(dataset)`` returns ``(x, mask)``, built deterministically (``seed``) so:

1. Source: the test series of a univariate UCR set other than the target (GunPoint, or
   ItalyPowerDemand when the target is GunPoint).
2. One OOD example per test series of the target, with that series' length, so the
   OOD set is as large as the test set and variable-length data keeps its length
   distribution and its mask (``mask`` is the test mask; None when all steps are real).
3. Each of the target's C channels is a random window (at least half the source's
   length) of a randomly drawn source series, linearly resampled to the example's
   length: channels come from different series, so they are unrelated.
4. Each channel is z-normalized over its real steps (as the UCR archive normalizes
   series) and taken as it is into the target's standardized input space, where the
   training data has per-channel mean 0 and standard deviation 1. The OOD set thus
   matches the target's first two moments per channel and differs in shape: telling it
   apart takes more than a scale check. Padding is zero, as in the target.

Token data (a user's file of integer ids) gets uniformly random ids from the training
vocabulary, with the test series' lengths.
"""
import numpy as np
import torch

from inference.checks import DataError

SOURCES = ("GunPoint", "ItalyPowerDemand")
MIN_WINDOW = 0.5  # a window covers at least this fraction of a source series


def ood_inputs(dataset, seed=0):
    """(x [M, T, C] float32 or [M, T] token ids, mask [M, T] or None): OOD inputs for ``dataset``, M = test size."""
    test = dataset.test
    rng = np.random.default_rng(seed)
    m, t = test.x.shape[:2]
    lengths = np.full(m, t) if test.mask is None else test.mask.sum(1).numpy()
    mask = None if test.mask is None else test.mask.clone()
    if dataset.tokens:
        vocab = int(dataset.train.x.max()) + 1
        x = torch.as_tensor(rng.integers(0, vocab, size=(m, t)), dtype=test.x.dtype)
        return (x if mask is None else x.masked_fill(~mask, 0)), mask
    source = source_series(dataset.name)
    c = dataset.input_dim
    x = np.zeros((m, t, c), dtype=np.float32)
    picks = rng.integers(0, len(source), size=(m, c))
    width = source.shape[1]
    for i, n in enumerate(lengths):
        for j in range(c):
            span = rng.integers(int(np.ceil(MIN_WINDOW * width)), width + 1)
            start = rng.integers(0, width - span + 1)
            grid = np.linspace(start, start + span - 1, n)
            x[i, :n, j] = z_normalized(np.interp(grid, np.arange(width), source[picks[i, j]]))
    return torch.as_tensor(x), mask


def source_series(target):
    """[M, T] test series of the first source that is not ``target`` (a DataError if none ships)."""
    from .shipped import available, load

    shipped = {n.lower() for n in available()}
    for name in SOURCES:
        if name.lower() != str(target).lower() and name.lower() in shipped:
            return load(name).test.x[..., 0].double().numpy()
    raise DataError(f"no out-of-distribution source for '{target}': needs one of {', '.join(SOURCES)} from aeon")


def z_normalized(v):
    return (v - v.mean()) / (v.std() + 1e-8)
