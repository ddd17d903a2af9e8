"""The one optimizer schedule every gradient fit in the zoo trains with, so that rows differ in what they fit,
not in how they are optimized."""
import torch


def adam_cosine(params, lr, steps):
    """(Adam at ``lr``, its schedule): cosine decay to ``lr / 10`` over ``steps`` steps."""
    optim = torch.optim.Adam(params, lr=lr)
    return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(steps, 1), eta_min=lr / 10)
