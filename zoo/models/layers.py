"""Tensor ops that broadcast over an optional leading sample dimension.

A parameter is either plain (``[out, in]``) or carries draws (``[S, out, in]``).
Activations carry the same leading ``S`` once any drawn parameter has touched
them. Plain parameters take exactly the ops an ordinary ``nn.Module`` would, so a
point-estimate model costs what plain PyTorch costs.
"""
import math

import torch
import torch.nn.functional as F


def _per_sample(v, x):
    """Reshape ``v`` of shape [S, d] so it broadcasts against ``x`` of shape [S, ..., d]."""
    return v.view(v.shape[0], *([1] * (x.dim() - 2)), v.shape[-1])


def linear(x, w, b=None):
    """``x @ w.T + b``; with drawn ``w`` [S, out, in], ``x`` must lead with the same S."""
    if w.dim() == 2:
        if b is None or b.dim() == 1:
            return F.linear(x, w, b)
        y = F.linear(x, w)
        return y + _per_sample(b, y)
    flat = x.reshape(w.shape[0], -1, x.shape[-1])
    if b is None:
        y = torch.bmm(flat, w.transpose(-1, -2))
    else:  # the bias add fused into the batched GEMM
        y = torch.baddbmm(b.unsqueeze(-2) if b.dim() == 2 else b, flat, w.transpose(-1, -2))
    return y.reshape(*x.shape[:-1], w.shape[-2])


def layer_norm(x, w, b, eps=1e-5):
    if w.dim() == 1 and b.dim() == 1:
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)
    x = F.layer_norm(x, (x.shape[-1],), eps=eps)
    w = _per_sample(w, x) if w.dim() == 2 else w
    b = _per_sample(b, x) if b.dim() == 2 else b
    return x * w + b


def embedding(tokens, w):
    if w.dim() == 2:
        return F.embedding(tokens, w)
    return w[:, tokens]


def softmax_attention(q, k, v, mask=None, layer=None, params=None):
    """Ordinary scaled dot-product attention; ``mask`` [B, T] is True for real keys.

    Leading sample dims are folded into the batch: SDPA's fused kernels take 4-D inputs
    and fall back to materializing every attention matrix otherwise.
    """
    shape = q.shape
    if q.dim() > 4:
        q, k, v = (z.reshape(-1, *z.shape[-3:]) for z in (q, k, v))
        if mask is not None:
            mask = mask.expand(*shape[:-3], mask.shape[-1]).reshape(-1, mask.shape[-1])
    attn_mask = None if mask is None else mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).reshape(shape)


def patches(x, mask, size):
    """[B, T, C] -> [B, ceil(T / size), size * C] tokens of ``size`` consecutive steps (the tail zero-padded).

    A token is real when any of its steps is; padded steps enter as zeros, so what padding holds never
    matters and a short series patches as it would alone.
    """
    b, t, c = x.shape
    if mask is not None:
        x = x.masked_fill(~mask[..., None], 0.0)
    pad = -t % size  # fewer than ``size`` steps, so every token keeps at least one real step of a full series
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
        mask = None if mask is None else F.pad(mask, (0, pad))
    x = x.reshape(b, (t + pad) // size, size * c)
    return x, None if mask is None else mask.reshape(b, -1, size).any(-1)


def sinusoidal_positions(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return table
