"""The baselines researchers compare against: deep ensembles and MC dropout.

Both are MAP fits (``fit(guide="map")``, tempered like every method), returned as
draws-based Posteriors over *all* network parameters, so ``Posterior.predict``
runs every member or dropout mask in one vectorized pass.
"""
import copy

import torch

from .fit import FitError, fit, register_method
from .posterior import Posterior


def network_values(model, posterior):
    """Every network parameter of a fitted MAP model: the site values from the posterior, the rest from the model."""
    values = {n: p.detach() for n, p in model.net.named_parameters()}
    values.update({n: v[0] for n, v in posterior.sample(1).items() if n in values})
    return values


def reinitialized(model, seed):
    """A copy of ``model`` whose network is freshly initialised from ``seed`` (all parameters)."""
    member = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = dict(type(model.net)(model.net.cfg).named_parameters())
    with torch.no_grad():
        for n, p in member.net.named_parameters():
            p.copy_(fresh[n])
    return member


@register_method("ensemble")
def fit_ensemble(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                 num_members=5):
    """A deep ensemble: ``num_members`` independent MAP fits, member k from a fresh network seeded ``seed + k``.

    Member 0 starts from the model's own initial values with ``seed``, so an
    ensemble of one is exactly ``fit(model, data, guide="map", seed=seed)``.
    """
    if num_members < 1:
        raise FitError(f"num_members must be >= 1, got {num_members}")
    x, _, mask = data
    members = []
    for k in range(num_members):
        member = model if k == 0 else reinitialized(model, seed + k)
        posterior = fit(member, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                        temperature=temperature, seed=seed + k, progress=progress)
        members.append(network_values(member, posterior))
    draws = {n: torch.stack([m[n] for m in members]) for n in members[0]}
    return Posterior(model, "ensemble", draws=draws, info={"num_members": num_members, "seed": seed,
                                                             "temperature": temperature},
                     x_proto=x[:2], mask_proto=None if mask is None else mask[:2])


@register_method("mc_dropout")
def fit_mc_dropout(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                   num_samples=100):
    """MC dropout: a MAP fit with dropout on, predicting with dropout on (``num_samples`` masks).

    The model must be built with ``dropout > 0`` for the draws to differ; with
    dropout 0 every draw is the deterministic MAP network.
    """
    if num_samples < 1:
        raise FitError(f"num_samples must be >= 1, got {num_samples}")
    x, _, mask = data
    posterior = fit(model, data, guide="map", steps=steps, lr=lr, batch_size=batch_size, temperature=temperature,
                    seed=seed, progress=progress)
    values = network_values(model, posterior)
    # One weight set, repeated: the network then carries a leading sample dim and draws a mask per sample.
    draws = {n: v.expand(num_samples, *v.shape) for n, v in values.items()}
    return Posterior(model, "mc_dropout", draws=draws,
                     info={"dropout_at_test": True, "dropout": model.net.cfg.dropout, "seed": seed,
                           "temperature": temperature},
                     x_proto=x[:2], mask_proto=None if mask is None else mask[:2])
