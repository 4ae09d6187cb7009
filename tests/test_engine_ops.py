"""Every operator's value and gradient, checked against independent oracles.

Smooth points: 4th-order central finite differences of the same function on
plain Python floats (``math``), never fastgrad itself.  Kinks (relu at 0,
abs at 0, max/min ties, pow at 0): hand-derived values.  Numerical
stability: saturating functions at +-1000 and overflow at the double limit.
"""
import math

import numpy as np
import pytest

from fastgrad import Value, maximum, minimum


# ---------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------

def fd4(f, x):
    """d f / dx at x by the 4th-order central difference (error O(h**4))."""
    h = 1e-3 * max(1.0, abs(x))
    return (-f(x + 2 * h) + 8 * f(x + h) - 8 * f(x - h) + f(x - 2 * h)) / (12 * h)


def close(got, want, rel=1e-6, abs_=1e-8):
    return got == pytest.approx(want, rel=rel, abs=abs_)


def py_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------
# unary operations
# ---------------------------------------------------------------------------

# name -> (apply to a Value, the same function on floats, smooth points)
UNARY = {
    "neg": (lambda v: -v, lambda x: -x, [-2.5, -0.3, 0.0, 0.7, 3.0]),
    "relu": (lambda v: v.relu(), lambda x: max(0.0, x), [-3.0, -0.2, 0.2, 5.0]),
    "tanh": (lambda v: v.tanh(), math.tanh, [-2.0, -0.5, 0.0, 0.3, 1.9]),
    "exp": (lambda v: v.exp(), math.exp, [-3.0, -0.1, 0.0, 0.8, 4.0]),
    "log": (lambda v: v.log(), math.log, [0.05, 0.5, 1.0, 2.7, 40.0]),
    "sigmoid": (lambda v: v.sigmoid(), py_sigmoid, [-6.0, -1.0, 0.0, 0.4, 7.0]),
    "abs_method": (lambda v: v.abs(), abs, [-4.0, -0.3, 0.3, 2.0]),
    "abs_builtin": (lambda v: abs(v), abs, [-4.0, -0.3, 0.3, 2.0]),
    "sqrt": (lambda v: v.sqrt(), math.sqrt, [0.04, 0.5, 1.0, 9.0, 123.0]),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_value_and_gradient(name):
    op, fn, points = UNARY[name]
    for x in points:
        v = Value(x)
        out = op(v)
        assert isinstance(out, Value)
        assert close(out.data, fn(x), rel=1e-14, abs_=1e-300), (name, x)
        out.backward()
        assert close(v.grad, fd4(fn, x)), (name, x, v.grad)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_chain_rule_scales_upstream_gradient(name):
    # the upstream gradient g != 1 must multiply the local derivative
    op, fn, points = UNARY[name]
    for x in points:
        v = Value(x)
        y = op(v) * -2.5 + 1.0
        y.backward()
        assert close(v.grad, -2.5 * fd4(fn, x)), (name, x)


# ---------------------------------------------------------------------------
# binary operations between two Values
# ---------------------------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, lambda x, y: x + y,
            [(1.5, -2.0), (-0.3, 0.0), (7.0, 2.5)]),
    "sub": (lambda a, b: a - b, lambda x, y: x - y,
            [(1.5, -2.0), (-0.3, 0.0), (7.0, 2.5)]),
    "mul": (lambda a, b: a * b, lambda x, y: x * y,
            [(1.5, -2.0), (-0.3, 0.0), (7.0, 2.5)]),
    "div": (lambda a, b: a / b, lambda x, y: x / y,
            [(1.5, -2.0), (0.0, 0.7), (-7.0, 2.5), (3.0, -0.05)]),
    "pow": (lambda a, b: a ** b, lambda x, y: x ** y,
            [(1.7, 2.3), (0.4, -1.5), (2.0, 0.5), (3.0, 0.0), (0.9, -3.0)]),
    "maximum": (maximum, max, [(1.5, -2.0), (-0.3, 0.2), (4.0, 4.5)]),
    "minimum": (minimum, min, [(1.5, -2.0), (-0.3, 0.2), (4.0, 4.5)]),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_value_and_gradients(name):
    op, fn, points = BINARY[name]
    for x, y in points:
        a, b = Value(x), Value(y)
        out = op(a, b)
        assert isinstance(out, Value)
        assert close(out.data, fn(x, y), rel=1e-14, abs_=0.0), (name, x, y)
        out.backward()
        assert close(a.grad, fd4(lambda t: fn(t, y), x)), (name, x, y, "a")
        assert close(b.grad, fd4(lambda t: fn(x, t), y)), (name, x, y, "b")


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_same_value_on_both_sides_accumulates(name):
    # a (op) a: both contributions land on the same node
    op, fn, _ = BINARY[name]
    for x in (0.6, 1.3, 2.0):
        a = Value(x)
        out = op(a, a)
        out.backward()
        assert close(out.data, fn(x, x), rel=1e-14, abs_=0.0)
        if name in ("maximum", "minimum"):
            assert a.grad == 1.0     # 0.5 + 0.5 from the tie
        else:
            assert close(a.grad, fd4(lambda t: fn(t, t), x)), (name, x)


