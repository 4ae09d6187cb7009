"""Numerical gradients and gradient checking (public face of ``fastgrad._numgrad``).

``num_grad`` is the lecture's finite-difference gradient with the loop in C;
``gradcheck`` compares ``backward()`` against it, the way cs231n and
``torch.autograd.gradcheck`` teach.
"""
import math
import numbers
from typing import Any, Callable, Optional, Protocol, Sequence, TypeVar, Union, cast, overload

import numpy as np
import numpy.typing as npt

from fastgrad._backend import COMPILED
from fastgrad.engine import Value, set_grad_enabled

if COMPILED:
    from fastgrad import _numgrad
else:  # the pure-Python build: the same loops in Python
    from fastgrad import _numgrad_py as _numgrad  # type: ignore[no-redef]

__all__ = ["num_grad", "gradcheck", "GradcheckError"]

_F64 = npt.NDArray[np.float64]

# num_grad calls f with the very x it was given: typing f's argument as x's
# type lets a checker infer a lambda's parameter (``lambda x: x[0] ** 2``)
_X = TypeVar("_X", bound=Union[npt.NDArray[Any], Sequence[Any]])


class _OfValues(Protocol):
    # a function of any number of Values (gradcheck calls f(*inputs))
    def __call__(self, *inputs: Value) -> Any: ...

_METHODS = ("central", "forward")
_MAX_ROWS = 10      # rows of the mismatch table in a GradcheckError


class GradcheckError(RuntimeError):
    """Raised by :func:`gradcheck` when analytic and numerical gradients disagree.

    The message is a table of the worst inputs.  The full comparison is kept
    on the exception as float64 arrays, one entry per input: ``analytic``,
    ``numeric``, ``rel_error`` and the boolean ``mismatch``.
    """

    def __init__(self, message: str, analytic: Optional[_F64] = None,
                 numeric: Optional[_F64] = None, rel_error: Optional[_F64] = None,
                 mismatch: Optional[npt.NDArray[np.bool_]] = None) -> None:
        super().__init__(message)
        self.analytic = analytic
        self.numeric = numeric
        self.rel_error = rel_error
        self.mismatch = mismatch


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------

def _check_callable(f: object, where: str) -> None:
    if not callable(f):
        raise TypeError(f"{where}: f must be callable, got {type(f).__name__}")


def _check_step(h: float, name: str, where: str) -> float:
    if isinstance(h, (bool, np.bool_)) or not isinstance(h, numbers.Real):
        raise TypeError(f"{where}: {name} must be a positive real number, got "
                        f"{type(h).__name__} ({h!r:.40})")
    value = float(h)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{where}: {name} must be positive and finite, got {h!r}")
    return value


def _check_tolerance(t: float, name: str, where: str) -> float:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number >= 0, got "
                        f"{type(t).__name__} ({t!r:.40})")
    value = float(t)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{where}: {name} must be finite and >= 0, got {t!r}")
    return value


def _check_method(method: str, where: str) -> bool:
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; expected 'central' "
                         "or 'forward'")
    return method == "central"


def _check_array(x: npt.NDArray[Any], where: str) -> None:
    """Reject what the loop cannot perturb in place (x is an ndarray)."""
    kind = x.dtype.kind
    if kind == "b":
        raise TypeError(f"{where}: x is a bool array; finite differences need a "
                        "float32 or float64 array")
    if kind in "iu":
        raise TypeError(f"{where}: x is an integer array ({x.dtype}); finite "
                        "differences need a float array: convert it once with "
                        "x = x.astype(float) and pass that array")
    if kind == "O":
        raise TypeError(f"{where}: x is an object array; to finite-difference "
                        "Values pass them as a list (num_grad(f, list(x)))")
    if kind != "f" or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"{where}: x must be a float32 or float64 array, got "
                        f"dtype {x.dtype}")
    if not x.dtype.isnative:
        raise TypeError(f"{where}: x has non-native byte order ({x.dtype.str}); "
                        "use x.astype(x.dtype.newbyteorder('='))")
    if not x.flags.writeable:
        raise ValueError(f"{where}: x is read-only; num_grad perturbs x in place, "
                         "pass a writable array (e.g. x.copy())")


def _is_value(v: object) -> bool:
    """A fastgrad Value, or a Value of another engine (micrograd, reference)."""
    if isinstance(v, Value):
        return True
    return (isinstance(getattr(v, "data", None), numbers.Real)
            and hasattr(v, "grad") and callable(getattr(v, "backward", None)))


