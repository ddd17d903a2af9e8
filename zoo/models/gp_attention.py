"""Gaussian-process attention: each layer's attention is a GP posterior, drawn as a local site in the ``data`` plate.

``install(net, family, priors)`` gives every block of a ``Transformer`` the parameters of
its kernel and replaces ``Transformer.attend`` with ``GPAttention``. Layer ``i`` then has
one sample site, ``blocks.{i}.attn.gp``, per sequence:

- ``sgpa`` and ``sgpa-decoupled`` (Chen & Li 2023): the site is the attention output
  [H, T, dh], with prior N(0, K) per head and output dimension, K the kernel matrix of
  the head's keys (queries are the keys: a GP needs a symmetric kernel, so the query
  projection is not used). The context handed to a guide holds the keys, the values
  (the variational mean of the inducing outputs), the mask and the kernel.
- ``kep-svgp`` (Chen et al. 2024): the site is the r inducing outputs ``u`` [H, r, r] of
  the head's SVGP on the kernel SVD's eigenfunctions; the attention output is
  ``((e(q) + r(k)) / lambda) u^T`` followed by a linear map from r to dh, and a
  ``pyro.factor`` adds the KSVD regularizer.

Without a GP guide the sites are prior draws (a prior predictive check). Kernel
parameters are ordinary network parameters (``blocks.{i}.attn.kernel.*``,
``blocks.{i}.attn.kep.*``): fitted as point estimates, or made sample sites with
``bayes`` globs so that a ``PriorMap`` gives them priors.
"""
import math

import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F

from priors import AttentionRecord, EigenContext, KernelContext, Site
from core.masks import zero_padding

from .errors import ModelError
from .layers import linear

GP_FAMILIES = ("sgpa", "sgpa-decoupled", "kep-svgp")
DEFAULT_PRIOR = {"sgpa": "sgpa", "sgpa-decoupled": "sgpa", "kep-svgp": "kep"}


def site_name(layer):
    return f"blocks.{layer}.attn.gp"


class Kernel(nn.Module):
    """One layer's kernel hyperparameters: ARD log-lengthscales [H, dh] and log signal scales [H]."""

    def __init__(self, heads, dims, lengthscale, scale):
        super().__init__()
        self.log_lengthscale = nn.Parameter(torch.full((heads, dims), math.log(lengthscale)))
        self.log_scale = nn.Parameter(torch.full((heads,), math.log(scale)))


class KernelEigenPairs(nn.Module):
    """One layer's kernel SVD: projections ``we``, ``wr`` [H, s, r], log singular values [H, r], ``out`` r -> dh.

    Initialized as the authors do: orthogonal projections, singular values exp(-2U), U ~ U(0, 1).
    """

    def __init__(self, heads, dims, rank, samples):
        super().__init__()
        self.we = nn.Parameter(nn.init.orthogonal_(torch.empty(heads, samples, rank)))
        self.wr = nn.Parameter(nn.init.orthogonal_(torch.empty(heads, samples, rank)))
        self.log_singular = nn.Parameter(-2 * torch.rand(heads, rank))
        self.out = nn.Linear(rank, dims)


def install(net, family, priors):
    """Give ``net`` (a ``Transformer``) the kernel parameters and the ``GPAttention`` hook of ``family``.

    ``priors`` maps each site name to its (resolved) ``SGPAPrior`` or ``KEPPrior``.
    """
    cfg = net.cfg
    dims = cfg.d_model // cfg.heads
    for i, block in enumerate(net.blocks):
        prior = priors[site_name(i)]
        if family == "kep-svgp":
            if prior.rank > cfg.max_tokens:
                raise ModelError(f"kep rank={prior.rank} is larger than the sequence: the model takes at most "
                                 f"{cfg.max_tokens} tokens (max_len={cfg.max_len}, patch={cfg.patch})")
            block.attn.kep = KernelEigenPairs(cfg.heads, dims, prior.rank, prior.samples)
        else:
            block.attn.kernel = Kernel(cfg.heads, dims, prior.initial_lengthscale(dims), prior.scale)
    net.attend = GPAttention(family, priors)


