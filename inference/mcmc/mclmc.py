"""Microcanonical Langevin Monte Carlo (MCLMC) for many chains at once, in torch, in the shape of BlackJAX's kernels.

MCLMC (Robnik, De Luca, Silverstein and Seljak 2023; Robnik and Seljak 2024) moves
a position x with a unit-norm velocity u under isokinetic dynamics: the speed is
fixed and the gradient of log p only turns u, so a trajectory covers distance
``step_size`` per step whatever the curvature. After every step the velocity is
partially refreshed (Langevin noise) so that it forgets its direction over a
length ``L``. There is no Metropolis correction: the step size is tuned so that
the energy error per dimension has variance ``energy_var`` (5e-4 by default),
which keeps the bias below the Monte Carlo error of the draws we take.

A port of BlackJAX's ``mclmc`` kernel (isokinetic McLachlan integrator,
``partially_refresh_momentum`` half a step before and after, the ESH velocity
update) and of its ``mclmc_find_L_and_step_size`` tuning, in BlackJAX's shape: an
immutable ``State``, a pure ``init``, a ``Kernel`` whose ``step`` returns a new state
and an ``Info`` record, and ``adapt`` returning the tuned ``Params``. Unlike BlackJAX
it runs C independent chains as one batch: every tensor leads with C, the log
density is called once per integrator stage for all chains (a zoo network runs all
C parameter vectors in one pass), and every chain keeps its own step size and L.
Random numbers come only from the ``Noise`` passed in.
"""
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

B1 = 0.1931833275037836  # McLachlan's minimal-norm two-stage integrator (BlackJAX's default for MCLMC)
INTEGRATORS = {"mclachlan": (B1, 0.5, 1 - 2 * B1, 0.5, B1), "leapfrog": (0.5, 1.0, 0.5)}
L_FACTOR = 0.4  # L = L_FACTOR * step_size * autocorrelation time, as BlackJAX
MAX_ESS_ENTRIES = 2000  # coordinates whose autocorrelation sets L (MILE's subset: FFTs stay cheap for large networks)


class Noise:
    """Standard normal draws for C chains from explicit generators, one per group of chains (a superchain).

    Each group's numbers come from its own seed, so a chain's draws do not depend on
    which other groups run in the same batch or process (up to floating-point rounding,
    which a network evaluated on a different number of chains does differently).
    """

    def __init__(self, seeds, sizes, device=None):
        self.sizes = list(sizes)
        self.generators = [torch.Generator(device=device or "cpu").manual_seed(int(s)) for s in seeds]
        self.device = device

    def normal(self, dim, dtype):
        return torch.cat([torch.randn(n, dim, generator=g, device=self.device, dtype=dtype)
                          for g, n in zip(self.generators, self.sizes)])

    def unit(self, dim, dtype):
        z = self.normal(dim, dtype)
        return z / z.norm(dim=-1, keepdim=True)


@dataclass(frozen=True)
class State:
    """C chains: positions ``x`` and unit velocities ``u`` [C, D], log density [C] and its gradient [C, D]."""

    x: torch.Tensor
    u: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


@dataclass(frozen=True)
class Info:
    """What one step did: each chain's energy change [C] and whether its step stayed finite (``ok`` [C])."""

    energy_change: torch.Tensor
    ok: torch.Tensor


@dataclass(frozen=True)
class Params:
    """Each chain's ``step_size`` and ``L`` [C], and ``scale`` [C, D] or None: a diagonal preconditioner.

    With ``scale`` the chains move in x / scale, where the posterior's standard
    deviations are about one (BlackJAX's ``inverse_mass_matrix`` is ``scale**2``).
    """

    step_size: torch.Tensor
    L: torch.Tensor
    scale: torch.Tensor | None = None


def init(x, log_density, noise):
    """The chains' state at positions ``x`` [C, D], with random unit velocities."""
    if x.dim() != 2 or x.shape[-1] < 2:
        raise ValueError(f"MCLMC needs positions [chains, dim] with dim >= 2, got shape {tuple(x.shape)}")
    logp, grad = log_density(x)
    return State(x, noise.unit(x.shape[-1], x.dtype), logp, grad)


