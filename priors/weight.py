"""Elementwise weight priors: Gaussian, Laplace, Student-t, optionally fan-in scaled."""
import math

import pyro.distributions as dist

from .base import Prior, flag, format_spec, independent, positive


class _Scaled(Prior):
    """A location-zero prior whose scale may shrink as ``scale / sqrt(fan_in)``."""

    name = ""

    def __init__(self, scale=1.0, fan_in=False):
        self.scale = positive("scale", scale, self.name)
        self.fan_in = flag("fan_in", fan_in, self.name)

    def site_scale(self, site):
        return self.scale / math.sqrt(site.fan_in) if self.fan_in else self.scale

    def _params(self):
        return {"scale": self.scale, "fan_in": self.fan_in}

    def spec(self):
        return format_spec(self.name, self._params())


class Gaussian(_Scaled):
    """Isotropic Gaussian N(0, scale^2), or N(0, scale^2 / fan_in) with ``fan_in=True``."""

    name = "gaussian"

    def __call__(self, site):
        return independent(dist.Normal(0.0, self.site_scale(site)), site)


class Laplace(_Scaled):
    """Laplace(0, scale): a sparsity-favouring weight prior."""

    name = "laplace"

    def __call__(self, site):
        return independent(dist.Laplace(0.0, self.site_scale(site)), site)


class StudentT(_Scaled):
    """Student-t(df, 0, scale): heavy tails, as argued for by Fortuin et al. (2021)."""

    name = "student-t"

    def __init__(self, df=3.0, scale=1.0, fan_in=False):
        super().__init__(scale, fan_in)
        self.df = positive("df", df, self.name)

    def _params(self):
        return {"df": self.df, **super()._params()}

    def __call__(self, site):
        return independent(dist.StudentT(self.df, 0.0, self.site_scale(site)), site)
