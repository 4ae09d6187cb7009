"""A plain pure-Python engine with fastgrad's API, written to be read.

``fastgrad.reference`` does what the compiled ``fastgrad.engine`` does, in
the most direct Python: it is the baseline of the benchmarks and an
independent oracle in the tests.  Nothing here is tuned for speed.

Design:
  * A ``Value`` remembers its value, its gradient, its operands
    (``_children``), the label of the operation that made it (``_op``, as
    micrograd spells it) and the name of its derivative rule (``_rule``).
  * A constant operand (``x * 2``) becomes a fresh leaf Value, as in
    micrograd; it receives a gradient that nobody reads.
  * Every derivative rule lives in one table, ``_RULES``: op name -> a small
    function from the operands' values, the node's value and its gradient to
    the operands' gradient contributions.  Nodes hold no closures.
  * ``backward()`` sorts the graph with an explicit stack (no recursion, so a
    chain 100,000 deep works) and applies the rules in reverse order.
  * Rules follow micrograd where micrograd has the op and PyTorch otherwise:
    relu and abs have gradient 0 at 0; a max/min tie splits the gradient
    evenly; sigmoid never evaluates exp of a positive number.  Mid-backward
    arithmetic follows IEEE-754 (1/0 is inf, 0/0 is nan) instead of raising,
    as C does.

>>> from fastgrad.reference import Value
>>> a, b = Value(-4.0), Value(2.0)
>>> c = a * b + b ** 3
>>> c.backward()
>>> a.grad, b.grad
(2.0, 8.0)
"""
import builtins
import contextlib
import math
import numbers
import sys
import threading
from typing import (Any, Callable, Iterable, Literal, Optional, Sequence, SupportsFloat,
                    Union, cast)

from fastgrad import _composite, _vmath_py

__all__ = [
    "Value", "maximum", "minimum", "no_grad", "is_grad_enabled",
    "set_grad_enabled", "zero_grad", "dot_add",
    "sum", "logsumexp", "softmax", "log_softmax", "cross_entropy",
    "Module", "Neuron", "Layer", "MLP",
]

# operands: a Value or a real number (operators take Any: they return
# NotImplemented for anything else, as Python expects)
_Operand = Union["Value", SupportsFloat]
_INF = math.inf
_NAN = math.nan

# ---------------------------------------------------------------------------
# graph recording switch (this module's own, independent of fastgrad.engine)
# ---------------------------------------------------------------------------

# Per thread, as in fastgrad.engine: each thread starts recording.  A thread
# with recording off keeps a _RecordingOff token in its thread-local storage;
# _off_threads counts the tokens, so that while it is 0 (the usual case) a
# new node checks one module global, not the thread-local object.
_mode = threading.local()
_off_threads = 0


class _RecordingOff:
    def __init__(self) -> None:
        global _off_threads
        _off_threads += 1

    def __del__(self) -> None:          # also when its thread ends with recording off
        global _off_threads
        _off_threads -= 1


def is_grad_enabled() -> bool:
    """Return True when operations on reference Values record a graph in the
    calling thread."""
    return getattr(_mode, "off", None) is None


def set_grad_enabled(mode: bool) -> bool:
    """Turn graph recording on or off for the calling thread; return the
    thread's previous setting."""
    old = is_grad_enabled()
    if mode and not old:
        _mode.off = None
    elif old and not mode:
        _mode.off = _RecordingOff()
    return old


class no_grad(contextlib.ContextDecorator):
    """Compute with reference Values without recording a graph.

    Inside the block (or decorated function) every operation returns a leaf
    Value.  Thread-local (other threads keep recording); the previous
    setting is restored on exit.

    >>> from fastgrad.reference import Value, no_grad
    >>> x = Value(3.0)
    >>> with no_grad():
    ...     y = x * x
    >>> y.data, y._prev
    (9.0, set())
    """

    def __init__(self) -> None:
        self._local = threading.local()     # one saved stack per thread

    def __enter__(self) -> "no_grad":
        self._local.__dict__.setdefault("saved", []).append(
            set_grad_enabled(False))
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        set_grad_enabled(self._local.saved.pop())
        return False


# ---------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------

def _number(x: object) -> Optional[float]:
    """float(x) if x is a real number (bool, int, float, numpy scalar,
    Fraction, ...), else None.  Values, str, complex, None... are not."""
    if isinstance(x, float):
        return float(x)
    if isinstance(x, Value):
        return None
    if isinstance(x, numbers.Real):          # int, bool, np.int64, Fraction...
        return float(x)
    if type(x).__module__ == "numpy" and type(x).__name__ in ("bool", "bool_"):
        return 1.0 if x else 0.0             # numpy.bool_ is not a numbers.Real
    if _is_array(x):
        arr: Any = x
        if arr.ndim == 0 and arr.dtype.kind in "biuf":
            return float(arr)                # a 0-d array holds one number
    return None


