"""NUTS through Pyro: the gold-standard reference posterior, returned as a draws-based Posterior.

Each chain runs Pyro's ``NUTS`` kernel over the model's global sites (point
parameters, such as layer norms under ``bayes="weights"``, stay at the values the
model holds); chains run one after another, or in worker processes (``workers``).
Chains start apart, each from a freshly initialised network, by default refined
by a short MAP fit, so that R-hat can see chains that disagree.
The loop is written out (rather than ``pyro.infer.MCMC``) to record per-draw
statistics that ArviZ wants: divergences, step size, tree depth, acceptance.
"""
import copy
import math
import multiprocessing
import time

import numpy as np
import pyro
import torch
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc import NUTS
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from ..svi import FitError, fit_svi
from ..posterior import Posterior

INITS = ("map", "random", "model")


class Tempered(Messenger):
    """Divides the log-likelihood of observed sites by ``temperature`` (T < 1: a cold posterior)."""

    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["scale"] = msg["scale"] / self.temperature


def tempered(model, temperature):
    """``model`` with its likelihood tempered by ``temperature`` (the model itself when T = 1)."""
    return model if temperature == 1.0 else Tempered(temperature)(model)


def fresh_start(model, seed):
    """Site values of a freshly initialised network (seeded): a dispersed chain start.

    Models without a rebuildable ``net.cfg`` start at their own initial values.
    """
    cfg = getattr(getattr(model, "net", None), "cfg", None)
    if cfg is None:
        return dict(model.initial_values())
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        params = dict(type(model.net)(cfg).named_parameters())
    return {n: params[n].detach().to(device) for n in model.sites}


def map_start(model, data, start, steps, lr, temperature, seed):
    """Refine ``start`` by a MAP fit of the Bayesian sites, point parameters frozen at the model's values."""
    chain_model = copy.deepcopy(model)
    params = dict(chain_model.net.named_parameters()) if hasattr(chain_model, "net") else {}
    with torch.no_grad():
        for n, v in start.items():
            if n in params:
                params[n].copy_(v)
    for p in chain_model.parameters():
        p.requires_grad_(False)
    posterior = fit_svi(chain_model, data, guide="map", steps=steps, lr=lr, temperature=temperature, seed=seed,
                        progress=False)
    return {n: v[0].detach() for n, v in posterior.sample(1).items()}


def chain_start(model, data, init, steps, lr, temperature, seed):
    """Where a chain starts, per ``init`` (see ``fit_nuts``)."""
    if init == "model":
        return dict(model.initial_values())
    start = fresh_start(model, seed)
    return map_start(model, data, start, steps, lr, temperature, seed) if init == "map" else start


