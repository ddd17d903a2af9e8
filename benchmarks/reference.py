"""``bzoo bench reference``: the many-chain reference (``guide="reference"``), judged in function space.

Fits the reference twice, with different seeds (so different deep ensembles and
random numbers), and prints as ``name=value``: ``rhat`` (worst nested R-hat over
every held-out predictive probability, superchains = ensemble members), ``ess``
(lowest bulk ESS over them, all chains together), ``agreement`` (mean absolute
difference between the two runs' held-out predictive probabilities), ``wall`` and
``cpu`` (seconds for one run, worker processes included) and ``load`` (the
machine's load average while it ran). With ``--nuts``, NUTS from the same
ensemble (same seed) in the same run, for comparison.
"""
import argparse
import os
import time

import torch

from inference import evaluate, fit, function_space, predictive_distance
from zoo import TransformerClassifier, recipes
from zoo.data import load
from zoo.models import default_patch

from .nuts import cpu_seconds

MODEL = {**recipes.MODEL, **recipes.REFERENCE["model"]}
OPTIONS = recipes.REFERENCE["options"]
TARGETS = {"rhat": 1.05, "ess": 200, "agreement": 0.01, "wall": 600}


def parse(argv):
    p = argparse.ArgumentParser(prog="bzoo bench reference", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ItalyPowerDemand")
    p.add_argument("--d-model", type=int, default=MODEL["d_model"])
    p.add_argument("--depth", type=int, default=MODEL["depth"])
    p.add_argument("--heads", type=int, default=MODEL["heads"])
    p.add_argument("--mlp-ratio", type=int, default=MODEL["mlp_ratio"])
    p.add_argument("--prior", default=recipes.PRIOR)
    p.add_argument("--members", type=int, default=OPTIONS["num_members"], help="ensemble members = superchains")
    p.add_argument("--chains", type=int, default=OPTIONS["num_chains"], help="chains in all (a multiple of members)")
    p.add_argument("--warmup", type=int, default=OPTIONS["warmup"])
    p.add_argument("--draws", type=int, default=OPTIONS["num_samples"], help="draws kept per chain")
    p.add_argument("--thin", type=int, default=OPTIONS["thin"], help="MCLMC steps per kept draw")
    p.add_argument("--energy-var", type=float, default=OPTIONS.get("energy_var", 5e-4))
    p.add_argument("--integrator", default=OPTIONS.get("integrator", "mclachlan"), choices=["mclachlan", "leapfrog"])
    p.add_argument("--map-steps", type=int, default=OPTIONS["steps"])
    p.add_argument("--lr", type=float, default=OPTIONS["lr"])
    p.add_argument("--workers", type=int, default=OPTIONS["workers"], help="processes (one per core)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--seed", type=int, default=0, help="the first run's seed; the second run uses seed + 1")
    p.add_argument("--runs", type=int, default=2, choices=[1, 2], help="2 measures agreement")
    p.add_argument("--nuts", action="store_true", help="also NUTS from the same ensemble (seed), for comparison")
    p.add_argument("--nuts-chains", type=int, default=None, help="NUTS chains (default: one per member)")
    p.add_argument("--nuts-warmup", type=int, default=150)
    p.add_argument("--nuts-draws", type=int, default=150)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data = load(args.dataset)
    model_options = dict(d_model=args.d_model, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
                         max_len=data.max_len, patch=1 if data.tokens else default_patch(data.max_len),
                         prior=args.prior)
    weights = sum(s.numel for s in build(data, model_options, 0).sites.values())
    print(f"model: {args.dataset}, d_model={args.d_model} depth={args.depth} heads={args.heads} "
          f"mlp_ratio={args.mlp_ratio} prior={args.prior}: {weights} Bayesian weights; {args.members} members x "
          f"{args.chains // max(args.members, 1)} chains, warm-up {args.warmup}, {args.draws} draws x thin "
          f"{args.thin}, {args.integrator}, energy_var {args.energy_var}, {args.workers} workers")
    options = dict(steps=args.map_steps, lr=args.lr, num_members=args.members, progress=not args.no_progress,
                   workers=args.workers)
    mclmc = dict(options, sampler="mclmc", num_chains=args.chains, warmup=args.warmup, num_samples=args.draws,
                 thin=args.thin, energy_var=args.energy_var, integrator=args.integrator)
    runs = [timed(data, model_options, args.seed + r, mclmc, f"run {r + 1}") for r in range(args.runs)]
    first = runs[0]
    figures = {"rhat": first["fs"]["nrhat_max"], "ess": first["fs"]["ess_bulk_min"]}
    if args.runs == 2:
        figures["agreement"] = predictive_distance(runs[0]["mean"], runs[1]["mean"])["tv"]
    figures.update(wall=first["wall"], cpu=first["cpu"], load=first["load"])
    if args.nuts:
        nuts = dict(options, sampler="nuts", num_chains=args.nuts_chains or args.members, warmup=args.nuts_warmup,
                    num_samples=args.nuts_draws, max_tree_depth=OPTIONS.get("max_tree_depth", 6), dense_mass=True,
                    jit_compile=True)
        other = timed(data, model_options, args.seed, nuts, "nuts")
        figures.update(nuts_rhat=other["fs"]["nrhat_max"], nuts_ess=other["fs"]["ess_bulk_min"],
                       nuts_wall=other["wall"], nuts_cpu=other["cpu"],
                       nuts_vs_mclmc=predictive_distance(other["mean"], first["mean"])["tv"])
    for name, value in figures.items():
        print(f"{name}={value:.4g}")
    met = [name for name, goal in TARGETS.items() if name in figures
           and (figures[name] <= goal if name != "ess" else figures[name] >= goal)]
    goals = ", ".join(f"{n} {'>=' if n == 'ess' else '<='} {g}" for n, g in TARGETS.items())
    print(f"targets: {goals}; met: {', '.join(met) or 'none'}")
    return 0


def build(data, model_options, seed):
    torch.manual_seed(seed)
    return TransformerClassifier(data.num_classes, input_dim=data.input_dim, vocab_size=None, **model_options)


def timed(data, model_options, seed, options, label):
    """One reference fit: its function-space diagnostics, test metrics, mean test probabilities, wall, cpu, load."""
    model = build(data, model_options, seed)
    wall, cpu, load0 = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    post = fit(model, data.train, guide="reference", seed=seed, **options)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    load1 = os.getloadavg()
    fs = function_space(post, data.test.x, data.test.mask)
    probs = post.predict(data.test.x, mask=data.test.mask)
    metrics = evaluate(probs, data.test.y)
    per_member = [evaluate(p, data.test.y) for p in probs.chunk(post.info["superchains"])]
    info = post.info
    print(f"{label} ({options['sampler']}, seed {seed}): wall {wall:.0f} s, cpu {cpu:.0f} s (ensemble "
          f"{info['ensemble_time']:.0f} s wall), load {load0:.1f} -> {load1[0]:.1f} (5 min {load1[1]:.1f})")
    if options["sampler"] == "mclmc":
        eps, L = torch.tensor(info["step_size"]), torch.tensor(info["L"])
        squared = torch.as_tensor(info["sample_stats"]["energy_change"]) ** 2 / weights_of(post)
        q = squared.flatten().quantile(torch.tensor([0.5, 0.99], dtype=squared.dtype))
        print(f"{label}: step size {eps.min():.3g}-{eps.max():.3g} (median {eps.median():.3g}), L {L.min():.3g}-"
              f"{L.max():.3g}, energy error variance per dim {info['energy_var_measured']:.2e} (target "
              f"{info['energy_var']:.0e}; squared energy error per dim: median {q[0]:.2e}, 99% {q[1]:.2e}), "
              f"failed steps {info['divergences']}")
    else:
        stats = info["sample_stats"]
        print(f"{label}: tree depth mean {stats['tree_depth'].mean():.2f}, divergences {info['divergences']}")
    print(f"{label}: function space: nested R-hat max {fs['nrhat_max']:.3f} (median {fs['nrhat_median']:.3f}, "
          f"{100 * fs['nrhat_over_1.05']:.0f}% over 1.05); R-hat max {fs['rhat_max']:.3f} (median "
          f"{fs['rhat_median']:.3f}); bulk ESS min {fs['ess_bulk_min']:.0f} (median {fs['ess_bulk_median']:.0f}), "
          f"tail ESS min {fs['ess_tail_min']:.0f}; variance between modes {fs['between_mode']:.2e}, within "
          f"{fs['within_mode']:.2e} (between share {fs['between_mode_share']:.2f})")
    print(f"{label}: test accuracy {metrics['accuracy']:.3f}, nll {metrics['nll']:.3f}, ece {metrics['ece']:.3f}; "
          f"per member accuracy {[round(m['accuracy'], 3) for m in per_member]}, "
          f"nll {[round(m['nll'], 3) for m in per_member]}")
    return {"fs": fs, "mean": probs.mean(0), "wall": wall, "cpu": cpu, "load": (load0 + load1[0]) / 2}


def weights_of(post):
    return sum(v[0].numel() for v in post.draws.values())


if __name__ == "__main__":
    raise SystemExit(main())
