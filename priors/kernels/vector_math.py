"""float32 elementwise math that LLVM vectorizes inside numba kernels: the building blocks of ``priors.kernels.gamma``.

A numba loop becomes SIMD code only when its body is straight-line arithmetic:
calls into libm (``math.log``, ``math.exp``) stay scalar calls, and numba's own
``np.sqrt`` checks its argument. So the few transcendental functions the Gamma
kernels need are written here as arithmetic on the float's bits (``log``,
``exp``), a polynomial (``cos_quarter``) or an LLVM intrinsic (``sqrt``), each
accurate to about one float32 rounding (tested against numpy in
``tests/test_gamma.py``). The special functions of the Dirichlet KL
(``lgamma_digamma``, ``trigamma``) shift small arguments up by six and use the
asymptotic series from there, without branches.

Random numbers are counter-based: draw ``n`` of a kernel call keyed ``key`` is
SplitMix64's output at position ``key + n`` of its Weyl sequence (Steele, Lea and
Flood 2014), so an element's numbers depend on its index and the key alone, never
on how the work is split over threads. Each 64-bit output gives two 32-bit uniforms.

Every constant is a ``np.float32`` so that numba never promotes the arithmetic to
float64, and every kernel is compiled with ``error_model="numpy"`` (IEEE results,
no Python exception checks in the loop).
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

F32 = np.float32
ZERO, HALF, ONE, TWO = F32(0), F32(0.5), F32(1), F32(2)

inline = numba.njit(inline="always", error_model="numpy")


@intrinsic
def _float_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def sqrt(typingctx, x):
    """``llvm.sqrt`` of a float32: one instruction, NaN below zero."""
    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.sqrt", [ir.FloatType()]), [args[0]])
    return types.float32(types.float32), codegen


@intrinsic
def sqrt64(typingctx, x):
    """``llvm.sqrt`` of a float64."""
    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.sqrt", [ir.DoubleType()]), [args[0]])
    return types.float64(types.float64), codegen


_LN2_HI, _LN2_LO, _LOG2E = F32(0.693359375), F32(-2.12194440e-4), F32(1.4426950408889634)
_SQRT_HALF = np.int32(0x3F3504F3)  # bits of sqrt(1/2)
_ONE_BITS, _MANTISSA, _EXP_SHIFT, _BIAS = np.int32(0x3F800000), np.int32(0x007FFFFF), np.int32(23), np.int32(127)
_L3, _L5, _L7, _L9 = F32(2 / 3), F32(2 / 5), F32(2 / 7), F32(2 / 9)


@inline
def log(x):
    """Natural log of a positive normal float32: ``x = 2^e m`` with m in [sqrt(1/2), sqrt(2)), then
    ``log m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, |s| <= 0.172, by its series to s^9."""
    bits = _float_bits(x) + (_ONE_BITS - _SQRT_HALF)
    e = F32((bits >> _EXP_SHIFT) - _BIAS)
    m = _bits_float((bits & _MANTISSA) + _SQRT_HALF)
    s = (m - ONE) / (m + ONE)
    z = s * s
    return e * _LN2_HI + (s * (TWO + z * (_L3 + z * (_L5 + z * (_L7 + z * _L9)))) + e * _LN2_LO)


_EXP_LO, _EXP_HI = F32(-87.3), F32(88.0)
_E = tuple(F32(1 / np.prod(np.arange(1.0, k + 1))) for k in range(8))  # 1/k!


@inline
def exp(x):
    """e^x for float32: ``2^n e^r`` with |r| <= ln(2)/2 by Taylor to r^7; 0 below -87.3 (no subnormals)."""
    xc = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(xc * _LOG2E + HALF)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = ONE + r * (ONE + r * (_E[2] + r * (_E[3] + r * (_E[4] + r * (_E[5] + r * (_E[6] + r * _E[7]))))))
    return p * _bits_float((np.int32(n) + _BIAS) << _EXP_SHIFT) if x >= _EXP_LO else ZERO


_HALF_PI = F32(np.pi / 2)
_C = tuple(F32((-1) ** k / np.prod(np.arange(1.0, 2 * k + 1))) for k in range(7))  # (-1)^k / (2k)!


@inline
def cos_quarter(v):
    """cos(pi/2 v) for v in [0, 1], by its Taylor series to degree 12 (error below 1e-8)."""
    t = v * _HALF_PI
    z = t * t
    return ONE + z * (_C[1] + z * (_C[2] + z * (_C[3] + z * (_C[4] + z * (_C[5] + z * _C[6])))))


# Counter-based random numbers (SplitMix64).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, SHIFT32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_M32 = F32(2.0 ** -32)


@inline
def mix(z):
    """SplitMix64's output function: a bijection of 64-bit words that passes BigCrush on a Weyl sequence."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@inline
