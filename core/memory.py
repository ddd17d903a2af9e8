"""A memory budget for prediction: how many posterior draws and inputs go through one pass.

``Posterior.predict`` evaluates S draws on N inputs in chunks of ``draws x inputs``
so that one chunk's working set stays within ``budget()``, whatever S, N, the
series length or the attention family. The working set is estimated from the
model (``model.bytes_per_pair(tokens)``: activations of one draw on one input,
and ``model.bytes_per_draw()``: one draw of its parameters), so a request that
cannot fit even one pair is refused before any work, with its estimate.

The budget defaults to a fraction of the memory available on the device;
``BZOO_MEMORY_BUDGET`` (e.g. ``4G``, ``512M``) or ``set_budget`` override it.

On the CPU a chunk is also kept near the cache (``cache_budget``): beyond a few
times the last-level cache, every pair costs more because its activations stream
from memory (measured on the bench speed workload, 1 thread, 32 MiB L3: 0.24 ms a
pair at 512 pairs a chunk, 0.37 at 1024, 0.46 at 2048; ``docs/attention.md``), so
one vectorized pass over 32 draws was slower than a loop of single draws. On a
GPU only the memory budget applies: there large chunks are what vectorization is for.
"""
import glob
import math
import os
import re
from contextlib import contextmanager

import torch

FRACTION = 0.5  # of the memory available when asked: room for the process's own tensors and the caller's
ENV = "BZOO_MEMORY_BUDGET"
FALLBACK_PAIR_BYTES = 1 << 16  # a model that cannot say: 64 KiB per (draw, input) pair
CACHE_FACTOR = 4  # CPU chunks: estimated working set up to this many last-level caches (estimates run 1.5-5x high)
FALLBACK_CACHE = 32 << 20  # last-level cache where the system does not say
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_budget = None


class MemoryBudgetError(ValueError):
    """A prediction cannot fit the memory budget even one pair at a time; the message gives the estimate."""


def parse_size(text):
    """``"4G"`` -> 4 * 2**30 bytes; ``"512M"``, ``"1.5G"``, plain bytes; refuses anything else."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise MemoryBudgetError(f"memory budget '{text}' is not a size such as 4G, 512M or 1000000000")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available(device=None):
    """Bytes free for new tensors on ``device``: CUDA, the device's free memory; else the system's available
    memory, or what is left under this process's address-space limit (``ulimit -v``) when that is smaller."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free = psutil.virtual_memory().available
    limit = _address_space_limit()
    return free if limit is None else max(0, min(free, limit - psutil.Process().memory_info().vms))


def _address_space_limit():
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def budget(device=None):
    """The bytes one prediction chunk may use: ``set_budget``'s value, else ``$BZOO_MEMORY_BUDGET``, else
    ``FRACTION`` of what is available now."""
    if _budget is not None:
        return _budget
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV])
    return int(FRACTION * available(device))


def set_budget(value):
    """Fix the budget (bytes, or a size string such as ``"2G"``); ``None`` goes back to the default."""
    global _budget
    _budget = None if value is None else (parse_size(value) if isinstance(value, str) else int(value))
    if _budget is not None and _budget <= 0:
        raise MemoryBudgetError(f"memory budget must be positive, got {value!r}")


@contextmanager
def limited(value):
    """``with limited("1G"): ...``: the budget for the duration of the block."""
    previous = _budget
    set_budget(value)
    try:
        yield
    finally:
        set_budget(previous)


def pair_bytes(model, x):
    """Estimated peak bytes of one draw on one input like ``x[0]`` (the model's own estimate when it has one)."""
    estimate = getattr(model, "bytes_per_pair", None)
    return int(estimate(x.shape[1])) if estimate is not None and x.dim() >= 2 else FALLBACK_PAIR_BYTES


def draw_bytes(model):
    """Bytes of one draw of the model's parameters (0 when the model cannot say)."""
    estimate = getattr(model, "bytes_per_draw", None)
    return int(estimate()) if estimate is not None else 0


def last_level_cache():
    """Bytes of the CPU's last-level cache (Linux sysfs), else ``FALLBACK_CACHE``."""
    sizes = []
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "size")) as f:
                sizes.append(parse_size(f.read().strip()))
        except (OSError, MemoryBudgetError):
            continue
    return max(sizes, default=FALLBACK_CACHE)


def cache_budget(device=None):
    """The working set a prediction chunk should keep to on ``device``: ``CACHE_FACTOR`` last-level caches
    on the CPU, None (no bound beyond the memory budget) elsewhere."""
    return CACHE_FACTOR * last_level_cache() if torch.device(device or "cpu").type == "cpu" else None


def plan(model, x, num_draws, limit=None):
    """``(draws, inputs)`` per chunk so that a chunk fits ``limit`` (default ``budget()`` on x's device).

    Draws go through together as long as every input batch can still hold at least
    one input; beyond that the draws are split too. On the CPU chunks are sized to
    ``cache_budget`` as well when that is smaller (never beyond ``limit``). Refused
    (MemoryBudgetError) when a single draw on a single input does not fit ``limit``.
    """
    limit = budget(x.device) if limit is None else limit
    per_pair, per_draw = pair_bytes(model, x), draw_bytes(model)
    if per_pair + per_draw > limit:
        raise MemoryBudgetError(
            f"one posterior draw on one input of length {x.shape[1]} needs about {_show(per_pair + per_draw)}, "
            f"more than the memory budget of {_show(limit)}; raise it ({ENV}) or use a smaller model or patch")
    limit = min(limit, max(cache_budget(x.device) or limit, per_pair + per_draw))
    draws = max(1, min(num_draws, limit // (per_pair + per_draw)))
    inputs = max(1, min(x.shape[0], (limit - draws * per_draw) // (draws * per_pair)))
    return draws, inputs


def _show(n):
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def bytes_of(shape, dtype=torch.float32):
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()
