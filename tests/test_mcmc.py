"""NUTS against the closed-form posterior, tempering, sampler statistics, function-space diagnostics."""
import math

import arviz as az
import numpy as np
import pytest
import torch
from pyro import poutine

from inference import FitError, fit, function_space, predictive_distance, weight_space
from inference.mcmc import by_chain, convergence
from inference.mcmc import tempered
from priors import Gaussian
from zoo import BayesianLinearRegression, TransformerClassifier
from zoo.models.linear import exact_posterior
from linear_data import assert_gaussian_moments, regression


pytestmark = pytest.mark.usefixtures("one_thread")


def test_nuts_matches_the_conjugate_posterior_within_monte_carlo_error():
    """Mean within 4 MCSE (ArviZ bulk ESS); covariance within 5 standard errors of a sample covariance."""
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5, prior=Gaussian(1.0))
    post = fit(model, (x, y), guide="nuts", num_chains=2, warmup=100, num_samples=250, init="model", progress=False)
    mean, cov = exact_posterior(x, y, 0.5, 1.0)
    w = post.draws["weight"].double()
    assert w.shape == (500, 3) and post.info["chains"] == 2
    ess = np.asarray([convergence(by_chain(w[:, i], 2))["ess_bulk_min"] for i in range(3)])
    assert ess.min() > 100  # conjugate Gaussian: NUTS must mix well
    assert_gaussian_moments(w, mean, cov, ess)


def test_tempering_divides_the_log_likelihood_only():
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5)
    w = {"weight": torch.tensor([0.3, -0.2, 0.1])}

    def log_joint(m):
        tr = poutine.trace(poutine.condition(m, w)).get_trace(x, y)
        tr.compute_log_prob()
        return tr.nodes["weight"]["log_prob_sum"], tr.nodes["y"]["log_prob_sum"]
    prior1, lik1 = log_joint(tempered(model, 1.0))
    prior, lik = log_joint(tempered(model, 0.25))
    assert torch.allclose(prior, prior1) and torch.allclose(lik, 4 * lik1)


def test_nuts_on_a_transformer_records_chains_and_sampler_statistics():
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8)
    x, y = torch.randn(12, 8, 1), torch.randint(0, 2, (12,))
    post = fit(model, (x, y), guide="nuts", steps=5, num_chains=2, warmup=10, num_samples=4, max_tree_depth=2,
               progress=False)  # 10 warmup steps: with fewer the step size stays too large and both chains stick
    assert post.info["chains"] == 2 and post.method == "nuts"
    stats = post.info["sample_stats"]
    for key in ("diverging", "step_size", "tree_depth", "n_steps", "accept_prob", "lp"):
        assert stats[key].shape == (2, 4), key
    assert (stats["tree_depth"] <= 2).all() and (stats["n_steps"] <= 3).all() and (stats["n_steps"] >= 1).all()
    assert ((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all()
    assert set(post.draws) == set(model.sites)
    # chains start apart (fresh networks per chain), so their first draws differ
    head = post.draws["head.weight"]
    assert not torch.allclose(head[0], head[4])
    probs = post.predict(x)
    assert probs.shape == (8, 12, 2) and torch.allclose(probs.sum(-1), torch.ones(8, 12))
    diag = function_space(post, x)
    idata = post.to_arviz(x, y)
    # the function-space R-hat is ArviZ's over the stored chains of p(class 1) (p(class 0) = 1 - it)
    stored = idata.posterior_predictive["probs"].sel({"class": 1}).values.astype(float)  # [chain, draw, point]
    by_arviz = az.rhat(az.convert_to_dataset({"p": stored}))["p"].values
    assert diag["entries"] == 12 and diag["rhat_max"] == pytest.approx(float(np.nanmax(by_arviz)), rel=1e-9)
    assert weight_space(post)["entries"] == sum(s.numel for s in model.sites.values())
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 4
    assert idata.sample_stats["diverging"].shape == (2, 4)


def test_convergence_detects_a_chain_stuck_elsewhere():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 300, 5))
    assert convergence(good)["rhat_max"] < 1.05 and convergence(good)["ess_bulk_min"] > 400
    bad = good.copy()
    bad[0] += 2.0
    assert convergence(bad)["rhat_max"] > 1.3


def test_predictive_distance_by_hand():
    ref = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    probs = torch.tensor([[[0.7, 0.3], [0.9, 0.1]], [[0.5, 0.5], [0.9, 0.1]]])  # mean [[0.6, 0.4], [0.9, 0.1]]
    d = predictive_distance(probs, ref)
    assert math.isclose(d["tv"], 0.05, abs_tol=1e-6) and math.isclose(d["tv_max"], 0.1, abs_tol=1e-6)
    assert math.isclose(d["kl"], 0.5 * (0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)), rel_tol=1e-5)
    assert predictive_distance(ref, ref)["tv"] == 0.0
    with pytest.raises(ValueError):
        predictive_distance(probs[:, :1], ref)


@pytest.mark.parametrize("option", [dict(init="prior"), dict(target_accept=1.0), dict(num_chains=0), dict(workers=0),
                                    dict(batch_size=4)])
def test_nuts_rejects_bad_options(option):
    x, y = regression()
    with pytest.raises(FitError):
        fit(BayesianLinearRegression(3), (x, y), guide="nuts", progress=False, **option)


@pytest.mark.slow
@pytest.mark.correctness
def test_tempered_nuts_matches_the_tempered_conjugate_posterior():
    """T = 0.25 sharpens the likelihood: the posterior is the conjugate one with noise variance T * sigma^2."""
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5)
    post = fit(model, (x, y), guide="nuts", temperature=0.25, num_chains=2, warmup=200, num_samples=500,
               init="model", progress=False)
    mean, cov = exact_posterior(x, y, 0.5 * math.sqrt(0.25), 1.0)
    w = post.draws["weight"].double()
    ess = min(convergence(by_chain(w[:, i], 2))["ess_bulk_min"] for i in range(3))
    assert ((w.mean(0) - mean).abs() < 4 * torch.sqrt(cov.diagonal() / ess)).all()
    assert torch.allclose(w.var(0), cov.diagonal(), rtol=5 * math.sqrt(2 / ess))


@pytest.mark.slow
def test_chains_in_worker_processes_match_chains_run_in_turn():
    """``workers=2`` runs each chain in its own process with the same seeds: the same draws as in turn."""
    x, y = regression()
    options = dict(guide="nuts", num_chains=2, warmup=20, num_samples=10, init="model", progress=False)
    one = fit(BayesianLinearRegression(3, noise_scale=0.5), (x, y), **options)
    two = fit(BayesianLinearRegression(3, noise_scale=0.5), (x, y), workers=2, **options)
    assert two.info["workers"] == 2 and two.draws["weight"].shape == (20, 3)
    assert torch.equal(one.draws["weight"], two.draws["weight"])
    assert np.array_equal(one.info["sample_stats"]["n_steps"], two.info["sample_stats"]["n_steps"])


def test_fewer_predictive_draws_than_stored_come_from_every_chain():
    """Stored draws are chain after chain; asking for fewer must not take them all from the first chain."""
    from inference import Posterior

    held = {"w": torch.arange(12.0)[:, None]}  # 3 chains of 4 draws: chain c holds 4c .. 4c + 3
    post = Posterior.__new__(Posterior)
    post.draws, post.point = held, False
    picked = post.sample(3)["w"].squeeze(1)
    assert picked.tolist() == [0.0, 6.0, 11.0] and len({int(v) // 4 for v in picked}) == 3
    assert post.sample(None)["w"].shape[0] == 12 and post.sample(50)["w"].shape[0] == 12
