"""bzoo diagnose and bzoo prior-check end to end on tiny models."""
import json

import arviz as az
import numpy as np
import pytest
import torch

from inference import GUIDES, Posterior, arviz_io
from zoo import TransformerClassifier
from zoo.cli import main

N, T, C = 30, 6, 2


def data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, C, generator=g)
    return x, (x[:, :, 0].mean(1) > 0).long()


def tiny():
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=C, d_model=8, depth=1, heads=2, bayes="last-layer")


def write_run(folder, posterior, **options):
    x, y = data()
    folder.mkdir()
    idata = posterior.to_arviz(x, y, test=data(20, seed=1), **options)
    arviz_io.write(idata, folder / "posterior.nc")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    x, y = data()
    model = tiny()
    svi = Posterior(model, "mean_field", guide=GUIDES["mean_field"](model, x, y, None, init_scale=0.1))  # unfitted
    # four "chains" of fixed draws around the SVI fit, the last one shifted: R-hat must notice
    draws = svi.sample(160)
    draws["head.bias"] = draws["head.bias"] + torch.tensor([0.0, 3.0]) * (torch.arange(160) >= 120)[:, None]
    stuck = Posterior(svi.model, "fixed", draws=draws,
                      info={"chains": 4, "sample_stats": {"diverging": np.eye(4, 40, dtype=bool)}})
    return {"svi": write_run(root / "svi", svi, num_samples=50), "chains": write_run(root / "chains", stuck),
            "map": write_run(root / "map", Posterior(svi.model, "map", draws=svi.sample(1), point=True))}


def test_diagnose_svi_run(runs, capsys):
    assert main(["diagnose", str(runs["svi"])]) == 0
    text = capsys.readouterr().out
    assert "one chain" in text and "PSIS-LOO: elpd_loo" in text and "calibration (test, 20 points)" in text
    report = json.loads((runs["svi"] / "diagnose" / "diagnostics.json").read_text())
    assert report["chains"] == 1 and report["draws"] == 50 and report["loo"]["num_points"] == N
    assert report["calibration"]["split"] == "test"
    for name in ("reliability.png", "pareto_k.png", "trace.png"):
        assert (runs["svi"] / "diagnose" / name).stat().st_size > 1000


def test_diagnose_flags_chains_that_disagree(runs, capsys):
    assert main(["diagnose", str(runs["chains"]), "--var-names", "head.bias"]) == 0
    text = capsys.readouterr().out
    assert "NOT CONVERGED" in text and "divergent transitions: 4" in text
    report = json.loads((runs["chains"] / "diagnose" / "diagnostics.json").read_text())
    assert report["convergence"]["function_rhat_max"] > 1.1
    assert report["trace_sites"] == ["head.bias"]
    assert (runs["chains"] / "diagnose" / "rhat.png").exists()


def test_diagnose_point_estimate_and_errors(runs, tmp_path, capsys):
    assert main(["diagnose", str(runs["map"])]) == 0
    assert "LOO needs posterior draws" in capsys.readouterr().out
    assert main(["diagnose", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no posterior.nc" in err and len(err.splitlines()) == 1


def test_prior_check_command(tmp_path, capsys):
    out = tmp_path / "pc"
    argv = ["prior-check", "--prior", "gaussian:scale=1", "--prior", "gaussian:fan_in=true", "--d-model", "8",
            "--depth", "1", "--heads", "2", "--num-samples", "40", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "prior_check.json").read_text())
    first, second = report["priors"]["gaussian:scale=1"], report["priors"]["gaussian:fan_in=true"]
    for r in (first, second):
        assert {"logit_scale", "degenerate_share", "entropy_mean"} <= set(r)
    assert first["logit_scale"] > 2 * second["logit_scale"]  # fan-in scaling shrinks the logits
    idata = az.from_netcdf(str(out / second["file"]))
    assert {"prior", "prior_predictive", "observed_data"} <= set(arviz_io.group_names(idata))
    assert idata.prior_predictive["probs"].shape[:3] == (1, 40, 67)
    assert (out / "prior_check.png").stat().st_size > 1000
    assert "gaussian:fan_in=true" in capsys.readouterr().out
    assert main(argv) == 2  # the folder holds a run now
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.correctness
def test_prior_check_on_the_default_model_separates_isotropic_and_fan_in_priors(tmp_path):
    """ItalyPowerDemand, d_model 32, depth 2, 200 draws: measured logit scale 4.41 vs 0.76 and
    degenerate share 0.73 vs 0.935 (binomial sd about 0.03 and 0.02)."""
    out = tmp_path / "pc"
    assert main(["prior-check", "--prior", "gaussian:scale=1", "--prior", "gaussian:fan_in=true",
                 "--num-samples", "200", "--out", str(out)]) == 0
    report = json.loads((out / "prior_check.json").read_text())["priors"]
    iso, fan = report["gaussian:scale=1"], report["gaussian:fan_in=true"]
    assert iso["logit_scale"] > 3 * fan["logit_scale"]
    assert fan["degenerate_share"] - iso["degenerate_share"] > 0.1
    assert fan["entropy_mean"] > iso["entropy_mean"]


def test_the_pareto_k_plot_keeps_its_size_when_every_k_is_large(tmp_path):
    """ArviZ's plot_khat drew its bin labels at the data's scale: every k above 1 gave a 178,000-pixel PNG."""
    from types import SimpleNamespace

    from matplotlib.image import imread

    from inference import plots

    path = plots.pareto_k(SimpleNamespace(pareto_k=np.linspace(1.5, 40.0, 67)), tmp_path / "k.png")
    height, width = imread(path).shape[:2]
    assert width < 1500 and height < 1000
