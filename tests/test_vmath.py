"""fastgrad's elementary functions (_vmath.h, _vmath_py.py) against mpmath.

exp, expm1, log, log1p, tanh, sigmoid and softplus are written once over a
vector type (``_vmath_body.h``) and compiled at widths 1, 2, 4 and 8; the
eager engine uses width 1, the replay the widest the CPU runs, and the
pure-Python engine a port of the same operations (``_vmath_py``).  Oracles:

* mpmath at 256 bits: the error of every result, in ulps of the exact value
  (``ulp(v) = 2**(floor(log2|v|) - 52)``, subnormals 2**-1074), must stay
  within the bound each function documents in ``_vmath.h``;
* hand-derived IEEE values at the edges (zeros with their signs, infinities,
  nan, the overflow and underflow thresholds);
* the builds against each other and against the Python port, bit for bit
  (uint64 views, so -0.0 != 0.0 and nan payloads count).
"""
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import _vmath_py, _vmath_tables

mpmath = pytest.importorskip("mpmath")
mpf = mpmath.mpf

if fastgrad.COMPILED:
    from fastgrad import _vmath_ext

compiled_only = pytest.mark.compiled_only("the C builds of the vector maths")

NAMES = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus"]

# the exact functions
EXACT = {
    "exp": mpmath.exp,
    "expm1": mpmath.expm1,
    "log": mpmath.log,
    "log1p": mpmath.log1p,
    "tanh": mpmath.tanh,
    "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
    "softplus": lambda x: mpmath.log1p(mpmath.exp(x)),
}

# documented bounds (_vmath.h): results in the normal range, and results in
# the subnormal range (exp, sigmoid, softplus round there twice: to 53 bits,
# then to the subnormal's precision)
BOUND = {"exp": 0.52, "expm1": 0.52, "log": 0.52, "log1p": 0.52, "tanh": 0.76,
         "sigmoid": 0.52, "softplus": 0.52}
# the least worst error a sweep must reach (the error measure itself is
# exercised, easy points do not hide a broken function); tanh's sweep
# covers the points next to tanh = 1/4 and 1/2 where its error peaks
WORST_AT_LEAST = {"tanh": 0.7}
BOUND_SUBNORMAL = 0.76
TINY = 2.0 ** -1022


def exact(name, x):
    with mpmath.workprec(256):
        return EXACT[name](mpf(x))


def ulp_error(name, x, y):
    """|y - f(x)| in ulps of f(x); None where f(x) overflows a double."""
    with mpmath.workprec(256):
        v = EXACT[name](mpf(x))
        if abs(v) >= mpf(2) ** 1024 * (1 - mpf(2) ** -54):
            return None if y in (math.inf, -math.inf) and (y > 0) == (v > 0) else math.inf
        if v == 0:
            return 0.0 if y == 0 else math.inf
        if not math.isfinite(y):
            return math.inf
        e = max(int(mpmath.floor(mpmath.log(abs(v), 2))), -1022)
        return float(abs(mpf(y) - v) / mpf(2) ** (e - 52))


def bound(name, y):
    return BOUND_SUBNORMAL if abs(y) < TINY else BOUND[name]


def implementations():
    """(label, f(name, array) -> array) for every build this process runs."""
    impls = [("python", lambda name, x: np.array([getattr(_vmath_py, name)(float(v))
                                                   for v in x]))]
    if fastgrad.COMPILED:
        for isa in _vmath_ext.supported():
            impls.append((isa, lambda name, x, isa=isa: _vmath_ext.evaluate(name, x, isa)))
    return impls


