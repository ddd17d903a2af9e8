"""Datasets that ship inside packages (aeon's UCR/UEA sets, scikit-learn's digits) and user files.

Every loader returns a ``Dataset``: train and test ``Split``s of float32 [N, T, C]
(or int64 tokens [N, T]) inputs, int64 labels 0..K-1, and a boolean mask [N, T]
when sequences differ in length. Inputs are standardized per channel with
training-set statistics, recorded in ``preprocessing``.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

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


class DataError(ValueError):
    """A dataset name or data file is invalid; the message names it."""


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


# --- a user's own data -----------------------------------------------------------------------------------


def load_file(path, test_fraction=0.3, seed=0):
    """A Dataset from a user's ``.npz`` or ``.csv`` file; every problem is a DataError naming the file.

    ``.npz``: ``X`` [N, T, C] or [N, T] (floats; integers mean tokens) and ``y`` [N],
    optionally ``X_test`` and ``y_test``. ``.csv``: one row per series, the label in
    the first column and the T values after it (rows may differ in length: shorter
    ones are masked); a first row whose values are not numbers is a header and is
    skipped. Labels are integers >= 0 or strings; either way they map to 0..K-1 in
    sorted order (``Dataset.classes`` keeps the originals). Without a test set, a
    seeded random ``test_fraction`` of the examples is held out.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y, xte, yte = _read_npz(path)
    elif suffix == ".csv":
        (x, y), xte, yte = _read_csv(path), None, None
    else:
        raise DataError(f"data file '{path}' has extension '{path.suffix}'; use .npz (X, y) or .csv (label, values...)")
    x, y = _check_arrays(path, "X", "y", x, y)
    if xte is None:
        n_test = int(round(test_fraction * len(y)))
        if n_test < 1 or len(y) - n_test < 2:
            raise DataError(f"data file '{path}': {len(y)} examples are too few to hold out a test set "
                            f"(need at least 2 for training and 1 for testing)")
        order = np.random.default_rng(seed).permutation(len(y))
        pick = (lambda a, idx: [a[i] for i in idx]) if isinstance(x, list) else (lambda a, idx: a[idx])
        xte, yte = pick(x, order[:n_test]), y[order[:n_test]]
        x, y = pick(x, order[n_test:]), y[order[n_test:]]
    else:
        xte, yte = _check_arrays(path, "X_test", "y_test", xte, yte)
    if len(set(y.tolist())) < 2:
        raise DataError(f"data file '{path}': the training labels hold a single class ({y[0]!r}); need at least 2")
    return build(path.stem, x, y, xte, yte)


def _read_npz(path):
    import zipfile
    if not zipfile.is_zipfile(path):
        raise DataError(f"data file '{path}' is not a valid .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError:  # object arrays need pickle, which can run code: refused
        raise DataError(f"data file '{path}' holds object arrays, which need pickle (refused: it can run code); "
                        f"save plain numeric or string arrays") from None
    except Exception as e:  # noqa: BLE001 - zip, header and I/O errors all mean "not a usable npz"
        raise DataError(f"data file '{path}' is not a valid .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise DataError(f"data file '{path}' has no array '{missing[0]}'; found {sorted(arrays) or 'none'} "
                        f"(need X [N, T, C] or [N, T] and y [N], optionally X_test and y_test)")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"data file '{path}' has only one of X_test and y_test; give both or neither")
    return arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test")


def _read_csv(path):
    import csv
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"data file '{path}' is not a readable CSV file ({e})") from None
    if rows and not all(_is_number(c) for c in rows[0][1:] if c.strip()):
        rows = rows[1:]  # a header
    labels, series = [], []
    for line, row in enumerate(rows, start=1):
        values = [c.strip() for c in row[1:]]
        while values and not values[-1]:
            values.pop()  # trailing empty cells: a shorter series
        if not values:
            raise DataError(f"data file '{path}': row {line} has a label but no values")
        bad = next((j for j, c in enumerate(values) if not _is_number(c)), None)
        if bad is not None:
            raise DataError(f"data file '{path}': row {line}, value {bad + 1} is '{values[bad]}', not a number")
        labels.append(row[0].strip())
        series.append(np.array(values, dtype=np.float64)[:, None])
    if not series:
        raise DataError(f"data file '{path}' has no data rows (expected: label, value1, value2, ...)")
    y = np.array([int(v) for v in labels]) if all(_is_int(v) for v in labels) else np.array(labels)
    if len({len(s) for s in series}) == 1:
        return np.stack(series), y
    return series, y


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def _check_arrays(path, xname, yname, x, y):
    """Shapes, finiteness and labels of one (X, y) pair from a file; returns (x, y) as numpy (x may be a list)."""
    where = f"data file '{path}'"
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: {yname} must be 1-D [N], got shape {list(y.shape)}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            first = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise DataError(f"{where}: {yname} holds non-integer label {first}; labels must be integers or strings")
        y = y.astype(np.int64)
    elif y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "U"):
        raise DataError(f"{where}: {yname} has dtype {y.dtype}; labels must be integers or strings")
    if np.issubdtype(y.dtype, np.integer) and (y < 0).any():
        raise DataError(f"{where}: {yname} holds negative label {y[y < 0][0]}; labels must be integers >= 0 or strings")
    if isinstance(x, list):
        n, values = len(x), np.concatenate([s.ravel() for s in x])
    else:
        x = np.asarray(x)
        if x.ndim not in (2, 3) or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{where}: {xname} must be numeric [N, T, C] or [N, T], got {x.dtype} "
                            f"of shape {list(x.shape)}")
        n, values = len(x), x
    if n != len(y):
        raise DataError(f"{where}: {xname} has {n} examples but {yname} has {len(y)}")
    if np.issubdtype(np.asarray(values).dtype, np.floating) and not np.all(np.isfinite(values)):
        first = np.argwhere(~np.isfinite(x if not isinstance(x, list) else values))[0].tolist()
        at = f"at example {first[0]}" if not isinstance(x, list) else "in the values"
        raise DataError(f"{where}: {xname} holds {int((~np.isfinite(values)).sum())} NaN or infinite values "
                        f"(first {at}); impute or drop them")
    if np.issubdtype(np.asarray(values).dtype, np.integer) and (values < 0).any():
        raise DataError(f"{where}: integer {xname} is read as tokens, which must be >= 0")
    return x, y


def check_data(x, y, mask=None, num_classes=None, vocab_size=None, source="data"):
    """Refuse tensors a classifier cannot fit, naming the problem: lengths, NaN/inf, label range, tokens."""
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
        raise DataError(f"{source}: mask has shape {list(mask.shape)}, expected [N, T] = {list(x.shape[:2])}")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            first = bad.nonzero()[0].tolist()
            raise DataError(f"{source}: x holds {int(bad.sum())} NaN or infinite values (first at index {first})")
    elif vocab_size is not None and x.numel() and (x.min() < 0 or x.max() >= vocab_size):
        raise DataError(f"{source}: token ids must be in 0..{vocab_size - 1}, found {int(x.min())}..{int(x.max())}")
    if num_classes is not None:
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise DataError(f"{source}: labels must be integers 0..{num_classes - 1}, got dtype {y.dtype}")
        out = (y < 0) | (y >= num_classes)
        if out.any():
            i = int(out.nonzero()[0])
            raise DataError(f"{source}: label {int(y[i])} at example {i} is outside 0..{num_classes - 1} "
                            f"(the model has num_classes={num_classes})")
