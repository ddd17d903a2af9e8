"""Speed of a training step and of vectorized prediction, as ratios against plain PyTorch.

The workload of issue 2: d_model 64, depth 2, 4 heads, sequence length 64, batch
64, float32, 2 threads. A method's step time is the marginal cost of the
library's own ``inference.fit`` loop, (time of fit with k2 steps - time with k1
steps) / (k2 - k1), so set-up is excluded and nothing is re-implemented here.

Every figure is a ratio measured against its peer in the same round; the rounds
visit every figure in turn (so a burst of load on a shared machine hits them all
alike) and each figure reports its median over the rounds. Figures live in a
registry, ``FIGURES``: a new one is a function of (steps) returning one round's
ratio, registered with ``@figure(name, target, note)``.

    python -m benchmarks.speed                      # or: bzoo bench speed
    python -m benchmarks.speed --only dirichlet_step_ratio,bam_step_ratio --rounds 9
"""
import argparse
import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from inference import fit
from priors import MaskedDirichlet
from priors.kernels import gamma
from zoo import TransformerClassifier
from zoo.models.plain import PlainTransformer, train_step

WORKLOAD = {"d_model": 64, "depth": 2, "heads": 4, "seq_len": 64, "batch": 64}


@dataclass
class Figure:
    one_round: object  # steps -> the ratio measured in one round
    target: tuple = None  # (">=" or "<=", value), or None for a figure reported without a target
    note: str = ""


FIGURES = {}


def figure(name, target=None, note=""):
    """Register ``fn(steps) -> ratio`` as the figure ``name`` (``target`` such as ``("<=", 1.6)``)."""
    def register(fn):
        FIGURES[name] = Figure(fn, target, note)
        return fn
    return register


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(WORKLOAD["batch"], WORKLOAD["seq_len"], 1, generator=g)
    return x, torch.randint(0, 2, (WORKLOAD["batch"],), generator=g)


def _model(bayes="weights"):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=WORKLOAD["d_model"], depth=WORKLOAD["depth"],
                                 heads=WORKLOAD["heads"], bayes=bayes)


def seconds_per_call(fn, calls):
    """Mean seconds of ``fn()`` over ``calls`` calls, after one untimed warm-up call."""
    fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def plain_step_seconds(x, y, steps):
    torch.manual_seed(0)
    net = PlainTransformer(1, 2, WORKLOAD["d_model"], WORKLOAD["depth"], WORKLOAD["heads"])
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    return seconds_per_call(lambda: train_step(net, optim, x, y), steps)


