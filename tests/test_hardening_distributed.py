"""Issue 26 items 2, 3, 7 and 8: sweeps that never hang and never lose a
result, DataParallel on a Dask cluster without workers.

No wall-clock bound here: a test that could hang has a watchdog that fails it
after minutes, and "returns at once" is checked as "returned, with the hung
task still hung" (a hung task ends only when the test releases it, or is
killed).  Latencies are measured in benchmarks/bench_interrupt.py.
"""
import argparse
import multiprocessing as mp
import os
import pathlib
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from fastgrad.distributed import SweepError, sweep

LINUX = sys.platform.startswith("linux")


def _context():
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["fastgrad.distributed"])
    return ctx


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except (FileNotFoundError, ProcessLookupError):
        # gone before the open (ENOENT) or between the open and the read (ESRCH)
        return False


def _eventually(cond, timeout=120.0):
    """Poll cond() until true; False after a generous timeout (a watchdog,
    not a latency bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _interrupt_main_when(cond, release=None, after=60.0):
    """Deliver SIGINT to the main thread once cond() is true (from a thread);
    if ``release`` is given, create that file ``after`` seconds later (a
    watchdog: a sweep that waits for its hung task then returns, and the test
    fails on what it finds instead of hanging).

    ``pthread_kill`` to the main thread: a process-directed signal may land
    in any thread, and a thread blocked in a lock wait only sees it on its
    next wake-up (the sweep's driver wakes every 0.25 s for that case)."""
    main = threading.main_thread().ident
    stop = threading.Event()

    def run():
        if _eventually(cond):
            signal.pthread_kill(main, signal.SIGINT)
            if release is not None and not stop.wait(after):
                pathlib.Path(release).touch()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop


# -- worker-side helpers (module level: the workers import them by name) -------

def _hang_if(a, hang, mark):
    """Return a * 10; for a == hang write this process's pid to ``mark`` and
    hang until ``mark + '.go'`` exists (never, unless the test releases it)."""
    if a == hang:
        # written whole, then renamed into place: the test polls for ``mark``
        # and reads the pid as soon as it exists (a plain write_text let it
        # read the empty file between create and write, once in CI)
        pathlib.Path(mark + ".tmp").write_text(str(os.getpid()))
        os.replace(mark + ".tmp", mark)
        while not os.path.exists(mark + ".go"):
            time.sleep(0.01)
    return a * 10


def _exit_if(a):
    if a == 1:
        sys.exit(3)
    if a == 2:
        parser = argparse.ArgumentParser(prog="train.py")
        parser.add_argument("--lr", type=float, required=True)
        parser.parse_args([])           # parser.error(...): SystemExit(2)
    if a == 3:
        raise GeneratorExit("a BaseException that is not an Exception")
    return -a


def _explode_on_driver(driver_pid):
    if os.getpid() == driver_pid:
        raise ImportError("no module named 'only_on_workers' (on the driver)")
    return "unpickled in a worker"


class _OnlyOnWorkers:
    """A result that pickles in the worker and fails to unpickle on the driver
    (like an instance of a class the driver cannot import)."""

    def __init__(self, driver_pid):
        self.driver_pid = driver_pid

    def __reduce__(self):
        return (_explode_on_driver, (self.driver_pid,))


def _result_of(a, driver_pid):
    if a == 1:
        return _OnlyOnWorkers(driver_pid)
    if a == 2:
        return threading.Lock()         # cannot be pickled at all
    return a + 100


def _kill_self_if(a, kill):
    if a == kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return a


# -- item 2: timeout, Ctrl-C ---------------------------------------------------

@pytest.mark.skipif(not LINUX, reason="/proc")
def test_issue26_item2_sweep_timeout_kills_the_hung_worker_and_keeps_the_others(tmp_path):
    mark = str(tmp_path / "hung")
    with ProcessPoolExecutor(2, mp_context=_context()) as pool:
        res = sweep(_hang_if, {"a": [0, 1, 2, 3, 4], "hang": [2], "mark": [mark]},
                    executor=pool, timeout=10.0, errors="keep", progress=False)
    assert res.results == [0, 10, None, 30, 40]
    [f] = res.failures
    assert (f.index, f.kind) == (2, "timed out")
    assert "timeout=10 s" in f.error and "worker process was killed" in f.error
    pid = int(pathlib.Path(mark).read_text())
    assert _eventually(lambda: not _alive(pid)), "the hung worker still runs"
    assert not os.path.exists(mark + ".go")      # it was killed, not released


def test_issue26_item2_sweep_timeout_on_a_thread_pool_reports_and_moves_on(tmp_path):
    mark = str(tmp_path / "hung")
    with ThreadPoolExecutor(2) as pool:
        try:
            res = sweep(_hang_if, {"a": [0, 1, 2, 3], "hang": [1], "mark": [mark]},
                        executor=pool, timeout=3.0, errors="keep", progress=False)
            assert res.results == [0, None, 20, 30]
            assert res.failures[0].kind == "timed out"
            assert "thread cannot be stopped" in res.failures[0].error
        finally:
            pathlib.Path(mark + ".go").touch()      # let the thread end


def test_issue26_item2_sweep_timeout_bad_values():
    with pytest.raises(ValueError, match="timeout needs an executor"):
        sweep(lambda a: a, {"a": [1]}, timeout=1.0)
    with ThreadPoolExecutor(1) as pool:
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="timeout must be > 0"):
                sweep(lambda a: a, {"a": [1]}, executor=pool, timeout=bad)
        with pytest.raises(TypeError, match="timeout must be a number"):
            sweep(lambda a: a, {"a": [1]}, executor=pool, timeout="1")


