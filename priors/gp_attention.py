"""Gaussian-process attention priors: kernels over a head's keys, and the GP prior at a sequence's tokens.

Two families of attention sites (role ``attention``) are served here:

- ``sgpa`` (Chen & Li 2023, standard and decoupled): each head's attention output is
  a function of the keys with a zero-mean GP prior, one independent GP per output
  dimension. ``SGPAPrior`` names the kernel (``exponential``: ``s^2 exp(x.y)`` after
  scaling by ARD lengthscales, whose posterior mean is softmax-free kernel attention;
  ``ard``: the ARD squared exponential) and the initial values of its hyperparameters,
  which the model holds as parameters (``blocks.{i}.attn.kernel.log_lengthscale`` [H, dh]
  and ``.log_scale`` [H]; fitted like any weight, or made sample sites with ``bayes``
  globs so that a ``PriorMap`` gives them priors). The site's distribution is
  ``GPPrior``: N(0, K) over each head's real tokens.
- ``kep-svgp`` (Chen et al. 2024): the inducing outputs ``u`` [H, r, r] of a head
  (r output dimensions, r inducing variables from the kernel SVD) have prior
  N(0, diag(lambda)^2), lambda the head's learned singular values; ``KEPPrior`` names
  the rank and the KSVD regularization weight.

Padding (``mask`` [..., T], True for real tokens) is exact: the kernel matrix is
restricted to the real tokens (padding rows and columns are the identity), padding
entries of a draw are exactly 0 and add nothing to densities or KLs.
"""
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions.utils import lazy_property

from core import linalg
from core.masks import restrict, zero_padding
from core.linalg import NotPositiveDefinite, tenfold
from .base import Prior, PriorError, format_spec, positive
from .spec import register

KERNELS = ("exponential", "ard")
MAX_JITTER = 1e-2  # relative to the mean diagonal: beyond this the matrix is not a kernel matrix worth factorizing


class CholeskyError(FloatingPointError):
    """A kernel matrix stayed non positive definite after every jitter; names the site."""


def cholesky(matrix, site):
    """Lower Cholesky factor of each [..., n, n] matrix by the library's jitter policy (``core.linalg.cholesky``).

    Jitter starts at 10 machine epsilons of the matrix's mean diagonal and grows tenfold up to
    ``MAX_JITTER``; each matrix gets the smallest jitter that works for it, so a batch factorizes
    as each matrix would alone. Raises ``CholeskyError`` naming ``site`` when one never does.
    Differentiable (``_CholeskyGrad``); the jitter is a constant.
    """
    try:
        with torch.no_grad():
            factor, _ = linalg.cholesky(matrix, tenfold(10 * torch.finfo(matrix.dtype).eps, MAX_JITTER))
    except NotPositiveDefinite as e:
        raise CholeskyError(
            f"the kernel matrix at site '{site}' holds non-finite values (an exponential kernel overflows when "
            f"q.k / lengthscale^2 passes ~88 in float32)" if e.jitter is None else
            f"the kernel matrix at site '{site}' is not positive definite even with jitter {e.jitter:.0e} x its "
            f"mean diagonal") from None
    return _CholeskyGrad.apply(matrix, factor) if matrix.requires_grad else factor


class _CholeskyGrad(torch.autograd.Function):
    """Returns the factor L of ``matrix``; backward is the usual formula (Murray 2016),
    ``sym(L^-T Phi(L^T dL) L^-1)``, with L^-1 from ``triangular_inverse``: torch's own backward
    runs batched triangular solves, which on CPU cost tens of times a matrix product of the same size."""

    @staticmethod
    def forward(ctx, matrix, factor):
        ctx.save_for_backward(factor)
        return factor.clone()

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        inverse = triangular_inverse(factor)
        phi = torch.tril(factor.transpose(-1, -2) @ grad)
        phi = phi - 0.5 * torch.diag_embed(phi.diagonal(dim1=-2, dim2=-1))
        g = inverse.transpose(-1, -2) @ phi @ inverse
        return 0.5 * (g + g.transpose(-1, -2)), None


