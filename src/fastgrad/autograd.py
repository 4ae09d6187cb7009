"""``fastgrad.grad``: gradients as return values, differentiable to any order.

``Value.backward()`` adds gradients into ``.grad`` (micrograd's contract).
:func:`grad` is PyTorch's ``torch.autograd.grad`` for Values: it *returns* the
gradients of some outputs with respect to some inputs and leaves every
``.grad`` alone.  With ``create_graph=True`` the returned gradients are Values
whose own graph -- the backward pass, recorded -- can be differentiated again
(Hessians, third derivatives, ...) or compiled with :func:`fastgrad.compile`.

Derivatives at kinks follow PyTorch: ``relu``, ``abs``, ``maximum`` and
``minimum`` are piecewise linear, so their second derivative is 0 everywhere,
including at the kink; the first derivative there is relu'(0) = 0,
abs'(0) = 0, and a tie of maximum/minimum splits the gradient 1/2-1/2.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal, Union, overload

from fastgrad._backend import COMPILED, require_compiled
from fastgrad.engine import Value

if COMPILED:        # the pure-Python build has no second-order sweeps
    from fastgrad._higher import grad_sweep

__all__ = ["grad"]

_Outputs = Union[Value, Sequence[Value]]
_Seed = Union[float, Value, None]


def _as_values(x: Any, name: str) -> tuple[list[Value], tuple[int, ...] | None]:
    """Flatten a Value, a sequence of Values or a numpy array of Values.

    Returns the list and, for an array with ndim >= 1, its shape (a
    non-scalar output in PyTorch's sense), else None.
    """
    if isinstance(x, Value):
        return [x], None
    shape = None
    if type(x).__module__ == "numpy" and hasattr(x, "shape") and hasattr(x, "ravel"):
        shape = tuple(x.shape) if len(x.shape) else None
        items = list(x.ravel().tolist()) if x.dtype != object else list(x.ravel())
    elif isinstance(x, (list, tuple)):
        items = list(x)
    else:
        raise TypeError(f"grad: {name} must be a Value or a sequence of Values, "
                        f"got {type(x).__name__}")
    if not items:
        raise ValueError(f"grad: {name} is empty")
    for k, v in enumerate(items):
        if not isinstance(v, Value):
            raise TypeError(f"grad: {name}[{k}] must be a Value, got {type(v).__name__}")
    return items, shape


def _seed(x: object, k: int) -> _Seed:
    if x is None or isinstance(x, Value):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x)
    raise TypeError(f"grad: grad_outputs[{k}] must be a real number or a Value, "
                    f"got {type(x).__name__}")


def _flag(x: object, name: str) -> bool:
    # a bool or a NumPy bool, whose type is named "bool" in NumPy 2 and
    # "bool_" before (checked by name: this module does not import NumPy)
    t = type(x)
    if t is bool or (t.__module__ == "numpy" and t.__name__ in ("bool", "bool_")):
        return bool(x)
    raise TypeError(f"grad: {name} must be a bool, got {type(x).__name__}")


@overload
def grad(outputs: _Outputs, inputs: Value | Sequence[Value], grad_outputs: Any = None,
         create_graph: bool = False, allow_unused: Literal[False] = False
         ) -> tuple[Value, ...]: ...
@overload
def grad(outputs: _Outputs, inputs: Value | Sequence[Value], grad_outputs: Any = None,
         create_graph: bool = False, *, allow_unused: bool) -> tuple[Value | None, ...]: ...
@overload
def grad(outputs: _Outputs, inputs: Value | Sequence[Value], grad_outputs: Any,
         create_graph: bool, allow_unused: bool) -> tuple[Value | None, ...]: ...


def grad(outputs: _Outputs, inputs: Value | Sequence[Value],
         grad_outputs: Any = None, create_graph: bool = False,
         allow_unused: bool = False) -> tuple[Value | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned.

    Computes ``sum_k grad_outputs[k] * d outputs[k] / d inputs[j]`` for every
    input (a vector-Jacobian product) without touching any ``.grad``.

    Parameters
    ----------
    outputs : Value, sequence of Value, or numpy array of Value
        What to differentiate.  Each Value is a scalar output (implicit
        gradient 1.0, as PyTorch does for scalar tensors); a numpy array of
        Values with ``ndim >= 1`` is one non-scalar output and needs
        ``grad_outputs``.
    inputs : Value or sequence of Value
        What to differentiate with respect to: leaves or inner nodes.
    grad_outputs : number, Value, or sequence/array of them, optional
        The vector in the vector-Jacobian product, one per output (``None``
        entries mean 1.0).  Values are allowed: with ``create_graph=True``
        the result can then be differentiated with respect to them too.
    create_graph : bool, default False
        Record the backward pass, so that the gradients are Values that can
        be differentiated again (any order) or compiled.  Otherwise they are
        new leaf Values.
    allow_unused : bool, default False
        Return None for an input that ``outputs`` do not depend on, instead
        of raising ValueError.  (An input that is in the graph but receives
        no gradient, e.g. behind a relu that is off, gets 0.0, as PyTorch.)

    Returns
    -------
    tuple of Value
        One per input, in order.  With ``allow_unused=True`` an input that the
        outputs do not depend on gets None (and the tuple is typed
        ``tuple[Value | None, ...]``; otherwise ``tuple[Value, ...]``).

    Raises
    ------
    TypeError
        An argument of the wrong type (the message names it).
    ValueError
        Empty ``outputs``/``inputs``, mismatched ``grad_outputs``, an input
        not in the graph (without ``allow_unused``), ``create_graph=True``
        through a hand-built node (one with a user ``_backward``).

    Notes
    -----
    The gradient graph follows the first-order rules operation by operation,
    so ``grad(y, x)`` gives the same floats as ``y.backward()`` would put in
    ``x.grad``.  Where a derivative is infinite at the point (``sqrt`` at 0)
    the result is inf, as in PyTorch, rather than an error.  The special cases
    of ``a ** b`` (exponent 0, base 0) are decided on the values when
    ``grad`` runs; everything else is recomputed by a compiled replay.
    While it runs, ``grad`` numbers the graph's nodes in their ``.grad``
    slots and restores them before returning: don't call ``backward()`` on
    the same graph from another thread at the same time.

    Ctrl-C stops ``grad`` within milliseconds (its sweeps check for signals
    every few thousand nodes); the ``.grad`` slots are restored and the graph
    is unchanged.  With ``create_graph=True`` the part of the gradient graph
    built so far is not freed before the ``KeyboardInterrupt`` is raised
    (freeing millions of Values takes ~45 ns each): the exception holds it
    (attribute ``_fastgrad_partial_graph``) and it is freed when the
    exception is released -- at the end of an ``except`` block, or, in an
    interactive session, which keeps the last exception (``sys.last_value``),
    at the next error.  A ``MemoryError`` frees it before propagating.

    Examples
    --------
    >>> from fastgrad import Value, grad
    >>> x = Value(3.0)
    >>> y = x ** 3
    >>> (dy,) = grad(y, x, create_graph=True)   # 3 x**2
    >>> (d2y,) = grad(dy, x)                    # 6 x
    >>> dy.data, d2y.data, x.grad
    (27.0, 18.0, 0.0)
    """
    create_graph = _flag(create_graph, "create_graph")
    allow_unused = _flag(allow_unused, "allow_unused")
    outs, out_shape = _as_values(outputs, "outputs")
    ins, _ = _as_values(inputs, "inputs")
    if grad_outputs is None:
        if out_shape is not None and len(outs) != 1:
            # PyTorch: "grad can be implicitly created only for scalar outputs"
            raise ValueError(
                f"grad: outputs is an array of shape {out_shape} (a non-scalar "
                "output); pass grad_outputs of the same shape (the vector of "
                "the vector-Jacobian product)")
        seeds: list[_Seed] = [1.0] * len(outs)
    else:
        if isinstance(outputs, Value):
            gos = [grad_outputs] if not isinstance(grad_outputs, (list, tuple)) \
                else list(grad_outputs)
        elif type(grad_outputs).__module__ == "numpy" and hasattr(grad_outputs, "shape"):
            go_shape = tuple(grad_outputs.shape)
            if out_shape is not None and go_shape != out_shape:
                raise ValueError(f"grad: grad_outputs has shape {go_shape}, "
                                 f"outputs {out_shape}")
            gos = list(grad_outputs.ravel())
        elif isinstance(grad_outputs, (list, tuple)):
            gos = list(grad_outputs)
        elif len(outs) == 1:
            gos = [grad_outputs]
        else:
            raise TypeError("grad: grad_outputs must be a sequence with one entry "
                            f"per output ({len(outs)}), got "
                            f"{type(grad_outputs).__name__}")
        if len(gos) != len(outs):
            raise ValueError(f"grad: grad_outputs has {len(gos)} entries but there "
                             f"are {len(outs)} outputs")
        seeds = []
        for k, g in enumerate(gos):
            s = _seed(g, k)
            if s is None:
                s = 1.0
            elif isinstance(s, Value) and not create_graph:
                s = s.data
            seeds.append(s)
    require_compiled("fastgrad.grad")
    res = grad_sweep(outs, seeds, ins, create_graph)
    out: list[Value | None] = []
    for k, r in enumerate(res):
        if r is None:
            if not allow_unused:
                raise ValueError(
                    f"grad: inputs[{k}] ({ins[k]!r}) is not in the graph of the "
                    "outputs (they do not depend on it); pass allow_unused=True "
                    "to get None for it")
            out.append(None)
        elif isinstance(r, Value):
            out.append(r)
        else:
            out.append(Value(r))
    return tuple(out)
