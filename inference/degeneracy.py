"""Degenerate posteriors, named: a predictive that ignores its inputs, or an approximate posterior on its prior.

Weight-space mean-field VI at temperature 1 on a small data set is the common case:
the KL to the prior outweighs 67 series' likelihood, the guide settles on the prior,
the network's point parameters switch the random weights off, and every input gets
the same prediction, a coin flip that metrics alone do not explain.
``check(posterior, x)`` looks for both signs:

- **constant predictive**: the posterior-predictive class probabilities move by less
  than ``SPREAD`` over the training inputs (for every class);
- **on the prior**: for guides with a KL, the sites whose KL(q || p) per number is below
  ``KL_PER_NUMBER`` nats hold at least ``SHARE`` of the latent numbers (a joint guide
  such as ``low_rank`` counts as one site). Not every site: a collapsed fit still
  learns the class frequencies in ``head.bias`` (measured: 0.95 nats per number there,
  at most 1.2e-4 at every other site).

``Degeneracy.warning()`` is the one line to show (what was found and what to try),
``to_dict()`` the flags for ``metrics.json``. ``bzoo fit`` and the study call this
after every fit.
"""
from dataclasses import dataclass, field

import torch

from .elbo import elbo_terms
from .guides.protocol import is_global_draw, is_kl, local_posterior
from .sites import is_latent

SPREAD = 0.02  # largest change of a predictive probability over the training inputs that still counts as constant
KL_PER_NUMBER = 1e-3  # nats of KL(q || p) per latent number below which a site sits on its prior
SHARE = 0.99  # share of the latent numbers at such sites above which the posterior sits on its prior
DRAWS = 30  # predictive draws when the caller gives no probabilities
PARTICLES = 16  # draws for the KL where it has no closed form
INPUTS = 256  # training inputs the KL of local (attention) sites is estimated on


@dataclass
class Degeneracy:
    spread: float  # max over classes of (max - min over training inputs) of the predictive probability
    kl: dict = field(default_factory=dict)  # site -> KL(q || p) in nats; empty: the method has no KL
    numbers: dict = field(default_factory=dict)  # site -> how many latent numbers it holds
    attention: dict = field(default_factory=dict)  # attention site -> mean entropy of its rows (nats; None: not
    # non-negative), so the KL of attention alone and how spread its rows are can be read apart from the weights'

    @property
    def constant(self):
        return self.spread < SPREAD

    @property
    def share_on_prior(self):
        """The share of latent numbers at sites whose KL per number is below ``KL_PER_NUMBER`` (None: no KL)."""
        if not self.kl:
            return None
        total = sum(self.numbers.values())
        return sum(m for n, m in self.numbers.items() if self.kl[n] / m < KL_PER_NUMBER) / total

    @property
    def kl_per_number(self):
        """KL(q || p) per latent number over all sites (None: no KL)."""
        return sum(self.kl.values()) / sum(self.numbers.values()) if self.kl else None

    @property
    def kl_per_attention_number(self):
        """KL(q || p) per number over the attention sites alone (None: no attention site with a KL)."""
        sites = [n for n in self.attention if n in self.kl]
        return sum(self.kl[n] for n in sites) / sum(self.numbers[n] for n in sites) if sites else None

    @property
    def attention_entropy(self):
        """Mean entropy (nats) of the attention rows over the attention sites whose rows lie on the simplex."""
        values = [v for v in self.attention.values() if v is not None]
        return sum(values) / len(values) if values else None

    @property
    def on_prior(self):
        """True / False, or None for methods without a KL (point estimates, MCMC, ensembles)."""
        return None if not self.kl else self.share_on_prior >= SHARE

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
            found.append(f"the approximate posterior sits on its prior ({self.share_on_prior:.2%} of the weights "
                         f"are at sites within {KL_PER_NUMBER:g} nats of it per weight)")
        return ("degenerate posterior: " + " and ".join(found) + "; try a temperature below 1 selected on a "
                "validation split (--temperature), another guide (map, low_rank, or dirichlet with "
                "--bayes attention) or another prior")

    def to_dict(self):
        return {"degenerate": self.degenerate, "constant_predictive": self.constant,
                "predictive_spread": self.spread, "on_prior": self.on_prior,
                "share_on_prior": self.share_on_prior, "kl_per_weight": self.kl_per_number,
                **({"kl_per_attention_number": self.kl_per_attention_number,
                    "attention_entropy": self.attention_entropy} if self.attention else {})}


def check(posterior, x, mask=None, probs=None):
    """Is ``posterior`` degenerate on training inputs ``x``? ``probs`` ([S, N, K] on ``x``) saves predicting again."""
    if probs is None:
        probs = posterior.predict(x, DRAWS, mask)
    mean = probs.mean(0) if probs.dim() == 3 else probs
    spread = float((mean.max(0).values - mean.min(0).values).max())
    return Degeneracy(spread, *kl_by_site(posterior, x, mask))


@torch.no_grad()
def kl_by_site(posterior, x, mask=None):
    """(site -> KL(q || p) in nats, site -> latent numbers, attention site -> mean row entropy) for a guide-based,
    non-point posterior; ({}, {}, {}) otherwise. A site whose attached term is not a KL (its posterior declares
    ``is_kl = False``: CGPT's regularizer) has no KL entry."""
    if posterior.guide is None or posterior.point:
        return {}, {}, {}
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
    numbers = {n: s["value"].numel() / PARTICLES / copies(s, x.shape[0])
               for n, s in latent.items()}  # values carry the particle dim
    attention = {n: row_entropy(s["value"]) for n, s in latent.items() if s["infer"].get("attention")}
    parts = {n: float(v) for n, v in (terms.kl_sites or {}).items()}
    joint = [s for s in terms.guide_trace.nodes.values() if is_latent(s) and s["infer"].get("is_auxiliary")]
    if joint:  # one density over all sites: only the total is a KL
        counted = [s["infer"]["numbers"] for s in joint if "numbers" in s["infer"]]
        if counted:  # a KL between functions (fsvi): per function value compared, not per weight
            site = "function values (function-space KL)"
            return {site: max(sum(parts.values()), 0.0)}, {site: max(sum(counted), 1)}, {}
        site = "all sites (joint guide)"
        return {site: max(sum(parts.values()), 0.0)}, {site: max(sum(numbers.values()), 1)}, {}
    divergences = [n for n, s in latent.items() if is_kl(local_posterior(s))]
    return ({n: max(parts.get(n, 0.0), 0.0) for n in divergences}, {n: max(numbers[n], 1) for n in divergences},
            attention)


def copies(site, batch):
    """How many times a model site's value repeats one draw: ``batch`` for a global latent expanded over the
    batch (its attached posterior declares ``global_draw``), else 1."""
    return batch if is_global_draw(local_posterior(site)) else 1


def row_entropy(w):
    """Mean entropy of the last axis's rows of non-negative ``w``, each normalized to sum 1 (BAM's weights are
    unnormalized), else None; all-zero rows (padded queries) are left out, padded keys hold 0 and add nothing."""
    w = w.double().reshape(-1, w.shape[-1])
    if (w < 0).any():
        return None
    sums = w.sum(-1, keepdim=True)
    rows = (w / sums.clamp_min(1e-300))[sums[:, 0] > 0]
    if not len(rows):
        return None
    return float(-(rows * rows.clamp_min(1e-300).log()).sum(-1).mean())
