"""Microcanonical Langevin Monte Carlo (MCLMC) for many chains at once, in torch.

MCLMC (Robnik, De Luca, Silverstein and Seljak 2023; Robnik and Seljak 2024) moves
a position x with a unit-norm velocity u under isokinetic dynamics: the speed is
fixed and the gradient of log p only turns u, so a trajectory covers distance
``step_size`` per step whatever the curvature. After every step the velocity is
partially refreshed (Langevin noise) so that it forgets its direction over a
length ``L``. There is no Metropolis correction: the step size is tuned so that
the energy error per dimension has variance ``energy_var`` (5e-4 by default),
which keeps the bias below the Monte Carlo error of the draws we take.

This is a port of BlackJAX's ``mclmc`` kernel (isokinetic McLachlan integrator,
``partially_refresh_momentum`` half a step before and after, the ESH velocity
update) and of its ``mclmc_find_L_and_step_size`` tuning, written for a batch of
C independent chains: every tensor leads with C, the log density is called once
per integrator stage for all chains (a zoo network runs all C parameter vectors
in one pass), and every chain keeps its own step size and L.
"""
import math
from dataclasses import dataclass

import arviz as az
import numpy as np
import torch

B1 = 0.1931833275037836  # McLachlan's minimal-norm two-stage integrator (BlackJAX's default for MCLMC)
INTEGRATORS = {"mclachlan": (B1, 0.5, 1 - 2 * B1, 0.5, B1), "leapfrog": (0.5, 1.0, 0.5)}


