"""Attention priors, and the masked Dirichlet that attention rows are drawn from.

An attention site (role ``attention``) is one layer's attention for one sequence:
shape ``(heads, queries, keys)``, every row a point on the simplex. Its
``Site.context`` holds ``keys`` ([..., H, T, dh]) and ``mask`` ([..., 1 or H, T, T],
True where a (query, key) pair is real), so a prior may depend on the keys but
never on the queries. Masked keys carry no mass and padding queries (rows with
no real key) are absent: they sample as zeros and add nothing to densities or KLs.

Two families: ``dirichlet`` priors return a distribution over the normalized
rows; ``bam`` priors (Bayesian Attention Modules, Fan et al. 2020) return a Gamma
(``MaskedGamma``) over unnormalized positive weights that the model normalizes after
sampling.
"""
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import Gamma, Weibull, register_kl

from .kernels import gamma
from .base import Prior, PriorError, flag, format_spec, positive
from .spec import register

EULER = 0.5772156649015329


class MaskedDirichlet(dist.TorchDistribution):
    """Dirichlet over the entries of the last axis where ``mask`` is True; the rest are exactly 0.

    ``mask=None`` means every entry is real (the fast path: no masking work at all).
    Sampled as normalized Gamma variates (how torch's ``Dirichlet.rsample`` samples),
    so gradients reach the concentration by implicit reparameterization (torch's
    approximation of ``dg/dalpha``). On the CPU, draws, normalization and gradient
    are one fused pass of ``priors.kernels.gamma``'s kernels; elsewhere torch's kernels.
    Sampling runs in float32 whatever the input dtype: half precision Gamma sampling
    underflows and float64 buys nothing.
    """

    arg_constraints = {"concentration": constraints.positive}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, mask=None, validate_args=False):
        if mask is not None:
            shape = torch.broadcast_shapes(concentration.shape, mask.shape)
            mask = mask.expand(shape)
            # Masked entries get concentration 1 so that no lgamma/digamma ever sees a zero or NaN.
            concentration = torch.where(mask, concentration, torch.ones_like(concentration))
        self.concentration, self.mask = concentration, mask
        shape = concentration.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MaskedDirichlet, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.concentration = self.concentration.expand(shape)
        new.mask = None if self.mask is None else self.mask.expand(shape)
        super(MaskedDirichlet, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        return new

    def masked(self, t):
        """``t`` with masked entries zeroed (``t`` itself without a mask)."""
        return t if self.mask is None else t * self.mask

    def real_rows(self, t):
        """``t`` (per row) with padding rows, which have no real entry, set to 0."""
        return t if self.mask is None else torch.where(self.mask.any(-1), t, torch.zeros_like(t))

    @property
    def mean(self):
        a = self.masked(self.concentration)
        return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)

    def rsample(self, sample_shape=torch.Size()):
        alpha = self.concentration.expand(self._extended_shape(sample_shape))
        mask = None if self.mask is None else self.mask.expand(alpha.shape)
        if torch.is_grad_enabled() and alpha.requires_grad:
            return _NormalizedGamma.apply(alpha, mask)
        a = alpha.detach().float()
        return (gamma.dirichlet_rows(a, mask, False)[0] if gamma.is_fast(a) else _normalized_gamma(a, mask)[0]
                ).to(alpha.dtype)

    def log_prob(self, value):
        a = self.concentration
        log_x = value.log() if self.mask is None else torch.where(self.mask, value, torch.ones_like(value)).log()
        lp = (torch.lgamma(self.masked(a).sum(-1)) - self.masked(torch.lgamma(a)).sum(-1)
              + self.masked((a - 1) * log_x).sum(-1))
        return self.real_rows(lp)


def _normalized_gamma(a, m):
    """torch's kernels: (rows ``g / sum(g)`` of float32 Gamma draws, zero where ``m`` is False; draws; totals)."""
    g = gamma.standard_gamma(a)  # torch clamps draws at the smallest normal float, so g > 0
    kept = g if m is None else g * m
    total = kept.sum(-1, keepdim=True)
    total = total if m is None else torch.where(total > 0, total, torch.ones_like(total))  # padding rows stay 0
    return kept / total, g, total


