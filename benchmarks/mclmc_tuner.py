"""MCLMC's tuner against BlackJAX's on an ill-conditioned Gaussian: tuned L and bulk ESS per gradient.

The target is a 100-dimensional Gaussian with standard deviations geometrically
spaced from 0.1 to 10 (the setup of issue 28). A run is ``--chains`` chains started
at N(0, I) draws, tuned over ``--warmup`` steps (equal thirds, BlackJAX's
``mclmc_find_L_and_step_size``; with a preconditioner also a diagonal preconditioner
from the second third), then ``--draws`` steps. Every chain tunes alone, so
``--runs`` runs are one batch of runs x chains chains, split afterwards. Prints one
markdown row per setting: mean tuned L and step size, and ArviZ bulk ESS (over a
run's chains) per 1000 gradients of the sampling steps, worst coordinate and median,
each the mean over runs with its standard error.

``python -m benchmarks.mclmc_tuner`` runs this project's sampler (torch, float64).
``--sampler blackjax`` runs BlackJAX instead: it needs only jax, blackjax and arviz,
so it runs from a separate environment without torch or this project, e.g.
``/path/to/jaxvenv/bin/python -m benchmarks.mclmc_tuner --sampler blackjax``.
"""
import argparse
import math
import time

import arviz as az
import numpy as np

GRADIENTS_PER_STEP = 2  # the McLachlan integrator, both samplers' default


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.mclmc_tuner", description=__doc__.splitlines()[0])
    p.add_argument("--sampler", choices=["zoo", "blackjax"], default="zoo")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--draws", type=int, default=5000)
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precondition", choices=["both", "no", "yes"], default="both")
    return p.parse_args(argv)


def target_scales(dim):
    return np.geomspace(0.1, 10.0, dim)


def starts(seed, chains, dim):
    return np.random.default_rng(seed).normal(size=(chains, dim))


def run_zoo(seed, precondition, o):
    """This project's MCLMC; returns (draws [C, S, D], L [C], step size [C])."""
    import torch

    from inference.mcmc.mclmc import Kernel, Noise, adapt, init, sample
    sigma = torch.as_tensor(target_scales(o.dim))

    def log_density(x):
        return -0.5 * ((x / sigma) ** 2).sum(-1), -x / sigma**2
    noise = Noise([seed], [o.chains])
    kernel = Kernel(log_density)
    state = init(torch.as_tensor(starts(seed, o.chains, o.dim)), log_density, noise)
    state, params = adapt(kernel, state, o.warmup, noise, step_size=math.sqrt(o.dim) / 4, precondition=precondition)
    _, draws, _ = sample(kernel, state, params, o.draws, 1, noise)
    return draws["x"].numpy(), params.L.numpy(), params.step_size.numpy()


def run_blackjax(seed, precondition, o):
    """BlackJAX's MCLMC, each chain tuned on its own (vmap), from BlackJAX's default starting step size."""
    import blackjax
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    sigma = jnp.asarray(target_scales(o.dim))

    def log_density(x):
        return -0.5 * jnp.sum((x / sigma) ** 2)
    k_init, k_tune, k_run = jax.random.split(jax.random.key(seed), 3)
    states = jax.vmap(lambda x, k: blackjax.mcmc.mclmc.init(x, log_density, k))(
        jnp.asarray(starts(seed, o.chains, o.dim)), jax.random.split(k_init, o.chains))
    kernel = blackjax.mcmc.mclmc.build_kernel()

    def tune(state, key):
        state, params, _ = blackjax.mclmc_find_L_and_step_size(
            kernel, o.warmup, state, key, logdensity_fn=log_density, frac_tune1=1 / 3, frac_tune2=1 / 3,
            frac_tune3=1 / 3, diagonal_preconditioning=precondition)
        return state, params

    def run(state, params, key):
        algorithm = blackjax.mclmc(log_density, L=params.L, step_size=params.step_size,
                                   inverse_mass_matrix=params.inverse_mass_matrix)

        def one(s, k):
            s, _ = algorithm.step(k, s)
            return s, s.position
        return jax.lax.scan(one, state, jax.random.split(key, o.draws))[1]
    states, params = jax.jit(jax.vmap(tune))(states, jax.random.split(k_tune, o.chains))
    draws = jax.jit(jax.vmap(run))(states, params, jax.random.split(k_run, o.chains))
    return np.asarray(draws), np.asarray(params.L), np.asarray(params.step_size)


def ess_per_1000_gradients(draws):
    """Bulk ESS of every coordinate (ArviZ, all chains) per 1000 gradients of the steps that made ``draws``."""
    ess = az.ess(az.convert_to_dataset({"x": draws}), method="bulk")["x"].values
    return 1000 * ess / (draws.shape[0] * draws.shape[1] * GRADIENTS_PER_STEP)


def measure(sampler, precondition, o):
    """Per run: mean L, mean step size, worst and median ESS per 1000 gradients; each an array [runs]."""
    batch = argparse.Namespace(**{**vars(o), "chains": o.runs * o.chains})
    draws, L, eps = (run_zoo if sampler == "zoo" else run_blackjax)(o.seed, precondition, batch)
    runs = [slice(r * o.chains, (r + 1) * o.chains) for r in range(o.runs)]
    per = np.array([ess_per_1000_gradients(draws[r]) for r in runs])
    return {"L": np.array([L[r].mean() for r in runs]), "step_size": np.array([eps[r].mean() for r in runs]),
            "worst": per.min(axis=1), "median": np.median(per, axis=1)}


def main(argv=None):
    o = parse(argv)
    settings = {"both": (False, True), "no": (False,), "yes": (True,)}[o.precondition]
    print(f"{o.sampler}: {o.dim}-d Gaussian, sd 0.1..10; {o.runs} runs of {o.chains} chains, {o.warmup} tuning + "
          f"{o.draws} steps, seed {o.seed}, float64; mean over runs +- its standard error")
    print("| setting | L | step size | bulk ESS / 1000 gradients, worst | median | seconds |")
    print("|---|---|---|---|---|---|")
    for precondition in settings:
        start = time.time()
        m = measure(o.sampler, precondition, o)
        shown = {k: f"{v.mean():.3g} +- {v.std(ddof=1) / math.sqrt(len(v)):.2g}" for k, v in m.items()}
        print(f"| {'preconditioned' if precondition else 'no preconditioner'} | {shown['L']} | "
              f"{shown['step_size']} | {shown['worst']} | {shown['median']} | {time.time() - start:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
