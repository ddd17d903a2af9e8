"""``dirichlet_step_ratio``: an ``inference.fit`` step with the ``dirichlet`` guide against a plain PyTorch step.

The workload of the foundation benchmark (``benchmarks/speed.py``): d_model 64, depth
2, 4 heads, batch 64 of sequences of length 64, float32, ``threads`` threads. The
plain side is ``benchmarks.plain.train_step`` (Adam + cross-entropy); the dirichlet
side is the marginal cost of the library's own fit loop, (time of a fit of
``2 + steps`` steps - time of a fit of 2 steps) / ``steps``, so set-up is excluded and
the step is exactly what users run: the ELBO (one pass of the network, attention
rows drawn by implicit reparameterization, closed-form KL), backward, Adam. The two
are timed in alternating rounds and the median ratio is reported (machines are noisy).
"""
import statistics
import time

import torch

import zoo
from benchmarks.plain import PlainTransformer, train_step
from inference import fit

SHAPE = dict(d_model=64, depth=2, heads=4)
BATCH, LENGTH = 64, 64


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, LENGTH, 1, generator=g), torch.randint(0, 2, (BATCH,), generator=g)


def _plain_seconds(x, y, steps):
    torch.manual_seed(0)
    net = PlainTransformer(1, 2, **SHAPE)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    train_step(net, optim, x, y)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(net, optim, x, y)
    return (time.perf_counter() - start) / steps


def _fit_seconds(x, y, steps, guide, bayes):
    times = []
    for k in (2, 2 + steps):
        torch.manual_seed(0)
        model = zoo.TransformerClassifier(2, input_dim=1, bayes=bayes, **SHAPE)
        start = time.perf_counter()
        fit(model, (x, y), guide=guide, steps=k, lr=1e-3, progress=False)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps


def dirichlet_step_ratio(threads=2, repeats=5, steps=10, guide="dirichlet", bayes="attention"):
    """Median over ``repeats`` rounds of (fit step with ``guide``) / (plain step); target <= 1.6.

    Returns ``{"dirichlet_step_ratio", "plain_step_s", "dirichlet_step_s", "threads", "repeats", "steps"}``
    (the seconds are medians too). ``guide="bam", bayes="bam"`` times the BAM guide instead.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, y = _data()
        plain, svi = [], []
        for _ in range(repeats):
            plain.append(_plain_seconds(x, y, steps))
            svi.append(_fit_seconds(x, y, steps, guide, bayes))
        return {"dirichlet_step_ratio": statistics.median(s / p for s, p in zip(svi, plain)),
                "plain_step_s": statistics.median(plain), "dirichlet_step_s": statistics.median(svi),
                "threads": threads, "repeats": repeats, "steps": steps}
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    print(dirichlet_step_ratio())
