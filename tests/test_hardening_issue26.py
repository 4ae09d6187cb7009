"""Issue 26 items 5, 6, 9 and 10 (the sweeps' items are in
test_hardening_distributed.py): second-order sweeps that answer Ctrl-C,
outputs that overlap their inputs, NumPy bools as flags, one rule for ``**``
at non-finite operands.

Floats that may be signed zeros are compared by their bits.
"""
import itertools
import math
import struct

import numpy as np
import pytest

import fastgrad.engine as E
import fastgrad.reference as R
from _interrupt import interrupt_inside, needs_timer_signal
from fastgrad import Value


def _bits(x):
    return struct.pack("<d", x)


def _same_bits(x, y):
    """Identical doubles (signs of zero included); any nan equals any nan."""
    if x != x or y != y:
        return x != x and y != y
    return _bits(x) == _bits(y)


# -- item 10: ** at non-finite operands ------------------------------------------

_SPECIAL = [-math.inf, -1e308, -3.0, -2.0, -1.5, -1.0, -0.5, -5e-324, -0.0, 0.0, 5e-324,
            0.5, 1.0, 1.5, 2.0, 3.0, 1e308, math.inf, math.nan]


def _python_pow(a, b):
    """The oracle: Python's float ** itself; a complex result (a negative
    base to a non-integer power) is fastgrad's ValueError (Values are real)."""
    try:
        r = a ** b
    except (OverflowError, ZeroDivisionError) as exc:
        return type(exc)
    return ValueError if isinstance(r, complex) else r


@pytest.mark.parametrize("engine", [E, R], ids=["compiled", "reference"])
@pytest.mark.parametrize("form", ["Value ** const", "const ** Value", "Value ** Value"])
def test_issue26_item10_pow_at_special_operands_is_pythons_float_pow(engine, form):
    for a, b in itertools.product(_SPECIAL, _SPECIAL):
        want = _python_pow(a, b)
        try:
            if form == "Value ** const":
                got = (engine.Value(a) ** b).data
            elif form == "const ** Value":
                got = (a ** engine.Value(b)).data
            else:
                got = (engine.Value(a) ** engine.Value(b)).data
        except (ArithmeticError, ValueError) as exc:
            got = type(exc)
        if isinstance(want, float):
            assert isinstance(got, float) and _same_bits(got, want), (a, b, got, want)
        else:
            assert got is want, (a, b, got, want)


def test_issue26_item10_the_reviews_case():
    # compiled gave inf as Python does; the reference raised ValueError
    for M in (E, R):
        assert (M.Value(-math.inf) ** 0.5).data == math.inf
        assert (M.Value(-math.inf) ** -0.5).data == 0.0
        assert (M.Value(0.0) ** -math.inf).data == math.inf
        assert (M.Value(-math.inf) ** M.Value(1.5)).data == math.inf


def test_issue26_item10_pow_gradients_agree_at_special_operands():
    for a, b in itertools.product(_SPECIAL, _SPECIAL):
        for form in range(3):
            got = []
            for M in (E, R):
                x, y = M.Value(a), M.Value(b)
                try:
                    z = x ** y if form == 0 else x ** b if form == 1 else a ** y
                except (ArithmeticError, ValueError) as exc:
                    got.append(type(exc))
                    continue
                z.backward()
                got.append((z.data, x.grad, y.grad))
            c, r = got
            if isinstance(c, tuple) and isinstance(r, tuple):
                assert all(_same_bits(u, v) for u, v in zip(c, r)), (form, a, b, c, r)
            else:
                assert c is r, (form, a, b, c, r)


# -- item 9: NumPy bools where bools are expected -----------------------------------

@pytest.mark.compiled_only("fastgrad.grad needs the compiled build")
def test_issue26_item9_numpy_bools_are_accepted_as_flags():
    from fastgrad import grad
    x = Value(2.0)
    y = x * x * x
    (d,) = grad(y, x, create_graph=np.True_)
    assert isinstance(d, Value) and d.data == 12.0
    (d2,) = grad(d, x)                                  # 6 x
    assert d2.data == 12.0
    assert grad(y, [x, Value(1.0)], allow_unused=np.True_)[1] is None
    assert grad(y, x, create_graph=np.False_)[0].data == 12.0
    for bad in ("yes", 1, None, np.array([True])):
        with pytest.raises(TypeError, match="create_graph must be a bool"):
            grad(y, x, create_graph=bad)


def test_issue26_item9_numpy_bools_elsewhere():
    from fastgrad.data import iterate_minibatches
    from fastgrad.engine import is_grad_enabled, set_grad_enabled
    from fastgrad.nn import Neuron
    from fastgrad.numgrad import gradcheck
    from fastgrad.optim import SGD
    assert set_grad_enabled(np.False_) is True and not is_grad_enabled()
    set_grad_enabled(np.True_)
    assert is_grad_enabled()
    assert repr(Neuron(2, nonlin=np.False_)) == "LinearNeuron(2)"
    opt = SGD([Value(1.0)], lr=0.1, nesterov=np.False_, maximize=np.True_)
    assert "maximize=True" in repr(opt)
    X, y = np.arange(8.0).reshape(4, 2), np.arange(4.0)
    assert len(iterate_minibatches(X, y, 2, shuffle=np.False_, drop_last=np.True_)) == 2
    assert gradcheck(lambda a: a * a, [Value(1.5)], raise_exception=np.True_)


