"""A user's own data files: what loads, and a one-line DataError naming the file for everything else."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.data import DataError, load_file

files = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def refused(path, *words, **kwargs):
    with pytest.raises(DataError) as e:
        load_file(path, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    for word in (str(path), *words):
        assert word in message, message
    return message


def test_npz_splits_standardizes_and_keeps_classes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(40, 12, 2))
    y = np.repeat([3, 7], 20)
    ds = load_file(npz(tmp_path, X=x, y=y), test_fraction=0.25, seed=1)
    assert (len(ds.train), len(ds.test)) == (30, 10)
    assert ds.train.x.shape == (30, 12, 2) and ds.classes == [3, 7] and ds.num_classes == 2
    assert set(ds.train.y.tolist()) <= {0, 1}
    assert abs(float(ds.train.x.mean())) < 1e-5  # standardized with training statistics
    assert ds.preprocessing["mean"] == pytest.approx([5.0, 5.0], abs=0.3)  # 30*12 draws: SE of the mean 0.16
    assert ds.preprocessing["std"] == pytest.approx([3.0, 3.0], abs=0.4)


def test_npz_2d_x_and_explicit_test_set(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 6))
    ds = load_file(npz(tmp_path, X=x, y=np.arange(10) % 2, X_test=x[:4], y_test=np.array([0, 1, 1, 0])))
    assert ds.train.x.shape == (10, 6, 1) and ds.test.x.shape == (4, 6, 1)
    assert ds.test.y.tolist() == [0, 1, 1, 0]


def test_csv_with_header_string_labels_and_ragged_rows(tmp_path):
    path = tmp_path / "series.csv"
    rows = ["label,t1,t2,t3,t4"] + [f"{'up' if i % 2 else 'down'},{i},{i + 1},{i + 2}" + ("" if i % 3 else f",{i}")
                                    for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    ds = load_file(path, test_fraction=0.25)
    assert ds.classes == ["down", "up"]
    assert ds.train.x.shape[1:] == (4, 1) and ds.train.mask is not None
    assert ds.train.mask.sum(1).tolist() != [4] * len(ds.train)  # shorter rows are masked


def test_csv_integer_labels_are_integers(tmp_path):
    path = tmp_path / "ints.csv"
    path.write_text("".join(f"{i % 3},{i},{2 * i}\n" for i in range(9)))
    assert load_file(path).classes == [0, 1, 2]


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.npz", "does not exist")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"x")
    refused(path, ".parquet", ".npz")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip archive")
    refused(path, "not a valid .npz")


def test_npz_missing_labels_names_the_key(tmp_path):
    refused(npz(tmp_path, X=np.zeros((5, 3)), labels=np.zeros(5)), "'y'", "labels")


def test_npz_needing_pickle_is_refused(tmp_path):
    refused(npz(tmp_path, X=np.array([np.zeros(3), "a"], dtype=object), y=np.zeros(2)), "pickle")


def test_npz_test_arrays_come_in_pairs(tmp_path):
    refused(npz(tmp_path, X=np.zeros((5, 3)), y=np.zeros(5), X_test=np.zeros((2, 3))), "X_test", "y_test")


@files
@given(n=st.integers(4, 30), where=st.data(), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_x_is_refused(tmp_path, n, where, bad):
    x = np.random.default_rng(n).normal(size=(n, 5, 2))
    i = where.draw(st.integers(0, n - 1))
    x[i, where.draw(st.integers(0, 4)), where.draw(st.integers(0, 1))] = bad
    refused(npz(tmp_path, X=x, y=np.arange(n) % 2), "NaN or infinite", f"example {i}")


@files
@given(nx=st.integers(3, 20), ny=st.integers(3, 20))
def test_length_mismatch_is_refused(tmp_path, nx, ny):
    if nx == ny:
        ny += 1
    refused(npz(tmp_path, X=np.zeros((nx, 4)), y=np.arange(ny) % 2), f"X has {nx} examples", f"y has {ny}")


@files
@given(label=st.floats(-5, 5).filter(lambda v: v != round(v)))
def test_non_integer_labels_are_refused(tmp_path, label):
    y = np.arange(8.0) % 2
    y[3] = label
    refused(npz(tmp_path, X=np.zeros((8, 4)), y=y), "non-integer label")


@files
@given(label=st.integers(-1000, -1))
def test_negative_labels_are_refused(tmp_path, label):
    y = np.arange(8) % 2
    y[5] = label
    refused(npz(tmp_path, X=np.zeros((8, 4)), y=y), f"negative label {label}")


def test_too_few_examples(tmp_path):
    refused(npz(tmp_path, X=np.zeros((2, 4)), y=np.array([0, 1])), "too few")


def test_single_class(tmp_path):
    refused(npz(tmp_path, X=np.random.default_rng(0).normal(size=(10, 4)), y=np.zeros(10, dtype=int)),
            "single class")


def test_x_of_wrong_rank(tmp_path):
    refused(npz(tmp_path, X=np.zeros(10), y=np.arange(10) % 2), "X must be numeric", "[10]")


def test_csv_non_number_names_row_and_value(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,1,2,3\nb,1,oops,3\na,1,2,3\nb,3,2,1\n")
    refused(path, "row 2", "value 2", "'oops'")


def test_csv_nan_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,1,2,3\nb,1,nan,3\na,1,2,3\nb,3,2,1\n")
    refused(path, "NaN or infinite")


def test_csv_row_without_values(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,1,2\nb\n")
    refused(path, "row 2", "no values")


def test_empty_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\n\n")
    refused(path, "no data rows")


def test_bad_test_fraction(tmp_path):
    with pytest.raises(DataError, match="test_fraction"):
        load_file(npz(tmp_path, X=np.zeros((10, 4)), y=np.arange(10) % 2), test_fraction=1.5)


def test_memory_benchmark_tiles_the_data_tenfold():
    import torch

    from benchmarks.memory import tiled
    from zoo.data import Dataset, Split

    train, test = Split(torch.randn(7, 5, 1), torch.arange(7) % 2), Split(torch.randn(3, 5, 1), torch.arange(3) % 2)
    ds = Dataset("toy", train, test, 2, [0, 1])
    train_x = ds.train.x.clone()
    big = tiled(ds, 10)
    assert (len(big.train), len(big.test)) == (70, 30)
    assert torch.equal(big.train.y[7:14], big.train.y[:7])
    assert 0 < (big.train.x[7:14] - train_x).abs().max() < 0.1  # jittered copies
