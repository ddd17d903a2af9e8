"""The bzoo commands end to end, on few steps: run folders, keys, refusal to clobber."""
import json

import arviz as az
import pytest
import torch

from inference import Posterior
from zoo import cli, recipes


def bzoo(*argv):
    return cli.main([str(a) for a in argv])


def test_datasets_lists_the_default(capsys):
    assert bzoo("datasets") == 0
    assert "ItalyPowerDemand" in capsys.readouterr().out


def test_fit_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert bzoo("fit", "--guide", "map", "--steps", 30, "--d-model", 8, "--depth", 1, "--heads", 2, "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "nll", "ece", "brier", "fit_seconds"} <= set(metrics)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["nll"] > 0
    assert 0 <= metrics["ood_auroc"] <= 1 and set(metrics["ood_reference"]) == {"input", "minirocket"}  # as a cell
    assert metrics["shift_nll"] > 0 and len(metrics["shift"]) == 12 and metrics["ood_scale"]["std_ratio"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["config"]["guide"] == "map"
    post = Posterior.load(out / "posterior.pt")
    assert post.method == "map"
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert set(weights) == {n for n, _ in post.model.net.named_parameters()}
    assert "posterior" in az.from_netcdf(out / "posterior.nc").groups()
    assert (out / "reliability.png").stat().st_size > 0
    # a second fit into the same folder is refused, and nothing is lost
    before = (out / "metrics.json").read_text()
    assert bzoo("fit", "--guide", "map", "--steps", 1, "--out", out) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before


def test_empirical_prior_from_a_map_run(tmp_path):
    first, second = tmp_path / "map", tmp_path / "mf"
    small = ("--d-model", 8, "--depth", 1, "--heads", 2)
    assert bzoo("fit", "--guide", "map", "--steps", 5, *small, "--out", first) == 0
    assert bzoo("fit", "--guide", "mean_field", "--steps", 5, *small, "--prior",
                f"empirical:path={first / 'weights.pt'}", "--out", second) == 0
    assert "empirical" in json.loads((second / "run.json").read_text())["config"]["model"]["prior"]


@pytest.mark.parametrize("argv, words", [
    (["fit", "--guide", "magic"], ["unknown guide 'magic'", "map"]),
    (["fit", "--dataset", "Nope"], ["unknown dataset 'Nope'", "ItalyPowerDemand"]),
    (["fit", "--prior", "gaussian:scale=-2"], ["scale", "-2"]),
    (["study", "--methods", "map,bogus"], ["unknown method 'bogus'"]),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, words):
    assert bzoo(*argv, "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words)


def test_method_options_and_attention_prior_reach_the_fit(tmp_path):
    out = tmp_path / "ens"
    assert bzoo("fit", "--guide", "ensemble", "--option", "num_members=2", "--steps", 3, "--d-model", 8, "--depth", 1,
                "--heads", 2, "--num-samples", 2, "--out", out) == 0
    assert Posterior.load(out / "posterior.pt").num_draws() == 2
    att = tmp_path / "att"
    assert bzoo("fit", "--guide", "dirichlet", "--bayes", "attention", "--attention-prior", "key-dirichlet",
                "--steps", 2, "--d-model", 8, "--depth", 1, "--heads", 2, "--num-samples", 2, "--out", att) == 0
    assert "key-dirichlet" in json.loads((att / "run.json").read_text())["config"]["model"]["attention_prior"]


def test_unknown_method_option_is_named(tmp_path, capsys):
    assert bzoo("fit", "--guide", "ensemble", "--option", "bogus=1", "--out", tmp_path / "x") == 2
    assert "no option 'bogus'" in capsys.readouterr().err


def test_an_ensemble_predicts_with_all_its_members_when_more_draws_are_asked(tmp_path):
    out = tmp_path / "ens"
    assert bzoo("fit", "--guide", "ensemble", "--option", "num_members=2", "--steps", 2, "--d-model", 8, "--depth", 1,
                "--heads", 2, "--out", out) == 0  # default --num-samples 100 > 2 members
    post = Posterior.load(out / "posterior.pt")
    x = torch.randn(3, 24, 1)
    assert post.predict(x, 100).shape == (2, 3, 2)


def test_a_guide_name_takes_either_spelling_and_a_typo_gets_the_near_match():
    from inference.fit import FitError, canonical, check_fit
    assert canonical("laplace-lora") == "laplace_lora" and canonical("kep_svgp") == "kep-svgp"
    assert canonical("mean_field") == "mean_field" and canonical("magic") == "magic"
    check_fit("sgpa_decoupled")  # accepted, no error
    with pytest.raises(FitError, match="did you mean 'mean_field'"):
        check_fit("mean_feild")


def test_every_guide_and_method_name_is_listed_once():
    from inference.fit import method_names
    names = method_names()
    assert len(names) == len(set(names)) and {"blob", "ivon", "fsp-laplace", "cgpt"} <= set(names)
