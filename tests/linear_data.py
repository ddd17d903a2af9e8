"""Shared test data: a small linear-regression set with a known generating weight."""
import torch


def regression(n=20, noise=0.5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + noise * torch.randn(n, generator=g)


def assert_gaussian_moments(w, mean, cov, ess):
    """Draws ``w`` [S, D] have the Gaussian's mean and covariance within Monte Carlo error (``ess`` per
    coordinate), and the check has power: the prior's mean, 0, is far outside it."""
    se_mean = torch.sqrt(cov.diagonal() / torch.as_tensor(ess))
    assert ((w.mean(0) - mean).abs() < 4 * se_mean).all()
    var = cov.diagonal()
    se_cov = torch.sqrt((var[:, None] * var[None, :] + cov**2) / min(ess))
    assert ((torch.cov(w.T) - cov).abs() < 5 * se_cov).all()
    assert ((torch.zeros_like(mean) - mean).abs() > 4 * se_mean).any()
