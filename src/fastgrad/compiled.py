"""Trace once, run many: compile a graph of Values and replay it in C.

An eager training loop rebuilds the same graph every step with new numbers.
:func:`compile` records that graph once -- as flat arrays of op codes, operand
slots and constants -- and returns a :class:`Program` that replays it in C
with the GIL released, for one sample (``forward``, ``value_and_grad``) or
vectorised over the rows of a batch (``batch``, ``predict``, ``sgd_step``).

Leaves of the recorded graph are of three kinds:

* **inputs**: placeholders that get new values at every replay (one column of
  the batch each);
* **parameters**: the Values you hold (``model.parameters()``).  Each replay
  reads their current ``.data``; gradients are added to their ``.grad``
  (as ``backward()`` does) and can also be written to a float64 array;
* **constants**: every other leaf; its ``.data`` is baked in at record time.

Tracing caveat (as ``jax.jit`` / ``torch.jit.trace``): only operations on
Values are recorded.  Python control flow that looks at ``.data`` (``if
x.data > 0: ...``), Python arithmetic on floats taken out of Values, and the
number of loop iterations are frozen at trace time.  Operations that branch
*inside* the graph (``relu``, ``maximum``, ``abs`` ...) are re-evaluated at
every replay.  Replays do not check domain errors: a division by zero or the
log of a negative number gives inf/nan (IEEE), where eager mode raises.
``compile`` warns, once per call (:class:`fastgrad.TracerWarning`), when ``fn``
reads ``.data`` of a traced Value, when the graph uses a leaf you hold that is
not in ``params``, or when ``fn`` does not use some of its inputs (their
gradient is 0).
"""
import gc
import operator
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Sequence, Union, cast

from fastgrad import _tracing
from fastgrad._backend import require_compiled
from fastgrad._summary import LayerSummary, PerformanceWarning, ProgramSummary
from fastgrad.engine import Value, is_grad_enabled

if TYPE_CHECKING:
    import numpy.typing as npt

    from fastgrad._replay import Program

__all__ = ["compile", "compile_graph", "Program", "make_demo_step", "ProgramSummary",
           "LayerSummary", "PerformanceWarning"]


class _Model(Protocol):
    # what make_demo_step needs of a model (fastgrad.nn.MLP has it)
    def __call__(self, x: list[Value]) -> Any: ...
    def parameters(self) -> list[Value]: ...


class DemoStep(Protocol):
    """The callable ``make_demo_step`` returns (for type checkers)."""
    program: "Program"

    def __call__(self, X: "npt.ArrayLike", y: "npt.ArrayLike",
                 lr: float) -> tuple[float, float]: ...


def __getattr__(name: str) -> Any:
    # numpy (needed by the replay module) is imported on first use, so that
    # ``import fastgrad`` stays as light as the eager engine
    if name == "Program":
        require_compiled("fastgrad.compiled.Program")
        from fastgrad._replay import Program
        return Program
    raise AttributeError(f"module 'fastgrad.compiled' has no attribute {name!r}")


_replay_module: Any = None


def _replay() -> Any:
    """fastgrad._replay, imported on first use (a ``from fastgrad._replay
    import ...`` per compile cost ~1-2 us each)."""
    global _replay_module
    if _replay_module is None:
        from fastgrad import _replay as module
        _replay_module = module
    return _replay_module


def _build(outputs: list[Value], inputs: list[Value], params: list[Value],
           penalty: Optional[Value], allow_unused: bool = False,
           log: Optional[_tracing.TraceLog] = None) -> "Program":
    require_compiled("fastgrad.compile (compiled graph replay)")
    build = _replay().build
    # Recording allocates a few short-lived Python objects per instruction,
    # none in a reference cycle: the cyclic collector would only re-scan them
    # again and again (at 51,079 instructions, MLP(2, [128, 128, 1]), it took
    # a third of the time and made recording grow faster than the graph).
    prog: "Program"
    enabled = gc.isenabled()
    gc.disable()
    try:
        if log is None:
            prog = build(outputs, inputs, params, penalty, allow_unused)
        else:
            # the record loop notes the baked-in leaves and unused inputs
            # for the TracerWarning (see _replay.build)
            prog = build(outputs, inputs, params, penalty, allow_unused,
                         log.baked, log.unused)
            log.n_inputs = len(inputs)
    finally:
        if enabled:
            gc.enable()
    text = prog._performance_warning()    # prog.summary().warning(), lazily
    if text is not None:
        # stacklevel 3: the user's call of compile / compile_graph
        warnings.warn(text, PerformanceWarning, stacklevel=3)
    return prog


