"""Accuracy of fastgrad's elementary functions (_vmath.h) against mpmath.

Run from a checkout with the compiled build in place (or the pure-Python
build: then the port ``fastgrad._vmath_py`` is measured, which gives the same
bits)::

    PYTHONPATH=src python benchmarks/vmath_accuracy.py [--n 200000] [--seed 1]
        [--only tanh,exp]

For each function: ``--n`` points per region (uniform over the function's
domain, its critical ranges: near 0, near 1 for log, the reduction's
boundaries k ln2/256, the range of subnormal results, random doubles of every
exponent), evaluated by the portable build (every other build gives the same
bits: tests/test_vmath.py), compared with mpmath at 256 bits.  Reports, per
function: the maximum error in ulps of the exact value (ulp(v) =
2^(floor(log2|v|) - 52), 2^-1074 for subnormals) over normal results and
over subnormal results, where it occurred, the share of results that are not
the correctly rounded double, and the C library's maximum error on the same
points (glibc here; sigmoid and softplus in their usual stable forms).

With gmpy2 installed mpmath is ~5x faster (200,000 points per region and
function take a few minutes).
"""
import argparse
import math
import sys
import time

import numpy as np
import mpmath
from mpmath import mpf

EXACT = {
    "exp": mpmath.exp,
    "expm1": mpmath.expm1,
    "log": mpmath.log,
    "log1p": mpmath.log1p,
    "tanh": mpmath.tanh,
    "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
    "softplus": lambda x: mpmath.log1p(mpmath.exp(x)),
}
TINY = 2.0 ** -1022
TWO1024 = mpf(2) ** 1024


def correctly_rounded(v):
    """The double nearest to v (ties to even), subnormals included (mpmath's
    float() rounds to 53 bits first, which double-rounds below 2^-1022)."""
    if abs(v) >= TINY:
        return float(v)
    return math.ldexp(float(mpmath.nint(v * mpf(2) ** 1074)), -1074)


def regions(name, n, rng):
    """name -> {region label: points}."""
    u = lambda a, b: rng.uniform(a, b, n)                      # noqa: E731
    signs = rng.choice([-1.0, 1.0], n)
    bits = rng.integers(0, 2 ** 64, n, dtype=np.uint64).view(np.float64)
    bits = bits[np.isfinite(bits)]
    kln2 = rng.integers(-3000, 3000, n) * (math.log(2) / 256)
    edges = kln2 + rng.uniform(-1, 1, n) * 1e-10
    near0 = np.exp(u(-700, -1)) * signs
    r = {"random doubles": bits, "near 0 (|x| = e^-700 .. e^-1)": near0,
         "[-1, 1]": u(-1, 1)}
    if name == "exp":
        r.update({"domain [-745.2, 709.8]": u(-745.2, 709.78),
                  "k ln2/256 boundaries": edges,
                  "subnormal results [-745.2, -708.4]": u(-745.2, -708.4)})
    elif name == "expm1":
        r.update({"domain [-40, 709.8]": u(-40, 709.78),
                  "k ln2/256 boundaries": edges[np.abs(edges) < 40]})
    elif name == "log":
        r.update({"domain e^[-744, 709.7]": np.exp(u(-744, 709.7)),
                  "near 1 (1 +- 0.02)": 1 + u(-0.02, 0.02),
                  "subnormal x": u(0, 1) * TINY})
    elif name == "log1p":
        r.update({"domain (-1, 10]": u(-1, 10),
                  "large e^[-744, 709.7]": np.exp(u(-744, 709.7)),
                  "(-1, 0) near -1": -np.exp(u(-40, 0))})
    elif name == "tanh":
        # the ranges: |x| < 0.2555 (rational), [0.2555, 0.5494) (c = 1/2),
        # above (c = 1), 2|x| clamped at 40; worst near tanh = 1/4, 1/2
        t1, t2 = 0.2555, 0.5494
        r.update({"domain [-20, 20]": u(-20, 20),
                  "k ln2/512 boundaries": edges[np.abs(edges) < 80] / 2,
                  "|x| in [0, 0.2555)": u(0, t1) * signs,
                  "|x| in [0.2555, 0.5494)": u(t1, t2) * signs,
                  "|x| in [0.5494, 1.2)": u(t2, 1.2) * signs,
                  "|x| near 0.2555 (+-1e-3)": u(t1 - 1e-3, t1 + 1e-3) * signs,
                  "|x| near 0.5494 (+-1e-3)": u(t2 - 1e-3, t2 + 1e-3) * signs,
                  "|x| near atanh(1/4), atanh(1/2) (+-1e-3)": np.concatenate(
                      [u(0.25441, 0.25641), u(0.54831, 0.55031)])[rng.permutation(2 * n)[:n]],
                  "|x| in [19, 21]": u(19, 21) * signs})
    else:
        r.update({"domain [-745.2, 40]": u(-745.2, 40), "[-50, 50]": u(-50, 50),
                  "subnormal results [-745.2, -708.4]": u(-745.2, -708.4),
                  "k ln2/256 boundaries": edges[np.abs(edges) < 700]})
    return r


