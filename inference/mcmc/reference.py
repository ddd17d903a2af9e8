"""The reference posterior: many chains started from a deep ensemble (``guide="reference"``).

A neural network's posterior has many modes that no chain crosses in a feasible
time. What does work (Sommer et al. 2024, "Connecting the Dots"; MILE, Sommer et
al. 2025) is to find the modes first, with a deep ensemble of MAP fits, and then
sample around each: every ensemble member starts a *superchain* of several
chains, which share the member as their start and differ in their random
numbers. Nested R-hat (Margossian et al. 2024) then asks whether chains started
in different places have forgotten where they started, and the draws of all
chains together are the reference.

Two samplers: ``mclmc`` (microcanonical Langevin, ``inference.mcmc.mclmc``), which
runs all chains vectorized through the network's leading sample dimension, and
``nuts`` (Pyro's NUTS, ``fit_nuts``), one chain at a time or in worker processes.
Both start from the same ensemble for the same ``seed``.
"""
import contextlib
import multiprocessing
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from core.training import minimize

from ..svi import FitError
from ..posterior import Posterior
from .mclmc import INTEGRATORS, Kernel, Noise, adapt, init, sample
from .nuts import fit_nuts, fresh_start
from .potential import LocalSitesError, LogDensity

SAMPLERS = ("mclmc", "nuts")
MAX_MEMORY = 3 * 2**30  # bytes a reference may plan to hold: the shared machine's per-process budget


def fit_reference(model, data, *, steps=500, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                  sampler="mclmc", num_members=8, num_chains=32, warmup=1000, num_samples=150, thin=20,
                  step_size=0.01, energy_var=5e-4, integrator="mclachlan", precondition=False,
                  max_tree_depth=6, target_accept=0.8, dense_mass=True, jit_compile=True, workers=1,
                  max_memory=MAX_MEMORY):
    """Many chains from a deep ensemble: ``num_members`` superchains of ``num_chains / num_members`` chains.

    The ensemble is ``num_members`` MAP fits of the Bayesian sites (``steps`` Adam
    steps at ``lr``, all members in one batch; point parameters stay at the model's
    values, as for NUTS), member k from a fresh network seeded ``seed * num_members + k``,
    so runs with different seeds share no member. ``sampler="mclmc"``: every chain tunes its own step size
    (from ``step_size``, to an energy error variance of ``energy_var`` per dimension)
    and L over ``warmup`` steps, then keeps ``num_samples`` draws, one every ``thin``
    steps (``integrator``: ``mclachlan`` or ``leapfrog``; ``precondition``: a diagonal
    preconditioner from the warm-up draws). ``sampler="nuts"``: ``warmup`` +
    ``num_samples`` NUTS iterations per chain with ``max_tree_depth``,
    ``target_accept``, ``dense_mass`` and ``jit_compile``. ``workers`` > 1 spreads the
    superchains (MCLMC) or chains (NUTS) over that many processes. A plan needing
    more than ``max_memory`` bytes is refused before any work.

    The Posterior holds the draws chain after chain (superchain after superchain),
    ``info["chains"]``, ``info["superchains"]``, per-chain ``step_size`` and ``L``
    (MCLMC) and ``info["sample_stats"]`` (arrays [C, S]).
    """
    check_options(data, sampler, num_members, num_chains, warmup, num_samples, thin, step_size, energy_var,
                  integrator, workers, batch_size)
    model.eval()
    options = {"steps": steps, "lr": lr, "temperature": temperature, "seed": seed, "progress": progress,
               "num_members": num_members, "num_chains": num_chains, "warmup": warmup,
               "num_samples": num_samples, "thin": thin, "step_size": step_size, "energy_var": energy_var,
               "integrator": integrator, "precondition": precondition, "workers": workers,
               "threads": torch.get_num_threads()}
    with point_parameters_constant(model):
        try:
            density = LogDensity(model, data, temperature)
        except LocalSitesError as e:
            raise FitError(f"reference: {e}") from None
        check_memory(model, data, density.dim, sampler, num_chains, num_samples, dense_mass, max_memory)
        if sampler == "mclmc" and density.dim < 2:
            raise FitError("reference: sampler='mclmc' needs at least 2 sampled dimensions; use sampler='nuts'")
        started = time.perf_counter()
        members = ensemble(model, density, options)
        ensemble_seconds = time.perf_counter() - started
        if sampler == "nuts":
            draws, info = run_nuts(model, data, density, members, options, max_tree_depth=max_tree_depth,
                                   target_accept=target_accept, dense_mass=dense_mass, jit_compile=jit_compile)
        else:
            draws, info = run_mclmc(model, data, members, options)
    info.update({"sampler": sampler, "superchains": num_members, "chains_per_superchain": num_chains // num_members,
                 "draws_per_chain": num_samples, "ensemble_time": ensemble_seconds,
                 "wall_time": time.perf_counter() - started, "seed": seed, "temperature": temperature,
                 "member_seeds": member_seeds(seed, num_members)})
    x, _, mask = data
    return Posterior(model, "reference", draws=draws, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])