@pytest.mark.skipif(not LINUX, reason="pthread_kill, /proc")
def test_issue26_item2_ctrl_c_returns_and_leaves_the_users_executor_usable(tmp_path):
    mark = str(tmp_path / "hung")
    with ProcessPoolExecutor(2, mp_context=_context()) as pool:
        try:
            stop = _interrupt_main_when(lambda: os.path.exists(mark), release=mark + ".go")
            with pytest.raises(KeyboardInterrupt):
                sweep(_hang_if, {"a": list(range(8)), "hang": [0], "mark": [mark]},
                      executor=pool, progress=False)
            stop.set()
            # returned while its task still hangs: the sweep did not wait for it
            assert not os.path.exists(mark + ".go"), "the sweep waited for its hung task"
            pid = int(pathlib.Path(mark).read_text())
            assert _alive(pid), f"the hung task's worker {pid} is gone"
            # the executor is not broken and not shut down: it takes new work
            # (its other worker is free), and the running task ends normally
            assert pool.submit(abs, -5).result(timeout=120) == 5
            pathlib.Path(mark + ".go").touch()
            assert pool.submit(_hang_if, 9, -1, mark).result(timeout=120) == 90
        finally:
            # whatever failed above, release the hung task: leaving the with
            # block waits for it (a failure here once became a hang)
            pathlib.Path(mark + ".go").touch()


@pytest.mark.skipif(not LINUX, reason="pthread_kill, /proc, SIGKILL")
def test_issue26_item2_ctrl_c_after_a_crash_kills_the_sweeps_own_workers(tmp_path):
    # config 0 kills its worker: the pool breaks, the suspects run again one
    # at a time on a pool the sweep makes; config 1 hangs there; Ctrl-C
    mark = str(tmp_path / "hung")
    runs = tmp_path / "runs_of_1"

    def train(a):
        if a == 0:
            # crash once config 1 runs beside it: 1 is then a suspect, run
            # again alone on a pool the sweep makes
            _eventually(runs.exists, timeout=60)
            os.kill(os.getpid(), signal.SIGKILL)
        if a == 1:
            with open(runs, "a") as f:
                f.write("x")
            if runs.read_text() == "x":
                # first run, beside config 0 in the executor passed: that pool
                # breaks under it (and kills it)
                time.sleep(600)
        return _hang_if(a, 1, mark)    # the retry, on the sweep's own pool: hangs

    with ProcessPoolExecutor(2, mp_context=_context()) as pool:
        try:
            stop = _interrupt_main_when(lambda: os.path.exists(mark), release=mark + ".go")
            with pytest.raises(KeyboardInterrupt):
                sweep(train, {"a": [0, 1, 2]}, executor=pool, retries=1, progress=False)
            stop.set()
            assert not os.path.exists(mark + ".go"), "the sweep waited for its hung task"
            pid = int(pathlib.Path(mark).read_text())
            assert pid not in pool._processes    # a worker of the sweep's own pool
            assert _eventually(lambda: not _alive(pid)), "the sweep's own worker still runs"
        finally:
            pathlib.Path(mark + ".go").touch()  # never leave a task hanging


def test_issue26_item2_ctrl_c_in_a_serial_sweep_propagates():
    calls = []

    def train(a):
        calls.append(a)
        if a == 1:
            raise KeyboardInterrupt
        return a

    with pytest.raises(KeyboardInterrupt):
        sweep(train, {"a": [0, 1, 2]}, progress=False)
    assert calls == [0, 1]


# -- item 3: SystemExit and other BaseExceptions --------------------------------

