"""Write the tables and constants of fastgrad's vector maths.

Generates, from mpmath at 256 bits:

* ``src/fastgrad/_vmath_tables.h`` -- for the C functions (``_vmath_body.h``);
* ``src/fastgrad/_vmath_tables.py`` -- the same numbers for the pure-Python
  port (``_vmath_py.py``), so that both compute the same bits.

Run from the repository root: ``python tools/gen_vmath_tables.py``; commit
both outputs (they are data, not build products).  The script asserts the
properties the algorithms rely on (see ``_vmath_body.h``): the bit widths
that make products exact, the reduced-argument bounds.
"""
import struct
from pathlib import Path

import mpmath
from mpmath import mp, mpf

mp.prec = 256
ROOT = Path(__file__).resolve().parent.parent
N_EXP = 128          # exp: 2^(j/128), j = 0..127
N_LOG = 128          # log: 128 sub-intervals of [0.6875, 1.375)
LOG_OFF = 0x3FE6000000000000   # bits of 0.6875


def f64(v):
    """Round to the nearest double (mpmath rounds to nearest-even)."""
    return float(mpf(v))


def round_bits(v, bits):
    """v rounded to ``bits`` significant bits (nearest), as a double."""
    v = mpf(v)
    e = int(mpmath.floor(mpmath.log(abs(v), 2)))
    scale = mpf(2) ** (bits - 1 - e)
    return float(mpmath.nint(v * scale) / scale)


def round_grid(v, exp2):
    """v rounded to the nearest multiple of 2**exp2, as a double."""
    scale = mpf(2) ** (-exp2)
    return float(mpmath.nint(mpf(v) * scale) / scale)


def sig_bits(x):
    """Number of significant bits of a double (0 for 0)."""
    if x == 0:
        return 0
    m, _ = mpmath.frexp(mpf(x))
    n = 0
    while m != mpmath.floor(m):
        m *= 2
        n += 1
    return n


def bits_to_double(u):
    return struct.unpack("<d", struct.pack("<Q", u))[0]


LN2 = mpmath.log(2)

# -- exp reduction: x = k ln2/128 + r, |k| < 2^18 on the clamped range -------
C = {}
C["INVLN2N"] = f64(N_EXP / LN2)
C["SHIFT"] = 6755399441055744.0           # 0x1.8p52: round to integer
C["C_HI"] = round_grid(LN2 / N_EXP, -42)  # 35 bits: k * C_HI exact
C["C_LO"] = f64(LN2 / N_EXP - mpf(C["C_HI"]))
assert sig_bits(C["C_HI"]) <= 35
# e^r - 1 - r = r^2 (P2 + r (P3 + ...)), Taylor; |r| <= 2^-8.5
for k in range(2, 7):
    C[f"P{k}"] = f64(1 / mpmath.factorial(k))
# -- log: log(x) = k ln2 + log(1/invc) + log1p(z invc - 1) --------------------
C["LN2_HI"] = round_grid(LN2, -42)        # 42 bits: k * LN2_HI exact, |k| < 2^11
C["LN2_LO"] = f64(LN2 - mpf(C["LN2_HI"]))
for k in range(2, 9):                    # log1p(r) - r = r^2 (L2 + r (L3 + ...))
    C[f"L{k}"] = f64(mpf((-1) ** (k + 1)) / k)

# -- tanh: three ranges (see _vmath_body.h) ------------------------------------
# |x| < TANH_T1: tanh x = x + x^3 R(x^2), R = (TP0 + s (TP1 + s TP2)) /
# (1 + s (TQ1 + s TQ2)) a near-minimax fit of g(s) = (tanh(sqrt s) - sqrt s) /
# s^1.5 on s in [0, TANH_T1^2], weighted by s^1.5 / tanh(sqrt s) (the error it
# makes in tanh, relative): Loeb's linearised least squares on Chebyshev nodes.
# The other ranges need tanh >= 1/4 (T1) and >= 1/2 (T2): the bounds there.
C["TANH_T1"] = 0.2555
C["TANH_T2"] = 0.5494
assert mpmath.tanh(C["TANH_T1"]) > mpf(1) / 4 and mpmath.tanh(C["TANH_T2"]) > mpf(1) / 2


def _tanh_fit(a, m=2, n=2, nodes=84, rounds=8):
    span = mpf(a) ** 2

    def g(s):
        r = mpmath.sqrt(s)
        return (mpmath.tanh(r) - r) / (s * r)

    def w(s):
        r = mpmath.sqrt(s)
        return s * r / mpmath.tanh(r)

    xs = [span * (1 - mpmath.cos(mpmath.pi * (i + mpf(1) / 2) / nodes)) / 2
          for i in range(nodes)]
    qprev = [mpf(1)] * nodes
    for _ in range(rounds):
        A = mpmath.matrix(nodes, m + 1 + n)
        b = mpmath.matrix(nodes, 1)
        for i, s in enumerate(xs):
            ww = w(s) / qprev[i]
            for k in range(m + 1):
                A[i, k] = s ** k * ww
            for k in range(1, n + 1):
                A[i, m + k] = -g(s) * s ** k * ww
            b[i] = g(s) * ww
        c = mpmath.qr_solve(A, b)[0]
        q = [mpf(1)] + [c[m + k] for k in range(1, n + 1)]
        qprev = [sum(q[k] * s ** k for k in range(n + 1)) for s in xs]
    return [f64(c[k]) for k in range(m + 1)], [f64(v) for v in q[1:]]


