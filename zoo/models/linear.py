"""Bayesian linear regression as a zoo model: the closed-form reference that inference is tested against.

Same calling convention and site/prior machinery as ``TransformerClassifier``
(``model(x, y, mask, dataset_size)``, ``sites``, ``priors``), with a Gaussian
likelihood of known noise, so that with a Gaussian prior the posterior is known
exactly (``exact_posterior``).
"""
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

from priors import Gaussian, PriorMap, Site


class BayesianLinearRegression(nn.Module):
    """y = x @ w + noise, w ~ prior over site ``weight`` [input_dim], noise ~ N(0, noise_scale^2)."""

    def __init__(self, input_dim, noise_scale=1.0, prior=None):
        super().__init__()
        self.input_dim, self.noise_scale = input_dim, float(noise_scale)
        self.prior = prior or Gaussian(1.0)
        self.sites = {"weight": Site("weight", (input_dim,), input_dim, "weight")}
        self.priors = PriorMap(self.prior).resolve(self.sites)
        self.register_buffer("_init", torch.zeros(input_dim))

    def config(self):
        return {"input_dim": self.input_dim, "noise_scale": self.noise_scale, "prior": self.prior.spec()}

    def initial_values(self):
        return {"weight": self._init}

    def forward(self, x, y=None, mask=None, dataset_size=None):
        w = pyro.sample("weight", self.priors["weight"](self.sites["weight"]))
        mean = (w * x).sum(-1)  # draws [S, 1, D] broadcast against x [B, D] to [S, B]
        with pyro.plate("data", dataset_size or x.shape[0], subsample=torch.arange(x.shape[0], device=x.device)):
            pyro.sample("y", dist.Normal(mean, self.noise_scale), obs=y)
        return mean


def exact_posterior(x, y, noise_scale, prior_scale):
    """Mean [D] and covariance [D, D] of w | x, y under w ~ N(0, prior_scale^2 I)."""
    x, y = x.double(), y.double()
    precision = x.T @ x / noise_scale**2 + torch.eye(x.shape[1], dtype=x.dtype) / prior_scale**2
    cov = torch.linalg.inv(precision)
    return cov @ x.T @ y / noise_scale**2, cov
