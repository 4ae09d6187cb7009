"""fastgrad.reference (the pure-Python oracle) against independent oracles.

Expected values come from hand derivations, from micrograd 0.1.0 itself, and
from central finite differences; never from fastgrad's compiled engine (the
random-graph test compares the two engines, with the reference as oracle).
"""
import math
import random
import sys

import numpy as np
import pytest

import fastgrad.engine as E
import fastgrad.reference as R
from fastgrad.reference import MLP, Value, maximum, minimum, no_grad, zero_grad
from _expressions import micrograd_readme_expression

micrograd_engine = pytest.importorskip("micrograd.engine")
micrograd_nn = pytest.importorskip("micrograd.nn")
MValue = micrograd_engine.Value


# ---------------------------------------------------------------------------
# hand-derived examples
# ---------------------------------------------------------------------------

def test_lecture_max_gate_example():
    x, y, z, w = Value(3.0), Value(-4.0), Value(2.0), Value(-1.0)
    f = 2 * (x * y + maximum(z, w))
    f.backward()
    # f = 2(xy + max(z, w)); df/dx = 2y, df/dy = 2x, max routes 2 to z > w
    assert f.data == -20.0
    assert [x.grad, y.grad, z.grad, w.grad] == [-8.0, 6.0, 2.0, 0.0]


def test_microgradmicrograd_readme_expression():
    a, b, g = micrograd_readme_expression(Value)
    # the figures printed in micrograd's README
    assert f"{g.data:.4f}" == "24.7041"
    assert f"{a.grad:.4f}" == "138.8338"
    assert f"{b.grad:.4f}" == "645.5773"
    # and micrograd itself agrees to rounding (its a/b is a * b**-1)
    ma, mb, mg = micrograd_readme_expression(MValue)
    assert g.data == pytest.approx(mg.data, rel=1e-13)
    assert a.grad == pytest.approx(ma.grad, rel=1e-13)
    assert b.grad == pytest.approx(mb.grad, rel=1e-13)


def test_micrograd_sanity_check_by_hand():
    # micrograd's test_sanity_check: x=-4, z = 2x+2+x, q = relu(z) + z*x,
    # h = relu(z*z), y = h + q + q*x.  z = -10, q = 40, h = 100, y = -20.
    # dy/dx = dq/dx (1 + x) + q + dh/dx with dq/dx = z' x + z = 3x + z
    # = -22 and dh/dx = 2 z z' = -60: dy/dx = -22 * -3 + 40 - 60 = 46.
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert (y.data, x.grad) == (-20.0, 46.0)


def test_value_power_of_value_by_hand():
    a, b = Value(2.0), Value(3.0)
    c = a**b
    c.backward()
    # d(a^b)/da = b a^(b-1) = 12, d(a^b)/db = a^b ln a = 8 ln 2
    assert c.data == 8.0 and c._op == "**"
    assert a.grad == 12.0
    assert b.grad == pytest.approx(8 * math.log(2), rel=1e-15)


@pytest.mark.parametrize("fn, x, value, grad", [
    (lambda v: v ** 0, 0.0, 1.0, 0.0),              # d(x**0)/dx = 0 at 0 (torch)
    (lambda v: v ** Value(0.0), 0.0, 1.0, 0.0),
    (lambda v: v.relu(), 0.0, 0.0, 0.0),            # kink: gradient 0
    (lambda v: v.relu(), -2.0, 0.0, 0.0),
    (lambda v: v.relu(), 2.0, 2.0, 1.0),
    (lambda v: v.abs(), 0.0, 0.0, 0.0),             # sign(0) = 0
    (lambda v: abs(v), -3.0, 3.0, -1.0),
    (lambda v: v.tanh(), 0.0, 0.0, 1.0),
    (lambda v: v.tanh(), 1000.0, 1.0, 0.0),         # saturates, no nan
    (lambda v: v.sigmoid(), 0.0, 0.5, 0.25),
    (lambda v: v.sigmoid(), -1000.0, 0.0, 0.0),     # no exp overflow
    (lambda v: v.sigmoid(), 1000.0, 1.0, 0.0),
    (lambda v: v.exp(), 0.0, 1.0, 1.0),
    (lambda v: v.log(), 1.0, 0.0, 1.0),
    (lambda v: v.sqrt(), 4.0, 2.0, 0.25),
    (lambda v: v**2, -3.0, 9.0, -6.0),
    (lambda v: v**-1, 4.0, 0.25, -0.0625),
    (lambda v: 2**v, 3.0, 8.0, 8 * math.log(2)),
    (lambda v: 0**v, 2.0, 0.0, 0.0),                # d(0^x)/dx := 0 (torch)
    (lambda v: 1 / v, 2.0, 0.5, -0.25),
    (lambda v: 5 - v, 2.0, 3.0, -1.0),
    (lambda v: -v, 2.0, -2.0, -1.0),
])
def test_unary_values_and_gradients_by_hand(fn, x, value, grad):
    v = Value(x)
    out = fn(v)
    out.backward()
    assert out.data == value
    assert v.grad == pytest.approx(grad, rel=1e-15, abs=0)


