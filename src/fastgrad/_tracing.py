"""Warnings for what :func:`fastgrad.compile` freezes at trace time.

While ``compile`` runs ``fn`` (and ``penalty``), the compiled engine marks
every Value of the trace with a flag bit and counts the tracing thread; the
``.data`` getter of a marked Value calls :func:`warn_data_read`, which notes
the read in the current compile call's :class:`TraceLog`.  Outside a trace
the getter tests one global counter: eager code pays nothing else.

Right after the trace, ``compile`` records the graph (``_replay.build``),
whose walk notes in the :class:`TraceLog` the leaves baked in (constant
leaves without the trace flag) and the inputs not used; once the Program is
built, :func:`report` issues **at most one** :class:`TracerWarning` per
``compile`` call, summarising:

* **data reads**: ``fn`` read ``.data`` of a traced Value (an input, a
  parameter or a node built from them) -- a Python ``if``, loop count,
  ``float`` or comparison on it is evaluated once, at trace time, and its
  outcome is frozen into the Program (the first reads are listed with the
  line that made them);
* **baked-in leaves**: the traced graph uses leaf Values that are neither
  inputs nor in ``params`` and that existed before the trace (so you hold
  them: a global, a closure variable, a model you forgot to pass).  Their
  current ``.data`` is copied into the Program as constants; later changes
  are not seen.  Pass them in ``params`` to read them at every replay;
* **unused inputs**: ``fn`` does not use some of its ``n_inputs`` inputs;
  they are accepted, and their gradient is 0.
"""
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from fastgrad.engine import Value

# the trace hooks live in the compiled engine; compile() (their only user)
# requires the compiled build, so the pure-Python build never calls them

__all__ = ["TracerWarning"]

# how many examples a summary lists of each kind
_SHOWN = 3


class TracerWarning(UserWarning):
    """Something ``fastgrad.compile`` froze at trace time (see the module
    docs: ``.data`` reads of traced Values, leaves baked in as constants,
    inputs ``fn`` does not use).  One warning per ``compile`` call sums them
    up.

    ``warnings.simplefilter("error", fastgrad.TracerWarning)`` turns it into
    an error.

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


class TraceLog:
    """What one ``compile`` call saw while tracing (filled by the hooks)."""

    def __init__(self) -> None:
        self.baked: list[Value] = []     # filled by _replay.build
        self.unused: list[int] = []
        self.n_inputs = 0
        self.n_reads = 0
        # (description, value now, "file:line") of the first distinct reads
        self.reads: list[tuple[str, float, str]] = []
        self._described: set[str] = set()

    def add_read(self, what: str, value: float, where: str) -> None:
        self.n_reads += 1
        if what not in self._described and len(self.reads) < _SHOWN:
            self._described.add(what)
            self.reads.append((what, value, where))


class _Trace:
    """One tracing() context: its inputs and params, and the log it fills.
    The id -> name table is made only if something needs a name (a .data
    read): building it for every compile cost 0.34 s at 263k parameters."""

    def __init__(self, inputs: Sequence[Value], params: Sequence[Value],
                 log: TraceLog) -> None:
        self.inputs, self.params, self.log = inputs, params, log
        self._names: Optional[dict[int, str]] = None

    def names(self) -> dict[int, str]:
        if self._names is None:
            names: dict[int, str] = {}
            for i, v in enumerate(self.inputs):
                names[id(v)] = f"input {i}"
            for i, p in enumerate(self.params):
                if isinstance(p, Value):
                    label = getattr(p, "label", "")
                    names.setdefault(id(p), f"parameter {i}" + (
                        f" ({label!r})" if isinstance(label, str) and label else ""))
            self._names = names
        return self._names


_stack = threading.local()       # per tracing thread: its open _Trace contexts


def _describe(v: Value) -> str:
    traces: list[_Trace] = getattr(_stack, "traces", [])
    for trace in reversed(traces):
        names = trace.names()
        if id(v) in names:
            return names[id(v)]
    label = getattr(v, "label", "")
    what = f"the result of {v._op!r}" if v._op else "a leaf"
    return f"{what} ({label!r})" if isinstance(label, str) and label else what


def warn_data_read(v: Value, value: float) -> None:
    """Called by the compiled ``.data`` getter for a traced Value: note the
    read (with the line that made it) for the compile call's summary."""
    traces: list[_Trace] = getattr(_stack, "traces", [])
    frame = sys._getframe(1)          # the code that read .data
    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    if traces:
        traces[-1].log.add_read(_describe(v), value, where)
        return
    warnings.warn(f"compile: fn read .data of {_describe(v)} while tracing "
                  f"(at {where})", TracerWarning, stacklevel=2)


