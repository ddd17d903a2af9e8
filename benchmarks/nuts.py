"""``bzoo bench nuts``: the NUTS reference on a small transformer, judged in function space.

Prints the wall and CPU time, the worst function-space R-hat and lowest bulk ESS
over every held-out predictive probability, ESS per second, weight-space R-hat
(for contrast: it is inflated by permutation symmetry), divergences, tree depth
and test accuracy. NumPyro is timed on the same model when installed (optional).
"""
import argparse
import resource
import time

import numpy as np
import torch

from inference import evaluate, fit, function_space, weight_space
from zoo import TransformerClassifier, recipes
from zoo.data import load

from .array_port import port

# The model and NUTS settings are the reference row's (zoo/recipes.py): 602 Bayesian weights on ItalyPowerDemand;
# the chains are the four long ones measured in docs/reference.md (the reference itself runs many short ones).
REFERENCE = {**recipes.MODEL, **recipes.REFERENCE["model"]}
OPTIONS = {**recipes.REFERENCE["options"], "num_chains": 4, "warmup": 300, "num_samples": 300}


def parse(argv):
    p = argparse.ArgumentParser(prog="bzoo bench nuts", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ItalyPowerDemand")
    p.add_argument("--d-model", type=int, default=REFERENCE["d_model"])
    p.add_argument("--depth", type=int, default=REFERENCE["depth"])
    p.add_argument("--heads", type=int, default=REFERENCE["heads"])
    p.add_argument("--mlp-ratio", type=int, default=REFERENCE["mlp_ratio"])
    p.add_argument("--prior", default=recipes.PRIOR)
    p.add_argument("--bayes", default="weights")
    p.add_argument("--chains", type=int, default=OPTIONS["num_chains"])
    p.add_argument("--warmup", type=int, default=OPTIONS["warmup"])
    p.add_argument("--draws", type=int, default=OPTIONS["num_samples"])
    p.add_argument("--max-tree-depth", type=int, default=OPTIONS["max_tree_depth"])
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--dense-mass", action=argparse.BooleanOptionalAction, default=OPTIONS["dense_mass"],
                   help="adapt a full mass matrix (default; --no-dense-mass: diagonal)")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=OPTIONS["jit_compile"],
                   help="jit_compile the potential (torch.jit trace; default)")
    p.add_argument("--init", default="map", choices=["map", "random", "model"])
    p.add_argument("--map-steps", type=int, default=OPTIONS["steps"])
    p.add_argument("--lr", type=float, default=OPTIONS["lr"])
    p.add_argument("--workers", type=int, default=1, help="processes the chains run in (one per core)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (tiny ops: 1 is fastest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-numpyro", action="store_true", help="skip the NumPyro comparison")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data = load(args.dataset)
    torch.manual_seed(args.seed)
    model = TransformerClassifier(data.num_classes, input_dim=data.input_dim, vocab_size=None, d_model=args.d_model,
                                  depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio, max_len=data.max_len,
                                  bayes=args.bayes, prior=args.prior)
    weights = sum(s.numel for s in model.sites.values())
    print(f"model: d_model={args.d_model} depth={args.depth} heads={args.heads} prior={args.prior}: "
          f"{weights} Bayesian weights; {args.chains} chains x ({args.warmup} warm-up + {args.draws} draws), "
          f"max tree depth {args.max_tree_depth}, {'dense' if args.dense_mass else 'diagonal'} mass, "
          f"init={args.init}, jit={args.jit}")
    wall, cpu = time.perf_counter(), cpu_seconds()
    post = fit(model, data.train, guide="nuts", steps=args.map_steps, lr=args.lr, seed=args.seed,
               progress=not args.no_progress, num_chains=args.chains, warmup=args.warmup, num_samples=args.draws,
               max_tree_depth=args.max_tree_depth, target_accept=args.target_accept, dense_mass=args.dense_mass,
               jit_compile=args.jit, init=args.init, workers=args.workers)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"pyro: chain starts ({args.init}) took {post.info['start_time']:.0f} s of the wall time")
    report("pyro", post, data, wall, cpu)
    if not args.no_numpyro:
        numpyro_compare(model, data, args)
    return 0


