"""Ctrl-C in the middle of a compiled loop, for tests that must pass on a busy
machine and under the sanitizer build (issue 26).

A terminal's Ctrl-C is a SIGINT the kernel delivers whatever the process is
doing; here a one-shot timer (``setitimer`` on the process's CPU time,
SIGPROF, with Python's SIGINT handler) plays it, so that it also lands while
a loop holds the GIL (a thread calling ``os.kill`` would wait for the GIL).
Whether it lands inside the loop or in the code around it depends on the
delay, so :func:`interrupt_inside` tries a few, bisecting, and reports the
attempt that was interrupted inside the compiled module (seen from the
traceback): no timing bound is asserted, only where the interrupt surfaced
and the state after it.
Latencies are measured in ``benchmarks/bench_interrupt.py``.
"""
import os
import signal
import sys
import threading
import traceback

import pytest

needs_timer_signal = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(signal, "setitimer")
    or threading.current_thread() is not threading.main_thread(),
    reason="needs setitimer and signals delivered to the main thread")


class CtrlCAfter:
    """Deliver a KeyboardInterrupt asynchronously after ``delay`` seconds of
    this process's CPU time, as a terminal's Ctrl-C does: an OS timer signal
    (SIGPROF, ``ITIMER_PROF``) whose handler is Python's SIGINT handler.

    CPU time, not wall time: on a loaded machine (or under the sanitizer)
    the process gets a fraction of a core, and a wall-clock delay would land
    at a different point of the call every time."""

    def __init__(self, delay):
        self.delay = delay

    def __enter__(self):
        self.old = signal.signal(signal.SIGPROF, signal.default_int_handler)
        signal.setitimer(signal.ITIMER_PROF, self.delay)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, self.old)
        return False


def innermost_file(exc):
    return traceback.extract_tb(exc.__traceback__)[-1].filename


def interrupt_inside(call, module, check=None, delay=0.02, attempts=12):
    """Run ``call()`` with a Ctrl-C ``delay`` s of CPU time after its start,
    until one attempt raises KeyboardInterrupt from inside ``module`` (a
    source file name prefix such as ``"_higher"``); return that exception.

    ``check()`` (optional) runs after every attempt, interrupted anywhere or
    not: the state must be consistent each time.  An attempt that finishes
    before the timer fires was too late, one interrupted elsewhere (the Python
    code or another module's loop before it) too early; the next delay
    bisects between the two.  Fails when no attempt was interrupted inside ``module``: the loop
    does not answer Ctrl-C (it ran to its end, the interrupt surfacing after
    it), or the call is too short to be interrupted at all.
    """
    seen = []
    early, late = 0.0, None        # delays known to land before / after the loop
    for i in range(2 * attempts):
        if i >= attempts:
            # The bisection takes an interrupt elsewhere for "too early", but
            # one that lands in the cleanup after the loop (restoring the grad
            # slots, a few ms) surfaces in the Python code after it too and
            # sends the bisection past the loop (seen once in the sanitizer
            # build: the first-order grad sweep).  So then scan the whole
            # call, at delays spread evenly up to the shortest it outran.
            if i == attempts:
                span = late if late is not None else delay
            delay = span * (i - attempts + 0.5) / attempts
        exc = None
        try:
            with CtrlCAfter(delay):
                call()
        except KeyboardInterrupt as e:
            exc = e
        if check is not None:
            check()
        if exc is None:
            seen.append(f"finished before the interrupt ({delay:.3g} s)")
            late = delay if late is None else min(late, delay)
        else:
            where = innermost_file(exc)
            if os.path.basename(where).startswith(module):
                return exc
            seen.append(f"interrupted in {os.path.basename(where)} ({delay:.3g} s)")
            early = max(early, delay)
        if i >= attempts - 1:
            continue                   # (scanning)
        if late is not None and early >= late:
            early, late = 0.0, None    # inconsistent (noise): start again
        # bisect between the latest early and the earliest late delay (halving
        # or doubling alone can alternate around a loop shorter than the delay)
        if late is None:
            delay *= 2
        elif early == 0.0:
            delay = late / 2
        else:
            delay = (early + late) / 2
    pytest.fail(f"no Ctrl-C surfaced inside {module} in {2 * attempts} attempts: {seen}")