def triangular_inverse(lower, leaf=8):
    """Inverse of lower-triangular [..., n, n] matrices by 2x2 block recursion, so the work is matrix products;
    blocks of ``leaf`` rows or fewer are solved directly."""
    n = lower.shape[-1]
    if n <= leaf:
        eye = torch.eye(n, dtype=lower.dtype, device=lower.device).expand_as(lower)
        return torch.linalg.solve_triangular(lower, eye, upper=False)
    h = n // 2
    out = lower.new_zeros(lower.shape)
    out[..., :h, :h] = top = triangular_inverse(lower[..., :h, :h], leaf)
    out[..., h:, h:] = bottom = triangular_inverse(lower[..., h:, h:], leaf)
    out[..., h:, :h] = -(bottom @ lower[..., h:, :h]) @ top
    return out


def lower_inverse(lower):
    """``triangular_inverse`` with its gradient written out, d(L^-1) = -L^-1 dL L^-1 (two products), instead of
    autograd through the block recursion's slices and copies."""
    return _LowerInverse.apply(lower) if lower.requires_grad else triangular_inverse(lower)


class _LowerInverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lower):
        inverse = triangular_inverse(lower)
        ctx.save_for_backward(inverse)
        return inverse

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        transposed = inverse.transpose(-1, -2)
        return -torch.tril(transposed @ grad @ transposed)


def per_head(value, event_dims):
    """A per-head hyperparameter [H, *e] -> [H, 1, *e], or drawn [S, H, *e] -> [S, 1, H, 1, *e]:
    it broadcasts against inputs [H, n, d], [B, H, n, d] and [S, B, H, n, d]."""
    value = value.unsqueeze(-1 - event_dims)
    return value.unsqueeze(1) if value.dim() > 2 + event_dims else value


def kernel_matrix(kind, x1, x2, log_lengthscale, log_scale):
    """k(x1, x2) for [..., H, n, d] inputs: ``exponential`` s^2 exp(x1.x2) or ``ard`` s^2 exp(-|x1 - x2|^2 / 2),
    after dividing every input dimension by its lengthscale; ``log_lengthscale`` [(S,) H, d], ``log_scale`` [(S,) H]."""
    inv = per_head(log_lengthscale, 1).neg().exp()
    z1 = x1 * inv
    z2 = z1 if x2 is x1 else x2 * inv
    dots = z1 @ z2.transpose(-1, -2)
    if kind == "ard":
        dots = (dots - 0.5 * z1.pow(2).sum(-1, keepdim=True) - 0.5 * z2.pow(2).sum(-1).unsqueeze(-2)).clamp_max(0)
    return (dots + 2 * per_head(log_scale, 0).unsqueeze(-1)).exp()  # the scale inside the exp: one pass


