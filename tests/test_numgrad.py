"""num_grad and gradcheck (issue 3).

Oracles: the lecture's own np.nditer ``num_grad`` (copied below verbatim, only
``h`` made a parameter), hand-derived derivatives, micrograd's engine, and
the O(h)/O(h**2) error laws of finite differences.
"""
import math
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fastgrad import GradcheckError, Value, gradcheck, maximum, minimum, num_grad
from fastgrad.numgrad import _numgrad     # the loops in use (C, or Python)
from fastgrad.engine import dot_add, no_grad


# ---------------------------------------------------------------------------
# the oracle: the lecture's num_grad (Lecture 3, "Numerical Gradient")
# ---------------------------------------------------------------------------

def lecture_num_grad(f, x, h=0.00001):
    fx = f(x)
    grad = np.zeros(x.shape)
    it = np.nditer(x, flags=['multi_index'], op_flags=['readwrite'])
    while not it.finished:
        ix = it.multi_index
        old_value = x[ix]
        x[ix] = old_value + h
        fxh = f(x)
        x[ix] = old_value
        grad[ix] = (fxh - fx) / h  # alternatively [f(x+h)-f(x-h)]/2h
        it.iternext()
    return grad


def bits(a):
    """The raw bytes of an array's elements, in C order (bitwise comparison)."""
    return np.ascontiguousarray(a).tobytes()


def float_bits(v):
    return struct.pack("<d", v)


# functions of an array returning various scalar types
def f_poly(x):
    return float(np.sum(x.astype(np.float64) ** 3 - 2.0 * x))        # Python float


def f_sin(x):
    return np.sum(np.sin(x.astype(np.float64)) * np.arange(x.size).reshape(x.shape))


def f_native(x):
    return np.tanh(x).sum()            # float32 x -> numpy float32 result


def f_first(x):
    return x.flat[0] * x.flat[-1] if x.size else 0.0


def f_zero_d(x):
    return np.array(np.sum(np.exp(-x.astype(np.float64) ** 2)))       # 0-d array


FUNCS = [f_poly, f_sin, f_native, f_first, f_zero_d]


def layouts(rng, dtype):
    """Arrays of every layout the issue lists, on fresh random data."""
    base = rng.uniform(-2, 2, size=(6, 8)).astype(dtype)
    return {
        "1d": rng.uniform(-2, 2, size=7).astype(dtype),
        "2d": base.copy(),
        "3d": rng.uniform(-2, 2, size=(2, 3, 4)).astype(dtype),
        "0d": np.array(rng.uniform(-2, 2), dtype=dtype),
        "fortran": np.asfortranarray(base),
        "strided": base[::2, 1::3],
        "reversed": base[::-1, ::-2],
        "transposed": base.T,
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("func", FUNCS, ids=lambda f: f.__name__)
def test_forward_equals_lecture_bit_for_bit(func, seed, dtype):
    rng = np.random.default_rng(seed)
    for name, x in layouts(rng, dtype).items():
        expected = lecture_num_grad(func, x)
        got = num_grad(func, x, method="forward")
        assert got.dtype == np.float64 and got.shape == x.shape, name
        assert bits(got) == bits(expected), name


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                  elements=st.floats(-1e6, 1e6, allow_subnormal=True)),
       st.sampled_from([1e-5, 1e-3, 0.5]))
def test_forward_equals_lecture_on_any_floats(x, h):
    w = np.linspace(-1.5, 2.0, x.size).reshape(x.shape)

    def f(a):
        return float(np.sum(w * a * a) + np.sum(np.cos(a)))

    expected = lecture_num_grad(f, x, h)
    assert bits(num_grad(f, x, h=h, method="forward")) == bits(expected)


def test_lecture_oracle_is_not_trivially_equal():
    # the oracle would notice a wrong formula: central differs from forward
    x = np.array([0.3, -1.2, 2.0])
    fwd = lecture_num_grad(f_poly, x)
    assert not np.array_equal(num_grad(f_poly, x, method="central"), fwd)
    np.testing.assert_allclose(fwd, 3 * x ** 2 - 2, rtol=1e-4)


