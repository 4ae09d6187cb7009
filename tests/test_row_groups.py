"""The one-row replay's groups of elementary functions (_replay_row.pxi):
every build's group function against the separate vector-maths functions
(_vmath_ext.evaluate, the portable build, which the eager engine's rules
call), bit for bit, softplus's sigmoid from the same exp included
(fg_vm_softplus_sigmoid of _vmath_body.h)."""
import warnings

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

_replay = pytest.importorskip("fastgrad._replay")

_vmath_ext = pytest.importorskip("fastgrad._vmath_ext")

LEVELS = ("portable", "baseline", "avx2", "avx512")
NAMES = ("exp", "log", "softplus", "sigmoid", "tanh", "log1p")

TINY = np.nextafter(0.0, 1.0)
EDGES = np.array([
    0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, TINY, -TINY,
    2.2250738585072014e-308, -2.2250738585072014e-308, 1e-300, -1e-300,
    1e-17, -1e-17, 2.0 ** -30, -(2.0 ** -30), 0.5, -0.5,
    20.0, -20.0, 20.9, -20.9, 21.0, -21.0, 21.5, -21.5, 36.0, -36.0, 37.0, -37.0,
    708.0, -708.0, 709.7, -709.7, 710.0, -710.0, 711.0, -711.0,
    744.0, -744.0, 745.1, -745.1, 746.0, -746.0, 747.0, -747.0,
    1e10, -1e10, 1.7976931348623157e308, -1.7976931348623157e308,
    np.log(2.0), -np.log(2.0), 0.2555, -0.2555, 0.5494, -0.5494,
])


def _points():
    rng = np.random.default_rng(20)
    # x < -21 switches softplus to its small-t branch: points around it
    # and across the ranges of every function; the edges repeated at every
    # lane position (the groups run 8, then the rest)
    parts = [EDGES, np.roll(EDGES, 3), np.roll(EDGES, 5)]
    parts.append(rng.standard_normal(3000) * 5)
    parts.append(rng.uniform(-750, 750, 3000))
    parts.append(-21.0 + rng.uniform(-0.5, 0.5, 1000))
    parts.append(np.exp(rng.uniform(-700, 700, 2000)) * rng.choice([-1.0, 1.0], 2000))
    bits = rng.integers(0, 2 ** 63, 3000, dtype=np.uint64) | (
        rng.integers(0, 2, 3000, dtype=np.uint64) << np.uint64(63))
    parts.append(bits.view(np.float64))
    return np.concatenate(parts)


def _same(a, b):
    return np.asarray(a, np.float64).tobytes() == np.asarray(b, np.float64).tobytes()


def _bits(a):
    return [f"{u:016x}" for u in np.atleast_1d(np.asarray(a, np.float64)).view(np.uint64)]


@pytest.mark.parametrize("level", range(4), ids=LEVELS)
@pytest.mark.parametrize("name", NAMES)
def test_group_function_equals_separate_functions(name, level):
    x = _points()
    for n in (len(x), 1, 2, 3, 5, 7):          # a short last group too
        got = _replay._row_group_eval(name, x[:n], level)
        if got is None:
            pytest.skip(f"no {LEVELS[level]} build on this CPU")
        y, sg = got
        want = _vmath_ext.evaluate(name, x[:n], "portable")
        assert _same(y, want), (name, LEVELS[level], n)
        if name == "softplus":
            assert _same(sg, _vmath_ext.evaluate("sigmoid", x[:n], "portable")), (
                LEVELS[level], n)


def test_fused_softplus_sigmoid_edge_values_by_hand():
    # independent of the vector-maths functions: values known exactly
    y, sg = _replay._row_group_eval("softplus", np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, -1000.0]), 0)
    assert y[0] == np.log(2.0) and y[1] == np.log(2.0)
    assert sg[0] == 0.5 and sg[1] == 0.5
    assert y[2] == np.inf and sg[2] == 1.0
    assert y[3] == 0.0 and sg[3] == 0.0
    assert np.isnan(y[4]) and np.isnan(sg[4])
    assert y[5] == 0.0 and sg[5] == 0.0


# ---------------------------------------------------------------------------
# graphs whose forward runs groups: the one-row path against the batched
# kernels (their vector rows of _vmath_rows.h, no group code) bit for bit
# ---------------------------------------------------------------------------

ISAS = _replay._supported_isas()
ROWS = [
    [0.5, -1.25, 2.0, -0.0, 0.0, 3.5, -7.0, 0.125, 1e-3, -2.5, 9.0],
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 40.0, -40.0, 710.0, -750.0],
    [-21.0, 21.0, -36.5, 745.5, -745.5, 1e308, -1e308, 2.0 ** -1074, 0.25, -0.25, 1.0],
    # nans of both signs with payloads, a signalling one, the default nan
    list(np.array([0x7FF8000000000123, 0xFFF8000000000456, 0x3FE0000000000000,
                   0x7FF0000000000789, 0xFFF8000000000000, 0xC000000000000000,
                   0x7FF8000000000001, 0x4004000000000000, 0x7FF0000000000000,
                   0xBFD0000000000000, 0xFFF800000000ABCD], np.uint64).view(np.float64)),
]
N_IN = len(ROWS[0])