@contextlib.contextmanager
def point_parameters_constant(model):
    """The model's trainable parameters as constants while the samplers run (they sample the Bayesian sites only)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def run_nuts(model, data, density, members, options, **nuts):
    """NUTS chains, ``num_chains / num_members`` started from each ensemble member; (draws, info)."""
    per = options["num_chains"] // options["num_members"]
    starts = [{n: v[0] for n, v in density.constrain(members[c // per][None]).items()}
              for c in range(options["num_chains"])]
    post = fit_nuts(model, data, steps=options["steps"], lr=options["lr"], temperature=options["temperature"],
                    seed=options["seed"] * options["num_chains"], progress=options["progress"],
                    num_chains=options["num_chains"], warmup=options["warmup"], num_samples=options["num_samples"],
                    init=starts, workers=options["workers"], **nuts)
    return post.draws, {**post.info, "init": "ensemble"}


def check_options(data, sampler, num_members, num_chains, warmup, num_samples, thin, step_size, energy_var,
                  integrator, workers, batch_size):
    """One line naming the option, before any work starts."""
    if sampler not in SAMPLERS:
        raise FitError(f"unknown reference sampler '{sampler}'; valid: {', '.join(SAMPLERS)}")
    if num_members < 2:
        raise FitError(f"num_members must be >= 2 (nested R-hat compares superchains, one per member), "
                       f"got {num_members}")
    if num_chains < num_members or num_chains % num_members:
        raise FitError(f"num_chains={num_chains} must be a multiple of num_members={num_members} "
                       f"(every ensemble member starts the same number of chains)")
    if num_samples < 1:
        raise FitError(f"num_samples must be >= 1, got {num_samples}")
    if warmup < 0:
        raise FitError(f"warmup must be >= 0, got {warmup}")
    if thin < 1:
        raise FitError(f"thin must be >= 1, got {thin}")
    if not step_size > 0:
        raise FitError(f"step_size must be positive, got {step_size}")
    if not energy_var > 0:
        raise FitError(f"energy_var must be positive, got {energy_var}")
    if integrator not in INTEGRATORS:
        raise FitError(f"unknown integrator '{integrator}'; valid: {', '.join(INTEGRATORS)}")
    if workers < 1:
        raise FitError(f"workers must be >= 1, got {workers}")
    if batch_size is not None and batch_size < data[0].shape[0]:
        raise FitError("reference uses the full data set each step; drop batch_size")


def planned_bytes(model, data, dim, sampler, num_chains, num_samples, dense_mass):
    """What a run will hold at its peak: the draws, plus MCLMC's activations or NUTS's dense mass matrices."""
    draws = 4 * num_chains * num_samples * dim
    if sampler == "nuts":
        return draws + (4 * 8 * dim**2 if dense_mass else 0)  # mass, its inverse, Cholesky, Welford (float64)
    cfg = getattr(getattr(model, "net", None), "cfg", None)
    if cfg is None:
        return draws
    x = data[0]
    tokens = x.shape[0] * -(-x.shape[1] // cfg.patch)
    per_token = cfg.depth * (cfg.d_model * (12 + 4 * cfg.mlp_ratio) + 3 * cfg.heads * -(-x.shape[1] // cfg.patch))
    return draws + 4 * num_chains * tokens * per_token  # the activations autograd keeps for one gradient


def check_memory(model, data, dim, sampler, num_chains, num_samples, dense_mass, max_memory):
    need = planned_bytes(model, data, dim, sampler, num_chains, num_samples, dense_mass)
    if need > max_memory:
        raise FitError(f"reference: {sampler} with num_chains={num_chains}, num_samples={num_samples} on {dim} "
                       f"weights plans {need / 2**30:.1f} GiB, over max_memory={max_memory / 2**30:.1f} GiB; "
                       f"use fewer chains or draws, a smaller model"
                       + (", or dense_mass=False" if sampler == "nuts" and dense_mass else ""))


def member_seeds(seed, num_members):
    return [seed * num_members + k for k in range(num_members)]


def ensemble(model, density, o):
    """The deep ensemble: every member's MAP, all in one batch; returns unconstrained positions [K, D].

    Member k starts from a freshly initialised network seeded ``member_seeds(...)[k]``
    (as NUTS's ``init="map"`` chains do) and takes ``o["steps"]`` Adam steps at
    ``o["lr"]``, cosine-decayed to a tenth, on the tempered log joint: the MAP fit of
    ``fit(guide="map")``, with the members stacked so that one pass serves them all
    (Adam updates every coordinate on its own, so stacking changes nothing).
    """
    starts = [fresh_start(model, s) for s in member_seeds(o["seed"], o["num_members"])]
    z = density.flatten({n: torch.stack([s.get(n, density.proto[n]) for s in starts]) for n in density.shapes})
    z = z.detach().clone().requires_grad_(True)
    minimize(lambda step, batch: -density.log_density(z).sum(), [z], o["lr"], o["steps"], progress=o["progress"],
             desc=f"reference ensemble: {len(starts)} MAP fits")
    if not torch.isfinite(z).all():
        raise FitError(f"reference: the ensemble's MAP fits did not stay finite; lower lr={o['lr']}")
    return z.detach()


def run_mclmc(model, data, members, o):
    """MCLMC from the ensemble ``members``: returns draws (chain-major [C * S, ...]) and info."""
    groups = [list(g) for g in np.array_split(np.arange(len(members)), min(o["workers"], len(members)))]
    jobs = [(model, data, members[g], g, o, i) for i, g in enumerate(groups)]
    if len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            results = pool.starmap(mclmc_group, jobs, chunksize=1)
    else:
        results = [mclmc_group(*jobs[0])]
    draws = {n: torch.cat([r[0][n] for r in results]) for n in results[0][0]}  # [C, S, ...]
    draws = {n: v.reshape(-1, *v.shape[2:]) for n, v in draws.items()}
    stats = {k: np.concatenate([r[1][k] for r in results]) for k in results[0][1]}
    step_size = np.concatenate([r[2] for r in results])
    L = np.concatenate([r[3] for r in results])
    d = sum(v[0].numel() for v in draws.values())
    info = {"chains": o["num_chains"], "warmup": o["warmup"], "thin": o["thin"], "integrator": o["integrator"],
            "precondition": o["precondition"], "energy_var": o["energy_var"], "workers": o["workers"],
            "step_size": step_size.tolist(), "L": L.tolist(), "sample_stats": stats,
            "divergences": int(stats["diverging"].sum()),
            "energy_var_measured": float(np.var(stats["energy_change"], axis=1).mean() / d),
            "gradients_per_chain": len(INTEGRATORS[o["integrator"]]) // 2
            * (o["warmup"] + o["num_samples"] * o["thin"])}
    return draws, info


def mclmc_group(model, data, starts, superchains, o, position=0):
    """MCLMC for the superchains ``superchains``, started at their members ``starts`` [K', D]; a top-level
    function, so that a worker process can run it (its progress bar on line ``position``). Returns (draws
    name -> [C, S, ...], stats [C, S], step sizes [C], L [C])."""
    torch.set_num_threads(o["threads"])
    density = LogDensity(model, data, o["temperature"])
    per = o["num_chains"] // o["num_members"]
    x0 = starts.repeat_interleave(per, dim=0)  # every chain of a superchain starts at its member
    noise = Noise([10**6 + o["seed"] * o["num_members"] + int(k) for k in superchains], [per] * starts.shape[0],
                  device=x0.device)
    kernel = Kernel(density, o["integrator"])
    c = x0.shape[0]
    total = c * (o["warmup"] + o["num_samples"] * o["thin"])
    bar = tqdm(total=total, desc=f"reference mclmc: {c} chains x steps", unit="step", unit_scale=True,
               disable=not o["progress"], leave=False, position=position)
    tick = (lambda n: bar.update(n * c))
    state = init(x0, density, noise)
    state, params = adapt(kernel, state, o["warmup"], noise, o["step_size"], energy_var=o["energy_var"],
                          precondition=o["precondition"], callback=tick)
    _, draws, stats = sample(kernel, state, params, o["num_samples"], o["thin"], noise,
                             keep=lambda x: {n: v.detach().clone() for n, v in density.constrain(x).items()},
                             callback=tick)
    bar.close()
    return draws, stats, params.step_size.cpu().numpy(), params.L.cpu().numpy()
