"""Ctrl-C in ``grad(create_graph=True)`` (issue 26, the latency table's last
row): the interrupted sweep does not free the part of the second-order graph
it has built before raising; the exception carries it and it is freed when
the exception is released.  Checked here: interrupted inside the sweep, grad
slots restored, the partial graph held by the exception and released with it
(leaf reference counts back to their values before the call), also when the
exception cannot carry it and when the hand-over is switched off.  Latency
itself is measured in benchmarks/bench_interrupt.py (no timing asserts).
"""
import gc
import math
import os
import pickle
import signal
import sys
import traceback

import pytest

from _interrupt import interrupt_inside, needs_timer_signal
from fastgrad import Value

pytestmark = [
    needs_timer_signal,
    pytest.mark.compiled_only("the second-order sweeps are compiled"),
]

ATTR = "_fastgrad_partial_graph"


def _chain(n_steps):
    """A chain of ~3 * n_steps nodes in two leaves (the benchmark's graph):
    the adjoints built for it refer to both leaves many times."""
    a, b = Value(0.3), Value(-0.2)
    acc = a * b
    for k in range(n_steps):
        acc = (acc * 0.999999 + a).tanh() * b if k % 2 else acc * 0.999999 + a * b
    return a, b, acc


@pytest.fixture(scope="module")
def chain():
    return _chain(300_000)          # about 0.9 million nodes


def _refcounts(*xs):
    """Reference counts (each includes this call's own references)."""
    return [sys.getrefcount(x) for x in xs]


def _grads_zero(*xs):
    return all(math.copysign(1.0, x.grad) == 1.0 and x.grad == 0.0 for x in xs)


def _drop(exc):
    """Release the frames of an exception's traceback (they refer to the
    leaves, and the catching frame to the exception: a cycle)."""
    exc.__traceback__ = None
    exc.__context__ = None


def _innermost(exc):
    """(file, line) of the innermost traceback entry below this file's signal
    handler (the place the handler interrupted)."""
    entries = [e for e in traceback.extract_tb(exc.__traceback__)
               if e.name != "handler"]
    return os.path.basename(entries[-1].filename), entries[-1].lineno


class _Timeout(Exception):
    """What a timeout library's signal handler raises."""


class _Frozen(Exception):
    """An exception that refuses new attributes."""

    def __setattr__(self, name, value):
        if name == ATTR:
            raise AttributeError(name)
        super().__setattr__(name, value)


def _raise_during(call, accept, exc_type=KeyboardInterrupt, attempts=16):
    """Run call() with ``exc_type`` raised from a timer signal's handler
    (SIGPROF, after a delay of this process's CPU time, as
    tests/_interrupt.py's Ctrl-C), bisecting the delay until ``accept(exc)``
    holds; return that exception.  An exception not accepted counts as too
    early (the sort, the saving loop), a call that finishes as too late."""
    def handler(signum, frame):
        raise exc_type("timer")
    delay, early, late = 0.02, 0.0, None
    seen = []
    for _ in range(attempts):
        old = signal.signal(signal.SIGPROF, handler)
        exc, returned = None, False
        try:
            try:
                signal.setitimer(signal.ITIMER_PROF, delay)
                call()
                returned = True
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except exc_type as e:    # (a signal pending at the call's end lands above)
            exc = e
        finally:
            signal.signal(signal.SIGPROF, old)
        if returned or exc is None:
            late = delay if late is None else min(late, delay)
            seen.append(f"finished ({delay:.3g} s)")
        elif accept(exc):
            return exc
        else:
            early = max(early, delay)
            seen.append(f"raised at {_innermost(exc)} ({delay:.3g} s)")
            _drop(exc)
        if late is not None and early >= late:
            early, late = 0.0, None
        delay = delay * 2 if late is None else (late / 2 if early == 0.0
                                                 else (early + late) / 2)
    pytest.fail(f"not raised where wanted in {attempts} attempts: {seen}")


@pytest.fixture(scope="module")
def sweep_line(chain):
    """Where a Ctrl-C surfaces inside the create_graph sweep (file, line):
    found from an interrupt that handed a partial graph to its exception."""
    from fastgrad import grad
    a, b, y = chain
    exc = _raise_during(lambda: grad(y, [a, b], create_graph=True),
                        lambda e: hasattr(e, ATTR))
    where = _innermost(exc)
    assert where[0].startswith("_higher")
    _drop(exc)
    return where


