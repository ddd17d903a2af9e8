"""Datasets that ship inside packages: aeon's UCR/UEA sets and scikit-learn's digits.

Every loader returns a ``Dataset``: train and test ``Split``s of float32 [N, T, C]
(or int64 tokens [N, T]) inputs, int64 labels 0..K-1, and a boolean mask [N, T]
when sequences differ in length. Inputs are standardized per channel with
training-set statistics, recorded in ``preprocessing``.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from inference.checks import DataError

DEFAULT_DATASET = "ItalyPowerDemand"
AEON = {
    "ItalyPowerDemand": "daily Italian power demand, 2 classes, length 24",
    "GunPoint": "hand motion, 2 classes, length 150",
    "ArrowHead": "arrowhead outlines, 3 classes, length 251",
    "OSULeaf": "leaf outlines, 6 classes, length 427",
    "BasicMotions": "accelerometer, 4 classes, 6 channels, length 100",
    "JapaneseVowels": "speech, 9 classes, 12 channels, variable length 7-29",
}
OTHER = {"digits": "scikit-learn 8x8 digits read as 8 rows of 8 pixels, 10 classes"}


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self):
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    classes: list
    preprocessing: dict = field(default_factory=dict)

    @property
    def input_dim(self):
        return None if self.tokens else self.train.x.shape[-1]

    @property
    def tokens(self):
        return not self.train.x.is_floating_point()

    @property
    def max_len(self):
        return self.train.x.shape[1]


def available():
    return {**AEON, **OTHER}


def load(name=DEFAULT_DATASET):
    """A shipped dataset by name (case-insensitive); ``available()`` lists them."""
    names = {n.lower(): n for n in available()}
    if name.lower() not in names:
        raise DataError(f"unknown dataset '{name}'; shipped: {', '.join(available())} (or pass --data FILE.npz)")
    name = names[name.lower()]
    if name == "digits":
        return _digits()
    from aeon.datasets import load_classification
    xtr, ytr = load_classification(name, split="train")
    xte, yte = load_classification(name, split="test")
    return build(name, _to_ntc(xtr), ytr, _to_ntc(xte), yte)


def _to_ntc(x):
    """aeon gives [N, C, T] arrays or a list of [C, T_i]: return a list/array in [N, T, C]."""
    if isinstance(x, np.ndarray):
        return x.transpose(0, 2, 1)
    return [np.asarray(a).T for a in x]


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    cut = int(0.7 * len(x))
    tr, te = order[:cut], order[cut:]
    return build("digits", x[tr], d.target[tr], x[te], d.target[te])


def _pad(seqs):
    """List of [T_i, C] -> padded array [N, T_max, C] and mask [N, T_max]."""
    t = max(len(s) for s in seqs)
    out = np.zeros((len(seqs), t, seqs[0].shape[-1]), dtype=np.float64)
    mask = np.zeros((len(seqs), t), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def build(name, xtr, ytr, xte, yte):
    """Standardize inputs with train statistics and map labels to 0..K-1."""
    classes = sorted(set(np.asarray(ytr).tolist()), key=_label_key)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(np.asarray(yte).tolist()) - set(classes), key=_label_key)
    if unknown:
        raise DataError(f"{name}: test labels {unknown[:5]} do not occur in the training labels")
    splits, pre = [], {}
    for x, y in ((xtr, ytr), (xte, yte)):
        mask = None
        if isinstance(x, list):
            x, mask = _pad(x)
        x = np.asarray(x)
        if x.ndim == 2 and np.issubdtype(x.dtype, np.floating):
            x = x[..., None]
        splits.append([x, np.array([index[v] for v in np.asarray(y).tolist()]), mask])
    (xtr, _, mtr), (xte, _, mte) = splits
    if np.issubdtype(xtr.dtype, np.floating):
        valid = xtr[mtr] if mtr is not None else xtr.reshape(-1, xtr.shape[-1])
        mean, std = valid.mean(0), valid.std(0) + 1e-8
        pre = {"mean": mean.tolist(), "std": std.tolist()}
        for sp in splits:
            sp[0] = ((sp[0] - mean) / std).astype(np.float32)
            if sp[2] is not None:
                sp[0][~sp[2]] = 0.0
    t = max(splits[0][0].shape[1], splits[1][0].shape[1])
    out = []
    for x, y, mask in splits:
        x, mask = _pad_to(x, mask, t)
        out.append(Split(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long),
                         None if mask is None else torch.as_tensor(mask)))
    return Dataset(name, out[0], out[1], len(classes), classes, pre)


def _pad_to(x, mask, t):
    """Pad the time axis of one split so train and test share a length (with a mask if needed)."""
    if x.shape[1] == t:
        return x, mask
    if mask is None:
        mask = np.ones(x.shape[:2], dtype=bool)
    pad = [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad), np.pad(mask, [(0, 0), (0, t - x.shape[1])])


def _label_key(v):
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))
