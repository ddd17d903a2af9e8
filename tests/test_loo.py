"""PSIS-LOO's Pareto k summary and warning, on log-likelihoods whose importance ratios have a known tail.

For a point with log-likelihood ``xi * log U`` (U uniform) the PSIS-LOO ratio ``1 / p(y | theta) = U^-xi`` is
generalized-Pareto with shape ``xi``: ArviZ's k estimates ``xi``, shrunk toward 0.5 by its weak prior (weight 10
against the 3 sqrt(S) = 134 tail draws: 1.5 -> 1.43, 0.85 -> 0.83). The draws are the quantiles of U at
``(s + 1/2) / S``, so the tail is exact and k carries no Monte Carlo noise beyond the estimator's own. A
log-likelihood with a small normal spread has a light tail (k well below 0.5).
"""
import json
import warnings

import arviz as az
import numpy as np
import pytest
from scipy.stats import norm

from inference.compare import compare, pareto_k_summary, psis_loo
from zoo.cli import main

S = 2000
HEAVY, MIDDLE = 1.5, 0.85  # shapes above 1, and between 0.7 and 1


def loglik_with_shapes(shapes):
    """[1, S, N] log-likelihood: point i's ratio has Pareto shape shapes[i] (None: a light, normal tail)."""
    u = (np.arange(S) + 0.5) / S
    columns = [0.05 * norm.ppf(u) - 1.0 if xi is None else xi * np.log(u) for xi in shapes]
    return np.stack(columns, axis=1)[None]


def run(shapes):
    """InferenceData with what ``compare`` and ``bzoo diagnose`` read: loglik, log-likelihood, probs, labels."""
    ll = loglik_with_shapes(shapes)
    n = ll.shape[-1]
    p = np.exp(ll)  # the probability of the observed class 0 of two
    probs = np.stack([p, 1 - p], axis=-1)
    return az.from_dict(posterior={"loglik": ll.sum(-1)}, log_likelihood={"y": ll},
                        posterior_predictive={"probs": probs}, observed_data={"y": np.zeros(n, dtype=int)},
                        dims={"y": ["obs_id"], "probs": ["obs_id", "class"]})


MIXED = [HEAVY, HEAVY, MIDDLE, MIDDLE, MIDDLE, None, None, None, None, None]


def test_pareto_k_estimates_the_known_tail_shapes():
    """The premise of the tests below: ArviZ's k lands near each designed shape, far from 0.7 and 1."""
    with pytest.warns(UserWarning):
        result, _ = psis_loo(run(MIXED), "mixed")
    k = np.asarray(result.pareto_k)
    np.testing.assert_allclose(k[:5], [HEAVY] * 2 + [MIDDLE] * 3, atol=0.15)
    assert np.all(k[5:] < 0.5)


def test_summary_counts_and_shares_above_each_limit():
    with pytest.warns(UserWarning) as caught:
        _, summary = psis_loo(run(MIXED), "mixed-run")
    assert summary["num_points"] == 10
    assert summary["pareto_k_above_0.7"] == 5 and summary["pareto_k_share_above_0.7"] == 0.5
    assert summary["pareto_k_above_1"] == 2 and summary["pareto_k_share_above_1"] == 0.2
    assert abs(summary["pareto_k_max"] - HEAVY) < 0.15
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "'mixed-run'" in messages[0] and "5 of 10 points" in messages[0]
    assert "2 above 1" in messages[0] and "\n" not in messages[0]


def test_a_light_tailed_run_has_no_large_k_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, summary = psis_loo(run([None] * 6), "fine")
    assert summary["pareto_k_max"] < 0.5 and summary["num_points"] == 6
    assert summary["pareto_k_above_0.7"] == summary["pareto_k_above_1"] == 0


def test_summary_of_given_k_values():
    summary = pareto_k_summary([0.2, 0.7, 0.71, 1.0, 1.01, 3.0])
    assert summary == {"pareto_k_max": 3.0, "num_points": 6, "pareto_k_above_0.7": 4,
                       "pareto_k_share_above_0.7": 4 / 6, "pareto_k_above_1": 2, "pareto_k_share_above_1": 2 / 6}
    with pytest.raises(ValueError, match="empty"):
        pareto_k_summary([])


def test_compare_reports_k_per_row_and_warns_naming_the_row():
    with pytest.warns(UserWarning, match="'heavy'") as caught:
        result = compare({"heavy": run(MIXED), "light": run([None] * 10)})
    assert not any("'light'" in str(w.message) for w in caught)
    assert result.pareto_k["heavy"]["pareto_k_above_0.7"] == 5 and result.pareto_k["light"]["pareto_k_above_0.7"] == 0
    md = result.markdown()
    assert "| max k | k > 0.7 | k > 1 |" in md
    heavy_row = next(line for line in md.splitlines() if line.startswith("| heavy |") and "| True |" in line)
    assert heavy_row.endswith("| 5 | 2 |")
    light_row = next(line for line in md.splitlines() if line.startswith("| light |") and "False" in line)
    assert light_row.endswith("| 0 | 0 |")
    assert json.loads(json.dumps(result.to_json()))["pareto_k"]["heavy"]["pareto_k_above_1"] == 2


def test_diagnose_reports_and_warns(tmp_path, capsys):
    folder = tmp_path / "heavy-run"
    folder.mkdir()
    run(MIXED).to_netcdf(str(folder / "posterior.nc"))
    with pytest.warns(UserWarning, match="heavy-run.*5 of 10 points"):
        assert main(["diagnose", str(folder)]) == 0
    assert "> 0.7 for 5, > 1 for 2 of 10 points" in capsys.readouterr().out
    report = json.loads((folder / "diagnose" / "diagnostics.json").read_text())["loo"]
    assert report["pareto_k_above_0.7"] == 5 and report["pareto_k_above_1"] == 2
