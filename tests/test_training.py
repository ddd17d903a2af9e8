"""The one MAP loop (core.training.minimize) on problems whose answer is known in closed form: a least-squares
minimum, and Adam's steps on a linear loss, which are exactly the schedule's learning rates."""
import math

import pytest
import torch

from core.training import minimize


def test_it_takes_exactly_steps_steps_each_with_its_own_batch():
    x = torch.ones(2, requires_grad=True)
    calls = []

    def loss(step, batch):
        calls.append((step, batch))
        return x.square().sum() * batch
    losses = minimize(loss, [x], 0.1, 3, batches=iter([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert calls == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert len(losses) == 3
    assert minimize(lambda step, batch: x.sum(), [x], 0.1, 0) == []


def test_without_batches_every_step_reads_none():
    x = torch.ones(2, requires_grad=True)
    batches = []

    def loss(step, batch):
        assert step < 4, "a step beyond steps"  # fails here rather than running forever
        batches.append(batch)
        return x.sum()
    minimize(loss, [x], 0.1, 4)
    assert batches == [None] * 4


def test_it_reaches_the_least_squares_minimum():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    losses = minimize(lambda step, batch: (a @ x - b).square().sum(), [x], 0.1, 2000)
    best = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    assert torch.allclose(x.detach(), best, atol=1e-6)
    assert losses[0] == pytest.approx(b.square().sum().item())  # the loss before the first step
    assert losses[-1] == pytest.approx((a @ best - b).square().sum().item(), rel=1e-9)


def test_each_step_takes_the_cosine_schedules_learning_rate():
    """On ``loss = x`` Adam's bias-corrected step is lr_t / (1 + eps): the steps are the schedule, lr to lr / 10."""
    x = torch.zeros((), dtype=torch.float64, requires_grad=True)
    seen = []

    def loss(step, batch):
        seen.append(x.item())
        return x
    lr, steps = 0.5, 20
    minimize(loss, [x], lr, steps)
    taken = [before - after for before, after in zip(seen, [*seen[1:], x.item()])]
    schedule = [lr / 10 + (lr - lr / 10) * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert taken == pytest.approx([rate / (1 + 1e-8) for rate in schedule], rel=1e-9)
    assert taken[0] == pytest.approx(lr) and lr / 10 < taken[-1] < 1.1 * lr / 10  # lr / 10 is the next
