"""The finite-difference loops of ``fastgrad._numgrad`` in Python (pure-Python build).

Used by ``fastgrad.numgrad`` when the compiled extension is absent (see
``fastgrad._backend``): the lecture's perturb-evaluate-restore loop, element
by element in C order, with the C version's rounding (x+h in x's precision,
central differences divided by the step actually stored) and its guarantee
that ``x`` is restored after a return or an exception.  Compiled programs (C
evaluators) do not exist in this build.
"""
import numbers
from typing import Any, Callable, List, Optional, Tuple, cast

import numpy as np
import numpy.typing as npt

__all__ = ["Evaluator", "fd_array", "fd_values", "evaluator_gradient", "graph_nodes"]

F64 = npt.NDArray[np.float64]

# numpy >= 2 (NEP 50) computes float32 + Python float in float32; numpy 1.x
# promoted it to float64 (the C loop makes the same distinction)
_NEP50 = type(np.float32(1.0) + 1.0) is np.float32


class Evaluator:
    """Placeholder for the C evaluators of compiled programs (compiled build only)."""


def _shape_of(r: Any) -> str:
    try:
        return str(np.shape(r))
    except Exception:
        return "(ragged)"


def _scalar(r: Any, where: str) -> Tuple[float, bool]:
    """(f's result as a float, whether it was a float32)."""
    if isinstance(r, float):
        return float(r), False
    if isinstance(r, np.ndarray):
        if r.dtype.kind not in "fiub":
            raise TypeError(f"{where}: f must return a real scalar, got an array "
                            f"of dtype {r.dtype} and shape {r.shape}")
        if r.size != 1:
            raise ValueError(f"{where}: f must return a scalar, got an array of "
                             f"shape {r.shape}")
        return float(r.reshape(-1)[0]), bool(r.dtype == np.float32)
    if isinstance(r, np.float32):
        return float(r), True
    if isinstance(r, (numbers.Real, np.bool_)):
        return float(r), False
    if isinstance(r, numbers.Complex):
        raise TypeError(f"{where}: f must return a real scalar, got complex {r!r}")
    if isinstance(r, (list, tuple)):
        raise ValueError(f"{where}: f must return a scalar, got a {type(r).__name__} "
                         f"of shape {_shape_of(r)}")
    data = getattr(r, "data", None)
    if (getattr(r, "backward", None) is not None
            and isinstance(data, (numbers.Real, np.bool_))):
        return float(data), False          # a Value (of any engine)
    shape = getattr(r, "shape", None)
    if shape is not None:
        try:
            size = int(np.prod(tuple(shape)))
        except Exception:
            size = 1
        if size != 1:
            raise ValueError(f"{where}: f must return a scalar, got a "
                             f"{type(r).__name__} of shape {tuple(shape)}")
        try:
            return float(r), False
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{where}: f must return a real scalar (a number, a size-1 "
                    f"array or a Value), got {type(r).__name__} ({r!r:.60})")


def _difference(fp: float, fm_or_fx: float, xp: float, xm: float, h: float,
                central: bool, both32: bool) -> float:
    if central:
        return (fp - fm_or_fx) / (xp - xm)
    if both32 and _NEP50:
        # numpy: float32 - float32 is float32, float32 / Python float too
        with np.errstate(all="ignore"):
            return float((np.float32(fp) - np.float32(fm_or_fx)) / np.float32(h))
    return (fp - fm_or_fx) / h


def fd_array(f: Optional[Callable[..., Any]], x: np.ndarray, h: float, central: bool,
             ev: Optional[Evaluator] = None, where: str = "num_grad") -> F64:
    """Finite-difference gradient of f at the float array x (validated by the caller)."""
    if ev is not None or f is None:
        raise TypeError(f"{where}: compiled evaluators need fastgrad's compiled build")
    result = np.empty(x.size, dtype=np.float64)
    t = x.dtype.type
    step = t(h)
    fx, fx32 = (0.0, False)
    if not central:
        fx, fx32 = _scalar(f(x), where)     # the lecture's order: f(x) once, first
    for k, idx in enumerate(np.ndindex(*x.shape)):
        old = x[idx]                        # a numpy scalar of x's dtype
        with np.errstate(all="ignore"):     # inf/nan elements: IEEE, as in C
            if t is np.float32 and not _NEP50:
                xp, xm = t(float(old) + h), t(float(old) - h)
            else:
                xp, xm = old + step, old - step     # in x's precision, as numpy does
        if central and xp == xm and np.isfinite(old):
            raise ValueError(
                f"{where}: h={h!r} vanishes at x[{tuple(int(i) for i in idx)}] = "
                f"{float(old)!r} ({x.dtype}): x+h and x-h round to the same number; "
                "use a larger h")
        fm = 0.0
        x[idx] = xp
        try:
            fp, fp32 = _scalar(f(x), where)
            if central:
                x[idx] = xm
                fm, _ = _scalar(f(x), where)
        finally:
            x[idx] = old
        result[k] = _difference(fp, fm if central else fx, float(xp), float(xm), h,
                                central, fx32 and fp32)
    return result.reshape(x.shape)


def fd_values(f: Callable[..., Any], x: Any, args: Optional[Tuple[Any, ...]],
              items: Tuple[Any, ...], h: float, central: bool,
              where: str = "num_grad") -> F64:
    """Finite-difference gradient of f with respect to the ``.data`` of items."""
    def call() -> Any:
        return f(x) if args is None else f(*args)

    result = np.empty(len(items), dtype=np.float64)
    fx, fx32 = (0.0, False)
    if not central:
        fx, fx32 = _scalar(call(), where)
    for k, item in enumerate(items):
        # perturb the attribute, then restore the original object (an int
        # stays an int)
        old = item.data
        xp_obj, xm_obj = old + h, old - h
        xp, xm = float(xp_obj), float(xm_obj)
        if central and xp == xm and np.isfinite(float(old)):
            raise ValueError(f"{where}: h={h!r} vanishes at x[{k}].data = {old!r}: "
                             "x+h and x-h round to the same number; use a larger h")
        fm = 0.0
        item.data = xp_obj
        try:
            fp, fp32 = _scalar(call(), where)
            if central:
                item.data = xm_obj
                fm, _ = _scalar(call(), where)
        finally:
            item.data = old
        result[k] = _difference(fp, fm if central else fx, xp, xm, h, central,
                                fx32 and fp32)
    return result


def evaluator_gradient(ev: Evaluator, x: np.ndarray) -> F64:
    """Compiled build only (there are no C evaluators in this build)."""
    raise TypeError("gradcheck: compiled evaluators need fastgrad's compiled build")


def graph_nodes(root: Any) -> List[Any]:
    """Every node of root's graph (operands first), as a list."""
    from fastgrad.reference import _topological_order
    return list(cast(Any, _topological_order)(root))
