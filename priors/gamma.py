"""Standard Gamma draws and their implicit-reparameterization gradients, spread over CPU threads.

torch's CPU kernels ``_standard_gamma`` and ``_standard_gamma_grad`` run on one
thread whatever ``torch.get_num_threads()`` says, and on the [B, H, T, T]
attention rows of a Dirichlet-attention model they are most of a training step.
Both release the GIL, so large inputs are cut into fixed-size chunks that a pool
of ``torch.get_num_threads()`` threads works through. Each chunk draws from its
own generator, seeded from torch's global one, so draws follow the seed and not
the thread count. On CUDA, or for small inputs, torch's kernels are called as they are.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import torch

CHUNK = 1 << 18  # elements per task: large enough that a task's overhead is noise
_pools = {}


def _pool():
    """The pool for the current thread count, per process (a forked child inherits no live threads)."""
    key = (os.getpid(), torch.get_num_threads())
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(key[1], thread_name_prefix="bzoo-gamma")
    return _pools[key]


def _small(t):
    """True where torch's own kernel is used: on CUDA, or for an input too small to split."""
    return t.device.type != "cpu" or t.numel() <= CHUNK


def _map_chunks(fn, tensors, *per_chunk):
    """``fn(*chunks, *per_chunk items)`` over aligned flat chunks of ``tensors`` on the pool, in their shape."""
    chunks = [t.reshape(-1).split(CHUNK) for t in tensors]
    return torch.cat(list(_pool().map(fn, *chunks, *per_chunk))).view(tensors[0].shape)


def standard_gamma(alpha):
    """Gamma(alpha, 1) draws, one per element of ``alpha``."""
    if _small(alpha):
        return torch._standard_gamma(alpha)
    chunks = (alpha.numel() + CHUNK - 1) // CHUNK
    generators = [torch.Generator().manual_seed(s) for s in torch.randint(0, 2 ** 62, (chunks,)).tolist()]
    return _map_chunks(lambda chunk, g: torch._standard_gamma(chunk, generator=g), [alpha], generators)


def standard_gamma_grad(alpha, draws):
    """d draws / d alpha by implicit reparameterization (torch's ``_standard_gamma_grad``)."""
    if _small(alpha) or torch.get_num_threads() == 1:
        return torch._standard_gamma_grad(alpha, draws)
    return _map_chunks(torch._standard_gamma_grad, [alpha, draws])
