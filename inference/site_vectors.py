"""Site values as one flat vector and back, and a MAP fit's site values: the space every Laplace path (``laplace``,
``fsp-laplace``, ``laplace_lora``, and ``swag_lora`` beside them) puts its Gaussian over, spelled once."""
import math

import torch


def mode(posterior):
    """Site name -> value of a point-estimate (MAP) posterior."""
    return {n: v[0] for n, v in posterior.sample(1).items()}


def flatten(values, names=None):
    """The site ``values`` (name -> tensor) as one vector, in ``names`` order (default: ``values``' own)."""
    return torch.cat([values[n].reshape(-1) for n in (values if names is None else names)])


def unflatten(theta, names, shapes):
    """Vectors ``theta`` [..., P] as name -> [..., *shape], in ``names`` order: ``flatten`` undone, over any
    leading dimensions (a batch of draws)."""
    sizes = [math.prod(shape) for shape in shapes]
    return {n: t.reshape(*theta.shape[:-1], *shape) for n, t, shape in zip(names, theta.split(sizes, -1), shapes)}
