"""The Value engine (public face of the compiled ``fastgrad._engine``).

``from fastgrad.engine import Value`` replaces ``from micrograd.engine import
Value``.
"""
import contextlib
import functools

from fastgrad._backend import COMPILED

if COMPILED:
    from fastgrad._engine import (
        Value,
        dot_add,
        is_grad_enabled,
        maximum,
        minimum,
        set_grad_enabled,
        zero_grad,
    )
else:  # the pure-Python build (see fastgrad._backend)
    from fastgrad.reference import (  # type: ignore[assignment]
        Value,
        dot_add,
        is_grad_enabled,
        maximum,
        minimum,
        set_grad_enabled,
        zero_grad,
    )

__all__ = [
    "Value", "maximum", "minimum", "no_grad", "is_grad_enabled",
    "set_grad_enabled", "zero_grad", "dot_add",
]


class no_grad(contextlib.ContextDecorator):
    """Compute with Values without recording a graph.

    Inside the block (or the decorated function) every operation returns a
    leaf Value holding the result: nothing links back to the operands, so
    evaluation, plotting or metric code costs no graph memory.  The setting is
    process-wide (not per thread) and restored on exit, also on error.

    Examples
    --------
    >>> from fastgrad import Value, no_grad
    >>> x = Value(3.0)
    >>> with no_grad():
    ...     y = x * x
    >>> y.data, y._prev
    (9.0, set())
    """

    def __init__(self):
        # a stack, not one slot: ContextDecorator reuses the instance, so a
        # recursive decorated function enters it several times
        self._saved = []

    def __enter__(self):
        self._saved.append(set_grad_enabled(False))
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._saved.pop())
        return False
