"""The prior interface: one method that maps a sample site to a distribution."""
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch


class PriorError(ValueError):
    """A prior was given an invalid parameter or cannot serve a site."""


@dataclass(frozen=True)
class Site:
    """What a prior may know about a sample site: never which model it is in.

    ``role`` is one of ``weight``, ``bias``, ``embedding``, ``norm`` or
    ``attention``; ``context`` carries data-dependent inputs for priors that need them: an attention
    layer's record from ``priors.context`` (its keys, mask, kernel hyperparameters), None elsewhere.
    """

    name: str
    shape: tuple
    fan_in: int
    role: str = "weight"
    context: object = field(default=None, compare=False, hash=False, repr=False)

    @property
    def numel(self):
        return prod(self.shape)


class Prior:
    """Base class: ``prior(site)`` returns a distribution whose event shape is ``site.shape``.

    A prior may itself call ``pyro.sample`` (hierarchical priors do), so it is
    called inside the model, once per site and model run.
    """

    def __call__(self, site: Site) -> dist.Distribution:
        raise NotImplementedError

    def spec(self) -> str:
        """The ``NAME:key=value`` string that rebuilds this prior (see ``priors.parse``)."""
        raise NotImplementedError

    def __repr__(self):
        return self.spec()


FLOAT32 = (1.1754943508222875e-38, 3.4028234663852886e38)  # smallest normal and largest float32: the models' type


def positive(name, value, prior):
    """Check a positive prior parameter, naming the prior and parameter when it is not.

    The value must also survive the models' float32: 1e-60 would become 0 and 1e60
    infinity, failing only inside the first fit step.
    """
    if isinstance(value, bool):
        raise PriorError(f"{prior}: parameter '{name}' must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PriorError(f"{prior}: parameter '{name}' must be a number, got {value!r}") from None
    if not value > 0 or value == float("inf"):
        raise PriorError(f"{prior}: parameter '{name}' must be positive and finite, got {value}")
    if not FLOAT32[0] <= value <= FLOAT32[1]:
        raise PriorError(f"{prior}: parameter '{name}'={value:g} is not representable in float32 (the models' "
                         f"type); use a value between {FLOAT32[0]:.3g} and {FLOAT32[1]:.3g}")
    return value


def flag(name, value, prior):
    """Check a true/false prior parameter strictly: ``"no"`` or ``1`` is refused, never read as true."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, (bool, np.bool_)):
        raise PriorError(f"{prior}: parameter '{name}' must be true or false, got {value!r}")
    return bool(value)


def independent(base, site):
    """Expand an elementwise distribution to the site's shape as one event."""
    return base.expand(site.shape).to_event(len(site.shape))


def format_spec(name, params):
    """``gaussian`` + ``{"scale": 1.0}`` -> ``gaussian:scale=1``."""
    def show(v):
        return str(v).lower() if isinstance(v, bool) else f"{v:g}"
    return name + (":" + ",".join(f"{k}={show(v)}" for k, v in params.items()) if params else "")


def resolve(path, base=None):
    """``path`` as given if absolute, else relative to ``base`` (when given): how a prior file names another."""
    path = Path(path)
    return path if base is None or path.is_absolute() else Path(base) / path


def read_weights(file, prior, shown=None):
    """A weights file's state dict of tensors (``bzoo fit --guide map`` writes ``weights.pt``), or a one-line
    PriorError naming ``prior`` and the file as the user gave it (``shown``, default ``file``)."""
    shown = file if shown is None else shown
    if not Path(file).is_file():
        raise PriorError(f"{prior}: weights file '{file}' does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input error
        raise PriorError(f"{prior}: cannot read weights file '{shown}': {str(e).strip().splitlines()[0]}") from None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise PriorError(f"{prior}: '{shown}' must hold a state dict of tensors")
    return state
