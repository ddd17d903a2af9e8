"""numba kernels for Gamma-family attention: exact draws, implicit gradients and closed-form KLs in fused passes.

Each kernel works on a block of rows of a C-contiguous float32 array and releases
the GIL, so ``priors.kernels.gamma`` runs blocks on several threads. Arithmetic is the
vectorizable float32 math of ``priors.kernels.vector_math``; per-row sums are float64.

**Gamma draws** are Marsaglia and Tsang's (2000) rejection sampler, boosted below
shape 1 (``Gamma(a) = Gamma(a + 1) U^(1/a)``), exactly as torch draws them: a
first proposal for every element in one SIMD pass, then the proposals that were
rejected drawn again (from fresh counters) over the shrinking list of pending
elements until none is left, so the distribution is exact. The acceptance test
``log u < n^2/2 + d (1 - v + log v)`` is evaluated as ``log u < d t^4 R(t)`` with
``t = c n`` and ``R`` its series where it would otherwise cancel.

**Gradients** are implicit reparameterization, ``dg/da = -(dF(g; a)/da) / p(g; a)``,
with torch's own approximation of that ratio (``standard_gamma_grad_one`` in
ATen: a series below 0.8, Rice's saddle point above shape 8, a rational fit in
between) evaluated in the same pass as the draw. Naesseth et al.'s (2017)
reparameterization through the accepted proposal was measured instead and
rejected: without its score-function correction its gradient is biased (2.4% of
d E[g]/da at shape 1, 0.03% at shape 8; ``docs/attention.md``), and the correction
is a score-function term that would need the whole loss.

**Dirichlet rows** ``x = g / sum(g)`` keep, for the backward pass, ``x`` and
``dg/da / sum(g)``: the gradient is then ``(dL/dx - <dL/dx, x>) dg/da / sum(g)``
per row, one more pass.

**KLs** are the closed forms already used by ``priors.attention``, with
lgamma/digamma/trigamma from ``priors.kernels.vector_math``.
"""
import numba
import numpy as np

from .vector_math import (F32, GOLDEN, HALF, ONE, SHIFT32, TWO, ZERO, cos_quarter, digamma, digamma64, digamma_shifted,
                          exp, lgamma64, lgamma_digamma, log, mix, sqrt, trigamma, trigamma64, uniform)

kernel = numba.njit(nogil=True, error_model="numpy", cache=True)
inline = numba.njit(inline="always", error_model="numpy")

BLOCK = 4096  # elements drawn before their rows are normalized: the block stays in L1/L2

_THIRD, _NINE, _SQUEEZE = F32(1 / 3), F32(9), F32(0.0331)
_TINY = F32(np.finfo(np.float32).tiny)  # torch clamps Gamma draws at the smallest normal float as well
_SIGN = np.uint64(1) << np.uint64(63)
_ANGLE_BITS, _TWO_M31 = np.uint64(0x7FFFFFFF), F32(2.0 ** -31)
_QUARTER = F32(0.25)
_R = tuple(F32(3 * (-1) ** (k + 1) / k) for k in range(4, 16))  # d t^4 R(t) = d (3 log(1+t) - 3t + 3t^2/2 - t^3)
_ONE_HALF, _THREE = F32(1.5), F32(3)