def _is_array(x: object) -> bool:
    """x is a numpy array (numpy is not imported for this: no array exists
    before it is)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def _to_float(x: object, where: str) -> float:
    value = _number(x)
    if value is None:
        if isinstance(x, Value):
            raise TypeError(
                f"{where} expects a real number, got a Value ({repr(x)[:60]}); a "
                "Value cannot hold another Value (micrograd would nest them): "
                "use the Value itself, or Value(v.data) for a new leaf")
        if _is_array(x):
            raise TypeError(
                f"{where} expects a real number, got a numpy.ndarray of shape "
                f"{x.shape}; a fastgrad Value holds one float (micrograd's would "  # type: ignore[attr-defined]
                "hold the whole array): make one Value per element, e.g. "
                "[Value(float(e)) for e in arr]")
        raise TypeError(f"{where} expects a real number, got "
                        f"{type(x).__name__} ({repr(x)[:60]})")
    return value


def _class_name(x: object) -> str:
    """The class of x by module, as a user would import it."""
    cls = type(x)
    if isinstance(x, Value):
        return "fastgrad.reference.Value"
    mod = getattr(cls, "__module__", None)
    if mod == "fastgrad._engine":
        mod = "fastgrad"           # the compiled engine's public name
    if mod in (None, "builtins"):
        return cls.__qualname__
    return f"{mod}.{cls.__qualname__}"


def _foreign_value(x: object) -> bool:
    # another engine's Value (compiled fastgrad's, micrograd's, a notebook's)
    try:
        return (not isinstance(x, Value) and type(x).__name__ == "Value"
                and hasattr(x, "_prev")
                and hasattr(x, "grad") and hasattr(x, "data"))
    except Exception:       # a hostile __getattr__: not ours to judge
        return False


def _unsupported(self: object, other: object, op: str, reflected: bool) -> Any:
    """NotImplemented for an operand the operators cannot use, except the
    mistakes a learner makes (an array on the right; another engine's
    Value), which get a TypeError that says what to do."""
    left, right = (other, self) if reflected else (self, other)
    names = f"'{_class_name(left)}' and '{_class_name(right)}'"
    if _is_array(other):
        raise TypeError(
            f"unsupported operand type(s) for {op}: {names}: a fastgrad Value "
            "holds one float, so it cannot take a whole array as micrograd's "
            f"Value(data=array) does; write array {op} value instead (numpy "
            "then gives an object array of Values, one per element) or loop "
            "over the elements")
    if _foreign_value(other):
        raise TypeError(
            f"unsupported operand type(s) for {op}: {names}: Values of two "
            "different engines cannot be combined; build both from one class "
            "(e.g. fastgrad.Value(x.data) makes a fastgrad leaf of x's value)")
    return NotImplemented


def _no_order(other: object, op: str) -> Any:
    if isinstance(other, Value) or _number(other) is not None:
        raise TypeError(
            f"'{op}' is not supported for fastgrad.Value: Values have no order "
            "(as in micrograd), so max(), min() and sorted() cannot compare "
            f"them either; compare the numbers (a.data {op} b.data, or "
            "key=lambda v: v.data) or use fastgrad.maximum(a, b) / "
            "fastgrad.minimum(a, b), which keep the graph (the max gate)")
    return NotImplemented


def _is_odd_integer(y: float) -> bool:
    return math.isfinite(y) and y.is_integer() and y % 2.0 == 1.0


def _ieee_pow(x: float, y: float) -> float:
    """x ** y as C's pow(): inf or nan where Python would raise."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return -_INF if x < 0 and _is_odd_integer(y) else _INF
    except ValueError:
        if x == 0:                    # 0 ** negative: a pole
            return math.copysign(_INF, x) if _is_odd_integer(y) else _INF
        return _NAN                   # negative ** non-integer


def _ieee_div(x: float, y: float) -> float:
    """x / y as C's division: +-inf or nan for y == 0 where Python raises."""
    if y != 0:
        return x / y
    if x == 0 or x != x:
        return _NAN
    return math.copysign(_INF, x) * math.copysign(1.0, y)