def _f(name):
    return {"exp": lambda v: v.exp(), "softplus": lambda v: v.softplus(),
            "sigmoid": lambda v: v.sigmoid(), "tanh": lambda v: v.tanh(),
            "log": lambda v: (v * v + 0.5).log(), "log1p": lambda v: (v * v).log1p()}[name]


def _graphs():
    """(name, fn building the outputs from the inputs)."""
    out = []
    for name in ("exp", "softplus", "sigmoid", "tanh", "log", "log1p"):
        f = _f(name)
        for n in (1, 2, 3, 5, 8, 9, 11):
            # n independent ones in a row (groups of 8 and the rest), the last
            # instruction of the graph one of them
            out.append((f"{name} x{n}", lambda xs, f=f, n=n: [
                fastgrad.sum([f(xs[i] * 1.0) for i in range(n)]), f(xs[n - 1] - 0.5)]))
        # a dependent chain of the same op (no group may take the next one)
        out.append((f"{name} chain", lambda xs, f=f: [f(f(f(xs[0] * 0.25)) * 0.5)
                                                       + f(xs[1] * 1.0)]))
        # interleaved: each one's operand made by the instruction before it
        out.append((f"{name} interleaved", lambda xs, f=f: [fastgrad.sum(
            [f(f(xs[i] * 0.5) * xs[i + 1]) for i in range(6)])]))
    for n in (1, 2, 4, 7, 8, 9, 17):
        out.append((f"softmax {n}", lambda xs, n=n: [
            fastgrad.sum([s * xs[i % N_IN] for i, s in enumerate(
                fastgrad.softmax([xs[i % N_IN] * (1.0 + i) for i in range(n)]))])]))
        out.append((f"logsumexp {n}", lambda xs, n=n: [
            fastgrad.logsumexp([xs[(3 * i) % N_IN] - 0.5 * i for i in range(n)])
            * xs[0]]))
    # a softmax over the outputs of another (the second one's a's are the
    # first one's outputs) and softplus pairs as in the benchmark graph
    out.append(("softmax of softmax", lambda xs: [fastgrad.sum(fastgrad.softmax(
        fastgrad.softmax(xs[:4]) + [xs[4]]))]))
    return out


GRAPHS = _graphs()


def _results(prog, x):
    val, dx = prog.value_and_grad(x)
    gin = np.empty((1, prog.n_inputs))
    loss = prog.batch(x.reshape(1, -1), input_grad=gin)
    return [val, dx, prog.forward(x), loss, gin]


@pytest.mark.parametrize("name, fn", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_group_graphs_one_row_equal_batched_every_isa(name, fn, replay_modes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # (inputs a graph does not use)
        prog = fastgrad.compile(fn, N_IN)
    first = {}
    for isa in ISAS:
        _replay._set_isa(isa)
        for r, x in enumerate(ROWS):
            x = np.array(x)
            got = []
            for on in (True, False):
                _replay._set_row_path(on)
                got.append(_results(prog, x))
            for u, v in zip(*got):
                # exact bits, nans included (their sign and payload: the
                # nans of two operands meet in one + or * as the same nan on
                # both paths, see _vmath.h's fg_vm_add)
                assert _same(u, v), (name, isa, r, _bits(u), _bits(v))
            for u, v in zip(got[0], first.setdefault(r, got[0])):
                assert _same(u, v), (name, isa, "vs", ISAS[0], x)


@pytest.mark.parametrize("name, fn", GRAPHS[::5], ids=[g[0] for g in GRAPHS[::5]])
def test_group_graphs_equal_eager(name, fn, replay_modes):
    # the eager engine's values and gradients, bit for bit (nans included),
    # on every row where eager defines them (it raises on overflow and
    # domain errors, where the replay lets IEEE values through)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = fastgrad.compile(fn, N_IN)
    checked = 0
    for x in map(np.array, ROWS):
        xs = [Value(float(v)) for v in x]
        try:
            outs = fn(xs)
            outs[0].backward()
        except (ArithmeticError, ValueError):
            continue
        checked += 1
        val, dx = prog.value_and_grad(x)
        assert _same(val, outs[0].data)
        assert _same(dx, [v.grad for v in xs]), (name, _bits(dx), _bits([v.grad for v in xs]))
        assert _same(prog.forward(x),
                     [o.data for o in outs] if len(outs) > 1 else outs[0].data)
    assert checked >= 1
