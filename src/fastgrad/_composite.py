"""Sequence functions built from other Value functions, for both engines.

``log_softmax`` and ``cross_entropy`` are not nodes of their own: they are
made of ``logsumexp``, ``sum`` and the arithmetic operators.  The compiled
engine (``fastgrad.engine``) and the pure-Python one (``fastgrad.reference``)
compose them the same way, from their own primitives, which they pass in;
the argument checks and the error messages live here once.  Plain Python:
this module imports nothing of fastgrad.
"""
import operator
from typing import Any, Callable, Sequence

__all__ = ["log_softmax", "cross_entropy"]

# ``Any`` stands for the engine's Value: both engines' Values (and numbers,
# for the target probabilities) go through these functions.
_Reduce = Callable[[Sequence[Any]], Any]


def log_softmax(xs: Sequence[Any], logsumexp: _Reduce) -> list[Any]:
    """``[x_i - logsumexp(xs)]`` with the engine's ``logsumexp``."""
    lse = logsumexp(xs)
    return [x - lse for x in xs]


def _class_index(target: Any, n: int) -> int:
    """``target`` as a class index in ``range(n)``, or a clear error."""
    if isinstance(target, bool):
        raise TypeError("cross_entropy: target must be a class index (int) or "
                        "a sequence of probabilities, got bool")
    try:
        k = operator.index(target)
    except TypeError:
        raise TypeError("cross_entropy: target must be a class index (int) or "
                        "a sequence of probabilities, got "
                        f"{type(target).__name__}") from None
    if not 0 <= k < n:
        raise IndexError(f"cross_entropy: target {k} out of range for {n} classes")
    return k


def cross_entropy(xs: Sequence[Any], target: Any, logsumexp: _Reduce,
                  vsum: _Reduce) -> Any:
    """Softmax cross-entropy of one sample with the engine's primitives.

    A class index ``k`` gives ``logsumexp(xs) - xs[k]``; a sequence of class
    probabilities ``t`` gives ``-vsum([t_i * (x_i - logsumexp(xs))])``.  See
    ``fastgrad.cross_entropy`` for the user's documentation.

    Examples
    --------
    >>> from fastgrad.reference import Value, logsumexp, sum
    >>> xs = [Value(0.0), Value(0.0)]
    >>> round(cross_entropy(xs, 1, logsumexp, sum).data, 6)
    0.693147
    >>> cross_entropy(xs, 2, logsumexp, sum)
    Traceback (most recent call last):
    ...
    IndexError: cross_entropy: target 2 out of range for 2 classes
    """
    lse = logsumexp(xs)
    if isinstance(target, (str, bytes)) or not hasattr(target, "__len__"):
        return lse - xs[_class_index(target, len(xs))]
    ts = list(target)
    if len(ts) != len(xs):
        raise ValueError(f"cross_entropy: {len(xs)} logits but {len(ts)} target "
                         "probabilities")
    return -vsum([t * (x - lse) for t, x in zip(ts, xs)])