def _value_items(x: Any, where: str, name: str = "x") -> tuple[Any, ...]:
    """x as a tuple of Values, or TypeError naming what x is."""
    what = ("a sequence of Values" if where == "gradcheck"
            else "a numpy float array or a sequence of Values")
    if isinstance(x, (str, bytes, dict, set, frozenset, np.ndarray)) or not (
            hasattr(x, "__len__") and hasattr(x, "__getitem__")):
        hint = (" (wrap a single Value in a list: [v])" if _is_value(x) else "")
        if isinstance(x, np.ndarray):
            hint = " (an array is accepted only when f is a compiled program)"
        raise TypeError(f"{where}: {name} must be {what}, got "
                        f"{type(x).__name__}{hint}")
    items = tuple(x)
    for i, v in enumerate(items):
        if not _is_value(v):
            hint = ""
            if isinstance(v, numbers.Real) and where == "num_grad":
                hint = ("; for numbers use a float array, np.array(x, dtype=float), "
                        "and pass that array to f")
            raise TypeError(f"{where}: {name} must be {what}, but {name}[{i}] is "
                            f"{type(v).__name__}{hint}")
    return items


def _evaluator(f: object, x: object, where: str) -> Optional[_numgrad.Evaluator]:
    """The C evaluator of a compiled program f bound to x, or None."""
    make = getattr(f, "_fd_evaluator", None)
    if make is None:
        return None
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: a compiled program is differentiated with respect "
                        f"to a float64 array of its inputs, got {type(x).__name__}")
    _check_array(x, where)
    ev = make(x)
    if not isinstance(ev, _numgrad.Evaluator):
        raise TypeError(f"{where}: {type(f).__name__}._fd_evaluator returned "
                        f"{type(ev).__name__}, not a fastgrad._numgrad.Evaluator")
    return ev


# ---------------------------------------------------------------------------
# num_grad
# ---------------------------------------------------------------------------

def num_grad(f: Callable[[_X], object], x: _X,
             h: float = 1e-5, method: str = "central") -> _F64:
    """Numerical gradient of a scalar function by finite differences.

    The lecture's loop, run in C: each element of ``x`` is perturbed in place
    by ``h``, ``f(x)`` is called, and the element is restored.  ``f`` receives
    your own ``x`` object (no copy), and ``x`` is bit-for-bit unchanged
    afterwards, also when ``f`` raises.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar: a Python or numpy number, a size-1 array or
        a ``Value``.  A compiled program (an object with an ``_fd_evaluator``
        method, see ``fastgrad._numgrad.Evaluator``) is evaluated in C: the
        loop then never enters Python.
    x : numpy.ndarray or sequence of Value
        A writable float32/float64 array of any shape (0-d, n-d, strided or
        Fortran-ordered views included), or a list/tuple of Values whose
        ``.data`` is perturbed.
    h : float, default 1e-5
        The step (> 0).  With float32 arrays, x+h is rounded to float32.
    method : {"central", "forward"}, default "central"
        ``"central"``: ``(f(x+h) - f(x-h)) / ((x+h) - (x-h))``, error O(h**2)
        (the denominator is the step actually stored, 2h up to rounding).
        ``"forward"``: the lecture's ``(f(x+h) - f(x)) / h`` with ``f(x)``
        evaluated once first, error O(h); bit-identical to the lecture's
        ``np.nditer`` version.

    Returns
    -------
    numpy.ndarray
        float64, shaped like ``x`` (1-d of length ``len(x)`` for Values).

    Raises
    ------
    TypeError
        ``x`` is an integer/bool/object array or neither an array nor a
        sequence of Values; ``f`` returns something that is not a real scalar.
    ValueError
        ``x`` is read-only; ``h`` is not positive and finite; unknown
        ``method``; ``f`` returns an array of more than one element; ``h`` is
        too small to change some element of ``x``; ``f`` calls ``x.resize()``
        (numpy refuses it while the loop holds ``x``; ``x`` is restored).
    RuntimeError
        ``f`` reallocated or reshaped ``x`` some other way (``x`` cannot be
        restored then).
    KeyboardInterrupt
        Ctrl-C, checked every 256 calls of ``f`` (every few milliseconds of
        work for a compiled program); ``x`` is restored.

    Threads: a call of ``num_grad`` on a compiled program has its own scratch
    space; several threads may finite-difference one program at once (each
    with its own ``x``).

    Notes
    -----
    The perturbed values are rounded as numpy rounds them: for float32 ``x``,
    ``x+h`` is a float32, so ``"forward"`` (which divides by ``h``, like the
    lecture) is off by the relative rounding of the step, about 1e-3 for
    ``x ~ 1`` and ``h = 1e-5``; ``"central"`` divides by the stored step and
    does not suffer from it.

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad import num_grad
    >>> x = np.array([3.0, -4.0])
    >>> g = num_grad(lambda x: x[0] * x[1], x)      # the lecture's f(x, y) = xy
    >>> np.allclose(g, [-4.0, 3.0])
    True
    """
    where = "num_grad"
    _check_callable(f, where)
    h = _check_step(h, "h", where)
    central = _check_method(method, where)
    ev = _evaluator(f, x, where)
    if isinstance(x, np.ndarray):
        _check_array(x, where)
        return _numgrad.fd_array(f, x, h, central, ev, where)
    return _numgrad.fd_values(f, x, None, _value_items(x, where), h, central, where)


