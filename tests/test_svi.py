"""SVI against closed forms: the minibatch ELBO is unbiased, Gaussian posteriors are recovered."""
import math

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

from inference import GUIDES, Posterior, elbo_terms, fit
from priors import Gaussian
from zoo import BayesianLinearRegression, TransformerClassifier
from zoo.models.linear import exact_posterior


def regression(n=50, noise=0.5):
    torch.manual_seed(0)
    x = torch.randn(n, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + noise * torch.randn(n)
    return x, y


def test_minibatch_elbo_is_unbiased_for_the_full_batch_elbo():
    """Mean of many minibatch ELBOs (random batch and random weight draw) = mean of full-batch ELBOs.

    Tolerance: 4 combined Monte Carlo standard errors of the two sample means.
    """
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2)
    x, y = torch.randn(40, 6, 1), torch.randint(0, 2, (40,))
    guide = GUIDES["mean_field"](model, x[:2], y[:2], None, init_scale=0.1)
    with torch.no_grad():
        full = torch.tensor([-elbo_terms(model, guide, x, y, None, 40).loss().item() for _ in range(200)])
        mini = []
        for _ in range(1000):
            idx = torch.randperm(40)[:8]
            mini.append(-elbo_terms(model, guide, x[idx], y[idx], None, 40).loss().item())
        mini = torch.tensor(mini)
    se = math.sqrt(full.var() / len(full) + mini.var() / len(mini))
    assert abs(full.mean() - mini.mean()) < 4 * se
    # and the check has power: an unscaled minibatch likelihood is far off
    assert abs(full.mean() - (mini.mean() / 5)) > 10 * se


def test_mean_field_kl_is_closed_form():
    model = BayesianLinearRegression(3, prior=Gaussian(2.0))
    x, y = regression()
    guide = GUIDES["mean_field"](model, x, y, None, init_scale=0.3)
    terms = elbo_terms(model, guide, x, y, None, 50)
    q = torch.distributions.Normal(guide.loc["weight"], torch.nn.functional.softplus(guide.rho["weight"]))
    expected = kl_divergence(q, torch.distributions.Normal(0.0, 2.0)).sum()
    assert torch.allclose(terms.kl, expected)


def _posterior_draws(guide, **options):
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5)
    post = fit(model, (x, y), guide=guide, steps=2500, lr=2e-2, num_particles=16, progress=False, seed=0,
               guide_options=options)
    assert isinstance(post, Posterior)
    return post.sample(20000)["weight"].double(), exact_posterior(x, y, 0.5, 1.0)


def test_mean_field_recovers_the_conjugate_posterior():
    """Mean-field's optimum has the exact mean and sd_i = 1 / sqrt(precision_ii).

    The 20,000-draw Monte Carlo error is 0.007 posterior sd; the tolerance (0.1 sd on
    the mean, 8% on the sd) is dominated by the final SVI iterate's gradient noise.
    """
    draws, (mean, cov) = _posterior_draws("mean_field")
    sd = cov.diag().sqrt()
    mf_sd = torch.linalg.inv(cov).diag().rsqrt()
    assert ((draws.mean(0) - mean).abs() < 0.1 * sd).all()
    assert ((draws.std(0) / mf_sd - 1).abs() < 0.08).all()


@pytest.mark.slow
@pytest.mark.correctness
def test_low_rank_recovers_the_full_conjugate_covariance():
    draws, (mean, cov) = _posterior_draws("low_rank", rank=3)
    sd = cov.diag().sqrt()
    assert ((draws.mean(0) - mean).abs() < 0.1 * sd).all()
    corr = torch.corrcoef(draws.T)
    exact_corr = cov / torch.outer(sd, sd)
    assert ((torch.cov(draws.T).diag().sqrt() / sd - 1).abs() < 0.08).all()
    assert ((corr - exact_corr).abs() < 0.05).all()


def test_map_is_the_posterior_mode():
    x, y = regression()
    post = fit(BayesianLinearRegression(3, noise_scale=0.5), (x, y), guide="map", steps=1500, lr=2e-2,
               progress=False)
    mean, _ = exact_posterior(x, y, 0.5, 1.0)
    assert post.point and torch.allclose(post.sample()["weight"][0].double(), mean, atol=2e-3)


def test_vectorized_prediction_equals_looped_prediction_for_the_same_draws():
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2)
    x, y = torch.randn(30, 6, 1), torch.randint(0, 2, (30,))
    post = fit(model, (x, y), guide="mean_field", steps=5, progress=False)
    pyro.set_rng_seed(3)
    probs = post.predict(x, num_samples=7, batch_size=8)
    pyro.set_rng_seed(3)
    draws = post.sample(7, x[:8])
    looped = torch.stack([model.net(x, None, {n: v[i] for n, v in draws.items()}).softmax(-1) for i in range(7)])
    assert probs.shape == (7, 30, 2)
    assert torch.allclose(probs, looped, atol=1e-5)
