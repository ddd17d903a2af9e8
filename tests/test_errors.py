"""Bad input gives one specific, one-line error naming the problem; numerical trouble stops a fit cleanly."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import priors
from inference import FitError, NonFiniteError, fit
from priors import PriorError
from zoo import ModelError, TransformerClassifier, cli, data
from zoo.data import DataError
from zoo.runs import RunFolder, RunFolderError
from zoo.models.transformer import InputShapeError

quick = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiny(cls=TransformerClassifier, **kwargs):
    torch.manual_seed(0)
    return cls(2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=16, **kwargs)


def toy(n=12, t=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, 1, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


def one_line(error, *words):
    message = str(error)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# --- options, names and priors -----------------------------------------------------------------------------

BAD_OPTIONS = {
    "steps": [-1, 2.5, "10", True],
    "lr": [0, -1e-3, math.nan, math.inf, "fast"],
    "batch_size": [0, -4, 3.5],
    "num_particles": [0, -2, 1.5],
    "kl_anneal": [-1, 0.5],
    "temperature": [0, -1.0, math.inf, math.nan],
    "clip_norm": [0, -1.0, math.nan],
    "checkpoint_every": [0, -5, 2.5],
}


@quick
@given(option=st.sampled_from(sorted(BAD_OPTIONS)), data_=st.data())
def test_bad_fit_options_name_the_option(option, data_):
    value = data_.draw(st.sampled_from(BAD_OPTIONS[option]))
    with pytest.raises(FitError) as e:
        fit(tiny(), toy(), guide="map", progress=False, **{option: value})
    one_line(e.value, option, repr(value))


def test_unknown_guide_lists_the_valid_ones():
    with pytest.raises(FitError) as e:
        fit(tiny(), toy(), guide="mean_feild", steps=1, progress=False)
    one_line(e.value, "'mean_feild'", "did you mean 'mean_field'", "map")


def test_unknown_option_for_a_guide():
    with pytest.raises(FitError, match="warmup"):
        fit(tiny(), toy(), guide="map", steps=1, progress=False, warmup=10)


def test_unknown_dataset_lists_the_shipped_ones():
    with pytest.raises(DataError) as e:
        data.load("ItalianPower")
    one_line(e.value, "'ItalianPower'", "ItalyPowerDemand", "--data")


@quick
@given(name=st.sampled_from(["gaussian", "laplace", "student-t"]), param=st.sampled_from(["scale", "df"]),
       value=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.inf), st.just(math.nan)))
def test_non_positive_prior_parameters_are_refused(name, param, value):
    if param == "df" and name != "student-t":
        param = "scale"
    with pytest.raises(PriorError) as e:
        priors.parse(f"{name}:{param}={value}")
    one_line(e.value, name, f"'{param}'")


def test_unknown_prior_and_unknown_parameter():
    with pytest.raises(PriorError) as e:
        priors.parse("cauchy:scale=1")
    one_line(e.value, "'cauchy'", "gaussian", "student-t")
    with pytest.raises(PriorError) as e:
        priors.parse("gaussian:sigma=1")
    one_line(e.value, "'sigma'", "scale")


def test_prior_glob_matching_no_site_names_the_glob():
    with pytest.raises(PriorError) as e:
        tiny(prior={"blocks.*.attn.qkv.weight": "student-t:df=3", "blocks.7.*": "laplace", "*": "gaussian"})
    one_line(e.value, "'blocks.7.*'", "head.weight")


def test_bayes_glob_matching_no_parameter_names_the_glob():
    with pytest.raises(ModelError) as e:
        tiny(bayes="head.*,blocks.3.*")
    one_line(e.value, "'blocks.3.*'", "last-layer")


# --- data given to fit and predict --------------------------------------------------------------------------

@quick
@given(i=st.integers(0, 11), t=st.integers(0, 5), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_inputs_are_refused(i, t, bad):
    x, y = toy()
    x[i, t, 0] = bad
    with pytest.raises(DataError) as e:
        fit(tiny(), (x, y), guide="map", steps=1, progress=False)
    one_line(e.value, "NaN or infinite", f"[{i}, {t}, 0]")


@quick
@given(label=st.one_of(st.integers(-100, -1), st.integers(2, 100)), i=st.integers(0, 11))
def test_labels_out_of_range_are_refused(label, i):
    x, y = toy()
    y[i] = label
    with pytest.raises(DataError) as e:
        fit(tiny(), (x, y), guide="map", steps=1, progress=False)
    one_line(e.value, f"label {label} at example {i}", "num_classes=2")


def test_float_labels_are_refused():
    x, y = toy()
    with pytest.raises(DataError) as e:
        fit(tiny(), (x, y.float()), guide="map", steps=1, progress=False)
    one_line(e.value, "labels must be integers", "float32")


@quick
@given(nx=st.integers(2, 12), ny=st.integers(2, 12))
def test_x_and_y_of_different_lengths_are_refused(nx, ny):
    if nx == ny:
        ny -= 1
    x, y = toy()
    with pytest.raises(DataError) as e:
        fit(tiny(), (x[:nx], y[:ny]), guide="map", steps=1, progress=False)
    one_line(e.value, f"x has {nx} examples", f"y has {ny}")


def test_token_ids_outside_the_vocabulary_are_refused():
    torch.manual_seed(0)
    model = TransformerClassifier(2, vocab_size=5, d_model=8, depth=1, heads=2, max_len=16)
    x = torch.randint(0, 5, (6, 4))
    x[2, 1] = 9
    with pytest.raises(DataError) as e:
        fit(model, (x, torch.zeros(6, dtype=torch.long)), guide="map", steps=1, progress=False)
    one_line(e.value, "0..4", "0..9")


@quick
@given(t=st.integers(17, 64))
def test_sequences_longer_than_max_len_name_shape_and_max(t):
    x, y = toy(t=t)
    with pytest.raises(InputShapeError) as e:
        fit(tiny(), (x, y), guide="map", steps=1, progress=False)
    one_line(e.value, f"[12, {t}, 1]", "max_len=16")


def test_predicting_on_longer_sequences_is_refused():
    posterior = fit(tiny(), toy(), guide="map", steps=1, progress=False)
    with pytest.raises(InputShapeError, match="max_len=16"):
        posterior.predict(torch.randn(3, 40, 1))


def test_wrong_number_of_channels():
    x, y = toy()
    with pytest.raises(InputShapeError) as e:
        fit(tiny(), (x.expand(-1, -1, 3), y), guide="map", steps=1, progress=False)
    one_line(e.value, "[12, 6, 3]", "[B, T, 1]")


# --- numerical trouble --------------------------------------------------------------------------------------

class Poisoned(TransformerClassifier):
    """Turns the logits NaN (an overflow) or a gradient NaN at the SVI step ``at``.

    Only the loop's calls count (they pass ``dataset_size``; building a guide does not).
    """

    def __init__(self, *args, at=0, kind="logits", **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.kind, self.calls, self.armed = at, kind, 0, False
        self.net.register_forward_hook(lambda m, i, out: out * math.nan if self.armed and self.kind == "logits"
                                       else None)

    def forward(self, x, y=None, mask=None, dataset_size=None):
        self.armed = dataset_size is not None and self.calls >= self.at  # stays broken, as an overflow would
        self.calls += dataset_size is not None
        return super().forward(x, y, mask, dataset_size)

    def sample_sites(self):
        draws = super().sample_sites()
        if self.armed and self.kind == "gradient":  # finite value, NaN gradient: 0 * d sqrt(u)/du at u = 0
            b = draws["head.bias"]
            draws["head.bias"] = b + 0.0 * torch.sqrt(b - b)
        return draws


def test_nan_loss_stops_with_step_and_site_and_keeps_the_last_good_state(tmp_path):
    model = tiny(Poisoned, at=4)
    checkpoint = tmp_path / "ck.pt"
    with pytest.raises(NonFiniteError) as e:
        fit(model, toy(), guide="mean_field", steps=10, lr=1e-2, progress=False, checkpoint=checkpoint,
            checkpoint_every=4)
    one_line(e.value, "at step 4", "'y'")
    posterior = e.value.posterior
    assert len(posterior.info["losses"]) == 4 and all(math.isfinite(v) for v in posterior.info["losses"])
    saved = torch.load(checkpoint, weights_only=True)  # written after step 3, before the failing step ran
    assert saved["step"] == 4
    for name, value in posterior.guide.state_dict().items():
        assert torch.equal(value, saved["guide"][name]), name
    probs = posterior.predict(toy()[0], num_samples=3)
    assert torch.isfinite(probs).all()


def test_non_finite_gradient_names_the_parameter():
    with pytest.raises(NonFiniteError) as e:
        fit(tiny(Poisoned, at=2, kind="gradient"), toy(), guide="mean_field", steps=5, progress=False)
    one_line(e.value, "gradient of", "head.bias", "step 2")
    assert all(torch.isfinite(p).all() for p in e.value.posterior.guide.parameters())


def test_cli_reports_a_diverged_fit_in_one_line(tmp_path, monkeypatch, capsys):
    def diverge(*args, **kwargs):
        raise NonFiniteError("loss is nan at step 3; first non-finite site: 'y'")
    import inference
    monkeypatch.setattr(inference, "fit", diverge)  # bzoo fit imports it when it runs
    assert cli.main(["fit", "--steps", "1", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "step 3" in err and "Traceback" not in err


def test_clip_norm_bounds_the_gradient_norm(monkeypatch):
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        out = clip(params, max_norm, *args, **kwargs)
        seen.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
        return out
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    fit(tiny(), toy(), guide="mean_field", steps=3, progress=False, clip_norm=1e-3)
    assert len(seen) == 3 and max(seen) <= 1e-3 * (1 + 1e-4)


def test_mean_field_scales_are_floored():
    from inference.guides import MIN_SCALE, MeanField
    x, y = toy()
    guide = MeanField(tiny(), x[:2], y[:2], None)
    with torch.no_grad():
        for rho in guide.rho.values():
            rho.fill_(-300.0)  # softplus underflows to exactly 0 in float32
    assert all((s >= MIN_SCALE * 0.999).all() for s in guide.scales().values())
    draws = guide(x, None, None)
    assert all(torch.isfinite(v).all() for v in draws.values())


def test_dirichlet_concentration_floor_must_be_positive():
    with pytest.raises(FitError, match="floor"):
        fit(tiny(bayes="attention"), toy(), guide="dirichlet", steps=1, progress=False, guide_options={"floor": 0.0})


# --- run folders ---------------------------------------------------------------------------------------------

def test_run_folder_refuses_a_run_unless_overwrite_and_keeps_what_is_not_the_runs(tmp_path):
    with RunFolder(tmp_path / "run") as run:
        run.write_json("metrics.json", {"accuracy": 0.9})
        run.record({}, 0)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError) as e:
        RunFolder(tmp_path / "run")
    one_line(e.value, str(tmp_path / "run"), "run.json", "--overwrite")
    with RunFolder(tmp_path / "run", overwrite=True) as again:
        again.write_json("metrics.json", {"accuracy": 0.5})
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"accuracy": 0.5}


def test_run_folder_accepts_a_folder_without_a_run_and_refuses_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.npz").write_bytes(b"")
    RunFolder(tmp_path / "empty")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        RunFolder(tmp_path / "afile")


def test_run_folder_keeps_writes_inside(tmp_path):
    with pytest.raises(RunFolderError, match="outside"):
        RunFolder(tmp_path / "run").path("../escape.json")


# --- the command line ----------------------------------------------------------------------------------------

def bzoo(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_cli_missing_data_file(tmp_path, capsys):
    code, err = bzoo(capsys, "fit", "--data", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "run"))
    assert code == 2 and "mine.npz" in err and "does not exist" in err and err.count("\n") == 1


def test_cli_malformed_data_file(tmp_path, capsys):
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.full((6, 4), np.nan), y=np.arange(6) % 2)
    code, err = bzoo(capsys, "fit", "--data", str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and "mine.npz" in err and "NaN" in err


def test_cli_unknown_dataset(tmp_path, capsys):
    code, err = bzoo(capsys, "fit", "--dataset", "Nope", "--out", str(tmp_path / "run"))
    assert code == 2 and "'Nope'" in err and "ItalyPowerDemand" in err


@pytest.mark.parametrize("flags, words", [
    (["--prior", "student-t:df=-3"], ["'df'", "positive"]),
    (["--prior", "horseshoe"], ["'horseshoe'"]),
    (["--prior", "gaussian:width=2"], ["'width'"]),
    (["--bayes", "blocks.9.*"], ["'blocks.9.*'"]),
    (["--guide", "nope", "--steps", "1"], ["'nope'", "mean_field"]),
    (["--steps", "-5"], ["steps", "-5"]),
])
def test_cli_bad_flags(tmp_path, capsys, flags, words):
    code, err = bzoo(capsys, "fit", *flags, "--out", str(tmp_path / "run"))
    assert code == 2, err
    for word in words:
        assert word in err, err


def test_cli_prior_file_with_a_glob_matching_nothing(tmp_path, capsys):
    path = tmp_path / "priors.json"
    path.write_text(json.dumps({"blocks.*.attn.*": "student-t:df=3", "blocks.42.*": "laplace", "*": "gaussian"}))
    code, err = bzoo(capsys, "fit", "--prior", str(path), "--steps", "1", "--out", str(tmp_path / "run"))
    assert code == 2 and "'blocks.42.*'" in err


def test_cli_refuses_an_existing_run_and_keeps_its_files(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"accuracy": 1}')
    code, err = bzoo(capsys, "fit", "--steps", "1", "--out", str(run))
    assert code == 2 and str(run) in err and "--overwrite" in err
    assert (run / "metrics.json").read_text() == '{"accuracy": 1}'


def test_cli_debug_shows_the_exception(tmp_path):
    with pytest.raises(DataError):
        cli.main(["--debug", "fit", "--dataset", "Nope", "--out", str(tmp_path / "run")])
