"""Every shipped dataset: discovered from aeon's data folder, loaded with its official split, standardized on train."""
import numpy as np
import pytest
import torch

from zoo import cli, data
from zoo.data import shipped

NAMES = list(data.available())


def test_discovery_finds_aeons_classification_sets_and_digits():
    found = set(NAMES)
    assert {"ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels", "OSULeaf",
            "digits"} <= found  # the sets the design names; aeon ships more, found the same way
    for name in found - {"digits"}:
        train, test = shipped._catalog()[0][name].files
        assert train.name == f"{name}_TRAIN.ts" and test.name == f"{name}_TEST.ts" and test.is_file()
        head, _ = shipped._header(train)
        assert head["classlabel"].split()[0].lower() == "true"
        assert head.get("targetlabel", "false").split()[0].lower() == "false"
    assert NAMES[-1] == "digits"


def test_every_ts_set_in_aeons_folder_is_listed_or_skipped_with_a_reason():
    folder = shipped.aeon_data_folder()
    pairs = {p.name[: -len("_TRAIN.ts")] for p in folder.glob("*/*_TRAIN.ts")}
    left_out = data.skipped()
    assert pairs == (set(NAMES) - {"digits"}) | set(left_out)
    assert not set(NAMES) & set(left_out)
    assert set(left_out.values()) <= set(shipped.SKIPPED.values())
    for name, reason in left_out.items():
        if name.startswith("UnitTest"):
            assert reason == shipped.SKIPPED["test fixture"]
        elif name.endswith("_eq"):
            assert reason == shipped.SKIPPED["equal-length copy"] and name[:-3] in NAMES


def test_listing_reads_headers_and_loads_nothing(monkeypatch):
    import aeon.datasets

    def refuse(*args, **kwargs):
        raise AssertionError("available() parsed a data set")

    monkeypatch.setattr(aeon.datasets, "load_from_ts_file", refuse)
    found, _ = shipped._catalog.__wrapped__()
    assert set(found) == set(NAMES) - {"digits"}
    assert found["JapaneseVowels"].description == "9 classes, 12 channels, variable length 7-29"


@pytest.mark.parametrize("name", NAMES)
def test_every_dataset_loads_its_official_split_standardized_on_train(name):
    about = data.info(name)
    ds = data.load(name)
    (xtr, ytr, mtr), (xte, yte, mte) = ((s.x, s.y, s.mask) for s in (ds.train, ds.test))
    assert (len(ds.train), len(ds.test)) == about.sizes
    assert ds.num_classes == len(about.classes) == len(ds.classes)
    assert xtr.dtype == xte.dtype == torch.float32 and xtr.shape[1:] == xte.shape[1:]
    assert xtr.shape[-1] == about.channels and xtr.shape[1] == about.lengths[1]
    assert torch.isfinite(xtr).all() and torch.isfinite(xte).all()
    for y in (ytr, yte):
        assert y.dtype == torch.long and 0 <= y.min() and y.max() < ds.num_classes
    assert set(ytr.tolist()) == set(range(ds.num_classes))
    variable = about.lengths[0] < about.lengths[1]
    assert (mtr is not None) == variable == (mte is not None)
    real = xtr[mtr] if variable else xtr.reshape(-1, xtr.shape[-1])
    assert torch.allclose(real.double().mean(0), torch.zeros(1, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(real.double().std(0), torch.ones(1, dtype=torch.float64), atol=1e-2)
    if variable:
        lengths = torch.cat([mtr.sum(1), mte.sum(1)])
        assert (lengths.min().item(), lengths.max().item()) == about.lengths
        for x, m in ((xtr, mtr), (xte, mte)):
            assert (x[~m] == 0).all()  # nothing in the padding
            assert (m[:, :-1] | ~m[:, 1:]).all()  # real steps first, then padding


def test_float_labels_map_to_indices_in_numeric_order():
    ds = data.load("Covid3Month_disc")
    assert ds.classes == ["0.0", "1.0", "2.0"] and ds.num_classes == 3


def test_unknown_names_get_a_one_line_error_listing_the_sets():
    with pytest.raises(data.DataError, match="unknown dataset 'Nope'.*ItalyPowerDemand.*digits"):
        data.load("Nope")
    assert data.load("gunpoint").name == "GunPoint"


def test_bzoo_datasets_prints_sizes_classes_channels_and_length(capsys):
    assert cli.main(["datasets"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["JapaneseVowels"][1:6] == ["270", "370", "9", "12", "7-29"]
    assert lines["digits"][1:6] == ["1257", "540", "10", "8", "8"]
    assert all(name in lines for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_dataset_fits_and_predicts_with_the_default_model_and_patch(name):
    """The default model and patch on a slice of each dataset, for every way the zoo attends or draws."""
    from inference import fit
    from zoo import TransformerClassifier, recipes
    from zoo.models import MAX_TOKENS, default_patch

    ds = data.load(name)
    patch = default_patch(ds.max_len)
    assert -(-ds.max_len // patch) <= MAX_TOKENS
    part = lambda s, n: data.Split(s.x[:n], s.y[:n], None if s.mask is None else s.mask[:n])  # noqa: E731
    train, test = part(ds.train, 16), part(ds.test, 8)
    rows = {"map": ("weights", {}), "dirichlet": ("attention", {}), "bam": ("bam", {}),
            "mc_dropout": ("weights", {"dropout": 0.1})}
    for guide, (bayes, extra) in rows.items():
        torch.manual_seed(0)
        model = TransformerClassifier(ds.num_classes, input_dim=ds.input_dim, **recipes.MODEL, max_len=ds.max_len,
                                      patch=patch, bayes=bayes, **extra)
        options = {"num_samples": 3} if guide == "mc_dropout" else {}
        posterior = fit(model, train, guide=guide, steps=1, progress=False, **options)
        probs = posterior.predict(test.x, 3, test.mask)
        assert probs.shape[-2:] == (8, ds.num_classes) and torch.isfinite(probs).all(), guide


def test_fitted_preprocessing_comes_from_the_training_split_alone():
    """Standardization and the vocabulary are fitted on training: changing the test split changes neither."""
    from zoo.study.plan import shapes_of

    rng = np.random.default_rng(0)
    xtr, xte, y = rng.normal(size=(20, 6, 2)), rng.normal(size=(8, 6, 2)), np.arange(20) % 2
    a, b = data.build("a", xtr, y, xte, y[:8]), data.build("b", xtr, y, 100 * xte + 7, y[:8])
    assert a.preprocessing == b.preprocessing and torch.equal(a.train.x, b.train.x)
    tokens = rng.integers(0, 5, size=(20, 6))
    small = data.build("t", tokens, y, rng.integers(0, 5, size=(8, 6)), y[:8])
    large = data.build("t", tokens, y, rng.integers(0, 50, size=(8, 6)), y[:8])
    assert small.vocab_size == large.vocab_size == tokens.max() + 2  # the training ids and one for unseen ids
    assert shapes_of(small)["vocab"] == shapes_of(large)["vocab"] and large.test.x.max() == tokens.max() + 1