# The elementary functions are fastgrad's own (_vmath_py: the compiled
# engine's C functions, operation for operation), not the math module's, so
# this engine gives the compiled one's floats: libm's would differ in the
# last bit now and then.  _vmath_py.log is C's log() (-inf at 0, nan
# below), _vmath_py.exp C's exp() (inf where Python raises OverflowError).
_ieee_log = _vmath_py.log
_ieee_exp = _vmath_py.exp
# log(1 + e^a) as max(a, 0) + log1p(e^-|a|): exp never overflows, and a very
# negative a keeps full precision (1 + tiny would round to 1)
_softplus = _vmath_py.softplus
# 1/(1+e^-a) for a >= 0, e^a/(1+e^a) below: exp only ever sees -|a|
_sigmoid = _vmath_py.sigmoid


def _lse_max(m: float, x: float) -> float:
    return x if (x > m or x != x) else m          # nan sticks


def _logsumexp(xs: Sequence[float]) -> float:
    """m + log(sum(e^(x - m))), m the largest x, summed in order; a non-finite
    m (nan, +-inf) is the result itself (fastgrad's one float order)."""
    m = xs[0]
    for x in xs[1:]:
        m = _lse_max(m, x)
    if not math.isfinite(m):
        return m
    t = _ieee_exp(xs[0] - m)
    for x in xs[1:]:
        t = t + _ieee_exp(x - m)
    return m + _ieee_log(t)


# ---------------------------------------------------------------------------
# derivative rules: the only place where the reference's calculus lives
# ---------------------------------------------------------------------------
# Each rule gets the operands' values, the node's value `out` and its
# gradient `g`, and returns one gradient contribution per operand.

def _d_pow(a: float, b: float, out: float, g: float) -> tuple[float, float]:
    # d(a**b)/da = b a**(b-1);  d(a**b)/db = a**b ln a, taken as 0 at a = 0
    # (b >= 0), as PyTorch does
    # d(a**0)/da is 0 everywhere, also at a == 0 (PyTorch's convention)
    da = 0.0 if b == 0 else (b * _ieee_pow(a, b - 1.0)) * g
    db = 0.0 if (a == 0 and b >= 0) else out * _ieee_log(a) * g
    return da, db


def _d_max(a: float, b: float, out: float, g: float) -> tuple[float, float]:
    if a == b:
        return 0.5 * g, 0.5 * g        # a tie: half each
    if a > b:
        return g, 0.0
    if a < b:
        return 0.0, g
    return 0.0, 0.0                    # nan: no winner


def _d_min(a: float, b: float, out: float, g: float) -> tuple[float, float]:
    if a == b:
        return 0.5 * g, 0.5 * g
    if a < b:
        return g, 0.0
    if a > b:
        return 0.0, g
    return 0.0, 0.0


def _d_sum(*args: float) -> tuple[float, ...]:
    # args: the operands' values, then out and g: every operand gets g
    return (args[-1],) * (len(args) - 2)


def _d_logsumexp(*args: float) -> tuple[float, ...]:
    # d/dx_i = e^(x_i - out): softmax(x)_i
    out, g = args[-2], args[-1]
    return tuple(_ieee_exp(x - out) * g for x in args[:-2])


def _d_abs(a: float, out: float, g: float) -> tuple[float]:
    if a > 0:
        return (g,)
    if a < 0:
        return (-g,)
    return (0.0,)                      # sign(0) = 0


_RULES: dict[Optional[str], Callable[..., tuple[float, ...]]] = {
    "+": lambda a, b, out, g: (g, g),
    "-": lambda a, b, out, g: (g, -g),
    "*": lambda a, b, out, g: (b * g, a * g),
    # -a/b**2 as -(a/b)/b so that a tiny b (b*b underflowing) gives 0, not nan
    "/": lambda a, b, out, g: (_ieee_div(g, b), -g * _ieee_div(out, b)),
    "**": _d_pow,
    # a ** c with a constant exponent: the exponent leaf gets nothing
    "**c": lambda a, c, out, g: (0.0 if c == 0 else (c * _ieee_pow(a, c - 1.0)) * g, 0.0),
    "max": _d_max,
    "min": _d_min,
    "ReLU": lambda a, out, g: (g if out > 0 else 0.0,),     # 0 at the kink
    "tanh": lambda a, out, g: ((1.0 - out * out) * g,),
    "exp": lambda a, out, g: (out * g,),
    "log": lambda a, out, g: (_ieee_div(g, a),),
    "sigmoid": lambda a, out, g: (out * (1.0 - out) * g,),
    "abs": _d_abs,
    "sqrt": lambda a, out, g: (_ieee_div(g, 2.0 * out),),
    "log1p": lambda a, out, g: (_ieee_div(g, 1.0 + a),),
    "softplus": lambda a, out, g: (_sigmoid(a) * g,),
    # softmax's output e^(a - b): a = x_i, b = logsumexp(x)
    "softmax": lambda a, b, out, g: (out * g, -(out * g)),
    "sum": _d_sum,
    "logsumexp": _d_logsumexp,
}


