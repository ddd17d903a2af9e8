"""A user's own data: ``.npz`` or ``.csv`` files read into a ``Dataset``, every problem a DataError naming the file."""
import math
import warnings
from pathlib import Path

import numpy as np

from core.checks import DataError

from .shipped import build


def load_file(path, test_fraction=0.3, seed=0):
    """A Dataset from a user's ``.npz`` or ``.csv`` file; every problem is a DataError naming the file.

    ``.npz``: ``X`` [N, T, C] or [N, T] (floats; integers mean tokens) and ``y`` [N],
    optionally ``X_test`` and ``y_test``. ``.csv``: one row per series, the label in
    the first column and the T values after it (rows may differ in length: shorter
    ones are masked); a first row whose values are not numbers, or whose label alone is
    not (every other label being one), is a header and is skipped; an empty label is
    refused. Labels: when every label (of y and y_test together) is a number, however
    written (1, 1.0, "1.0", "1e0"), equal numbers are one class, and they must be whole
    and >= 0; otherwise every label is a string compared as written, so "1" and "1.0"
    beside "cat" are two classes. Either way they map to 0..K-1 in sorted order
    (``Dataset.classes`` keeps the originals). Without a test set, a seeded random
    ``test_fraction`` of the examples is held out. Values are checked and standardized
    by ``shipped.standardize``: a refusal names the value as ``X example i, step t, channel c``
    (0-based) or ``row r, value j`` (a CSV's line, header included, and its j-th value).
    """
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise DataError(f"data file must be a path to a .npz or .csv file, got {path!r}")
    path = Path(path)
    where = f"data file '{path}'"
    if not path.is_file():
        raise DataError(f"{where} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    x, y, xte, yte, lines = _read(path)
    x, y = _check_arrays(path, "X", "y", x, y)
    label_place = (lambda i: f"row {lines[i]}") if lines else (lambda i: f"y[{i}]")
    if xte is None:
        x, y, xte, yte, rows = _hold_out(where, x, y, label_place, test_fraction, seed)
        arrays = ("X", "X")
    else:
        xte, yte = _check_arrays(path, "X_test", "y_test", xte, yte)
        y, yte = _labels(where, [(y, label_place), (yte, lambda i: f"y_test[{i}]")])
        channels = [a.shape[2] if a.ndim == 3 else 1 for a in (x, xte)]
        if channels[0] != channels[1] or (x.dtype.kind == "f") != (xte.dtype.kind == "f"):
            raise DataError(f"{where}: X and X_test differ in kind or channels "
                            f"({_kind(x)} vs {_kind(xte)}); a model sees both")
        rows, arrays = (np.arange(len(y)), np.arange(len(yte))), ("X", "X_test")
    if len(set(y.tolist())) < 2:
        raise DataError(f"{where}: the training labels hold a single class ({y.tolist()[0]!r}); need at least 2")
    with_channels = not lines and x.ndim == 3

    def locate(split, i, t, c):
        """Value [i, t, c] of split 0 (train) or 1 (test), named as the file holds it."""
        row = rows[split][i]
        if lines:
            return f"row {lines[row]}, value {t + 1}"
        return f"{arrays[split]} example {row}, step {t}" + (f", channel {c}" if with_channels else "")

    return build(path.stem, x, y, xte, yte, source=where, locate=locate)


def _read(path):
    """(X, y, X_test or None, y_test or None, the CSV line of each row or None) as the file holds them."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return (*_read_npz(path), None)
    if suffix == ".csv":
        x, y, lines = _read_csv(path)
        return x, y, None, None, lines
    raise DataError(f"data file '{path}' has extension '{path.suffix}'; use .npz (X, y) or .csv (label, values...)")


def _hold_out(where, x, y, label_place, test_fraction, seed):
    """A file without a test set: a seeded random ``test_fraction`` of its examples held out; (x, y, x_test, y_test,
    (the file's rows of train, of test))."""
    (y,) = _labels(where, [(y, label_place)])
    n_test = int(round(test_fraction * len(y)))
    if n_test < 1 or len(y) - n_test < 2:
        raise DataError(f"{where}: {len(y)} examples are too few to hold out a test set "
                        f"(need at least 2 for training and 1 for testing)")
    order = np.random.default_rng(seed).permutation(len(y))
    rows = order[n_test:], order[:n_test]
    pick = (lambda a, idx: [a[i] for i in idx]) if isinstance(x, list) else (lambda a, idx: a[idx])
    return pick(x, rows[0]), y[rows[0]], pick(x, rows[1]), y[rows[1]], rows


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
    unread = sorted(set(arrays) - {"X", "y", "X_test", "y_test"})
    if unread:  # a misspelled X_test would otherwise pass unnoticed, the test set drawn from X instead
        warnings.warn(f"data file '{path}': array(s) {', '.join(unread)} are not read; only X, y, X_test and "
                      f"y_test are")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"data file '{path}' has only one of X_test and y_test; give both or neither")
    return arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test")


def _read_csv(path):
    """(X, label texts, each series' line number) from a UTF-8 CSV (a byte-order mark, as spreadsheet programs
    write, is not part of the first label)."""
    import csv
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"data file '{path}' is not UTF-8 text (byte 0x{e.object[e.start]:02x} at position "
                        f"{e.start}); save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise DataError(f"data file '{path}' is not a readable CSV file ({e})") from None
    if rows and all(len(r) == 1 for _, r in rows):
        other = next((d for d in (";", "\t", "|") if d in rows[0][1][0]), None)
        if other:
            raise DataError(f"data file '{path}' separates its values with {other!r}; a .csv here is "
                            f"comma-separated (label, value1, value2, ...)")
    if rows and not all(_is_number(c) for c in rows[0][1][1:] if c.strip()):
        rows = rows[1:]  # a header
    elif len(rows) > 1 and not _is_number(rows[0][1][0]) and all(_is_number(r[0]) for _, r in rows[1:]):
        rows = rows[1:]  # a header naming its columns by number ("label,1,2,3"): its label is no class
    labels, series = [], []
    for line, row in rows:
        values = [c.strip() for c in row[1:]]
        while values and not values[-1]:
            values.pop()  # trailing empty cells: a shorter series
        if not values:
            raise DataError(f"data file '{path}': row {line} has a label but no values")
        bad = next((j for j, c in enumerate(values) if not _is_number(c)), None)
        if bad is not None:
            raise DataError(f"data file '{path}': row {line}, value {bad + 1} is '{values[bad]}', not a number")
        if not row[0].strip():
            raise DataError(f"data file '{path}': row {line} has no label (its first value is empty)")
        labels.append(row[0].strip())
        series.append(np.array(values, dtype=np.float64)[:, None])
    if not series:
        raise DataError(f"data file '{path}' has no data rows (expected: label, value1, value2, ...)")
    x = np.stack(series) if len({len(s) for s in series}) == 1 else series
    return x, np.array(labels), [line for line, _ in rows]


def _kind(x):
    return f"{'real values' if x.dtype.kind == 'f' else 'tokens'} of shape {list(x.shape)}"


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _number(text):
    """The number a label's text writes: an int where it is one (exact at any size), else a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _check_arrays(path, xname, yname, x, y):
    """Shapes and dtypes of one (X, y) pair from a file; returns (x, y) as numpy (x may be a list of series).

    The values themselves are checked where they are standardized (``shipped.standardize``), the labels by ``_labels``.
    """
    where = f"data file '{path}'"
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: {yname} must be 1-D [N], got shape {list(y.shape)}")
    if y.dtype.kind not in "iufU":
        raise DataError(f"{where}: {yname} has dtype {y.dtype}; labels must be integers or strings")
    if not isinstance(x, list):
        x = np.asarray(x)
        if x.ndim not in (2, 3) or x.dtype.kind not in "iuf":
            raise DataError(f"{where}: {xname} must be numeric [N, T, C] or [N, T], got {x.dtype} "
                            f"of shape {list(x.shape)}")
        if x.shape[1] == 0 or (x.ndim == 3 and x.shape[2] == 0):
            raise DataError(f"{where}: {xname} has shape {list(x.shape)}; every series needs at least one time "
                            f"step and one channel")
        if x.dtype.kind in "iu" and (x < 0).any():
            raise DataError(f"{where}: integer {xname} is read as tokens, which must be >= 0")
    if len(x) != len(y):
        raise DataError(f"{where}: {xname} has {len(x)} examples but {yname} has {len(y)}")
    if len(y) == 0:
        raise DataError(f"{where}: {xname} holds no examples")
    return x, y


def _labels(where, labelled):
    """[(y, place)] -> the y arrays as int64 class numbers, or as strings (see ``load_file``); place(i) names label i.

    Numbers when every label of every array is one: int and float arrays are, text is when it parses as a
    number. Whole-valued floats become ints, so 1 and 1.0 are one class; fractions, NaN, negative labels
    and labels beyond int64 are refused, naming the first.
    """
    if not all(y.dtype.kind in "iuf" or all(_is_number(v) for v in y.tolist()) for y, _ in labelled):
        for y, place in labelled:
            empty = next((i for i, v in enumerate(y.tolist()) if not str(v).strip()), None)
            if empty is not None:
                raise DataError(f"{where}: {place(empty)} holds an empty label; every example needs one")
        return [y.astype(str) for y, _ in labelled]
    out = []
    for y, place in labelled:
        numbers = []
        for i, v in enumerate(y.tolist()):
            n = _number(v) if isinstance(v, str) else v
            if isinstance(n, float):
                if not (math.isfinite(n) and n.is_integer()):
                    raise DataError(f"{where}: {place(i)} holds non-integer label {v}; labels must be whole "
                                    f"numbers >= 0 or strings that are not numbers")
                n = int(n)
            if n < 0:
                raise DataError(f"{where}: {place(i)} holds negative label {v}; labels must be whole numbers >= 0 "
                                f"or strings that are not numbers")
            if n >= 2 ** 63:
                raise DataError(f"{where}: {place(i)} holds label {v}, beyond int64; number the classes 0..K-1")
            numbers.append(n)
        out.append(np.array(numbers, dtype=np.int64))
    return out
