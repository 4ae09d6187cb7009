"""NaN bits: the same nan from the eager engine, the compiled one-row path
and the batched kernels (every ISA), sign and payload included.

When both operands of a + or * are nans, IEEE 754 and C leave open which
one's nan comes out, and gcc swaps the operands of + and * as it likes;
fastgrad pins it to the first operand's nan (quieted), as its elementary
functions return x + x for a nan x (_vmath.h's fg_vm_add / fg_vm_mul).  A
nan made inside a graph (inf - inf, 0 * inf) is the CPU's default nan.
"""
import warnings

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

_replay = pytest.importorskip("fastgrad._replay")

ISAS = _replay._supported_isas()


def _nan(bits):
    return np.array([bits], np.uint64).view(np.float64)[0]


NAN_A = _nan(0x7FF8000000000123)      # quiet, positive, a payload
NAN_B = _nan(0xFFF8000000000456)      # quiet, negative, another payload
SNAN = _nan(0x7FF0000000000789)       # signalling: quieted by any operation
NEG_NAN = _nan(0xFFF8000000000000)    # -nan (x86's default nan)


def _bits(v):
    return np.atleast_1d(np.asarray(v, np.float64)).view(np.uint64).tolist()


def _same(a, b):
    return _bits(a) == _bits(b)


def _quiet(x):
    return _nan(int(_bits(x)[0]) | 0x0008000000000000)


N_IN = 6
ROWS = [
    [NAN_A, NAN_B, 0.5, -1.5, 2.0, 0.25],
    [NAN_B, NAN_A, NAN_A, NAN_B, NEG_NAN, 1.0],
    [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0],
    [SNAN, NAN_B, 1e308, -1e308, 3.0, SNAN],
    [np.inf, -np.inf, 1e308, 1e308, -1e308, NAN_A],
    [0.5, -1.25, 1e308, -0.0, 40.0, 2.0],
]


def _f(name):
    return {"sigmoid": lambda v: v.sigmoid(), "softplus": lambda v: v.softplus(),
            "exp": lambda v: v.exp(), "tanh": lambda v: v.tanh()}[name]


def _graphs():
    out = []
    for name in ("sigmoid", "softplus", "exp", "tanh"):
        f = _f(name)
        # f(f(x) * y): a nan from x meets one from y in the product, in its
        # backward and in the gradients' sums
        out.append((f"{name}(f(x)*y)", lambda xs, f=f: [f(f(xs[0]) * xs[1])]))
        out.append((f"{name} pairs", lambda xs, f=f: [fastgrad.sum(
            [f(f(xs[i]) * xs[i + 1]) for i in range(N_IN - 1)])]))
    out.append(("softmax of softmax", lambda xs: [fastgrad.sum(fastgrad.softmax(
        fastgrad.softmax(xs[:4]) + [xs[4]]))]))
    out.append(("softmax weighted", lambda xs: [fastgrad.sum(
        [s * xs[i] for i, s in enumerate(fastgrad.softmax(
            [xs[i] * (1.0 + i) for i in range(N_IN)]))])]))
    out.append(("logsumexp", lambda xs: [fastgrad.logsumexp(
        [xs[i] * xs[(i + 1) % N_IN] for i in range(N_IN)]) * xs[0]]))
    out.append(("arithmetic", lambda xs: [
        (xs[0] + xs[1]) * (xs[1] * xs[0]) + (xs[2] - xs[3]) / (xs[4] * xs[4] + 1.0),
        (xs[0] * 2.0 + 1.0) * xs[1] + fastgrad.maximum(xs[5], xs[0])]))
    out.append(("sum", lambda xs: [fastgrad.sum(xs) * fastgrad.sum(xs[::-1])]))
    out.append(("shared operand", lambda xs: [
        xs[0] * xs[1] + xs[1] * xs[0] + (xs[0] * xs[0]).exp() * xs[1]]))
    return out


GRAPHS = _graphs()


def _compile(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # (inputs a graph does not use)
        return fastgrad.compile(fn, N_IN)


def _eager(fn, x):
    """Eager values and input gradients, or None where eager defines none
    (it raises on overflow or a domain error; the replay lets IEEE values
    through: there the paths are compared with each other only)."""
    xs = [Value(float(v)) for v in x]
    try:
        outs = fn(xs)
        outs[0].backward()
    except (ArithmeticError, ValueError):
        return None
    return [o.data for o in outs], [v.grad for v in xs]


def test_two_nans_give_the_first_operands_nan_by_hand():
    # the rule itself, on values known by hand
    a, b = Value(NAN_A), Value(NAN_B)
    assert _same((a + b).data, NAN_A) and _same((b + a).data, NAN_B)
    assert _same((a * b).data, NAN_A) and _same((b * a).data, NAN_B)
    assert _same((a - b).data, NAN_A) and _same((b / a).data, NAN_B)
    assert _same(fastgrad.sum([a, b]).data, NAN_A)
    s = Value(SNAN)
    assert _same((s + b).data, _quiet(SNAN)) and _same((b * s).data, NAN_B)
    y = a * b
    y.backward()
    assert _same(a.grad, NAN_B) and _same(b.grad, NAN_A)     # b * g, a * g
    prog = _compile(lambda xs: [xs[0] + xs[1], xs[1] * xs[0]])
    for isa in ISAS:
        _replay._set_isa(isa)
        for on in (True, False):
            old = _replay._set_row_path(on)
            try:
                out = prog.forward(np.array([NAN_A, NAN_B] + [0.0] * (N_IN - 2)))
            finally:
                _replay._set_row_path(old)
            assert _same(out, [NAN_A, NAN_B]), (isa, on)


@pytest.mark.parametrize("name, fn", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_nan_bits_one_row_batched_eager(name, fn, replay_modes):
    prog = _compile(fn)
    X = np.array(ROWS)
    want = [_eager(fn, x) for x in X]
    for r, x in enumerate(X):
        if want[r] is None:
            _replay._set_isa(ISAS[0])
            val, dx = prog.value_and_grad(x)
            want[r] = list(np.atleast_1d(prog.forward(x))), list(dx)
    for isa in ISAS:
        _replay._set_isa(isa)
        for r, x in enumerate(X):
            vals, grads = want[r]
            for on in (True, False):
                _replay._set_row_path(on)
                val, dx = prog.value_and_grad(x)
                assert _same(val, vals[0]), (name, isa, on, r)
                assert _same(dx, grads), (name, isa, on, r, _bits(dx), _bits(grads))
                assert _same(prog.forward(x), vals), (name, isa, on, r)
                gin = np.empty((1, N_IN))
                loss = prog.batch(x.reshape(1, -1), input_grad=gin)
                assert _same(loss, 0.0 + vals[0]) and _same(gin[0], grads), (
                    name, isa, on, r)
        # every row in one batch (vector lanes side by side), sum reduction:
        # each row's outputs and input gradients as on its own
        gin = np.empty(X.shape)
        outs = np.empty((len(X), prog.n_outputs))
        prog.batch(X, reduce="sum", input_grad=gin, outputs=outs)
        for r in range(len(X)):
            vals, grads = want[r]
            assert _same(outs[r], vals), (name, isa, "batch", r)
            assert _same(gin[r], grads), (name, isa, "batch", r)
