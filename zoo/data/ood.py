"""Out-of-distribution inputs for a dataset: real series from another shipped dataset.

For univariate real-valued data, the test series of a different UCR dataset
(GunPoint, or ItalyPowerDemand when the data is GunPoint itself) are linearly
resampled to the dataset's length, z-normalized per series as the UCR archive
does, and scaled with the dataset's own preprocessing. Other data has no OOD set.
"""
import numpy as np
import torch

SOURCES = ("GunPoint", "ItalyPowerDemand")


def ood_inputs(dataset):
    """[M, T, 1] float32 OOD inputs matching ``dataset``'s length, or None if none is defined."""
    if dataset.tokens or dataset.input_dim != 1 or dataset.train.mask is not None:
        return None
    from aeon.datasets import load_classification

    source = next(s for s in SOURCES if s.lower() != dataset.name.lower())
    x, _ = load_classification(source, split="test")
    x = np.asarray(x)[:, 0, :]
    t = dataset.max_len
    grid = np.linspace(0, x.shape[1] - 1, t)
    x = np.stack([np.interp(grid, np.arange(x.shape[1]), row) for row in x])
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-8)
    pre = dataset.preprocessing
    if pre:
        x = (x - pre["mean"][0]) / pre["std"][0]
    return torch.as_tensor(x[..., None], dtype=torch.float32)
