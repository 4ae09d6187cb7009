"""fastgrad's elementary functions in pure Python: the same bits as the C.

This is ``_vmath_body.h`` (the C functions every compiled build uses: the
eager engine's rules, the replay's rows) written again with Python floats,
operation for operation, for the pure-Python engine (``fastgrad.reference``,
also the no-compiler build).  Python floats are IEEE doubles and each
``+ - * /`` rounds once, as the C does; the C's bit tricks (rounding to an
integer by adding 1.5*2^52, the exponent and table index from the bits,
powers of two) are done here on Python ints and with ``math.ldexp`` and
``math.frexp``, which are exact.  So for every input the two give the same
float; ``tests/test_vmath.py`` checks it on dense sweeps and edge cases.

The algorithms and their error analysis are in ``_vmath_body.h``; the
measured errors (<= 1 ulp against mpmath everywhere) in ``_vmath.h``.
Special cases (nan, infinities, zeros, the domain edges) are decided first
here, where the C computes every lane and selects: Python raises on
``0.0 / 0.0`` and ``int(nan)``, C does not.  Each returns what the C selects.
"""
import math

from fastgrad._vmath_tables import (
    C_HI, C_LO, EXP_TAB, INVLN2N, L2, L3, L4, L5, L6, L7, L8, LN2_HI, LN2_LO,
    LOG_TAB, P2, P3, P4, P5, P6, SHIFT, TANH_T1, TANH_T2, TP0, TP1, TP2, TQ1, TQ2,
)

__all__ = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus"]

_INF = math.inf
_NAN = math.nan
_ldexp = math.ldexp


def _two_sum(a: float, b: float) -> "tuple[float, float]":
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: float, b: float) -> "tuple[float, float]":
    s = a + b
    return s, b - (s - a)


def _split(a: float, c: float) -> "tuple[float, float]":
    t = a * c
    hi = t - (t - a)
    return hi, a - hi


def _exp_reduce(x: float, deg6: bool) -> "tuple[float, float, float, float, float, float, int]":
    """(th, tl, rh, kcl, r, q, m) for x in [-746, 710] (not nan)."""
    t = x * INVLN2N + SHIFT
    kd = t - SHIFT
    k = int(kd)
    j = k & 127
    rh = x - kd * C_HI
    kcl = kd * C_LO
    r = rh - kcl
    if deg6:
        q = (r * r) * (P2 + r * (P3 + r * (P4 + r * (P5 + r * P6))))
    else:
        q = (r * r) * (P2 + r * (P3 + r * (P4 + r * P5)))
    return EXP_TAB[2 * j], EXP_TAB[2 * j + 1], rh, kcl, r, q, k >> 7


def _scale2(v: float, m: int) -> float:
    """v * 2^m as the C's two exact factors (one rounding, at the last)."""
    m1 = m >> 1
    return (v * _ldexp(1.0, m1)) * _ldexp(1.0, m - m1)


def _exp_dd(x: float) -> "tuple[float, float, int]":
    th, tl, rh, kcl, r, q, m = _exp_reduce(x, False)
    w = r + q
    hi, lo = _fast_two_sum(th, tl + (th * w + tl * w))
    return hi, lo, m


def _expm1_dd(x: float) -> "tuple[float, float, int]":
    th, tl, rh, kcl, r, q, m = _exp_reduce(x, True)
    w = r + q
    r1, r2 = _split(rh, 67108865.0)
    p1 = th * r1
    small = (th * r2 + th * (q - kcl)) + (tl + tl * w)
    ah, al = _two_sum(th, -_ldexp(1.0, -min(m, 952)))
    bh, bl = _fast_two_sum(ah, p1)
    hi, lo = _fast_two_sum(bh, (al + bl) + small)
    return hi, lo, m


def _log_dd(xh: float, xl: "float | None") -> "tuple[float, float]":
    """log(xh + xl) as hi + lo, xh > 0 finite (xl None: a double)."""
    mant, e = math.frexp(xh)          # xh = mant 2^e, mant in [0.5, 1)
    if mant < 0.6875:                 # z in [1, 1.375): sub-intervals of 2^-7
        z, k = mant * 2.0, e - 1
        i = 80 + int((z - 1.0) * 128.0)
    else:                             # z in [0.6875, 1): sub-intervals of 2^-8
        z, k = mant, e
        i = int((z - 0.6875) * 256.0)
    kd = float(k)
    invc, lch, lcl = LOG_TAB[4 * i], LOG_TAB[4 * i + 1], LOG_TAB[4 * i + 2]
    z1, z2 = _split(z, 1048577.0)
    rh = z1 * invc - 1.0
    rl = z2 * invc
    r, rlo = _fast_two_sum(rh, rl)
    if xl is not None:
        r, c = _two_sum(r, (xl * _ldexp(1.0, -min(k, 952))) * invc)
        rlo = rlo + c
    p = (r * r) * (L2 + r * (L3 + r * (L4 + r * (L5 + r * (L6 + r * (L7 + r * L8))))))
    h0 = kd * LN2_HI + lch
    s, e2 = _two_sum(h0, r)
    return _fast_two_sum(s, e2 + (((kd * LN2_LO + lcl) + rlo) + p))


