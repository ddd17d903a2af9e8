"""The pretraining corpus: every time series shipped in aeon's data folder, read from disk, as univariate series.

Classification and regression sets (``.ts``), forecasting sets (``.tsf``) and the CSV
files of the forecasting, anomaly-detection and segmentation examples all become
univariate float64 series: each channel of a multivariate series, and each numeric
column of a CSV that is not an index (consecutive integers) or a 0/1 label, is a
series of its own. The ``.arff``/``.tsv`` copies of training files that also ship as
``.ts`` are not read twice; series whose content repeats (``fingerprint``) are kept
once. Non-finite values are dropped, and series shorter than ``MIN_LENGTH`` steps
or constant are skipped.

A *source* is one dataset: the files of a folder that share a name once the split
suffix (``_TRAIN``, ``_TEST``, ...) is removed. ``exclude`` removes every file whose
folder or file name contains an excluded dataset's name (so excluding GunPoint also
removes ``segmentation/GunPoint.csv``), and then every remaining series whose
fingerprint matches one of the excluded files' series.
"""
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.checks import DataError

from .files import _is_number

MIN_LENGTH = 8
SUFFIXES = re.compile(r"_(TRAIN|TEST)(_[A-Z]+)?$")
READERS = (".ts", ".tsf", ".csv")


def data_dir():
    """aeon's folder of shipped datasets."""
    import aeon
    return Path(aeon.__file__).parent / "datasets" / "data"


@dataclass
class Source:
    """One dataset of the corpus: its name, the files read (relative to the data folder) and its series."""
    name: str
    files: list = field(default_factory=list)
    series: list = field(default_factory=list)

    @property
    def steps(self):
        return int(sum(len(s) for s in self.series))

    def sha256(self):
        """Of every series' length and float64 values, in order: what this source contributed, exactly."""
        h = hashlib.sha256()
        for s in self.series:
            h.update(np.int64(len(s)).tobytes())
            h.update(np.ascontiguousarray(s, dtype=np.float64).tobytes())
        return h.hexdigest()

    def summary(self):
        return {"name": self.name, "files": self.files, "series": len(self.series), "steps": self.steps,
                "sha256": self.sha256()}


def fingerprint(values):
    """A 16-hex-digit hash of a series' shape, blind to shift and scale (so to any per-channel standardization).

    The series is z-normalized and rounded to 0.01: the same series read by another
    loader, standardized with other statistics or stored in float32 hashes the same.
    None for a series too short or constant to say anything.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < MIN_LENGTH:
        return None
    d = v - v.mean()
    sd = np.sqrt(np.dot(d, d) / len(d))
    if sd < 1e-8 * (1.0 + np.abs(v).max()):
        return None
    z = np.round(d * (100 / sd)).astype(np.int32)
    return hashlib.sha256(z.tobytes()).hexdigest()[:16]


def _key(text):
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _group(path):
    """(folder, dataset name) of a data file: its stem without the split suffix."""
    return path.parent.name, SUFFIXES.sub("", path.stem)


def _univariate(x):
    """aeon's [N, C, T] array or list of [C, T_i] arrays -> a list of 1-D series, one per channel."""
    return [np.asarray(ch, dtype=np.float64) for case in x for ch in np.asarray(case, dtype=np.float64)]


def _read_ts(path):
    from aeon.datasets import load_from_ts_file
    x, _ = load_from_ts_file(str(path))
    return _univariate(x)


def _read_tsf(path):
    from aeon.datasets import load_from_tsf_file
    frame = load_from_tsf_file(str(path))[0]
    return [np.asarray(v, dtype=np.float64) for v in frame["series_value"]]


def _read_csv(path):
    import pandas as pd
    frame = pd.read_csv(path)
    if all(_is_number(c) for c in frame.columns):  # a headerless file: its first row is data
        frame = pd.read_csv(path, header=None)
    out = []
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(values).mean() < 0.5 or _is_index(values) or _is_label(values):
            continue
        out.append(values)
    return out


def _is_index(v):
    v = v[np.isfinite(v)]
    return len(v) > 1 and np.all(v == np.round(v)) and np.all(np.diff(v) == 1)


def _is_label(v):
    return set(np.unique(v[np.isfinite(v)]).tolist()) <= {0.0, 1.0}


def _read(path):
    """(series, fingerprint) pairs of one file, without non-finite values, too short or constant series."""
    reader = {".ts": _read_ts, ".tsf": _read_tsf, ".csv": _read_csv}[path.suffix]
    try:
        series = reader(path)
    except Exception as e:  # noqa: BLE001 - a file aeon ships but cannot read is named, never skipped silently
        raise DataError(f"cannot read corpus file '{path}': {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    kept = []
    for s in series:
        s = s[np.isfinite(s)]
        f = fingerprint(s)
        if f is not None:
            kept.append((s, f))
    return kept


def files(root=None):
    """Every readable data file, sorted (so the corpus is the same on every machine)."""
    root = Path(root or data_dir())
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in READERS)


def known_names(root=None):
    """Dataset names an ``--exclude`` may give: every source folder and dataset name in the data folder."""
    names = set()
    for p in files(root):
        folder, name = _group(p)
        names.update({folder, name})
    return names


def corpus(exclude=(), root=None, only=None):
    """The sources of the data folder minus ``exclude`` (dataset names), each with its univariate series.

    ``only`` (source names, e.g. ``GunPoint``, ``segmentation/GunPoint``) keeps just those sources (quick tests).
    Returns
    ``(sources, removed)``: ``removed`` lists the files left out and, per source, how
    many series were dropped because their content matched an excluded dataset's.
    """
    root = Path(root or data_dir())
    keys = [_key(n) for n in exclude]
    groups, left_out = {}, []
    for path in files(root):
        rel = path.relative_to(root).as_posix()
        if any(k and k in _key(rel) for k in keys):
            left_out.append(path)
            continue
        folder, name = _group(path)
        groups.setdefault((folder, name), []).append(path)
    in_folder = {}
    for folder, _ in groups:
        in_folder[folder] = in_folder.get(folder, 0) + 1
    banned = {f for path in left_out for _, f in _read(path)}
    seen, sources, dropped = set(), [], {}
    for (folder, name), paths in groups.items():
        label = folder if in_folder[folder] == 1 else f"{folder}/{name}"
        if only is not None and label not in only:
            continue
        source = Source(label, [p.relative_to(root).as_posix() for p in paths])
        for path in paths:
            for s, f in _read(path):
                if f in banned:
                    dropped[label] = dropped.get(label, 0) + 1
                elif f not in seen:
                    seen.add(f)
                    source.series.append(s)
        if source.series:
            sources.append(source)
    removed = {"files": [p.relative_to(root).as_posix() for p in left_out], "series_matching_excluded": dropped}
    return sources, removed


def check_exclude(names, root=None):
    """Refuse an ``--exclude`` name that matches no dataset (a typo would leak the dataset it meant)."""
    from .shipped import available

    known = {_key(n) for n in known_names(root)} | {_key(n) for n in available()}
    for name in names:
        if _key(name) not in known:
            raise DataError(f"--exclude '{name}' matches no dataset in aeon's data folder or the shipped datasets; "
                            f"check the spelling (see `bzoo datasets`)")