@pytest.mark.parametrize("op, a, b, value, ga, gb", [
    (maximum, 2.0, -1.0, 2.0, 1.0, 0.0),
    (maximum, -1.0, 2.0, 2.0, 0.0, 1.0),
    (maximum, 1.5, 1.5, 1.5, 0.5, 0.5),             # tie: split evenly
    (minimum, 2.0, -1.0, -1.0, 0.0, 1.0),
    (minimum, 1.5, 1.5, 1.5, 0.5, 0.5),
])
def test_max_min_by_hand(op, a, b, value, ga, gb):
    va, vb = Value(a), Value(b)
    out = op(va, vb)
    out.backward()
    assert (out.data, va.grad, vb.grad) == (value, ga, gb)


def test_max_min_accept_numbers_on_either_side():
    v = Value(3.0)
    assert maximum(v, 5).data == 5.0
    assert minimum(2, v).data == 2.0
    with pytest.raises(TypeError, match="str"):
        maximum(v, "x")


# ---------------------------------------------------------------------------
# every rule against central finite differences
# ---------------------------------------------------------------------------

UNARY = {
    "relu": lambda v: v.relu(), "tanh": lambda v: v.tanh(),
    "exp": lambda v: v.exp(), "log": lambda v: v.log(),
    "sigmoid": lambda v: v.sigmoid(), "abs": lambda v: v.abs(),
    "sqrt": lambda v: v.sqrt(), "neg": lambda v: -v,
    "pow3": lambda v: v**3, "pow-0.5": lambda v: v**-0.5,
    "rpow": lambda v: 1.7**v, "rdiv": lambda v: 2.5 / v,
    "rsub": lambda v: 2.5 - v, "sub": lambda v: v - 2.5,
    "div": lambda v: v / 2.5, "mul": lambda v: v * -1.5,
}
BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "**": lambda a, b: a**b,
    "max": maximum, "min": minimum,
}


def _central_difference(f, xs, i, h=1e-6):
    up = list(xs)
    down = list(xs)
    up[i] += h
    down[i] -= h
    return (f(*up) - f(*down)) / (2 * h)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("x", [0.3, 1.7, 2.9])
def test_unary_rules_match_finite_differences(name, x):
    fn = UNARY[name]
    v = Value(x)
    out = fn(v)
    out.backward()
    numeric = _central_difference(lambda t: fn(Value(t)).data, [x], 0)
    assert v.grad == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("a, b", [(0.7, 1.9), (2.3, 0.4), (1.1, -1.3)])
def test_binary_rules_match_finite_differences(name, a, b):
    fn = BINARY[name]
    if name == "**" and a < 0:
        pytest.skip("negative base")
    va, vb = Value(a), Value(b)
    out = fn(va, vb)
    out.backward()
    f = lambda s, t: fn(Value(s), Value(t)).data  # noqa: E731
    assert va.grad == pytest.approx(_central_difference(f, [a, b], 0), rel=1e-6, abs=1e-8)
    assert vb.grad == pytest.approx(_central_difference(f, [a, b], 1), rel=1e-6, abs=1e-8)


# ---------------------------------------------------------------------------
# against micrograd on micrograd's own ops
# ---------------------------------------------------------------------------

def _random_micrograd_program(rng, n_leaves, n_ops):
    """Operations that micrograd 0.1.0 supports, on earlier nodes (sharing)."""
    program = []
    for k in range(n_ops):
        kind = rng.choice(["+", "-", "*", "/", "pow", "neg", "relu",
                           "radd", "rsub", "rmul", "rdiv", "addc", "mulc"])
        i = rng.randrange(n_leaves + k)
        j = rng.randrange(n_leaves + k)
        c = rng.choice([2, 3, -1, 0.5, 1.5, -2.0, 0.25])
        program.append((kind, i, j, c))
    return program


def _run_micrograd_program(V, leaves, program):
    nodes = [V(x) for x in leaves]
    for kind, i, j, c in program:
        a, b = nodes[i], nodes[j]
        if kind == "/":
            # keep denominators away from 0: b*b + 1 > 0
            out = a / (b * b + 1)
        elif kind == "pow":
            out = (a * a + 0.5) ** c
        else:
            out = {
                "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "neg": lambda: -a, "relu": lambda: a.relu(),
                "radd": lambda: c + a, "rsub": lambda: c - a,
                "rmul": lambda: c * a, "rdiv": lambda: c / (a * a + 1),
                "addc": lambda: a + c, "mulc": lambda: a * c,
            }[kind]()
        nodes.append(out)
    root = nodes[-1]
    for n in nodes[len(leaves):-1]:
        root = root + n * 0.5
    root.backward()
    return nodes, root


