"""Attention-space guides, ``dirichlet`` and ``bam``: amortized posteriors over attention rows.

The posterior of a layer's attention is computed from that layer's queries and
keys, which only the model's forward pass computes. Rather than run the network
twice (once in the guide for q, k and again in the model), the guide contributes
a handler, ``guide.local(model)``: when the model's attention hook reaches a site
carrying ``infer["attention"]`` (see ``zoo.models.attention``), the handler builds the
amortized posterior from the logits there, draws the value by ``rsample`` and
attaches the posterior as ``infer["posterior"]``; ``inference.elbo`` then adds the
closed-form KL(posterior || prior) of that site, scaled by its plate. One forward
pass per step, whatever the guide.

- ``dirichlet``: each row ~ Dirichlet(c_h * softmax(q k^T / sqrt(dh)) + floor), one
  learned ``c_h`` per layer and head. Its mean tends to ordinary attention as c grows;
  the floor keeps every concentration >= floor, so float32 Gamma draws neither
  underflow to uniform rows nor give unbounded implicit-reparameterization gradients.
- ``bam``: each unnormalized weight ~ Weibull(k_h, lam) with mean softmax(q k^T / sqrt(dh)),
  one learned shape ``k_h`` per layer and head (Fan et al. 2020).

Global weight sites of the same model (for example ``bayes="attention,last-layer"``)
are fitted by the weight-space guide named by ``weights`` (default ``mean_field``).
"""
import math

import torch
import torch.nn as nn
from pyro.poutine.messenger import Messenger

from priors import MaskedDirichlet, MaskedWeibull

from .protocol import attach
from .weight import _key, global_sites, weight_guide


class LocalPosterior(Messenger):
    """Draws attention sites from ``guide.posterior`` inside the model's own forward pass.

    ``mean=True`` uses the posterior mean instead of a draw (posterior-mean attention).
    """

    def __init__(self, guide, mean=False):
        super().__init__()
        self.guide, self.mean = guide, mean

    def _pyro_sample(self, msg):
        context = msg["infer"].get("attention")
        if context is None or msg["is_observed"] or msg["value"] is not None:
            return
        q = self.guide.posterior(msg["name"], context).expand(msg["fn"].batch_shape)
        msg["value"] = q.mean if self.mean else q.rsample()
        attach(msg, q, self.guide.remedy)


class AttentionGuide(nn.Module):
    """Shared part: a weight-space guide for the global sites, and one parameter per layer and head.

    Two remedies for a posterior that collapses onto its prior (docs/attention.md), both off by default and
    then changing nothing: ``local_kl_weight`` w multiplies the attention sites' KL alone in the objective, and
    ``free_bits`` lambda (families with per-row KLs: ``dirichlet``) leaves each attention row's KL unpenalized
    below lambda nats, the objective's term being w * sum over rows of max(KL_row, lambda) (Kingma et al. 2016,
    per row and sequence). The KL the fit reports (``ElboTerms.kl``) stays the true one.
    """

    family = ""
    rows_have_kl = False  # the posterior is Independent over rows, so free bits can floor each row's KL

    def __init__(self, model, *args, init, weights="mean_field", free_bits=0.0, local_kl_weight=1.0,
                 **weight_options):
        super().__init__()
        if getattr(model, "attention", None) != self.family:
            raise TypeError(f"the model has no {self.family} attention sites (build it with bayes containing "
                            f"'{'attention' if self.family == 'dirichlet' else self.family}')")
        for name, value in (("free_bits", free_bits), ("local_kl_weight", local_kl_weight)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf):
                raise TypeError(f"{name} must be a number >= 0, got {value!r}")
        if free_bits and not self.rows_have_kl:
            raise TypeError(f"free_bits needs a KL per attention row, which guide '{self.family}' does not have "
                            f"(dirichlet has); use local_kl_weight")
        self.remedy = None if (free_bits, local_kl_weight) == (0, 1) else \
            {"free_bits": float(free_bits), "weight": float(local_kl_weight)}
        guide = weight_guide(weights)
        self.weights = guide(model, *args, **weight_options) if global_sites(model, *args) else None
        heads = model.cfg.heads
        self.log_param = nn.ParameterDict({_key(n): nn.Parameter(torch.full((heads, 1, 1), math.log(init)))
                                           for n in model.attention_sites})

    def forward(self, *args, **kwargs):
        return self.weights(*args, **kwargs) if self.weights is not None else {}

    def local(self, model, mean=False):
        """``model`` with its attention sites drawn from this guide's posterior."""
        return LocalPosterior(self, mean)(model)

    def param(self, name):
        return self.log_param[_key(name)].exp()


class Dirichlet(AttentionGuide):
    """Amortized Dirichlet attention: concentration ``c_h * softmax(logits) + floor``, c_h from ``init_concentration``."""

    family = "dirichlet"
    rows_have_kl = True

    def __init__(self, model, *args, init_concentration=100.0, floor=0.1, **options):
        super().__init__(model, *args, init=init_concentration, **options)
        if not floor > 0:
            raise TypeError(f"floor must be positive, got {floor}")
        self.floor = float(floor)

    def posterior(self, name, context):
        logits = context.logits
        concentration = self.param(name) * logits.softmax(-1) + self.floor
        return MaskedDirichlet(concentration, context.mask).to_event(2)


class BAM(AttentionGuide):
    """Bayesian Attention Modules: Weibull(k_h, lam) weights with mean softmax(logits), k_h from ``init_shape``."""

    family = "bam"

    def __init__(self, model, *args, init_shape=10.0, **options):
        super().__init__(model, *args, init=init_shape, **options)

    def posterior(self, name, context):
        k = self.param(name)
        # lam * Gamma(1 + 1/k) is the Weibull mean; log-space keeps tiny softmax weights from underflowing to 0.
        log_mean = context.logits.log_softmax(-1)
        if context.mask is not None:  # masked keys have logits -inf: keep their (unused) scale finite
            log_mean = log_mean.clamp_min(-50)
        return MaskedWeibull(log_mean - torch.lgamma(1 + 1 / k), k, context.mask)
