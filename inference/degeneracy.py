"""Degenerate posteriors, named: a predictive that ignores its inputs, or an approximate posterior on its prior.

Weight-space mean-field VI at temperature 1 on a small data set is the common case:
the KL to the prior outweighs 67 series' likelihood, the guide settles on the prior,
the network's point parameters switch the random weights off, and every input gets
the same prediction, a coin flip that metrics alone do not explain.
``check(posterior, x)`` looks for both signs:

- **constant predictive**: the posterior-predictive class probabilities move by less
  than ``SPREAD`` over the training inputs (for every class);
- **on the prior**: for guides with a KL, every site's KL(q || p) per number is below
  ``KL_PER_NUMBER`` nats (a joint guide such as ``low_rank`` counts as one site).

``Degeneracy.warning()`` is the one line to show (what was found and what to try),
``to_dict()`` the flags for ``metrics.json``. ``bzoo fit`` and the study call this
after every fit.
"""
from dataclasses import dataclass, field

import torch

from .elbo import elbo_terms
from .sites import is_latent

SPREAD = 0.02  # largest change of a predictive probability over the training inputs that still counts as constant
KL_PER_NUMBER = 1e-3  # nats of KL(q || p) per latent number below which a site sits on its prior
DRAWS = 30  # predictive draws when the caller gives no probabilities
PARTICLES = 16  # draws for the KL where it has no closed form
INPUTS = 256  # training inputs the KL of local (attention) sites is estimated on


@dataclass
class Degeneracy:
    spread: float  # max over classes of (max - min over training inputs) of the predictive probability
    kl_per_number: dict = field(default_factory=dict)  # site -> KL(q || p) nats per number; empty: no KL

    @property
    def constant(self):
        return self.spread < SPREAD

    @property
    def on_prior(self):
        """True / False, or None for methods without a KL (point estimates, MCMC, ensembles)."""
        if not self.kl_per_number:
            return None
        return max(self.kl_per_number.values()) < KL_PER_NUMBER

    @property
    def degenerate(self):
        return self.constant or bool(self.on_prior)

    def warning(self):
        """One line naming what was found and what to try, or None when the posterior is not degenerate."""
        if not self.degenerate:
            return None
        found = []
        if self.constant:
            found.append(f"its predictive is constant over the training inputs (probabilities move by at most "
                         f"{self.spread:.3g}, under {SPREAD})")
        if self.on_prior:
            found.append(f"the approximate posterior sits on its prior (KL at most "
                         f"{max(self.kl_per_number.values()):.2g} nats per weight at every site)")
        return ("degenerate posterior: " + " and ".join(found) + "; try a temperature below 1 selected on a "
                "validation split (--temperature), another guide (map, low_rank, or dirichlet with "
                "--bayes attention) or another prior")

    def to_dict(self):
        kl = max(self.kl_per_number.values()) if self.kl_per_number else None
        return {"degenerate": self.degenerate, "constant_predictive": self.constant,
                "predictive_spread": self.spread, "on_prior": self.on_prior, "kl_per_weight_max": kl}


def check(posterior, x, mask=None, probs=None):
    """Is ``posterior`` degenerate on training inputs ``x``? ``probs`` ([S, N, K] on ``x``) saves predicting again."""
    if probs is None:
        probs = posterior.predict(x, DRAWS, mask)
    mean = probs.mean(0) if probs.dim() == 3 else probs
    spread = float((mean.max(0).values - mean.min(0).values).max())
    return Degeneracy(spread, kl_per_number(posterior, x, mask))


@torch.no_grad()
def kl_per_number(posterior, x, mask=None):
    """Site -> KL(q || p) per latent number for a guide-based, non-point posterior; {} otherwise."""
    if posterior.guide is None or posterior.point:
        return {}
    model, guide = posterior.model, posterior.guide
    x = x[:INPUTS].to(posterior.device)
    mask = None if mask is None else mask[:INPUTS].to(posterior.device)
    was_training = model.training
    model.eval()
    try:
        labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # the KL does not depend on them
        terms = elbo_terms(model, guide, x, labels, mask, x.shape[0], num_particles=PARTICLES)
    finally:
        model.train(was_training)
    latent = {n: s for n, s in terms.model_trace.nodes.items() if is_latent(s)}
    numbers = {n: s["value"].numel() / PARTICLES for n, s in latent.items()}  # values carry the particle dim
    parts = {n: float(v) for n, v in (terms.kl_sites or {}).items()}
    joint = [n for n, s in terms.guide_trace.nodes.items() if is_latent(s) and s["infer"].get("is_auxiliary")]
    if joint:  # one density over all sites: only the total is a KL
        return {"all sites (joint guide)": max(sum(parts.values()), 0.0) / max(sum(numbers.values()), 1)}
    return {n: max(parts.get(n, 0.0), 0.0) / max(numbers[n], 1) for n in latent}
