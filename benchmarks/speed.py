"""Speed of a training step and of vectorized prediction, as ratios against plain PyTorch.

The workload of issue 2: d_model 64, depth 2, 4 heads, sequence length 64, batch
64, float32, 2 threads. A method's step time is the marginal cost of the
library's own ``inference.fit`` loop, (time of fit with k2 steps - time with k1
steps) / (k2 - k1), so set-up is excluded and nothing is re-implemented here. Plain
PyTorch and each method are timed in alternating rounds and the median ratio is
reported, since the machines are noisy.
"""
import argparse
import json
import statistics
import time

import torch
from torch.distributions import kl_divergence

from inference import fit
from priors import MaskedDirichlet
from zoo import TransformerClassifier
from zoo.models.plain import PlainTransformer, train_step

WORKLOAD = {"d_model": 64, "depth": 2, "heads": 4, "seq_len": 64, "batch": 64}


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


def fit_step_seconds(guide, x, y, steps, bayes="weights", make=None, **options):
    """Marginal seconds per step of ``inference.fit``, from fits of ``2`` and ``2 + steps`` steps.

    ``make()`` builds the model (default: the workload's transformer with ``bayes``)."""
    times = []
    for k in (2, 2 + steps):
        model = make() if make else _model(bayes)
        started = time.perf_counter()
        fit(model, (x, y), guide=guide, steps=k, lr=1e-3, progress=False, **options)
        times.append(time.perf_counter() - started)
    return (times[1] - times[0]) / steps


def step_ratio(guide, rounds, steps, bayes="weights", **options):
    x, y = _data()
    ratios = []
    for _ in range(rounds):
        plain = plain_step_seconds(x, y, steps)
        ratios.append(fit_step_seconds(guide, x, y, steps, bayes, **options) / plain)
    return statistics.median(ratios)


def dirichlet_sampling_ratio(rounds, steps):
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

    ratios = []
    for _ in range(rounds):
        plain = plain_step_seconds(x, y, steps)
        ratios.append(seconds_per_call(step, steps) / plain)
    return statistics.median(ratios)


def adapter_step_ratio(rounds, steps):
    """A MAP step through LoRA adapters (rank 4 on q and v) over a MAP step of a full fine-tune of the same
    backbone (d_model 64, depth 4, mlp 4, patches of 4: the pretraining architecture), on the workload's data."""
    from zoo.models.backbone import Backbone
    from zoo.models.lora import LoRAClassifier

    x, y = _data()
    backbone = Backbone.random()
    ratios = []
    for _ in range(rounds):
        full = fit_step_seconds("map", x, y, steps, make=lambda: LoRAClassifier(2, 1, backbone, adapter="full"))
        lora = fit_step_seconds("map", x, y, steps, make=lambda: LoRAClassifier(2, 1, backbone))
        ratios.append(lora / full)
    return statistics.median(ratios)


def predictive_vectorized_speedup(rounds, draws=32):
    """Time of 32 single-draw predictions in a loop over one 32-draw vectorized prediction."""
    x, y = _data()
    posterior = fit(_model(), (x, y), guide="mean_field", steps=2, progress=False)
    posterior.predict(x, draws)
    speedups = []
    for _ in range(rounds):
        started = time.perf_counter()
        posterior.predict(x, draws)
        batched = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(draws):
            posterior.predict(x, 1)
        speedups.append((time.perf_counter() - started) / batched)
    return statistics.median(speedups)


def measure(rounds=5, steps=20, threads=2):
    torch.set_num_threads(threads)
    results = {
        "map_step_ratio": step_ratio("map", rounds, steps),
        "mean_field_step_ratio": step_ratio("mean_field", rounds, steps),
        "dirichlet_step_ratio": step_ratio("dirichlet", rounds, steps, bayes="attention"),
        "dirichlet_sampling_ratio": dirichlet_sampling_ratio(rounds, steps),
        "predictive_vectorized_speedup": predictive_vectorized_speedup(rounds),
        "adapter_step_ratio": adapter_step_ratio(rounds, steps),
    }
    return results


TARGETS = {"map_step_ratio": ("<=", 1.3), "mean_field_step_ratio": ("<=", 2.0),
           "predictive_vectorized_speedup": (">=", 4.0), "dirichlet_step_ratio": ("<=", 1.6)}
NOTES = {"dirichlet_sampling_ratio": "no target: the Dirichlet rows alone, drawn, KL and backward",
         "adapter_step_ratio": "no target: LoRA step / full fine-tune step, same backbone"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bzoo bench speed", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results = measure(args.rounds, args.steps, args.threads)
    print(f"workload: {WORKLOAD}, float32, {args.threads} threads, median of {args.rounds} rounds")
    for key, value in results.items():
        if key in NOTES:
            print(f"{key:32s} {value:6.2f}   ({NOTES[key]})")
            continue
        op, target = TARGETS[key]
        met = value <= target if op == "<=" else value >= target
        print(f"{key:32s} {value:6.2f}   target {op} {target}  {'met' if met else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    main()