def cpu_seconds():
    """CPU time of this process and of its finished children (the chains of ``--workers``)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def report(name, post, data, wall, cpu):
    fs = function_space(post, data.test.x, data.test.mask)
    ws = weight_space(post)
    stats = post.info["sample_stats"]
    probs = post.predict(data.test.x, mask=data.test.mask)
    metrics = evaluate(probs, data.test.y)
    per_chain = [evaluate(p, data.test.y) for p in probs.chunk(post.info["chains"])]  # chains in different modes?
    print(f"{name}: wall {wall:.0f} s (cpu {cpu:.0f} s); function-space R-hat max {fs['rhat_max']:.3f} "
          f"(median {fs['rhat_median']:.3f}, {100 * fs['rhat_over_1.05']:.0f}% over 1.05), "
          f"bulk ESS min {fs['ess_bulk_min']:.1f} (median {fs['ess_bulk_median']:.0f}), tail ESS min "
          f"{fs['ess_tail_min']:.1f}; min ESS/s {fs['ess_bulk_min'] / wall:.3f} (per cpu s "
          f"{fs['ess_bulk_min'] / cpu:.3f})")
    print(f"{name}: weight-space R-hat max {ws['rhat_max']:.3f} (median {ws['rhat_median']:.3f}), bulk ESS min "
          f"{ws['ess_bulk_min']:.1f}; divergences {post.info['divergences']}; tree depth mean "
          f"{stats['tree_depth'].mean():.2f} (at max {100 * (stats['tree_depth'] >= post.info['max_tree_depth']).mean():.0f}%); "
          f"step size {stats['step_size'][:, -1].round(4).tolist()}; accept {stats['accept_prob'].mean():.2f}")
    print(f"{name}: test accuracy {metrics['accuracy']:.3f}, nll {metrics['nll']:.3f}, ece {metrics['ece']:.3f}")
    print(f"{name}: per chain test accuracy {[round(m['accuracy'], 3) for m in per_chain]}, "
          f"nll {[round(m['nll'], 3) for m in per_chain]}")


def jax_forward(model, x):
    """The zoo network's forward pass in JAX, params -> logits on the torch inputs ``x``: generated from the torch
    network by ``benchmarks.array_port``, so the NumPyro run computes what the Pyro run does."""
    import jax
    import jax.numpy as jnp

    return port(model.net, x, jnp, jax.scipy.special.erf)


def numpyro_run(model, data, args):
    """The same model, prior, chain starts and NUTS settings in NumPyro; returns a draws-based Posterior."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, NUTS, init_to_value

    from inference import Posterior
    from inference.mcmc import chain_start
    from priors import Gaussian

    if not isinstance(model.prior, Gaussian) or model.prior.fan_in:
        raise ValueError("the NumPyro port supports the isotropic gaussian prior only")
    scale = model.prior.scale
    fixed = {n: jnp.asarray(p.detach().cpu().numpy()) for n, p in model.net.named_parameters() if n not in model.sites}
    y = jnp.asarray(data.train.y.numpy())

    forward = jax_forward(model, data.train.x)

    def jmodel():
        p = dict(fixed)
        for n, site in model.sites.items():
            p[n] = numpyro.sample(n, ndist.Normal(0.0, scale).expand(site.shape).to_event(len(site.shape)))
        numpyro.sample("y", ndist.Categorical(logits=forward(p)), obs=y)

    starts = [chain_start(model, (data.train.x, data.train.y, data.train.mask), args.init, args.map_steps, args.lr,
                          1.0, args.seed + c) for c in range(args.chains)]  # the Pyro run's chain starts
    chains = []
    wall, cpu = time.perf_counter(), time.process_time()
    for c, start in enumerate(starts):  # one chain after another, as the Pyro run does
        kernel = NUTS(jmodel, max_tree_depth=args.max_tree_depth, target_accept_prob=args.target_accept,
                      dense_mass=args.dense_mass,
                      init_strategy=init_to_value(values={n: jnp.asarray(v.detach().cpu().numpy()) for n, v in start.items()}))
        mcmc = MCMC(kernel, num_warmup=args.warmup, num_samples=args.draws, progress_bar=not args.no_progress)
        mcmc.run(jax.random.PRNGKey(args.seed + c), extra_fields=("diverging", "num_steps", "accept_prob",
                                                                   "adapt_state.step_size"))
        chains.append((mcmc.get_samples(), mcmc.get_extra_fields()))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    draws = {n: torch.as_tensor(np.concatenate([np.asarray(s[n]) for s, _ in chains])) for n in model.sites}
    steps = np.stack([np.asarray(e["num_steps"]) for _, e in chains])
    stats = {"diverging": np.stack([np.asarray(e["diverging"]) for _, e in chains]), "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int),
             "step_size": np.stack([np.asarray(e["adapt_state.step_size"]) for _, e in chains]),
             "accept_prob": np.stack([np.asarray(e["accept_prob"]) for _, e in chains])}
    info = {"chains": args.chains, "sample_stats": stats, "divergences": int(stats["diverging"].sum()),
            "max_tree_depth": args.max_tree_depth}
    return Posterior(model, "nuts-numpyro", draws=draws, info=info), wall, cpu


def numpyro_compare(model, data, args):
    try:
        import numpyro  # noqa: F401
    except ImportError:
        print("numpyro: not installed (pip install numpyro jax to time the same model there)")
        return
    post, wall, cpu = numpyro_run(model, data, args)
    print("numpyro: times below exclude the chain starts")
    report("numpyro", post, data, wall, cpu)


if __name__ == "__main__":
    raise SystemExit(main())
