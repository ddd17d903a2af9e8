"""``cgpt`` and ``cgpt-sparse``: correlated-GP attention's objective, cross-entropy plus lambda times the CGP loss.

CGPT (Bui et al., UAI 2024) is a stochastic, regularized model, not a posterior
approximation: it has no variational distribution and no KL. Each layer's attention output
is drawn once per step, by reparameterization, from the model's own conditional
(``priors.cgpt``). Like every attention guide, this one draws the site in the model's own
pass (``guide.local(model)``) and attaches a distribution for ``inference.elbo`` to read:
``CGPRegularized``, the model's conditional itself, whose ``kl()`` is the site's part of the
objective, 0 as a KL plus ``cgp_weight`` (lambda) times the sequence's CGP loss. The ELBO
scales it by the data plate like any local term, so a fit at temperature 1 minimizes
N (mean cross-entropy + lambda mean CGP loss). The network's parameters (the scales and the
X0 projection among them) are point estimates; global weight sites, if the model has any,
are fitted by the weight-space guide named by ``weights`` (default ``mean_field``).
"""
import math
import numbers

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.distributions import constraints
from torch.distributions import register_kl

from priors.cgpt import CGPConditional

from .attention import LocalPosterior
from .weight import global_sites, weight_guide

CGP_WEIGHT = 1e-3  # lambda's default; the study selects it on validation (docs/cgpt.md)


class CGPRegularized(dist.TorchDistribution):
    """The model's conditional ``conditional``, carrying ``weight`` times its CGP loss as the site's objective term."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True
    is_kl = False  # kl() is a regularizer, not a divergence: no "on its prior" verdict (inference.degeneracy)

    def __init__(self, conditional, weight):
        self.conditional, self.weight = conditional, weight
        super().__init__(conditional.batch_shape, conditional.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return CGPRegularized(self.conditional.expand(batch_shape), self.weight)

    @property
    def mean(self):
        return self.conditional.mean

    def rsample(self, sample_shape=torch.Size()):
        return self.conditional.rsample(sample_shape)

    def kl(self):
        """Lambda times each sequence's CGP loss, [*batch_shape] (the KL to the model's own conditional is 0)."""
        return self.weight * self.conditional.cgp_loss


@register_kl(CGPRegularized, CGPConditional)
def _kl_cgp(q, p):
    return q.kl()


class CGPT(nn.Module):
    """Correlated-GP attention: the model's own draws, and ``cgp_weight`` (lambda, >= 0) times the CGP loss."""

    family = "cgpt"
    remedy = None  # no KL to remedy: the CGP loss is a regularizer (AttentionGuide's remedies do not apply)

    def __init__(self, model, x, y=None, mask=None, cgp_weight=CGP_WEIGHT, weights="mean_field", **weight_options):
        super().__init__()
        if getattr(model, "attention", None) != self.family:
            raise TypeError(f"the model has no {self.family} attention sites (build it with bayes containing "
                            f"'{self.family}')")
        if not (isinstance(cgp_weight, numbers.Real) and not isinstance(cgp_weight, bool)
                and cgp_weight >= 0 and math.isfinite(cgp_weight)):
            raise TypeError(f"cgp_weight must be a number >= 0, got {cgp_weight!r}")
        guide = weight_guide(weights)
        self.cgp_weight = float(cgp_weight)
        self.weights = guide(model, x, y, mask, **weight_options) if global_sites(model, x, y, mask) else None
        if self.weights is None and weight_options:
            raise TypeError(f"no option '{next(iter(weight_options))}' (options beyond cgp_weight go to the weights "
                            f"guide, and the model has no weight sites)")

    def forward(self, *args, **kwargs):
        return self.weights(*args, **kwargs) if self.weights is not None else {}

    def local(self, model, mean=False):
        """``model`` with its attention outputs drawn here (``mean=True``: their means, deterministic attention)."""
        return LocalPosterior(self, mean)(model)

    def posterior(self, name, context):
        return CGPRegularized(context.prior, self.cgp_weight)


class SparseCGPT(CGPT):
    """Sparse correlated-GP attention (``bayes="cgpt-sparse"``): the same objective."""

    family = "cgpt-sparse"