class GPAttention:
    """The attention hook of a GP-attention model: ``attend(q, k, v, mask, layer, params)``."""

    def __init__(self, family, priors):
        self.family = family
        self.priors = priors  # site name -> SGPAPrior | KEPPrior

    def __call__(self, q, k, v, mask=None, layer=None, params=None):
        if self.family == "kep-svgp":
            return self.kernel_eigen_pairs(q, k, v, mask, layer, params)
        name, prior = site_name(layer), self.priors[site_name(layer)]
        a = f"blocks.{layer}.attn.kernel."
        log_lengthscale, log_scale = params[a + "log_lengthscale"], params[a + "log_scale"]
        context = KernelContext(k, mask, log_lengthscale, log_scale)
        fn = prior(Site(name, tuple(v.shape[-3:]), k.shape[-2], "attention", context=context))
        return pyro.sample(name, fn, infer={"attention": AttentionRecord(
            self.family, mask, prior=fn, keys=k, values=zero_padding(v, mask),
            kernel=lambda x1, x2: prior.matrix(x1, x2, log_lengthscale, log_scale))})

    def kernel_eigen_pairs(self, q, k, v, mask, layer, params):
        """KEP-SVGP: scores e(q), r(k) on data-dependent projections, inducing outputs u, f = (e + r) / lambda u^T."""
        name, prior = site_name(layer), self.priors[site_name(layer)]
        a = f"blocks.{layer}.attn.kep."
        we, wr = (lead_draws(params[a + w], 3) for w in ("we", "wr"))
        spaced = spaced_tokens(v, mask, prior.samples).transpose(-1, -2)  # [..., H, dh, s]
        e = F.normalize(q, dim=-1) @ (spaced @ we)  # [..., H, T, r]
        r = F.normalize(k, dim=-1) @ (spaced @ wr)
        singular = params[a + "log_singular"].exp()  # [(S,) H, r]
        lam = lead_draws(singular, 2).unsqueeze(-2)  # [(S, 1,) H, 1, r]
        fn = prior(Site(name, (q.shape[-3], prior.rank, prior.rank), prior.rank, "attention",
                        context=EigenContext(singular, mask))).expand(q.shape[:-3])  # [(S,) B]
        u = pyro.sample(name, fn, infer={"attention": AttentionRecord(self.family, mask, prior=fn)})
        f = zero_padding((e + r) / lam @ u.transpose(-1, -2), mask)
        if prior.ksvd:
            pyro.factor(f"blocks.{layer}.attn.ksvd", -prior.ksvd * ksvd_objective(e, r, lam, we, wr, mask).pow(2))
        return linear(f, params[a + "out.weight"], params[a + "out.bias"])


def lead_draws(value, dims):
    """A parameter of ``dims`` dims, or drawn with a leading S: [S, ...] -> [S, 1, ...] to broadcast over the batch."""
    return value.unsqueeze(1) if value.dim() > dims else value


def spaced_tokens(x, mask, count):
    """``count`` evenly spaced real tokens per sequence, repeated if it has fewer: [..., H, T, d] -> [..., H, count, d].

    Spaced over the real tokens alone, so a padded sequence picks what it would pick alone.
    """
    t = x.shape[-2]
    steps = torch.linspace(0, 1, count, device=x.device)
    if mask is None:
        index = (steps * (t - 1)).round().long().expand(*x.shape[:-3], count)
    else:
        real = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)  # real positions first, in order
        picks = (steps * (mask.sum(-1, keepdim=True) - 1).clamp_min(0)).round().long()  # [B, count]
        index = real.gather(-1, picks).expand(*x.shape[:-3], count)
    index = index[..., None, :, None].expand(*x.shape[:-2], count, x.shape[-1])
    return x.gather(-2, index)


def ksvd_objective(e, r, lam, we, wr, mask):
    """Per sequence, the KSVD objective the authors drive to zero: mean |e / sqrt(lambda)|^2 / 2 + mean
    |r / sqrt(lambda)|^2 / 2 - tr(mean over heads of we^T wr), means over heads and real tokens."""
    def mean_norm(s):
        sq = zero_padding((s / lam.sqrt()).pow(2), mask).sum((-3, -1))  # [..., T]
        tokens = s.shape[-2] if mask is None else mask.sum(-1).to(s.dtype)
        return sq.sum(-1) / (tokens * s.shape[-3])
    trace = (we * wr).sum((-3, -2, -1)) / we.shape[-3]  # tr(we^T wr) summed over heads, then averaged
    return 0.5 * mean_norm(e) + 0.5 * mean_norm(r) - trace