@inline
def _proposal(a, h0, h1, full):
    """Marsaglia-Tsang proposal for Gamma(a) from two random words: (draw, accepted).

    Normal from Box-Muller: radius from the low word, angle and sign from the high word
    (|cos| of a uniform angle is cos(pi/2 v) with v uniform). The acceptance uniform is the
    low half of the second word, the boost uniform (a < 1) its high half. Without ``full``
    only the squeeze ``u < 1 - 0.0331 n^4`` accepts (the cheap test that decides most
    proposals); with it, Marsaglia and Tsang's whole test.
    """
    boost = a < ONE
    d = (a + ONE if boost else a) - _THIRD
    c = ONE / sqrt(_NINE * d)
    v = F32(np.uint32((h0 >> SHIFT32) & _ANGLE_BITS)) * _TWO_M31
    cs = cos_quarter(v)
    n = sqrt(-TWO * log(uniform(h0))) * (-cs if h0 & _SIGN else cs)
    t = c * n
    y = ONE + t
    u = uniform(h1)
    nn = n * n
    ok = y > ZERO and u < ONE - _SQUEEZE * nn * nn
    if full:
        t4 = t * t * t * t
        series = t4 * (_R[0] + t * (_R[1] + t * (_R[2] + t * (_R[3] + t * (_R[4] + t * (_R[5] + t * (
            _R[6] + t * (_R[7] + t * (_R[8] + t * (_R[9] + t * (_R[10] + t * _R[11])))))))))))
        direct = _THREE * log(y) - _THREE * t + _ONE_HALF * t * t - t * t * t
        ok = ok or (y > ZERO and log(u) < d * (series if abs(t) < _QUARTER else direct))
    scale = exp(log(uniform(h1 >> SHIFT32)) / a) if boost else ONE
    return max(scale * d * (y * y * y), _TINY), ok


@inline
def _counter(base, i):
    return base + np.uint64(2 * i) * GOLDEN


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _draw_block(alpha, out, key, first, todo, shapes, draws, accepted):
    """Gamma draws for one block (at most ``todo.size`` elements); the buffers are scratch space.

    Round 0 accepts by the squeeze alone, in one SIMD pass over every element; round 1
    completes Marsaglia and Tsang's test of the same proposals; later rounds draw new
    proposals from fresh counters, each round a SIMD pass over the pending elements
    alone. Negative (or NaN) shapes give NaN; shape 0 gives the clamp, as in torch.
    """
    n = alpha.size
    base = key + np.uint64(2 * first) * GOLDEN
    for i in range(n):
        c = _counter(base, i)
        g, ok = _proposal(alpha[i], mix(c), mix(c + GOLDEN), False)
        out[i] = g if ok else -ONE
    pending = 0
    for i in range(n):  # branch-free compaction of the pending elements
        valid = alpha[i] >= ZERO
        todo[pending] = i
        shapes[pending] = alpha[i]
        pending += valid and out[i] < ZERO
        out[i] = out[i] if valid else np.float32(np.nan)
    rounds = 1
    while pending:
        for k in range(pending):
            c = _counter(base, todo[k])
            draws[k], accepted[k] = _proposal(shapes[k], mix(c), mix(c + GOLDEN), True)
        left = 0
        for k in range(pending):
            out[todo[k]] = draws[k]
            todo[left] = todo[k]
            shapes[left] = shapes[k]
            left += not accepted[k]
        pending = left
        base = mix(key + np.uint64(rounds)) + np.uint64(2 * first) * GOLDEN  # fresh counters from round 2 on
        rounds += 1
    return rounds


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _scratch(size):
    return np.empty(size, np.int64), np.empty(size, np.float32), np.empty(size, np.float32), np.empty(size, np.bool_)


@kernel
def gamma_draws(alpha, out, key, first):
    """Gamma(alpha, 1) draws into ``out`` (flat float32); element i uses the counters of index ``first + i``.

    Returns the largest number of proposal rounds a block needed.
    """
    todo, shapes, draws, accepted = _scratch(BLOCK)
    rounds = 0
    for start in range(0, alpha.size, BLOCK):
        stop = min(alpha.size, start + BLOCK)
        rounds = max(rounds, _draw_block(alpha[start:stop], out[start:stop], key, first + start,
                                         todo, shapes, draws, accepted))
    return rounds