# -- item 5: Ctrl-C inside grad / hvp / hessian ----------------------------------

def _big_graph(n_steps):
    """y = a chain of 3 * n_steps nodes in two leaves a, b (smooth: second
    derivatives are not all zero); returns (a, b, y, a sample of nodes)."""
    a, b = Value(0.3), Value(-0.2)
    acc = a * b
    sample = []
    for k in range(n_steps):
        acc = (acc * 0.999999 + a).tanh() * b if k % 2 else acc * 0.999999 + a * b
        if k % 10007 == 0:
            sample.append(acc)
    return a, b, acc, sample


@pytest.fixture(scope="module")
def big_graph():
    return _big_graph(400_000)       # about 1.4 million nodes


def _grads_untouched(nodes):
    def check():
        assert all(_same_bits(v.grad, 0.0) for v in nodes), \
            "a grad slot was not restored after the interrupt"
    return check


@needs_timer_signal
@pytest.mark.compiled_only("the second-order sweeps are compiled")
@pytest.mark.parametrize("create_graph", [False, True])
def test_issue26_item5_grad_answers_ctrl_c_inside_its_sweep(big_graph, create_graph):
    from fastgrad import grad
    a, b, y, sample = big_graph
    nodes = [a, b, y] + sample
    interrupt_inside(lambda: grad(y, [a, b], create_graph=create_graph), "_higher",
                     check=_grads_untouched(nodes))
    # usable afterwards, with the same result as before any interrupt
    g = grad(y, [a, b])
    assert all(math.isfinite(v.data) for v in g)
    _grads_untouched(nodes)()


@needs_timer_signal
@pytest.mark.compiled_only("the second-order sweeps are compiled")
@pytest.mark.parametrize("which", ["hvp", "hessian"])
def test_issue26_item5_hvp_and_hessian_answer_ctrl_c_inside_their_sweep(big_graph, which):
    from fastgrad.functional import hessian, hvp
    a, b, y, sample = big_graph
    nodes = [a, b, y] + sample
    if which == "hvp":
        call = lambda: hvp(lambda xs: y, [a, b], [1.0, 0.5])       # noqa: E731
    else:
        call = lambda: hessian(lambda xs: y, [a, b])               # noqa: E731
    interrupt_inside(call, "_higher", check=_grads_untouched(nodes))
    H = hessian(lambda xs: y, [a, b])
    assert np.isfinite(H).all()
    assert math.isclose(H[0, 1], H[1, 0], rel_tol=1e-9, abs_tol=1e-12)
    _grads_untouched(nodes)()


# -- item 6: outputs that overlap the inputs -------------------------------------

@pytest.mark.compiled_only("Program is compiled")
@pytest.mark.parametrize("n", [7, 5000, 100_003])
def test_issue26_item6_predict_with_out_overlapping_the_inputs(n):
    from fastgrad import compile
    w = Value(3.0)
    prog = compile(lambda x: x[0] * w - 1.0, 1, params=[w])
    X = np.random.default_rng(n).normal(size=(n, 1))
    X0 = X.copy()
    want = X0[:-1] * 3.0 - 1.0                       # NumPy, on an untouched copy
    out = prog.predict(X[:-1], out=X[1:])            # rows shifted by one
    assert np.shares_memory(out, X)
    assert X[1:].tobytes() == want.tobytes()
    assert X[0].tobytes() == X0[0].tobytes()
    # 1-D columns, out one row *behind* the inputs
    x = X0[:, 0].copy()
    prog.predict(x[1:], out=x[:-1])
    assert x[:-1].tobytes() == (X0[1:, 0] * 3.0 - 1.0).tobytes()


@pytest.mark.compiled_only("Program is compiled")
def test_issue26_item6_batch_outputs_and_input_grad_overlapping():
    from fastgrad import compile
    w = Value(2.0)
    prog = compile(lambda x: x[0] * x[1] * w, 2, params=[w])
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40_001, 2))
    X0 = X.copy()
    buf = X.reshape(-1)                               # the same memory, flat
    # outputs (B, 1) written over the inputs' first half
    outputs = buf[: X.shape[0]].reshape(-1, 1)
    w.grad = 0.0
    loss = prog.batch(X, reduce="sum", outputs=outputs)
    assert outputs[:, 0].tobytes() == (X0[:, 0] * X0[:, 1] * 2.0).tobytes()
    assert loss == pytest.approx(float((X0[:, 0] * X0[:, 1] * 2.0).sum()), rel=1e-12)
    assert w.grad == pytest.approx(float((X0[:, 0] * X0[:, 1]).sum()), rel=1e-12)
    # input_grad in place of the inputs
    X[:] = X0
    gin = X
    prog.batch(X, reduce="sum", input_grad=gin, grad=True)
    assert gin[:, 0].tobytes() == (X0[:, 1] * 2.0).tobytes()
    assert gin[:, 1].tobytes() == (X0[:, 0] * 2.0).tobytes()
    # two outputs in the same memory: refused, nothing written
    X[:] = X0
    B = X.shape[0]
    mem = np.zeros(3 * B)
    outputs = mem[:B].reshape(B, 1)
    input_grad = mem[B // 2: B // 2 + 2 * B].reshape(B, 2)
    with pytest.raises(ValueError, match="output arrays overlap"):
        prog.batch(X, outputs=outputs, input_grad=input_grad)
    assert not mem.any() and X.tobytes() == X0.tobytes()