def test_interrupted_create_graph_hands_its_partial_graph_to_the_exception(chain, sweep_line):
    from fastgrad import grad
    a, b, y = chain
    call = lambda: grad(y, [a, b], create_graph=True)       # noqa: E731
    before = _refcounts(a, b, y)
    exc = _raise_during(call, lambda e: _innermost(e) == sweep_line)
    assert _grads_zero(a, b, y)
    partial = getattr(exc, ATTR)
    assert len(partial) > 0 and "adjoint Values" in repr(partial)
    # it still pickles (a worker process sending it back), without the graph
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is KeyboardInterrupt and len(getattr(back, ATTR)) == 0
    del back
    _drop(exc)
    # the adjoint Values built so far refer to the leaves (those of the
    # first nodes swept, y's end of the chain, to b): they are alive
    assert sum(_refcounts(a, b)) > sum(before[:2]) + 10
    gcwas = gc.isenabled()
    gc.disable()
    try:
        del partial
        del exc                       # the last reference: freed here, no collector
        assert _refcounts(a, b, y) == before
    finally:
        if gcwas:
            gc.enable()
    # usable afterwards: the same derivatives as an uninterrupted call
    da, db = grad(y, [a, b], create_graph=True)
    ga, gb = grad(y, [a, b])
    assert (da.data, db.data) == (ga.data, gb.data)
    del da, db
    assert _refcounts(a, b, y) == before


def test_a_partial_graph_is_freed_with_an_exception_the_collector_frees(chain, sweep_line):
    # an exception kept by a frame its own traceback holds (a cycle, as
    # `exc = e` in an except block makes): the partial graph goes when the
    # collector breaks the cycle
    from fastgrad import grad
    a, b, y = chain
    before = _refcounts(a, b, y)
    exc = _raise_during(lambda: grad(y, [a, b], create_graph=True),
                        lambda e: _innermost(e) == sweep_line)
    assert len(getattr(exc, ATTR)) > 0
    del exc
    gc.collect()
    assert _refcounts(a, b, y) == before


def test_hand_over_off_frees_before_raising(chain, sweep_line):
    from fastgrad import _higher, grad
    a, b, y = chain
    before = _refcounts(a, b, y)
    was = _higher._set_hand_over(False)
    try:
        exc = _raise_during(lambda: grad(y, [a, b], create_graph=True),
                            lambda e: _innermost(e) == sweep_line)
    finally:
        _higher._set_hand_over(was)
    assert not hasattr(exc, ATTR) and _grads_zero(a, b, y)
    _drop(exc)
    assert _refcounts(a, b, y) == before     # freed before the exception arrived


@pytest.mark.parametrize("exc_type", [_Timeout, _Frozen])
def test_other_exceptions_from_a_signal_handler(chain, sweep_line, exc_type):
    # any exception but MemoryError carries the partial graph; one that
    # cannot (its __setattr__ refuses) gets none and the graph is freed
    # before it propagates; either way nothing leaks and no slot changes
    from fastgrad import grad
    a, b, y = chain
    before = _refcounts(a, b, y)
    exc = _raise_during(lambda: grad(y, [a, b], create_graph=True),
                        lambda e: _innermost(e) == sweep_line, exc_type)
    assert _grads_zero(a, b, y)
    _drop(exc)
    if exc_type is _Frozen:
        assert not hasattr(exc, ATTR)
        assert _refcounts(a, b, y) == before
    else:
        assert len(getattr(exc, ATTR)) > 0
        assert sum(_refcounts(a, b)) > sum(before[:2]) + 10
    del exc
    assert _refcounts(a, b, y) == before


def test_first_order_and_hvp_sweeps_hold_nothing(chain):
    # the sweeps that build no Values free nothing on an interrupt: their
    # exceptions carry no graph and the leaves' counts are unchanged
    from fastgrad import grad
    from fastgrad.functional import hvp
    a, b, y = chain
    before = _refcounts(a, b, y)
    for call in (lambda: grad(y, [a, b]), lambda: hvp(lambda xs: y, [a, b], [1.0, 0.5])):
        exc = interrupt_inside(call, "_higher")
        assert not hasattr(exc, ATTR) and _grads_zero(a, b, y)
        _drop(exc)
        del exc
        assert _refcounts(a, b, y) == before