# torch's standard_gamma_grad_one (ATen/native/Distributions.h), branch-free in float32.
_P8, _P9, _P11, _SIX, _EIGHT, _TWELVE, _TWENTYFOUR = F32(0.8), F32(0.9), F32(1.1), F32(6), F32(8), F32(12), F32(24)
_S = (F32(24), F32(1440), F32(53), F32(120), F32(65), F32(107), F32(3600), F32(1244160))
_H = tuple(F32(1 / (2 * k + 3)) for k in range(10))  # 1/3, 1/5, ..., 1/21
_RAT = tuple(F32(c) for c in (
    0.16009398, -0.094634809, 0.025146376, -0.0030648343, 1, 0.32668115, 0.10406089, 0.0014179084,
    0.53487893, 0.1298071, 0.065735949, -0.0015649758, 0.16639465, 0.020070113, -0.0035938915, -0.00058392623,
    0.040121004, -0.0065914022, -0.0026286047, -0.0013441777, 0.017050642, -0.0021309326, 0.00085092367,
    -1.5247877e-07))
_I2, _I3, _I4, _I5 = F32(1 / 2), F32(1 / 3), F32(1 / 4), F32(1 / 5)
_FOUR, _FIVE = F32(4), F32(5)


@inline
def gamma_grad(a, x):
    """d x / d a for a Gamma(a, 1) draw x by implicit reparameterization (torch's approximation).

    Written so that float32 keeps torch's double-precision values (within 2e-6): the series
    leaves out the 1/a^2 terms that cancel analytically, the saddle point computes its t without
    cancellation.
    """
    la = log(a)
    lxa = log(x / a)
    # Series of the regularized incomplete gamma function, for x < 0.8:
    # -x e^x ((log x - psi(a)) S1 - S2), S1 = sum c_i / (a + i), S2 = sum c_i / (a + i)^2, c_i = (-x)^i / i!.
    # With psi(a) = psi(a + 1) - 1/a, the 1/a^2 terms of the product and of S2 cancel exactly and are left out.
    r0, r1, r2 = ONE / a, ONE / (a + ONE), ONE / (a + TWO)
    r3, r4, r5 = ONE / (a + _THREE), ONE / (a + _FOUR), ONE / (a + _FIVE)
    c1 = -x
    c2 = c1 * (-x * _I2)
    c3 = c2 * (-x * _I3)
    c4 = c3 * (-x * _I4)
    c5 = c4 * (-x * _I5)
    s1 = c1 * r1 + c2 * r2 + c3 * r3 + c4 * r4 + c5 * r5
    s2 = c1 * r1 * r1 + c2 * r2 * r2 + c3 * r3 * r3 + c4 * r4 * r4 + c5 * r5 * r5
    psi1 = digamma(a) + r0 if a >= _SIX else digamma_shifted(a)
    series = -x * exp(x) * ((lxa + la - psi1) * (r0 + s1) + r0 * s1 - s2)
    series = ZERO if series != series else series
    # Rice's saddle point expansion for a > 8. Its t = x - a - a log(x/a) cancels near x = a: with
    # s = (x - a)/(x + a), t = a (2 s^2/(1 - s) - 2 s^3 (1/3 + s^2/5 + ...)), a sum of like-signed terms.
    near = (ONE + _S[0] * a * (ONE + _TWELVE * a)) * (
        _S[1] * (a * a) + _SIX * x * (_S[2] - _S[3] * x) - _S[4] * x * x / a + a * (_S[5] + _S[6] * x)) / (
        _S[7] * (a * a) * (a * a))
    den = sqrt(_EIGHT * a)
    am = a - x
    t2 = den / am
    s = -am / (x + a)
    s2 = s * s
    odd = _H[0] + s2 * (_H[1] + s2 * (_H[2] + s2 * (_H[3] + s2 * (_H[4] + s2 * (_H[5] + s2 * (_H[6] + s2 * (
        _H[7] + s2 * (_H[8] + s2 * _H[9]))))))))
    t = a * (TWO * s2 / (ONE - s) - TWO * s2 * s * odd) if abs(s) < _THIRD else x - a - a * lxa
    t3 = ONE / (t * sqrt(t))
    t1 = lxa * (t2 - t3 if x < a else t2 + t3) - sqrt(TWO / a) * (a + x) / (am * am)
    far = -(ONE + ONE / (_TWELVE * a) * (ONE + ONE / (_TWENTYFOUR * a))) * x * t1 / den
    saddle = near if (_P9 * a <= x and x <= _P11 * a) else far
    # Bivariate rational approximation in between.
    u, v = lxa, la
    k = _RAT
    p = (k[0] + u * (k[8] + u * k[16])) + v * ((k[1] + u * (k[9] + u * k[17])) + v * (
        (k[2] + u * (k[10] + u * k[18])) + v * (k[3] + u * (k[11] + u * k[19]))))
    q = (k[4] + u * (k[12] + u * k[20])) + v * ((k[5] + u * (k[13] + u * k[21])) + v * (
        (k[6] + u * (k[14] + u * k[22])) + v * (k[7] + u * (k[15] + u * k[23]))))
    return series if x < _P8 else (saddle if a > _EIGHT else exp(p / q))


