"""num_grad / gradcheck of a compiled Program: the loop never enters Python.

Oracles: num_grad of the same program called through Python (bit-equal:
same evaluations in the same order), and hand-derived derivatives.
"""
import numpy as np
import pytest

import fastgrad
from fastgrad import Value
from fastgrad.numgrad import gradcheck, num_grad

pytestmark = pytest.mark.compiled_only("programs come from compiled graph replay")


def _prog():
    w, b = Value(1.5), Value(-0.5)
    prog = fastgrad.compile(lambda v: (v[0] * w + b).tanh() * v[1] + v[0] * v[0],
                            2, params=[w, b])
    return prog, w, b


def test_num_grad_inputs_bit_equal_to_python_path():
    prog, w, b = _prog()
    x = np.array([0.3, -1.2])
    x0 = x.copy()
    fast = num_grad(prog, x)
    slow = num_grad(lambda a: prog.forward(a), x.copy())
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(x, x0)              # restored bit for bit
    # hand-derived: d/dx0 = (1 - t^2) w x1 + 2 x0, d/dx1 = t
    t = np.tanh(0.3 * 1.5 - 0.5)
    np.testing.assert_allclose(fast, [(1 - t * t) * 1.5 * -1.2 + 0.6, t], rtol=1e-8)
    assert (w.grad, b.grad) == (0.0, 0.0)


def test_num_grad_wrt_params():
    prog, w, b = _prog()
    x = [0.3, -1.2]
    theta = np.array([1.5, -0.5])
    fast = num_grad(prog.wrt_params(x), theta)
    slow = num_grad(lambda th: prog.eval_params(th, x), theta.copy())
    np.testing.assert_array_equal(fast, slow)
    t = np.tanh(0.3 * 1.5 - 0.5)
    np.testing.assert_allclose(fast, [(1 - t * t) * 0.3 * -1.2, (1 - t * t) * -1.2],
                               rtol=1e-8)
    assert (w.data, b.data, w.grad, b.grad) == (1.5, -0.5, 0.0, 0.0)


def test_gradcheck_program_inputs_and_params():
    prog, w, b = _prog()
    w.grad = 7.0
    assert gradcheck(prog, np.array([0.3, -1.2]))
    assert gradcheck(prog.wrt_params([0.3, -1.2]), np.array([0.7, 0.2]))
    # gradcheck leaves the user's Values alone
    assert (w.data, b.data, w.grad, b.grad) == (1.5, -0.5, 7.0, 0.0)


def test_bad_arrays_for_a_program():
    prog, _, _ = _prog()
    with pytest.raises(ValueError, match=r"inputs of shape \(2,\), got \(3,\)"):
        num_grad(prog, np.zeros(3))
    with pytest.raises(ValueError, match=r"parameters of shape \(2,\), got \(1,\)"):
        num_grad(prog.wrt_params([0.0, 0.0]), np.zeros(1))
    with pytest.raises(TypeError, match="float64"):
        num_grad(prog, np.zeros(2, np.float32))
