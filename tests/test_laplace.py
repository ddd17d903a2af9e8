"""Laplace: exact on a linear-Gaussian model (tempered too); full and last-layer on a transformer."""
import math

import pytest
import torch

from inference import FitError, fit
from priors import Gaussian
from zoo import BayesianLinearRegression, TransformerClassifier
from zoo.models.linear import exact_posterior
from linear_data import regression


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_laplace_is_exact_on_the_conjugate_model(temperature):
    """The log posterior is quadratic: mode and inverse Hessian are its mean and covariance (float32 precision)."""
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5, prior=Gaussian(2.0))
    post = fit(model, (x, y), guide="laplace", steps=100, lr=0.05, temperature=temperature, progress=False)
    mean, cov = exact_posterior(x, y, 0.5 * math.sqrt(temperature), 2.0)
    scale = post.guide.scale_tril.double()
    assert torch.allclose(post.guide.loc.double(), mean, atol=1e-4)
    assert torch.allclose(scale @ scale.T, cov, rtol=1e-4, atol=1e-7)
    assert post.info["clipped"] == 0
    draws = post.sample(4000)["weight"].double()  # and the Posterior draws from it
    assert ((draws.mean(0) - mean).abs() < 4 * (cov.diagonal() / 4000).sqrt()).all()


def test_laplace_full_and_last_layer_on_a_transformer():
    torch.manual_seed(0)
    x, y = torch.randn(16, 6, 1), torch.randint(0, 2, (16,))
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=6)
    full = fit(model, (x, y), guide="laplace", steps=20, polish_steps=10, progress=False)
    assert full.info["subset"] == "all" and full.info["num_params"] == sum(s.numel for s in model.sites.values())
    probs = full.predict(x, 5)
    assert probs.shape == (5, 16, 2) and not torch.allclose(probs[0], probs[1])
    last = fit(model, (x, y), guide="laplace", steps=20, polish_steps=10, max_full=10, progress=False)
    assert last.info["subset"] == "last-layer" and last.info["sites"] == ["head.weight", "head.bias"]
    draws = last.sample(3)
    assert torch.equal(draws["embed.weight"][0], draws["embed.weight"][2])  # fixed at the MAP
    assert not torch.equal(draws["head.weight"][0], draws["head.weight"][2])


def test_laplace_rejects_a_bad_subset_and_a_headless_last_layer():
    x, y = regression()
    with pytest.raises(FitError):
        fit(BayesianLinearRegression(3), (x, y), guide="laplace", subset="diagonal", progress=False)
    with pytest.raises(FitError):
        fit(BayesianLinearRegression(3), (x, y), guide="laplace", subset="last-layer", steps=2, progress=False)