@kernel
def gamma_grads(alpha, x, out):
    """``out = d x / d alpha`` elementwise (flat float32 arrays)."""
    for i in range(alpha.size):
        out[i] = gamma_grad(alpha[i], x[i])


@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc"}, cache=True)
def _sum(row):
    """float64 sum of a float32 row, reassociated so that it vectorizes."""
    total = 0.0
    for j in range(row.size):
        total += row[j]
    return total


@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc"}, cache=True)
def _dot(u, v):
    """float64 dot product of two float32 rows, reassociated so that it vectorizes."""
    total = 0.0
    for j in range(u.size):
        total += u[j] * v[j]
    return total


@kernel
def dirichlet_rows(alpha, mask, key, first_row, x, factor, want_grad):
    """Dirichlet draws of the rows of ``alpha`` [R, K] into ``x``, entries where ``mask`` is 0 left out.

    ``mask`` is [R, K] uint8, or [0, 0] when every entry is real; a row without real
    entries is 0. Row r draws from the counters of rows ``first_row + r``. With
    ``want_grad``, ``factor = (dg/dalpha) / sum(g)`` (0 where masked).
    """
    rows, width = alpha.shape
    masked = mask.shape[0] > 0
    flat_a, flat_x = alpha.reshape(-1), x.reshape(-1)
    per_block = max(1, BLOCK // width)
    todo, shapes, draws, accepted = _scratch(per_block * width)
    for start in range(0, rows, per_block):
        stop = min(rows, start + per_block)
        _draw_block(flat_a[start * width:stop * width], flat_x[start * width:stop * width], key,
                    (first_row + start) * width, todo, shapes, draws, accepted)
        for r in range(start, stop):
            g = x[r]
            if masked:
                for j in range(width):
                    g[j] = g[j] if mask[r, j] else ZERO
            total = _sum(g)
            inv = F32(1.0 / total) if total > 0 else ZERO
            if want_grad:
                for j in range(width):
                    factor[r, j] = gamma_grad(alpha[r, j], g[j]) * inv
                if masked:
                    for j in range(width):
                        factor[r, j] = factor[r, j] if mask[r, j] else ZERO
            for j in range(width):
                g[j] *= inv


@kernel
def dirichlet_rows_grad(grad, x, factor, out):
    """Backward of ``dirichlet_rows``: ``out = (grad - <grad, x>) * factor`` per row."""
    for r in range(grad.shape[0]):
        dot = F32(_dot(grad[r], x[r]))
        for j in range(grad.shape[1]):
            out[r, j] = (grad[r, j] - dot) * factor[r, j]


@inline
def _masked_totals(a, b, mask, r, shared, masked, real, ta, tb):
    """Row r's totals (A, B, number of real entries); ``real``, ``ta``, ``tb`` are scratch rows."""
    width = a.shape[1]
    if masked:
        for j in range(width):
            m = mask[r, j] != 0
            real[j] = ONE if m else ZERO
            ta[j] = a[r, j] if m else ZERO
            tb[j] = (b[0, 0] if shared else b[r, j]) if m else ZERO
        return _sum(ta), _sum(tb), _sum(real)
    return _sum(a[r]), (width * np.float64(b[0, 0]) if shared else _sum(b[r])), np.float64(width)


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _rows4(width):
    return (np.empty(width, np.float32), np.empty(width, np.float32), np.empty(width, np.float32),
            np.empty(width, np.float32))


@kernel
def dirichlet_kl(a, b, mask, out):
    """Row-wise KL(Dir(a) || Dir(b)) over the real entries, into ``out`` [R] (float64).

    ``b`` is [R, K], or [1, 1] for one concentration shared by every entry; ``mask`` as in
    ``dirichlet_rows``. A row without real entries has KL 0. Per-entry terms are float32,
    row sums and the terms of the row totals float64.
    """
    rows, width = a.shape
    masked, shared = mask.shape[0] > 0, b.shape[0] == 1 and b.shape[1] == 1
    b0 = b[0, 0]
    lgamma_b0 = lgamma_digamma(b0)[0]
    terms, real, ta, tb = _rows4(width)
    total_a, total_b, count = np.empty(rows), np.empty(rows), np.empty(rows)
    for r in range(rows):
        if shared:  # separate loops: a branch inside would keep LLVM from vectorizing
            for j in range(width):
                lg_a, dg_a = lgamma_digamma(a[r, j])
                terms[j] = lgamma_b0 - lg_a + (a[r, j] - b0) * dg_a
        else:
            for j in range(width):
                lg_a, dg_a = lgamma_digamma(a[r, j])
                terms[j] = lgamma_digamma(b[r, j])[0] - lg_a + (a[r, j] - b[r, j]) * dg_a
        if masked:
            for j in range(width):
                terms[j] = terms[j] if mask[r, j] else ZERO
        out[r] = _sum(terms)
        total_a[r], total_b[r], count[r] = _masked_totals(a, b, mask, r, shared, masked, real, ta, tb)
    for r in range(rows):
        ra, rb = total_a[r], total_b[r]
        kl = lgamma64(ra) - lgamma64(rb) + out[r] - (ra - rb) * digamma64(ra)
        out[r] = kl if count[r] > 0 else 0.0


@kernel
def dirichlet_kl_grad(grad, a, b, mask, grad_a, grad_b):
    """Backward of ``dirichlet_kl`` for row gradients ``grad`` [R]: ``dKL/da_j = (a_j - b_j) psi'(a_j) -
    (A - B) psi'(A)`` into ``grad_a``; ``dKL/db_j = psi(b_j) - psi(a_j) + psi(A) - psi(B)`` into ``grad_b``
    unless it is [0, 0] (b needs no gradient). Both are 0 where masked."""
    rows, width = a.shape
    masked, shared = mask.shape[0] > 0, b.shape[0] == 1 and b.shape[1] == 1
    want_b = grad_b.shape[0] > 0
    _, real, ta, tb = _rows4(width)
    row_a, row_b = np.empty(rows, np.float32), np.empty(rows, np.float32)
    total_a, total_b, count = np.empty(rows), np.empty(rows), np.empty(rows)
    for r in range(rows):
        total_a[r], total_b[r], count[r] = _masked_totals(a, b, mask, r, shared, masked, real, ta, tb)
    for r in range(rows):
        ra, rb, g = total_a[r], total_b[r], grad[r] if count[r] > 0 else 0.0
        row_a[r] = g * (ra - rb) * trigamma64(ra) if count[r] > 0 else 0.0
        row_b[r] = g * (digamma64(ra) - digamma64(rb)) if count[r] > 0 else 0.0
    b0 = b[0, 0]
    for r in range(rows):
        g = F32(grad[r])
        if shared:
            for j in range(width):
                grad_a[r, j] = g * (a[r, j] - b0) * trigamma(a[r, j]) - row_a[r]
        else:
            for j in range(width):
                grad_a[r, j] = g * (a[r, j] - b[r, j]) * trigamma(a[r, j]) - row_a[r]
        if masked:
            for j in range(width):
                grad_a[r, j] = grad_a[r, j] if mask[r, j] else ZERO
        if want_b:
            for j in range(width):
                grad_b[r, j] = g * (digamma(b[r, j]) - digamma(a[r, j])) + row_b[r]
            if masked:
                for j in range(width):
                    grad_b[r, j] = grad_b[r, j] if mask[r, j] else ZERO


# Bayesian Attention Modules: Weibull weights (posterior), Gamma prior.
_HALF_WORD = np.uint64(1) << np.uint64(31)
_WORD = np.uint64(0xFFFFFFFF)
_EULER64 = 0.5772156649015329


@inline
def _log_exponential(h):
    """log E for E ~ Exponential(1) from the low 32 bits of ``h``: E = -log1p(-v) for one half of the
    words and -log(v) for the other, v in (0, 1/2], so E is accurate at both ends (no 0, no inf)."""
    low = (h & _WORD) < _HALF_WORD
    v = (F32(np.uint32(np.minimum(h & _WORD, _WORD - (h & _WORD)))) + HALF) * F32(2.0 ** -32)
    w = ONE - v
    log_arg = log(w if low else v)
    exponential = (-log_arg * v / (ONE - w) if w != ONE else v) if low else -log_arg  # -log1p(-v) by Goldberg
    return log(exponential)


@kernel
def weibull_draws(log_scale, inv_k, key, first_row, x, t):
    """Weibull draws ``x = exp(log_scale + t)``, ``t = log(E) / k`` for rows of ``log_scale`` [R, K] with
    ``inv_k`` = 1/k per row; ``t`` is kept for the backward pass."""
    rows, width = log_scale.shape
    for r in range(rows):
        base = key + np.uint64((first_row + r) * width) * GOLDEN
        ik = inv_k[r]
        for j in range(width):
            tj = _log_exponential(mix(base + np.uint64(j) * GOLDEN)) * ik
            t[r, j] = tj
            x[r, j] = exp(log_scale[r, j] + tj)


@kernel
def weibull_draws_grad(grad, x, t, inv_k, grad_log_scale, grad_inv_k):
    """Backward of ``weibull_draws``: dx/dlog_scale = x, dx/d(1/k) = x log E = x t k (summed per row)."""
    _, scratch, _, _ = _rows4(grad.shape[1])
    for r in range(grad.shape[0]):
        for j in range(grad.shape[1]):
            gx = grad[r, j] * x[r, j]
            grad_log_scale[r, j] = gx
            scratch[j] = gx * t[r, j]
        grad_inv_k[r] = F32(_sum(scratch)) / inv_k[r]


@inline
def _bam_row(log_scale, alpha_row, lg_alpha, mask, r, masked, s_alpha, s_lg, s_al, s_e, real):
    """Row sums of the real entries: (sum alpha, sum lgamma(alpha), sum alpha log_scale, sum exp(log_scale), n)."""
    width = log_scale.shape[1]
    for j in range(width):
        a, ell = alpha_row[j], log_scale[r, j]
        s_alpha[j], s_lg[j], s_al[j], s_e[j] = a, lg_alpha[j], a * ell, exp(ell)
    if not masked:
        return _sum(s_alpha), _sum(s_lg), _sum(s_al), _sum(s_e), np.float64(width)
    for j in range(width):  # a separate loop: a branch on the mask inside the first would keep it scalar
        keep = mask[r, j] != 0
        s_alpha[j], s_lg[j], s_al[j], s_e[j] = (s_alpha[j] if keep else ZERO, s_lg[j] if keep else ZERO,
                                                s_al[j] if keep else ZERO, s_e[j] if keep else ZERO)
        real[j] = ONE if keep else ZERO
    return _sum(s_alpha), _sum(s_lg), _sum(s_al), _sum(s_e), _sum(real)


@inline
def _per_head(k):
    """(log k, G = Gamma(1 + 1/k), dG/dk) in float64 for a row's Weibull shape k."""
    inv_k = 1.0 / k
    g = np.exp(lgamma64(1.0 + inv_k))
    return np.log(k), g, -g * digamma64(1.0 + inv_k) * inv_k * inv_k


@kernel
def weibull_gamma_kl(log_scale, k, alpha, per, beta, mask, out):
    """Row sums of KL(Weibull(k, exp(log_scale)) || Gamma(alpha, beta)) over the real entries, into ``out`` [R].

    ``k`` and ``beta`` are per row [R]; row r uses ``alpha[r // per]`` ([R / per, K]), so a prior that
    depends on the keys alone is stored once per sequence and head. Per entry (Fan et al. 2020):
    ``log k - euler - 1 + alpha (euler/k - log beta) + lgamma(alpha) - alpha log_scale + beta G e^log_scale``
    with ``G = Gamma(1 + 1/k)``. Functions of k and beta are computed when they change from one row to the
    next (k is one per head, beta one per sequence).
    """
    rows, width = log_scale.shape
    masked = mask.shape[0] > 0
    lg_alpha, s_alpha, s_lg, s_al = _rows4(width)
    s_e, real, _, _ = _rows4(width)
    current, last_k, last_beta = -1, np.nan, np.nan
    log_k = g = log_beta = 0.0
    for r in range(rows):
        if r // per != current:
            current = r // per
            for j in range(width):
                lg_alpha[j] = lgamma_digamma(alpha[current, j])[0]
        sa, slg, sal, se, n = _bam_row(log_scale, alpha[current], lg_alpha, mask, r, masked, s_alpha, s_lg, s_al,
                                       s_e, real)
        kr, br = np.float64(k[r]), np.float64(beta[r])
        if kr != last_k:
            log_k, g, _ = _per_head(kr)
            last_k = kr
        if br != last_beta:
            log_beta, last_beta = np.log(br), br
        out[r] = (n * (log_k - _EULER64 - 1.0) + (_EULER64 / kr - log_beta) * sa + slg - sal + br * g * se)


@kernel
def weibull_gamma_kl_grad(grad, log_scale, k, alpha, per, beta, mask, g_log_scale, g_k, g_alpha, g_beta):
    """Backward of ``weibull_gamma_kl`` for row gradients ``grad`` [R]. ``g_alpha`` ([R / per, K], zeroed by
    the caller) accumulates over the rows that share an alpha row; ``g_k``, ``g_beta`` are per row."""
    rows, width = log_scale.shape
    masked = mask.shape[0] > 0
    lg_alpha, psi_alpha, s_alpha, s_lg = _rows4(width)
    s_al, s_e, real, contribution = _rows4(width)
    current, last_k, last_beta = -1, np.nan, np.nan
    g = dg_dk = log_beta = 0.0
    for r in range(rows):
        if r // per != current:
            current = r // per
            for j in range(width):
                lg_alpha[j], psi_alpha[j] = lgamma_digamma(alpha[current, j])
        sa, slg, sal, se, n = _bam_row(log_scale, alpha[current], lg_alpha, mask, r, masked, s_alpha, s_lg, s_al,
                                       s_e, real)
        kr, br, gr = np.float64(k[r]), np.float64(beta[r]), np.float64(grad[r])
        if kr != last_k:
            _, g, dg_dk = _per_head(kr)
            last_k = kr
        if br != last_beta:
            log_beta, last_beta = np.log(br), br
        inv_k = 1.0 / kr
        g_k[r] = gr * (n * inv_k - _EULER64 * inv_k * inv_k * sa + br * dg_dk * se)
        g_beta[r] = gr * (-sa / br + g * se)
        scale, shift, grf = F32(gr * br * g), F32(_EULER64 * inv_k - log_beta), F32(gr)
        for j in range(width):
            ell = log_scale[r, j]
            g_log_scale[r, j] = scale * exp(ell) - grf * alpha[current, j]
            contribution[j] = grf * (shift + psi_alpha[j] - ell)
        if masked:
            for j in range(width):
                keep = mask[r, j] != 0
                g_log_scale[r, j] = g_log_scale[r, j] if keep else ZERO
                contribution[j] = contribution[j] if keep else ZERO
        for j in range(width):
            g_alpha[current, j] += contribution[j]
