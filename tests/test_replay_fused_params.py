"""An SGD step's fused parameter passes (issue 21, ``_ParamMap``).

Where each parameter is one layer weight or bias at most, ``sgd_step`` and
the demo step read the parameters, pack the layers' weights and run the L2
penalty's chain in one pass, and add the gradients up and update in another.
The oracle is the generic path (``_set_fused_params(False)``): the same
steps must give the same bits (``tobytes()``, -0.0 included) for the loss,
``.data`` and ``.grad``, on every ISA and thread count, with the user
editing ``.data`` between steps, and for programs the fused passes only
partly apply to (tied weights, a parameter the scalar tape reads besides the
penalty, a penalty over some parameters or in another order, none).
"""
import random

import numpy as np
import pytest
from _steps import bits, moons

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("the compiled replay's fused parameter passes")

if fastgrad.COMPILED:
    from fastgrad import _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP


def run_both(fn):
    """fn() with the fused passes, then with the generic ones: their bits."""
    old = _replay._set_fused_params(True)
    try:
        a = fn()
        _replay._set_fused_params(False)
        b = fn()
    finally:
        _replay._set_fused_params(old)
    return a, b


def demo_steps(H, N, threads, isa, edit=False, steps=3):
    def fn():
        _replay._set_isa(isa)
        random.seed(1337)
        m = MLP(2, [H, H, 1])
        step = make_demo_step(m, num_threads=threads)
        X, y = moons(N)
        out = []
        for _ in range(steps):
            out.append(step(X, y, 0.05))
            if edit:                       # the user changes .data between steps
                ps = m.parameters()
                ps[3].data = -0.0
                ps[-1].data += 0.5
                ps[len(ps) // 2].data *= 2.0
        ps = m.parameters()
        return bits(out, [p.data for p in ps], [p.grad for p in ps])
    return fn


@pytest.fixture
def isas():
    old = _replay._set_isa("best")
    yield _replay._supported_isas()
    _replay._set_isa(old)


def test_demo_program_is_fused():
    random.seed(0)
    m = MLP(2, [8, 8, 1])
    prog = make_demo_step(m).program
    n = len(m.parameters())
    # the penalty's chain starts at the second parameter (0 + p0 * p0 is
    # its start), and runs inside the load
    assert prog._fused_params() == ((1, n - 1), True)


@pytest.mark.parametrize("H,N", [(8, 50), (32, 300), (64, 1000)])
def test_demo_step_same_bits_as_generic(H, N, isas):
    for isa in isas:
        for threads in (1, 2, 3, 8):
            a, b = run_both(demo_steps(H, N, threads, isa))
            assert a == b, (isa, threads)


def test_demo_step_user_edits_between_steps(isas):
    for isa in isas:
        a, b = run_both(demo_steps(16, 100, 1, isa, edit=True, steps=4))
        assert a == b, isa


def test_demo_step_one_row():
    a, b = run_both(demo_steps(8, 1, 1, "best"))
    assert a == b


def _mlp_program(kind):
    random.seed(7)
    m = MLP(2, [8, 8, 1])
    ps = m.parameters()

    def f(x):
        return [(1 + -x[2] * m([x[0], x[1]])).relu()]
    pens = {
        "full": lambda q: 1e-3 * sum(p * p for p in q),
        "half": lambda q: 1e-3 * sum(p * p for p in q[: len(q) // 2]),
        "extra": lambda q: 1e-3 * sum(p * p for p in q) + q[5] * q[7],
        "reversed": lambda q: 1e-3 * sum(p * p for p in reversed(q)),
        "none": None,
    }
    return fastgrad.compile(f, 3, params=ps, penalty=pens[kind]), ps


@pytest.mark.parametrize("kind,expect", [
    ("full", "chain"), ("half", "chain"), ("extra", "no chain"),
    ("reversed", "no chain"), ("none", "no chain")])
def test_sgd_step_same_bits_as_generic(kind, expect, isas):
    prog, _ = _mlp_program(kind)
    fused = prog._fused_params()
    assert fused is not None
    assert (fused[0] is not None) == (expect == "chain")

    def fn():
        prog, ps = _mlp_program(kind)
        X, y = moons(37)
        inp = np.column_stack([X, y])
        out = [prog.sgd_step(inp, 0.1, num_threads=t) for t in (1, 2, 3)]
        out.append(prog.sgd_step(inp[:1], 0.1))          # one row
        g = np.zeros(len(ps))
        prog.batch(inp, param_grad=g)                      # gs after a fused step
        return bits(out, [p.data for p in ps], [p.grad for p in ps], g)
    for isa in isas:
        _replay._set_isa(isa)
        a, b = run_both(fn)
        assert a == b, isa


def test_tied_and_derived_weights_use_generic_passes():
    random.seed(3)
    w = [Value(random.uniform(-1, 1)) for _ in range(6)]

    def f(x):
        # a 2x2 layer used twice (tied weights), one weight derived (w2 * 2)
        h1 = [(w[0] * x[0] + w[1] * x[1] + w[4]).relu(),
              (w[2] * x[0] + w[3] * x[1] + w[5]).relu()]
        h2 = [(w[0] * h1[0] + w[1] * h1[1]).relu(),
              ((w[2] * 2) * h1[0] + w[3] * h1[1]).relu()]
        return [(h2[0] + h2[1] - x[2]) ** 2]

    def fn():
        for p, v in zip(w, np.linspace(-1, 1, 6)):
            p.data = float(v)
        prog = fastgrad.compile(f, 3, params=w,
                                penalty=lambda q: 1e-2 * sum(p * p for p in q))
        X, y = moons(50)
        inp = np.column_stack([X, y])
        out = [prog.sgd_step(inp, 0.05) for _ in range(3)]
        return bits(out, [p.data for p in w], [p.grad for p in w]), prog
    (a, prog), (b, _) = run_both(fn)
    assert a == b
    assert prog._fused_params() is None


def test_fused_step_matches_eager_gradients():
    # independent of the generic replay: one fused step's .grad against
    # eager backward() (the layer sums are reordered: close, not equal)
    random.seed(11)
    m = MLP(2, [6, 6, 1])
    step = make_demo_step(m, alpha=1e-2)
    X, y = moons(20)
    ps = m.parameters()
    before = [p.data for p in ps]
    step(X, y, 0.0)
    got = [p.grad for p in ps]
    for p, v in zip(ps, before):
        p.data = v
        p.grad = 0.0
    losses = [(1 + -float(yi) * m([float(a), float(b)])).relu()
              for (a, b), yi in zip(X, y)]
    loss = sum(losses) * (1.0 / len(losses)) + 1e-2 * sum(p * p for p in ps)
    loss.backward()
    np.testing.assert_allclose(got, [p.grad for p in ps], rtol=1e-12, atol=1e-15)