@dataclass(frozen=True)
class Kernel:
    """The MCLMC transition for C chains of a ``log_density(x [C, D]) -> (logp [C], grad [C, D])``."""

    log_density: object
    integrator: str = "mclachlan"

    def __post_init__(self):
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"unknown integrator '{self.integrator}'; valid: {', '.join(INTEGRATORS)}")

    def step(self, state, params, noise):
        """One step of every chain with ``params``; returns (new state, info).

        A chain whose step produced a non-finite position, density or energy stays
        where it was with a fresh random velocity (``info.ok`` False), as BlackJAX does.
        """
        eps, L, scale = params.step_size[:, None], params.L[:, None], params.scale
        u = refresh(state.u, eps / 2, L, noise)
        x, grad, logp = state.x, state.grad, state.logp
        kinetic = torch.zeros_like(logp)
        for i, c in enumerate(INTEGRATORS[self.integrator]):
            if i % 2 == 0:
                u, dk = velocity_update(u, grad, c * eps, scale)
                kinetic = kinetic + dk
            else:
                x = x + c * eps * (u if scale is None else u * scale)
                logp, grad = self.log_density(x)
        u = refresh(u, eps / 2, L, noise)
        energy = kinetic - logp + state.logp
        ok = torch.isfinite(x).all(-1) & torch.isfinite(grad).all(-1) & torch.isfinite(logp) & torch.isfinite(energy)
        if not ok.all():
            keep = ~ok[:, None]
            x, grad = torch.where(keep, state.x, x), torch.where(keep, state.grad, grad)
            u = torch.where(keep, noise.unit(u.shape[-1], u.dtype), u)
            logp, energy = torch.where(ok, logp, state.logp), torch.where(ok, energy, torch.zeros_like(energy))
        return State(x, u, logp, grad), Info(energy, ok)


def velocity_update(u, grad, eps, scale=None):
    """ESH velocity update by ``eps`` [C, 1] (Steeg and Galstyan 2021): turns u toward the gradient."""
    dim = u.shape[-1]
    g = grad if scale is None else grad * scale
    norm = g.norm(dim=-1, keepdim=True)
    e = g / norm.clamp_min(1e-13)
    ue = (u * e).sum(-1, keepdim=True)
    delta = eps * norm / (dim - 1)
    zeta = torch.exp(-delta)
    new = e * (1 - zeta) * (1 + zeta + ue * (1 - zeta)) + 2 * zeta * u
    kinetic = (delta - math.log(2) + torch.log(1 + ue + (1 - ue) * zeta**2)) * (dim - 1)
    return new / new.norm(dim=-1, keepdim=True), kinetic.squeeze(-1)


def refresh(u, eps, L, noise):
    """Partial velocity refreshment over a time ``eps`` with decoherence length ``L`` (both [C, 1])."""
    nu = torch.sqrt((torch.exp(2 * eps / L) - 1) / u.shape[-1])
    v = u + nu * noise.normal(u.shape[-1], u.dtype)
    return v / v.norm(dim=-1, keepdim=True)