# ---------------------------------------------------------------------------
# accuracy: O(h**2) for central, O(h) for forward
# ---------------------------------------------------------------------------

def test_central_error_is_second_order():
    x = np.array([0.3, -1.1, 2.5, 0.9])

    def f(a):
        return float(np.sum(np.sin(a)))

    def err(h, method):
        return np.abs(num_grad(f, x, h=h, method=method) - np.cos(x))

    # truncation error ~ h**2 |f'''| / 6: halving h divides it by 4
    ratio = err(1e-2, "central") / err(5e-3, "central")
    np.testing.assert_allclose(ratio, 4.0, rtol=0.02)
    np.testing.assert_allclose(err(1e-2, "central"), 1e-4 / 6 * np.abs(np.cos(x)),
                               rtol=0.01)
    # forward: error ~ h |f''| / 2, halving h halves it
    ratio = err(1e-2, "forward") / err(5e-3, "forward")
    np.testing.assert_allclose(ratio, 2.0, rtol=0.02)
    # at the default step the central error is tiny
    assert err(1e-5, "central").max() < 1e-9


def test_central_close_to_analytic_nd():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, size=(3, 4, 2))
    w = rng.uniform(-1, 1, size=x.shape)
    g = num_grad(lambda a: float(np.sum(np.exp(w * a))), x)
    np.testing.assert_allclose(g, w * np.exp(w * x), rtol=1e-8, atol=1e-10)


def test_float32_central_divides_by_the_step_taken():
    # x+h and x-h are rounded to float32; dividing by the stored step keeps
    # the quotient accurate (dividing by 2h would be off by ~1e-3 here)
    x = np.array([1.0, 0.7, -3.3, 100.0], dtype=np.float32)
    g = num_grad(lambda a: float(np.sum(a.astype(np.float64) ** 2)), x, h=1e-4)
    np.testing.assert_allclose(g, 2 * x.astype(np.float64), rtol=1e-6)


# ---------------------------------------------------------------------------
# x is the caller's object, restored bit for bit
# ---------------------------------------------------------------------------

SPECIALS = np.array([
    -0.0, 0.0, 1.5, -2.25, 5e-324, np.inf, -np.inf,
    struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0],   # quiet nan, payload
    struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000001))[0],   # signalling nan
])


def special_array(dtype):
    if dtype == np.float64:
        return SPECIALS.copy()
    raw = np.array([0x80000000, 0, 0x3FC00000, 0xC0100000, 1, 0x7F800000, 0xFF800000,
                    0x7FC00123, 0xFF800001], dtype=np.uint32)
    return raw.view(np.float32).copy()