# ---------------------------------------------------------------------------
# domain checks: what the same expression on Python floats raises
# ---------------------------------------------------------------------------

def _check_div(num: float, den: float) -> None:
    if den == 0:
        raise ZeroDivisionError(f"division by zero: {num!r} / {den!r}")


def _check_pow(base: float, exponent: float) -> None:
    """Raise what Python's float ** raises for these operands.

    The one rule of both engines (the compiled one is ``_check_pow`` in
    _engine.pyx, step for step the same): an infinite or nan operand never
    raises (C99 pow gives Python's result: ``(-inf) ** 0.5`` is inf,
    ``0.0 ** -inf`` is inf); else 0 to a negative power is a
    ZeroDivisionError; a negative base to a non-integer power is complex in
    Python -- an OverflowError when its magnitude overflows, as Python
    raises, else a ValueError (Values are real); a result that overflows is
    an OverflowError.
    """
    if not (math.isfinite(base) and math.isfinite(exponent)):
        return
    if base == 0 and exponent < 0:
        raise ZeroDivisionError(
            f"pow: 0.0 cannot be raised to a negative power ({exponent!r})")
    if base < 0 and not exponent.is_integer():
        if math.isinf(_ieee_pow(-base, exponent)):
            raise OverflowError(f"pow: {base!r} ** {exponent!r} overflows a double")
        raise ValueError(
            f"pow: negative base {base!r} raised to the non-integer power "
            f"{exponent!r} is complex; Values are real")
    if math.isinf(_ieee_pow(base, exponent)):
        raise OverflowError(f"pow: {base!r} ** {exponent!r} overflows a double")


def _exponent_label(c: float, written_as_float: bool) -> str:
    # micrograd's f'**{other}': '**2' for x**2, '**2.0' for x**2.0
    if not written_as_float and c.is_integer() and -1e15 < c < 1e15:
        return f"**{int(c)}"
    return f"**{c!r}"


# ---------------------------------------------------------------------------
# the Value
# ---------------------------------------------------------------------------

class _Fields:
    """A reference Value's fields (slots) and its instance dict (user
    attributes).  ``Value`` derives from it so that its own ``__dict__``
    attribute can be micrograd's view (fastgrad._vars) while attribute
    access keeps using the real dict."""

    __slots__ = ("data", "grad", "_children", "_op", "_rule", "__dict__")


_real_dict: Callable[[Any], dict[str, Any]] = _Fields.__dict__["__dict__"].__get__


def _own_dict(value: Any, create: bool = True) -> dict[str, Any]:
    """A reference Value's real instance dict (what ValueVars reads)."""
    return _real_dict(value)

_FIELDS = ("data", "grad", "_children", "_op", "_rule")
_NO_GRAD = "no grad"      # _rule of an operation's result with recording off


