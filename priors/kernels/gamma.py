"""Gamma and Dirichlet draws, implicit-reparameterization gradients and Dirichlet KLs, on every CPU thread.

Two backends, chosen per tensor:

- ``fast`` (the default for float32 tensors on the CPU): the numba kernels of
  ``priors.kernels.numba_gamma``, which draw, normalize and differentiate an attention
  row in one vectorized pass; about 30 times cheaper per element than torch's
  serial CPU kernels (``docs/attention.md``, speed). Compiled on first use and
  cached next to the source (seconds, once per machine).
- ``torch``: torch's own kernels (``_standard_gamma``, ``_standard_gamma_grad``,
  ``lgamma``/``digamma``/``polygamma``). They are used on CUDA, for other dtypes,
  where numba is missing, and everywhere under ``BZOO_GAMMA=torch`` or
  ``with backend("torch")``; they are the reference the tests hold the fast
  kernels to. torch's CPU Gamma kernels are serial, so large inputs are cut into
  fixed-size chunks, each drawn from its own generator on a thread pool.

Either way draws follow torch's global seed, never the thread count: the fast
kernels key their counter-based random numbers with one number drawn from torch's
generator and index them by element.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

ENV = "BZOO_GAMMA"
BACKENDS = ("fast", "torch")
CHUNK = 1 << 18  # torch backend: elements per task, large enough that a task's overhead is noise
MIN_PART = 1 << 15  # fast backend: elements per thread below which one thread does the work
_pools = {}
_forced = None
_kernels = None


def _pool():
    """The pool for the current thread count, per process (a forked child inherits no live threads)."""
    key = (os.getpid(), torch.get_num_threads())
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(key[1], thread_name_prefix="bzoo-gamma")
    return _pools[key]


@contextmanager
def backend(name):
    """``with backend("torch"): ...`` draws with torch's kernels inside the block (``"fast"``: the default)."""
    global _forced
    if name not in BACKENDS:
        raise ValueError(f"Gamma backend '{name}' is not one of {', '.join(BACKENDS)}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def kernels():
    """``priors.kernels.numba_gamma`` (imports numba and loads or compiles the kernels), or None without numba."""
    global _kernels
    if _kernels is None:
        try:
            from . import numba_gamma
        except ImportError:
            numba_gamma = False
        _kernels = numba_gamma
    return _kernels or None


def is_fast(*tensors):
    """True where the fast kernels serve these tensors: float32 on the CPU, numba present, not switched off."""
    choice = _forced or os.environ.get(ENV) or "fast"
    if choice not in BACKENDS:
        raise ValueError(f"${ENV}='{choice}' is not one of {', '.join(BACKENDS)}")
    return (choice == "fast" and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and kernels() is not None)


def _key():
    """A 64-bit key for counter-based draws, from torch's global generator (so draws follow the seed)."""
    return np.uint64(int(torch.randint(0, 2 ** 62, ())))


def _numpy(t):
    return t.detach().numpy()


def _run_rows(kernel, rows, width, make_args, align=1):
    """``kernel(*make_args(start, stop))`` over row ranges [start, stop), one per intra-op thread; range
    boundaries fall on multiples of ``align``."""
    parts = max(1, min(torch.get_num_threads(), rows * width // MIN_PART))
    bounds = [min(rows, -(-rows // align * i // parts) * align) for i in range(parts + 1)]
    jobs = [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i + 1] > bounds[i]]
    futures = [_pool().submit(kernel, *make_args(*job)) for job in jobs[1:]]
    kernel(*make_args(*jobs[0]))
    for future in futures:
        future.result()


def _mask_array(mask, shape):
    """The mask as a C-contiguous uint8 [R, K] array, or an empty [0, 0] one for no mask."""
    if mask is None:
        return np.zeros((0, 0), np.uint8)
    return _numpy(mask.expand(shape).reshape(-1, shape[-1]).contiguous().view(torch.uint8))


# Flat Gamma draws and gradients.

def standard_gamma(alpha):
    """Gamma(alpha, 1) draws, one per element of ``alpha``."""
    if is_fast(alpha):
        a = alpha.detach().contiguous()
        out = torch.empty_like(a)
        flat_a, flat_out, key = _numpy(a).reshape(-1), _numpy(out).reshape(-1), _key()
        _run_rows(kernels().gamma_draws, a.numel(), 1,
                  lambda start, stop: (flat_a[start:stop], flat_out[start:stop], key, start))
        return out
    if alpha.device.type != "cpu" or alpha.numel() <= CHUNK:
        return torch._standard_gamma(alpha)
    chunks = (alpha.numel() + CHUNK - 1) // CHUNK
    generators = [torch.Generator().manual_seed(s) for s in torch.randint(0, 2 ** 62, (chunks,)).tolist()]
    return _map_chunks(lambda chunk, g: torch._standard_gamma(chunk, generator=g), [alpha], generators)


def standard_gamma_grad(alpha, draws):
    """d draws / d alpha by implicit reparameterization (torch's approximation of it, ``_standard_gamma_grad``)."""
    if is_fast(alpha, draws):
        a, x = alpha.detach().contiguous(), draws.detach().contiguous()
        out = torch.empty_like(a)
        flat_a, flat_x, flat_out = _numpy(a).reshape(-1), _numpy(x).reshape(-1), _numpy(out).reshape(-1)
        _run_rows(kernels().gamma_grads, a.numel(), 1,
                  lambda start, stop: (flat_a[start:stop], flat_x[start:stop], flat_out[start:stop]))
        return out
    if alpha.device.type != "cpu" or alpha.numel() <= CHUNK or torch.get_num_threads() == 1:
        return torch._standard_gamma_grad(alpha, draws)
    return _map_chunks(torch._standard_gamma_grad, [alpha, draws])


def _map_chunks(fn, tensors, *per_chunk):
    """``fn(*chunks, *per_chunk items)`` over aligned flat chunks of ``tensors`` on the pool, in their shape."""
    chunks = [t.reshape(-1).split(CHUNK) for t in tensors]
    return torch.cat(list(_pool().map(fn, *chunks, *per_chunk))).view(tensors[0].shape)


# Dirichlet rows and their KL (fast backend: float32 on the CPU; callers check ``is_fast``).

def dirichlet_rows(alpha, mask, want_grad):
    """Rows ``g / sum(g)`` of ``g_j ~ Gamma(alpha_j)`` over the entries where ``mask`` is True (0 elsewhere).

    Returns the rows and, with ``want_grad``, ``factor = (dg/dalpha) / sum(g)`` for ``dirichlet_rows_grad``.
    """
    a = alpha.detach().contiguous()
    width = a.shape[-1]
    x = torch.empty_like(a)
    factor = torch.empty_like(a) if want_grad else torch.empty(0, 0)
    flat_a, flat_x, flat_f = (_numpy(t).reshape(-1, width) for t in (a, x, factor if want_grad else x))
    m, key = _mask_array(mask, a.shape), _key()
    _run_rows(kernels().dirichlet_rows, flat_a.shape[0], width, lambda start, stop: (
        flat_a[start:stop], m[start:stop], key, start, flat_x[start:stop], flat_f[start:stop], want_grad))
    return x, (factor if want_grad else None)


def dirichlet_rows_grad(grad, x, factor):
    """The gradient of ``dirichlet_rows`` with respect to alpha: ``(grad - <grad, x>) * factor`` per row."""
    width = x.shape[-1]
    grad = grad.contiguous()
    out = torch.empty_like(x)
    g, xs, f, o = (_numpy(t).reshape(-1, width) for t in (grad, x, factor, out))
    _run_rows(kernels().dirichlet_rows_grad, g.shape[0], width,
              lambda start, stop: (g[start:stop], xs[start:stop], f[start:stop], o[start:stop]))
    return out


def _prior_rows(b, shape, full=False):
    """The prior concentration as a [1, 1] array when it is one number for every entry (and not ``full``),
    else [R, K]."""
    if not full and (all(stride == 0 for stride in b.stride()) or b.numel() == 1):
        return _numpy(b.detach().reshape(-1)[:1].reshape(1, 1).contiguous())
    return _numpy(b.detach().expand(shape).reshape(-1, shape[-1]).contiguous())


def dirichlet_kl(a, b, mask):
    """Row-wise KL(Dir(a) || Dir(b)) over the entries where ``mask`` is True, shape ``a.shape[:-1]``."""
    a_rows = _numpy(a.detach().contiguous()).reshape(-1, a.shape[-1])
    b_rows, m = _prior_rows(b, a.shape), _mask_array(mask, a.shape)
    out = np.empty(a_rows.shape[0])
    _run_rows(kernels().dirichlet_kl, a_rows.shape[0], a.shape[-1], lambda start, stop: (
        a_rows[start:stop], b_rows if b_rows.shape[0] == 1 else b_rows[start:stop], m[start:stop], out[start:stop]))
    return torch.from_numpy(out).to(a.dtype).view(a.shape[:-1])


def dirichlet_kl_grad(grad, a, b, mask, want_b):
    """Gradients of ``dirichlet_kl`` for row gradients ``grad``: (d/da, d/db expanded to a's shape or None)."""
    width = a.shape[-1]
    a_rows = _numpy(a.detach().contiguous()).reshape(-1, width)
    b_rows, m = _prior_rows(b, a.shape, full=want_b), _mask_array(mask, a.shape)
    g = _numpy(grad.detach().contiguous()).reshape(-1)
    grad_a = torch.empty_like(a.detach(), memory_format=torch.contiguous_format)
    grad_b = torch.empty_like(grad_a) if want_b else torch.empty(0, 0)
    ga, gb = _numpy(grad_a).reshape(-1, width), _numpy(grad_b).reshape(-1, width) if want_b else _numpy(grad_b)
    _run_rows(kernels().dirichlet_kl_grad, a_rows.shape[0], width, lambda start, stop: (
        g[start:stop], a_rows[start:stop], b_rows if b_rows.shape[0] == 1 else b_rows[start:stop], m[start:stop],
        ga[start:stop], gb[start:stop] if want_b else gb))
    return grad_a, (grad_b if want_b else None)


# Bayesian Attention Modules: Weibull draws and KL(Weibull || Gamma) over rows (fast backend).

def weibull_draws(log_scale, inv_k):
    """Weibull draws ``exp(log_scale) E^(1/k)`` for rows [R, K] of ``log_scale`` and ``inv_k`` = 1/k [R];
    returns the draws and ``log(E)/k`` for ``weibull_draws_grad``."""
    ls, ik = log_scale.detach().contiguous(), inv_k.detach().contiguous()
    x, t = torch.empty_like(ls), torch.empty_like(ls)
    a, b, xs, ts, key = _numpy(ls), _numpy(ik), _numpy(x), _numpy(t), _key()
    _run_rows(kernels().weibull_draws, a.shape[0], a.shape[1],
              lambda start, stop: (a[start:stop], b[start:stop], key, start, xs[start:stop], ts[start:stop]))
    return x, t


def weibull_draws_grad(grad, x, t, inv_k):
    """Gradients of ``weibull_draws`` with respect to log_scale [R, K] and inv_k [R]."""
    g = grad.contiguous()
    grad_ls, grad_ik = torch.empty_like(x), torch.empty_like(inv_k)
    gs, xs, ts, ik, o1, o2 = (_numpy(v) for v in (g, x, t, inv_k, grad_ls, grad_ik))
    _run_rows(kernels().weibull_draws_grad, gs.shape[0], gs.shape[1], lambda start, stop: (
        gs[start:stop], xs[start:stop], ts[start:stop], ik[start:stop], o1[start:stop], o2[start:stop]))
    return grad_ls, grad_ik


def weibull_gamma_kl(log_scale, k, alpha, per, beta, mask):
    """Row sums [R] of KL(Weibull(k, exp(log_scale)) || Gamma(alpha, beta)) over real entries; rows [R, K] of
    ``log_scale``, ``k`` and ``beta`` per row, ``alpha`` [R / per, K] shared by ``per`` consecutive rows."""
    ls, ks, al, bs = (_numpy(v.detach().contiguous()) for v in (log_scale, k, alpha, beta))
    m = _mask_array(mask, log_scale.shape)
    out = np.empty(ls.shape[0])
    _run_rows(kernels().weibull_gamma_kl, ls.shape[0], ls.shape[1], lambda start, stop: (
        ls[start:stop], ks[start:stop], al[start // per:-(-stop // per)], per, bs[start:stop], m[start:stop],
        out[start:stop]), align=per)
    return torch.from_numpy(out).to(log_scale.dtype)


def weibull_gamma_kl_grad(grad, log_scale, k, alpha, per, beta, mask):
    """Gradients of ``weibull_gamma_kl`` for row gradients ``grad`` [R]: (log_scale, k, alpha, beta)."""
    ls, ks, al, bs = (_numpy(v.detach().contiguous()) for v in (log_scale, k, alpha, beta))
    g = _numpy(grad.detach().float().contiguous())
    m = _mask_array(mask, log_scale.shape)
    g_ls, g_alpha = torch.empty(ls.shape), torch.zeros(al.shape)
    g_k, g_beta = torch.empty(ks.shape, dtype=torch.float64), torch.empty(bs.shape, dtype=torch.float64)
    o_ls, o_k, o_alpha, o_beta = (_numpy(v) for v in (g_ls, g_k, g_alpha, g_beta))
    _run_rows(kernels().weibull_gamma_kl_grad, ls.shape[0], ls.shape[1], lambda start, stop: (
        g[start:stop], ls[start:stop], ks[start:stop], al[start // per:-(-stop // per)], per, bs[start:stop],
        m[start:stop], o_ls[start:stop], o_k[start:stop], o_alpha[start // per:-(-stop // per)], o_beta[start:stop]),
        align=per)
    return g_ls, g_k.float(), g_alpha, g_beta.float()