def test_node_used_several_times_sums_its_gradients():
    a, b = Value(-4.0), Value(2.0)
    y = a * b + a * a + b / a
    y.backward()
    # hand-derived: dy/da = b + 2a - b/a**2, dy/db = a + 1/a
    assert a.grad == pytest.approx(2.0 - 8.0 - 2.0 / 16.0, rel=1e-15)
    assert b.grad == pytest.approx(-4.0 - 0.25, rel=1e-15)


# ---------------------------------------------------------------------------
# a Value and a plain number, on either side, of every number type
# ---------------------------------------------------------------------------

NUMBERS = [
    3, -2, 1.5, -0.5, True, False,
    np.int64(2), np.int32(-3), np.float32(0.25), np.float64(-1.75), np.bool_(True),
]
NUM_IDS = [f"{type(k).__name__}({k})" for k in NUMBERS]

ARITH = {
    "add": (lambda v, k: v + k, lambda x, k: x + k),
    "radd": (lambda v, k: k + v, lambda x, k: k + x),
    "sub": (lambda v, k: v - k, lambda x, k: x - k),
    "rsub": (lambda v, k: k - v, lambda x, k: k - x),
    "mul": (lambda v, k: v * k, lambda x, k: x * k),
    "rmul": (lambda v, k: k * v, lambda x, k: k * x),
    "div": (lambda v, k: v / k, lambda x, k: x / k),
    "rdiv": (lambda v, k: k / v, lambda x, k: k / x),
}


@pytest.mark.parametrize("k", NUMBERS, ids=NUM_IDS)
@pytest.mark.parametrize("name", sorted(ARITH))
def test_arithmetic_with_numbers(name, k):
    op, fn = ARITH[name]
    kf = float(k)
    if name == "div" and kf == 0.0:       # v / False, as 1.0 / False
        with pytest.raises(ZeroDivisionError):
            op(Value(1.0), k)
        return
    for x in (-2.3, 0.6, 4.1):
        v = Value(x)
        out = op(v, k)
        # numpy scalars on the left defer to Value: the result is a Value
        assert type(out) is Value, (name, k, type(out))
        assert type(out.data) is float
        assert out.data == fn(x, kf), (name, k, x)   # one IEEE op: exact
        out.backward()
        assert close(v.grad, fd4(lambda t: fn(t, kf), x)), (name, k, x)


@pytest.mark.parametrize("k", [2, 3, -1, -2, 0, 1, 2.0, 0.5, 1.5, -0.5, 3.7,
                               np.int64(3), np.float64(-1.5), np.float32(0.5),
                               True, np.bool_(True)],
                         ids=lambda k: f"{type(k).__name__}({k})")
def test_pow_constant_exponent(k):
    kf = float(k)
    points = [0.3, 1.7, 4.0]
    if kf == int(kf):
        points += [-1.3, -2.2]       # integer powers of negative numbers are real
    for x in points:
        v = Value(x)
        out = v ** k
        assert type(out) is Value
        assert out.data == pytest.approx(x ** kf, rel=1e-15)
        out.backward()
        assert close(v.grad, fd4(lambda t: t ** kf, x)), (k, x)


@pytest.mark.parametrize("k", [2, 0.5, 3.7, 1, np.int64(2), np.float64(1.5),
                               np.float32(0.25), True, np.bool_(True)],
                         ids=lambda k: f"{type(k).__name__}({k})")