class Value(_Fields):
    """A scalar in a computational graph (pure-Python reference version).

    Same constructor, operators and methods as ``fastgrad.Value``.

    Parameters
    ----------
    data : real number
        The value; stored as a float.
    _children : tuple of Value, optional
        Operands of a node built by hand (micrograd style); its backward pass
        is whatever callable you assign to ``node._backward``.
    _op : str, optional
        Label of the operation that made a hand-built node.
    label : str, optional
        A name for graph drawings.

    Attributes
    ----------
    data : float
        The value.
    grad : float
        d(output)/d(this Value) after ``output.backward()``; 0.0 before.
    label : str
        The name given for graph drawings.

    Examples
    --------
    >>> from fastgrad.reference import Value
    >>> x = Value(3.0)
    >>> y = x * x + 2 * x
    >>> y.backward()
    >>> y.data, x.grad
    (15.0, 8.0)
    """

    # the fields are _Fields' slots; user attributes (label, a hand-built
    # node's _backward) go to the instance dict
    __slots__ = ()

    #: a name shown by draw_dot; set on a node, it lives in the node's dict
    label: str = ""

    data: float
    grad: float
    _children: tuple["Value", ...]
    _op: str
    _rule: Optional[str]
    _backward: Callable[[], None]

    def __init__(self, data: SupportsFloat, _children: Iterable["Value"] = (), _op: str = "",
                 label: str = "") -> None:
        if not isinstance(_op, str):
            raise TypeError(f"Value(): _op must be a str, got {type(_op).__name__}")
        children = tuple(_children)
        for child in children:
            if not isinstance(child, Value):
                raise TypeError("Value(): _children must be Values, got "
                                f"{type(child).__name__}")
        self.data = _to_float(data, "Value()")
        self.grad = 0.0
        self._children = children
        self._op = _op
        self._rule = None       # hand-built nodes have no rule of ours
        if label:
            self.label = label

    @classmethod
    def _node(cls, data: float, children: tuple["Value", ...], op: str,
              rule: Optional[str]) -> "Value":
        """A node made by an operation (a leaf when recording is off)."""
        out = cls.__new__(cls)
        out.data = data
        out.grad = 0.0
        if not _off_threads or is_grad_enabled():
            out._children, out._op, out._rule = children, op, rule
        else:
            out._children, out._op, out._rule = (), "", _NO_GRAD
        return out

    @property
    def _prev(self) -> set["Value"]:
        """The set of operand Values (micrograd's ``_prev``)."""
        if self._rule == "**c":
            # micrograd keeps the exponent of x ** k as a plain number
            return {self._children[0]}
        return set(self._children)

    @_prev.setter
    def _prev(self, children: Iterable["Value"]) -> None:
        # a hand-built node (or a leaf) may be relinked, as in micrograd; a
        # node made by an operation keeps the operands its rule needs
        kids = tuple(children)
        if self._rule not in (None, _NO_GRAD):
            if set(kids) == self._prev:
                return
            raise TypeError(
                f"cannot replace _prev of a node made by an operator (its "
                f"{self._op!r} op needs its operands); build a node by hand, "
                "Value(data, children, op) with your own _backward, or use "
                "Value(v.data) for a leaf cut from the graph")
        for k in kids:
            if not isinstance(k, Value):
                raise TypeError(f"Value._prev must hold Values, got {type(k).__name__}")
        if self in _topological_order_many(kids):
            raise ValueError("Value._prev: this Value is an operand (directly or "
                             "not) of one of the given children; linking them "
                             "would make a cycle")
        self._children = kids
        self._rule = None

    @property
    def __dict__(self) -> Any:
        """micrograd's attributes (data, grad, _backward, _prev, _op) and the
        node's own (label, user data), as a live mapping (fastgrad._vars)."""
        from fastgrad._vars import ValueVars
        return ValueVars(self, _own_dict)

    @__dict__.setter
    def __dict__(self, mapping: Any) -> None:
        from fastgrad._vars import ValueVars
        ValueVars(self, _own_dict).replace_all(mapping)

    def __dir__(self) -> list[str]:
        # object.__dir__ skips __dict__ (not a dict here): add user attributes
        return list(object.__dir__(self)) + [k for k in _own_dict(self)
                                             if k != "_custom_op"]

    def __getstate__(self) -> tuple[Optional[dict[str, Any]], dict[str, Any]]:
        # what pickle's default gives a slotted object with a dict (so older
        # pickles still load), read from the real dict, not the view
        own = _own_dict(self)
        fields = {k: getattr(self, k) for k in _FIELDS if hasattr(self, k)}
        return (dict(own) if own else None), fields

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 2
                and isinstance(state[1], dict)
                and (state[0] is None or isinstance(state[0], dict))):
            raise TypeError("cannot unpickle a reference Value: malformed state "
                            f"{repr(state)[:60]}")
        own, fields = state
        for k, v in fields.items():
            if k == "label":          # older pickles: label was a field
                if v:
                    _own_dict(self)["label"] = v
            elif k in _FIELDS:
                object.__setattr__(self, k, v)
        if own:
            _own_dict(self).update(own)

    def __repr__(self) -> str:
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    # -- operands ------------------------------------------------------------

    @staticmethod
    def _operand(other: object) -> Optional["Value"]:
        """other as a Value (a constant becomes a fresh leaf), or None."""
        if isinstance(other, Value):
            return other
        c = _number(other)
        return None if c is None else Value(c)

    def _binary(self, other: "Value", op: str) -> "Value":
        a, b = self.data, other.data
        if op == "+":
            out = a + b
        elif op == "-":
            out = a - b
        elif op == "*":
            out = a * b
        elif op == "/":
            _check_div(a, b)
            out = a / b
        else:  # "**"
            _check_pow(a, b)
            out = _ieee_pow(a, b)
        return Value._node(out, (self, other), op, op)

    def _unary(self, out: float, op: str) -> "Value":
        return Value._node(out, (self,), op, op)

    # -- arithmetic ------------------------------------------------------------

    def __add__(self, other: Any) -> "Value":
        b = self._operand(other)
        return _unsupported(self, other, "+", False) if b is None else self._binary(b, "+")

    def __radd__(self, other: Any) -> "Value":              # other + self
        b = self._operand(other)
        return _unsupported(self, other, "+", True) if b is None else self._binary(b, "+")

    def __sub__(self, other: Any) -> "Value":
        if isinstance(other, Value):
            return self._binary(other, "-")
        c = _number(other)
        # a - c is a + (-c), as micrograd builds it
        return (_unsupported(self, other, "-", False) if c is None
                else self._binary(Value(-c), "+"))

    def __rsub__(self, other: Any) -> "Value":              # other - self
        a = self._operand(other)
        return _unsupported(self, other, "-", True) if a is None else a._binary(self, "-")

    def __mul__(self, other: Any) -> "Value":
        b = self._operand(other)
        return _unsupported(self, other, "*", False) if b is None else self._binary(b, "*")

    def __rmul__(self, other: Any) -> "Value":              # other * self
        b = self._operand(other)
        return _unsupported(self, other, "*", True) if b is None else self._binary(b, "*")

    def __truediv__(self, other: Any) -> "Value":
        b = self._operand(other)
        return _unsupported(self, other, "/", False) if b is None else self._binary(b, "/")

    def __rtruediv__(self, other: Any) -> "Value":          # other / self
        a = self._operand(other)
        return _unsupported(self, other, "/", True) if a is None else a._binary(self, "/")

    def __pow__(self, other: Any, mod: None = None) -> "Value":
        if mod is not None:
            return NotImplemented
        if isinstance(other, Value):
            return self._binary(other, "**")
        c = _number(other)
        if c is None:
            out: Value = _unsupported(self, other, "**", False)
            return out
        _check_pow(self.data, c)
        return Value._node(_ieee_pow(self.data, c), (self, Value(c)),
                           _exponent_label(c, isinstance(other, float)), "**c")

    def __rpow__(self, other: Any, mod: None = None) -> "Value":    # other ** self
        if mod is not None:
            return NotImplemented
        a = self._operand(other)
        return _unsupported(self, other, "**", True) if a is None else a._binary(self, "**")

    def __neg__(self) -> "Value":                      # self * -1, as micrograd
        return self._binary(Value(-1.0), "*")

    def __abs__(self) -> "Value":
        return self.abs()

    # -- comparisons: none, as in micrograd (see fastgrad.Value) -------------

    def __lt__(self, other: Any) -> Any:
        return _no_order(other, "<")

    def __le__(self, other: Any) -> Any:
        return _no_order(other, "<=")

    def __gt__(self, other: Any) -> Any:
        return _no_order(other, ">")

    def __ge__(self, other: Any) -> Any:
        return _no_order(other, ">=")

    # -- functions -------------------------------------------------------------

    def relu(self) -> "Value":
        """max(0, x); gradient 0 at 0."""
        x = self.data
        return self._unary(0.0 if x < 0 else x, "ReLU")

    def tanh(self) -> "Value":
        """Hyperbolic tangent."""
        return self._unary(_vmath_py.tanh(self.data), "tanh")

    def exp(self) -> "Value":
        """e**x; OverflowError when the result overflows a double."""
        x = self.data
        out = _vmath_py.exp(x)
        if out == _INF and x != _INF:
            raise OverflowError(f"exp: exp({x!r}) overflows a double")
        return self._unary(out, "exp")

    def log(self) -> "Value":
        """Natural logarithm; ValueError for x <= 0."""
        x = self.data
        if x <= 0:
            raise ValueError(f"log: math domain error, log({x!r}) is undefined "
                             "for a non-positive number")
        return self._unary(_vmath_py.log(x), "log")

    def sigmoid(self) -> "Value":
        """1 / (1 + e**-x), without overflow for any x."""
        return self._unary(_sigmoid(self.data), "sigmoid")

    def abs(self) -> "Value":
        """The absolute value ``|x|``; gradient 0 at 0."""
        return self._unary(abs(self.data), "abs")

    def sqrt(self) -> "Value":
        """Square root; ValueError for x < 0."""
        x = self.data
        if x < 0:
            raise ValueError(f"sqrt: math domain error, sqrt({x!r}) of a "
                             "negative number")
        return self._unary(math.sqrt(x), "sqrt")

    def log1p(self) -> "Value":
        """log(1 + x); ValueError for x <= -1."""
        x = self.data
        if x <= -1:
            raise ValueError(f"log1p: math domain error, log1p({x!r}) is "
                             "undefined for x <= -1")
        return self._unary(_vmath_py.log1p(x), "log1p")

    def softplus(self) -> "Value":
        """log(1 + e**x), without overflow for any x."""
        return self._unary(_softplus(self.data), "softplus")

    # -- reverse mode ------------------------------------------------------------

    def _backward(self) -> None:  # type: ignore[no-redef]  # assignable (see above)
        """Add this node's contribution to its operands' gradients."""
        rule = _RULES.get(self._rule)
        if rule is None:                 # a leaf, or hand-built without _backward
            return
        children = self._children
        contributions = rule(*[c.data for c in children], self.data, self.grad)
        for child, g in zip(children, contributions):
            child.grad += g

    def backward(self) -> None:
        """Set this node's grad to 1 and accumulate d(self)/d(node) into the
        grad of every node it depends on (nothing is zeroed)."""
        if self._rule == _NO_GRAD:
            raise RuntimeError(
                "backward(): this Value was computed with graph recording off "
                "(inside no_grad() or set_grad_enabled(False)), so it has no "
                "graph and nothing would receive a gradient; compute it with "
                "recording on to differentiate it")
        order = _topological_order(self)
        self.grad = 1.0
        for node in reversed(order):
            node._backward()


