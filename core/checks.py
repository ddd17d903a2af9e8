"""Checks on what a fit, a prediction or a command is given, before any work starts.

One mechanism for every value a user passes: a ``Rule`` says what is valid, and
``check(values, rules, error)`` refuses the first value its rule does not accept
with one line, ``"<name> must be <what is valid>, got <value>"``, raised as the
caller's own exception type. The Python API names arguments as they are spelled
there (``steps``); the command line passes ``spell`` to name its flags
(``--steps``), so both say the same thing. Data, devices, seeds and memory have
checks of their own below, with the same one-line messages.
"""
from typing import Callable, NamedTuple

import torch

from .memory import available
from .schema import is_integer, is_number


class DataError(ValueError):
    """A dataset name or data file is invalid; the message names it."""


class CheckError(ValueError):
    """A value given to the library is invalid (device, seed, memory); the message names it."""


# --- values ---------------------------------------------------------------------------------------------------

class Rule(NamedTuple):
    ok: Callable[[object], bool]
    valid: str  # what is valid, as it reads after "must be"


def integer(minimum=None, maximum=None, optional=False):
    """A whole number in [minimum, maximum] (bools are not numbers here)."""
    bounds = ([f">= {minimum}"] if minimum is not None else []) + ([f"<= {maximum}"] if maximum is not None else [])
    return Rule(lambda v: (optional and v is None) or (is_integer(v) and (minimum is None or v >= minimum)
                                                       and (maximum is None or v <= maximum)),
                ("None or " if optional else "") + " ".join(["an integer", " and ".join(bounds)]).strip())


def number(low=None, high=None, low_open=True, high_open=True, optional=False):
    """A finite real number in the interval given by ``low`` and ``high`` (open ends by default)."""
    def inside(v):
        return (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))
    if low == 0 and low_open and high is None:
        what = "a positive finite number"
    elif low is None and high is None:
        what = "a finite number"
    else:
        what = (f"a number in {'(' if low_open else '['}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{')' if high_open else ']'}")
    return Rule(lambda v: (optional and v is None) or (is_number(v) and inside(v)), ("None or " if optional else "") + what)


def boolean():
    return Rule(lambda v: isinstance(v, bool), "true or false")


def one_of(values):
    values = tuple(values)
    return Rule(lambda v: v in values, "one of " + ", ".join(map(str, values)))


def check(values, rules, error, spell=str):
    """Refuse the first of ``values`` (name -> value) that its rule in ``rules`` does not accept.

    ``error`` is the exception type to raise; ``spell(name)`` is how the message names
    the value (the command line passes one that gives ``--flag-name``).
    """
    for name, value in values.items():
        ok, valid = rules[name]
        if not ok(value):
            raise error(f"{spell(name)} must be {valid}, got {value!r}")


def check_seed(seed, error=CheckError, spell=str):
    check({"seed": seed}, {"seed": integer(0, 2 ** 32 - 1)}, error, spell)
    return seed


# --- devices and memory ------------------------------------------------------------------------------------------

