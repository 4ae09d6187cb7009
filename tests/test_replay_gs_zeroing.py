"""A training replay zeroes only the gradient slots something reads (issue 21).

The scalar tape's merged dot chains (an L2 penalty ``sum(p * p for p in
ps)`` becomes one OP_SDOT) leave their products' and inner links' slots
unused; the replay no longer zeroes them each step (``Program.s_gz``, built
by ``_scalar_dots``).  Every other slot must still start each replay at 0.0:
a slot left out by mistake would add this step's gradient to the last one's.

Oracle: eager mode (``Value.backward``) on numbers whose sums are exact
(small dyadic rationals), so any order of additions gives the same bits;
each of several consecutive calls must give the eager gradient, on every
ISA and thread count, through ``batch(param_grad=...)`` (the generic
passes) and ``sgd_step`` (the fused ones where they apply).
"""
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("the compiled replay's gradient slots")

if fastgrad.COMPILED:
    from fastgrad import _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP


@pytest.fixture
def isas():
    old = _replay._set_isa("best")
    yield _replay._supported_isas()
    _replay._set_isa(old)


def bits(a):
    return np.asarray(a, np.float64).tobytes()


# params and inputs: multiples of 1/8 below 4, so every product and sum
# below is exact in float64
W0 = [0.5, -1.25, 2.0, 0.75, -0.5, 1.5, -2.0, 0.25]
# (4 rows: the mean's 1/4 is exact too)
X = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 1.0], [2.0, 0.25]])


def model(w, x):
    """Scalar-tape values feeding the batched tape (s = w2*w3, s - w4)
    beside plain per-row products."""
    s = w[2] * w[3]
    t = s - w[4]
    return x[0] * w[0] + x[1] * w[1] + s * x[0] + t * x[1] + w[5] * w[6] + w[7]


PENALTIES = {
    "squares": lambda q: 0.25 * sum(p * p for p in q),
    # a square chain over some parameters and a dot chain that is not squares
    "dot": lambda q: 0.125 * sum(a * b for a, b in zip(q, q[1:])) + sum(p * p for p in q[2:6]),
    # a running sum read elsewhere: that chain cannot be merged
    "reused": lambda q: (lambda s: s * 0.5 + s * s)(sum(p * p for p in q[:4])),
    "none": None,
}


def eager(pen_name):
    """loss = mean over rows of model + penalty, and its gradient, eagerly."""
    w = [Value(v) for v in W0]
    total = None
    for row in X:
        y = model(w, [Value(float(row[0])), Value(float(row[1]))])
        total = y if total is None else total + y
    loss = total * (1.0 / len(X))
    pen = PENALTIES[pen_name]
    if pen is not None:
        loss = loss + pen(w)
    loss.backward()
    return loss.data, [p.grad for p in w]


def compiled(pen_name):
    w = [Value(v) for v in W0]
    prog = fastgrad.compile(lambda x: model(w, x), 2, params=w,
                            penalty=PENALTIES[pen_name])
    return prog, w


@pytest.mark.parametrize("pen_name", sorted(PENALTIES))
def test_every_call_starts_from_zero_gradients(pen_name, isas):
    want_loss, want_g = eager(pen_name)
    for isa in isas:
        _replay._set_isa(isa)
        for threads in (1, 2, 3, 8):
            prog, w = compiled(pen_name)
            for call in range(3):
                g = np.zeros(len(w))
                loss = prog.batch(X, param_grad=g, num_threads=threads)
                assert bits(loss) == bits(want_loss), (isa, threads, call)
                assert bits(g) == bits(want_g), (isa, threads, call)
            # sgd_step with lr = 0 leaves .data alone and sets .grad: the
            # same gradient at every step
            for call in range(3):
                loss = prog.sgd_step(X, 0.0, num_threads=threads)
                assert bits(loss) == bits(want_loss), (isa, threads, call)
                assert bits([p.grad for p in w]) == bits(want_g), (isa, threads, call)
                assert bits([p.data for p in w]) == bits(W0)
            # a one-row call (its own path) between batches changes nothing
            prog.value_and_grad(X[0])
            g = np.zeros(len(w))
            prog.batch(X, param_grad=g, num_threads=threads)
            assert bits(g) == bits(want_g), (isa, threads)


def test_merged_penalty_slots_are_not_zeroed():
    random.seed(0)
    m = MLP(2, [8, 8, 1])
    prog = make_demo_step(m).program
    n = len(m.parameters())
    t = prog.tape()["scalar"]
    n_slots = int(t["out"][-1]) + 1 if len(t["out"]) else n
    runs = prog._gs_zero_runs()
    # sorted, disjoint runs within [n_params, n_scalar)
    flat = [v for r in runs for v in r]
    assert flat == sorted(flat) and all(lo < hi for lo, hi in runs)
    assert runs[0][0] >= n and runs[-1][1] == n_slots
    zeroed = {s for lo, hi in runs for s in range(lo, hi)}
    left = set(range(n, n_slots)) - zeroed
    # what is left out: the chain's products and inner links only (the
    # squares' slots, the links adding them), about two per parameter
    ops = dict(zip(t["out"].tolist(), t["op"].tolist()))
    assert len(left) >= 2 * (n - 2)
    assert all(ops[s] in (1, 3, 11) for s in left)      # OP_ADD, OP_MUL, OP_ADDC
    # the penalty's value slot and the constants are still zeroed
    assert all(s in zeroed for s in range(n, int(t["out"][0])))
    assert int(t["out"][-1]) in zeroed


def test_no_merge_zeroes_everything():
    w = [Value(v) for v in W0]
    prog = fastgrad.compile(lambda x: model(w, x), 2, params=w, penalty=None)
    t = prog.tape()["scalar"]
    n_slots = int(t["out"][-1]) + 1
    assert prog._gs_zero_runs() == [(len(w), n_slots)]
