"""A Gaussian prior whose per-site scale is itself a sample site."""
import math

import pyro
import pyro.distributions as dist

from .base import Prior, flag, format_spec, positive


class HierarchicalGaussian(Prior):
    """w ~ N(0, s^2 / fan_in) with s ~ HalfNormal(hyper_scale), one s per site (per layer tensor).

    The scale is sampled at ``{site.name}.prior_scale``, so guides infer it along
    with the weights and a posterior over per-layer scales is there to inspect.
    """

    name = "hierarchical"

    def __init__(self, hyper_scale=1.0, fan_in=True):
        self.hyper_scale = positive("hyper_scale", hyper_scale, self.name)
        self.fan_in = flag("fan_in", fan_in, self.name)

    def __call__(self, site):
        s = pyro.sample(f"{site.name}.prior_scale", dist.HalfNormal(self.hyper_scale))
        if self.fan_in:
            s = s / math.sqrt(site.fan_in)
        # The scale may carry leading sample dims: append singleton dims for the site's shape.
        s = s.reshape(s.shape + (1,) * len(site.shape))
        lead = s.shape[: s.dim() - len(site.shape)]
        return dist.Normal(0.0, s).expand(lead + site.shape).to_event(len(site.shape))

    def spec(self):
        return format_spec(self.name, {"hyper_scale": self.hyper_scale, "fan_in": self.fan_in})
