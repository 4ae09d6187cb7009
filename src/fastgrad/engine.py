"""The Value engine (public face of the compiled ``fastgrad._engine``).

``from fastgrad.engine import Value`` replaces ``from micrograd.engine import
Value``.  Also here: ``maximum``, ``minimum``, ``sum``, ``logsumexp``,
``softmax``, ``log_softmax``, ``cross_entropy``, ``no_grad``,
``is_grad_enabled``, ``set_grad_enabled``, ``zero_grad`` and ``dot_add``
(import them by name: the star import binds ``Value`` only, as micrograd's).
"""
import contextlib
import threading
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence, Union, cast

from fastgrad import _composite
from fastgrad._backend import COMPILED

# Type checkers see the compiled engine (its .pyi stub) whatever the build: the
# pure-Python Value has the same interface.
if TYPE_CHECKING or COMPILED:
    from fastgrad._engine import (
        Value as Value,
        dot_add as dot_add,
        is_grad_enabled as is_grad_enabled,
        logsumexp as logsumexp,
        maximum as maximum,
        minimum as minimum,
        set_grad_enabled as set_grad_enabled,
        softmax as softmax,
        sum as sum,
        zero_grad as zero_grad,
    )
else:  # the pure-Python build (see fastgrad._backend)
    from fastgrad.reference import (
        Value as Value,
        dot_add as dot_add,
        is_grad_enabled as is_grad_enabled,
        logsumexp as logsumexp,
        maximum as maximum,
        minimum as minimum,
        set_grad_enabled as set_grad_enabled,
        softmax as softmax,
        sum as sum,
        zero_grad as zero_grad,
    )

# ``from fastgrad.engine import *`` binds what ``from micrograd.engine import
# *`` does: Value only (a notebook's own ``zero_grad`` or ``maximum`` defined
# before it is not replaced, and the builtin ``sum`` is not shadowed).  The
# other public names are imported by name, or from ``fastgrad``.
__all__ = ["Value"]

_Operand = Union[Value, float]


def log_softmax(values: Iterable[_Operand]) -> list[Value]:
    """log(softmax(x)) of a sequence of Values: ``x_i - logsumexp(x)``.

    One :func:`logsumexp` node and one subtraction per item; stable for any
    input.

    Examples
    --------
    >>> import fastgrad
    >>> from fastgrad import Value
    >>> [round(v.data, 6) for v in fastgrad.log_softmax([Value(0.0), Value(0.0)])]
    [-0.693147, -0.693147]
    """
    return _composite.log_softmax(list(values), logsumexp)


def cross_entropy(logits: Iterable[_Operand],
                  target: Union[int, Sequence[_Operand]]) -> Value:
    """Softmax cross-entropy of one sample: ``-log(softmax(logits)[target])``.

    Parameters
    ----------
    logits : iterable of Value (or numbers)
        The unnormalised scores of the classes (at least one).
    target : int or sequence of Value/numbers
        The class index (``0 <= target < len(logits)``), computed as
        ``logsumexp(logits) - logits[target]``; or class probabilities (a
        one-hot vector, soft labels), of the same length as ``logits``,
        computed as ``-sum(target_i * (logits_i - logsumexp(logits)))``, as
        ``torch.nn.functional.cross_entropy`` does with probabilities.  In a
        compiled program the index is fixed when tracing; pass the labels as
        one-hot input Values for labels that change from row to row.

    Returns
    -------
    Value
        The loss; average it over the samples yourself (``fastgrad.sum(losses)
        * (1 / n)``).

    Examples
    --------
    >>> import fastgrad
    >>> from fastgrad import Value
    >>> logits = [Value(2.0), Value(0.5), Value(-1.0)]
    >>> loss = fastgrad.cross_entropy(logits, 0); loss.backward()
    >>> round(loss.data, 6), [round(z.grad, 6) for z in logits]
    (0.241311, [-0.214403, 0.17529, 0.039113])
    >>> y = [0.0, 1.0, 0.0]                     # the same as target 1
    >>> round(fastgrad.cross_entropy(logits, y).data, 6)
    1.741311
    """
    return cast(Value, _composite.cross_entropy(list(logits), target, logsumexp, sum))


class no_grad(contextlib.ContextDecorator):
    """Compute with Values without recording a graph.

    Inside the block (or the decorated function) every operation returns a
    leaf Value holding the result: nothing links back to the operands, so
    evaluation, plotting or metric code costs no graph memory.  The previous
    setting is restored on exit, also on error.

    Grad mode is **thread-local** (as in PyTorch): ``no_grad`` turns
    recording off for the calling thread only; every thread starts with it
    on, and other threads keep recording (and training) meanwhile.  Blocks
    nest, and one ``no_grad`` instance (a decorator, say) may be entered by
    several threads at once: each restores its own thread's setting.

    Examples
    --------
    >>> from fastgrad import Value, no_grad
    >>> x = Value(3.0)
    >>> with no_grad():
    ...     y = x * x
    >>> y.data, y._prev
    (9.0, set())
    """

    def __init__(self) -> None:
        # a stack per thread, not one slot: ContextDecorator reuses the
        # instance, so a recursive decorated function enters it several
        # times, and threads sharing it must not restore each other's mode
        self._local = threading.local()

    def __enter__(self) -> "no_grad":
        saved: list[bool] = self._local.__dict__.setdefault("saved", [])
        saved.append(set_grad_enabled(False))
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        set_grad_enabled(self._local.saved.pop())
        return False