def adapt(kernel, state, num_steps, noise, step_size, L=None, energy_var=5e-4, trust=1.5, num_effective=150,
          fractions=(1 / 3, 1 / 3, 1 / 3), precondition=False, callback=None):
    """Tune each chain's step size and L over ``num_steps`` steps; returns (state, tuned ``Params``).

    BlackJAX's ``mclmc_find_L_and_step_size`` with its stages in proportions ``fractions``
    (equal thirds: the preconditioner needs as many steps as the step size):
    (1) the step size follows a weighted running estimate of where
    Var[energy change] / D hits ``energy_var``, using Var ~ step_size^6; (2) that
    continues while the chain's positions are averaged: L = sqrt(sum of their
    variances) (with ``precondition``, the standard deviations become the diagonal
    preconditioner and the step size is re-tuned for a third of stage 2's length, taken
    from stage 1 so that the warm-up stays ``num_steps``); (3) L = 0.4 * step_size *
    the mean over coordinates of (steps / ESS) of a stretch of draws, each chain's ESS
    unsplit. ``step_size`` and ``L`` are the starting values, scalars or [C].
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
    c, d = state.x.shape
    like = state.logp
    params = Params(torch.as_tensor(step_size, dtype=like.dtype, device=like.device).expand(c).clone(),
                    torch.as_tensor(math.sqrt(d) if L is None else L, dtype=like.dtype, device=like.device)
                    .expand(c).clone())
    n2, n3 = round(num_steps * fractions[1]), round(num_steps * fractions[2])
    if n3 < 10:  # an autocorrelation needs a stretch of draws; shorter warm-ups keep L from stage 2
        n3 = 0
    n1 = num_steps - n2 - n3
    retune = min(round(n2 / 3), n1) if precondition and n2 > 1 else 0
    n1 -= retune
    tuner = StepSizeTuner(d, energy_var, trust, num_effective, kernel, noise, callback)
    state, params, moments = tuner.run(state, params, n1 + n2, average_from=n1)
    if n2 > 1:
        var = moments.variance()
        if precondition:
            params = replace(params, scale=var.sqrt().clamp_min(1e-12), L=torch.full_like(params.L, math.sqrt(d)))
            state, params, _ = tuner.run(state, params, retune)
        else:
            L = var.sum(-1).sqrt()
            params = replace(params, L=torch.where(L > 0, L, params.L))
    if n3:
        state, params = tune_L(kernel, state, params, n3, noise, callback)
    return state, params


@dataclass(frozen=True)
class StepSizeTuner:
    """BlackJAX's step-size predictor: a decaying, trust-weighted average of Var[energy] / step_size^6."""

    dim: int
    energy_var: float
    trust: float
    num_effective: int
    kernel: Kernel
    noise: Noise
    callback: object = None

    def run(self, state, params, steps, average_from=None):
        """``steps`` steps from a fresh average; returns (state, params, moments of the positions from step
        ``average_from`` on, weighted by step size, or None)."""
        decay = (self.num_effective - 1.0) / (self.num_effective + 1.0)
        eps = params.step_size
        weight_sum, average, eps_max = torch.zeros_like(eps), torch.zeros_like(eps), torch.full_like(eps, math.inf)
        moments = None if average_from is None else Moments(*state.x.shape, state.logp)
        for i in range(steps):
            state, info = self.kernel.step(state, params, self.noise)
            eps_max = torch.where(info.ok, eps_max, 0.8 * eps)  # a failed step caps the step size below it
            xi = info.energy_change**2 / (self.dim * self.energy_var) + 1e-8
            w = torch.exp(-0.5 * (torch.log(xi) / (6.0 * self.trust)) ** 2) * info.ok
            average = decay * average + w * xi / eps**6
            weight_sum = decay * weight_sum + w
            eps = torch.where(weight_sum > 0, (average / weight_sum.clamp_min(1e-30)) ** (-1 / 6), eps)
            eps = torch.minimum(eps, eps_max)
            params = replace(params, step_size=eps)
            if moments is not None and i >= average_from:
                moments.add(state.x, eps * info.ok)
            if self.callback:
                self.callback(1)
        return state, params, moments


def tune_L(kernel, state, params, steps, noise, callback=None):
    """BlackJAX's last stage: L = 0.4 * step_size * mean over coordinates of steps / ESS, per chain."""
    d = state.x.shape[-1]
    entries = torch.linspace(0, d - 1, min(d, MAX_ESS_ENTRIES), device=state.x.device).round().long()
    xs = []
    for _ in range(steps):
        state, _ = kernel.step(state, params, noise)
        xs.append(state.x[:, entries].detach())
        if callback:
            callback(1)
    tau = steps / effective_sample_size(torch.stack(xs, 1))  # a coordinate that never moved: inf, left out
    finite = torch.isfinite(tau)
    mean_tau = torch.where(finite, tau, 0).sum(-1) / finite.sum(-1).clamp_min(1)
    L = torch.where(finite.any(-1), L_FACTOR * params.step_size * mean_tau.to(params.L.dtype), params.L)
    return state, replace(params, L=L)