def _topological_order_many(roots: Iterable[Value]) -> set[Value]:
    """Every node under any of roots (iteratively)."""
    seen: set[Value] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node._children)
    return seen


def _topological_order(root: Value) -> list[Value]:
    """Nodes under root, operands before the nodes that use them.

    Depth-first with an explicit stack: an entry (node, False) asks to visit
    node's operands; (node, True) means they are done and node comes next.
    """
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        node, operands_done = stack.pop()
        if operands_done:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for child in node._children:
            if child not in visited:
                stack.append((child, False))
    return order


# ---------------------------------------------------------------------------
# functions
# ---------------------------------------------------------------------------

def _as_value(x: _Operand, where: str) -> Value:
    return x if isinstance(x, Value) else Value(_to_float(x, where))


def _extremum(a: _Operand, b: _Operand, op: str, where: str) -> Value:
    a, b = _as_value(a, where), _as_value(b, where)
    x, y = a.data, b.data
    if x != x or y != y:
        out = x + y                      # nan in, nan out
    elif op == "max":
        out = x if x >= y else y         # a tie returns a
    else:
        out = x if x <= y else y
    return Value._node(out, (a, b), op, op)


def maximum(a: _Operand, b: _Operand) -> Value:
    """max(a, b) as a graph node; a tie splits the gradient evenly.

    >>> from fastgrad.reference import Value, maximum
    >>> z, w = Value(2.0), Value(-1.0)
    >>> q = maximum(z, w); q.backward()
    >>> q.data, z.grad, w.grad
    (2.0, 1.0, 0.0)
    """
    return _extremum(a, b, "max", "maximum()")