@pytest.mark.parametrize("kind", ["serial", "threads", "processes"])
def test_issue26_item3_sys_exit_in_train_fn_is_that_configurations_failure(kind, capsys):
    ex = (None if kind == "serial" else ThreadPoolExecutor(2) if kind == "threads"
          else ProcessPoolExecutor(2, mp_context=_context()))
    try:
        with pytest.raises(SweepError) as info:
            sweep(_exit_if, {"a": [0, 1, 2, 3, 4]}, executor=ex, progress=False)
    finally:
        if ex is not None:
            ex.shutdown()
    err = info.value
    assert err.result.results == [0, None, None, None, -4]
    kinds = [(f.index, f.kind, f.error.split(":")[0]) for f in err.failures]
    assert kinds == [(1, "exception", "SystemExit"), (2, "exception", "SystemExit"),
                     (3, "exception", "GeneratorExit")]
    assert err.failures[0].error == "SystemExit: 3"
    assert "parse_args" in err.failures[1].traceback
    assert "the following arguments are required: --lr" in capsys.readouterr().err \
        or kind == "processes"          # (a worker's stderr is its own)


def test_issue26_item3_lr_sweep_sys_exit_is_that_rates_failure():
    from fastgrad import Value
    from fastgrad.optim import lr_sweep

    def loss_fn(ps):
        if ps[0].data < -1.5:                  # only the largest rate gets there
            sys.exit("diverged")
        return ps[0] * ps[0]

    with ThreadPoolExecutor(2) as ex, pytest.raises(SweepError) as info:
        lr_sweep(lambda: [Value(1.0)], loss_fn, lrs=[0.1, 1.5], steps=3, executor=ex,
                 progress=False)
    assert [f.config for f in info.value.failures] == [{"lr": 1.5}]
    assert info.value.failures[0].error == "SystemExit: diverged"
    assert list(info.value.result.lrs) == [0.1]


# -- item 7: a result that does not come back ----------------------------------

def test_issue26_item7_result_that_fails_to_unpickle_on_the_driver_is_reported(tmp_path):
    with ProcessPoolExecutor(2, mp_context=_context()) as pool:
        res = sweep(_result_of, {"a": [0, 1, 2, 3], "driver_pid": [os.getpid()]},
                    executor=pool, errors="keep", progress=False)
        assert res.results == [100, None, None, 103]
        bad = {f.index: f for f in res.failures}
        assert bad[1].kind == "exception"
        assert "cannot be unpickled on the driver" in bad[1].error
        assert "no module named 'only_on_workers' (on the driver)" in bad[1].error
        assert "worker died" not in bad[1].error and not res.retried
        assert "cannot be pickled" in bad[2].error and "lock" in bad[2].error
        # the executor is not broken
        assert pool.submit(abs, -3).result(timeout=120) == 3


def test_issue26_item7_thread_pool_results_are_not_pickled():
    # in-process workers hand back the object itself, picklable or not
    with ThreadPoolExecutor(2) as pool:
        res = sweep(lambda a: threading.Lock() if a else a, {"a": [0, 1]},
                    executor=pool, progress=False)
    assert res.results[0] == 0 and hasattr(res.results[1], "acquire")


def test_issue26_item7_numpy_false_hides_the_progress_bar(capsys):
    sweep(lambda a: a, {"a": [1, 2]}, progress=np.False_)
    assert "it/s" not in capsys.readouterr().err and "run/s" not in capsys.readouterr().err


# -- item 8: a Dask cluster with no worker yet ----------------------------------

_UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(_UNDER_ASAN, reason="Dask's nannies kill workers under AddressSanitizer")
@pytest.mark.compiled_only("DataParallel records a compiled Program")
def test_issue26_item8_data_parallel_on_a_dask_cluster_without_workers():
    distributed = pytest.importorskip("distributed")
    from fastgrad import Value
    from fastgrad.distributed import DataParallel
    w = Value(1.0)
    X = np.arange(6.0).reshape(6, 1)
    from test_distributed import DASK_QUIET
    with distributed.LocalCluster(**DASK_QUIET, n_workers=0, processes=True) as cluster, \
            distributed.Client(cluster) as client:
        for n_shards in (None, 2):
            with pytest.raises(RuntimeError, match="has no worker yet.*wait_for_workers"):
                DataParallel(lambda v: v[0] * w, 1, [w], X, client, n_shards=n_shards)


def test_pickle_of_the_unpicklable_helper_is_what_the_test_assumes():
    # guards the item 7 test: in this (driver) process the object's pickle
    # fails to load; elsewhere it loads
    blob = pickle.dumps(_OnlyOnWorkers(os.getpid()))
    with pytest.raises(ImportError):
        pickle.loads(blob)
    assert pickle.loads(pickle.dumps(_OnlyOnWorkers(-1))) == "unpickled in a worker"
