"""Warnings for what :func:`fastgrad.compile` freezes at trace time.

While ``compile`` runs ``fn`` (and ``penalty``), the compiled engine marks
every Value of the trace with a flag bit and counts the tracing thread; the
``.data`` getter of a marked Value calls :func:`warn_data_read`.  Outside a
trace the getter tests one global counter: eager code pays nothing else.

Categories (all :class:`TracerWarning`, one class, so one filter controls
them):

* **data read**: ``fn`` read ``.data`` of a traced Value (an input, a
  parameter or a node built from them) -- a Python ``if``, loop count,
  ``float`` or comparison on it is evaluated once, at trace time, and its
  outcome is frozen into the Program;
* **baked-in leaf**: the traced graph uses a leaf Value that is neither an
  input nor one of ``params`` and that existed before the trace (so you
  hold it: a global, a closure variable, an attribute).  Its current
  ``.data`` is copied into the Program as a constant; later changes to it
  are not seen.  Pass it in ``params`` if it should be read at every replay.
"""
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fastgrad.engine import Value

# the trace hooks live in the compiled engine; compile() (their only user)
# requires the compiled build, so the pure-Python build never calls them

__all__ = ["TracerWarning"]


class TracerWarning(UserWarning):
    """Something ``fastgrad.compile`` froze at trace time (see the module
    docs: a ``.data`` read of a traced Value, or a leaf baked in as a
    constant).

    ``warnings.simplefilter("error", fastgrad.TracerWarning)`` turns them
    into errors.

    Examples
    --------
    >>> import warnings
    >>> import fastgrad
    >>> def fn(x):
    ...     return x[0] * 2 if x[0].data > 0 else x[0] * -1
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always", fastgrad.TracerWarning)
    ...     prog = fastgrad.compile(fn, 1)
    >>> caught[0].category.__name__
    'TracerWarning'
    """


_names = threading.local()       # per tracing thread: id(Value) -> description


def _describe(v: Value) -> str:
    stack: list[dict[int, str]] = getattr(_names, "stack", [])
    for names in reversed(stack):
        if id(v) in names:
            return names[id(v)]
    label = getattr(v, "label", "")
    what = f"the result of {v._op!r}" if v._op else "a leaf"
    return f"{what} ({label!r})" if isinstance(label, str) and label else what


def warn_data_read(v: Value, value: float) -> None:
    """Called by the compiled ``.data`` getter for a traced Value."""
    warnings.warn(
        f"compile: fn read .data of {_describe(v)} while tracing (value "
        f"{value!r} now); Python code that uses it (an if, "
        "a loop count, float(), a comparison) runs once, at trace time, and "
        "its outcome is frozen into the Program; use Value operations "
        "(relu, maximum, ...) to branch inside the graph",
        TracerWarning, stacklevel=2)


@contextmanager
def tracing(inputs: Sequence[Value], params: Sequence[Value]) -> Iterator[None]:
    """Mark the calling thread as tracing and the given Values as traced."""
    names: dict[int, str] = {}
    for i, v in enumerate(inputs):
        names[id(v)] = f"input {i}"
    for i, p in enumerate(params):
        if isinstance(p, Value):
            label = getattr(p, "label", "")
            names.setdefault(id(p), f"parameter {i}" + (
                f" ({label!r})" if isinstance(label, str) and label else ""))
    stack = _names.__dict__.setdefault("stack", [])
    stack.append(names)
    from fastgrad import _engine
    marked = _engine._trace_begin(list(inputs) + [p for p in params
                                                  if isinstance(p, Value)],
                                  warn_data_read)
    try:
        yield
    finally:
        _engine._trace_end(marked)
        stack.pop()


def warn_baked_leaves(outputs: Sequence[Value], inputs: Sequence[Value],
                      params: Sequence[Value]) -> None:
    """Warn about each leaf of the traced graph that is neither an input nor
    a parameter and was not made during the trace (the caller holds it)."""
    from fastgrad import _engine
    known = {id(v) for v in inputs} | {id(p) for p in params}
    for leaf in _engine._untraced_leaves(list(outputs), known):
        label = getattr(leaf, "label", "")
        name = f" {label!r}" if isinstance(label, str) and label else ""
        warnings.warn(
            f"compile: the leaf Value{name} (data={leaf.data!r}) is neither an "
            "input nor in params; its current value is baked into the Program "
            "as a constant and later changes to it are not seen (pass it in "
            "params to read it at every replay)",
            TracerWarning, stacklevel=3)
