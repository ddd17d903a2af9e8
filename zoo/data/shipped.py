"""Datasets that ship inside packages: every classification set in aeon's data folder, and scikit-learn's digits.

aeon's sets are discovered from its bundled ``.ts`` files (headers only, so listing is
fast) and loaded from those exact files with their official train/test split, so
nothing is ever downloaded. Every loader returns a ``Dataset``: train and test ``Split``s of float32 [N, T, C]
(or int64 tokens [N, T]) inputs, int64 labels 0..K-1, and a boolean mask [N, T]
when sequences differ in length. Inputs are standardized per channel with
training-set statistics, recorded in ``preprocessing`` (``standardize`` says what it refuses).
"""
import functools
import importlib.util
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.checks import DataError

DEFAULT_DATASET = "ItalyPowerDemand"
DIGITS = "digits"
SKIPPED = {  # what aeon's data folder holds besides classification problems, and why each is left out
    "regression": "a regression problem (header @targetLabel true), not classification",
    "equal-length copy": "an '_eq' (or '_nmv') copy of a set listed under its own name, made equal length by "
                         "truncation (or imputed); the zoo takes the original with padding masks",
    "test fixture": "one of aeon's unit-test fixtures (UnitTest*), not a real problem",
    "missing values": "holds missing values (header @missing true), which the zoo's models do not take",
}


@dataclass(frozen=True)
class Info:
    """What a shipped dataset is, read from its files' headers (and line counts): no values parsed."""

    name: str
    classes: tuple
    channels: int
    lengths: tuple  # (shortest, longest) series, in time steps
    sizes: tuple | None = None  # (train, test) series counts, from ``info(name)``
    files: tuple = ()  # (train, test) .ts paths; empty for digits

    @property
    def description(self):
        k, c = len(self.classes), self.channels
        lo, hi = self.lengths
        length = f"length {hi}" if lo == hi else f"variable length {lo}-{hi}"
        return f"{k} classes, {c} channel{'s' * (c > 1)}, {length}"


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
    ood: tuple | None = None  # (x, mask) of its own OOD set (``near_ood.held_out``); None: the far-OOD windows

    @property
    def input_dim(self):
        return None if self.tokens else self.train.x.shape[-1]

    @property
    def vocab_size(self):
        """Token data: ids the model embeds (the training vocabulary and one id for unseen ids); None otherwise."""
        if not self.tokens:
            return None
        return self.preprocessing.get("vocab_size", int(self.train.x.max()) + 1)

    @property
    def tokens(self):
        return not self.train.x.is_floating_point()

    @property
    def max_len(self):
        return self.train.x.shape[1]


def available():
    """Every shipped classification dataset, name -> description: aeon's bundled sets, then digits.

    Found in aeon's data folder (``aeon/datasets/data/NAME/NAME_TRAIN.ts`` and ``NAME_TEST.ts``
    whose header says ``@classLabel true``) from the files' headers alone; ``skipped()``
    names what that folder holds besides, and why each is left out.
    """
    return {**{name: i.description for name, i in _catalog()[0].items()}, DIGITS: _digits_info().description}


def skipped():
    """name -> why a .ts set in aeon's data folder is not offered (see ``SKIPPED``)."""
    return dict(_catalog()[1])


def info(name):
    """``Info`` of a shipped dataset, with its train and test sizes (line counts; no values parsed)."""
    name = canonical(name)
    if name == DIGITS:
        return _digits_info(sizes=True)
    i = _catalog()[0][name]
    return replace(i, sizes=tuple(_count_cases(f) for f in i.files))


def canonical(name):
    """The shipped dataset's own spelling of ``name`` (case-insensitive), or a DataError listing them."""
    names = {n.lower(): n for n in available()}
    if str(name).lower() not in names:
        raise DataError(f"unknown dataset '{name}'; shipped: {', '.join(available())} (or pass --data FILE.npz)")
    return names[str(name).lower()]


def load(name=DEFAULT_DATASET):
    """A shipped dataset by name (case-insensitive) with its official train/test split; ``available()`` lists them."""
    name = canonical(name)
    if name == DIGITS:
        return _digits()
    from aeon.datasets import load_from_ts_file  # the exact bundled files: nothing is ever downloaded

    (xtr, ytr), (xte, yte) = (load_from_ts_file(str(f)) for f in _catalog()[0][name].files)
    return build(name, _to_ntc(xtr), ytr, _to_ntc(xte), yte)