def same_bits(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# ---------------------------------------------------------------------------
# dense sweeps over each function's domain
# ---------------------------------------------------------------------------

def sweep(name, n=1500, seed=0):
    """Points of every region where the algorithm changes behaviour."""
    rng = np.random.default_rng(seed + NAMES.index(name))
    u = lambda a, b, k=n: rng.uniform(a, b, k)               # noqa: E731
    near0 = np.concatenate([u(-0.01, 0.01), u(-1, 1) * 1e-8, u(-1, 1),
                            np.exp(u(-700, -1)) * rng.choice([-1, 1], n)])
    # the reduction's boundaries: x near k ln2/256 (exp) and near 1 (log)
    kln2 = np.arange(-300, 300) * (math.log(2) / 256)
    edges = np.concatenate([kln2 + d for d in (-1e-12, 0.0, 1e-12)])
    if name == "exp":
        return np.concatenate([u(-745.2, 709.78), near0, edges, u(-745.2, -708.3)])
    if name == "expm1":
        return np.concatenate([u(-40, 709.78), near0, edges])
    if name == "log":
        return np.concatenate([np.exp(u(-744, 709.7)), 1 + u(-0.02, 0.02),
                               1 + u(-1, 1) * 1e-9, u(0, 1) * TINY])
    if name == "log1p":
        return np.concatenate([u(-1, 10), near0, np.exp(u(-744, 709.7)),
                               -np.exp(u(-40, 0)), u(-1, 1) * 1e-17])
    if name == "tanh":
        # its three ranges (_vmath_body.h): |x| < T1 = 0.2555, [T1, T2 = 0.5494),
        # above; the worst errors sit next to tanh = 1/4 and 1/2; 2|x| is
        # clamped at 40; subnormal and tiny x (x itself)
        t1, t2 = 0.2555, 0.5494
        sgn = rng.choice([-1, 1], n)
        at = [math.atanh(0.25), math.atanh(0.5)]
        points = [v for c in (t1, t2, *at) for v in
                  (c, math.nextafter(c, 0.0), math.nextafter(c, 1.0))]
        return np.concatenate([u(-20, 20), near0, edges / 2, u(-t2, t2),
                               u(t1 - 1e-3, t1 + 1e-3) * sgn, u(t2 - 1e-3, t2 + 1e-3) * sgn,
                               u(at[0] - 1e-3, at[0] + 1e-3), u(at[1] - 1e-3, at[1] + 1e-3),
                               u(t2, 1.2) * sgn, u(19, 21) * sgn, u(-1, 1) * TINY,
                               points, [-v for v in points]])
    return np.concatenate([u(-745.2, 40), near0, u(-745.2, -700), u(-50, 50), edges])


@pytest.mark.parametrize("name", NAMES)
def test_dense_sweep_within_documented_bound(name):
    x = sweep(name)
    results = [(label, f(name, x)) for label, f in implementations()]
    for label, y in results[1:]:
        assert same_bits(y, results[0][1]), (name, label, results[0][0])
    worst = 0.0
    for xi, yi in zip(x.tolist(), results[0][1].tolist()):
        err = ulp_error(name, xi, yi)
        if err is None:
            continue
        assert err <= bound(name, yi), (name, xi, yi, err)
        worst = max(worst, err)
    # the sweep reaches the bound's order: easy points do not hide a broken
    # function (the error measure itself is exercised)
    assert worst > WORST_AT_LEAST.get(name, 0.45), (name, worst)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_any_double_within_bound_and_same_bits_everywhere(name, x):
    impls = implementations()
    arr = np.array([x])
    results = [(label, f(name, arr)) for label, f in impls]
    for label, y in results:
        assert same_bits(y, results[0][1]), (name, x, label, results[0][0])
    y = float(results[0][1][0])
    if name in ("log", "log1p") and x < (0.0 if name == "log" else -1.0):
        assert math.isnan(y)
        return
    err = ulp_error(name, x, y)
    if err is not None:
        assert err <= bound(name, y), (name, x, y, err)


# ---------------------------------------------------------------------------
# the edges: hand-derived IEEE values
# ---------------------------------------------------------------------------

INF, NAN = math.inf, math.nan
MIN_SUB = 5e-324
DBL_MAX = 1.7976931348623157e308
# exp(x) is finite up to log(DBL_MAX + ulp/2) = 709.78271289338400 (the
# largest double below it is 709.782712893384); e^x rounds to 0 below
# log(2^-1075) = -745.1332191019412 (exactly half the smallest subnormal)
EXP_MAX = 709.782712893384
EDGES = {
    "exp": [(0.0, 1.0), (-0.0, 1.0), (-INF, 0.0), (INF, INF), (1000.0, INF),
            (-1000.0, 0.0), (math.nextafter(EXP_MAX, INF), INF),
            (-745.2, 0.0), (-745.0, MIN_SUB), (-745.13321910194, MIN_SUB),
            (1.0, math.e)],
    "expm1": [(0.0, 0.0), (-0.0, -0.0), (-INF, -1.0), (INF, INF), (-40.0, -1.0),
              (-1000.0, -1.0), (710.0, INF), (MIN_SUB, MIN_SUB), (-MIN_SUB, -MIN_SUB),
              (1e-300, 1e-300)],
    "log": [(0.0, -INF), (-0.0, -INF), (-1.0, NAN), (-MIN_SUB, NAN), (-INF, NAN),
            (INF, INF), (1.0, 0.0), (math.e, 1.0)],
    "log1p": [(0.0, 0.0), (-0.0, -0.0), (-1.0, -INF), (-2.0, NAN), (-INF, NAN),
              (INF, INF), (MIN_SUB, MIN_SUB), (-MIN_SUB, -MIN_SUB), (1e-300, 1e-300),
              (1.0, math.log(2.0))],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (20.0, 1.0),
             (-20.0, -1.0), (1e300, 1.0), (MIN_SUB, MIN_SUB), (-MIN_SUB, -MIN_SUB),
             (1e-300, 1e-300)],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (INF, 1.0), (-INF, 0.0), (1000.0, 1.0),
                (-1000.0, 0.0), (40.0, 1.0), (-746.0, 0.0), (-745.13321910194, MIN_SUB)],
    "softplus": [(-INF, 0.0), (INF, INF), (1000.0, 1000.0), (-1000.0, 0.0),
                 (1e300, 1e300), (-746.0, 0.0), (-745.13321910194, MIN_SUB)],
}