class _NormalizedGamma(torch.autograd.Function):
    """Dirichlet draw ``x = g / sum(g)``, ``g_j ~ Gamma(alpha_j, 1)`` (0 where ``m`` is False), in float32.

    Backward is the implicit reparameterization gradient, dg/dalpha chained with the
    normalization by hand (``dL/dg_j = (dL/dx_j - sum_i dL/dx_i x_i) / sum(g)``) in one
    pass. The fast kernels compute ``dg/dalpha / sum(g)`` with the draw; torch's
    ``_standard_gamma_grad`` is called in the backward otherwise.
    """

    @staticmethod
    def forward(ctx, alpha, m):
        a = alpha.float()
        ctx.dtype, ctx.fast = alpha.dtype, gamma.is_fast(a)
        if ctx.fast:
            x, factor = gamma.dirichlet_rows(a, m, True)
            ctx.save_for_backward(x, factor)
        else:
            x, g, total = _normalized_gamma(a, m)
            ctx.save_for_backward(a, g, x, total, m)
        return x.to(alpha.dtype)

    @staticmethod
    def backward(ctx, grad):
        if ctx.fast:
            return gamma.dirichlet_rows_grad(grad.float(), *ctx.saved_tensors).to(ctx.dtype), None
        a, g, x, total, m = ctx.saved_tensors
        grad = grad.float()
        grad_g = (grad - (grad * x).sum(-1, keepdim=True)) / total
        grad_a = grad_g * gamma.standard_gamma_grad(a, g)
        return (grad_a if m is None else grad_a * m).to(ctx.dtype), None


class _DirichletKL(torch.autograd.Function):
    """Row-wise closed-form KL(Dir(a) || Dir(b)) over the entries where ``m`` is True, with a hand-written backward.

    ``KL = lgamma(A) - lgamma(B) + sum_j [lgamma(b_j) - lgamma(a_j) + (a_j - b_j) psi(a_j)] - (A - B) psi(A)``
    (A, B the row totals), so ``dKL/da_j = (a_j - b_j) psi'(a_j) - (A - B) psi'(A)`` and
    ``dKL/db_j = psi(b_j) - psi(B) - psi(a_j) + psi(A)``: two special-function passes
    over the [B, H, T, T] rows where autograd's chain would take about twice as many,
    each one fused kernel on the CPU (``priors.kernels.gamma``).
    """

    @staticmethod
    def forward(ctx, a, b, m):
        ctx.b_shape = b.shape
        ctx.fast = gamma.is_fast(a, b)
        if ctx.fast:
            ctx.save_for_backward(a, b, m)
            return gamma.dirichlet_kl(a, b, m)
        mask = (lambda t: t) if m is None else (lambda t: t * m)
        b = _compact(b)  # a symmetric prior's concentration is one number expanded: take lgamma of it once
        b_sum = b.expand(*b.shape[:-1], a.shape[-1]).sum(-1) if m is None else mask(b.expand_as(a)).sum(-1)
        a_sum = mask(a).sum(-1)
        psi_a = torch.digamma(a)
        terms = mask(torch.lgamma(b) - torch.lgamma(a) + (a - b) * psi_a).sum(-1)
        ctx.save_for_backward(a, b, m, a_sum, b_sum, psi_a)
        return torch.lgamma(a_sum) - torch.lgamma(b_sum) + terms - (a_sum - b_sum) * torch.digamma(a_sum)

    @staticmethod
    def backward(ctx, grad):
        if ctx.fast:
            a, b, m = ctx.saved_tensors
            grad_a, grad_b = gamma.dirichlet_kl_grad(grad, a, b, m, ctx.needs_input_grad[1])
            return grad_a, (None if grad_b is None else grad_b.sum_to_size(ctx.b_shape)), None
        a, b, m, a_sum, b_sum, psi_a = ctx.saved_tensors
        mask = (lambda t: t) if m is None else (lambda t: t * m)
        grad = grad[..., None]
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = mask(grad * ((a - b) * torch.polygamma(1, a)
                                  - ((a_sum - b_sum) * torch.polygamma(1, a_sum))[..., None]))
        if ctx.needs_input_grad[1]:
            grad_b = mask(grad * (torch.digamma(b) - psi_a
                                  + (torch.digamma(a_sum) - torch.digamma(b_sum))[..., None]))
            grad_b = grad_b.sum_to_size(ctx.b_shape)
        return grad_a, grad_b, None