# ---------------------------------------------------------------------------
# gradcheck
# ---------------------------------------------------------------------------

def _graph(root: Any) -> list[Any]:
    """Every Value the backward pass from root can touch."""
    if isinstance(root, Value):
        return _numgrad.graph_nodes(root)
    seen: set[int] = set()
    nodes: list[Any] = []
    stack = [root]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        nodes.append(v)
        stack.extend(getattr(v, "_prev", ()))
    return nodes


def _analytic(f: Callable[..., Any], items: tuple[Any, ...], where: str) -> _F64:
    """d f(*items) / d item.data from backward(), leaving every .grad as found."""
    out = f(*items)
    if not _is_value(out):
        raise TypeError(f"{where}: f must return a Value (analytic gradients come "
                        f"from its backward()), got {type(out).__name__}")
    touched = list(items) + _graph(out)
    saved = [v.grad for v in touched]      # all read before any is zeroed
    try:
        for v in touched:
            v.grad = 0.0
        out.backward()
        return np.array([float(v.grad) for v in items], dtype=np.float64)
    finally:
        for v, g in zip(touched, saved):
            v.grad = g


def _compare(analytic: _F64, numeric: _F64, values: _F64, labels: list[str],
             eps: float, atol: float, rtol: float, where: str,
             ) -> tuple[npt.NDArray[np.bool_], _F64, Optional[str]]:
    """Mismatch mask, relative errors and (on mismatch) the report text."""
    diff = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    mismatch = ~(diff <= tol)                       # nan counts as a mismatch
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale == 0.0, 0.0, diff / np.where(scale == 0.0, 1.0, scale))
    rel = np.where(np.isnan(diff), np.nan, rel)
    if not mismatch.any():
        return mismatch, rel, None
    bad = np.flatnonzero(mismatch)
    key = np.where(np.isnan(rel[bad]), np.inf, rel[bad])
    worst = bad[np.argsort(-key, kind="stable")]
    finite_rel = rel[~np.isnan(rel)]
    lines = [
        f"{where}: {bad.size} of {analytic.size} gradient entries mismatch "
        f"(|analytic - numeric| > atol + rtol*|numeric| with atol={atol:g}, "
        f"rtol={rtol:g}; numeric = central differences, eps={eps:g})",
        f"max relative error |a - n| / max(|a|, |n|): "
        f"{(np.nanmax(rel) if finite_rel.size else float('nan')):.3e} "
        "(cs231n: <= 1e-7 good, > 1e-2 wrong)",
        "worst entries:",
    ]
    header = (f"  {'input':<12}  {'value':>13}  {'analytic':>13}  {'numeric':>13}  "
              f"{'abs error':>10}  {'rel error':>10}")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for i in worst[:_MAX_ROWS]:
        lines.append(
            f"  {labels[i]:<12}  {values[i]:>13.6g}  {analytic[i]:>13.6g}  "
            f"{numeric[i]:>13.6g}  {diff[i]:>10.2e}  {rel[i]:>10.2e}")
    if bad.size > _MAX_ROWS:
        lines.append(f"  ... and {bad.size - _MAX_ROWS} more")
    return mismatch, rel, "\n".join(lines)


_GradcheckInputs = Union[Sequence[Any], Value, npt.NDArray[np.floating[Any]]]


# Overloads by the arity of f, so that a type checker infers the parameters of
# a lambda (``gradcheck(lambda x, y: x * y, [a, b])``) as Values.
@overload
def gradcheck(f: _OfValues, inputs: _GradcheckInputs, eps: float = ...,
              atol: float = ..., rtol: float = ..., raise_exception: bool = ...) -> bool: ...
@overload
def gradcheck(f: Callable[[Value], Any], inputs: _GradcheckInputs, eps: float = ...,
              atol: float = ..., rtol: float = ..., raise_exception: bool = ...) -> bool: ...
@overload
def gradcheck(f: Callable[[Value, Value], Any], inputs: _GradcheckInputs, eps: float = ...,
              atol: float = ..., rtol: float = ..., raise_exception: bool = ...) -> bool: ...
