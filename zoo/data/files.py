"""A user's own data: ``.npz`` or ``.csv`` files read into a ``Dataset``, every problem a DataError naming the file."""
from pathlib import Path

import numpy as np

from inference.checks import DataError

from .shipped import build


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
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise DataError(f"data file must be a path to a .npz or .csv file, got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist" + (" (it is a folder)" if path.is_dir() else ""))
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
        channels = [a[0].shape[-1] if isinstance(a, list) else (a.shape[2] if a.ndim == 3 else 1) for a in (x, xte)]
        if channels[0] != channels[1] or (isinstance(x, list) or x.dtype.kind == "f") != (
                isinstance(xte, list) or xte.dtype.kind == "f"):
            raise DataError(f"data file '{path}': X and X_test differ in kind or channels "
                            f"({_kind(x)} vs {_kind(xte)}); a model sees both")
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
    """Rows of a UTF-8 CSV (a byte-order mark, as spreadsheet programs write, is not part of the first label)."""
    import csv
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"data file '{path}' is not UTF-8 text (byte 0x{e.object[e.start]:02x} at position "
                        f"{e.start}); save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise DataError(f"data file '{path}' is not a readable CSV file ({e})") from None
    if rows and all(len(r) == 1 for r in rows):
        other = next((d for d in (";", "\t", "|") if d in rows[0][0]), None)
        if other:
            raise DataError(f"data file '{path}' separates its values with {other!r}; a .csv here is "
                            f"comma-separated (label, value1, value2, ...)")
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


def _kind(x):
    if isinstance(x, list):
        return f"{len(x)} real-valued series of varying length"
    return f"{'real values' if x.dtype.kind == 'f' else 'tokens'} of shape {list(x.shape)}"


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
        if x.shape[1] == 0 or (x.ndim == 3 and x.shape[2] == 0):
            raise DataError(f"{where}: {xname} has shape {list(x.shape)}; every series needs at least one time "
                            f"step and one channel")
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