@contextmanager
def time_spent_in(module, names):
    """``with time_spent_in(gamma, [...]) as spent:`` sums the wall seconds of calls to those functions of
    ``module`` made inside the block into ``spent["seconds"]``."""
    spent, originals = {"seconds": 0.0}, {name: getattr(module, name) for name in names}

    def timed(fn):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - started
        return call

    for name, fn in originals.items():
        setattr(module, name, timed(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def fit_step_seconds(guide, x, y, steps, bayes="weights", make=None, exclude=(), **options):
    """Marginal seconds per step of ``inference.fit``, from fits of ``2`` and ``2 + steps`` steps.

    ``make()`` builds the model (default: the workload's transformer with ``bayes``); the time spent inside the
    ``priors.kernels.gamma`` functions named in ``exclude`` is left out (a step with that part for free)."""
    times = []
    for k in (2, 2 + steps):
        model = make() if make else _model(bayes)
        with time_spent_in(gamma, exclude) as spent:
            started = time.perf_counter()
            fit(model, (x, y), guide=guide, steps=k, lr=1e-3, progress=False, **options)
            times.append(time.perf_counter() - started - spent["seconds"])
    return (times[1] - times[0]) / steps


def step_ratio(guide, steps, bayes="weights", exclude=(), **options):
    """One round: a fit step of ``guide`` (less the time in ``exclude``) over the plain step, timed back to back."""
    x, y = _data()
    plain = plain_step_seconds(x, y, steps)
    return fit_step_seconds(guide, x, y, steps, bayes, exclude=exclude, **options) / plain


@figure("map_step_ratio", ("<=", 1.3))
def map_step_ratio(steps):
    return step_ratio("map", steps)


@figure("mean_field_step_ratio", ("<=", 2.0))
def mean_field_step_ratio(steps):
    return step_ratio("mean_field", steps)


@figure("dirichlet_step_ratio", ("<=", 1.6))
def dirichlet_step_ratio(steps):
    return step_ratio("dirichlet", steps, bayes="attention")


@figure("dirichlet_torch_kernels_step_ratio", note="no target: dirichlet_step_ratio with torch's Gamma kernels")
def dirichlet_torch_kernels_step_ratio(steps):
    with gamma.backend("torch"):
        return step_ratio("dirichlet", steps, bayes="attention")


@figure("dirichlet_sampling_ratio", note="no target: the Dirichlet rows alone, drawn, KL and backward")
def dirichlet_sampling_ratio(steps):
    """The Dirichlet attention's own cost, alone: rows drawn, their KL to the prior, and the backward of both.

    One draw per layer of the workload's [B, H, T, T] rows (Gamma sampling, implicit
    reparameterization gradients, closed-form KL), over the plain step: the part of
    ``dirichlet_step_ratio`` that no network design can remove.
    """
    x, y = _data()
    g = torch.Generator().manual_seed(0)
    shape = (WORKLOAD["batch"], WORKLOAD["heads"], WORKLOAD["seq_len"], WORKLOAD["seq_len"])
    logits = torch.randn(shape, generator=g).requires_grad_()
    weight = torch.randn(shape, generator=g)
    prior = MaskedDirichlet(torch.ones(()).expand(shape)).to_event(2)

    def step():
        for _ in range(WORKLOAD["depth"]):
            q = MaskedDirichlet(100 * logits.softmax(-1) + 0.1).to_event(2)
            ((q.rsample() * weight).sum() + kl_divergence(q, prior).sum()).backward()

    plain = plain_step_seconds(x, y, steps)
    return seconds_per_call(step, steps) / plain


@figure("bam_step_ratio", ("<=", 1.3))
def bam_step_ratio(steps):
    return step_ratio("bam", steps, bayes="bam")


@figure("dirichlet_without_sampler_step_ratio", note="no target: dirichlet_step_ratio less its Gamma draws and "
        "their gradients: the floor no sampler can go below")
def dirichlet_without_sampler_step_ratio(steps):
    return step_ratio("dirichlet", steps, bayes="attention", exclude=["dirichlet_rows", "dirichlet_rows_grad"])


@figure("bam_without_sampler_step_ratio", note="no target: bam_step_ratio less its Weibull draws and their "
        "gradients")
def bam_without_sampler_step_ratio(steps):
    return step_ratio("bam", steps, bayes="bam", exclude=["weibull_draws", "weibull_draws_grad"])


@figure("sgpa_step_ratio", ("<=", 2.5))
def sgpa_step_ratio(steps):
    return step_ratio("sgpa", steps, bayes="sgpa")


@figure("cgpt_step_ratio", ("<=", 2.5))
def cgpt_step_ratio(steps):
    return step_ratio("cgpt", steps, bayes="cgpt")


@figure("cgpt_sparse_step_ratio", note="no target: the sparse CGPT, M learned inducing inputs")
def cgpt_sparse_step_ratio(steps):
    return step_ratio("cgpt-sparse", steps, bayes="cgpt-sparse")


@figure("ivon_step_ratio", ("<=", 1.5))
def ivon_step_ratio(steps):
    return step_ratio("ivon", steps)


@figure("fsp_laplace_fit_ratio", note="no target: a whole fsp-laplace fit (MAP under the GP prior, Lanczos, "
                                      "Gauss-Newton products) over a whole MAP fit of as many steps")
def fsp_laplace_fit_ratio(steps):
    x, y = _data()
    seconds = {}
    for guide in ("map", "fsp-laplace"):
        model = _model()
        started = time.perf_counter()
        fit(model, (x, y), guide=guide, steps=steps, lr=1e-3, progress=False)
        seconds[guide] = time.perf_counter() - started
    return seconds["fsp-laplace"] / seconds["map"]


@figure("fsvi_step_ratio", ("<=", 3.0))
def fsvi_step_ratio(steps):
    return step_ratio("fsvi", steps)


@figure("fsvi_last_layer_step_ratio", note="no target: fsvi with only the head Bayesian")
def fsvi_last_layer_step_ratio(steps):
    return step_ratio("fsvi", steps, bayes="last-layer")


@figure("adapter_step_ratio", note="no target: LoRA step / full fine-tune step, same backbone")
def adapter_step_ratio(steps):
    """A MAP step through LoRA adapters (rank 4 on q and v) over a MAP step of a full fine-tune of the same
    backbone (d_model 64, depth 4, mlp 4, patches of 4: the pretraining architecture), on the workload's data."""
    from zoo.models.backbone import Backbone
    from zoo.models.lora import LoRAClassifier

    x, y = _data()
    backbone = Backbone.random()
    full = fit_step_seconds("map", x, y, steps, make=lambda: LoRAClassifier(2, 1, backbone, adapter="full"))
    lora = fit_step_seconds("map", x, y, steps, make=lambda: LoRAClassifier(2, 1, backbone))
    return lora / full


@figure("predictive_vectorized_speedup", (">=", 1.5))
def predictive_vectorized_speedup(steps, draws=32):
    """Time of 32 single-draw predictions in a loop over one 32-draw prediction (chunked by ``core.memory``)."""
    x, y = _data()
    posterior = fit(_model(), (x, y), guide="mean_field", steps=2, progress=False)
    posterior.predict(x, draws)
    started = time.perf_counter()
    posterior.predict(x, draws)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(draws):
        posterior.predict(x, 1)
    return (time.perf_counter() - started) / batched


@figure("ensemble_batched_speedup", note="no target: 5 members in a loop over the 5 batched (> 1: batched is faster)")
def ensemble_batched_speedup(steps, num_members=5, batch_size=None):
    """Seconds per step of ``num_members`` ensemble members fitted one after another, over the same members
    trained as one batched model (``fit(guide="ensemble", batched=True)``; minibatches go through vmap)."""
    x, y = _data()
    loop = fit_step_seconds("ensemble", x, y, steps, num_members=num_members, batched=False, batch_size=batch_size)
    batched = fit_step_seconds("ensemble", x, y, steps, num_members=num_members, batched=True, batch_size=batch_size)
    return loop / batched


@figure("ensemble_batched_speedup_minibatch", note="the same with minibatches of 16, each member its own (vmap)")
def ensemble_batched_speedup_minibatch(steps):
    return ensemble_batched_speedup(steps, batch_size=16)


def measure(rounds=5, steps=20, threads=2, only=None):
    """Median over ``rounds`` of each figure (all of them, or the names in ``only``), rounds interleaved."""
    torch.set_num_threads(threads)
    names = list(FIGURES) if only is None else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    values = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            values[name].append(FIGURES[name].one_round(steps))
    return {name: statistics.median(v) for name, v in values.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bzoo bench speed", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated figures (default all: {', '.join(FIGURES)})")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        results = measure(args.rounds, args.steps, args.threads, only)
    except ValueError as e:
        parser.error(str(e))
    print(f"workload: {WORKLOAD}, float32, {args.threads} threads, median of {args.rounds} interleaved rounds")
    for key, value in results.items():
        spec = FIGURES[key]
        if spec.target is None:
            print(f"{key:36s} {value:6.2f}   ({spec.note})")
            continue
        op, target = spec.target
        met = value <= target if op == "<=" else value >= target
        print(f"{key:36s} {value:6.2f}   target {op} {target}  {'met' if met else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    main()