def _compact(t):
    """``t`` without the copies an ``expand`` made: each stride-0 dimension indexed down to size 1."""
    return t[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in t.stride())]


@register_kl(MaskedDirichlet, MaskedDirichlet)
def _kl_masked_dirichlet(p, q):
    """Closed form (see ``_DirichletKL``), summed over the real entries of each row; padding rows give 0.

    Both must share the mask (an attention site's posterior and prior do).
    """
    return p.real_rows(_DirichletKL.apply(p.concentration, q.concentration, p.mask))


@register_kl(Weibull, Gamma)
def _kl_weibull_gamma(p, q):
    """KL(Weibull(k, lam) || Gamma(alpha, beta)), as in Bayesian Attention Modules (Fan et al. 2020)."""
    return _weibull_gamma_terms(p.concentration, p.scale.log(), q.concentration, q.rate)


def _weibull_gamma_terms(k, log_scale, alpha, beta):
    """Elementwise KL(Weibull(k, exp(log_scale)) || Gamma(alpha, beta)) in torch ops."""
    return (torch.log(k) - alpha * log_scale - EULER + alpha * EULER / k - 1 - alpha * torch.log(beta)
            + torch.lgamma(alpha) + beta * log_scale.exp() * torch.exp(torch.lgamma(1 + 1 / k)))


class _AttentionWeights(dist.TorchDistribution):
    """Independent positive weights over an attention site's [..., H, T, T] entries where ``mask`` is True.

    The last three dimensions are the event (one attention site of one sequence); entries where
    ``mask`` is False are left out of densities and KLs (their values are drawn but never used).
    """

    support = constraints.positive

    def _setup(self, shape, mask):
        self.mask = mask
        super().__init__(shape[:-3], shape[-3:], validate_args=False)

    def _masked_sum(self, t):
        t = t if self.mask is None else torch.where(self.mask, t, torch.zeros_like(t))
        return t.sum((-1, -2, -3))


class MaskedWeibull(_AttentionWeights):
    """BAM's posterior: weights ``~ Weibull(concentration, exp(log_scale))`` over an attention site's entries.

    Parameterized by ``log_scale`` so that tiny weights never underflow before they are used. On the
    CPU a draw is one fused pass of ``priors.kernels.gamma`` (``exp(log_scale) E^(1/k)``, E exponential),
    and the KL to ``MaskedGamma`` is one fused pass per direction; elsewhere torch ops.
    """

    arg_constraints = {"log_scale": constraints.real, "concentration": constraints.positive}
    has_rsample = True

    def __init__(self, log_scale, concentration, mask=None, validate_args=False):
        self.log_scale, self.concentration = log_scale, concentration
        shape = torch.broadcast_shapes(log_scale.shape, concentration.shape, *([] if mask is None else [mask.shape]))
        self._setup(shape, mask)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MaskedWeibull, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.log_scale, new.concentration = self.log_scale.expand(shape), self.concentration
        new._setup(shape, self.mask)
        return new

    @property
    def mean(self):
        return torch.exp(self.log_scale + torch.lgamma(1 + 1 / self.concentration))

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        log_scale, k = self.log_scale.expand(shape), self.concentration.expand(shape)
        if gamma.is_fast(log_scale, k):
            inv_k = (1 / k[..., :1]).reshape(-1)  # k is constant along keys
            rows = log_scale.reshape(-1, shape[-1])
            if torch.is_grad_enabled() and (log_scale.requires_grad or inv_k.requires_grad):
                return _WeibullDraw.apply(rows, inv_k).view(shape)
            return gamma.weibull_draws(rows, inv_k)[0].view(shape)
        e = torch.empty_like(log_scale).exponential_()
        return torch.exp(log_scale + e.log() / k)

    def log_prob(self, value):
        k, z = self.concentration, value.log() - self.log_scale
        return self._masked_sum(torch.log(k) - self.log_scale + (k - 1) * z - torch.exp(k * z))


