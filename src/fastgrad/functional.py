"""Jacobians, Hessians and Hessian-vector products of functions of Values.

The names, argument names and return shapes follow
``torch.autograd.functional`` for a function of one 1-d input.  ``func`` is
called on fresh leaf Values holding the numbers of ``inputs``: a list of
Values when ``inputs`` is a list or tuple, a 1-d numpy object array of Values
when it is a numpy array (so ``(x * x).sum()`` works).  When ``inputs`` are
all leaf Values (``model.parameters()``), derivatives are taken with respect
to those very Values, and ``func`` may use them through the model.  It returns a Value,
or (``jacobian`` only) a sequence or numpy array of Values.  Results are
float64 numpy arrays.

Hessian-vector products are forward-over-reverse: one C sweep over the
recorded graph carries a tangent forward and an adjoint with its tangent
backward (``_higher.hvp_sweep``, second partials from ``op_second`` in
``_rules.pxd``), allocating no Value.  Measured on the demo MLP loss
(``benchmarks/bench_second_order.py``): reverse-over-reverse through
``grad(create_graph=True)`` cost 5.5x a gradient, this sweep about 1.5x.
``hessian`` runs it once per input (columns ``H e_j``).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from fastgrad._backend import COMPILED, require_compiled
from fastgrad.engine import Value

if COMPILED:        # the pure-Python build has no second-order sweeps
    from fastgrad._higher import hvp_sweep
from fastgrad.autograd import grad

__all__ = ["hessian", "hvp", "jacobian", "vhp"]

Array = npt.NDArray[np.float64]
Inputs = Union[Sequence[Union[float, Value]], npt.ArrayLike]
Func = Callable[[Any], Any]


def _point(inputs: Inputs, where: str) -> tuple[list[Value], Any]:
    """Fresh leaves at ``inputs`` and what ``func`` receives."""
    as_array = isinstance(inputs, np.ndarray)
    if isinstance(inputs, Value):
        raise TypeError(f"{where}: inputs must be a 1-d sequence of numbers or "
                        "Values (wrap a single Value in a list)")
    if isinstance(inputs, np.ndarray) and inputs.dtype == object:
        items = list(inputs.ravel()) if inputs.ndim == 1 else None
    elif isinstance(inputs, (list, tuple, np.ndarray)):
        arr = np.asarray(inputs, dtype=object)
        items = list(arr) if arr.ndim == 1 else None
    else:
        raise TypeError(f"{where}: inputs must be a list, tuple or 1-d numpy array, "
                        f"got {type(inputs).__name__}")
    if items is None:
        raise ValueError(f"{where}: inputs must be 1-d, got shape "
                         f"{np.shape(inputs)}")
    if items and all(isinstance(x, Value) for x in items):
        # Values: differentiate with respect to these very leaves, so func
        # may ignore its argument and use a model's own parameters
        for k, x in enumerate(items):
            if x._prev:
                raise ValueError(f"{where}: inputs[{k}] is not a leaf Value")
        xs = list(items)
    else:
        xs = _fresh_leaves(items, where)
    if as_array:
        arg = np.empty(len(xs), dtype=object)
        arg[:] = xs
        return xs, arg
    return xs, xs


def _fresh_leaves(items: list[Any], where: str) -> list[Value]:
    xs = []
    for k, x in enumerate(items):
        if isinstance(x, Value):
            xs.append(Value(x.data))
        elif isinstance(x, numbers.Real) and not isinstance(x, bool):
            xs.append(Value(float(x)))
        else:
            raise TypeError(f"{where}: inputs[{k}] must be a real number or a "
                            f"Value, got {type(x).__name__}")
    return xs


def _scalar_output(out: Any, where: str) -> Value:
    if isinstance(out, np.ndarray) and out.dtype == object and out.size == 1:
        out = out.reshape(()).item()
    if not isinstance(out, Value):
        raise TypeError(f"{where}: func must return a single Value, got "
                        f"{type(out).__name__}")
    return out


def _vector(v: Any, n: int, where: str) -> list[float]:
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: v must be a 1-d array of real numbers, got "
                        f"{type(v).__name__}") from None
    if arr.shape != (n,):
        raise ValueError(f"{where}: v has shape {arr.shape}, inputs ({n},)")
    out: list[float] = arr.tolist()
    return out


def _gradient(y: Value, xs: list[Value], create_graph: bool) -> list[Value]:
    gs = grad(y, xs, create_graph=create_graph, allow_unused=True)
    return [Value(0.0) if g is None else g for g in gs]


def jacobian(func: Func, inputs: Inputs) -> Array:
    """Jacobian of ``func`` at ``inputs`` (reverse mode, one sweep per output).

    Parameters
    ----------
    func : callable
        ``func(x)`` with ``x`` a list (or 1-d object array) of Values; returns
        a Value, a sequence of Values or a numpy array of Values.
    inputs : 1-d sequence of float (or Value), or 1-d numpy array
        The point.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)`` when ``func`` returns a single Value, else
        ``out_shape + (n,)``.

    Examples
    --------
    >>> from fastgrad.functional import jacobian
    >>> jacobian(lambda x: [x[0] * x[1], x[0] + 2 * x[1]], [3.0, 4.0]).tolist()
    [[4.0, 3.0], [1.0, 2.0]]
    """
    xs, arg = _point(inputs, "jacobian")
    out = func(arg)
    shape: tuple[int, ...]
    if isinstance(out, Value):
        outs, shape = [out], ()
    elif isinstance(out, np.ndarray) and out.dtype == object:
        outs, shape = list(out.ravel()), tuple(out.shape)
    elif isinstance(out, (list, tuple)):
        outs, shape = list(out), (len(out),)
    else:
        raise TypeError("jacobian: func must return a Value or a sequence of "
                        f"Values, got {type(out).__name__}")
    jac = np.zeros((len(outs), len(xs)))
    for i, y in enumerate(outs):
        if not isinstance(y, Value):
            raise TypeError(f"jacobian: output {i} of func is a "
                            f"{type(y).__name__}, not a Value")
        jac[i] = [g.data for g in _gradient(y, xs, False)]
    return jac.reshape(shape + (len(xs),))


def hessian(func: Func, inputs: Inputs) -> Array:
    """Hessian of a scalar ``func`` at ``inputs``: shape ``(n, n)``.

    One forward-over-reverse sweep per column ``H e_j``.

    Examples
    --------
    >>> from fastgrad.functional import hessian
    >>> hessian(lambda x: x[0] ** 2 * x[1] + x[1] ** 3, [1.0, 2.0]).tolist()
    [[4.0, 2.0], [2.0, 12.0]]
    """
    require_compiled("fastgrad.functional.hessian")
    xs, arg = _point(inputs, "hessian")
    y = _scalar_output(func(arg), "hessian")
    n = len(xs)
    hess = np.zeros((n, n))
    e = np.zeros(n)
    for j in range(n):
        e[j] = 1.0
        _, col = hvp_sweep(y, xs, e)
        hess[:, j] = [0.0 if h is None else h for h in col]
        e[j] = 0.0
    return hess


def hvp(func: Func, inputs: Inputs, v: npt.ArrayLike) -> tuple[float, Array]:
    """Hessian-vector product ``H(inputs) @ v`` of a scalar ``func``.

    Returns
    -------
    (float, numpy.ndarray)
        ``func(inputs)`` and ``H v`` (shape ``(n,)``), as
        ``torch.autograd.functional.hvp`` returns ``(func_output, hvp)``.

    Examples
    --------
    >>> from fastgrad.functional import hvp
    >>> f = lambda x: x[0] ** 2 * x[1] + x[1] ** 3      # H = [[4, 2], [2, 12]]
    >>> out, hv = hvp(f, [1.0, 2.0], [1.0, 0.0])
    >>> out, hv.tolist()
    (10.0, [4.0, 2.0])
    """
    return _hvp(func, inputs, v, "hvp")


def vhp(func: Func, inputs: Inputs, v: npt.ArrayLike) -> tuple[float, Array]:
    """Vector-Hessian product ``v @ H(inputs)``; equal to :func:`hvp` since a
    Hessian is symmetric (``torch.autograd.functional.vhp``).

    Examples
    --------
    >>> from fastgrad.functional import vhp
    >>> out, vh = vhp(lambda x: x[0] * x[1], [1.0, 2.0], [1.0, 1.0])
    >>> vh.tolist()
    [1.0, 1.0]
    """
    return _hvp(func, inputs, v, "vhp")


def _hvp(func: Func, inputs: Inputs, v: npt.ArrayLike,
         where: str) -> tuple[float, Array]:
    require_compiled(f"fastgrad.functional.{where}")
    xs, arg = _point(inputs, where)
    vec = _vector(v, len(xs), where)
    y = _scalar_output(func(arg), where)
    _, hv = hvp_sweep(y, xs, np.asarray(vec, dtype=np.float64))
    return y.data, np.array([0.0 if h is None else h for h in hv])
