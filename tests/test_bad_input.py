"""Bad input: a real exception (what the same expression on Python floats
raises), a message naming the operation and the offending value or type, and
an existing graph left exactly as it was.
"""
import decimal
import fractions
import math
import subprocess
import sys

import numpy as np
import pytest

from fastgrad import Value, maximum, minimum
from fastgrad.nn import MLP


def outcome(fn):
    """('ok', None) or ('raise', exception type) of calling fn."""
    try:
        fn()
    except Exception as e:           # noqa: BLE001 - the type is the point
        return ("raise", type(e))
    return ("ok", None)


# ---------------------------------------------------------------------------
# the Python-float oracle: swap the Value for a float, same exception type
# ---------------------------------------------------------------------------

# expressions in ``v`` (3.0), ``z`` (0.0) and ``n`` (-2.0)
SAME_AS_FLOAT = [
    'v + "x"', '"x" + v', 'v - "x"', '"x" - v', 'v * "x"', 'v / "x"', '"x" / v',
    'v ** "2"', '"2" ** v', 'v + None', 'None * v', 'v + [1]', '[1] * v',
    'v + decimal.Decimal(1)',
    'pow(v, 2, 3)', 'v + 10**400', '10**400 * v', 'v @ v',
    'v / 0', 'v / 0.0', 'v / False', 'v / z', 'v / -z', '0 / z', '1 / z',
    'z / z', 'z ** -1', 'z ** -0.5', '0 ** (z - 1)', 'z ** (z - 2)',
    'v ** 1000', '10.0 ** (v * 300)',
    # these succeed on floats and must succeed on Values too
    'v / 1e-300', 'z ** 0', 'n ** 2', 'n ** -3', 'n ** 0.0',
    'v + fractions.Fraction(1, 3)', 'v * np.float32(2)', 'z ** 0.5',
]


@pytest.mark.parametrize("expr", SAME_AS_FLOAT)
def test_same_exception_as_python_floats(expr):
    env = {"decimal": decimal, "fractions": fractions, "np": np}
    want = outcome(lambda: eval(expr, dict(env, v=3.0, z=0.0, n=-2.0)))
    got = outcome(lambda: eval(expr, dict(env, v=Value(3.0), z=Value(0.0),
                                          n=Value(-2.0))))
    assert got == want, expr


@pytest.mark.parametrize("fn, flt", [
    (lambda v: v.log(), math.log),
    (lambda v: v.sqrt(), math.sqrt),
    (lambda v: v.exp(), math.exp),
])
@pytest.mark.parametrize("x", [0.0, -0.0, -1.0, -1e-300, 1e-300, 710.0, 1000.0,
                               -math.inf, math.inf, math.nan])
def test_functions_raise_what_math_raises(fn, flt, x):
    assert outcome(lambda: fn(Value(x))) == outcome(lambda: flt(x))


# ---------------------------------------------------------------------------
# the constructor
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad, tname", [
    ("abc", "str"), (None, "NoneType"), (1 + 2j, "complex"), ([1.0], "list"),
    (np.array([1.0, 2.0]), "ndarray"), (object(), "object"), (b"1", "bytes"),
    (decimal.Decimal("1.5"), "Decimal"), (Value(1.0), "Value"),
], ids=lambda x: type(x).__name__ if not isinstance(x, str) or len(x) > 8 else x)
def test_constructor_rejects_non_numbers(bad, tname):
    with pytest.raises(TypeError) as info:
        Value(bad)
    msg = str(info.value)
    assert "Value" in msg and tname in msg


def test_constructor_overflowing_int():
    with pytest.raises(OverflowError):       # as float(10**400)
        Value(10 ** 400)


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf, -0.0, 5e-324,
                               fractions.Fraction(1, 3), np.longdouble(1.5),
                               np.uint8(200), np.float16(0.5)])
def test_constructor_odd_but_real_numbers(x):
    assert Value(x).data == float(x) or (math.isnan(float(x)) and math.isnan(Value(x).data))


