"""Sampling attention: each layer's attention is a Pyro sample site inside the ``data`` plate.

``SampledAttention`` replaces ``Transformer.attend``. For layer ``i`` it computes the
ordinary attention logits ``q k^T / sqrt(dh)`` and draws the site
``blocks.{i}.attn.weights`` of shape [H, T, T] per sequence from the layer's prior,
attaching the logits and mask as ``infer["attention"]``. The model never knows the
guide: an attention guide (``inference.guides.attention``) reads that context and draws
the value from its amortized posterior in this same forward pass, so the network
runs once per step. Without such a guide the rows are prior draws (a prior
predictive check).

Families: ``dirichlet`` draws normalized rows; ``bam`` (Bayesian Attention Modules)
draws unnormalized positive weights, normalized here over the real keys.
"""
import math

import pyro
import torch

from priors import AttentionRecord, KeyContext, Site

FAMILIES = ("dirichlet", "bam")


def site_name(layer):
    return f"blocks.{layer}.attn.weights"


def pair_mask(mask):
    """[B, 1, T, T] True where query and key are both real (None without a padding mask)."""
    return None if mask is None else mask[:, None, :, None] & mask[:, None, None, :]


class SampledAttention:
    """The attention hook of an attention-space model: ``attend(q, k, v, mask, layer, params)``."""

    def __init__(self, family, priors):
        self.family = family
        self.priors = priors  # site name -> AttentionPrior

    def __call__(self, q, k, v, mask=None, layer=None, params=None):
        name = site_name(layer)
        pairs = pair_mask(mask)
        logits = (q / math.sqrt(q.shape[-1])) @ k.transpose(-1, -2)
        if pairs is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], -math.inf)  # masked keys get no mass
        site = Site(name, tuple(logits.shape[-3:]), k.shape[-2], "attention", context=KeyContext(k, pairs))
        w = pyro.sample(name, self.priors[name](site),
                        infer={"attention": AttentionRecord(self.family, pairs, logits=logits)})
        if self.family == "bam":  # normalized after the product: the division runs on [T, dh], not [T, T]
            w = w if pairs is None else w * pairs
            return (w @ v) / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return w @ v