def measure(name, x, y):
    """(max ulp over normal results, where, max over subnormal, where,
    number not correctly rounded, number of finite results compared)."""
    f = EXACT[name]
    worst = [0.0, None, 0.0, None]
    not_cr = 0
    count = 0
    with mpmath.workprec(256):
        for xi, yi in zip(x.tolist(), y.tolist()):
            if name in ("log", "log1p") and xi < (0.0 if name == "log" else -1.0):
                assert math.isnan(yi), (name, xi, yi)
                continue
            v = f(mpf(xi))
            if abs(v) >= TWO1024 * (1 - mpf(2) ** -54):     # overflows
                assert yi == math.copysign(math.inf, float(v)), (name, xi, yi)
                continue
            count += 1
            cr = correctly_rounded(v)
            if yi != cr:
                not_cr += 1
            if v == 0:
                assert yi == 0, (name, xi, yi)
                continue
            e = max(int(mpmath.floor(mpmath.log(abs(v), 2))), -1022)
            err = float(abs(mpf(yi) - v) / mpf(2) ** (e - 52))
            k = 2 if abs(cr) < TINY else 0
            if err > worst[k]:
                worst[k], worst[k + 1] = err, xi
    return worst + [not_cr, count]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    try:
        from fastgrad import _vmath_ext as V
        impl = "compiled, portable build (all builds give the same bits)"

        def ours(name, x):
            return V.evaluate(name, x, "portable")

        def libm(name, x):
            return V.libm(name, x)
    except ImportError:
        from fastgrad import _vmath_py as P
        impl = "pure-Python port (the same bits as the C)"

        def ours(name, x):
            return np.array([getattr(P, name)(v) for v in x.tolist()])
        libm = None
    names = args.only.split(",") if args.only else list(EXACT)
    print(f"fastgrad vector maths vs mpmath (256 bits); {impl}; {args.n} points per region; "
          f"mpmath backend {mpmath.libmp.BACKEND}")
    rng = np.random.default_rng(args.seed)
    summary = []
    for name in names:
        t0 = time.perf_counter()
        tot = [0.0, None, 0.0, None, 0, 0]
        lib = [0.0, None, 0.0, None, 0, 0]
        for label, x in regions(name, args.n, rng).items():
            x = np.ascontiguousarray(x, np.float64)
            m = measure(name, x, ours(name, x))
            print(f"  {name:8s} {label:38s} max {m[0]:.4f} ulp (subnormal results: "
                  f"{m[2]:.4f}); not correctly rounded {m[4]} of {m[5]}", flush=True)
            for k in (0, 2):
                if m[k] > tot[k]:
                    tot[k], tot[k + 1] = m[k], m[k + 1]
            tot[4] += m[4]
            tot[5] += m[5]
            if libm is not None:
                ml = measure(name, x, libm(name, x))
                for k in (0, 2):
                    if ml[k] > lib[k]:
                        lib[k], lib[k + 1] = ml[k], ml[k + 1]
        summary.append((name, tot, lib))
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\nfunction  max ulp (normal results)          max ulp (subnormal results)"
          "   not correctly rounded   libm max ulp")
    for name, t, lib in summary:
        where = f"at {t[1]!r}" if t[1] is not None else ""
        sub = f"{t[2]:.4f} at {t[3]!r}" if t[3] is not None else "-"
        libs = f"{lib[0]:.3f}" + (f" / {lib[2]:.3f} subn." if lib[3] is not None else "")
        print(f"{name:9s} {t[0]:.4f} {where:26s} {sub:30s} {t[4]:7d} of {t[5]:8d}"
              f"   {libs if libm else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