# ---------------------------------------------------------------------------
# messages name the operation and the offending value/type
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn, exc, pattern", [
    (lambda: Value(3.0) / 0, ZeroDivisionError, r"division by zero.*3\.0"),
    (lambda: Value(3.0) / Value(0), ZeroDivisionError, r"division by zero.*3\.0"),
    (lambda: 0 / Value(0.0), ZeroDivisionError, r"division by zero"),
    (lambda: 1.5 / Value(0.0), ZeroDivisionError, r"division by zero.*1\.5"),
    (lambda: np.float64(1) / Value(0.0), ZeroDivisionError, r"division by zero"),
    (lambda: Value(0.0) ** -1, ZeroDivisionError, r"pow.*0\.0.*negative"),
    (lambda: Value(0.0).log(), ValueError, r"log.*0\.0"),
    (lambda: Value(-2.5).log(), ValueError, r"log.*-2\.5"),
    (lambda: Value(-4.0).sqrt(), ValueError, r"sqrt.*-4\.0"),
    (lambda: Value(-2.0) ** 0.5, ValueError, r"pow.*-2\.0.*0\.5"),
    (lambda: Value(-2.0) ** Value(1.5), ValueError, r"pow.*-2\.0.*1\.5"),
    (lambda: (-8) ** Value(1 / 3), ValueError, r"pow.*-8\.0"),
    (lambda: Value(800.0).exp(), OverflowError, r"exp.*800"),
    (lambda: Value(10.0) ** 400, OverflowError, r"pow.*10\.0.*400"),
    (lambda: Value(1.0) + "x", TypeError, r"\+.*str"),
    (lambda: Value(1.0) ** "2", TypeError, r"\*\*.*str"),
    (lambda: Value(1.0) * None, TypeError, r"\*.*NoneType"),
    (lambda: maximum(Value(1.0), "a"), TypeError, r"maximum.*str"),
    (lambda: minimum(None, Value(1.0)), TypeError, r"minimum.*NoneType"),
    (lambda: Value("abc"), TypeError, r"Value.*str"),
    (lambda: Value(None), TypeError, r"Value.*NoneType"),
    (lambda: Value(1 + 2j), TypeError, r"Value.*complex"),
])
def test_error_messages(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


@pytest.mark.parametrize("fn", [lambda v: v * (1 + 2j), lambda v: (1 + 2j) + v,
                                lambda v: v ** 1j, lambda v: 1j ** v,
                                lambda v: v / complex(1, 0)])
def test_complex_operands_are_typeerror(fn):
    # floats would go complex; fastgrad Values are real (documented difference)
    with pytest.raises(TypeError, match="complex"):
        fn(Value(3.0))


def test_negative_base_fractional_power_is_valueerror_not_complex():
    # Python floats give a complex number; a real-valued engine refuses
    assert isinstance((-2.0) ** 0.5, complex)
    for fn in (lambda: Value(-2.0) ** 0.5, lambda: Value(-2.0) ** Value(0.5),
               lambda: (-2.0) ** Value(0.5), lambda: Value(-1e-3) ** -1.5):
        with pytest.raises(ValueError, match="complex"):
            fn()
    # integer powers of negative numbers are real and allowed
    assert (Value(-2.0) ** 3).data == -8.0
    assert ((-2.0) ** Value(2.0)).data == 4.0


# ---------------------------------------------------------------------------
# a failed operation leaves the existing graph untouched
# ---------------------------------------------------------------------------

def all_nodes(root):
    seen, order, stack = set(), [], [root]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        order.append(v)
        stack.extend(v._prev)
    return order


def snapshot(nodes):
    return [(n.data, n.grad, n._op, len(n._prev)) for n in nodes]


FAILING = [
    lambda g: g["a"] / 0,
    lambda g: g["b"] / g["zero"],
    lambda g: 1.0 / g["zero"],
    lambda g: g["neg"].log(),
    lambda g: g["zero"].log(),
    lambda g: g["neg"].sqrt(),
    lambda g: g["neg"] ** 0.5,
    lambda g: g["neg"] ** g["half"],
    lambda g: g["zero"] ** -2,
    lambda g: (g["a"] * 1000).exp(),
    lambda g: g["a"] ** 2000,
    lambda g: g["a"] + "x",
    lambda g: g["out"] * None,
    lambda g: g["out"] ** "2",
    lambda g: maximum(g["a"], "x"),
    lambda g: Value(1.0, (g["a"], 2.0), "+"),
    lambda g: g["out"] + 10 ** 400,
]


def build_graph():
    a, b, half = Value(2.0), Value(-3.0), Value(0.5)
    zero = (a - a) * b                       # a computed 0.0
    neg = a * b                              # a computed -6.0
    out = (a * b + b ** 2).relu() + neg * half + maximum(a, b) + zero
    out.backward()
    return dict(a=a, b=b, half=half, zero=zero, neg=neg, out=out)


@pytest.mark.parametrize("i", range(len(FAILING)))
def test_failed_operation_leaves_graph_untouched(i):
    g = build_graph()
    control = build_graph()                  # same graph, no failed operation
    nodes, control_nodes = all_nodes(g["out"]), all_nodes(control["out"])
    before = snapshot(nodes)
    assert outcome(lambda: FAILING[i](g))[0] == "raise"
    assert snapshot(nodes) == before
    assert sorted(before) == sorted(snapshot(control_nodes))
    # and the graph still works: a second backward matches the control's
    g["out"].backward()
    control["out"].backward()
    assert sorted(snapshot(nodes)) == sorted(snapshot(control_nodes))


def test_failed_forward_in_nn_leaves_parameters_untouched():
    import random
    random.seed(3)
    model = MLP(2, [3, 1])
    loss = model([1.0, -2.0])
    loss.backward()
    before = [(p.data, p.grad) for p in model.parameters()]
    for bad in ([1.0, "x"], [None, 1.0], [1.0, 1 + 2j]):
        with pytest.raises(TypeError):
            model(bad)
    # a Neuron(2) given 3 inputs pairs 2 of them, as micrograd's zip
    neuron = model.layers[0].neurons[0]
    assert neuron([1.0, 2.0, 3.0]).data == neuron([1.0, 2.0]).data
    assert [(p.data, p.grad) for p in model.parameters()] == before


def run_isolated(code):
    """Run code in a fresh interpreter (a crash must not take pytest down)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


CALL_WITH_WRONG_SELF = """
from fastgrad import Value
try:
    Value.{meth}({arg})
except TypeError as e:
    print("TypeError:", e)
"""


@pytest.mark.parametrize("meth, arg", [
    ("backward", "3.0"), ("_backward", "3.0"), ("relu", "3.0"),
    ("tanh", "None"), ("exp", "'x'"), ("sqrt", "[]"),
])
@pytest.mark.compiled_only("C method descriptors type-check self; plain Python "
                           "methods raise AttributeError")
def test_unbound_method_with_wrong_self_is_a_typeerror(meth, arg):
    rc, out = run_isolated(CALL_WITH_WRONG_SELF.format(meth=meth, arg=arg))
    assert rc == 0 and "TypeError" in out, (rc, out[-300:])


def test_dot_add_rejects_none_start():
    rc, out = run_isolated(
        "from fastgrad.engine import Value, dot_add\n"
        "try:\n"
        "    y = dot_add([Value(1.0)], [1.0], None)\n"
        "    y.backward()\n"
        "except TypeError as e:\n"
        "    print('TypeError:', e)\n")
    assert rc == 0 and "TypeError" in out, (rc, out[-300:])


def test_public_helpers_reject_non_values():
    from fastgrad.engine import dot_add, zero_grad
    with pytest.raises(TypeError):
        zero_grad([Value(1.0), 2.0])
    with pytest.raises(TypeError):
        dot_add([1.0], [1.0], Value(0.0))
    with pytest.raises(TypeError):
        dot_add([Value(1.0)], ["x"], Value(0.0))
    with pytest.raises(ValueError, match="1 weights but 2 inputs"):
        dot_add([Value(1.0)], [1.0, 2.0], Value(0.0))


def test_odd_values_propagate_like_floats_without_crashing():
    # nan and inf are not errors for float arithmetic either
    x = Value(math.nan)
    y = (x * 2 + 1).relu().tanh()
    y.backward()
    assert math.isnan(y.data)
    w = Value(math.inf)
    y = w * 0.0                      # inf * 0 is nan on floats too
    assert math.isnan(y.data)
    assert (Value(math.inf).exp()).data == math.inf      # as math.exp(inf)
    assert (Value(-math.inf).exp()).data == 0.0
