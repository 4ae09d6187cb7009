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

``--screen`` (tanh and sigmoid; millions of points per region): every
point is first graded against the x87 long double result (numpy's
longdouble: tanhl, and 1/(1 + expl(-x)) for sigmoid; 64-bit significands,
a few units of 2^-64 from the exact value, so the estimate is within 2^-8
ulp of the true error), and mpmath at 256 bits grades the points whose
estimate is within 2^-6 ulp of the largest estimate: the largest true
error is among them.  Every build this CPU runs is also compared with the
portable build bit for bit on all points, and the IEEE edges (+-0, +-inf,
nan, the range boundaries) are checked exactly.
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


LD_EXACT = {
    "tanh": lambda x: np.tanh(x.astype(np.longdouble)),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x.astype(np.longdouble))),
}
EDGES = {
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (math.inf, 1.0), (-math.inf, -1.0),
             (math.nan, math.nan), (5e-324, 5e-324), (-5e-324, -5e-324),
             (TINY, TINY), (20.0, 1.0), (-20.0, -1.0), (1e300, 1.0), (-1e300, -1.0)],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (math.inf, 1.0), (-math.inf, 0.0),
                (math.nan, math.nan), (1000.0, 1.0), (-1e300, 0.0), (-800.0, 0.0)],
}


def screen(name, n, rng, isas, evaluate):
    """--screen: (max ulp over normal results, where, max over subnormal
    results, where, points, points graded by mpmath)."""
    worst = [0.0, None, 0.0, None]
    total = graded = 0
    for label, x in regions(name, n, rng).items():
        x = np.ascontiguousarray(x, np.float64)
        if name == "tanh":     # the thresholds themselves and their neighbours
            t = np.array([0.2555, 0.5494, 20.0, math.atanh(0.25), math.atanh(0.5)])
            nb = np.concatenate([np.nextafter(t, -1), t, np.nextafter(t, 2)])
            x = np.concatenate([x, nb, -nb])
        y = evaluate(name, x, "portable")
        for isa in isas:
            other = evaluate(name, x, isa)
            if other.tobytes() != y.tobytes():
                bad = np.flatnonzero(other.view(np.int64) != y.view(np.int64))[0]
                raise AssertionError(f"{name}: {isa} differs from portable at {x[bad]!r}")
        with np.errstate(over="ignore"):     # expl(-x) = inf: sigmoid 0
            ref = LD_EXACT[name](x)
        ok = np.isfinite(ref) & (ref != 0)
        _, e = np.frexp(ref[ok])
        sub = np.abs(ref[ok]) < TINY
        ulp = np.ldexp(np.longdouble(1), np.maximum(e.astype(np.int64) - 1, -1022) - 52)
        est = np.zeros(x.size)
        est[ok] = np.asarray(np.abs(y[ok].astype(np.longdouble) - ref[ok]) / ulp, np.float64)
        assert np.all(y[ref == 0] == 0), (name, label)
        for k, m in ((0, ~sub), (2, sub)):
            if not m.any():
                continue
            idx = np.flatnonzero(ok)[m]
            top = est[idx].max()
            cand = idx[est[idx] >= top - 2.0 ** -6]
            graded += cand.size
            mw = measure(name, x[cand], y[cand])
            if mw[k] > worst[k]:
                worst[k], worst[k + 1] = mw[k], mw[k + 1]
        total += x.size
        print(f"  {name:8s} {label:42s} {x.size:9d} points, largest estimate "
              f"{est.max():.4f} ulp", flush=True)
    for xi, want in EDGES[name]:
        xa = np.array([xi])
        for isa in ["portable"] + list(isas):
            got = evaluate(name, xa, isa)[0]
            same = (math.isnan(got) and math.isnan(want)) or (
                got == want and math.copysign(1, got) == math.copysign(1, want))
            assert same, (name, isa, xi, got, want)
        total += 1
    return worst + [total, graded]


def main_screen(args, names):
    from fastgrad import _vmath_ext as V
    isas = V.supported()
    rng = np.random.default_rng(args.seed)
    print(f"fastgrad vector maths, --screen: {args.n} points per region; long double "
          f"screen, mpmath (256 bits) on the candidates; builds compared: {isas}")
    for name in names:
        t0 = time.perf_counter()
        w = screen(name, args.n, rng, isas, V.evaluate)
        sub = f"{w[2]:.4f} at {w[3]!r}" if w[3] is not None else "-"
        print(f"{name}: max {w[0]:.4f} ulp at {w[1]!r} (subnormal results: {sub}); "
              f"{w[4]} points, {w[5]} graded by mpmath, every build the same bits "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None)
    ap.add_argument("--screen", action="store_true",
                    help="long double screen + mpmath on the worst (tanh, sigmoid)")
    args = ap.parse_args(argv)
    if args.screen:
        return main_screen(args, args.only.split(",") if args.only else ["tanh", "sigmoid"])
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
