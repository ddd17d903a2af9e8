"""Dirichlet attention priors that move off the fixed Dirichlet(1): remedies for a posterior on its prior (issue 31).

- ``dirichlet-eb`` (``LearnedDirichlet``): every attention row ~ Dirichlet(beta, ..., beta) over its real keys,
  one beta per layer and head, beta a point parameter fitted by the same ELBO as the rest (type-II maximum
  likelihood, empirical Bayes). The prior can then move to where the posterior is instead of pulling it onto
  Dirichlet(1). At fixed posterior rows Dirichlet(alpha_r) of K_r real keys, the optimum satisfies
  ``sum_r K_r (psi(K_r beta) - psi(beta)) + sum_r sum_j (psi(alpha_rj) - psi(alpha_r0)) = 0``.
- ``centred-dirichlet`` (``CentredDirichlet``): rows ~ Dirichlet(strength * n * a + floor), ``a`` a MAP network's
  softmax attention for the same input, layer and head and ``n`` the number of real keys (strength 1: the total
  concentration of Dirichlet(1)). The MAP network is a weights file (``bzoo fit --guide map`` writes
  ``weights.pt``) that the model runs on its raw input and hands over as ``KeyContext.reference``
  (``zoo.models.attention.install``): the prior depends on the input alone, never on the parameters being fitted.

Both are off unless chosen as ``attention_prior``.
"""
import math

import torch
import torch.nn as nn

from .attention import AttentionPrior, MaskedDirichlet, real_keys
from .base import PriorError, format_spec, positive, read_weights
from .spec import register


@register
class LearnedDirichlet(AttentionPrior, nn.Module):
    """Symmetric Dirichlet attention prior whose concentration (one per layer and head) is fitted: empirical Bayes.

    ``init`` is every concentration's starting value. The concentrations are the module's parameters
    (``log_concentration[site]``, [H, 1, 1]), made by ``bind`` when the model is built; a model holds its
    ``attention_prior``, so its optimizer fits them and its state saves them.
    """

    name = "dirichlet-eb"
    family = "dirichlet"

    def __init__(self, init=1.0):
        nn.Module.__init__(self)
        self.init = positive("init", init, self.name)
        self.log_concentration = nn.ParameterDict()

    def bind(self, sites, heads):
        """Make one log-concentration per head for each of ``sites`` (the attention site names of one model)."""
        if len(self.log_concentration):
            raise PriorError(f"this {self.name} prior already serves a model; give each model its own (a spec "
                             f"string, or a new LearnedDirichlet)")
        for name in sites:
            self.log_concentration[_key(name)] = nn.Parameter(torch.full((heads, 1, 1), math.log(self.init)))

    def concentration(self, name):
        """The site's concentrations [H, 1, 1]."""
        if _key(name) not in self.log_concentration:
            raise PriorError(f"{self.name} has no concentration for site '{name}': the model makes them when it is "
                             f"built (zoo.models.attention.install)")
        return self.log_concentration[_key(name)].exp()

    def __call__(self, site):
        keys, mask, shape = self.context(site)
        alpha = self.concentration(site.name).to(keys.dtype)
        return MaskedDirichlet(alpha.expand(shape), mask).to_event(2)

    def spec(self):
        return format_spec(self.name, {"init": self.init})


def _key(name):
    return name.replace(".", "__")  # ParameterDict keys may not hold dots


@register
class CentredDirichlet(AttentionPrior):
    """Dirichlet attention prior centred on a MAP network's attention: ``strength * n * a + floor`` (see module)."""

    name = "centred-dirichlet"
    family = "dirichlet"

    def __init__(self, path=None, strength=1.0, floor=0.1):
        self.strength = positive("strength", strength, self.name)
        self.floor = positive("floor", floor, self.name)
        if not isinstance(path, str) or not path.strip():
            raise PriorError(f"{self.name} takes path=FILE, a MAP network's weights (bzoo fit --guide map writes "
                             f"weights.pt); got {path!r}")
        self.path = path.strip()
        self.reference_weights = read_weights(self.path, self.name)

    def __call__(self, site):
        keys, mask, shape = self.context(site)
        reference = site.context.reference
        if reference is None:
            raise PriorError(f"{self.name} needs the MAP network's attention rows at site '{site.name}', and the "
                             f"model gives none (its attention is not installed by zoo.models.attention.install)")
        alpha = self.strength * real_keys(mask, keys) * reference.to(keys.dtype) + self.floor
        return MaskedDirichlet(alpha.expand(shape), mask).to_event(2)

    def spec(self):
        return format_spec(self.name, {"strength": self.strength, "floor": self.floor}) + f",path={self.path}"
