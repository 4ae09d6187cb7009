"""Run the suite against whichever build of fastgrad is imported.

fastgrad runs compiled or, without its extension modules (or with
``FASTGRAD_NO_EXTENSIONS=1``), on its pure-Python engine; see
``fastgrad._backend``.  The suite runs in both builds.  A test of a compiled
internal (the C kernels, the replay, C-level type checks) is marked
``@pytest.mark.compiled_only("why")`` and skipped, with that reason, in the
pure-Python build.
"""
import os
import signal
import threading

import pytest

from fastgrad import _backend

if not _backend.COMPILED:
    # Running on the pure-Python build is this run's known choice: say so to
    # the interpreters that tests start (examples, `python -m fastgrad`), so
    # that they run the same build without printing its FallbackWarning.
    os.environ.setdefault(_backend.ENV_VAR, "1")


# A process started in the background by a non-interactive shell (`cmd &` in a
# script -- CI's parallel lanes -- or nohup) inherits SIGINT *ignored*, and
# Python leaves it so: the tests that press Ctrl-C with a real SIGINT
# (test_hardening_distributed.py) would see it dropped and fail after their
# watchdog.  The suite tests what a terminal's Ctrl-C does, so it runs with
# Python's usual handler, as in a terminal.
if (signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        and threading.current_thread() is threading.main_thread()):
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    where = "" if _backend.COMPILED else f" ({_backend.REASON})"
    return f"fastgrad build: {_backend.BUILD}{where}"


def pytest_collection_modifyitems(config, items):
    if _backend.COMPILED:
        return
    for item in items:
        mark = item.get_closest_marker("compiled_only")
        if mark is not None:
            why = mark.args[0] if mark.args else "tests a compiled internal"
            item.add_marker(pytest.mark.skip(
                reason=f"compiled build only: {why}"))


@pytest.fixture
def replay_modes():
    """The compiled replay's ISA and its one-row path switched on; both put
    back as they were after the test (the tests switch ISAs in-process)."""
    from fastgrad import _replay
    old_isa = _replay._isa()
    old_row = _replay._set_row_path(True)
    yield
    _replay._set_isa(old_isa)
    _replay._set_row_path(old_row)
