"""Padding masks, spelled once. A token mask [..., T] is True at real tokens; ``None`` means every token is real,
and then every helper here is the identity (no masking work at all)."""
import torch


def pair_mask(mask, rows=True, cols=True):
    """[..., 1, T, T] True where the row (query) and column (key) tokens are both real; with ``rows`` or ``cols``
    False, one side only. None without a mask."""
    if mask is None:
        return None
    row = mask[..., None, :, None] if rows else True
    col = mask[..., None, None, :] if cols else True
    return row & col


def masked(matrix, pairs):
    """``matrix`` zeroed outside ``pairs`` (a ``pair_mask``)."""
    return matrix if pairs is None else matrix * pairs.to(matrix.dtype)


def restrict(matrix, mask):
    """A kernel matrix [..., T, T] on the real tokens only: padding rows and columns become the identity's, so a
    Cholesky of it factors the real block and leaves padding out."""
    if mask is None:
        return matrix
    real = pair_mask(mask)
    eye = torch.eye(matrix.shape[-1], dtype=torch.bool, device=matrix.device)
    return torch.where(real, matrix, (eye & ~real).to(matrix.dtype))


def zero_padding(t, mask):
    """Per-head token values ``t`` [..., H, T, D] with padding tokens zeroed."""
    return t if mask is None else t * mask[..., None, :, None].to(t.dtype)


def masked_mean(h, mask):
    """Mean over the time axis (-2) of ``h`` counting only real positions."""
    if mask is None:
        return h.mean(-2)
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(-2) / m.sum(-2)