def check_device(device, error=CheckError, name="device"):
    """``device`` as a ``torch.device`` if this machine has it, else one line naming what it has.

    Torch knows many device types (``mps``, ``xla``, ``cuda:7``) that a given machine
    lacks; moving a model there fails deep inside torch, so it is refused here.
    """
    if isinstance(device, torch.device):
        parsed = device
    else:
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError):
            raise error(f"{name} '{device}' is not a device; use {available_devices()}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise error(f"{name} '{device}': CUDA is not available on this machine; use {available_devices()}")
        if parsed.index is not None and parsed.index >= count:
            raise error(f"{name} '{device}': this machine has {count} CUDA device(s); use {available_devices()}")
        return parsed
    if parsed.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return parsed
    raise error(f"{name} '{device}': this machine has no {parsed.type} device; use {available_devices()}")


def available_devices():
    """The devices this machine has, as the words ``check_device`` accepts."""
    names = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{i}" for i in range(count)] if count > 1 else ["cuda"]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def show_bytes(n):
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(need, what, device=None, error=CheckError, hint=""):
    """Refuse work whose ``need`` bytes (for ``what``) exceed the memory available now on ``device``."""
    have = available(device)
    if need > have:
        raise error(f"{what} needs about {show_bytes(need)}, more than the {show_bytes(have)} available"
                    + (f" on {device}" if device is not None and torch.device(device).type != "cpu" else "")
                    + (f"; {hint}" if hint else ""))


# --- data ------------------------------------------------------------------------------------------------------------

def as_tensor(value, what, source, dtype=None):
    """A tensor from a tensor, NumPy array or nested list; a DataError naming ``what`` otherwise."""
    if torch.is_tensor(value):
        return value if dtype is None or not value.is_floating_point() else value.to(dtype)
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{source}: {what} is not an array of numbers ({type(value).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'unsupported'})") from None
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def unpack_data(data, source="data"):
    """(x, y) or (x, y, mask) or an object with .x .y (.mask) -> three values; a DataError naming what came instead."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y, getattr(data, "mask", None)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return data[0], data[1], (data[2] if len(data) == 3 else None)
    kind = f"a {type(data).__name__} of length {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__
    raise DataError(f"{source} must be (x, y), (x, y, mask) or an object with .x and .y (a zoo.data Split); got {kind}")


def check_inputs(x, mask=None, source="inputs"):
    """Refuse inputs every model would fail on: no examples, no time steps, NaN/inf, a bad mask."""
    if x.dim() < 2:
        raise DataError(f"{source}: x has shape {list(x.shape)}; expected [N, T, C] or [N, T] token ids")
    if x.shape[0] == 0:
        raise DataError(f"{source}: x holds no examples (shape {list(x.shape)})")
    if x.shape[1] == 0:
        raise DataError(f"{source}: x has series of length 0 (shape {list(x.shape)}); need at least one time step")
    if x.is_complex():
        raise DataError(f"{source}: x is complex ({x.dtype}); give real values or integer token ids")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            first = bad.nonzero()[0].tolist()
            raise DataError(f"{source}: x holds {int(bad.sum())} NaN or infinite values (first at index {first})")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise DataError(f"{source}: mask must be boolean [N, T] (True for real steps), got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise DataError(f"{source}: mask has shape {list(mask.shape)}, expected [N, T] = {list(x.shape[:2])}")
        empty = ~mask.any(1)
        if empty.any():
            raise DataError(f"{source}: mask row {int(empty.nonzero()[0])} has no real step (all False); "
                            f"drop that example or mark its steps True")


def check_data(x, y, mask=None, num_classes=None, vocab_size=None, source="data"):
    """Refuse tensors a classifier cannot fit, naming the problem: lengths, NaN/inf, label range, tokens."""
    if y.dim() != 1:
        raise DataError(f"{source}: y must be 1-D [N] labels, got shape {list(y.shape)}")
    if x.dim() >= 1 and x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    check_inputs(x, mask, source)
    if not x.is_floating_point() and vocab_size is not None and x.numel() and (x.min() < 0 or x.max() >= vocab_size):
        raise DataError(f"{source}: token ids must be in 0..{vocab_size - 1}, found {int(x.min())}..{int(x.max())}")
    if num_classes is not None:
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise DataError(f"{source}: labels must be integers 0..{num_classes - 1}, got dtype {y.dtype}")
        out = (y < 0) | (y >= num_classes)
        if out.any():
            i = int(out.nonzero()[0])
            raise DataError(f"{source}: label {int(y[i])} at example {i} is outside 0..{num_classes - 1} "
                            f"(the model has num_classes={num_classes})")


def check_draws(num_samples, error=CheckError, name="num_samples"):
    """``num_samples`` of a prediction: None (the default) or a whole number >= 1."""
    check({name: num_samples}, {name: integer(1, optional=True)}, error)
    return num_samples


def check_prediction(x, mask=None, batch_size=None, dtype=None, source="predict"):
    """Inputs for ``Posterior.predict`` as tensors (arrays and lists accepted; real x takes the model's dtype)."""
    check({"batch_size": batch_size}, {"batch_size": integer(1, optional=True)}, DataError)
    x = as_tensor(x, "x", source, dtype)
    mask = None if mask is None else as_tensor(mask, "mask", source)
    check_inputs(x, mask, source)
    return x, mask


def check_output(num_draws, num_inputs, num_classes, device=None, source="predict"):
    """Refuse a prediction whose probabilities [S, N, K] (and their concatenation) would not fit in memory."""
    check_memory(2 * 4 * num_draws * num_inputs * num_classes,
                 f"{source}: the probabilities [S={num_draws}, N={num_inputs}, K={num_classes}]", device,
                 hint="ask for fewer draws, or predict fewer inputs at a time")


def check_predictions(probs, y, source="evaluate"):
    """Per-draw class probabilities [S, N, K] (or [N, K]) and labels [N] that ``evaluate`` can score."""
    if not torch.is_tensor(probs) or probs.dim() not in (2, 3) or not probs.is_floating_point():
        raise DataError(f"{source}: probs must be a float tensor [S, N, K] or [N, K], got "
                        f"{list(probs.shape) if torch.is_tensor(probs) else type(probs).__name__}")
    if not torch.is_tensor(y) or y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{source}: y must be an integer tensor [N] of labels, got "
                        f"{(str(y.dtype) + ' ' + str(list(y.shape))) if torch.is_tensor(y) else type(y).__name__}")
    if probs.shape[-2] != y.shape[0]:
        raise DataError(f"{source}: probs hold {probs.shape[-2]} inputs but y has {y.shape[0]} labels")
    k = probs.shape[-1]
    if y.numel() and (y.min() < 0 or y.max() >= k):
        raise DataError(f"{source}: labels must be in 0..{k - 1} (probs have {k} classes), found "
                        f"{int(y.min())}..{int(y.max())}")
