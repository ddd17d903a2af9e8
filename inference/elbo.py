"""The ELBO, term by term, for reparameterized guides.

Written out rather than taken from ``pyro.infer.Trace_ELBO`` because the study
needs its parts: the likelihood (tempered), the KL (annealed, closed form where
``torch.distributions.kl_divergence`` knows the pair) and, when the loss turns
non-finite, the name of the site that did it. Particles are vectorized with a
plate at dim -2, so the model runs once per step whatever their number.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from torch.distributions import Independent, kl_divergence

from .guides.protocol import local_posterior, remedy_of
from .sites import is_latent, is_sampled, with_local_sites


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or infinite; names the step and site at fault."""


@dataclass
class ElboTerms:
    loglik: torch.Tensor  # E_q[log p(y | theta)], scaled to the full data set
    kl: torch.Tensor  # KL(q || p) over all latent sites (closed form where known)
    model_trace: object
    guide_trace: object
    kl_sites: dict = None  # site -> its part of ``kl`` (a joint guide's parts are log-densities, not KLs)
    kl_objective: torch.Tensor = None  # ``kl`` with the attention remedies applied (None: none, the same)

    def loss(self, temperature=1.0, beta=1.0):
        """Negative tempered, annealed ELBO: -loglik / T + beta * KL (the remedied KL where a guide asks)."""
        return -self.loglik / temperature + beta * (self.kl if self.kl_objective is None else self.kl_objective)


def _closed_form_kl(q, p):
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def remedied_kl(q, p, remedy):
    """An attention site's objective term: ``weight`` * sum of max(KL_row, ``free_bits``) over its rows (the KL
    under the Independent wrappers, per row; rows of padding queries count 0), or ``weight`` * KL without free
    bits (``AttentionGuide``)."""
    if not remedy["free_bits"]:
        return remedy["weight"] * kl_divergence(q, p)
    while isinstance(q, Independent):
        q, p = q.base_dist, p.base_dist
    kl, mask = kl_divergence(q, p), getattr(q, "mask", None)
    floor = torch.full_like(kl, remedy["free_bits"]) if mask is None else remedy["free_bits"] * mask.any(-1).to(kl)
    return remedy["weight"] * torch.maximum(kl, floor)  # padding rows (no real key) have KL 0 and no floor


def particles(num):
    return pyro.plate("particles", num, dim=-2) if num > 1 else nullcontext()


def elbo_terms(model, guide, *args, num_particles=1, **kwargs):
    with particles(num_particles):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        run = with_local_sites(model, guide)
        model_trace = poutine.trace(poutine.replay(run, trace=guide_trace)).get_trace(*args, **kwargs)
    loglik, parts, remedied = 0.0, {}, {}

    def add(name, term):
        parts[name] = parts.get(name, 0.0) + term

    for name, site in model_trace.nodes.items():
        if not is_sampled(site):
            continue
        if site["is_observed"]:
            loglik = loglik + site["scale"] * site["fn"].log_prob(site["value"]).sum()
            continue
        posterior = local_posterior(site)
        if posterior is not None:  # drawn from its amortized posterior in the model's pass: closed-form KL
            add(name, site["scale"] * kl_divergence(posterior, site["fn"]).sum())
            if remedy_of(site) is not None:
                remedied[name] = site["scale"] * remedied_kl(posterior, site["fn"], remedy_of(site)).sum()
            continue
        q = guide_trace.nodes[name]
        closed = _closed_form_kl(q["fn"], site["fn"])
        if closed is not None:
            add(name, site["scale"] * closed.sum())
            q["kl_done"] = True
        else:
            add(name, -site["scale"] * site["fn"].log_prob(site["value"]).sum())
    for name, q in guide_trace.nodes.items():
        if is_latent(q) and not q.get("kl_done"):
            add(name, q["scale"] * q["fn"].log_prob(q["value"]).sum())
    kl = sum(parts.values(), 0.0)
    objective = sum((remedied.get(n, v) for n, v in parts.items()), 0.0) / num_particles if remedied else None
    return ElboTerms(loglik / num_particles, kl / num_particles, model_trace, guide_trace,
                     {n: v / num_particles for n, v in parts.items()}, objective)


def first_nonfinite_site(terms):
    """The first site (guide, then model) whose value or log-density is not finite."""
    for trace in (terms.guide_trace, terms.model_trace):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            value = site["value"]
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                return name
            with torch.no_grad():
                if not torch.isfinite(site["fn"].log_prob(value)).all():
                    return name
    return None