class _Counted:
    """Wraps a potential function to count its calls (one per leapfrog step, plus the initial one)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, z):
        self.calls += 1
        return self.fn(z)


def run_chain(kernel, model_args, warmup, num_samples, desc, progress):
    """Warm up and draw from one chain; returns the constrained draws and per-draw statistics."""
    kernel.setup(warmup, *model_args)
    counted = _Counted(kernel.potential_fn)
    kernel.potential_fn = counted
    z = kernel.initial_params
    draws, stats = [], {"diverging": [], "step_size": [], "tree_depth": [], "n_steps": [], "accept_prob": [],
                        "lp": []}
    bar = tqdm(range(warmup + num_samples), desc=desc, disable=not progress, leave=False)
    for i in bar:
        mean0, div0, calls0 = kernel._mean_accept_prob, len(kernel._divergences), counted.calls
        step_size = kernel.step_size
        z = kernel.sample(z)
        n = kernel._t - warmup if kernel._t > warmup else kernel._t  # Pyro's running mean restarts after warm-up
        accept = mean0 + (kernel._mean_accept_prob - mean0) * n if n > 1 else kernel._mean_accept_prob
        if i >= warmup:
            steps = counted.calls - calls0
            stats["diverging"].append(len(kernel._divergences) > div0)
            stats["step_size"].append(step_size)
            stats["n_steps"].append(steps)
            stats["tree_depth"].append(int(math.log2(steps + 1)) if steps else 0)
            stats["accept_prob"].append(accept)
            with torch.no_grad():
                stats["lp"].append(-float(kernel._potential_energy_last))
            constrained = {k: kernel.transforms[k].inv(v) if k in kernel.transforms else v for k, v in z.items()}
            draws.append({k: v.detach().clone() for k, v in constrained.items()})
        if i % 10 == 0:
            bar.set_postfix(step=f"{kernel.step_size:.2e}", acc=f"{kernel._mean_accept_prob:.2f}",
                            div=len(kernel._divergences), phase="warmup" if i < warmup else "sample")
    kernel.cleanup()
    return draws, stats


def fit_nuts(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
             num_chains=4, warmup=200, num_samples=200, max_tree_depth=6, target_accept=0.8, dense_mass=False,
             jit_compile=False, init="map", workers=1):
    """NUTS over the model's global sites: ``num_chains`` chains of ``warmup`` + ``num_samples`` iterations.

    ``init``: ``map`` (default) starts each chain from a freshly initialised network
    refined by ``steps`` Adam steps at ``lr`` of MAP; ``random`` from the fresh
    network itself; ``model`` from the model's own initial values (all chains alike);
    or a list of ``num_chains`` starts (site name -> value), as ``guide="reference"`` passes.
    ``dense_mass`` adapts a full mass matrix (else diagonal); ``jit_compile`` traces
    the potential with ``torch.jit``. ``workers`` > 1 runs the chains in that many
    processes (one per core: chains are independent, so wall time divides by about
    ``workers``; the processes are spawned, so a script that calls this needs the usual
    ``if __name__ == "__main__":`` guard). ``temperature`` tempers the likelihood. The
    returned Posterior holds C * D draws (chain-major) and ``info["chains"] = C``,
    ``info["sample_stats"]`` (arrays [C, D]) and ``info["divergences"]``.
    """
    if batch_size is not None and batch_size < data[0].shape[0]:
        raise FitError("nuts uses the full data set each step; drop batch_size")
    if isinstance(init, str) and init not in INITS:
        raise FitError(f"unknown nuts init '{init}'; valid: {', '.join(INITS)}, or one start (site -> value) per chain")
    if not isinstance(init, str) and len(init) != num_chains:
        raise FitError(f"nuts init gives {len(init)} chain starts for num_chains={num_chains}")
    if num_chains < 1 or warmup < 0 or num_samples < 1 or max_tree_depth < 1:
        raise FitError("nuts needs num_chains >= 1, warmup >= 0, num_samples >= 1 and max_tree_depth >= 1")
    if workers < 1:
        raise FitError(f"workers must be >= 1, got {workers}")
    if not 0 < target_accept < 1:
        raise FitError(f"target_accept must lie in (0, 1), got {target_accept}")
    model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # point parameters are constants to NUTS (and torch.jit must see them as such)
        p.requires_grad_(False)
    options = {"steps": steps, "lr": lr, "temperature": temperature, "seed": seed,
               "progress": progress and workers == 1, "num_chains": num_chains, "warmup": warmup,
               "num_samples": num_samples, "max_tree_depth": max_tree_depth, "target_accept": target_accept,
               "dense_mass": dense_mass, "jit_compile": jit_compile, "init": init, "workers": workers,
               "threads": torch.get_num_threads()}
    try:
        return _run(model, data, options)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def one_chain(model, data, c, o):
    """Chain ``c`` under ``fit_nuts``'s options ``o``: its start, warm-up and draws.

    Returns (draws [D, ...] per site, statistics, seconds spent on the start). A top-level function, so
    that a worker process can run it.
    """
    torch.set_num_threads(o["threads"])  # a worker process does not inherit the parent's setting
    begin = time.perf_counter()
    if isinstance(o["init"], str):
        start = chain_start(model, data, o["init"], o["steps"], o["lr"], o["temperature"], o["seed"] + c)
    else:
        start = o["init"][c]
    start_seconds = time.perf_counter() - begin
    pyro.set_rng_seed(o["seed"] + c)
    kernel = NUTS(tempered(model, o["temperature"]), max_tree_depth=o["max_tree_depth"],
                  target_accept_prob=o["target_accept"], full_mass=o["dense_mass"], jit_compile=o["jit_compile"],
                  ignore_jit_warnings=True, init_strategy=init_to_value(values=start))
    x, y, mask = data
    draws, stats = run_chain(kernel, (x, y, mask, None), o["warmup"], o["num_samples"],
                             f"nuts chain {c + 1}/{o['num_chains']}", o["progress"])
    # one tensor per site: a worker hands tensors back through a file descriptor each
    return {n: torch.stack([d[n] for d in draws]) for n in draws[0]}, stats, start_seconds


def _run(model, data, o):
    """All chains under ``o`` (``fit_nuts``'s options), in turn or in ``o["workers"]`` processes."""
    start_time = time.perf_counter()
    jobs = [(model, data, c, o) for c in range(o["num_chains"])]
    if o["workers"] > 1:  # spawn, not fork: a forked child can hang on the parent's OpenMP state
        with multiprocessing.get_context("spawn").Pool(min(o["workers"], o["num_chains"])) as pool:
            results = pool.starmap(one_chain, jobs, chunksize=1)
    else:
        results = [one_chain(*job) for job in jobs]
    chains, stats, start_seconds = zip(*results)
    draws = {n: torch.cat([chain[n] for chain in chains]) for n in chains[0]}
    sample_stats = {k: np.array([s[k] for s in stats]) for k in stats[0]}
    info = {"chains": o["num_chains"], "draws_per_chain": o["num_samples"],
            **{k: o[k] for k in ("warmup", "max_tree_depth", "target_accept", "dense_mass", "temperature", "seed",
                                 "workers")},
            "init": o["init"] if isinstance(o["init"], str) else "given",
            "sample_stats": sample_stats, "divergences": int(sample_stats["diverging"].sum()),
            "wall_time": time.perf_counter() - start_time, "start_time": sum(start_seconds)}
    x, _, mask = data
    return Posterior(model, "nuts", draws=draws, info=info, x_proto=x[:2], mask_proto=None if mask is None else mask[:2])