@pytest.mark.parametrize("method", ["central", "forward"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_restores_exact_bits(dtype, method):
    x = special_array(dtype)
    before = bits(x)
    seen = []

    def f(a):
        seen.append((a is x, None))
        return float(np.sum(np.where(np.isfinite(a), a, 0).astype(np.float64)))

    g = num_grad(f, x, method=method)
    assert bits(x) == before
    assert all(same for same, _ in seen)            # the caller's own object
    calls = 2 * x.size if method == "central" else x.size + 1
    assert len(seen) == calls
    # (forward on float32 divides by h, not by the rounded step: ~1e-3 off,
    # exactly as the lecture's loop)
    np.testing.assert_allclose(g[:5], 1.0, rtol=2e-3 if method == "forward" else 1e-6)


@pytest.mark.parametrize("method", ["central", "forward"])
def test_restores_on_exception(method):
    base = np.tile(SPECIALS, (3, 1))
    x = base[:, ::-2]                        # a strided view with -0.0 and nans
    before = bits(base)
    err = RuntimeError("boom")
    calls = []

    def f(a):
        calls.append(1)
        if len(calls) == 6:
            raise err
        return 1.0

    with pytest.raises(RuntimeError) as info:
        num_grad(f, x, method=method)
    assert info.value is err
    assert bits(base) == before


def test_each_call_sees_exactly_one_element_perturbed():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    ref = x.copy()
    diffs = []
    num_grad(lambda a: diffs.append(np.argwhere(a != ref).tolist()) or 0.0, x)
    # C order, x+h then x-h for each element
    assert diffs == [[[0, 0]], [[0, 0]], [[0, 1]], [[0, 1]],
                     [[1, 0]], [[1, 0]], [[1, 1]], [[1, 1]]]


def test_zero_d_array():
    x = np.array(1.5)
    g = num_grad(lambda a: float(a) ** 3, x)
    assert g.shape == () and g.dtype == np.float64
    assert abs(float(g) - 3 * 1.5 ** 2) < 1e-8


def test_empty_array():
    x = np.empty((0, 3))
    calls = []
    g = num_grad(lambda a: calls.append(1) or 0.0, x)
    assert g.shape == (0, 3) and g.dtype == np.float64 and calls == []
    g = num_grad(lambda a: calls.append(1) or 0.0, x, method="forward")
    assert g.shape == (0, 3) and calls == [1]         # the lecture's f(x)


def test_strided_view_touches_only_its_elements():
    base = np.random.default_rng(3).uniform(-1, 1, size=(5, 6))
    before = bits(base)
    view = base[1::2, ::-3]
    w = np.arange(view.size, dtype=np.float64).reshape(view.shape) + 1
    g = num_grad(lambda a: float(np.sum(w * a)), view)
    assert bits(base) == before
    np.testing.assert_allclose(g, w, rtol=1e-9)


def test_unaligned_array():
    buf = bytearray(8 * 5 + 1)
    x = np.ndarray((5,), dtype=np.float64, buffer=buf, offset=1)
    x[:] = [0.5, -1.0, 2.0, 3.0, -4.0]
    assert not x.flags.aligned
    before = bits(x)
    g = num_grad(lambda a: float(np.sum(a ** 2)), x)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-8)
    assert bits(x) == before


@pytest.mark.parametrize("ret", [
    lambda a: Value(float(np.sum(a ** 2))),
    lambda a: np.array([np.sum(a ** 2)]),
    lambda a: np.float32(np.sum(a ** 2)),
    lambda a: 1 + 0 * int(a[0]),
])
def test_scalar_result_kinds(ret):
    x = np.array([1.0, 2.0])
    g = num_grad(ret, x, h=1e-3)
    assert g.shape == (2,) and np.all(np.isfinite(g))


def test_int_result_forward_is_lecture_value():
    x = np.array([0.2, 0.7])
    f = lambda a: int(a[0] > 0.200001)  # noqa: E731  (steps from 0 to 1)
    assert bits(num_grad(f, x, method="forward")) == bits(lecture_num_grad(f, x))


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

def test_values_forward_equals_lecture_on_same_function():
    data = [0.7, -1.3, 0.4]
    vals = [Value(d) for d in data]

    def f_values(v):
        return v[0] * v[1] + v[2].tanh() * v[0] - v[1] / v[2]

    def f_array(a):
        return a[0] * a[1] + math.tanh(a[2]) * a[0] - a[1] / a[2]

    expected = lecture_num_grad(lambda a: float(f_array(a)), np.array(data))
    got = num_grad(f_values, vals, method="forward")
    assert bits(got) == bits(expected)
    assert [v.data for v in vals] == data


def test_values_central_close_to_analytic_and_restored():
    vals = [Value(0.5), Value(-2.0), Value(-0.0)]
    seen = []

    def f(v):
        seen.append(v)
        return (v[0] * v[1]).exp() + v[2] * 3.0

    g = num_grad(f, vals)
    a, b = 0.5, -2.0
    np.testing.assert_allclose(g, [b * math.exp(a * b), a * math.exp(a * b), 3.0],
                               rtol=1e-8)
    assert all(s is vals for s in seen)
    assert float_bits(vals[2].data) == float_bits(-0.0)
    assert all(v.grad == 0.0 for v in vals)


def test_values_restored_on_exception():
    nan = SPECIALS[7]
    vals = [Value(1.0), Value(nan), Value(-0.0)]
    before = [float_bits(v.data) for v in vals]
    count = []

    def f(v):
        count.append(1)
        if len(count) == 4:
            raise KeyError("stop")
        return v[0] + v[2]

    with pytest.raises(KeyError):
        num_grad(f, vals)
    assert [float_bits(v.data) for v in vals] == before


def test_values_tuple_and_empty():
    assert num_grad(lambda v: 0.0, ()).shape == (0,)
    g = num_grad(lambda v: v[0] * v[0], (Value(3.0),), h=1e-3)
    np.testing.assert_allclose(g, [6.0], rtol=1e-9)


def test_micrograd_values():
    mg = pytest.importorskip("micrograd.engine")
    a, b = mg.Value(2), mg.Value(-3.0)
    g = num_grad(lambda v: v[0] * v[1] + v[0] ** 2, [a, b])
    np.testing.assert_allclose(g, [-3.0 + 4.0, 2.0], rtol=1e-8)
    assert a.data == 2 and type(a.data) is int          # original object back
    assert gradcheck(lambda x, y: (x * y + x ** 3).relu(), [a, b])
    assert a.grad == 0 and b.grad == 0


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("x, exc, words", [
    (np.arange(4), TypeError, "integer array"),
    (np.array([True, False]), TypeError, "bool array"),
    (np.array([Value(1.0)], dtype=object), TypeError, "object array"),
    (np.ones(3, dtype=np.complex128), TypeError, "complex128"),
    (np.ones(3, dtype=np.float16), TypeError, "float16"),
    (np.ones(3, dtype=">f8" if np.little_endian else "<f8"), TypeError, "byte order"),
    (3.0, TypeError, "float"),
    (None, TypeError, "NoneType"),
    ("abc", TypeError, "str"),
    ({"a": Value(1.0)}, TypeError, "dict"),
    ({Value(1.0)}, TypeError, "set"),
    ([1.0, 2.0], TypeError, r"x\[0\] is float"),
    ([Value(1.0), "b"], TypeError, r"x\[1\] is str"),
    (Value(1.0), TypeError, "wrap a single Value"),
])
def test_bad_x(x, exc, words):
    with pytest.raises(exc, match=words):
        num_grad(lambda a: 0.0, x)


def test_read_only_array():
    x = np.ones(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        num_grad(lambda a: 0.0, x)
    bx = np.broadcast_to(np.ones(1), (3,))
    with pytest.raises(ValueError, match="read-only"):
        num_grad(lambda a: 0.0, bx)


@pytest.mark.parametrize("h, exc", [
    (0.0, ValueError), (-1e-5, ValueError), (math.nan, ValueError),
    (math.inf, ValueError), ("1e-5", TypeError), (True, TypeError), (None, TypeError),
])
def test_bad_h(h, exc):
    with pytest.raises(exc, match="h must be"):
        num_grad(lambda a: 0.0, np.ones(2), h=h)


@pytest.mark.parametrize("method", ["backward", "Central", None, 2])
def test_bad_method(method):
    with pytest.raises(ValueError, match="unknown method"):
        num_grad(lambda a: 0.0, np.ones(2), method=method)


def test_f_not_callable():
    with pytest.raises(TypeError, match="f must be callable"):
        num_grad(3.0, np.ones(2))


@pytest.mark.parametrize("ret, exc, words", [
    (lambda a: a[:3] * 1.0, ValueError, r"shape \(3,\)"),
    (lambda a: a.reshape(2, 2) * 1.0, ValueError, r"shape \(2, 2\)"),
    (lambda a: [1.0, 2.0], ValueError, r"list of shape \(2,\)"),
    (lambda a: complex(1, 1), TypeError, "complex"),
    (lambda a: np.ones(1, dtype=complex), TypeError, "complex128"),
    (lambda a: None, TypeError, "NoneType"),
    (lambda a: "1.0", TypeError, "str"),
])
@pytest.mark.parametrize("method", ["central", "forward"])
def test_f_returns_non_scalar(ret, exc, words, method):
    x = np.array([1.0, -0.0, 3.0, 4.0])
    before = bits(x)
    with pytest.raises(exc, match=words):
        num_grad(ret, x, method=method)
    assert bits(x) == before
    vals = [Value(1.0), Value(-0.0)]
    with pytest.raises(exc, match=words):
        num_grad(lambda v: ret(x), vals, method=method)
    assert float_bits(vals[1].data) == float_bits(-0.0)


def test_step_too_small_for_the_precision():
    x = np.array([1.0, 1e6], dtype=np.float32)
    before = bits(x)
    with pytest.raises(ValueError, match=r"vanishes at x\[\(1,\)\] = 1000000.0"):
        num_grad(lambda a: float(a.sum()), x)
    assert bits(x) == before
    with pytest.raises(ValueError, match="vanishes"):
        num_grad(lambda v: v[0] * 1.0, [Value(1e300)])


# ---------------------------------------------------------------------------
# compiled programs: the evaluator protocol (stand-in program)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["central", "forward"])
@pytest.mark.compiled_only("C evaluators of compiled programs")
def test_evaluator_path_equals_python_path(method):
    w = np.array([0.5, -2.0, 3.0, 1.25])
    prog = _numgrad._ExampleProgram(w)
    x = np.array([1.0, -0.5, 0.25, -0.0])
    before = bits(x)
    via_c = num_grad(prog, x, method=method)
    via_python = num_grad(lambda a: prog(a), x, method=method)
    assert bits(via_c) == bits(via_python)
    assert bits(x) == before
    np.testing.assert_allclose(via_c, 2 * w * x, rtol=1e-4, atol=1e-4)


@pytest.mark.compiled_only("C evaluators of compiled programs")
def test_evaluator_gradcheck():
    x = np.array([1.0, -0.5, 0.25])
    assert gradcheck(_numgrad._ExampleProgram([1.0, 2.0, 3.0]), x)
    with pytest.raises(GradcheckError, match="1 of 3"):
        gradcheck(_numgrad._ExampleProgram([1.0, 2.0, 3.0], wrong=True), x)


@pytest.mark.compiled_only("C evaluators of compiled programs")
def test_evaluator_bad_input():
    prog = _numgrad._ExampleProgram([1.0, 2.0])
    with pytest.raises(TypeError, match="float64"):
        num_grad(prog, np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        num_grad(prog, np.ones(3))
    with pytest.raises(TypeError, match="array of its inputs"):
        num_grad(prog, [Value(1.0)])
    with pytest.raises(ValueError, match="vanishes"):
        num_grad(prog, np.array([1.0, 1e300]))


# ---------------------------------------------------------------------------
# gradcheck on every op of the engine
# ---------------------------------------------------------------------------

OPS = {
    "add": (lambda a, b: a + b, (0.7, -1.3)),
    "sub": (lambda a, b: a - b, (0.7, -1.3)),
    "mul": (lambda a, b: a * b, (0.7, -1.3)),
    "div": (lambda a, b: a / b, (0.7, -1.3)),
    "pow": (lambda a, b: a ** b, (1.7, -1.3)),
    "max": (lambda a, b: maximum(a, b), (0.7, -1.3)),
    "min": (lambda a, b: minimum(a, b), (0.7, -1.3)),
    "max_mixed": (lambda a, b: maximum(a * b, 0.1), (0.7, 1.3)),
    "addc": (lambda a: a + 2.5, (0.7,)),
    "subc": (lambda a: a - 2.5, (0.7,)),
    "rsubc": (lambda a: 2.5 - a, (0.7,)),
    "mulc": (lambda a: a * 2.5, (0.7,)),
    "rmulc": (lambda a: 2.5 * a, (0.7,)),
    "divc": (lambda a: a / 2.5, (0.7,)),
    "rdivc": (lambda a: 2.5 / a, (0.7,)),
    "powc": (lambda a: a ** 3, (0.7,)),
    "powc_frac": (lambda a: a ** -1.5, (0.7,)),
    "rpowc": (lambda a: 2.5 ** a, (0.7,)),
    "neg": (lambda a: -a, (0.7,)),
    "relu_pos": (lambda a: a.relu(), (0.7,)),
    "relu_neg": (lambda a: a.relu(), (-0.7,)),
    "tanh": (lambda a: a.tanh(), (0.7,)),
    "exp": (lambda a: a.exp(), (0.7,)),
    "log": (lambda a: a.log(), (0.7,)),
    "sigmoid": (lambda a: a.sigmoid(), (-0.7,)),
    "abs_pos": (lambda a: abs(a), (0.7,)),
    "abs_neg": (lambda a: a.abs(), (-0.7,)),
    "sqrt": (lambda a: a.sqrt(), (0.7,)),
    "dot_add": (lambda a, b, c: dot_add([a, b], [c, 2.0], a, relu=True), (0.7, 1.3, 0.4)),
    "shared": (lambda a, b: (a * b + a).tanh() * a / (b * b + 1.0), (0.7, -1.3)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck_every_op(name):
    f, point = OPS[name]
    inputs = [Value(p) for p in point]
    for v in inputs:
        v.grad = 0.125                       # the user's accumulated gradients
    assert gradcheck(f, inputs, atol=1e-7, rtol=1e-6) is True
    assert [v.grad for v in inputs] == [0.125] * len(inputs)
    assert [v.data for v in inputs] == list(point)


def test_gradcheck_single_value_and_closure_grads_restored():
    w = Value(1.5)                           # not an input, but in the graph
    w.grad = -7.0
    x = Value(0.25)
    assert gradcheck(lambda x: (w * x).sigmoid(), x)
    assert w.grad == -7.0 and x.grad == 0.0


def test_gradcheck_inside_no_grad():
    x = Value(0.3)
    with no_grad():
        assert gradcheck(lambda x: x * x * x, [x])


def test_gradcheck_input_not_in_graph():
    x, y = Value(2.0), Value(5.0)
    y.grad = 3.0
    assert gradcheck(lambda x, y: x * x, [x, y])
    assert y.grad == 3.0


# ---------------------------------------------------------------------------
# gradcheck catches a wrong backward
# ---------------------------------------------------------------------------

def wrong_square(a):
    """a**2 as a hand-built node whose backward says 3a instead of 2a."""
    out = Value(a.data ** 2, (a,), "sq")

    def _backward():
        a.grad += 3.0 * a.data * out.grad

    out._backward = _backward
    return out


def test_gradcheck_fails_on_wrong_backward():
    a, b = Value(2.0, label="a"), Value(0.5, label="b")
    a.grad, b.grad = 0.25, -0.5
    f = lambda a, b: wrong_square(a) * b + b.exp()  # noqa: E731
    with pytest.raises(GradcheckError) as info:
        gradcheck(f, [a, b])
    msg = str(info.value)
    # d/da = 2*a*b = 2; the wrong backward reports 3*a*b = 3
    assert "1 of 2 gradient entries mismatch" in msg
    row = [line for line in msg.splitlines() if line.strip().startswith("0 a")]
    assert len(row) == 1, msg
    assert row[0].split()[2:6] == ["2", "3", "2", "1.00e+00"]
    assert "3.33e-01" in row[0]                       # |3 - 2| / max(3, 2)
    assert "b" not in [line.split()[1] for line in msg.splitlines()[5:]]
    err = info.value
    np.testing.assert_allclose(err.analytic, [3.0, 2.0 ** 2 + math.exp(0.5)])
    np.testing.assert_allclose(err.numeric, [2.0, 2.0 ** 2 + math.exp(0.5)], rtol=1e-8)
    assert err.mismatch.tolist() == [True, False]
    assert (a.grad, b.grad) == (0.25, -0.5)
    assert (a.data, b.data) == (2.0, 0.5)
    assert gradcheck(f, [a, b], raise_exception=False) is False


def test_gradcheck_reports_worst_first_and_nan():
    xs = [Value(float(i + 1)) for i in range(14)]

    def f(*v):
        total = wrong_square(v[0])
        for k, vi in enumerate(v[1:], 1):
            total = total + (wrong_square(vi) if k < 12 else vi * 2.0)
        return total

    with pytest.raises(GradcheckError) as info:
        gradcheck(f, xs)
    msg = str(info.value)
    assert "12 of 14" in msg and "... and 2 more" in msg
    nan_in = Value(1.0)
    with pytest.raises(GradcheckError, match="1 of 1"):
        gradcheck(lambda x: Value(x.data * math.nan, (x,), "nan") + x, [nan_in])


def test_gradcheck_with_reference_engine():
    ref = pytest.importorskip("fastgrad.reference")
    a, b = ref.Value(2.0), ref.Value(-0.5)
    assert gradcheck(lambda a, b: (a * b).tanh() + a ** 2 / b, [a, b])

    def wrong(a):
        out = ref.Value(a.data ** 2, (a,), "sq")

        def _backward():
            a.grad += 3.0 * a.data * out.grad
        out._backward = _backward
        return out

    with pytest.raises(GradcheckError, match="1 of 2"):
        gradcheck(lambda a, b: wrong(a) + b, [a, b])
    assert (a.grad, b.grad) == (0.0, 0.0)


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"eps": 0.0}, ValueError, "eps must be"),
    ({"eps": "x"}, TypeError, "eps must be"),
    ({"atol": -1.0}, ValueError, "atol must be"),
    ({"rtol": math.nan}, ValueError, "rtol must be"),
])
def test_gradcheck_bad_args(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        gradcheck(lambda x: x * 2.0, [Value(1.0)], **kwargs)


def test_gradcheck_bad_f_and_inputs():
    with pytest.raises(TypeError, match="must return a Value"):
        gradcheck(lambda x: 2.0, [Value(1.0)])
    with pytest.raises(ValueError, match="inputs is empty"):
        gradcheck(lambda: Value(1.0), [])
    with pytest.raises(TypeError, match=r"inputs\[1\] is float"):
        gradcheck(lambda x, y: x, [Value(1.0), 2.0])
    with pytest.raises(TypeError, match="only when f is a compiled program"):
        gradcheck(lambda x: x, np.ones(2))
    with pytest.raises(TypeError, match="sequence of Values, got int"):
        gradcheck(lambda x: x, 3)
    with pytest.raises(TypeError, match="f must be callable"):
        gradcheck(None, [Value(1.0)])


# ---------------------------------------------------------------------------
# the demo's MLP loss
# ---------------------------------------------------------------------------

def test_mlp_demo_loss_gradcheck():
    datasets = pytest.importorskip("sklearn.datasets")
    from fastgrad.nn import MLP

    random.seed(0)
    X, y = datasets.make_moons(n_samples=100, noise=0.1, random_state=1)
    y = y * 2 - 1
    model = MLP(2, [16, 16, 1])
    params = model.parameters()
    Xb, yb = X[:4], y[:4]

    def loss(*_):
        # micrograd's demo loss: svm "max-margin" loss + L2 regularisation
        inputs = [list(map(Value, xrow)) for xrow in Xb]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(yb, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum((p * p for p in params))
        return data_loss + reg_loss

    # Away from kinks: with the relu pattern fixed, every relu input is affine
    # in any single parameter, so a step of eps cannot cross a kink while
    # eps * |d(input)/d(param)| < |input| for every relu.
    eps = 1e-4
    out = loss()
    relu_inputs = [next(iter(n._prev)) for n in _numgrad.graph_nodes(out)
                   if n._op == "ReLU"]
    assert len(relu_inputs) == 4 * 33
    nodes = _numgrad.graph_nodes(out)
    for r in relu_inputs:
        for n in nodes:
            n.grad = 0.0
        r.backward()
        slope = max(abs(p.grad) for p in params)
        assert eps * slope < 0.5 * abs(r.data)
    for p in params:
        p.grad = 0.0

    assert gradcheck(loss, params)                       # default tolerances
    # relative error below 1e-6 on every parameter: |a - n| <= 1e-6 |n|
    assert gradcheck(loss, params, eps=eps, atol=0.0, rtol=1e-6)
    assert all(p.grad == 0.0 for p in params)