@pytest.mark.parametrize("name", NAMES)
def test_ieee_edges(name):
    xs = np.array([x for x, _ in EDGES[name]] + [NAN])
    want = [w for _, w in EDGES[name]] + [NAN]
    for label, f in implementations():
        got = f(name, xs).tolist()
        for x, w, g in zip(xs.tolist(), want, got):
            if math.isnan(w):
                assert math.isnan(g), (label, name, x, g)
            else:
                # signs of zero included
                assert bits(g) == bits(w), (label, name, x, g, w)


@pytest.mark.parametrize("name", NAMES)
def test_edge_table_is_correctly_rounded(name):
    # the hand-written expectations above are the correctly rounded values
    with mpmath.workprec(256):
        for x, want in EDGES[name]:
            if not math.isfinite(x) or math.isnan(want) or math.isinf(want):
                continue
            v = EXACT[name](mpf(x))
            if abs(v) < TINY:       # float() would round to 53 bits first
                cr = math.ldexp(float(mpmath.nint(v * mpf(2) ** 1074)), -1074)
            else:
                cr = float(v)
            assert cr == want, (name, x, cr, want)


def test_exp_overflow_threshold_is_the_correctly_rounded_one():
    # the largest x with a finite e^x, and DBL_MAX's neighbourhood
    assert exact("exp", EXP_MAX) < DBL_MAX
    assert exact("exp", math.nextafter(EXP_MAX, INF)) > DBL_MAX
    for label, f in implementations():
        y = f("exp", np.array([EXP_MAX, math.nextafter(EXP_MAX, INF)])).tolist()
        assert math.isfinite(y[0]) and y[1] == INF, label
        assert ulp_error("exp", EXP_MAX, y[0]) <= 0.52, label


# ---------------------------------------------------------------------------
# bit identity: every build, every tail length, in place, the Python port
# ---------------------------------------------------------------------------