_tp, _tq = _tanh_fit(C["TANH_T1"])
for k, v in enumerate(_tp):
    C[f"TP{k}"] = v
for k, v in enumerate(_tq, 1):
    C[f"TQ{k}"] = v

# -- the exp table: 2^(j/128) = TH + TL, TH with 26 significant bits ----------
exp_tab = []
for j in range(N_EXP):
    t = mpf(2) ** (mpf(j) / N_EXP)
    th = round_bits(t, 26)
    tl = f64(t - mpf(th))
    assert sig_bits(th) <= 26 and 1 <= th < 2
    exp_tab += [th, tl]

# -- the log table: per sub-interval i of [0.6875, 1.375): invc (20 bits),
# -log(invc) = LCH + LCL with LCH a multiple of 2^-42 ---------------------------
log_tab = []
rmax = 0
for i in range(N_LOG):
    lo = bits_to_double(LOG_OFF + (i << 45))
    hi = bits_to_double(LOG_OFF + ((i + 1) << 45))
    if lo == 1.0 or hi == 1.0:
        invc = 1.0                       # the intervals next to 1: log(1) = 0
    else:
        invc = round_bits(2 / (mpf(lo) + mpf(hi)), 20)
    assert sig_bits(invc) <= 20
    logc = -mpmath.log(invc)
    lch = round_grid(logc, -42)
    lcl = f64(logc - mpf(lch))
    assert abs(lch) < 0.5
    for z in (lo, hi):
        rmax = max(rmax, abs(mpf(z) * invc - 1))
    log_tab += [invc, lch, lcl, 0.0]     # 4 per entry: index i << 2
assert rmax < mpf(2) ** -7 * (1 + mpf(2) ** -18), rmax


def hexf(x):
    return float.hex(x)


H = ROOT / "src" / "fastgrad" / "_vmath_tables.h"
P = ROOT / "src" / "fastgrad" / "_vmath_tables.py"

lines = [
    "/* Tables and constants of fastgrad's vector maths (_vmath_body.h).",
    " * GENERATED by tools/gen_vmath_tables.py from mpmath -- do not edit;",
    " * _vmath_tables.py holds the same numbers for the pure-Python port. */",
    "#ifndef FASTGRAD_VMATH_TABLES_H",
    "#define FASTGRAD_VMATH_TABLES_H",
    "",
]
for name, v in C.items():
    lines.append(f"#define FG_VM_{name} {hexf(v)}  /* {v!r} */")
lines += ["", f"/* 2^(j/{N_EXP}) = [2j] + [2j+1], [2j] with 26 significant bits */",
          f"static const double fg_vm_exp_tab[{2 * N_EXP}] = {{"]
for j in range(N_EXP):
    lines.append(f"    {hexf(exp_tab[2 * j])}, {hexf(exp_tab[2 * j + 1])},")
lines += ["};", "",
          "/* per sub-interval i of [0.6875, 1.375): [4i] = invc (20 significant",
          " * bits), [4i+1] + [4i+2] = -log(invc) ([4i+1] a multiple of 2^-42) */",
          f"static const double fg_vm_log_tab[{4 * N_LOG}] = {{"]
for i in range(N_LOG):
    e = log_tab[4 * i: 4 * i + 4]
    lines.append(f"    {hexf(e[0])}, {hexf(e[1])}, {hexf(e[2])}, 0.0,")
lines += ["};", "", "#endif", ""]
H.write_text("\n".join(lines))

py = [
    '"""Tables and constants of fastgrad\'s vector maths, for _vmath_py.py.',
    "",
    "GENERATED by tools/gen_vmath_tables.py from mpmath -- do not edit;",
    "_vmath_tables.h holds the same numbers for the C functions.",
    '"""',
    "_h = float.fromhex",
    "",
]
for name, v in C.items():
    py.append(f"{name} = _h({hexf(v)!r})")
py.append("")
py.append("EXP_TAB = tuple(_h(s) for s in (")
for j in range(N_EXP):
    py.append(f"    {hexf(exp_tab[2 * j])!r}, {hexf(exp_tab[2 * j + 1])!r},")
py.append("))")
py.append("")
py.append("LOG_TAB = tuple(_h(s) for s in (")
for i in range(N_LOG):
    e = log_tab[4 * i: 4 * i + 4]
    py.append(f"    {hexf(e[0])!r}, {hexf(e[1])!r}, {hexf(e[2])!r}, '0x0.0p+0',")
py.append("))")
py.append("")
P.write_text("\n".join(py))
print(f"wrote {H.relative_to(ROOT)} and {P.relative_to(ROOT)}; max |r| of log = {float(rmax):.3g}")
