"""Saved posteriors: one file, loads without running code, predicts identically; reproducible fits."""
import json
import os

import pyro
import pytest
import torch

from inference import Posterior, fit
from core.signed import FORMAT_VERSION, PosteriorFileError, write
from zoo import TransformerClassifier
from zoo.runs import RunFolder


def tiny(bayes="weights", dropout=0.0):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=16, bayes=bayes,
                                 dropout=dropout)


def toy(n=12, t=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, 1, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


def fitted(guide="mean_field", bayes="weights", steps=3, dropout=0.0, **options):
    return fit(tiny(bayes, dropout), toy(), guide=guide, steps=steps, progress=False, **options)


def same_predictions(a, b, num_samples, seed=1):
    x = toy(20)[0]
    pyro.set_rng_seed(seed)
    pa = a.predict(x, num_samples)
    pyro.set_rng_seed(seed)
    pb = b.predict(x, num_samples)
    return torch.equal(pa, pb)


@pytest.mark.parametrize("guide, bayes, options", [
    ("map", "weights", {}),
    ("mean_field", "weights", {}),
    ("low_rank", "last-layer", {}),
    ("dirichlet", "attention,last-layer", {}),
    ("bam", "bam", {}),
    ("ensemble", "weights", {"num_members": 2}),
])
def test_round_trip_predicts_identically(tmp_path, guide, bayes, options):
    posterior = fitted(guide, bayes, **options)
    posterior.save(tmp_path / "p.pt", preprocessing={"mean": [0.5], "std": [2.0]}, extra={"dataset": "toy"})
    pyro.clear_param_store()  # nothing may come from the live session
    loaded = Posterior.load(tmp_path / "p.pt")
    assert loaded.method == guide and loaded.point == posterior.point
    assert loaded.model.config() == posterior.model.config()
    assert loaded.info["preprocessing"] == {"mean": [0.5], "std": [2.0]} and loaded.info["extra"] == {"dataset": "toy"}
    assert loaded.info.get("losses") == posterior.info.get("losses")
    assert same_predictions(posterior, loaded, num_samples=2)


def test_mc_dropout_keeps_dropout_at_test(tmp_path):
    posterior = fitted("mc_dropout", "none", dropout=0.2, num_samples=4)
    posterior.save(tmp_path / "p.pt")
    loaded = Posterior.load(tmp_path / "p.pt")
    assert loaded.info["dropout_at_test"] is True
    assert same_predictions(posterior, loaded, num_samples=4)


def test_unnamed_guide_is_stored_as_draws_with_the_same_predictive(tmp_path):
    posterior = fitted("laplace", "last-layer")
    posterior.save(tmp_path / "p.pt", num_samples=400)
    loaded = Posterior.load(tmp_path / "p.pt")
    assert loaded.info["stored_as_draws"] and loaded.num_draws() == 400
    x = toy(20)[0]
    pyro.set_rng_seed(0)
    reference = posterior.predict(x, 2000)
    se = reference.std(0) / 400 ** 0.5  # Monte Carlo standard error of a 400-draw mean
    assert ((loaded.predict(x).mean(0) - reference.mean(0)).abs() <= 4 * se + 1e-6).all()


def test_a_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"  # with a valid checksum: anyone can compute one
    write({"format": "bayesformer-zoo", "kind": "posterior", "format_version": FORMAT_VERSION,
           "payload": Exploit()}, path)
    with pytest.raises(PosteriorFileError) as e:
        Posterior.load(path)
    assert "never code" in str(e.value) and "system" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def rewrite(src, dst, **changes):
    """A file as another writer (version, class, method) would have written it, checksum included."""
    obj = torch.load(src, weights_only=True)
    obj.update(changes)
    write(obj, dst)
    return dst


@pytest.mark.parametrize("changes, words", [
    ({"format_version": FORMAT_VERSION + 1}, ["format 2", "refit"]),
    ({"zoo_version": "7.0.0"}, ["zoo 7.0.0"]),
    ({"kind": "checkpoint"}, ["not a bayesformer-zoo posterior file"]),
    ({"model_class": "os.system"}, ["'os.system'", "not a zoo model"]),
    ({"model_class": "zoo.NoSuchModel"}, ["'zoo.NoSuchModel'", "lacks"]),
    ({"method": "no_such_guide"}, ["'no_such_guide'", "lacks"]),
])
def test_incompatible_or_foreign_files_are_refused(tmp_path, changes, words):
    fitted("map").save(tmp_path / "p.pt")
    path = rewrite(tmp_path / "p.pt", tmp_path / "q.pt", **changes)
    with pytest.raises(PosteriorFileError) as e:
        Posterior.load(path)
    for word in (str(path), *words):
        assert word in str(e.value), str(e.value)


def test_state_that_does_not_fit_the_model_is_refused(tmp_path):
    fitted("map").save(tmp_path / "p.pt")
    obj = torch.load(tmp_path / "p.pt", weights_only=True)
    path = rewrite(tmp_path / "p.pt", tmp_path / "q.pt", config={**obj["config"], "d_model": 16, "heads": 2})
    with pytest.raises(PosteriorFileError, match="does not fit"):
        Posterior.load(path)


def test_missing_truncated_and_non_torch_files(tmp_path):
    with pytest.raises(PosteriorFileError, match="does not exist"):
        Posterior.load(tmp_path / "nope.pt")
    fitted("map").save(tmp_path / "p.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "p.pt").read_bytes()[:500])
    with pytest.raises(PosteriorFileError, match="cut.pt"):
        Posterior.load(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(PosteriorFileError, match="text.pt"):
        Posterior.load(tmp_path / "text.pt")


def test_info_that_is_not_plain_is_left_out_with_a_warning(tmp_path):
    posterior = fitted("map")
    posterior.info["callback"] = lambda: None
    with pytest.warns(UserWarning, match="callback"):
        posterior.save(tmp_path / "p.pt")
    assert "callback" not in Posterior.load(tmp_path / "p.pt").info


def test_file_holds_versions_config_prior_and_method(tmp_path):
    posterior = fitted("mean_field")
    posterior.save(tmp_path / "p.pt")
    obj = torch.load(tmp_path / "p.pt", weights_only=True)
    assert obj["format_version"] == FORMAT_VERSION and obj["zoo_version"] and obj["torch_version"]
    assert obj["model_class"] == "zoo.models.classifier.TransformerClassifier"
    assert obj["prior"] == "gaussian:scale=1,fan_in=false" and obj["method"] == "mean_field"
    assert obj["guide_state"] and obj["draws"] is None


def test_same_seed_same_numbers():
    a, b = fitted("mean_field", steps=5, seed=7), fitted("mean_field", steps=5, seed=7)
    assert a.info["losses"] == b.info["losses"]
    assert same_predictions(a, b, num_samples=3)
    c = fitted("mean_field", steps=5, seed=8)
    assert c.info["losses"] != a.info["losses"]  # the seed is really used


def test_run_json_records_seed_versions_config_and_command(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.record({"guide": "map", "lr": 3e-3, "nan": float("nan")}, seed=5)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["seed"] == 5 and record["config"] == {"guide": "map", "lr": 3e-3, "nan": "nan"}
    assert {"python", "torch", "pyro-ppl", "arviz", "zoo"} <= set(record["versions"])
    assert record["versions"]["torch"] == str(torch.__version__) and record["versions"]["python"].count(".") == 2
    assert isinstance(record["command"], list) and record["created"]


def test_loaded_posterior_moves_to_a_device(tmp_path):
    fitted("map").save(tmp_path / "p.pt")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = Posterior.load(tmp_path / "p.pt", map_location=device)
    assert loaded.device.type == device
    assert loaded.predict(toy()[0]).device.type == device


def test_low_rank_posteriors_do_not_share_parameters(tmp_path):
    """Pyro's global parameter store must not let a later fit or load overwrite an earlier posterior."""
    first = fitted("low_rank", "last-layer")
    x = toy(20)[0]
    pyro.set_rng_seed(0)
    before = first.predict(x, 3)
    again = fitted("low_rank", "last-layer", steps=5, seed=9)
    again.save(tmp_path / "p.pt")
    Posterior.load(tmp_path / "p.pt")
    pyro.set_rng_seed(0)
    assert torch.equal(before, first.predict(x, 3))
    assert fitted("low_rank", "last-layer").info["losses"] == first.info["losses"]
