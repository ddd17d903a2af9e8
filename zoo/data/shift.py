"""Graded shift: a split under corruptions of growing strength, with its labels and mask unchanged.

``shifts(split, seed)`` gives every kind at every level, keyed ``"noise:1"`` ... ``"drop:3"``;
``shifted(split, kind, level, seed)`` one of them. Inputs are standardized series (the
training data has per-channel mean 0 and standard deviation 1), so strengths are in
those units:

- ``noise``: Gaussian noise of standard deviation 0.25, 0.5, 1 added to every real step.
- ``scale``: each series multiplied by a or 1/a (which one drawn per series), a = 1.5, 2, 3.
- ``warp``: each series resampled along a random smooth monotone time warp: the speed
  is exp(sigma z) at 4 knots spread over the series (z standard normal), linear in
  between, integrated and rescaled so the warp keeps both ends; sigma = 0.25, 0.5, 1.
- ``drop``: a contiguous segment of 10%, 25%, 50% of each series' real steps, at a
  random place, set to 0 (the training mean): a sensor drop-out imputed with the mean.

Deterministic: the draws depend on ``seed`` and the kind, not on the level, so the three
levels of a kind are one corruption made stronger. Masks are respected: padding
(steps outside ``split.mask``) is never written, and warps and drops act within each
series' own length. Real-valued series only: token data raises a DataError.
"""
import torch

from core.checks import DataError

from .shipped import Split

SHIFTS = ("noise", "scale", "warp", "drop")
LEVELS = (1, 2, 3)
STRENGTH = {"noise": (0.25, 0.5, 1.0), "scale": (1.5, 2.0, 3.0), "warp": (0.25, 0.5, 1.0), "drop": (0.1, 0.25, 0.5)}
KNOTS = 4  # speed knots of a time warp


def shifts(split, seed=0):
    """Every kind at every level: ``{"noise:1": Split, ..., "drop:3": Split}``."""
    return {f"{kind}:{level}": shifted(split, kind, level, seed) for kind in SHIFTS for level in LEVELS}


def shifted(split, kind, level, seed=0):
    """``split`` with its inputs corrupted by ``kind`` at ``level`` (1, 2 or 3); same labels and mask."""
    if kind not in SHIFTS:
        raise DataError(f"unknown shift '{kind}'; shifts are: {', '.join(SHIFTS)}")
    if level not in LEVELS:
        raise DataError(f"shift level must be one of {LEVELS}, got {level!r}")
    if not split.x.is_floating_point():
        raise DataError(f"shift '{kind}' applies to real-valued series; these inputs are token ids")
    x, mask = split.x, split.mask
    real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    generator = torch.Generator().manual_seed(1000 * seed + SHIFTS.index(kind))
    new = CORRUPT[kind](x, real, STRENGTH[kind][level - 1], generator)
    return Split(torch.where(real[..., None], new, x), split.y, mask)


def draw(shape, generator, like, uniform=False):
    """Standard normal (or uniform) draws made on the CPU generator, then moved to ``like``'s device and dtype."""
    z = torch.rand(shape, generator=generator) if uniform else torch.randn(shape, generator=generator)
    return z.to(like.device, like.dtype)


def noise(x, real, sd, generator):
    return x + sd * draw(x.shape, generator, x)


def scale(x, real, a, generator):
    up = draw(x.shape[:1], generator, x, uniform=True) < 0.5
    return x * torch.where(up, a, 1 / a).to(x.dtype)[:, None, None]


def warp(x, real, sigma, generator):
    """Resample each series at warped times: the integral of a positive random speed, rescaled to its length."""
    n, t = x.shape[:2]
    lengths = real.sum(1, keepdim=True).to(x.dtype)  # [N, 1]
    steps = torch.arange(t, device=x.device, dtype=x.dtype)
    u = (steps / (lengths - 1).clamp_min(1)).clamp(max=1)  # position of each step within its series, 0..1
    knots = (sigma * draw((n, KNOTS), generator, x)).exp()  # speed at KNOTS evenly spaced points
    where = u * (KNOTS - 1)
    low = where.floor().long().clamp(max=KNOTS - 2)
    speed = torch.lerp(knots.gather(1, low), knots.gather(1, low + 1), where - low)
    speed = speed * real
    travelled = torch.cat([torch.zeros_like(speed[:, :1]), ((speed[:, 1:] + speed[:, :-1]) / 2).cumsum(1)], 1)
    total = travelled.gather(1, (lengths.long() - 1).clamp_min(0))
    times = torch.minimum(travelled / total.clamp_min(1e-12) * (lengths - 1), lengths - 1)  # 0 .. length-1
    before = times.floor().long().clamp(0, t - 1)
    after = (before + 1).clamp(max=t - 1)
    after = torch.minimum(after, (lengths.long() - 1).clamp_min(0))  # never reach into the padding
    def at(idx):
        return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    return torch.lerp(at(before), at(after), (times - before)[..., None])


def drop(x, real, fraction, generator):
    lengths = real.sum(1)
    width = (fraction * lengths).round().clamp_min(1)
    start = (draw(lengths.shape, generator, x, uniform=True) * (lengths - width + 1)).floor()
    steps = torch.arange(x.shape[1], device=x.device)
    gone = (steps >= start[:, None]) & (steps < (start + width)[:, None])
    return x.masked_fill(gone[..., None], 0.0)


CORRUPT = {"noise": noise, "scale": scale, "warp": warp, "drop": drop}