class Noise:
    """Standard normal draws for C chains, one generator per group of chains (a superchain).

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


@dataclass
class State:
    """C chains: positions ``x`` and unit velocities ``u`` [C, D], log density [C] and its gradient [C, D]."""

    x: torch.Tensor
    u: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


class MCLMC:
    """The MCLMC kernel for C chains of a ``log_density(x [C, D]) -> (logp [C], grad [C, D])``.

    ``scale`` [C, D] (or None) is a diagonal preconditioner: the chains move in
    x / scale, where the posterior's standard deviations are about one.
    """

    def __init__(self, log_density, dim, integrator="mclachlan"):
        if dim < 2:
            raise ValueError("MCLMC needs at least 2 dimensions")
        self.log_density, self.dim = log_density, dim
        self.coefficients = INTEGRATORS[integrator]
        self.scale = None

    def init(self, x, noise):
        logp, grad = self.log_density(x)
        return State(x, noise.unit(self.dim, x.dtype), logp, grad)

    def velocity_update(self, u, grad, eps):
        """ESH velocity update by ``eps`` [C, 1] (Steeg and Galstyan 2021): turns u toward the gradient."""
        g = grad if self.scale is None else grad * self.scale
        norm = g.norm(dim=-1, keepdim=True)
        e = g / norm.clamp_min(1e-13)
        ue = (u * e).sum(-1, keepdim=True)
        delta = eps * norm / (self.dim - 1)
        zeta = torch.exp(-delta)
        new = e * (1 - zeta) * (1 + zeta + ue * (1 - zeta)) + 2 * zeta * u
        kinetic = (delta - math.log(2) + torch.log(1 + ue + (1 - ue) * zeta**2)) * (self.dim - 1)
        return new / new.norm(dim=-1, keepdim=True), kinetic.squeeze(-1)

    def refresh(self, u, eps, L, noise):
        """Partial velocity refreshment over a time ``eps`` with decoherence length ``L`` (both [C, 1])."""
        nu = torch.sqrt((torch.exp(2 * eps / L) - 1) / self.dim)
        v = u + nu * noise.normal(self.dim, u.dtype)
        return v / v.norm(dim=-1, keepdim=True)

    def step(self, state, step_size, L, noise):
        """One step of every chain; returns (new state, energy change [C], accepted [C]).

        A chain whose step produced a non-finite position, density or energy stays
        where it was with a fresh random velocity (``accepted`` False), as BlackJAX does.
        """
        eps, L = step_size[:, None], L[:, None]
        u = self.refresh(state.u, eps / 2, L, noise)
        x, grad, logp = state.x, state.grad, state.logp
        kinetic = torch.zeros_like(logp)
        for i, c in enumerate(self.coefficients):
            if i % 2 == 0:
                u, dk = self.velocity_update(u, grad, c * eps)
                kinetic = kinetic + dk
            else:
                x = x + c * eps * (u if self.scale is None else u * self.scale)
                logp, grad = self.log_density(x)
        u = self.refresh(u, eps / 2, L, noise)
        energy = kinetic - logp + state.logp
        ok = torch.isfinite(x).all(-1) & torch.isfinite(grad).all(-1) & torch.isfinite(logp) & torch.isfinite(energy)
        if not ok.all():
            keep = ~ok[:, None]
            x, grad = torch.where(keep, state.x, x), torch.where(keep, state.grad, grad)
            u = torch.where(keep, noise.unit(self.dim, u.dtype), u)
            logp, energy = torch.where(ok, logp, state.logp), torch.where(ok, energy, torch.zeros_like(energy))
        return State(x, u, logp, grad), energy, ok


def adapt(kernel, state, num_steps, noise, step_size, L=None, energy_var=5e-4, trust=1.5, num_effective=150,
          fractions=(0.8, 0.1, 0.1), precondition=False, callback=None):
    """Tune each chain's step size and L over ``num_steps`` steps; returns (state, step_size [C], L [C]).

    BlackJAX's three stages, in MILE's proportions (``fractions``): (1) the step size
    follows a weighted running estimate of where Var[energy change] / D hits
    ``energy_var``, using Var ~ step_size^6; (2) that continues while the chain's
    positions are averaged: L = sqrt(sum of their variances) (with ``precondition``,
    the standard deviations become the diagonal preconditioner and the step size is
    re-tuned); (3) L = 0.4 * step_size * steps / ESS from a stretch of draws.
    ``step_size`` and ``L`` are the starting values, scalars or [C].
    """
    c, d = state.x.shape
    like = state.logp
    eps = torch.as_tensor(step_size, dtype=like.dtype, device=like.device).expand(c).clone()
    L = torch.as_tensor(math.sqrt(d) if L is None else L, dtype=like.dtype, device=like.device).expand(c).clone()
    n1, n2 = int(num_steps * fractions[0]), int(num_steps * fractions[1])
    n3 = num_steps - n1 - n2
    if n3 < 10:
        n1 += n3
    decay = (num_effective - 1.0) / (num_effective + 1.0)

    def tune_step_size(state, eps, steps, moments=None):
        weight_sum, average, eps_max = torch.zeros_like(eps), torch.zeros_like(eps), torch.full_like(eps, math.inf)
        for _ in range(steps):
            state, energy, ok = kernel.step(state, eps, L, noise)
            eps_max = torch.where(ok, eps_max, 0.8 * eps)  # a failed step caps the step size below it
            xi = energy**2 / (d * energy_var) + 1e-8
            w = torch.exp(-0.5 * (torch.log(xi) / (6.0 * trust)) ** 2) * ok
            average = decay * average + w * xi / eps**6
            weight_sum = decay * weight_sum + w
            eps = torch.where(weight_sum > 0, (average / weight_sum.clamp_min(1e-30)) ** (-1 / 6), eps)
            eps = torch.minimum(eps, eps_max)
            if moments is not None:
                moments.add(state.x, eps * ok)
            if callback:
                callback(1)
        return state, eps

    state, eps = tune_step_size(state, eps, n1)
    if n2:
        moments = Moments(c, d, like)
        state, eps = tune_step_size(state, eps, n2, moments)
        var = moments.variance()
        if precondition:
            kernel.scale = var.sqrt().clamp_min(1e-12)
            L = torch.full_like(L, math.sqrt(d))
            state, eps = tune_step_size(state, eps, n2 // 3)
        else:
            L = var.sum(-1).sqrt()
    if n3 >= 10:  # an autocorrelation needs a stretch of draws; shorter warm-ups keep L from stage 2
        xs = []
        for _ in range(n3):
            state, _, _ = kernel.step(state, eps, L, noise)
            xs.append(state.x)
            if callback:
                callback(1)
        L = 0.4 * eps * n3 / per_chain_ess(torch.stack(xs, 1)).mean(-1)
    return state, eps, L


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


def per_chain_ess(xs, max_entries=2000):
    """ESS of every coordinate within each chain: xs [C, n, D] -> [C, D'] (at most ``max_entries`` coordinates)."""
    values = xs.detach().cpu().double().numpy()
    if values.shape[-1] > max_entries:  # as MILE does: a fixed subset keeps the FFTs cheap for large networks
        values = values[..., np.linspace(0, values.shape[-1] - 1, max_entries).round().astype(int)]
    ess = [az.ess(az.convert_to_dataset({"x": chain[None]}), method="mean")["x"].values for chain in values]
    return torch.as_tensor(np.stack(ess), dtype=xs.dtype, device=xs.device).clamp_min(1.0)


def sample(kernel, state, num_samples, thin, step_size, L, noise, keep=None, callback=None):
    """``num_samples`` draws per chain, one every ``thin`` steps; returns (state, draws [C, S, ...], stats).

    ``keep(x)`` maps positions [C, D] to a dict of what is stored (default ``{"x": x}``);
    ``stats`` holds per-draw arrays [C, S]: ``energy_change`` (of the step that
    produced the draw), ``lp``, ``step_size``, ``L`` and ``diverging`` (a failed
    step since the previous draw).
    """
    keep = keep or (lambda x: {"x": x.clone()})
    draws, stats = [], {"energy_change": [], "lp": [], "step_size": [], "L": [], "diverging": []}
    for _ in range(num_samples):
        failed = torch.zeros_like(state.logp, dtype=torch.bool)
        for _ in range(thin):
            state, energy, ok = kernel.step(state, step_size, L, noise)
            failed |= ~ok
            if callback:
                callback(1)
        draws.append(keep(state.x))
        for k, v in (("energy_change", energy), ("lp", state.logp), ("step_size", step_size), ("L", L),
                     ("diverging", failed)):
            stats[k].append(v.detach().cpu().numpy())
    stats = {k: np.stack(v, 1) for k, v in stats.items()}
    return state, {n: torch.stack([d[n] for d in draws], 1) for n in draws[0]}, stats
