"""benchmarks/ivon_opt.py without ivon-opt (GPL-3.0, optional): its docs block renders what the JSON holds, it
runs the problem of tests/test_ivon.py, and it refuses in one line when the package is missing."""
import sys

import pytest

from benchmarks import ivon_opt

def run(accuracy, nll, ece, seconds_per_step):
    return {"accuracy": accuracy, "nll": nll, "ece": ece, "seconds_per_step": seconds_per_step}


SYNTHETIC = {
    "ivon_opt_version": "9.9.9", "torch": "1.2.3",
    "linear": {"settings": {"steps": 2000, "lr": 0.1, "mc_samples": 16, "beta1": 0.9, "beta2": 0.99,
                            "hess_init": 0.5, "n": 20, "noise": 0.5, "prior_scale": 0.3, "seeds": 7},
               "same_noise": {"mean": 1.21e-7, "variance_relative": 3.5e-7},
               "zoo": {"mean_error": [0.0012, -0.0034], "mean_error_se": [0.0011, 0.0021],
                       "variance_ratio": [0.987, 1.012], "variance_ratio_se": [0.004, 0.006]},
               "ivon-opt": {"mean_error": [-0.0007, 0.0025], "mean_error_se": [0.0012, 0.0019],
                            "variance_ratio": [0.993, 1.021], "variance_ratio_se": [0.005, 0.007]}},
    "network": {"settings": {"seed": 0, "draw_seeds": [0, 1], "temperature": 1.0, "steps": 250, "lr": 0.1,
                             "kl_anneal": 125, "n_test": 1029, "num_samples": 64},
                "fits": [{"hess_init": 3.0,
                          "zoo": [run(0.9512, 0.1634, 0.0213, 0.03), run(0.9472, 0.1660, 0.0250, 0.05)],
                          "ivon-opt": [run(0.9432, 0.1711, 0.0301, 0.024), run(0.9452, 0.1650, 0.0240, 0.02)]},
                         {"hess_init": 30.0,
                          "zoo": [run(0.9601, 0.1522, 0.0190, 0.02), run(0.9581, 0.1550, 0.0170, 0.04)],
                          "ivon-opt": [run(0.9611, 0.1498, 0.0184, 0.03), run(0.9591, 0.1540, 0.0160, 0.01)]}]}}


def test_the_block_renders_every_figure_of_the_json_in_its_place():
    block = ivon_opt.render(SYNTHETIC)
    lines = block.splitlines()
    assert lines[0] == ivon_opt.BEGIN and lines[-1] == ivon_opt.END
    assert "ivon-opt 9.9.9, torch 1.2.3" in block and "over 7 seeds" in block
    assert "within 1.2e-07 of each other in the mean and 3.5e-07 (relative)" in block
    assert "| zoo | +0.0012 ± 0.001, -0.0034 ± 0.002 | 0.987 ± 0.004, 1.012 ± 0.006 |" in lines
    assert "| ivon-opt | -0.0007 ± 0.001, +0.0025 ± 0.002 | 0.993 ± 0.005, 1.021 ± 0.007 |" in lines
    assert "250 steps, lr 0.1, KL warm-up 125 steps" in block and "1029 series with 64 draws" in block
    assert "seeded by 0, 1;" in block
    assert "| 3 | zoo | 0.951, 0.947 | 0.163, 0.166 | 0.021, 0.025 | 0.0400 |" in lines
    assert "| 3 | ivon-opt | 0.943, 0.945 | 0.171, 0.165 | 0.030, 0.024 | 0.0220 |" in lines
    assert "| 30 | ivon-opt | 0.961, 0.959 | 0.150, 0.154 | 0.018, 0.016 | 0.0200 |" in lines
    # Derived figures: the largest standardized difference on regression (the second weight's mean, 0.0059 over
    # hypot(0.0021, 0.0019)); at hess_init 3 the mean accuracies 0.9492 and 0.9442, whose standard errors are
    # 0.002 and 0.001 (half the spread of two), NLL 0.1647 and 0.1680 (0.0013, 0.003); the median time ratios
    # 0.022 / 0.04 and 0.02 / 0.03.
    assert "differ by at most 2.1 standard errors" in block
    assert "hess_init 3: accuracy +0.005 ± 0.002, NLL -0.003 ± 0.003;" in block
    assert "takes 0.55 to 0.67 times the zoo's" in block


def test_the_benchmark_runs_the_problem_and_settings_of_the_zoos_ivon_test():
    import test_ivon

    x, y = ivon_opt.correlated_regression()
    expected_x, expected_y = test_ivon.correlated_regression()
    assert x.equal(expected_x) and y.equal(expected_y)
    assert (ivon_opt.NOISE, ivon_opt.PRIOR_SCALE) == (test_ivon.NOISE, test_ivon.PRIOR_SCALE)
    assert ivon_opt.LINEAR == test_ivon.SETTINGS


def test_without_ivon_opt_the_benchmark_refuses_in_one_line_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ivon", None)  # `import ivon` now raises ImportError, as if not installed
    out = tmp_path / "ivon_opt.json"
    with pytest.raises(SystemExit) as refused:
        ivon_opt.main(["--json", str(out), "--seeds", "1"])
    message = str(refused.value.code)
    assert message == ivon_opt.MISSING and "\n" not in message and "pip install --no-deps ivon-opt" in message
    assert not out.exists()


def test_the_docs_page_holds_the_block_the_committed_json_gives():
    """docs/ivon.md's comparison is generated: it must equal what benchmarks/results/ivon_opt.json renders."""
    import json
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "ivon.md").read_text()
    assert ivon_opt.render(json.loads(ivon_opt.RESULTS.read_text())).strip() in page
