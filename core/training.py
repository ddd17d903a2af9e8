"""The one optimizer schedule every gradient fit in the zoo trains with, and the one MAP loop that uses it, so that
rows differ in what they fit, not in how they are optimized."""
import itertools

import torch
from tqdm.auto import tqdm


def adam_cosine(params, lr, steps):
    """(Adam at ``lr``, its schedule): cosine decay to ``lr / 10`` over ``steps`` steps."""
    optim = torch.optim.Adam(params, lr=lr)
    return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(steps, 1), eta_min=lr / 10)


def minimize(loss, params, lr, steps, batches=None, progress=False, desc="fit"):
    """Minimize ``loss(step, batch)`` over ``params`` by ``steps`` steps of ``adam_cosine``; the loss at each step.

    ``batches`` gives each step what its loss reads (for example ``core.tensors.minibatches``' indices; ``None``
    every step when not given). ``progress`` shows a bar with the time left, labelled ``desc``. The losses are read
    back once, at the end, so that a fit on a GPU never waits for one step before it queues the next.
    """
    optim, schedule = adam_cosine(params, lr, steps)
    batches = itertools.repeat(None) if batches is None else batches
    bar = tqdm(itertools.islice(batches, steps), total=steps, desc=desc, disable=not progress, leave=False)
    losses = []
    for step, batch in enumerate(bar):
        value = loss(step, batch)
        optim.zero_grad(set_to_none=True)
        value.backward()
        optim.step()
        schedule.step()
        losses.append(value.detach())
    return torch.stack(losses).tolist() if losses else []