@pytest.mark.parametrize("seed", range(40))
def test_random_expressions_match_micrograd(seed):
    rng = random.Random(seed)
    leaves = [rng.choice([0.0, 1.0, -1.0, 0.5]) if rng.random() < 0.3
              else rng.uniform(-2, 2) for _ in range(rng.randint(1, 4))]
    program = _random_micrograd_program(rng, len(leaves), rng.randint(1, 12))
    ours, our_root = _run_micrograd_program(Value, leaves, program)
    theirs, their_root = _run_micrograd_program(MValue, leaves, program)
    # same math, but micrograd's a/b is a * b**-1: allow rounding
    scale = max(1.0, abs(their_root.data))
    assert our_root.data == pytest.approx(their_root.data, rel=1e-11, abs=1e-11 * scale)
    for mine, other in zip(ours, theirs):
        assert mine.data == pytest.approx(other.data, rel=1e-11, abs=1e-12)
        assert mine.grad == pytest.approx(other.grad, rel=1e-9, abs=1e-9)
        assert isinstance(mine.data, float) and isinstance(mine.grad, float)


def test_op_labels_and_prev_match_micrograd():
    pairs = [
        (lambda V: V(2.0) + V(3.0), "+"), (lambda V: V(2.0) * V(3.0), "*"),
        (lambda V: V(2.0) ** 2, "**2"), (lambda V: V(2.0) ** -1, "**-1"),
        (lambda V: V(2.0) ** 0.5, "**0.5"), (lambda V: V(-2.0).relu(), "ReLU"),
        (lambda V: -V(2.0), "*"), (lambda V: V(2.0) + 1, "+"),
    ]
    for build, label in pairs:
        assert build(Value)._op == build(MValue)._op == label
    x, y = Value(1.0), Value(2.0)
    z = x * y
    assert z._prev == {x, y} and x._prev == set() and x._op == ""
    assert {v.data for v in (x + 5)._prev} == {1.0, 5.0}


def test_mlp_same_seed_same_model_and_training_as_micrograd():
    data = [[0.5, -1.0], [1.5, 0.25], [-0.75, 0.5], [0.0, 2.0]]
    labels = [1.0, -1.0, 1.0, -1.0]

    def train(model, steps=3):
        losses = []
        for _ in range(steps):
            scores = [model(x) for x in data]
            loss = sum((1 + -y * s).relu() for y, s in zip(labels, scores)) * (1.0 / len(data))
            loss = loss + 1e-4 * sum(p * p for p in model.parameters())
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.data -= 0.1 * p.grad
            losses.append(loss.data)
        return losses

    random.seed(7)
    ours = MLP(2, [8, 8, 1])
    random.seed(7)
    theirs = micrograd_nn.MLP(2, [8, 8, 1])
    assert repr(ours) == repr(theirs)
    assert [p.data for p in ours.parameters()] == [p.data for p in theirs.parameters()]
    # relu and sums are the same floating-point operations in both
    assert train(ours) == pytest.approx(train(theirs), rel=1e-12)


def test_mlp_same_seed_same_weights_as_fastgrad_nn():
    from fastgrad import nn
    random.seed(3)
    ours = MLP(3, [4, 1, 2])
    random.seed(3)
    compiled = nn.MLP(3, [4, 1, 2])
    assert [p.data for p in ours.parameters()] == [p.data for p in compiled.parameters()]
    assert all(type(p) is Value for p in ours.parameters())
    out = ours([1.0, Value(-2.0), np.float64(0.5)])   # width-1 hidden layer works
    assert len(out) == 2 and all(type(o) is Value for o in out)


# ---------------------------------------------------------------------------
# API details
# ---------------------------------------------------------------------------

def test_data_and_grad_are_floats_and_repr():
    v = Value(3)
    assert type(v.data) is float and type(v.grad) is float
    assert repr(v) == "Value(data=3.0, grad=0.0)"
    assert Value(2, label="x").label == "x"


def test_numpy_scalars_and_bools_on_either_side():
    v = Value(3.0)
    for out, expected in [
        (np.int64(2) * v, 6.0), (v * np.int64(2), 6.0), (np.float64(1.5) + v, 4.5),
        (np.float32(2.0) - v, -1.0), (True + v, 4.0), (np.bool_(True) * v, 3.0),
        (v / np.int32(2), 1.5), (np.float64(2.0) ** v, 8.0),
    ]:
        assert type(out) is Value and out.data == expected


def test_backward_accumulates_like_micrograd():
    x = Value(3.0)
    y = x * x
    y.backward()
    y.backward()
    mx = MValue(3.0)
    my = mx * mx
    my.backward()
    my.backward()
    assert x.grad == mx.grad == 12.0
    assert y.grad == my.grad == 1.0