def minimum(a: _Operand, b: _Operand) -> Value:
    """min(a, b) as a graph node; a tie splits the gradient evenly.

    >>> from fastgrad.reference import Value, minimum
    >>> q = minimum(Value(2.0), 5); q.data
    2.0
    """
    return _extremum(a, b, "min", "minimum()")


def dot_add(w: Sequence[Value], x: Iterable[_Operand], start: Value,
            relu: bool = False) -> Value:
    """start + w[0]*x[0] + w[1]*x[1] + ... (then relu), one node at a time.

    >>> from fastgrad.reference import Value, dot_add
    >>> dot_add([Value(2.0), Value(3.0)], [1.0, -1.0], Value(0.5)).data
    -0.5
    """
    w, x = list(w), list(x)
    for wi in w:
        if not isinstance(wi, Value):
            raise TypeError(f"dot_add: weights must be Values, got {type(wi).__name__}")
    if not isinstance(start, Value):
        raise TypeError(f"dot_add: start must be a Value, got {type(start).__name__}")
    if len(x) != len(w):
        raise ValueError(f"dot_add: {len(w)} weights but {len(x)} inputs (w and "
                         "x must have the same length)")
    for xi in x:
        if not isinstance(xi, Value) and _number(xi) is None:
            raise TypeError("dot_add: inputs must be Values or real numbers, "
                            f"got {type(xi).__name__}")
    act = builtins.sum((wi * xi for wi, xi in zip(w, x)), start)
    return act.relu() if relu else act


def _operands(values: Iterable[_Operand], where: str) -> tuple[Value, ...]:
    """values as a non-empty tuple of Values (numbers become leaves)."""
    if isinstance(values, Value):
        raise TypeError(f"{where} expects a sequence of Values, got a single "
                        "Value (wrap it in a list)")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{where} expects a sequence of Values or numbers, got "
                        f"{type(values).__name__}") from None
    if not items:
        raise ValueError(f"{where} of an empty sequence: it needs at least one "
                         "Value")
    out = []
    for i, x in enumerate(items):
        if not isinstance(x, Value):
            c = _number(x)
            if c is None:
                raise TypeError(f"{where}: item {i} must be a Value or a real "
                                f"number, got {type(x).__name__} ({repr(x)[:60]})")
            x = Value(c)
        out.append(x)
    return tuple(out)