def _short(a: float) -> float:
    t = a * 134217729.0
    return t - (t - a)


def _div_dd(nh: float, nl: float, dh: float, dl: float) -> float:
    y = 1.0 / dh
    q0 = _short(nh * y)
    d1 = _short(dh)
    rem = ((nh - q0 * d1) - q0 * ((dh - d1) + dl)) + nl
    return q0 + rem * y


def _exp_neg_abs(x: float) -> "tuple[float, float, int]":
    nx = -abs(x)
    if nx < -746.0:
        nx = -746.0
    return _exp_dd(nx)


# ---------------------------------------------------------------------------
# the functions
# ---------------------------------------------------------------------------

def exp(x: float) -> float:
    """e**x (<= 1 ulp; overflow gives inf)."""
    if x != x:
        return x + x
    xc = 710.0 if x > 710.0 else (-746.0 if x < -746.0 else x)
    th, tl, rh, kcl, r, q, m = _exp_reduce(xc, False)
    w = r + q
    return _scale2(th + (tl + (th * w + tl * w)), m)


def expm1(x: float) -> float:
    """e**x - 1, accurate near 0."""
    if x != x or x == 0.0:
        return x + x if x != x else x
    xc = 710.0 if x > 710.0 else (-40.0 if x < -40.0 else x)
    hi, lo, m = _expm1_dd(xc)
    return _scale2(hi, m)


def tanh(x: float) -> float:
    """Hyperbolic tangent; tanh(-0.0) is -0.0."""
    if x != x:
        return x + x
    a = abs(x)
    if a < TANH_T1:
        s = a * a
        p = TP0 + s * (TP1 + s * TP2)
        q = 1.0 + s * (TQ1 + s * TQ2)
        return math.copysign(a + (a * s) * (p / q), x)
    h = 0.5 if a < TANH_T2 else 0.0
    a2 = a + a
    if a2 > 40.0:
        a2 = 40.0
    # e^(2a) = 2^m (uh + ul), the polynomial in the C's (Estrin's) order
    t = a2 * INVLN2N + SHIFT
    kd = t - SHIFT
    k = int(kd)
    j = k & 127
    rh = a2 - kd * C_HI
    kcl = kd * C_LO
    r = rh - kcl
    th, tl = EXP_TAB[2 * j], EXP_TAB[2 * j + 1]
    r2 = r * r
    e = r2 * ((P2 + r * P3) + r2 * (P4 + r * P5))
    w = r + e
    uh, ul = _fast_two_sum(th, tl + (th * w + tl * w))
    sc = _ldexp(1.0, k >> 7)
    sh, sl = _fast_two_sum(uh * sc, 1.0)
    sl = sl + ul * sc
    y = (2.0 - h * sh) / sh
    b1, b2 = _fast_two_sum(1.0 - h, -y)
    yy = y + h
    return math.copysign(b1 + (b2 + (yy * yy) * (sl * 0.5)), x)


def sigmoid(x: float) -> float:
    """1 / (1 + e**-x), without overflow for any x."""
    if x != x:
        return x + x
    hi, lo, m = _exp_neg_abs(x)
    dh, dl = _fast_two_sum(1.0, _scale2(hi, m))
    dl = dl + _scale2(lo, m)
    if x >= 0.0:
        return _div_dd(1.0, 0.0, dh, dl)
    return _scale2(_div_dd(hi, lo, dh, dl), m)


def log(x: float) -> float:
    """Natural logarithm as C's: -inf at 0, nan below, inf at inf."""
    if x != x:
        return x + x
    if x <= 0.0:
        return -_INF if x == 0.0 else _NAN
    if x == _INF:
        return x
    return _log_dd(x, None)[0]


def log1p(x: float) -> float:
    """log(1 + x), accurate near 0; -inf at -1, nan below."""
    if x != x:
        return x + x
    if x <= -1.0:
        return -_INF if x == -1.0 else _NAN
    if x == _INF or x == 0.0:
        return x
    uh, ul = _two_sum(1.0, x)
    return _log_dd(uh, ul)[0]


def softplus(x: float) -> float:
    """log(1 + e**x), without overflow for any x."""
    if x != x:
        return x + x
    if x == _INF:
        return x
    th, tl, m = _exp_neg_abs(x)
    t = _scale2(th, m)
    if x < 0.0 and m < -30:           # log1p(t) = t (1 - t/2 + t^2/3), unscaled
        return _scale2(th + (tl + th * (t * (L2 + t * L3))), m)
    uh, ul = _fast_two_sum(1.0, t)
    ul = ul + _scale2(tl, m)
    hi, lo = _log_dd(uh, ul)
    s, e = _two_sum(x if x > 0.0 else 0.0, hi)
    return s + (e + lo)
