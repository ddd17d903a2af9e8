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
from torch.distributions import kl_divergence

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

    def loss(self, temperature=1.0, beta=1.0):
        """Negative tempered, annealed ELBO: -loglik / T + beta * KL."""
        return -self.loglik / temperature + beta * self.kl


def _closed_form_kl(q, p):
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def particles(num):
    return pyro.plate("particles", num, dim=-2) if num > 1 else nullcontext()


def elbo_terms(model, guide, *args, num_particles=1, **kwargs):
    with particles(num_particles):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        run = with_local_sites(model, guide)
        model_trace = poutine.trace(poutine.replay(run, trace=guide_trace)).get_trace(*args, **kwargs)
    loglik, parts = 0.0, {}

    def add(name, term):
        parts[name] = parts.get(name, 0.0) + term

    for name, site in model_trace.nodes.items():
        if not is_sampled(site):
            continue
        if site["is_observed"]:
            loglik = loglik + site["scale"] * site["fn"].log_prob(site["value"]).sum()
            continue
        if "posterior" in site["infer"]:  # drawn from its amortized posterior in the model's pass: closed-form KL
            add(name, site["scale"] * kl_divergence(site["infer"]["posterior"], site["fn"]).sum())
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
    return ElboTerms(loglik / num_particles, kl / num_particles, model_trace, guide_trace,
                     {n: v / num_particles for n, v in parts.items()})


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