def test_reflected_pow_number_base(k):
    kf = float(k)
    for x in (-1.5, 0.0, 0.8, 2.5):
        v = Value(x)
        out = k ** v
        assert type(out) is Value
        assert out.data == pytest.approx(kf ** x, rel=1e-15)
        out.backward()
        assert close(v.grad, fd4(lambda t: kf ** t, x)), (k, x)


@pytest.mark.parametrize("k", [2.0, -1, np.float64(0.5), np.int64(3), True],
                         ids=lambda k: f"{type(k).__name__}({k})")
def test_maximum_minimum_with_number_operands(k):
    kf = float(k)
    for x in (-2.0, 0.3, 3.5):
        for f, pyf in ((maximum, max), (minimum, min)):
            for args, grad_fn in (((Value(x), k), lambda t: pyf(t, kf)),
                                  ((k, Value(x)), lambda t: pyf(kf, t))):
                v = args[0] if isinstance(args[0], Value) else args[1]
                out = f(*args)
                assert out.data == pyf(x, kf)
                out.backward()
                assert close(v.grad, fd4(grad_fn, x))
                assert v.grad == (1.0 if out.data == x else 0.0)


# ---------------------------------------------------------------------------
# kinks and boundary points: hand-derived values
# ---------------------------------------------------------------------------

def grad_at(op, x):
    v = Value(x)
    out = op(v)
    out.backward()
    return out.data, v.grad


def test_relu_kink():
    assert grad_at(lambda v: v.relu(), 0.0) == (0.0, 0.0)   # micrograd: 0 at 0
    data, g = grad_at(lambda v: v.relu(), -0.0)
    assert data == 0.0 and g == 0.0
    assert grad_at(lambda v: v.relu(), 1e-300) == (1e-300, 1.0)
    assert grad_at(lambda v: v.relu(), -1e-300) == (0.0, 0.0)


def test_abs_kink():
    assert grad_at(lambda v: v.abs(), 0.0) == (0.0, 0.0)     # sign(0) = 0
    assert grad_at(lambda v: abs(v), 0.0) == (0.0, 0.0)
    assert grad_at(lambda v: v.abs(), 1e-300) == (1e-300, 1.0)
    assert grad_at(lambda v: v.abs(), -1e-300) == (1e-300, -1.0)


@pytest.mark.parametrize("f", [maximum, minimum])
def test_tie_splits_gradient_evenly(f):
    a, b = Value(1.25), Value(1.25)
    out = f(a, b)
    (out * 4.0).backward()
    assert out.data == 1.25
    assert (a.grad, b.grad) == (2.0, 2.0)      # 4 * 0.5 each
    # a tie with a number: the Value gets half
    v = Value(-3.0)
    out = f(v, -3)
    out.backward()
    assert (out.data, v.grad) == (-3.0, 0.5)
    v = Value(-3.0)
    out = f(np.float64(-3.0), v)
    out.backward()
    assert (out.data, v.grad) == (-3.0, 0.5)


def test_max_winner_takes_all():
    z, w = Value(2.0), Value(-1.0)
    q = maximum(z, w)
    q.backward()
    assert (q.data, z.grad, w.grad) == (2.0, 1.0, 0.0)
    z, w = Value(2.0), Value(-1.0)
    q = minimum(z, w)
    q.backward()
    assert (q.data, z.grad, w.grad) == (-1.0, 0.0, 1.0)


def test_pow_at_zero_base():
    # d/dx x**k = k x**(k-1): 0 for k > 1, 1 for k == 1, +inf for 0 < k < 1
    assert grad_at(lambda v: v ** 2, 0.0) == (0.0, 0.0)
    assert grad_at(lambda v: v ** 3, 0.0) == (0.0, 0.0)
    assert grad_at(lambda v: v ** 1, 0.0) == (0.0, 1.0)
    assert grad_at(lambda v: v ** 0.5, 0.0) == (0.0, math.inf)
    assert grad_at(lambda v: v.sqrt(), 0.0) == (0.0, math.inf)
    # 2 ** x at 0: value 1, gradient log 2
    assert grad_at(lambda v: 2 ** v, 0.0) == (1.0, math.log(2.0))
    # 0 ** x for x > 0 is the constant 0 (torch's convention: gradient 0)
    assert grad_at(lambda v: 0.0 ** v, 2.0) == (0.0, 0.0)