class MaskedGamma(_AttentionWeights):
    """BAM's prior: weights ``~ Gamma(concentration, rate)`` over an attention site's entries."""

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}

    def __init__(self, concentration, rate, mask=None, validate_args=False):
        self.concentration, self.rate = concentration, rate
        shape = torch.broadcast_shapes(concentration.shape, rate.shape, *([] if mask is None else [mask.shape]))
        self._setup(shape, mask)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MaskedGamma, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.concentration, new.rate = self.concentration.expand(shape), self.rate.expand(shape)
        new._setup(shape, self.mask)
        return new

    @property
    def mean(self):
        return (self.concentration / self.rate).expand(self.batch_shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            alpha = self.concentration.expand(shape)
            return (gamma.standard_gamma(alpha.float()).to(alpha.dtype) / self.rate.expand(shape))

    def log_prob(self, value):
        a, b = self.concentration, self.rate
        return self._masked_sum(a * torch.log(b) - torch.lgamma(a) + (a - 1) * value.log() - b * value)


class _WeibullDraw(torch.autograd.Function):
    """Weibull rows ``exp(log_scale) E^(1/k)`` (fast kernels), differentiable in log_scale and 1/k."""

    @staticmethod
    def forward(ctx, log_scale, inv_k):
        x, t = gamma.weibull_draws(log_scale, inv_k)
        ctx.save_for_backward(x, t, inv_k)
        return x

    @staticmethod
    def backward(ctx, grad):
        return gamma.weibull_draws_grad(grad, *ctx.saved_tensors)


class _WeibullGammaKL(torch.autograd.Function):
    """Row sums of KL(Weibull || Gamma) with a hand-written backward (fast kernels); see ``weibull_gamma_kl``."""

    @staticmethod
    def forward(ctx, log_scale, k, alpha, beta, mask, per):
        ctx.save_for_backward(log_scale, k, alpha, beta, mask)
        ctx.per = per
        return gamma.weibull_gamma_kl(log_scale, k, alpha, per, beta, mask)

    @staticmethod
    def backward(ctx, grad):
        log_scale, k, alpha, beta, mask = ctx.saved_tensors
        grads = gamma.weibull_gamma_kl_grad(grad, log_scale, k, alpha, ctx.per, beta, mask)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None)


@register_kl(MaskedWeibull, MaskedGamma)
def _kl_masked_weibull_gamma(p, q):
    """Closed form summed over the real entries of the site (both share the mask, as a site's posterior and
    prior do). The fast kernels need k constant along keys and queries' rates constant along keys
    (BAM's are): they keep a prior that depends on the keys alone once per head, not per query."""
    shape = p.batch_shape + p.event_shape
    log_scale, k = p.log_scale.expand(shape), p.concentration.expand(shape)
    alpha, beta = q.concentration.expand(shape), q.rate.expand(shape)
    if gamma.is_fast(log_scale, k, alpha, beta) and k.stride(-1) == 0 and beta.stride(-1) == 0:
        width = shape[-1]
        per = shape[-2] if alpha.stride(-2) == 0 else 1  # a prior that depends on the keys alone
        alpha_rows = (alpha[..., :1, :] if per > 1 else alpha).reshape(-1, width)
        mask = None if p.mask is None else p.mask.expand(shape).reshape(-1, width)
        rows = _WeibullGammaKL.apply(log_scale.reshape(-1, width), k[..., 0].reshape(-1), alpha_rows,
                                     beta[..., 0].reshape(-1), mask, per)
        return rows.view(shape[:-1]).sum((-1, -2))
    return p._masked_sum(_weibull_gamma_terms(k, log_scale, alpha, beta))


def real_keys(mask, keys):
    """Number of real keys per row, [..., T, 1] (or a scalar without a mask)."""
    return torch.tensor(float(keys.shape[-2])) if mask is None else mask.sum(-1, keepdim=True).to(keys.dtype)


