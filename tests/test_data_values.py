"""The values in a user's data file: refused with a line naming where they sit, or loaded as something consistent."""
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.data import DataError, load_file

SPECIALS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e160, 3e38, -3e38]  # non-finite, overflowing, huge
LABELS = {"numbers": ["0", "1", "2", "1.0", "0.0", "01", "1e0", "2.00"], "strings": ["a", "b", "c"],
          "mixed": ["0", "1", "1.0", "a", "b"], "bad": ["0", "1", "1.0", "0.5", "-1", "nan"]}


def load(path, **kwargs):
    """(dataset, warning messages) of ``load_file``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_file(path, **kwargs)
    return ds, [str(w.message) for w in caught]


def refused(path, *words):
    with pytest.raises(DataError) as e:
        load_file(path)
    message = str(e.value)
    assert "\n" not in message
    for word in (str(path), *words):
        assert word in message, message
    return message


def csv(path, rows):
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


# --- non-finite values and overflow ---------------------------------------------------------------------------------

def test_a_nan_is_refused_naming_example_step_and_channel(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 5, 3))
    x[6, 4, 2], x[8, 0, 0] = math.nan, math.inf
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(10) % 2)
    message = refused(tmp_path / "d.npz", "2 NaN or infinite values")
    assert "X example 6, step 4, channel 2 is nan" in message or "X example 8, step 0, channel 0 is inf" in message


def test_an_infinity_in_a_csv_is_refused_naming_its_line_and_value(tmp_path):
    rows = [["label", "t1", "t2"]] + [[i % 2, i, 2 * i] for i in range(8)]
    rows[5][2] = "-inf"  # line 6 of the file, header included
    refused(csv(tmp_path / "d.csv", rows), "row 6, value 2 is -inf", "NaN or infinite")


def test_a_training_value_that_overflows_the_std_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 6))
    xt = x[:4].copy()
    x[5, 3] = 1e308  # alone: the mean is finite, the std is not
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(20) % 2, X_test=xt, y_test=np.arange(4) % 2)
    refused(tmp_path / "d.npz", "X example 5, step 3 is 1e+308", "standard deviation overflow float64")


def test_a_test_value_beyond_float32_once_standardized_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 4, 2))
    xt = x[:3].copy()
    xt[2, 1, 1] = 1e39
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(10) % 2, X_test=xt, y_test=np.arange(3) % 2)
    refused(tmp_path / "d.npz", "X_test example 2, step 1, channel 1 is 1e+39", "float32")


# --- labels ---------------------------------------------------------------------------------------------------------

def test_one_number_written_two_ways_is_one_class(tmp_path):
    rows = [[label, i, i % 3] for i, label in enumerate(["0", "1", "1.0", "0", "1e0", "0.0"] * 3)]
    ds, _ = load(csv(tmp_path / "d.csv", rows))
    assert ds.classes == [0, 1] and ds.num_classes == 2


def test_numbers_in_a_string_array_are_numbers_and_match_integer_test_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 4))
    np.savez(tmp_path / "d.npz", X=x, y=np.array(["1", "1.0", "2", "2.0"] * 2), X_test=x[:2], y_test=np.array([2, 1]))
    ds, _ = load(tmp_path / "d.npz")
    assert ds.classes == [1, 2] and ds.test.y.tolist() == [1, 0]


def test_string_labels_stay_as_written(tmp_path):
    rows = [[label, i, i % 3] for i, label in enumerate(["1", "1.0", "cat"] * 4)]
    ds, _ = load(csv(tmp_path / "d.csv", rows), test_fraction=0.2)
    assert ds.classes == ["1", "1.0", "cat"]


@pytest.mark.parametrize("label, words", [("0.5", ["row 4 holds non-integer label 0.5"]),
                                          ("-1", ["row 4 holds negative label -1"]),
                                          ("nan", ["row 4 holds non-integer label nan"])])
def test_numeric_labels_that_are_no_class_number_are_refused(tmp_path, label, words):
    rows = [[i % 2, i, i % 3] for i in range(8)]
    rows[3][0] = label
    refused(csv(tmp_path / "d.csv", rows), *words)


# --- constant channels ----------------------------------------------------------------------------------------------

def test_a_constant_channel_warns_and_is_only_centred(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 5, 2))
    x[..., 1] = 0.3
    assert x.reshape(-1, 2).std(0)[1] > 0  # float64 rounding: a constant's std is not 0; dividing by it blows up
    xt = x[:4].copy()
    xt[0, 0, 1] = 1.3
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(30) % 2, X_test=xt, y_test=np.arange(4) % 2)
    ds, messages = load(tmp_path / "d.npz")
    assert len(messages) == 1 and "channel 1 has zero variance" in messages[0] and "d.npz" in messages[0]
    assert ds.preprocessing["std"][1] == 1.0 and ds.preprocessing["mean"][1] == 0.3
    assert (ds.train.x[..., 1] == 0).all()
    assert ds.test.x[0, 0, 1].item() == pytest.approx(1.0)  # centred on the constant, not divided by ~1e-17
    assert ds.preprocessing["std"][0] == pytest.approx(np.std(x[..., 0]), rel=1e-12)


# --- any file: loaded consistently or refused in one line -----------------------------------------------------------

@st.composite
def data_files(draw, folder):
    """A random .npz (with or without X_test) or .csv: (path, kind, X, y, X_test, y_test)."""
    kind = draw(st.sampled_from(["npz", "npz+test", "csv"]))
    n, m, t = draw(st.integers(3, 16)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = 1 if kind == "csv" else draw(st.integers(1, 3))
    two_d = kind != "csv" and c == 1 and draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    scale, offset = draw(st.sampled_from([1e-3, 1.0, 1e3])), draw(st.sampled_from([0.0, 5.0, -1e4]))
    x, xt = (rng.normal(offset, scale, size=(k, t, c)) for k in (n, m))
    for ch in range(c):
        if draw(st.integers(0, 3)) == 0:
            x[..., ch] = xt[..., ch] = draw(st.sampled_from([0.0, 0.1, 7.7]))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        a = x if kind != "npz+test" or draw(st.booleans()) else xt
        a[draw(st.integers(0, len(a) - 1)), draw(st.integers(0, t - 1)), draw(st.integers(0, c - 1))] = \
            draw(st.sampled_from(SPECIALS))
    pool = LABELS[draw(st.sampled_from(sorted(LABELS)))]
    y, yt = (draw(st.lists(st.sampled_from(pool), min_size=k, max_size=k)) for k in (n, m))
    if kind == "csv":
        lengths = [draw(st.integers(1, t)) if draw(st.booleans()) else t for _ in range(n)]
        x = [row[:length, 0] for row, length in zip(x, lengths)]
        header = [["label"] + [f"t{j}" for j in range(t)]] if draw(st.booleans()) else []
        path = csv(folder / "d.csv", header + [[label] + [repr(float(v)) for v in row] for label, row in zip(y, x)])
        return path, kind, x, y, None, None
    y, yt = (_as_array(labels, draw(st.sampled_from(["int", "float", "str"]))) for labels in (y, yt))
    if two_d:
        x, xt = x[..., 0], xt[..., 0]
    test = dict(X_test=xt, y_test=yt) if kind == "npz+test" else {}
    np.savez(folder / "d.npz", X=x, y=y, **test)
    return folder / "d.npz", kind, x, y, test.get("X_test"), test.get("y_test")


def _as_array(labels, dtype):
    """Labels as an int or float array where they are all whole numbers >= 0, else as strings."""
    try:
        numbers = [float(v) for v in labels]
    except ValueError:
        return np.array(labels)
    if dtype == "str" or not all(math.isfinite(v) and v >= 0 and v.is_integer() for v in numbers):
        return np.array(labels)
    return np.array(numbers, dtype=np.int64 if dtype == "int" else np.float64)


def _all_numbers(labels):
    try:
        for v in labels:
            float(str(v))
    except ValueError:
        return False
    return True


def _meanings(labels, numbers):
    """What each label means by the documented rule: its number when every label is one, else its text."""
    return [float(str(v)) if numbers else str(v) for v in labels]


def _channel_values(split):
    x = split.x.numpy()
    return x[split.mask.numpy()] if split.mask is not None else x.reshape(-1, x.shape[-1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_file_loads_consistently_or_is_refused_in_one_line(tmp_path, data):
    path, kind, x, y, xt, yt = data.draw(data_files(tmp_path))
    values = np.concatenate([np.ravel(a) for a in (x if kind == "csv" else [x] + ([xt] if xt is not None else []))])
    everything = list(y) + (list(yt) if yt is not None else [])
    numbers = _all_numbers(everything)
    labels = _meanings(everything, numbers)
    bad_label = any(isinstance(v, float) and not (math.isfinite(v) and v >= 0 and v.is_integer()) for v in labels)
    try:
        ds, messages = load(path)
    except DataError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        return
    assert np.isfinite(values).all() and not bad_label, "a non-finite value or a bad label got through"
    assert ds.num_classes == len(ds.classes) == len(set(labels)) and set(ds.classes) == set(labels)
    for split in (ds.train, ds.test):
        assert split.x.dtype.is_floating_point and split.x.isfinite().all()
        assert ((split.y >= 0) & (split.y < ds.num_classes)).all()
    mean, std = np.array(ds.preprocessing["mean"]), np.array(ds.preprocessing["std"])
    assert np.isfinite(mean).all() and (std > 0).all() and np.isfinite(std).all()
    warned = {int(c) for text in messages for c in re.findall(r"channel (\d+) has zero variance", text)}
    assert all(str(path) in text for text in messages)
    z = _channel_values(ds.train)
    for c in range(z.shape[1]):
        if c in warned:
            assert (z[:, c] == 0).all()
        else:
            assert abs(z[:, c].mean()) < 1e-3 and abs(z[:, c].std() - 1) < 1e-3, (c, z[:, c])
    if kind == "npz+test":  # no random split: every value and label can be checked against the file
        raw = x.reshape(len(x), x.shape[1], -1)
        flat = raw.reshape(-1, raw.shape[-1])
        constant = flat.min(0) == flat.max(0)
        assert warned == set(np.flatnonzero(constant).tolist())
        expect_mean = np.where(constant, flat.min(0), flat.mean(0))
        expect_std = np.where(constant, 1.0, flat.std(0))
        np.testing.assert_allclose(mean, expect_mean, rtol=1e-12, atol=1e-12 * np.abs(flat).max())
        np.testing.assert_allclose(std, expect_std, rtol=1e-12)
        for split, a, labels_of in ((ds.train, raw, y), (ds.test, xt.reshape(len(xt), xt.shape[1], -1), yt)):
            np.testing.assert_allclose(split.x.numpy(), (a - expect_mean) / expect_std, rtol=1e-5, atol=1e-5)
            assert [ds.classes[i] for i in split.y.tolist()] == _meanings(labels_of, numbers)