def test_deep_chain_under_default_recursion_limit():
    depth = 100_000
    assert sys.getrecursionlimit() < depth
    x = Value(0.5)
    v = x
    for _ in range(depth):
        v = v.relu()
    v.backward()
    assert x.grad == 1.0
    del v   # freed without a RecursionError or a crash


def test_hand_built_node_runs_user_backward():
    a, b = Value(2.0), Value(5.0)
    out = Value(a.data * b.data, (a, b), "custom")

    def _backward():
        a.grad += b.data * out.grad
        b.grad += a.data * out.grad
    out._backward = _backward
    (out * 2).backward()
    assert out._op == "custom" and out._prev == {a, b}
    assert (a.grad, b.grad) == (10.0, 4.0)


def test_user_attributes_and_identity_hashing():
    v, w = Value(1.0), Value(1.0)
    v.name = "v"
    assert v.name == "v"
    assert v != w and len({v, w}) == 2


@pytest.mark.compiled_only("in the pure-Python build fastgrad.engine is this engine")
def test_no_grad_has_its_own_flag():
    x = Value(2.0)
    ex = E.Value(2.0)
    with no_grad():
        assert not R.is_grad_enabled()
        assert E.is_grad_enabled()         # the compiled engine is unaffected
        y = x * x + 1
        ey = ex * ex
    assert R.is_grad_enabled()
    assert y.data == 5.0 and y._prev == set() and y._op == ""
    assert ey._prev == {ex}

    @no_grad()
    def evaluate(v):
        return v.exp()
    assert evaluate(x)._prev == set()
    assert (x.exp())._prev == {x}


def test_zero_grad():
    params = [Value(1.0), Value(2.0)]
    (params[0] * params[1]).backward()
    zero_grad(params)
    assert [p.grad for p in params] == [0.0, 0.0]
    with pytest.raises(TypeError, match="float"):
        zero_grad([1.0])


# ---------------------------------------------------------------------------
# bad input: the same exception types as the compiled engine (and as floats)
# ---------------------------------------------------------------------------

BAD = {
    "Value(str)": (lambda V: V("abc"), TypeError, "str"),
    "Value(None)": (lambda V: V(None), TypeError, "NoneType"),
    "Value(complex)": (lambda V: V(1j), TypeError, "complex"),
    "v + str": (lambda V: V(1.0) + "x", TypeError, "str"),
    "str - v": (lambda V: "x" - V(1.0), TypeError, "str"),
    "v ** str": (lambda V: V(1.0) ** "2", TypeError, "str"),
    "v / 0": (lambda V: V(1.0) / 0, ZeroDivisionError, "division"),
    "v / Value(0)": (lambda V: V(1.0) / V(0.0), ZeroDivisionError, "division"),
    "1 / Value(0)": (lambda V: 1 / V(0.0), ZeroDivisionError, "division"),
    "log(0)": (lambda V: V(0.0).log(), ValueError, "log"),
    "log(-1)": (lambda V: V(-1.0).log(), ValueError, "log"),
    "sqrt(-1)": (lambda V: V(-1.0).sqrt(), ValueError, "sqrt"),
    "(-2)**0.5": (lambda V: V(-2.0) ** 0.5, ValueError, "pow"),
    "(-2)**Value(0.5)": (lambda V: V(-2.0) ** V(0.5), ValueError, "pow"),
    "(-2)**Value": (lambda V: (-2.0) ** V(0.5), ValueError, "pow"),
    "0**-1": (lambda V: V(0.0) ** -1, ZeroDivisionError, "pow"),
    "exp(1000)": (lambda V: V(1000.0).exp(), OverflowError, "exp"),
    "10**400": (lambda V: V(10.0) ** 400, OverflowError, "pow"),
    "10**Value(400)": (lambda V: 10 ** V(400.0), OverflowError, "pow"),
    "maximum(str)": (lambda V: (E.maximum if V is E.Value else R.maximum)(V(1.0), "a"),
                     TypeError, "str"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_like_compiled_engine(name):
    build, exc, word = BAD[name]
    with pytest.raises(exc, match=word):
        build(Value)
    with pytest.raises(exc):
        build(E.Value)


def test_failed_operation_leaves_graph_untouched():
    a = Value(2.0)
    b = a * 3
    b.backward()
    with pytest.raises(ZeroDivisionError):
        b / (a - 2)
    assert (a.data, a.grad, b.data, b.grad) == (2.0, 3.0, 6.0, 1.0)


def test_backward_follows_ieee_instead_of_raising():
    # d sqrt(x)/dx at 0 is +inf (as in C and PyTorch), not a Python exception
    x = Value(0.0)
    x.sqrt().backward()
    assert x.grad == math.inf