def effective_sample_size(xs):
    """ESS of every coordinate within each chain, unsplit: xs [C, n, D] -> float64 [C, D]; 0 where a chain never moved.

    BlackJAX's ``effective_sample_size`` applied to each chain alone: autocorrelations
    by FFT, Geyer's initial positive and then monotone sequence of pair sums.
    """
    c, n, d = xs.shape
    if n < 2:
        raise ValueError(f"an effective sample size needs at least 2 draws per chain, got {n}")
    x = xs.detach().double()
    centered = x - x.mean(1, keepdim=True)
    spectrum = torch.fft.rfft(centered, n=2 * n, dim=1)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n, dim=1)[:, :n] / n
    moved = (x != x[:, :1]).any(1) & (acov[:, 0] > 0)
    acov0 = torch.where(moved, acov[:, 0], 1.0)[:, None]
    rho = 1 - (acov0 * n / (n - 1) - acov) / acov0
    rho[:, 0] = 1.0
    rho = rho[:, :n - n % 2]
    even, odd = rho[:, 0::2], rho[:, 1::2]
    positive = torch.cumprod((even + odd > 0).double(), dim=1).bool()  # the initial positive sequence
    last = (positive.sum(1, keepdim=True) - 1).clamp_min(0)  # its last pair
    zero = torch.zeros_like(even[:, :1])
    even, odd, positive = torch.cat([even, zero], 1), torch.cat([odd, zero], 1), torch.cat([positive, zero.bool()], 1)
    after = torch.arange(even.shape[1], device=x.device)[None, :, None] == last + 1
    even = torch.where(positive | (after & (even > 0)), even, 0)  # plus the next even lag where still positive
    odd = torch.where(positive, odd, 0)
    pairs = even + odd
    monotone = torch.cummin(pairs, dim=1).values  # the initial monotone sequence
    lowered = monotone < pairs
    even, odd = torch.where(lowered, monotone / 2, even), torch.where(lowered, monotone / 2, odd)
    tau = -1 + 2 * (even + odd).sum(1) - even.gather(1, last + 1).squeeze(1)
    ess = n / tau.clamp_min(1 / math.log10(n))
    return torch.where(moved, ess, 0.0)


class Moments:
    """Weighted running mean and variance of each chain's positions."""

    def __init__(self, c, d, like):
        self.total = like.new_zeros(c, 1)
        self.mean = like.new_zeros(c, d)
        self.square = like.new_zeros(c, d)

    def add(self, x, weight):
        w = weight[:, None]
        total = self.total + w
        share = torch.where(total > 0, w / total.clamp_min(1e-30), torch.zeros_like(w))
        self.mean = self.mean + share * (x - self.mean)
        self.square = self.square + share * (x**2 - self.square)
        self.total = total

    def variance(self):
        return (self.square - self.mean**2).clamp_min(0)


def sample(kernel, state, params, num_samples, thin, noise, keep=None, callback=None):
    """``num_samples`` draws per chain, one every ``thin`` steps; returns (state, draws [C, S, ...], stats).

    ``keep(x)`` maps positions [C, D] to a dict of what is stored (default ``{"x": x}``);
    ``stats`` holds per-draw numpy arrays [C, S]: ``energy_change`` (of the step that
    produced the draw), ``lp``, ``step_size``, ``L`` and ``diverging`` (a failed
    step since the previous draw).
    """
    keep = keep or (lambda x: {"x": x.clone()})
    draws, stats = [], {"energy_change": [], "lp": [], "step_size": [], "L": [], "diverging": []}
    for _ in range(num_samples):
        failed = torch.zeros_like(state.logp, dtype=torch.bool)
        for _ in range(thin):
            state, info = kernel.step(state, params, noise)
            failed |= ~info.ok
            if callback:
                callback(1)
        draws.append(keep(state.x))
        for k, v in (("energy_change", info.energy_change), ("lp", state.logp), ("step_size", params.step_size),
                     ("L", params.L), ("diverging", failed)):
            stats[k].append(v.detach().cpu().numpy())
    stats = {k: np.stack(v, 1) for k, v in stats.items()}
    return state, {n: torch.stack([d[n] for d in draws], 1) for n in draws[0]}, stats