def random_doubles(n, seed):
    """Doubles with uniformly random bits: every exponent, subnormals,
    infinities and nans included, plus the values of interest."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2 ** 64, n, dtype=np.uint64).view(np.float64)
    extra = [0.0, -0.0, MIN_SUB, -MIN_SUB, TINY, -TINY, 1.0, -1.0, INF, -INF, NAN,
             709.78, -745.2, 20.0, -20.0, 0.5, -0.5, 1e-8, -1e-8]
    return np.concatenate([x, rng.normal(size=n) * 3, rng.normal(size=n) * 1e-3,
                           rng.uniform(-800, 800, n), extra])


@compiled_only
@pytest.mark.parametrize("name", NAMES)
def test_every_build_gives_the_same_bits(name):
    isas = _vmath_ext.supported()
    # portable (width 1, MSVC's) and baseline (width 2) everywhere; this
    # test also runs the 8-wide body (the AVX-512 build's code) on AVX2
    assert isas[:2] == ["portable", "baseline"]
    x = random_doubles(4000, 1)
    base = _vmath_ext.evaluate(name, x, "portable")
    for isa in isas:
        assert same_bits(_vmath_ext.evaluate(name, x, isa), base), (name, isa)
        # rows of every length: the tail goes through a padded vector
        for n in range(1, 18):
            assert same_bits(_vmath_ext.evaluate(name, x[:n], isa), base[:n]), (isa, n)
        inplace = x[5:1005].copy()
        _vmath_ext.evaluate(name, inplace, isa, out=inplace)
        assert same_bits(inplace, base[5:1005]), (name, isa)
    # the scalar function (eager's) is the width-1 build
    for v, want in zip(x[:500].tolist(), base[:500].tolist()):
        assert bits(_vmath_ext.scalar(name, v)) == bits(want), (name, v)


def _every_row_in_every_lane(name):
    """Inputs whose table row (2^(j/128) for the exp family, the log table's
    row i) is j = (v + 37 l) % 128 in lane l of vector v (8 lanes): every
    row reaches every lane of every width, so a lane shuffle of a build's
    table read that sends a row to the wrong lane changes some result."""
    ln2 = math.log(2)
    rows = [(v + 37 * lane) % 128 for v in range(128) for lane in range(8)]
    if name in ("log", "log1p"):
        # x with bits 0x3FE6... + (i << 45) + (1 << 44): row i of [0.6875, 1.375)
        x = [struct.unpack("<d", struct.pack("<Q", 0x3FE6000000000000 + (i << 45)
                                             + (1 << 44)))[0] for i in rows]
        return np.array(x) - (1.0 if name == "log1p" else 0.0)
    # k = 128 m + j: j is the row; m varies with the vector; tanh reduces 2|x|
    k = np.array([128 * (v % 5) + j for v, j in zip(np.repeat(np.arange(128), 8), rows)])
    x = (k + 0.25) * (ln2 / 128)
    if name == "tanh":
        return x / 2
    if name in ("sigmoid", "softplus"):
        return -x          # e^-|x|: k = -(128 m + j) rounds to row (-j) % 128
    return x


@compiled_only
@pytest.mark.parametrize("name", NAMES)
def test_every_table_row_in_every_lane_same_bits(name):
    x = _every_row_in_every_lane(name)
    base = _vmath_ext.evaluate(name, x, "portable")
    for isa in _vmath_ext.supported():
        assert same_bits(_vmath_ext.evaluate(name, x, isa), base), (name, isa)
    # the inputs do reach the rows they are meant to (the reductions'
    # index, computed here from x)
    want = np.array([(v + 37 * lane) % 128 for v in range(128) for lane in range(8)])
    if name in ("log", "log1p"):
        ix = (x + (1.0 if name == "log1p" else 0.0)).view(np.uint64)
        got = ((ix - np.uint64(0x3FE6000000000000)) >> np.uint64(45)) & np.uint64(127)
    else:
        a = 2 * np.abs(x) if name == "tanh" else np.abs(x)
        got = np.rint(a * 128 / math.log(2)).astype(np.int64)
        if name in ("sigmoid", "softplus"):
            got, want = -got, -want % 128
        got = got & 127
    assert np.array_equal(got.astype(np.int64), want), name


@compiled_only
@pytest.mark.parametrize("name", NAMES)
def test_python_port_gives_the_c_bits(name):
    x = np.concatenate([random_doubles(1500, 2), sweep(name, n=300, seed=9)])
    c = _vmath_ext.evaluate(name, x, "portable").tolist()
    f = getattr(_vmath_py, name)
    for v, want in zip(x.tolist(), c):
        got = f(v)
        if math.isnan(want):
            assert math.isnan(got), (name, v, got)
        else:
            assert bits(got) == bits(want), (name, v, got, want)


@compiled_only
def test_c_tables_are_the_python_tables():
    exp_tab, log_tab, consts = _vmath_ext.tables()
    assert [bits(v) for v in exp_tab] == [bits(v) for v in _vmath_tables.EXP_TAB]
    assert [bits(v) for v in log_tab] == [bits(v) for v in _vmath_tables.LOG_TAB]
    for name, v in consts.items():
        assert bits(v) == bits(getattr(_vmath_tables, name)), name


def test_tables_are_what_they_claim():
    # independent of the generator: 2^(j/128) and -log(invc) from mpmath
    with mpmath.workprec(256):
        for j in range(128):
            th, tl = _vmath_tables.EXP_TAB[2 * j: 2 * j + 2]
            t = mpf(2) ** (mpf(j) / 128)
            assert abs(mpf(th) + mpf(tl) - t) < mpf(2) ** -80
            assert (th * 2 ** 25).is_integer() and 1 <= th < 2           # 26 bits
        for i in range(128):
            invc, lch, lcl, pad = _vmath_tables.LOG_TAB[4 * i: 4 * i + 4]
            assert abs(mpf(lch) + mpf(lcl) + mpmath.log(invc)) < mpf(2) ** -95
            assert lch * 2 ** 42 == int(lch * 2 ** 42)               # on 2^-42
            m, _ = math.frexp(invc)
            assert m * 2 ** 20 == int(m * 2 ** 20)                   # 20 bits
            assert pad == 0.0
        # the sub-intervals next to 1 have invc = 1 (log 1 = 0 exactly)
        assert _vmath_tables.LOG_TAB[4 * 79] == _vmath_tables.LOG_TAB[4 * 80] == 1.0
        assert abs(mpf(_vmath_tables.LN2_HI) + mpf(_vmath_tables.LN2_LO)
                   - mpmath.log(2)) < mpf(2) ** -95


# ---------------------------------------------------------------------------
# the engines use these functions
# ---------------------------------------------------------------------------

ENGINE_OPS = {"tanh": "tanh", "exp": "exp", "log": "log", "sigmoid": "sigmoid",
              "log1p": "log1p", "softplus": "softplus"}


@pytest.mark.parametrize("name", sorted(ENGINE_OPS))
def test_eager_and_reference_engines_compute_with_them(name):
    import fastgrad.reference as R
    from fastgrad.engine import Value
    rng = np.random.default_rng(3)
    xs = rng.normal(size=200) * 4
    if name == "log":
        xs = np.abs(xs) + 1e-3
    elif name == "log1p":
        xs = np.abs(xs) - 0.999
    for x in xs.tolist():
        want = getattr(_vmath_py, name)(x)
        assert bits(getattr(Value(x), name)().data) == bits(want), (name, x)
        assert bits(getattr(R.Value(x), name)().data) == bits(want), (name, x)


@compiled_only
def test_replay_rows_equal_eager_on_every_isa():
    from fastgrad import _replay
    from fastgrad.engine import Value
    w = [Value(0.7), Value(-1.3), Value(0.4)]

    def fn(x):
        a = (x[0] * w[0] + x[1] * w[1]).tanh()
        b = (x[1] * w[2]).sigmoid() + (x[0] * w[2]).exp()
        c = (x[0] * x[0] + 0.5).log()
        return a * b + c

    prog = fastgrad.compile(fn, 2, params=w)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(203, 2)) * 2          # column tails of every width
    eager_out, eager_grads = [], []
    for row in X.tolist():
        xs = [Value(v) for v in row]
        for p in w:
            p.grad = 0.0
        out = fn(xs)
        out.backward()
        eager_out.append(out.data)
        eager_grads.append([v.grad for v in xs])
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            outs = np.empty((len(X), 1))
            gin = np.empty((len(X), 2))
            prog.batch(X, reduce="sum", outputs=outs, input_grad=gin)
            assert same_bits(outs[:, 0], eager_out), isa
            assert same_bits(prog.predict(X).reshape(-1), eager_out), isa
            # per-sample input gradients: the same rules, the same floats
            assert same_bits(gin, eager_grads), isa
    finally:
        _replay._set_isa(old)


@compiled_only
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "exp", "user_sigmoid"])
def test_layer_epilogues_equal_eager_on_every_isa(act):
    # a layer's activation runs in its epilogue (the vector rows); its
    # outputs are eager's floats on every ISA
    from fastgrad import _replay
    from fastgrad.engine import Value
    rng = np.random.default_rng(5)
    W1 = [[Value(float(v)) for v in row] for row in rng.normal(size=(9, 2))]
    W2 = [[Value(float(v)) for v in row] for row in rng.normal(size=(1, 9)) * 0.3]
    params = [w for row in W1 + W2 for w in row]
    f = {"tanh": lambda z: z.tanh(), "sigmoid": lambda z: z.sigmoid(),
         "exp": lambda z: (z * 0.5).exp(), "user_sigmoid": lambda z: 1 / (1 + (-z).exp())}[act]

    def fn(x):
        h = [f(sum(w * xi for w, xi in zip(row, x))) for row in W1]
        return sum(w * hi for w, hi in zip(W2[0], h))

    prog = fastgrad.compile(fn, 2, params=params)
    assert prog.n_layers >= 1
    X = rng.normal(size=(37, 2)) * 3
    eager = [fn([Value(v) for v in row]).data for row in X.tolist()]
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            outs = np.empty((len(X), 1))
            prog.batch(X, reduce="sum", outputs=outs)
            assert same_bits(outs[:, 0], eager), (act, isa)
    finally:
        _replay._set_isa(old)


# ---------------------------------------------------------------------------
# the user's sigmoid 1/(1+(-z).exp()) as one fused pass (_vmath_rows.h)
# ---------------------------------------------------------------------------

def _user_sigmoid_op_by_op(z, g, c0, c2, c3):
    """The chain mulc(c0), exp, addc(c2), rdivc(c3) and its rules in reverse
    (_rules.pxd's op_forward / op_backward), one op at a time with NumPy's
    IEEE arithmetic and the width-1 (eager) exp: the oracle of the fused rows."""
    z = np.asarray(z, np.float64)
    g = np.asarray(g, np.float64)
    with np.errstate(all="ignore"):
        u = z * c0
        e = np.array([_vmath_ext.scalar("exp", float(v)) for v in u], np.float64)
        d = e + c2
        y = c3 / d
        g3 = 0.0 + (-g) * (y / d)        # rdivc: -g * (out / a)
        g2 = 0.0 + g3                    # addc
        g1 = 0.0 + e * g2                # exp: out * g
        g0 = 0.0 + c0 * g1               # mulc: c * g
    return y, e, g0


@compiled_only
@pytest.mark.parametrize("consts", [(-1.0, 1.0, 1.0), (-0.5, 2.0, 3.0)])
def test_user_sigmoid_rows_are_the_op_by_op_floats(consts):
    # every build, every row length 1..17 (each width's tail) and long rows
    # (several of the forward's 256-column blocks) with the edges (signed
    # zeros, subnormals, overflow of exp, inf, nan); e kept in its own row,
    # over z (as the replay does) or not at all
    c0, c2, c3 = consts
    rng = np.random.default_rng(29)
    edges = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-310, 700.0, -700.0, 710.0, -750.0,
                      1e300, -1e300, np.inf, -np.inf, np.nan, 36.0, -36.0, 20.0, -20.0])
    long_z = np.concatenate([edges, rng.normal(size=600) * 8])
    long_g = np.concatenate([np.array([0.0, -0.0, 1.0, -1.0, np.inf, np.nan] * 3),
                             rng.normal(size=600)])
    cases = [(rng.normal(size=n) * 6, rng.normal(size=n)) for n in range(1, 18)]
    cases += [(long_z, long_g), (long_z[:257], long_g[:257])]
    for isa in _vmath_ext.supported():
        for z, g in cases:
            want_y, want_e, want_g = _user_sigmoid_op_by_op(z, g, c0, c2, c3)
            for keep in ("row", "inplace", "none"):
                y, e = _vmath_ext.user_sigmoid(z, isa, keep=keep, c0=c0, c2=c2, c3=c3)
                assert same_bits(y, want_y), (isa, len(z), keep)
                if keep != "none":
                    assert same_bits(e, want_e), (isa, len(z), keep)
            y, e, got_g = _vmath_ext.user_sigmoid(z, isa, g=g, keep="inplace", c0=c0,
                                                  c2=c2, c3=c3)
            assert same_bits(y, want_y), (isa, len(z))
            # a nan gradient's sign and payload follow the compiler's operand
            # order in (-g) * t (IEEE leaves them open): nan compared as nan
            nan = np.isnan(want_g)
            assert np.array_equal(np.isnan(got_g), nan), (isa, len(z))
            assert same_bits(got_g[~nan], want_g[~nan]), (isa, len(z))


@compiled_only
def test_user_sigmoid_rows_check_their_arguments():
    with pytest.raises(ValueError, match="needs the kept e"):
        _vmath_ext.user_sigmoid([1.0], g=[1.0], keep="none")
    with pytest.raises(ValueError, match="same number"):
        _vmath_ext.user_sigmoid([1.0, 2.0], g=[1.0])
    with pytest.raises(ValueError, match="unknown ISA"):
        _vmath_ext.user_sigmoid([1.0], "sse9")
    with pytest.raises(ValueError, match="keep must be"):
        _vmath_ext.user_sigmoid([1.0], keep="heap")


@compiled_only
@pytest.mark.parametrize("B", [1, 2, 3, 5, 8, 13, 17, 203])
def test_user_sigmoid_epilogue_fused_equals_op_by_op(B):
    # the layer epilogue's fused pass gives the op-by-op epilogue's bits:
    # outputs, parameter gradients and per-sample input gradients, every ISA
    from fastgrad import _replay
    from fastgrad.engine import Value
    rng = np.random.default_rng(B)
    W1 = [[Value(float(v)) for v in row] for row in rng.normal(size=(9, 2))]
    b1 = [Value(float(v)) for v in rng.normal(size=9)]
    W2 = [[Value(float(v)) for v in row] for row in rng.normal(size=(1, 9)) * 0.3]
    params = [w for row in W1 + W2 for w in row] + b1

    def fn(x):
        h = [1 / (1 + (-(sum((w * xi for w, xi in zip(row, x)), b))).exp())
             for row, b in zip(W1, b1)]
        return sum(w * hi for w, hi in zip(W2[0], h))

    prog = fastgrad.compile(fn, 2, params=params)
    assert prog.n_layers >= 1
    X = rng.normal(size=(B, 2)) * 3
    eager = [fn([Value(v) for v in row]).data for row in X.tolist()]
    old_isa = _replay._isa()
    old = _replay._set_epi_fused(True)
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            got = []
            for fused in (True, False):
                _replay._set_epi_fused(fused)
                outs = np.empty((B, 1))
                gin = np.empty((B, 2))
                gp = np.empty(len(params))
                loss = prog.batch(X, reduce="sum", outputs=outs, param_grad=gp,
                                  input_grad=gin)
                got.append((outs, gin, gp, np.array([loss]), prog.predict(X)))
            for a, b in zip(*got):
                assert same_bits(a, b), (isa, B)
            # and eager's forward floats (batch, predict, the unpacked c_eval)
            assert same_bits(got[0][0][:, 0], eager), (isa, B)
            assert same_bits(np.reshape(got[0][4], -1), eager), (isa, B)
            theta = prog.param_values()
            assert same_bits([prog.eval_params(theta, x) for x in X], eager), (isa, B)
    finally:
        _replay._set_epi_fused(old)
        _replay._set_isa(old_isa)