def uniform(bits):
    """A float32 uniform on (0, 1] from the low 32 bits of ``bits``."""
    return (F32(np.uint32(bits & _LOW32)) + HALF) * _TWO_M32


# Special functions for the Dirichlet KL: shift a < 6 up by six, then the asymptotic series.
_SIX = F32(6)
_HALF_LOG_2PI = F32(0.9189385332046727)
_G1, _G3, _G5 = F32(1 / 12), F32(1 / 360), F32(1 / 1260)
_P2, _P4, _P6 = F32(1 / 12), F32(1 / 120), F32(1 / 252)
_T3, _T5, _T7, _T9 = F32(1 / 6), F32(1 / 30), F32(1 / 42), F32(1 / 30)
_THREE, _FOUR, _FIVE = F32(3), F32(4), F32(5)


@inline
def _shift(a):
    """``z = a + 6`` where a < 6, else a; and the reciprocals 1/(a + i), i < 6 (0 where a >= 6)."""
    small = a < _SIX
    r0 = ONE / a if small else ZERO
    r1 = ONE / (a + ONE) if small else ZERO
    r2 = ONE / (a + TWO) if small else ZERO
    r3 = ONE / (a + _THREE) if small else ZERO
    r4 = ONE / (a + _FOUR) if small else ZERO
    r5 = ONE / (a + _FIVE) if small else ZERO
    return (a + _SIX if small else a), r0, r1, r2, r3, r4, r5


@inline
def lgamma_digamma(a):
    """(lgamma(a), digamma(a)) for a > 0, float32."""
    z, r0, r1, r2, r3, r4, r5 = _shift(a)
    iz = ONE / z
    iz2 = iz * iz
    lz = log(z)
    shift = -log(a * (a + ONE) * (a + TWO) * (a + _THREE) * (a + _FOUR) * (a + _FIVE)) if a < _SIX else ZERO
    lg = (z - HALF) * lz - z + _HALF_LOG_2PI + iz * (_G1 - iz2 * (_G3 - iz2 * _G5)) + shift
    dg = lz - HALF * iz - iz2 * (_P2 - iz2 * (_P4 - iz2 * _P6)) - (r0 + r1 + r2 + r3 + r4 + r5)
    return lg, dg


@inline
def digamma(a):
    """digamma(a) for a > 0, float32."""
    z, r0, r1, r2, r3, r4, r5 = _shift(a)
    iz = ONE / z
    iz2 = iz * iz
    return log(z) - HALF * iz - iz2 * (_P2 - iz2 * (_P4 - iz2 * _P6)) - (r0 + r1 + r2 + r3 + r4 + r5)


@inline
def digamma_shifted(a):
    """digamma(a + 1) for 0 < a < 6, without the rounding of digamma(a) + 1/a."""
    z, r0, r1, r2, r3, r4, r5 = _shift(a)
    iz = ONE / z
    iz2 = iz * iz
    return log(z) - HALF * iz - iz2 * (_P2 - iz2 * (_P4 - iz2 * _P6)) - (r1 + r2 + r3 + r4 + r5)