def compile_graph(outputs: Union[Value, Iterable[Value]], inputs: Iterable[Value] = (),
                  params: Iterable[Value] = (),
                  penalty: Optional[Value] = None) -> "Program":
    """Record an existing graph into a :class:`Program`.

    Parameters
    ----------
    outputs : Value or sequence of Value
        The output node(s).  Output 0 is the one that ``value_and_grad`` and
        ``batch`` differentiate and reduce.
    inputs : sequence of Value
        Leaf Values that become inputs (in this order).
    params : sequence of Value
        Leaf Values that become parameters (in this order).
    penalty : Value, optional
        A term that depends on the parameters only (e.g. an L2 penalty); it
        is added once to the reduced output of ``batch``/``sgd_step``.

    Returns
    -------
    Program

    Raises
    ------
    ValueError
        An input or parameter that is not a leaf or not in the graph, a
        duplicate, a hand-built node (``Value(x, children, op)`` with a user
        ``_backward``), a penalty that depends on an input.
    TypeError
        Something that is not a Value.

    Examples
    --------
    >>> from fastgrad import Value
    >>> from fastgrad.compiled import compile_graph
    >>> x, w = Value(0.0), Value(3.0)
    >>> prog = compile_graph(x * w + 1, inputs=[x], params=[w])
    >>> prog.forward([2.0])
    7.0
    """
    if isinstance(outputs, Value):
        outputs = [outputs]
    return _build(list(outputs), list(inputs), list(params), penalty)


def compile(fn: Callable[[list[Value]], Union[Value, Sequence[Value]]], n_inputs: int,
            params: Iterable[Value] = (),
            penalty: Optional[Callable[[list[Value]], Union[Value, float]]] = None,
            example: Optional[Iterable[float]] = None) -> "Program":
    """Trace ``fn`` on placeholder inputs and record it as a :class:`Program`.

    Parameters
    ----------
    fn : callable
        ``fn(inputs)`` with ``inputs`` a list of ``n_inputs`` Values; returns a
        Value or a list of Values (output 0 is the one differentiated and
        reduced).  It may use the parameter Values directly (e.g. call a
        model).
    n_inputs : int
        Number of per-sample inputs.  ``fn`` need not use all of them: an
        unused input gets gradient 0 (and the one TracerWarning says so).
    params : iterable of Value
        The parameters (e.g. ``model.parameters()``).
    penalty : callable, optional
        ``penalty(params)`` -> Value depending on the parameters only; added
        once to the reduced loss of ``batch``/``sgd_step`` (e.g.
        ``lambda ps: 1e-4 * sum(p * p for p in ps)``).  A plain number (the 0
        of an empty ``sum``) raises TypeError; the annotation admits ``float``
        only because type checkers type ``sum()`` of Values as ``Value | int``.
    example : sequence of float, optional
        Values of the placeholders during the trace (default: all 1.0).
        Only matters to eager-mode checks during tracing and to Python
        control flow on ``.data`` (which is frozen at trace time).

    Returns
    -------
    Program

    Examples
    --------
    >>> import fastgrad
    >>> w = fastgrad.Value(2.0)
    >>> prog = fastgrad.compile(lambda x: (x[0] * w).relu() + x[1], 2, params=[w])
    >>> prog.forward([3.0, 1.0]), prog.forward([-3.0, 1.0])
    (7.0, 1.0)
    >>> val, dx = prog.value_and_grad([3.0, 1.0])
    >>> val, dx.tolist(), w.grad
    (7.0, [2.0, 1.0], 3.0)
    """
    require_compiled("fastgrad.compile (compiled graph replay)")
    if isinstance(n_inputs, bool):
        raise TypeError("compile: n_inputs must be an int, got bool")
    try:
        n_inputs = operator.index(n_inputs)
    except TypeError:
        raise TypeError("compile: n_inputs must be an int, got "
                        f"{type(n_inputs).__name__}") from None
    if n_inputs < 0:
        raise ValueError(f"compile: n_inputs must be a non-negative int, got {n_inputs!r}")
    if not callable(fn):
        raise TypeError(f"compile: fn must be callable, got {type(fn).__name__}")
    if not is_grad_enabled():
        raise RuntimeError("compile: graph recording is off (inside no_grad() or "
                           "set_grad_enabled(False)); tracing fn needs it on")
    params = list(params)
    if example is None:
        example = [1.0] * n_inputs
    example = list(example)
    if len(example) != n_inputs:
        raise ValueError(f"compile: example has {len(example)} values, expected "
                         f"n_inputs={n_inputs}")
    inputs = [Value(v) for v in example]
    pen: Optional[Value] = None
    with _tracing.tracing(inputs, params) as log:  # notes .data reads
        outs = fn(inputs)
        if isinstance(outs, Value):
            outs = [outs]
        elif isinstance(outs, (list, tuple)):
            outs = list(outs)
        else:
            raise TypeError("compile: fn must return a Value or a list of Values, "
                            f"got {type(outs).__name__}")
        if penalty is not None:
            pen_out = penalty(params)
            if not isinstance(pen_out, Value):
                raise TypeError("compile: penalty(params) must return a Value, got "
                                f"{type(pen_out).__name__}")
            pen = pen_out
    # build finds the baked-in leaves (those the trace did not flag: made
    # inside fn, the flag stays; inputs and parameters are in the table) and
    # the unused inputs
    prog = _build(outs, inputs, params, pen, allow_unused=True, log=log)
    # one TracerWarning for all that the trace froze (.data reads, leaves
    # baked in as constants, inputs fn does not use), after a good build
    _tracing.report(log)
    return prog


