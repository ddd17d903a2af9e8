"""OOD inputs and graded shift exist for every shipped dataset, keep its shape and mask, and differ from it."""
import functools

import pytest
import torch

from zoo import data
from zoo.data import Split
from zoo.data.ood import ood_inputs, scale, source_series
from zoo.data.shift import LEVELS, SHIFTS, STRENGTH, shifted, shifts, warp

NAMES = list(data.available())


@functools.lru_cache(maxsize=None)
def dataset(name):
    return data.load(name)


def nearest_distance(x, reference):
    """Each row's Euclidean distance to its nearest row of ``reference`` (padded steps are zero in both)."""
    return torch.cdist(x.reshape(len(x), -1), reference.reshape(len(reference), -1)).min(1).values


@pytest.mark.parametrize("name", NAMES)
def test_ood_inputs_exist_with_the_test_shape_and_are_raw_source_windows_in_the_targets_preprocessing(name):
    ds = dataset(name)
    x, mask = ood_inputs(ds)
    assert x.shape == ds.test.x.shape and x.dtype == torch.float32 and torch.isfinite(x).all()
    if ds.test.mask is None:
        assert mask is None
    else:
        assert torch.equal(mask, ds.test.mask) and (x[~mask] == 0).all()
    raw = x * torch.tensor(ds.preprocessing["std"]) + torch.tensor(ds.preprocessing["mean"])  # undo the target's
    source = torch.as_tensor(source_series(ds.name))  # standardization: the source's raw values, windows of them
    real = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
    tol = 1e-4 * source.abs().max()
    assert raw[real].min() >= source.min() - tol and raw[real].max() <= source.max() + tol
    again, _ = ood_inputs(ds)
    assert torch.equal(again, x)  # deterministic
    other, _ = ood_inputs(ds, seed=1)
    assert not torch.equal(other, x)


def test_ood_scale_is_one_for_the_test_set_itself_and_measures_a_stretch():
    ds = dataset("ItalyPowerDemand")
    same = scale(ds, ds.test.x, ds.test.mask)
    assert abs(same["std_ratio"] - 1) < 1e-9 and abs(same["mean_offset"]) < 1e-9
    stretched = scale(ds, 3 * ds.test.x + 2 * ds.test.x.std(), ds.test.mask)
    assert abs(stretched["std_ratio"] - 3) < 1e-6 and abs(stretched["mean_offset"] - 2 - 3 * ds.test.x.mean() /
                                                              ds.test.x.std()) < 1e-4


def test_ood_for_token_data_is_random_ids_within_the_vocabulary():
    x = torch.randint(0, 5, (20, 6))
    ds = data.build("tokens", x[:14].numpy(), (torch.arange(14) % 2).numpy(), x[14:].numpy(),
                    (torch.arange(6) % 2).numpy())
    ood, mask = ood_inputs(ds)
    assert ood.shape == ds.test.x.shape and mask is None and ood.dtype == ds.test.x.dtype
    assert 0 <= ood.min() and ood.max() <= x[:14].max()


@pytest.mark.parametrize("name", NAMES)
def test_every_shift_exists_keeps_labels_and_padding_and_grows_with_its_level(name):
    test = dataset(name).test
    clean = Split(test.x[:64], test.y[:64], None if test.mask is None else test.mask[:64])
    out = shifts(clean)
    assert set(out) == {f"{k}:{lv}" for k in SHIFTS for lv in LEVELS}
    real = torch.ones(clean.x.shape[:2], dtype=torch.bool) if clean.mask is None else clean.mask
    for kind in SHIFTS:
        change = []
        for level in LEVELS:
            s = out[f"{kind}:{level}"]
            assert s.y is clean.y and s.mask is clean.mask and s.x.shape == clean.x.shape
            assert torch.isfinite(s.x).all()
            assert torch.equal(s.x[~real], clean.x[~real])  # nothing written into the padding
            change.append((s.x - clean.x)[real].abs().mean().item())
        assert 0 < change[0] < change[1] < change[2], (kind, change)
    assert torch.equal(shifted(clean, "warp", 2, seed=0).x, out["warp:2"].x)  # deterministic by seed
    assert not torch.equal(shifted(clean, "warp", 2, seed=1).x, out["warp:2"].x)