@overload
def gradcheck(f: Callable[[Value, Value, Value], Any], inputs: _GradcheckInputs,
              eps: float = ..., atol: float = ..., rtol: float = ...,
              raise_exception: bool = ...) -> bool: ...
@overload
def gradcheck(f: Callable[[Value, Value, Value, Value], Any], inputs: _GradcheckInputs,
              eps: float = ..., atol: float = ..., rtol: float = ...,
              raise_exception: bool = ...) -> bool: ...
@overload
def gradcheck(f: Callable[..., Any], inputs: _GradcheckInputs, eps: float = ...,
              atol: float = ..., rtol: float = ..., raise_exception: bool = ...) -> bool: ...


def gradcheck(f: Callable[..., Any], inputs: _GradcheckInputs,
              eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True) -> bool:
    """Check backward() against central finite differences.

    Computes the analytic gradient of ``f(*inputs)`` with ``backward()`` and
    the numerical one with ``num_grad(..., h=eps, method="central")``, and
    flags every input where ``|a - n| > atol + rtol * |n|`` (PyTorch's rule).
    The report gives, for the worst inputs, both values and the relative error
    ``|a - n| / max(|a|, |n|)`` (0 when both are 0), the figure cs231n tells
    you to read: <= 1e-7 is good, > 1e-2 is almost certainly a bug.

    No gradient is left accumulated: the ``.grad`` of the inputs and of every
    node of f's graph is restored afterwards.  The numerical evaluations of a
    fastgrad function run without recording a graph (``no_grad``).

    Parameters
    ----------
    f : callable
        ``f(*inputs)`` returns a Value.
    inputs : sequence of Value (or one Value)
        The Values to differentiate with respect to.  Functions of Values
        from other engines (micrograd, ``fastgrad.reference``) work too.
    eps : float, default 1e-6
        Finite-difference step.
    atol, rtol : float, default 1e-5 and 1e-3
        Absolute and relative tolerance.
    raise_exception : bool, default True
        On mismatch raise :class:`GradcheckError` (True) or return False.

    Returns
    -------
    bool
        True when every entry matches (False on mismatch when
        ``raise_exception=False``).

    Examples
    --------
    >>> from fastgrad import Value, gradcheck
    >>> x, y = Value(0.5), Value(-1.5)
    >>> gradcheck(lambda x, y: (x * y).tanh() + x ** 2, [x, y])
    True
    >>> x.grad, y.grad          # untouched
    (0.0, 0.0)
    """
    where = "gradcheck"
    _check_callable(f, where)
    eps = _check_step(eps, "eps", where)
    atol = _check_tolerance(atol, "atol", where)
    rtol = _check_tolerance(rtol, "rtol", where)
    ev = _evaluator(f, inputs, where)
    if ev is not None:
        x = cast("_F64", inputs)   # _evaluator checked it
        analytic = _numgrad.evaluator_gradient(ev, x).reshape(-1)
        numeric = _numgrad.fd_array(None, x, eps, True, ev, where).reshape(-1)
        values = np.array(x, dtype=np.float64).reshape(-1)
        labels = ([str(tuple(int(i) for i in np.unravel_index(k, x.shape)))
                   for k in range(x.size)] if x.ndim != 1
                  else [str(k) for k in range(x.size)])
    else:
        if _is_value(inputs):
            inputs = (inputs,)
        items = _value_items(inputs, where, "inputs")
        if not items:
            raise ValueError(f"{where}: inputs is empty; pass the Values to check")
        fastgrad_only = all(isinstance(v, Value) for v in items)
        # record a graph for backward() even inside the user's no_grad block,
        # then none for the 2*len(items) numerical evaluations
        previous = set_grad_enabled(True) if fastgrad_only else None
        try:
            analytic = _analytic(f, items, where)
            if fastgrad_only:
                set_grad_enabled(False)
            numeric = _numgrad.fd_values(f, None, items, items, eps, True, where)
        finally:
            if fastgrad_only:
                set_grad_enabled(bool(previous))
        values = np.array([float(v.data) for v in items], dtype=np.float64)
        labels = []
        for k, v in enumerate(items):
            label = getattr(v, "label", "")
            labels.append(f"{k} {label}"[:12] if isinstance(label, str) and label
                          else str(k))
    mismatch, rel, report = _compare(analytic, numeric, values, labels, eps, atol,
                                     rtol, where)
    if report is None:
        return True
    if raise_exception:
        raise GradcheckError(report, analytic=analytic, numeric=numeric,
                             rel_error=rel, mismatch=mismatch)
    return False