def test_pow_zero_exponent_at_zero_base():
    # x**0 is the constant 1: its derivative is 0 everywhere, x = 0 included
    assert grad_at(lambda v: v ** 0, 0.0) == (1.0, 0.0)


def test_value_pow_value_zero_zero():
    a, b = Value(0.0), Value(0.0)
    out = a ** b
    out.backward()
    assert (out.data, a.grad, b.grad) == (1.0, 0.0, 0.0)


def test_division_gradient_tiny_denominator():
    a, b = Value(0.0), Value(1e-200)
    out = a / b
    out.backward()
    assert out.data == 0.0 and a.grad == 1e200
    assert b.grad == 0.0      # -a / b**2 with a = 0
    v = Value(1e-200)
    out = 0.0 / v
    out.backward()
    assert v.grad == 0.0


# ---------------------------------------------------------------------------
# numerical stability
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("x, value, grad", [
    (1000.0, 1.0, 0.0), (-1000.0, -1.0, 0.0), (40.0, 1.0, 0.0),
    (1e308, 1.0, 0.0), (-1e308, -1.0, 0.0),
])
def test_tanh_saturates_without_nan(x, value, grad):
    assert grad_at(lambda v: v.tanh(), x) == (value, grad)


@pytest.mark.parametrize("x, value, grad", [
    (1000.0, 1.0, 0.0), (-1000.0, 0.0, 0.0), (1e308, 1.0, 0.0), (-1e308, 0.0, 0.0),
])
def test_sigmoid_saturates_without_nan(x, value, grad):
    assert grad_at(lambda v: v.sigmoid(), x) == (value, grad)


def test_sigmoid_far_tail_keeps_relative_accuracy():
    # sigmoid(-40) = e**-40 / (1 + e**-40): tiny but not 0 (no cancellation)
    data, g = grad_at(lambda v: v.sigmoid(), -40.0)
    want = math.exp(-40.0) / (1.0 + math.exp(-40.0))
    assert data == pytest.approx(want, rel=1e-14)
    assert g == pytest.approx(want * (1.0 - want), rel=1e-14)
    # symmetry sigmoid(-x) = 1 - sigmoid(x)
    for x in (0.5, 3.0, 15.0):
        assert Value(-x).sigmoid().data == pytest.approx(1.0 - py_sigmoid(x), rel=1e-12)


def test_exp_at_the_edge_of_double_range():
    data, g = grad_at(lambda v: v.exp(), 709.0)
    assert data == math.exp(709.0) and g == math.exp(709.0)
    assert grad_at(lambda v: v.exp(), -1000.0) == (0.0, 0.0)


@pytest.mark.parametrize("build", [
    lambda: Value(710.0).exp(),
    lambda: Value(1000.0).exp(),
    lambda: Value(10.0) ** 400,
    lambda: 10.0 ** Value(400.0),
    lambda: Value(10.0) ** Value(400.0),
], ids=["exp710", "exp1000", "pow_const", "rpow", "pow_value"])
def test_overflow_raises_overflowerror(build):
    # Python floats: math.exp(710) and 10.0 ** 400 raise OverflowError too
    with pytest.raises(OverflowError, match=r"exp|pow|\*\*"):
        build()


def test_no_nan_gradients_over_a_grid():
    # every op at many ordinary points: finite value, finite gradient
    xs = [-50.0, -7.5, -1.0, -0.25, 0.25, 1.0, 7.5, 50.0]
    ops = [lambda v: v.tanh(), lambda v: v.sigmoid(), lambda v: v.relu(),
           lambda v: v.abs(), lambda v: (v * 0.1).exp(), lambda v: v * v,
           lambda v: v / 3.0, lambda v: 3.0 / v, lambda v: v ** 3,
           lambda v: abs(v).sqrt(), lambda v: abs(v).log(), lambda v: 2 ** (v * 0.1),
           lambda v: maximum(v, 0.25), lambda v: minimum(v, -0.25)]
    for op in ops:
        for x in xs:
            v = Value(x)
            out = op(v)
            out.backward()
            assert math.isfinite(out.data) and math.isfinite(v.grad), (x, out, v)
