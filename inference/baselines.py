"""The baselines researchers compare against: deep ensembles and MC dropout.

Both are MAP fits (``fit(guide="map")``, tempered like every method), returned as
draws-based Posteriors over *all* network parameters, so ``Posterior.predict``
runs every member or dropout mask in one vectorized pass. An ensemble's members
can also be trained together as one stacked model (``batched``), with the same
seeds and the same result as fitting them one after another.
"""
import copy

import pyro.distributions as dist
import torch

from core.tensors import minibatches
from core.training import minimize

from .svi import FitError, fit_svi, kl_weight
from .posterior import Posterior
from .guides.weight import global_sites


def fresh_values(model, seed):
    """Every network parameter of a freshly initialised copy of ``model``'s network, seeded ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model.net)(model.net.cfg)
    device = next(model.net.parameters()).device
    return {n: p.detach().to(device) for n, p in fresh.named_parameters()}


def reinitialized(model, seed):
    """A copy of ``model`` whose network is freshly initialised from ``seed`` (all parameters)."""
    member = copy.deepcopy(model)
    fresh = fresh_values(model, seed)
    with torch.no_grad():
        for n, p in member.net.named_parameters():
            p.copy_(fresh[n])
    return member


def fit_ensemble(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                 num_members=5, batched=None, kl_anneal=0):
    """A deep ensemble: ``num_members`` independent MAP fits, member k from a fresh network seeded ``seed + k``.

    Member 0 starts from the model's own initial values with ``seed``, so an
    ensemble of one is exactly ``fit(model, data, guide="map", seed=seed)``. ``kl_anneal``
    warms each member's prior up over that many steps, as it does for ``guide="map"``.

    ``batched=True`` trains the members as one stacked model (their parameters stacked
    on a leading dim that the network carries through, or ``torch.func.vmap`` when each
    member draws its own minibatches; one Adam over all): the same members as the loop
    (``batched=False``) within float tolerance, in one pass per step instead of
    ``num_members``. It needs every latent site to be a network weight (no attention
    sites or hyper-priors) and dropout off for identical members; ``None`` (default)
    batches whenever the model allows it.
    """
    if num_members < 1:
        raise FitError(f"num_members must be >= 1, got {num_members}")
    x, _, mask = data
    why_not = unbatchable(model, x, mask)
    if batched and why_not:
        raise FitError(f"ensemble: batched=True needs {why_not}; use batched=False")
    batched = not why_not if batched is None else bool(batched)
    if batched:
        starts = [{n: p.detach().clone() for n, p in model.net.named_parameters()}]
        starts += [fresh_values(model, seed + k) for k in range(1, num_members)]
        draws = fit_members_together(model, data, starts, steps, lr, batch_size, temperature, seed, progress,
                                     kl_anneal)
    else:
        members = []
        for k in range(num_members):
            member = model if k == 0 else reinitialized(model, seed + k)
            posterior = fit_svi(member, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                                temperature=temperature, kl_anneal=kl_anneal, seed=seed + k, progress=progress)
            members.append(posterior.point_weights())
        draws = {n: torch.stack([m[n] for m in members]) for n in members[0]}
    return Posterior(model, "ensemble", draws=draws, info={"num_members": num_members, "seed": seed,
                                                             "temperature": temperature, "batched": batched},
                     x_proto=x[:2], mask_proto=None if mask is None else mask[:2])


def unbatchable(model, x, mask):
    """Why the members of ``model`` cannot be trained as one stacked model (None if they can)."""
    if getattr(model, "attention", None) or not hasattr(model, "net"):
        return "a transformer without attention sites"
    extra = set(global_sites(model, x[:2], None, None if mask is None else mask[:2])) - set(model.sites)
    if extra:
        return f"no latent sites besides network weights (found {', '.join(sorted(extra))})"
    return None


def fit_members_together(model, data, starts, steps, lr, batch_size, temperature, seed, progress, kl_anneal=0):
    """MAP fits of every start at once: the loss of ``fit(guide="map")`` summed over members, one Adam over all.

    Member k gets the minibatches of ``fit(..., seed=seed + k)``; each member's loss
    depends on its own parameters only, so summing leaves every member's gradient (and
    Adam's elementwise step) as it would be alone. Returns name -> [S, *shape] values.
    """
    from torch.func import functional_call, vmap

    x, y, mask = data
    net, n, s = model.net, x.shape[0], len(starts)
    params = {k: torch.stack([start[k] for start in starts]).requires_grad_() for k in starts[0]}
    priors = {k: model.priors[k](site) for k, site in model.sites.items()}
    randomness = "different" if net.cfg.dropout else "error"

    def logits(p, xb, mb):
        return functional_call(net, p, (xb, mb))
    own = vmap(logits, in_dims=(0, 0, None if mask is None else 0), randomness=randomness)

    def loss(step, idx):
        if idx[0] is None:  # one batch for all: the network's own leading sample dim (SDPA then sees one batch)
            out, yb, scale = net(x, mask, params), y.expand(s, n), 1.0
        else:  # each member its own minibatch: vmap over members
            idx = torch.stack(idx).to(x.device)
            out, yb, scale = own(params, x[idx], None if mask is None else mask[idx]), y[idx], n / idx.shape[1]
        loglik = scale * dist.Categorical(logits=out).log_prob(yb).sum()
        logprior = sum(prior.log_prob(params[k]).sum() for k, prior in priors.items())
        return -loglik / temperature - kl_weight(step, kl_anneal) * logprior
    streams = [minibatches(n, batch_size, steps, torch.Generator().manual_seed(seed + k)) for k in range(s)]
    net.train()  # one Adam over the sites (the MAP guide's values) and the point parameters of every member
    minimize(loss, params.values(), lr, steps, zip(*streams), progress, f"fit ensemble of {s} (batched)")
    net.eval()
    with torch.no_grad():  # member 0 is the model itself, as in the loop: its point parameters end trained
        for k, p in model.net.named_parameters():
            if k not in model.sites:
                p.copy_(params[k][0])
    return {k: v.detach() for k, v in params.items()}


def fit_mc_dropout(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                   num_samples=100, kl_anneal=0):
    """MC dropout: a MAP fit with dropout on, predicting with dropout on (``num_samples`` masks).

    The model must be built with ``dropout > 0`` for the draws to differ; with
    dropout 0 every draw is the deterministic MAP network.
    """
    if num_samples < 1:
        raise FitError(f"num_samples must be >= 1, got {num_samples}")
    x, _, mask = data
    posterior = fit_svi(model, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                        temperature=temperature, kl_anneal=kl_anneal, seed=seed, progress=progress)
    values = posterior.point_weights()
    # One weight set, repeated: the network then carries a leading sample dim and draws a mask per sample.
    draws = {n: v.expand(num_samples, *v.shape) for n, v in values.items()}
    return Posterior(model, "mc_dropout", draws=draws,
                     info={"dropout_at_test": True, "dropout": model.net.cfg.dropout, "seed": seed,
                           "temperature": temperature},
                     x_proto=x[:2], mask_proto=None if mask is None else mask[:2])
