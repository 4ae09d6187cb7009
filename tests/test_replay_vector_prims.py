"""The issue-20 primitives on the replay's vector rows (_replay_kernels.pxi:
logsumexp's forward and backward, softplus's backward through the sigmoid
row, a logsumexp's backward reading its softmax's output rows).

Oracle: the eager engine, row by row -- forward values and input gradients
identical bit for bit (-0.0 included; a nan only against a nan) -- at every
ISA this CPU runs, over column counts that are not multiples of a vector
width or of the kernels' column blocks, with the IEEE edge values (-inf,
+inf, nan, -0.0, huge, subnormal) among the inputs.  Parameter gradients (a
batch sums them in another order) are compared to rounding with eager and
bit for bit between ISAs.
"""
import math

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("compiled graph replay")

EDGES = [math.inf, -math.inf, math.nan, -0.0, 0.0, 1e308, -1e308, 5e-324,
         -745.5, 709.9, 37.0, -37.0]


def bits(a):
    return np.ascontiguousarray(a, np.float64).view(np.uint64)


def assert_same(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    same = bits(got) == bits(want)            # nans too: one nan on every path
    assert same.all(), (np.nonzero(~same), got[~same], want[~same])


def on_every_isa(run):
    """run() once on every ISA this CPU has, the replay switched to it; the
    results in ISA order, the ISA put back after."""
    from fastgrad import _replay
    old = _replay._isa()
    try:
        out = []
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            out.append(run())
        return out
    finally:
        _replay._set_isa(old)


def graph(x, ps):
    """Every primitive whose kernel changed: a softmax (logsumexp + outputs,
    a repeated operand and a parameter among its operands), a logsumexp of
    19 operands (more than one exponential call's 8) without a softmax,
    softplus, log1p."""
    n = len(x)
    sm = fastgrad.softmax([x[0], x[1 % n], x[0], ps[0], x[2 % n]])
    big = fastgrad.logsumexp([x[i % n] * (1.0 + 0.25 * i) for i in range(17)]
                             + [ps[1], x[0]])
    sp = [xi.softplus() for xi in x]
    lp = [(xi * xi).log1p() for xi in x]
    return fastgrad.sum(sm[1:] + [big * 0.5] + sp + lp + [sm[0] * sm[3]])


def eager(X, pvals):
    outs, grads, pgrads = [], [], np.zeros(len(pvals))
    for row in X:
        xs = [Value(v) for v in row]
        ps = [Value(v) for v in pvals]
        y = graph(xs, ps)
        y.backward()
        outs.append(y.data)
        grads.append([v.grad for v in xs])
        pgrads += [p.grad for p in ps]
    return np.array(outs), np.array(grads), pgrads


def rows(B, n_in, seed, edges=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 3, (B, n_in))
    if edges:
        flat = X.reshape(-1)
        picks = rng.choice(flat.size, min(flat.size, 2 * len(EDGES)), replace=False)
        for t, i in enumerate(picks):
            flat[i] = EDGES[t % len(EDGES)]
    return X


def replay(prog, X, n_par):
    out = np.empty((X.shape[0], 1))
    G = np.empty_like(X)
    pg = np.empty(n_par)
    prog.batch(X, reduce="sum", outputs=out, input_grad=G, param_grad=pg)
    return out[:, 0], G, pg


@pytest.mark.parametrize("B", [1, 3, 7, 13, 64, 67, 131])
def test_every_isa_equals_eager(B):
    pvals = [0.75, -1.25]
    X = rows(B, 3, B)
    e_out, e_g, e_pg = eager(X, pvals)

    def run():
        ps = [Value(v) for v in pvals]
        prog = fastgrad.compile(lambda x: graph(x, ps), 3, params=ps)
        out, G, pg = replay(prog, X, 2)
        assert_same(out, e_out)
        assert_same(G, e_g)
        assert_same(prog.predict(X), e_out)
        return np.concatenate([out, G.ravel(), pg])

    got = on_every_isa(run)
    for g in got[1:]:
        assert_same(g, got[0])
    # parameter gradients: the batch sums them in its own order
    finite = np.isfinite(e_pg)
    assert np.allclose(got[0][-2:][finite], e_pg[finite], rtol=1e-12, atol=1e-12)


def test_parameter_gradients_finite_rows():
    # no edge values: the parameters' batch sums (the scalar-slot operands of
    # the logsumexps and of the softmax's K_SB output) close to eager's
    pvals = [0.3, 1.7]
    X = rows(203, 4, 11, edges=False)
    e_out, e_g, e_pg = eager(X, pvals)

    def run():
        ps = [Value(v) for v in pvals]
        prog = fastgrad.compile(lambda x: graph(x, ps), 4, params=ps)
        out, G, pg = replay(prog, X, 2)
        assert_same(out, e_out)
        assert_same(G, e_g)
        assert np.allclose(pg, e_pg, rtol=1e-12, atol=1e-13)
        return pg

    pgs = on_every_isa(run)
    for pg in pgs[1:]:
        assert_same(pg, pgs[0])


def test_logsumexp_reads_the_softmax_rows():
    # the backward of a softmax's logsumexp takes e**(x - lse) from the
    # softmax outputs (_Plan.bsm) when they are on the tape, and computes it
    # when only some are: both give eager's bits
    def f(x):
        p = fastgrad.softmax(x)
        return fastgrad.sum([p[0] * x[1], p[2].softplus()])

    def g(x):
        lse = fastgrad.logsumexp(x)
        q = (x[1] - lse).exp()              # not OP_SOFTMAX: computed again
        return lse * q

    X = rows(45, 3, 5)
    for fn in (f, g):
        prog = fastgrad.compile(fn, 3)
        out = np.empty((45, 1))
        G = np.empty_like(X)
        prog.batch(X, reduce="sum", outputs=out, input_grad=G)
        for r, row in enumerate(X):
            xs = [Value(v) for v in row]
            y = fn(xs)
            y.backward()
            assert_same(np.concatenate([out[r], G[r]]),
                        [y.data] + [v.grad for v in xs])


def test_chunks_do_not_change_the_bits():
    from fastgrad import _replay
    X = rows(300, 3, 9)
    ps = [Value(0.5), Value(-0.5)]
    prog = fastgrad.compile(lambda x: graph(x, ps), 3, params=ps)
    ref = replay(prog, X, 2)
    old = _replay._set_chunk_bytes(1)          # the smallest chunks
    try:
        prog2 = fastgrad.compile(lambda x: graph(x, ps), 3, params=ps)
        got = replay(prog2, X, 2)
    finally:
        _replay._set_chunk_bytes(old)
    assert_same(got[0], ref[0])
    assert_same(got[1], ref[1])


def graph_modes(x, ps):
    """The softmax/logsumexp kernels of _vmath_nary.h in their modes: a
    softmax over rows and a parameter (its K_SB output among them) with only
    some outputs on the tape (the others pruned: the logsumexp's backward
    computes those exponentials), an operand whose gradient the softmax
    output stores first and one it adds to, a logsumexp with no softmax (a
    parameter twice), subnormal and huge differences."""
    sm = fastgrad.softmax([x[0], x[1], ps[0], x[2], x[0] * 1e-300])
    lse = fastgrad.logsumexp([x[1], ps[1], x[2] * 3.0, ps[1], x[0] - 800.0])
    sm2 = fastgrad.softmax([lse, x[2], sm[1]])
    return fastgrad.sum([sm[0] * x[2], sm[3], sm2[0], sm2[2], lse * 0.5, x[1] * sm[1]])


def eager_modes(X, pvals):
    outs, grads, pgrads = [], [], []
    for row in X:
        xs = [Value(v) for v in row]
        ps = [Value(v) for v in pvals]
        y = graph_modes(xs, ps)
        y.backward()
        outs.append(y.data)
        grads.append([v.grad for v in xs])
        pgrads.append([p.grad for p in ps])
    return np.array(outs), np.array(grads), np.array(pgrads)


@pytest.mark.parametrize("B", [2, 5, 8, 9, 15, 16, 17, 33, 65, 100, 131])
def test_softmax_kernels_every_mode_and_isa(B):
    # with input gradients (every operand row stores or adds) and without
    # (the input rows' gradients skipped: only the parameters' paths run)
    pvals = [0.5, -2.0]
    X = rows(B, 3, 100 + B)
    X[0, :] = [5e-324, -5e-324, -0.0]              # subnormals, -0.0
    e_out, e_g, e_pg = eager_modes(X, pvals)

    def run():
        ps = [Value(v) for v in pvals]
        prog = fastgrad.compile(lambda x: graph_modes(x, ps), 3, params=ps)
        out, G, pg = replay(prog, X, 2)
        assert_same(out, e_out)
        assert_same(G, e_g)
        out2 = np.empty((B, 1))
        pg2 = np.empty(2)
        prog.batch(X, reduce="sum", outputs=out2, param_grad=pg2)
        assert_same(out2[:, 0], e_out)
        assert_same(pg2, pg)
        return np.concatenate([out, G.ravel(), pg])

    got = on_every_isa(run)
    for g in got[1:]:
        assert_same(g, got[0])
    # the parameters' batch sums: to rounding (nan where a row's is)
    assert np.allclose(got[0][-2:], e_pg.sum(axis=0), rtol=1e-12, atol=1e-12,
                       equal_nan=True)


# ---------------------------------------------------------------------------
# OP_MUL's and OP_SUM's rows and softplus's backward on the ISA's vectors
# (_vmath_nary.h mul_fw, mul_bw_row, sum_fw, gput_row, softplus_bw_row):
# their pinned adds and multiplies take the first operand's nan where both
# are nans, a stored gradient is 0.0 + c (-0.0 becomes +0.0), and a row's
# blocks and tail cover every column count
# ---------------------------------------------------------------------------

NAN_A = np.array([0x7FF8000000000123], np.uint64).view(np.float64)[0]
NAN_B = np.array([0xFFF80000000A0B00], np.uint64).view(np.float64)[0]


def graph_arith(x):
    """Products with both operands batched (the second operand's gradient
    row stored, then added to: x[1] appears twice), a square (one slot, both
    operands), sums with a repeated operand, softplus of a product, and
    values flowing back through all of them."""
    p = x[0] * x[1]
    q = x[1] * x[2]
    sq = x[3] * x[3]
    s = fastgrad.sum([p, x[2], q, p])
    t = fastgrad.sum([sq, s, x[0]])
    sp = (x[2] * x[0]).softplus()
    return fastgrad.sum([s * t, sp * x[1], t * sp])


def arith_rows(B, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 2, (B, 4))
    flat = X.reshape(-1)
    vals = [NAN_A, NAN_B, -0.0, 0.0, math.inf, -math.inf, 1e300, -1e-310]
    picks = rng.choice(flat.size, min(flat.size, 3 * len(vals)), replace=False)
    for t, i in enumerate(picks):
        flat[i] = vals[t % len(vals)]
    if B >= 2:
        X[0, :2] = [NAN_A, NAN_B]          # both operands of x0 * x1 nans
        X[1, :3] = [-0.0, 3.0, NAN_B]      # a -0.0 product; a nan in a sum
    return X


@pytest.mark.parametrize("B", [1, 5, 8, 9, 17, 33, 63, 64, 65, 129])
def test_mul_sum_softplus_rows_equal_eager(B):
    X = arith_rows(B, 100 + B)
    want_out, want_g = [], []
    for row in X:
        xs = [Value(v) for v in row]
        y = graph_arith(xs)
        y.backward()
        want_out.append(y.data)
        want_g.append([v.grad for v in xs])
    prog = fastgrad.compile(graph_arith, 4)

    def run():
        out = np.empty((B, 1))
        G = np.empty_like(X)
        prog.batch(X, reduce="sum", outputs=out, input_grad=G)
        assert_same(out[:, 0], want_out)
        assert_same(G, want_g)
        return np.concatenate([out[:, 0], G.ravel()])

    got = on_every_isa(run)
    for g in got[1:]:
        assert_same(g, got[0])
    if B >= 2:
        # the oracle itself: the first operand's nan, by hand
        xs = [Value(v) for v in X[0]]
        assert bits((xs[0] * xs[1]).data) == bits(NAN_A)
        assert bits(fastgrad.sum([xs[1], xs[0]]).data) == bits(NAN_B)