def key_scores(keys, mask):
    """Log-weights over keys from the keys alone: similarity of each real key to their mean, [..., H, 1, T]."""
    if mask is None:
        mean_key = keys.mean(-2, keepdim=True)
    else:
        key_mask = mask.any(-2, keepdim=True)  # [..., 1|H, 1, T]: keys that some query may attend to
        w = key_mask.to(keys.dtype).transpose(-1, -2)  # [..., 1|H, T, 1]
        mean_key = (keys * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(1)
    scores = (mean_key @ keys.transpose(-1, -2)) / math.sqrt(keys.shape[-1])
    return (scores if mask is None else scores.masked_fill(~key_mask, -math.inf)).log_softmax(-1)


class AttentionPrior(Prior):
    """Base class of attention priors; ``family`` says which attention model they serve."""

    family = ""

    def context(self, site):
        """The site's keys, its mask (None: every pair is real) and the full value shape [..., H, T, T]."""
        if site.role != "attention":
            raise PriorError(f"{self.name} is an attention prior; site '{site.name}' is a {site.role} site")
        keys, mask = site.context.keys, site.context.mask
        return keys, mask, keys.shape[:-3] + tuple(site.shape)


@register
class SymmetricDirichlet(AttentionPrior):
    """Every attention row ~ Dirichlet(concentration, ..., concentration) over its real keys.

    ``concentration`` 1 is uniform on the simplex; below 1 favours sparse rows.
    """

    name = "dirichlet"
    family = "dirichlet"

    def __init__(self, concentration=1.0):
        self.concentration = positive("concentration", concentration, self.name)

    def __call__(self, site):
        keys, mask, shape = self.context(site)
        alpha = torch.full((), self.concentration, dtype=keys.dtype, device=keys.device)
        return MaskedDirichlet(alpha.expand(shape), mask).to_event(2)

    def spec(self):
        return format_spec(self.name, {"concentration": self.concentration})


@register
class KeyDirichlet(AttentionPrior):
    """Contextual Dirichlet: concentration ``strength * n * softmax(key scores) + floor``.

    The key scores are computed from the keys alone (each real key against the
    mean real key, see ``key_scores``), so the prior favours typical keys for
    every query; ``n`` is the number of real keys, so ``strength`` 1 has the total
    concentration of a uniform Dirichlet(1).
    """

    name = "key-dirichlet"
    family = "dirichlet"

    def __init__(self, strength=1.0, floor=0.1):
        self.strength = positive("strength", strength, self.name)
        self.floor = positive("floor", floor, self.name)

    def __call__(self, site):
        keys, mask, shape = self.context(site)
        n = real_keys(mask, keys)
        alpha = self.strength * n * key_scores(keys, mask).exp() + self.floor
        return MaskedDirichlet(alpha.expand(shape), mask).to_event(2)

    def spec(self):
        return format_spec(self.name, {"strength": self.strength, "floor": self.floor})


@register
class GammaAttention(AttentionPrior):
    """BAM prior: unnormalized weight ``w_ij ~ Gamma(strength * n * pi_j + floor, strength * n)``.

    ``pi`` is the key-dependent weight from ``key_scores`` (``contextual=True``) or
    uniform over the real keys, so the prior mean of each weight is about
    ``pi_j``; masked pairs are excluded from densities and KLs.
    """

    name = "bam-gamma"
    family = "bam"

    def __init__(self, strength=1.0, floor=0.1, contextual=True):
        self.strength = positive("strength", strength, self.name)
        self.floor = positive("floor", floor, self.name)
        self.contextual = flag("contextual", contextual, self.name)

    def __call__(self, site):
        keys, mask, shape = self.context(site)
        n = real_keys(mask, keys).clamp_min(1)
        pi = key_scores(keys, mask).exp() if self.contextual else 1 / n
        return MaskedGamma((self.strength * n * pi + self.floor).expand(shape), (self.strength * n).expand(shape), mask)

    def spec(self):
        return format_spec(self.name, {"strength": self.strength, "floor": self.floor,
                                       "contextual": self.contextual})