def aeon_data_folder():
    """aeon's bundled data folder, found without importing aeon (an import takes seconds); None without aeon."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def _catalog():
    """({name: Info} of aeon's classification sets, {name: reason} for the other .ts sets in its data folder)."""
    folder = aeon_data_folder()
    found, left_out = {}, {}
    for train in sorted(folder.glob("*/*_TRAIN.ts") if folder and folder.is_dir() else [], key=lambda p: p.name.lower()):
        name = train.name[: -len("_TRAIN.ts")]
        test = train.with_name(f"{name}_TEST.ts")
        base = name.removesuffix("_nmv").removesuffix("_eq")
        if name.startswith("UnitTest"):
            left_out[name] = SKIPPED["test fixture"]
        elif base != name and (train.parent / f"{base}_TRAIN.ts").is_file():
            left_out[name] = SKIPPED["equal-length copy"]
        elif test.is_file():
            head, first = _header(train)
            if head.get("targetlabel", "false").split()[0].lower() == "true" or \
                    head.get("classlabel", "false").split()[0].lower() != "true":
                left_out[name] = SKIPPED["regression"]
            elif head.get("missing", "false").lower() == "true":
                left_out[name] = SKIPPED["missing values"]
            else:
                found[name] = _aeon_info(name, head, first, (train, test))
    return found, left_out


def _aeon_info(name, head, first, files):
    """Classes, channels and lengths from the header; lengths from the data lines only where the header lacks them."""
    classes = tuple(head["classlabel"].split()[1:])
    channels = int(head["dimensions"]) if "dimensions" in head else max(1, first.count(":"))
    if head.get("equallength", "true").lower() == "false":
        lengths = [n for f in files for n in _series_lengths(f)]
        span = (min(lengths), max(lengths))
    elif "serieslength" in head:
        span = (int(head["serieslength"]),) * 2
    else:
        span = (_length(first),) * 2
    return Info(name, classes, channels, span, files=files)


def _header(path):
    """A .ts file's header as {key: value} (keys lower-cased, first occurrence wins) and its first data line."""
    head = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.lower() == "@data":
                return head, next((row.strip() for row in f if row.strip()), "")
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                head.setdefault(key.lower(), value.strip())
    return head, ""


def _data_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().lower() == "@data":
                break
        yield from (row for row in f if row.strip())


def _length(row):
    """Time steps of a .ts data line (those of its first channel): values are comma-separated, channels ':'-separated."""
    return row.split(":", 1)[0].count(",") + 1


def _series_lengths(path):
    return [_length(row) for row in _data_lines(path)]


def _count_cases(path):
    return sum(1 for _ in _data_lines(path))


def _digits_info(sizes=False):
    n = None
    if sizes:
        from sklearn.datasets import load_digits
        n = len(load_digits().target)
    return Info(DIGITS, tuple(range(10)), 8, (8, 8), None if n is None else (_digits_cut(n), n - _digits_cut(n)))


def _digits_cut(n):
    return int(0.7 * n)


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
    tr, te = order[:_digits_cut(len(x))], order[_digits_cut(len(x)):]
    return build(DIGITS, x[tr], d.target[tr], x[te], d.target[te])


def _pad(seqs):
    """List of [T_i, C] -> padded array [N, T_max, C] and mask [N, T_max]."""
    t = max(len(s) for s in seqs)
    out = np.zeros((len(seqs), t, seqs[0].shape[-1]), dtype=np.float64)
    mask = np.zeros((len(seqs), t), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def build(name, xtr, ytr, xte, yte, source=None, locate=None):
    """Standardize inputs with train statistics (``standardize``) and map labels to 0..K-1.

    ``source`` begins every refusal and warning (default: ``name``); ``locate(split, i, t, c)``
    names value [i, t, c] of split 0 (train) or 1 (test) in them, as its file would
    (default: "train series i, step t, channel c").
    """
    source = source or name
    locate = locate or (lambda k, i, t, c: f"{('train', 'test')[k]} series {i}, step {t}, channel {c}")
    classes = sorted(set(np.asarray(ytr).tolist()), key=_label_key)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(np.asarray(yte).tolist()) - set(classes), key=_label_key)
    if unknown:
        raise DataError(f"{source}: test labels {unknown[:5]} do not occur in the training labels")
    splits, pre = [], {}
    for x, y in ((xtr, ytr), (xte, yte)):
        mask = None
        if isinstance(x, list):
            x, mask = _pad(x)
        x = np.asarray(x)
        if x.ndim == 2 and np.issubdtype(x.dtype, np.floating):
            x = x[..., None]
        splits.append([x, np.array([index[v] for v in np.asarray(y).tolist()]), mask])
    if np.issubdtype(splits[0][0].dtype, np.floating):
        pre = standardize(splits, source, locate)
    else:
        pre = vocabulary(splits)
    t = max(splits[0][0].shape[1], splits[1][0].shape[1])
    out = []
    for x, y, mask in splits:
        x, mask = _pad_to(x, mask, t)
        out.append(Split(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long),
                         None if mask is None else torch.as_tensor(mask)))
    return Dataset(name, out[0], out[1], len(classes), classes, pre)


