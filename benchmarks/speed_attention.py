"""``dirichlet_step_ratio``: one SVI step with the ``dirichlet`` attention guide against one plain PyTorch step.

Both train the same architecture (d_model 64, depth 2, 4 heads) on the same float32
batch (64 sequences of length 64) with Adam, in the same process and the same
thread count. Steps of the two are interleaved and each side reports its median,
so a busy machine slows both alike. The SVI step is what ``inference.fit`` does per
step: the ELBO (one pass of the network, attention rows drawn by
``Dirichlet``-style implicit reparameterization, closed-form KL), backward, Adam.
"""
import statistics
import time

import torch

import inference
import zoo
from benchmarks.plain import PlainTransformer, train_step
from inference.elbo import elbo_terms

SHAPE = dict(d_model=64, depth=2, heads=4, mlp_ratio=2)
BATCH, LENGTH, CHANNELS, CLASSES = 64, 64, 1, 2


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def dirichlet_step_ratio(threads=2, repeats=20, warmup=3, seed=0):
    """Median seconds per step of each, and their ratio (target <= 1.6)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        x = torch.randn(BATCH, LENGTH, CHANNELS)
        y = torch.randint(0, CLASSES, (BATCH,))
        plain = PlainTransformer(CHANNELS, CLASSES, **SHAPE)
        plain_optim = torch.optim.Adam(plain.parameters(), lr=1e-3)
        model = zoo.TransformerClassifier(CLASSES, input_dim=CHANNELS, bayes="attention", **SHAPE)
        guide = inference.GUIDES["dirichlet"](model, x[:2], y[:2], None)
        params = [p for p in [*model.parameters(), *guide.parameters()] if p.requires_grad]
        optim = torch.optim.Adam(params, lr=1e-3)

        def svi_step():
            loss = elbo_terms(model, guide, x, y, None, BATCH).loss()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        def plain_step():
            train_step(plain, plain_optim, x, y)

        for _ in range(warmup):
            plain_step()
            svi_step()
        times = {"plain": [], "dirichlet": []}
        for _ in range(repeats):
            times["plain"].append(_timed(plain_step))
            times["dirichlet"].append(_timed(svi_step))
        plain_s, dirichlet_s = statistics.median(times["plain"]), statistics.median(times["dirichlet"])
        return {"plain_step_s": plain_s, "dirichlet_step_s": dirichlet_s, "dirichlet_step_ratio": dirichlet_s / plain_s,
                "threads": threads, "repeats": repeats}
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    print(dirichlet_step_ratio())
