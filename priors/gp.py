"""A Gaussian-process prior over a network's logits: a prior on functions, not on a weight site.

``GP(kernel, lengthscale, variance, features)`` says: each of the K logits is an
independent zero-mean GP over input series with covariance
``variance * k(|phi(x) - phi(x')| / lengthscale)``. ``phi`` is a fixed embedding of
a series that respects its time axis and its mask (padded steps enter as zeros,
as they do in the network's patches), scaled so that the distance between two
z-normalized series is of order one whatever their length:

- ``series``: the series itself, every step and channel (RMS difference of aligned steps);
- ``patch-mean``: the mean of each of ``segments`` consecutive patches of the time axis,
  over the real steps in it (piecewise aggregate approximation, Keogh et al. 2001):
  local shape kept, noise averaged away;
- ``spectrum``: each channel's amplitude spectrum, invariant to circular shifts in time.

Only ``guide="fsvi"`` can use it (``inference.guides.fsvi``). As the prior of a weight
site it has no density: it refuses, naming the site, when sampled or scored there.
"""
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from .base import Prior, PriorError, format_spec, positive
from .spec import register


def _rbf(r2):
    return torch.exp(-0.5 * r2)


def _matern(nu_half):
    """Matern kernel of smoothness nu = nu_half + 1/2, as a function of the squared scaled distance."""
    def k(r2):
        r = r2.clamp_min(0).sqrt()
        if nu_half == 0:
            return torch.exp(-r)
        if nu_half == 1:
            return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
        return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r2) * torch.exp(-math.sqrt(5) * r)
    return k


KERNELS = {"rbf": _rbf, "matern12": _matern(0), "matern32": _matern(1), "matern52": _matern(2)}
FEATURES = ("series", "patch-mean", "spectrum")


class FunctionPriorAtSite(dist.TorchDistribution):
    """What a GP prior gives a weight site: no density, and a one-line refusal when one is asked for.

    ``guide="fsvi"`` replaces it before anything samples or scores it; every other
    method (SVI guides, NUTS, Laplace, prior checks) would need a weight density.
    """

    arg_constraints = {}

    def __init__(self, prior, site):
        self.prior, self.site = prior, site
        super().__init__(torch.Size(), torch.Size(site.shape), validate_args=False)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.real, len(self.site.shape))

    def _refuse(self, *args, **kwargs):
        raise PriorError(f"prior '{self.prior.spec()}' is a prior over the network's function (its logits), not a "
                         f"distribution for weight site '{self.site.name}'; fit it with guide='fsvi'")

    sample = rsample = log_prob = _refuse


@register
class GP(Prior):
    """Independent zero-mean GPs over the K logits, ``variance * kernel(|phi(x) - phi(x')| / lengthscale)``.

    ``kernel``: ``rbf``, ``matern12``, ``matern32`` or ``matern52``; ``features``: the
    embedding phi, ``series``, ``patch-mean`` (``segments`` patches) or ``spectrum``.
    """

    name = "gp"

    def __init__(self, kernel="rbf", lengthscale=1.0, variance=1.0, features="series", segments=8):
        if kernel not in KERNELS:
            raise PriorError(f"gp: unknown kernel '{kernel}'; valid: {', '.join(KERNELS)}")
        if features not in FEATURES:
            raise PriorError(f"gp: unknown features '{features}'; valid: {', '.join(FEATURES)}")
        self.kernel, self.features = kernel, features
        self.lengthscale = positive("lengthscale", lengthscale, self.name)
        self.variance = positive("variance", variance, self.name)
        if not (float(positive("segments", segments, self.name)).is_integer()):
            raise PriorError(f"gp: parameter 'segments' must be a whole number, got {segments}")
        self.segments = int(segments)

    def __call__(self, site):
        return FunctionPriorAtSite(self, site)

    def embed(self, x, mask=None):
        """phi(x): [N, T, C] real-valued series (``mask`` [N, T], True for real steps) -> [N, D]."""
        if x.dim() != 3 or not x.is_floating_point():
            raise PriorError(f"gp: the kernels compare real-valued series [N, T, C]; got a {x.dtype} tensor of "
                             f"shape {list(x.shape)}")
        n, t, c = x.shape
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        if self.features == "series":
            return x.reshape(n, -1) / math.sqrt(t * c)
        if self.features == "spectrum":
            return torch.fft.rfft(x, dim=1, norm="ortho").abs().reshape(n, -1) / math.sqrt(t * c)
        segments = min(self.segments, t)
        which = torch.arange(t, device=x.device) * segments // t  # step -> patch: equal patches of the time axis
        onehot = torch.nn.functional.one_hot(which, segments).to(x.dtype)  # [T, segments]
        real = torch.ones(n, t, dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
        sums = torch.einsum("ntc,ts->nsc", x, onehot)
        counts = (real @ onehot).clamp_min(1.0)[..., None]  # a patch with no real step is 0
        return (sums / counts).reshape(n, -1) / math.sqrt(segments * c)

    def gram(self, x1, mask1=None, x2=None, mask2=None):
        """The prior covariance of one logit between the series of ``x1`` and ``x2`` (default ``x1``): [N1, N2]."""
        a = self.embed(x1, mask1)
        b = a if x2 is None else self.embed(x2, mask2)
        r2 = (a.square().sum(-1)[:, None] + b.square().sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)
        return self.variance * KERNELS[self.kernel](r2 / self.lengthscale ** 2)

    def spec(self):
        numbers = {"lengthscale": self.lengthscale, "variance": self.variance}
        if self.features == "patch-mean":
            numbers["segments"] = self.segments
        return f"{self.name}:kernel={self.kernel},features={self.features}," + format_spec("", numbers)[1:]
