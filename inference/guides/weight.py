"""Weight-space guides: ``map`` (Delta), ``mean_field`` and ``low_rank``.

Each is built from a prototype trace of the model, like Pyro's autoguides, and
starts at the network's own initial values so that SVI begins where ordinary
training would. ``MeanField`` samples each site straight from a Normal, so the
ELBO can use the closed-form KL to a Gaussian prior.
"""
import itertools

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoLowRankMultivariateNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from ..sites import is_global


def global_sites(model, *args, **kwargs):
    """Name -> prototype site for every latent site outside the data plate."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return {name: site for name, site in trace.iter_stochastic_nodes() if is_global(site)}


def initial_unconstrained(model, site):
    """Start at the network's initial value, else at the prior median (hyper-parameters)."""
    value = model.initial_values().get(site["name"]) if hasattr(model, "initial_values") else None
    if value is None:
        value = init_to_median(site, num_samples=31)
    return biject_to(site["fn"].support).inv(value.detach())


class _SiteGuide(nn.Module):
    """Shared set-up: one unconstrained location per global site."""

    def __init__(self, model, *args, **kwargs):
        super().__init__()
        self.sites = global_sites(model, *args, **kwargs)
        self.event_dims = {n: s["fn"].event_dim for n, s in self.sites.items()}
        self.transforms = {n: biject_to(s["fn"].support) for n, s in self.sites.items()}
        self.loc = nn.ParameterDict({_key(n): nn.Parameter(initial_unconstrained(model, s).clone())
                                     for n, s in self.sites.items()})

    def _sample(self, name, base):
        """Sample ``base`` at the site, mapped to its support unless that is all reals."""
        transform = self.transforms[name]
        if _is_identity(transform):
            return pyro.sample(name, base)
        return pyro.sample(name, dist.TransformedDistribution(base, transform))


def _is_identity(transform):
    while isinstance(transform, dist.transforms.IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, dist.transforms.ComposeTransform) and not transform.parts


def _key(name):
    return name.replace(".", "__")


class Delta(_SiteGuide):
    """Point estimate (MAP): each site is a learned value."""

    def forward(self, *args, **kwargs):
        return {n: pyro.sample(n, dist.Delta(self.transforms[n](self.loc[_key(n)]), event_dim=self.event_dims[n]))
                for n in self.sites}


MIN_SCALE = 1e-6  # floor on MeanField scales


class MeanField(_SiteGuide):
    """Fully factorized Normal per weight, scale = softplus(rho) + MIN_SCALE, started at ``init_scale``.

    The floor keeps a scale whose rho drifts very negative from underflowing to 0 (an invalid Normal).
    """

    def __init__(self, model, *args, init_scale=1e-2, **kwargs):
        super().__init__(model, *args, **kwargs)
        if not init_scale > MIN_SCALE:
            raise TypeError(f"init_scale must be greater than {MIN_SCALE}, got {init_scale}")
        rho = torch.log(torch.expm1(torch.tensor(float(init_scale) - MIN_SCALE)))
        self.rho = nn.ParameterDict({k: nn.Parameter(torch.full_like(v, rho)) for k, v in self.loc.items()})

    def scales(self):
        return {n: F.softplus(self.rho[_key(n)]) + MIN_SCALE for n in self.sites}

    def forward(self, *args, **kwargs):
        out = {}
        for n in self.sites:
            scale = F.softplus(self.rho[_key(n)]) + MIN_SCALE
            base = dist.Normal(self.loc[_key(n)], scale).to_event(self.event_dims[n])
            out[n] = self._sample(n, base)
        return out


_LOW_RANK_IDS = itertools.count()


def low_rank(model, *args, rank=10, init_scale=1e-2, **kwargs):
    """Pyro's low-rank-plus-diagonal multivariate Normal over all sites, started at the network's init."""
    values = {n: v for n, v in model.initial_values().items()}
    guide = AutoLowRankMultivariateNormal(model, rank=rank, init_scale=init_scale,
                                          init_loc_fn=init_to_value(values=values, fallback=init_to_median))
    # A name of its own: Pyro keeps autoguide parameters in its global store by name, so two low_rank guides
    # (two fits, or a fit and a loaded posterior) would otherwise share, and overwrite, each other's values.
    guide._pyro_name = f"low_rank_{next(_LOW_RANK_IDS)}"
    guide(*args, **kwargs)  # creates the parameters
    return guide


WEIGHT_GUIDES = {"map": Delta, "mean_field": MeanField, "low_rank": low_rank}  # what other guides put on weight sites


def weight_guide(name):
    """The weight-space guide called ``name``, or a one-line TypeError naming the choices."""
    if name not in WEIGHT_GUIDES:
        raise TypeError(f"weights guide '{name}' is not a weight-space guide (choose from {', '.join(WEIGHT_GUIDES)})")
    return WEIGHT_GUIDES[name]