def make_demo_step(model: _Model, alpha: float = 1e-4,
                   num_threads: Optional[int] = 1) -> "DemoStep":
    """The micrograd demo's training step, compiled.

    Records, per sample, micrograd's SVM "max-margin" loss
    ``relu(1 - y * model(x))`` (inputs ``[x0, x1, y]``) and the model score,
    with the penalty ``alpha * sum(p * p)``.  The returned
    ``step(X, y, lr)`` replays the batch (loss = mean over rows + penalty),
    leaves the gradient in each parameter's ``.grad`` (set, not added: as
    ``model.zero_grad(); loss.backward()``), applies ``p.data -= lr * p.grad``
    and returns ``(loss, accuracy)`` computed before the update, as
    micrograd's demo reports them.

    Parameters
    ----------
    model : fastgrad.nn.Module
        A model with a scalar output taking 2 inputs (``MLP(2, [16, 16, 1])``).
    alpha : float
        L2 penalty weight.
    num_threads : int or None, default 1
        Threads per step (None: every CPU).  The results are the same bits
        whatever the number (see ``Program.batch``).

    Returns
    -------
    step : callable ``step(X, y, lr) -> (loss, accuracy)``
        ``X`` of shape (B, 2), ``y`` of shape (B,) with labels -1/+1.
        ``step.program`` is the underlying :class:`Program`.

    Examples
    --------
    >>> import random; random.seed(1337)
    >>> import numpy as np
    >>> from fastgrad.nn import MLP
    >>> from fastgrad.compiled import make_demo_step
    >>> model = MLP(2, [16, 16, 1])
    >>> step = make_demo_step(model)
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0]]); y = np.array([1.0, -1.0])
    >>> loss, acc = step(X, y, 0.5)
    """
    replay = _replay()
    _DemoStep, _num_threads = replay._DemoStep, replay._num_threads
    _num_threads(num_threads, "make_demo_step")   # before a long compile
    params = model.parameters()

    def per_sample(inp: list[Value]) -> list[Value]:
        x0, x1, yi = inp
        score = model([x0, x1])
        return [(1 + -yi * score).relu(), score]

    prog = compile(per_sample, 3, params=params,
                   penalty=lambda ps: alpha * sum(p * p for p in ps))
    # the step, its checks and the accuracy in one C call (_replay._DemoStep)
    return cast(DemoStep, _DemoStep(prog, num_threads))