@inline
def trigamma(a):
    """trigamma(a) = digamma'(a) for a > 0, float32."""
    z, r0, r1, r2, r3, r4, r5 = _shift(a)
    iz = ONE / z
    iz2 = iz * iz
    asym = iz * (ONE + iz * (HALF + iz * (_T3 - iz2 * (_T5 - iz2 * (_T7 - iz2 * _T9)))))
    return asym + (r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3 + r4 * r4 + r5 * r5)


# float64 versions for per-row totals, where sums of many float32 terms meet.
@intrinsic
def _double_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_double(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


_SQRT_HALF64 = np.int64(0x3FE6A09E667F3BCD)
_ONE_BITS64, _MANTISSA64 = np.int64(0x3FF0000000000000), np.int64(0x000FFFFFFFFFFFFF)
_LN2_64 = 0.6931471805599453


@inline
def log64(x):
    """Natural log of a positive normal float64, as ``log`` with the atanh series to s^19 (error ~1e-16)."""
    bits = _double_bits(x) + (_ONE_BITS64 - _SQRT_HALF64)
    e = np.float64((bits >> np.int64(52)) - np.int64(1023))
    m = _bits_double((bits & _MANTISSA64) + _SQRT_HALF64)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    p = s * (2.0 + z * (2 / 3 + z * (2 / 5 + z * (2 / 7 + z * (2 / 9 + z * (2 / 11 + z * (
        2 / 13 + z * (2 / 15 + z * (2 / 17 + z * (2 / 19))))))))))
    return e * _LN2_64 + p


@inline
def _shift64(a):
    """As ``_shift`` in float64: ``z`` and the reciprocals 1/(a + i) (0 where a >= 6)."""
    small = a < 6.0
    r0 = 1.0 / a if small else 0.0
    r1 = 1.0 / (a + 1.0) if small else 0.0
    r2 = 1.0 / (a + 2.0) if small else 0.0
    r3 = 1.0 / (a + 3.0) if small else 0.0
    r4 = 1.0 / (a + 4.0) if small else 0.0
    r5 = 1.0 / (a + 5.0) if small else 0.0
    return (a + 6.0 if small else a), r0, r1, r2, r3, r4, r5


@inline
def lgamma64(a):
    """lgamma(a) for a > 0, float64 (absolute error below 1e-10)."""
    z = a + 6.0 if a < 6.0 else a
    iz = 1.0 / z
    iz2 = iz * iz
    shift = -log64(a * (a + 1.0) * (a + 2.0) * (a + 3.0) * (a + 4.0) * (a + 5.0)) if a < 6.0 else 0.0
    return ((z - 0.5) * log64(z) - z + 0.9189385332046727
            + iz * (1 / 12 - iz2 * (1 / 360 - iz2 * (1 / 1260 - iz2 * (1 / 1680)))) + shift)


@inline
def digamma64(a):
    """digamma(a) for a > 0, float64."""
    z, r0, r1, r2, r3, r4, r5 = _shift64(a)
    iz = 1.0 / z
    iz2 = iz * iz
    return (log64(z) - 0.5 * iz - iz2 * (1 / 12 - iz2 * (1 / 120 - iz2 * (1 / 252 - iz2 * (1 / 240 - iz2 / 132))))
            - (r0 + r1 + r2 + r3 + r4 + r5))


@inline
def trigamma64(a):
    """trigamma(a) for a > 0, float64."""
    z, r0, r1, r2, r3, r4, r5 = _shift64(a)
    iz = 1.0 / z
    iz2 = iz * iz
    asym = iz * (1.0 + iz * (0.5 + iz * (1 / 6 - iz2 * (1 / 30 - iz2 * (1 / 42 - iz2 * (1 / 30 - iz2 * 5 / 66))))))
    return asym + (r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3 + r4 * r4 + r5 * r5)