def vocabulary(splits):
    """Token ids: the vocabulary is the training split's alone (ids 0..max seen in training) plus one id for
    every id unseen there, to which test ids beyond it are mapped in place; returns {"vocab_size", "unknown_id"}.
    Nothing about the model's input then depends on the test split."""
    (xtr, _, mtr), (xte, _, mte) = splits
    seen = int(xtr[mtr].max() if mtr is not None else xtr.max()) if xtr.size else 0
    splits[1][0] = np.where(xte > seen, seen + 1, xte)
    return {"vocab_size": seen + 2, "unknown_id": seen + 1}


def standardize(splits, source, locate):
    """Scale each [x, y, mask] of ``splits`` in place to float32 (x - mean) / std; returns {"mean", "std"}.

    The per-channel statistics are those of the training values (``splits[0]``, mask applied),
    computed in float64. Refused with a DataError naming the value: a NaN or infinity; a
    training value that makes a channel's mean or std overflow float64 (such as 1e308, or
    anything beyond about 1e154, whose square overflows); a value that lands beyond float32
    once standardized. A training channel that is constant (max == min: its float64 std is then
    rounding noise, not always 0) or whose variance underflows to 0 warns, and is centred on
    its value with std 1 instead of being divided by zero.
    """
    for k, (x, _, _) in enumerate(splits):  # padding is 0, so finite
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            total = sum(int((~np.isfinite(s[0])).sum()) for s in splits)
            i, t, c = bad[0].tolist()
            raise DataError(f"{source}: {locate(k, i, t, c)} is {x[i, t, c]}, not a finite number ({total} NaN or "
                            f"infinite value{'s' * (total > 1)} in all); impute or drop them")
    x, _, mask = splits[0]
    valid = (x[mask] if mask is not None else x.reshape(-1, x.shape[-1])).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = valid.mean(0), valid.std(0)
    for c in np.flatnonzero(~np.isfinite(mean) | ~np.isfinite(std)):
        i, t = np.unravel_index(np.argmax(np.abs(x[..., c])), x.shape[:2])
        raise DataError(f"{source}: {locate(0, i, t, c)} is {x[i, t, c]:g}, which makes channel {c}'s training "
                        f"{'mean' if not np.isfinite(mean[c]) else 'standard deviation'} overflow float64; "
                        f"rescale the channel or drop the value")
    lo, hi = valid.min(0), valid.max(0)
    flat = (hi == lo) | (std == 0)
    for c in np.flatnonzero(flat):
        warnings.warn(f"{source}: channel {c} has zero variance on the training data "
                      f"({'every value is ' + format(lo[c], 'g') if hi[c] == lo[c] else 'its variance underflows'}); "
                      f"it is centred but not scaled, and carries no information", stacklevel=3)
    mean, std = np.where(hi == lo, lo, mean), np.where(flat, 1.0, std)
    for k, split in enumerate(splits):
        x, _, mask = split
        with np.errstate(over="ignore"):
            z = ((x.astype(np.float64) - mean) / std).astype(np.float32)
        if mask is not None:
            z[~mask] = 0.0
        beyond = np.argwhere(~np.isfinite(z))
        if len(beyond):
            i, t, c = beyond[0].tolist()
            raise DataError(f"{source}: {locate(k, i, t, c)} is {x[i, t, c]:g}, too far from channel {c}'s training "
                            f"mean {mean[c]:g} (std {std[c]:g}) to hold in float32 once standardized; "
                            f"rescale the channel or drop the value")
        split[0] = z
    return {"mean": mean.tolist(), "std": std.tolist()}


def _pad_to(x, mask, t):
    """Pad the time axis of one split so train and test share a length (with a mask if needed)."""
    if x.shape[1] == t:
        return x, mask
    if mask is None:
        mask = np.ones(x.shape[:2], dtype=bool)
    pad = [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad), np.pad(mask, [(0, 0), (0, t - x.shape[1])])


def _label_key(v):
    """Labels that are finite numbers (or their text) in numeric order, then the rest; ties ("1", "1.0") by text,
    so class numbers never depend on set order."""
    try:
        number = float(v)
    except (TypeError, ValueError):
        number = math.nan
    return (0, number, str(v)) if math.isfinite(number) else (1, 0.0, str(v))