def test_noise_and_scale_have_their_documented_strengths():
    torch.manual_seed(0)
    clean = Split(torch.randn(400, 50, 2), torch.zeros(400, dtype=torch.long))
    for level, sd in zip(LEVELS, STRENGTH["noise"]):
        added = shifted(clean, "noise", level).x - clean.x
        assert abs(added.std().item() - sd) < 5 * sd / (2 * added.numel()) ** 0.5 + 1e-3  # sd of an sd estimate
    for level, a in zip(LEVELS, STRENGTH["scale"]):
        ratio = (shifted(clean, "scale", level).x / clean.x)[:, 0, 0]
        assert torch.allclose(ratio, torch.where(ratio > 1, a, 1 / a), rtol=1e-5)


def test_a_warp_keeps_both_ends_and_is_the_identity_at_zero_strength():
    torch.manual_seed(0)
    x = torch.randn(3, 9, 2)
    mask = torch.arange(9) < torch.tensor([9, 5, 2])[:, None]
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(warp(x, mask, 0.0, g)[mask], x[mask], atol=1e-6)
    bent = warp(x, mask, 1.0, g)
    for i, n in enumerate([9, 5, 2]):
        assert torch.allclose(bent[i, 0], x[i, 0]) and torch.allclose(bent[i, n - 1], x[i, n - 1], atol=1e-5)
    shifted_split = shifted(Split(x, torch.zeros(3, dtype=torch.long), mask), "warp", 3)
    assert torch.equal(shifted_split.x[~mask], x[~mask])


def test_drop_zeroes_one_segment_of_the_documented_fraction_of_each_series():
    x = torch.randn(50, 40, 1) + 5.0  # no step is 0 by itself
    mask = torch.arange(40) < torch.randint(10, 41, (50,))[:, None]
    for level, fraction in zip(LEVELS, STRENGTH["drop"]):
        s = shifted(Split(x, torch.zeros(50, dtype=torch.long), mask), "drop", level)
        gone = (s.x[..., 0] == 0) & mask
        assert torch.equal(gone.sum(1), (fraction * mask.sum(1)).round().clamp_min(1).long())
        first = gone.float().argmax(1)
        assert all(gone[i, first[i]:first[i] + gone[i].sum()].all() for i in range(50))  # contiguous


def test_bad_shift_requests_are_refused_by_name():
    clean = Split(torch.randn(2, 5, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(data.DataError, match="unknown shift 'blur'"):
        shifted(clean, "blur", 1)
    with pytest.raises(data.DataError, match="level"):
        shifted(clean, "noise", 4)
    with pytest.raises(data.DataError, match="token ids"):
        shifted(Split(torch.zeros(2, 5, dtype=torch.long), clean.y), "noise", 1)


def test_the_held_out_class_is_out_of_training_and_is_the_near_ood_set():
    from zoo.data.near_ood import held_out
    from zoo.study.plan import load_dataset

    ds = dataset("ArrowHead")
    near = load_dataset("ArrowHead:held-out")
    k = ds.num_classes
    assert near.num_classes == k - 1 and near.classes == ds.classes[:-1]
    assert set(near.train.y.tolist()) == set(range(k - 1)) and set(near.test.y.tolist()) <= set(range(k - 1))
    x, mask = ood_inputs(near)
    assert torch.equal(x, ds.test.x[ds.test.y == k - 1]) and len(near.test) + len(x) == len(ds.test)
    with pytest.raises(data.DataError, match="at least 3"):
        held_out(dataset("GunPoint"))
