"""NaN bits through the replay's scalar instructions: the values of the
parameters alone (a product or sum of parameters, a logsumexp over them),
which a replay computes once per call (``forward_scalar`` /
``backward_scalar``, with the rules' scalar builds ``op_forward_s`` /
``op_backward_s``: one fixed-order addsd / mulsd on x86-64, _vmath.h), and
their gradients summed into the parameters' slots.

Oracles: the first operand's nan, by hand, for the eager values; the eager
engine (``Value.backward``) for the parameters' gradients, bit for bit, on
every ISA, on the one-row path and the batched one.
"""
import numpy as np
import pytest

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("the compiled replay's scalar instructions")

if fastgrad.COMPILED:
    from fastgrad import _replay


def _nan(bits):
    return np.array([bits], np.uint64).view(np.float64)[0]


NAN_A = _nan(0x7FF8000000000123)      # quiet, positive, a payload
NAN_B = _nan(0xFFF8000000000456)      # quiet, negative, another payload
SNAN = _nan(0x7FF0000000000789)       # signalling: quieted by any operation


def _bits(v):
    return np.atleast_1d(np.asarray(v, np.float64)).view(np.uint64).tolist()


def _quiet(x):
    return _nan(_bits(x)[0] | 0x0008000000000000)


P0 = [NAN_A, NAN_B, SNAN, 1.5, -0.75]
X = np.array([[0.5, -2.0], [NAN_B, 1.25], [3.0, NAN_A]])


def _terms(p):
    """Parameter-only values (the scalar tape), each with two nan operands."""
    return [p[0] + p[1], p[1] * p[0], p[2] * p[1], p[1] + p[2],
            fastgrad.sum([p[1], p[0], p[3]]), p[3] * p[0] - p[1],
            fastgrad.logsumexp([p[3], p[0], p[4]]), (p[0] * p[4]).exp() * p[1]]


def _model(p, x):
    t = _terms(p)
    return sum(x[k % 2] * tk for k, tk in enumerate(t)) + x[0] * x[1]


def test_scalar_terms_eager_by_hand():
    p = [Value(v) for v in P0]
    t = _terms(p)
    want = [NAN_A, NAN_B, _quiet(SNAN), NAN_B, NAN_B, NAN_A, NAN_A, NAN_A]
    assert [_bits(v.data) for v in t] == [_bits(w) for w in want]


def _eager_grads(x):
    p = [Value(v) for v in P0]
    xs = [Value(v) for v in x]
    out = _model(p, xs)
    out.backward()
    return out.data, [v.grad for v in p]


@pytest.mark.parametrize("row_path", [True, False])
def test_scalar_program_nan_bits_equal_eager(row_path):
    p = [Value(v) for v in P0]
    prog = fastgrad.compile(lambda xs: _model(p, xs), 2, params=p)
    old_isa = _replay._set_isa("best")
    old_row = _replay._set_row_path(row_path)
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            for x in X:
                val, pg = _eager_grads(x)
                g = np.zeros(len(P0))
                loss = prog.batch(x.reshape(1, -1), param_grad=g)
                assert _bits(loss) == _bits(0.0 + val), (isa, x)
                assert _bits(g) == _bits(pg), (isa, x, [hex(b) for b in _bits(g)],
                                               [hex(b) for b in _bits(pg)])
    finally:
        _replay._set_row_path(old_row)
        _replay._set_isa(old_isa)
