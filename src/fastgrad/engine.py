"""The Value engine (public face of the compiled ``fastgrad._engine``).

``from fastgrad.engine import Value`` replaces ``from micrograd.engine import
Value``.
"""
import contextlib
import threading
from typing import Any, Literal

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
