"""Correlated-GP attention (CGPT, Bui et al., UAI 2024): each layer's attention output is a correlated-GP draw.

``install(net, family, priors)`` gives every block of a ``Transformer`` the parameters of its
correlated GPs (``blocks.{i}.attn.cgp.*``) and replaces ``Transformer.attend`` with
``CGPTAttention``. Layer ``i`` then has one local sample site, ``blocks.{i}.attn.gp`` [H, T, dh]
per sequence inside the ``data`` plate, whose distribution is the model's own conditional
(``priors.cgpt``): mean s_q s_k A v with the asymmetric attention A = k(Q, S) K_S^-1 k(S, K),
plus a Gaussian draw whose covariance comes from the shared GP. CGPT has no variational
posterior; the ``cgpt`` guide draws from this same distribution and adds the CGP loss.

Parameters of block ``i`` (``blocks.{i}.attn.cgp.``): ``x0``, the third input of the shared GP, a
linear map of the token's queries, keys and values over all heads ([3d] -> [d]; the hook sees q, k
and v, not the block's input, and through a qkv projection of full rank d every linear map of that
input is one of these); ``log_scale_q`` and ``log_scale_k`` [H] (s_q and s_k, starting at 1); and
for ``cgpt-sparse`` ``seeds`` [H, M, dh]: the M inducing inputs are a learned mix of the tokens,
Z_m = sum_t softmax_t(x0_t . seed_m / sqrt(dh)) x0_t over the real tokens, free of the sequence
length, so padding stays exact (a mix with one weight per position needs one fixed length).
"""
import math

import pyro
import torch
import torch.nn as nn

from priors import AttentionRecord, CorrelatedContext, Site

from .gp_attention import lead_draws, site_name
from .layers import linear

CGPT_FAMILIES = ("cgpt", "cgpt-sparse")
DEFAULT_PRIOR = {"cgpt": "cgpt", "cgpt-sparse": "cgpt-sparse"}


class CGPTParameters(nn.Module):
    """One layer's correlated-GP parameters: the X0 projection, log s_q and log s_k [H], sparse seeds [H, M, dh]."""

    def __init__(self, d_model, heads, inducing=None):
        super().__init__()
        self.x0 = nn.Linear(3 * d_model, d_model)
        self.log_scale_q = nn.Parameter(torch.zeros(heads))
        self.log_scale_k = nn.Parameter(torch.zeros(heads))
        if inducing is not None:
            self.seeds = nn.Parameter(torch.randn(heads, inducing, d_model // heads))


def install(net, family, priors):
    """Give ``net`` (a ``Transformer``) the parameters and the ``CGPTAttention`` hook of ``family``.

    ``priors`` maps each site name to its (resolved) ``CGPTPrior`` or ``SparseCGPTPrior``.
    """
    cfg = net.cfg
    for i, block in enumerate(net.blocks):
        block.attn.cgp = CGPTParameters(cfg.d_model, cfg.heads, getattr(priors[site_name(i)], "inducing", None))
    net.attend = CGPTAttention(family, priors)


class CGPTAttention:
    """The attention hook of a CGPT model: ``attend(q, k, v, mask, layer, params)``."""

    def __init__(self, family, priors):
        self.family = family
        self.priors = priors  # site name -> CGPTPrior | SparseCGPTPrior

    def __call__(self, q, k, v, mask=None, layer=None, params=None):
        name, a = site_name(layer), f"blocks.{layer}.attn.cgp."
        tokens = torch.cat([z.transpose(-2, -3).flatten(-2) for z in (q, k, v)], -1)  # [..., T, 3d]
        x0 = linear(tokens, params[a + "x0.weight"], params[a + "x0.bias"])
        x0 = x0.unflatten(-1, (q.shape[-3], q.shape[-1])).transpose(-2, -3)  # [..., H, T, dh]
        shared = x0 if self.family == "cgpt" else inducing_inputs(x0, lead_draws(params[a + "seeds"], 3), mask)
        context = CorrelatedContext(q, k, shared, v, mask, params[a + "log_scale_q"], params[a + "log_scale_k"])
        fn = self.priors[name](Site(name, tuple(v.shape[-3:]), k.shape[-2], "attention", context=context))
        return pyro.sample(name, fn, infer={"attention": AttentionRecord(self.family, mask, prior=fn)})


def inducing_inputs(x0, seeds, mask):
    """Z [..., H, M, dh]: per seed, the softmax-weighted mean of the real tokens' X0 (weights x0 . seed / sqrt(dh))."""
    scores = x0 @ seeds.transpose(-1, -2) / math.sqrt(x0.shape[-1])  # [..., H, T, M]
    if mask is not None:
        scores = scores.masked_fill(~mask[..., None, :, None], -math.inf)
    return scores.softmax(-2).transpose(-1, -2) @ x0
