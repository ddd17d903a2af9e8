"""Laplace approximation around the MAP: a Gaussian whose precision is the Hessian there.

The MAP comes from ``fit(guide="map")`` and is polished by L-BFGS on the full-batch
(tempered) negative log joint, so the expansion point is a stationary point. The
Hessian is exact (second-order autograd through Pyro's potential, in the
unconstrained space of every site), so on a linear-Gaussian model the result is
the exact posterior. ``subset="all"`` covers every global site (small models);
``subset="last-layer"`` covers the head and fixes the other sites at the MAP
(the usual choice for larger networks). Directions of negative curvature (a MAP
that is not a strict local optimum) have their eigenvalues raised to the prior's
smallest curvature, and are counted in ``info["clipped"]``.
"""
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc.util import initialize_model
from torch.nn.attention import SDPBackend, sdpa_kernel

from .svi import FitError, fit_svi
from .mcmc.nuts import Tempered, tempered
from .posterior import Posterior
from .site_vectors import flatten, mode as map_mode, unflatten

SUBSETS = ("auto", "all", "last-layer")


class LaplaceGuide(nn.Module):
    """Draws the ``subset`` sites jointly from N(loc, L L^T) in unconstrained space; the rest are fixed."""

    def __init__(self, loc, scale_tril, names, shapes, transforms, fixed):
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("scale_tril", scale_tril)
        self.names, self.shapes, self.transforms, self.fixed = names, shapes, transforms, fixed

    def forward(self, *args, **kwargs):
        z = pyro.sample("_laplace", dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril),
                        infer={"is_auxiliary": True})
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = shape.numel()
            value = self.transforms[name].inv(z[..., i:i + n].reshape(*z.shape[:-1], *shape))
            out[name] = pyro.sample(name, dist.Delta(value, event_dim=len(shape)))
            i += n
        for name, value in self.fixed.items():
            out[name] = pyro.sample(name, dist.Delta(value, event_dim=value.dim()))
        return out


def covariance_factor(hessian, floor):
    """Cholesky factor of the inverse of ``hessian`` (float64), eigenvalues below ``floor`` raised to it."""
    h = hessian.double()
    evals, evecs = torch.linalg.eigh(0.5 * (h + h.T))
    clipped = int((evals < floor - 1e-5 * evals.abs().max()).sum())  # beyond float32 round-off
    cov = (evecs / evals.clamp_min(floor)) @ evecs.T
    return torch.linalg.cholesky(0.5 * (cov + cov.T)), clipped


def prior_curvature(model, names, shapes, theta, data, init):
    """Smallest curvature of the prior alone at ``theta`` (likelihood scaled to zero; one data point suffices).

    It floors the Hessian's spectrum: where the likelihood curves downward (a MAP
    that is a saddle), the approximation falls back to no more than the prior's
    uncertainty instead of an unbounded one.
    """
    _, potential, _, _ = initialize_model(Tempered(math.inf)(model), model_args=(*data, None),
                                          init_strategy=init_to_value(values=init))
    h = torch.autograd.functional.hessian(lambda t: potential(unflatten(t, names, shapes)), theta, vectorize=True)
    evals = torch.linalg.eigvalsh(0.5 * (h + h.T).double())
    return max(evals.min().item(), 1e-6 * evals.abs().max().item(), 1e-12)


def polish(energy, theta, max_iter):
    """L-BFGS on ``energy`` from ``theta``; returns the minimizer (unchanged when max_iter is 0)."""
    theta = theta.detach().clone().requires_grad_(True)
    if max_iter:
        optim = torch.optim.LBFGS([theta], max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-14)

        def closure():
            optim.zero_grad()
            e = energy(theta)
            e.backward()
            return e
        optim.step(closure)
    return theta.detach()


def fit_laplace(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                subset="auto", max_full=1000, polish_steps=200, kl_anneal=0):
    """MAP (``steps`` Adam steps at ``lr``, the prior warmed up over ``kl_anneal``), L-BFGS polish, exact
    Hessian, Gaussian posterior.

    ``subset``: ``all``, ``last-layer`` (sites named ``head.*``), or ``auto`` (all when
    the global sites hold at most ``max_full`` numbers, else last-layer).
    """
    if subset not in SUBSETS:
        raise FitError(f"unknown laplace subset '{subset}'; valid: {', '.join(SUBSETS)}")
    x, y, mask = data
    map_post = fit_svi(model, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                       temperature=temperature, kl_anneal=kl_anneal, seed=seed, progress=progress)
    mode = map_mode(map_post)
    size = sum(v.numel() for v in mode.values())
    if subset == "auto":
        subset = "all" if size <= max_full else "last-layer"
    names = list(mode) if subset == "all" else [n for n in mode if n.startswith("head.")]
    if not names:
        raise FitError("laplace subset 'last-layer' found no 'head.*' sites; use bayes='weights' or "
                       "'last-layer', or subset='all'")
    fixed = {n: v for n, v in mode.items() if n not in names}
    target = poutine.condition(tempered(model, temperature), data=fixed) if fixed else tempered(model, temperature)
    start, potential, transforms, _ = initialize_model(target, model_args=(x, y, mask, None),
                                                       init_strategy=init_to_value(values=mode))
    shapes = [start[n].shape for n in names]

    def energy(theta):
        return potential(unflatten(theta, names, shapes))

    model.eval()
    theta = polish(energy, flatten(start, names), polish_steps)
    with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no second derivative
        hessian = torch.autograd.functional.hessian(energy, theta, vectorize=True)
        floor = prior_curvature(target, names, shapes, theta, (x[:1], y[:1], None if mask is None else mask[:1]), mode)
    scale_tril, clipped = covariance_factor(hessian, floor)
    guide = LaplaceGuide(theta, scale_tril.to(theta.dtype), names, shapes, transforms, fixed)
    info = {"subset": subset, "sites": names, "num_params": theta.numel(), "clipped": clipped,
            "temperature": temperature, "seed": seed, "map_losses": map_post.info["losses"],
            "energy": energy(theta).item()}
    return Posterior(model, "laplace", guide=guide, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])