def sum(values: Iterable[_Operand]) -> Value:   # noqa: A001 (fastgrad.sum)
    """((0 + x_0) + x_1) + ... as one node: Python's sum, one node.

    >>> from fastgrad.reference import Value, sum
    >>> sum([Value(1.0), Value(2.0), 0.5]).data
    3.5
    """
    xs = _operands(values, "sum()")
    total = xs[0].data + 0.0
    for x in xs[1:]:
        total = total + x.data
    return Value._node(total, xs, "sum", "sum")


def logsumexp(values: Iterable[_Operand]) -> Value:
    """log(sum(e^x_i)) as one node, computed as m + log(sum(e^(x_i - m))).

    >>> from fastgrad.reference import Value, logsumexp
    >>> round(logsumexp([Value(0.0), Value(0.0)]).data, 6)
    0.693147
    """
    xs = _operands(values, "logsumexp()")
    return Value._node(_logsumexp([x.data for x in xs]), xs, "logsumexp",
                       "logsumexp")


def softmax(values: Iterable[_Operand]) -> list[Value]:
    """[e^(x_i - logsumexp(x))]: one logsumexp node, one node per output.

    >>> from fastgrad.reference import Value, softmax
    >>> [round(p.data, 12) for p in softmax([Value(1.0), Value(1.0)])]
    [0.5, 0.5]
    """
    xs = _operands(values, "softmax()")
    lse = Value._node(_logsumexp([x.data for x in xs]), xs, "logsumexp",
                      "logsumexp")
    return [Value._node(_ieee_exp(x.data - lse.data), (x, lse), "softmax", "softmax")
            for x in xs]


def log_softmax(values: Iterable[_Operand]) -> list[Value]:
    """[x_i - logsumexp(x)].

    >>> from fastgrad.reference import Value, log_softmax
    >>> [round(v.data, 6) for v in log_softmax([Value(0.0), Value(0.0)])]
    [-0.693147, -0.693147]
    """
    return _composite.log_softmax(list(values), logsumexp)


def cross_entropy(logits: Iterable[_Operand],
                  target: Union[int, Sequence[_Operand]]) -> Value:
    """-log(softmax(logits)[target]); ``target`` a class index or a sequence
    of class probabilities (see ``fastgrad.cross_entropy``).

    >>> from fastgrad.reference import Value, cross_entropy
    >>> round(cross_entropy([Value(0.0), Value(0.0)], 1).data, 6)
    0.693147
    """
    return cast(Value, _composite.cross_entropy(list(logits), target, logsumexp, sum))


def zero_grad(params: Iterable[Value]) -> None:
    """Set ``.grad = 0.0`` on every reference Value in ``params``.

    >>> from fastgrad.reference import Value, zero_grad
    >>> v = Value(1.0); v.grad = 3.0; zero_grad([v]); v.grad
    0.0
    """
    for p in params:
        if not isinstance(p, Value):
            raise TypeError("zero_grad: expected reference Values, got "
                            f"{type(p).__name__}")
        p.grad = 0.0


# ---------------------------------------------------------------------------
# nn: fastgrad.nn's classes on reference Values
# ---------------------------------------------------------------------------
# Same constructors, so random.seed(s) gives the same weights as fastgrad.nn
# and micrograd.nn; only the engine and the forward pass differ.
#
# One direction: this module imports fastgrad.nn, never the reverse.  In the
# pure-Python build (fastgrad._backend) fastgrad.nn's own classes build on
# this module's engine, defined above: it is bound into them here.
from fastgrad import nn as _nn  # noqa: E402
from fastgrad._backend import COMPILED as _COMPILED  # noqa: E402

if not _COMPILED:
    _nn._use_engine(Value, dot_add, zero_grad)


class Module(_nn.Module):
    """Base class: parameters() and zero_grad() on reference Values."""

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to 0."""
        zero_grad(self.parameters())  # type: ignore[arg-type]  # reference Values


class Neuron(Module, _nn.Neuron):
    """relu(w . x + b) (or linear) on reference Values, built as micrograd does.

    >>> import random; random.seed(0)
    >>> from fastgrad.reference import Neuron
    >>> Neuron(3)
    ReLUNeuron(3)
    """

    _Value = Value

    def _forward(self, w: Any, x: Any) -> Any:
        act = builtins.sum((wi * xi for wi, xi in zip(w, x)), self.b)
        return act.relu() if self.nonlin else act


class Layer(Module, _nn.Layer):
    """``nout`` reference neurons reading the same inputs."""

    _Neuron = Neuron


class MLP(Module, _nn.MLP):
    """A multi-layer perceptron on reference Values.

    >>> import random; random.seed(1337)
    >>> from fastgrad.reference import MLP
    >>> len(MLP(2, [16, 16, 1]).parameters())
    337
    """

    _Layer = Layer