class GPPrior(dist.TorchDistribution):
    """Independent zero-mean Gaussians N(0, K_h) over a head's real tokens, one per output dimension.

    ``covariance`` [..., H, T, T] is already restricted to the real tokens (``restrict``);
    the event is [H, T, dims]; ``site`` names the sample site in Cholesky errors.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True

    def __init__(self, covariance, dims, mask=None, site="", validate_args=False):
        self.covariance, self.dims, self.mask, self.site = covariance, dims, mask, site
        heads, t = covariance.shape[-3], covariance.shape[-1]
        super().__init__(covariance.shape[:-3], torch.Size((heads, t, dims)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GPPrior, _instance)
        batch_shape = torch.Size(batch_shape)
        new.covariance = self.covariance.expand(batch_shape + self.covariance.shape[-3:])
        new.mask = None if self.mask is None else self.mask.expand(batch_shape + self.mask.shape[-1:])
        new.dims, new.site = self.dims, self.site
        super(GPPrior, new).__init__(batch_shape, self.event_shape, validate_args=False)
        return new

    @lazy_property
    def scale_tril(self):
        return cholesky(self.covariance, self.site)

    @property
    def mean(self):
        return self.covariance.new_zeros(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape=torch.Size()):
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.covariance.dtype,
                          device=self.covariance.device)
        return zero_padding(self.scale_tril @ eps, self.mask)

    def log_prob(self, value):
        z = torch.linalg.solve_triangular(self.scale_tril, value, upper=False)
        real = self.event_shape.numel() if self.mask is None else self.mask.sum(-1) * self.event_shape[0] * self.dims
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum((-2, -1)) * self.dims
        return -0.5 * z.pow(2).sum((-3, -2, -1)) - log_det - 0.5 * real * math.log(2 * math.pi)


@register
class SGPAPrior(Prior):
    """GP prior of sparse-GP attention: the ``kernel`` and its initial hyperparameters.

    ``lengthscale`` (default ``dh ** 0.25``, so the exponential kernel starts as
    ``s^2 exp(q.k / sqrt(dh))``, scaled unnormalized softmax logits) and ``scale`` s (the
    signal standard deviation; 0.1 was chosen by cross-validation on ItalyPowerDemand's
    training set, see docs/gp-attention.md) initialize the model's per-head parameters.
    """

    name = "sgpa"
    family = "sgpa"
    serves = ("sgpa", "sgpa-decoupled")

    def __init__(self, kernel="exponential", lengthscale=None, scale=0.1):
        if kernel not in KERNELS:
            raise PriorError(f"{self.name}: kernel '{kernel}' does not exist; valid: {', '.join(KERNELS)}")
        self.kernel = kernel
        self.lengthscale = None if lengthscale is None else positive("lengthscale", lengthscale, self.name)
        self.scale = positive("scale", scale, self.name)

    def initial_lengthscale(self, dims):
        return self.lengthscale if self.lengthscale is not None else dims ** 0.25

    def matrix(self, x1, x2, log_lengthscale, log_scale):
        return kernel_matrix(self.kernel, x1, x2, log_lengthscale, log_scale)

    def __call__(self, site):
        if site.role != "attention":
            raise PriorError(f"{self.name} is an attention prior; site '{site.name}' is a {site.role} site")
        c = site.context
        covariance = restrict(self.matrix(c.keys, c.keys, c.log_lengthscale, c.log_scale), c.mask)
        return GPPrior(covariance, site.shape[-1], c.mask, site.name)

    def spec(self):
        params = {"kernel": self.kernel, **({"lengthscale": self.lengthscale} if self.lengthscale else {}),
                  "scale": self.scale}
        return self.name + ":" + ",".join(f"{k}={v if isinstance(v, str) else format(v, 'g')}"
                                          for k, v in params.items())


@register
class KEPPrior(Prior):
    """Prior of kernel-eigen-pair attention: inducing outputs u ~ N(0, diag(lambda)^2) per head and output dim.

    ``rank`` r is the number of KSVD eigenpairs (and the GP's output dimensions);
    ``samples`` (default ``10 * rank``) evenly spaced tokens build the data-dependent
    projections; ``ksvd`` weighs the KSVD regularizer (a ``pyro.factor`` in the model).
    """

    name = "kep"
    family = "kep-svgp"
    serves = ("kep-svgp",)

    def __init__(self, rank=8, samples=None, ksvd=1.0):
        self.rank = whole_number("rank", rank, self.name)
        self.samples = whole_number("samples", samples if samples is not None else 10 * self.rank, self.name)
        self.ksvd = float(ksvd)
        if not (self.ksvd >= 0 and math.isfinite(self.ksvd)):
            raise PriorError(f"{self.name}: parameter 'ksvd' must be >= 0 and finite, got {ksvd}")

    def __call__(self, site):
        if site.role != "attention":
            raise PriorError(f"{self.name} is an attention prior; site '{site.name}' is a {site.role} site")
        singular = site.context.singular_values  # [H, r], or drawn [S, H, r]
        if singular.dim() == 3:
            singular = singular.unsqueeze(1)  # [S, 1, H, r]: broadcasts over the data plate
        scale = torch.diag_embed(singular.unsqueeze(-2).expand(*singular.shape[:-1], self.rank, self.rank))
        return dist.MultivariateNormal(scale.new_zeros(scale.shape[:-1]), scale_tril=scale).to_event(2)

    def spec(self):
        return format_spec(self.name, {"rank": self.rank, "samples": self.samples, "ksvd": self.ksvd})


def whole_number(name, value, prior):
    """A count parameter of ``prior``: a whole number >= 1 (5.0 reads as 5), or a one-line PriorError naming it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise PriorError(f"{prior}: parameter '{name}' must be a whole number >= 1, got {value!r}")
    return value