@contextmanager
def tracing(inputs: Sequence[Value], params: Sequence[Value],
            log: Optional[TraceLog] = None) -> Iterator[TraceLog]:
    """Mark the calling thread as tracing and the given Values as traced;
    ``.data`` reads are noted in ``log`` (a new one if not given)."""
    if log is None:
        log = TraceLog()
    traces = _stack.__dict__.setdefault("traces", [])
    traces.append(_Trace(inputs, params, log))
    engine = _hooks()
    marked = engine._trace_begin(list(inputs) + [p for p in params
                                                 if isinstance(p, Value)],
                                 warn_data_read)
    try:
        yield log
    finally:
        engine._trace_end(marked)
        traces.pop()


_engine_module = None


def _hooks() -> "Any":
    """The compiled engine (imported on first use: the pure-Python build has
    none).  A ``from fastgrad import _engine`` per compile went through
    importlib's Python-level fromlist handling (~1 us)."""
    global _engine_module
    if _engine_module is None:
        from fastgrad import _engine
        _engine_module = _engine
    return _engine_module


def _leaf_text(leaf: Value) -> str:
    label = getattr(leaf, "label", "")
    name = f"{label!r} " if isinstance(label, str) and label else ""
    return f"{name}(data={leaf.data!r})"    # compile() has ended: no hook


def report(log: TraceLog) -> None:
    """Issue the compile call's one TracerWarning, if anything was frozen."""
    baked, unused = log.baked, log.unused
    parts = []
    if log.n_reads:
        shown = ", ".join(f"{what} (value {value!r}, at {where})"
                          for what, value, where in log.reads)
        more = log.n_reads - len(log.reads)
        parts.append(
            f"fn read .data of {shown}"
            + (f" and {more} more time{'s' if more != 1 else ''}" if more > 0 else "")
            + " while tracing. Python code that uses such a number (an if, a loop count, "
            "float(), a comparison) ran once, at trace time, and its outcome "
            "is frozen into the Program; use Value operations (relu, "
            "maximum, ...) to branch inside the graph")
    if baked:
        n = len(baked)
        if n == 1:
            parts.append(
                f"the leaf Value {_leaf_text(baked[0])} is neither an input nor "
                "in params: its current value is baked into the Program as a "
                "constant and later changes to it are not seen; pass it in "
                "params to read it at every replay")
        else:
            listed = ", ".join(_leaf_text(leaf) for leaf in baked[:_SHOWN])
            others = f" and {n - _SHOWN} more" if n > _SHOWN else ""
            parts.append(
                f"{n} leaf Values ({listed}{others}) are neither inputs nor in "
                "params: their current values are baked into the Program as "
                "constants and later changes to them are not seen; pass them "
                "in params to read them at every replay"
                + (" (params=model.parameters()?)" if n > _SHOWN else ""))
    if unused:
        n = len(unused)
        parts.append(
            f"input{'s' if n != 1 else ''} {unused} of {log.n_inputs} "
            f"{'are' if n != 1 else 'is'} not used by fn: "
            f"{'their' if n != 1 else 'its'} gradient is 0")
    if len(parts) == 1:
        warnings.warn("compile: " + parts[0], TracerWarning, stacklevel=3)
    elif parts:
        warnings.warn("compile: what fn did at trace time:\n  - "
                      + "\n  - ".join(parts), TracerWarning, stacklevel=3)
