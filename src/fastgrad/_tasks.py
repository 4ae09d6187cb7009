"""Independent tasks on a :class:`concurrent.futures.Executor`, keeping every
result a failure does not take.

The machinery under :func:`fastgrad.distributed.sweep` and
``fastgrad.optim.lr_sweep(..., executor=...)`` (the public API is
:mod:`fastgrad.distributed`): shipping a callable to the workers (cloudpickle
when installed), a worker-side cache, one task per configuration in a bounded
window, the failure of a configuration (its exception and traceback from the
worker), and a worker process that dies (the configurations in flight re-run
one at a time on a fresh pool, up to ``retries`` times).  It imports nothing of
fastgrad's library, so that ``fastgrad.optim`` (below ``fastgrad.distributed``
in the layers, ARCHITECTURE.md) can use it without importing the scale-out
package; ``DataParallel`` uses its shipping and cache too.
"""
from __future__ import annotations

import importlib
import numbers
import pickle
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from typing import Any, Callable, TypeVar

__all__ = ["SweepError", "SweepFailure", "SweepResult", "run_all", "check_executor",
           "check_retries"]

Config = dict[str, Any]


_C = TypeVar("_C", bound=type)


def _public(cls: _C) -> _C:
    """Name a class by its public module (tracebacks, reprs, pickles)."""
    cls.__module__ = "fastgrad.distributed"
    return cls


# ---------------------------------------------------------------------------
# shipping callables to workers
# ---------------------------------------------------------------------------

def _optional(name: str) -> Any:
    """An optional dependency's module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _dumps(obj: object, what: str, where: str) -> bytes:
    """Pickle ``obj`` for a worker: cloudpickle if installed, else pickle."""
    cloudpickle = _optional("cloudpickle")
    try:
        if cloudpickle is not None:
            return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        hint = ("" if cloudpickle is not None else
                "; lambdas, closures and functions of an interactive session "
                "need cloudpickle (pip install cloudpickle), otherwise define "
                "them at module level in an importable module")
        raise TypeError(f"{where}: cannot send {what} to the workers: "
                        f"{exc}{hint}") from exc


# Worker-side cache, keyed by (token, item): what a task unpickled or built
# once (a sweep's function, a data-parallel shard and its Program) is reused by
# the next task of the same job in that process.  Dask runs tasks in threads:
# the lock guards the dict.  Bounded: the least recently used jobs go first.
_CACHE_LOCK = threading.Lock()
_CACHE: OrderedDict[str, dict[int, Any]] = OrderedDict()
_CACHE_JOBS = 4


def _cache_get(token: str, item: int) -> Any:
    with _CACHE_LOCK:
        job = _CACHE.get(token)
        if job is None:
            return None
        _CACHE.move_to_end(token)
        return job.get(item)


def _cache_put(token: str, item: int, value: Any) -> None:
    with _CACHE_LOCK:
        job = _CACHE.setdefault(token, {})
        job[item] = value
        _CACHE.move_to_end(token)
        while len(_CACHE) > _CACHE_JOBS:
            _CACHE.popitem(last=False)


def _forget(token: str) -> None:
    """Drop a job's cached objects in this process."""
    with _CACHE_LOCK:
        _CACHE.pop(token, None)


def _loads_cached(token: str, blob: bytes) -> Any:
    obj = _cache_get(token, -1)
    if obj is None:
        obj = pickle.loads(blob)
        _cache_put(token, -1, obj)
    return obj


# ---------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------

@_public
class SweepFailure:
    """One configuration of a sweep that produced no result.

    Attributes
    ----------
    index : int
        Its position in grid order.
    config : dict
        Its parameters (the keyword arguments of ``train_fn``).
    kind : {"exception", "worker died", "not run"}
        ``train_fn`` raised; the worker process died while running it (after
        the retries); the executor broke before it could run.
    error : str
        ``"ExceptionType: message"``.
    traceback : str
        The formatted traceback, from the worker where it happened.
    """

    def __init__(self, index: int, config: Config, kind: str, error: str,
                 traceback: str) -> None:
        self.index = index
        self.config = config
        self.kind = kind
        self.error = error
        self.traceback = traceback

    def __repr__(self) -> str:
        return (f"SweepFailure(index={self.index}, config={self.config!r}, "
                f"kind={self.kind!r}, error={self.error!r})")


@_public
class SweepResult:
    """Outcome of :func:`sweep`, in grid order.

    Attributes
    ----------
    configs : list of dict
        Every configuration (with ``"seed"`` when ``seeds`` was given).
    results : list
        ``train_fn(**config)`` for each configuration; None for a failed one.
    failures : list of SweepFailure
        The configurations without a result (empty when all ran).
    retried : list of int
        Indices of configurations that were run again because a worker
        process died while they were in flight (their result is kept).
    """

    def __init__(self, configs: list[Config], results: list[Any],
                 failures: list[SweepFailure], retried: list[int]) -> None:
        self.configs = configs
        self.results = results
        self.failures = failures
        self.retried = retried

    @property
    def ok(self) -> bool:
        """True when every configuration produced a result."""
        return not self.failures

    def __len__(self) -> int:
        return len(self.configs)

    def __iter__(self) -> Iterator[tuple[Config, Any]]:
        return iter(zip(self.configs, self.results))

    def __repr__(self) -> str:
        return (f"SweepResult({len(self.configs)} configurations, "
                f"{len(self.failures)} failed)")


@_public
class SweepError(RuntimeError):
    """Some configurations of a sweep failed; the others' results are kept.

    Attributes
    ----------
    result : SweepResult or fastgrad.optim.LRSweepResult
        Everything that did run (for ``lr_sweep``: the rates that ran).
    failures : list of SweepFailure
    """

    def __init__(self, result: Any, failures: list[SweepFailure]) -> None:
        self.result = result
        self.failures = failures
        total = (len(result.configs) if hasattr(result, "configs")
                 else len(failures) + len(getattr(result, "lrs", ())))
        head = (f"{len(failures)} of {total} configurations failed (tracebacks: "
                ".failures[i].traceback; the other results: .result):")
        lines = [head]
        for f in failures[:20]:
            lines.append(f"  [{f.index}] {f.config!r}: {f.kind}: {f.error}")
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more")
        super().__init__("\n".join(lines))



def _run_config(token: str, blob: bytes, config: Config, attempt: int,
                ship: bool) -> tuple[str, Any, str]:
    """Worker side of a sweep task: ("ok", result, "") or ("error", msg, tb).

    Exceptions are returned as text: an exception object may not pickle, its
    traceback never does.  Any exception of ``train_fn`` is its
    configuration's failure -- ``SystemExit`` (``sys.exit()``, argparse's
    ``parser.error``) and other BaseExceptions too -- except
    KeyboardInterrupt, which interrupts the sweep.  With ``ship`` (a worker
    in another process) the result is pickled here, so that a result that
    does not pickle, or will not unpickle on the driver, is reported with its
    own error by the driver instead of breaking the executor.  ``attempt``
    only makes a retry a new task for engines that name tasks by their
    arguments (Dask would hand back the failed one).
    """
    try:
        fn = _loads_cached(token, blob)
        result = fn(**config)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of train_fn is reported
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    if not ship:
        return ("ok", result, "")
    try:
        return ("ok", _dumps_result(result), "")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported per configuration
        return ("error", f"the result of train_fn cannot be pickled to go back to the "
                f"driver: {type(exc).__name__}: {exc}", traceback.format_exc())


def _dumps_result(obj: object) -> bytes:
    cloudpickle = _optional("cloudpickle")
    if cloudpickle is not None:
        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _max_workers(executor: Executor) -> int | None:
    n = getattr(executor, "_max_workers", None)      # Process/ThreadPoolExecutor
    return n if isinstance(n, int) and n > 0 else None


def _fresh_pool(broken: Executor) -> Executor | None:
    """A new ProcessPoolExecutor with a broken one's settings (else None)."""
    if not isinstance(broken, ProcessPoolExecutor):
        return None
    kwargs: dict[str, Any] = {
        "max_workers": broken._max_workers,                 # type: ignore[attr-defined]
        "mp_context": getattr(broken, "_mp_context", None),
        "initializer": getattr(broken, "_initializer", None),
        "initargs": getattr(broken, "_initargs", ()),
    }
    if sys.version_info >= (3, 11):
        kwargs["max_tasks_per_child"] = getattr(broken, "_max_tasks_per_child", None)
    return ProcessPoolExecutor(**kwargs)


def _progress_bar(progress: bool | None, total: int, desc: str) -> Any:
    if progress is not None and not progress:       # False, numpy.False_
        return None
    tqdm_auto = _optional("tqdm.auto")
    if tqdm_auto is None:
        return None
    return tqdm_auto.tqdm(total=total, desc=desc, unit="run")


def _format_exc(exc: BaseException) -> tuple[str, str]:
    return (f"{type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def run_all(train_fn: Callable[..., Any], configs: list[Config],
            executor: Executor | None, progress: bool | None,
            retries: int, where: str, timeout: float | None = None) -> SweepResult:
    """Run ``train_fn(**config)`` for each configuration; never raises for a
    configuration's failure (they are in the result's ``failures``)."""
    n = len(configs)
    results: list[Any] = [None] * n
    failures: dict[int, SweepFailure] = {}
    retried: list[int] = []
    bar = _progress_bar(progress, n, where)

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    try:
        if executor is None:
            for i, cfg in enumerate(configs):
                try:
                    results[i] = train_fn(**cfg)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - reported per configuration
                    msg, tb = _format_exc(exc)
                    failures[i] = SweepFailure(i, cfg, "exception", msg, tb)
                tick()
        else:
            _Window(executor, train_fn, configs, results, failures, retried,
                    retries, timeout, tick, where).run()
    finally:
        if bar is not None:
            bar.close()
    return SweepResult(configs, results, [failures[i] for i in sorted(failures)],
                       sorted(set(retried)))


def _kill_workers(executor: Executor) -> bool:
    """SIGKILL the worker processes of a ProcessPoolExecutor (it breaks: the
    tasks it holds fail with BrokenProcessPool).  False for other executors."""
    if not isinstance(executor, ProcessPoolExecutor):
        return False
    procs = getattr(executor, "_processes", None) or {}
    for p in list(procs.values()):
        try:
            p.kill()
        except (OSError, ValueError, AttributeError):   # already gone or closed
            pass
    return True


# How often the driver looks at the tasks in flight while a timeout is set
# (their deadlines; whether a thread-pool task has started), and at most how
# long it blocks otherwise: a SIGINT the OS delivers to another thread (Dask's,
# tqdm's) only raises KeyboardInterrupt once the main thread runs Python again.
_POLL_S = 0.05
_WAKE_S = 0.25


class _Window:
    """One sweep on an executor: a bounded window of tasks in flight.

    At most ``max_workers + 1`` tasks are in flight (when the executor says
    how many workers it has; the one extra keeps a worker that finishes from
    waiting for the driver), ``max_workers`` while a timeout is set (so a
    task starts when it is submitted).  When a worker process dies, the
    configurations in flight are the only suspects, and those never
    submitted are unaffected: the suspects run again one at a time on a new
    pool (``retries`` times each).  Pools the sweep makes itself are its own:
    killed on an interrupt or an error, shut down at the end.
    """

    def __init__(self, executor: Executor, train_fn: Callable[..., Any],
                 configs: list[Config], results: list[Any],
                 failures: dict[int, SweepFailure], retried: list[int], retries: int,
                 timeout: float | None, tick: Callable[[], None], where: str) -> None:
        self.configs = configs
        self.results = results
        self.failures = failures
        self.retried = retried
        self.retries = retries
        self.timeout = timeout
        self.tick = tick
        self.token = uuid.uuid4().hex
        self.blob = _dumps(train_fn, "train_fn", where)
        self.pending: deque[int] = deque(range(len(configs)))
        self.isolate: deque[int] = deque()     # suspects of a crash, one at a time
        self.crashes = [0] * len(configs)
        self.inflight: dict[Future[tuple[str, Any, str]], int] = {}
        self.since: dict[Future[tuple[str, Any, str]], float] = {}   # started (monotonic)
        self.stuck: list[Future[tuple[str, Any, str]]] = []   # timed-out threads
        self.current: Executor | None = executor
        self.own: list[Executor] = []
        client = _dask_client(executor)
        nw = (sum(client.nthreads().values()) if client is not None
              else _max_workers(executor))
        self.nw = nw if nw else None
        # a thread pool runs tasks in this process: results need no pickling,
        # and a task's start is seen (Future.running()); elsewhere a timeout
        # counts from the submission
        self.threads = isinstance(executor, ThreadPoolExecutor)

    # -- the loop ---------------------------------------------------------

    def run(self) -> None:
        try:
            while self.pending or self.isolate or self.inflight:
                broken = self._submit()
                if broken and not self.inflight:
                    self._replace_pool()
                    continue
                if not self.inflight:
                    self._not_run()
                    break
                wait_s = _WAKE_S if self.timeout is None else _POLL_S
                done, _ = wait(list(self.inflight), timeout=wait_s,
                               return_when=FIRST_COMPLETED)
                crashed: dict[int, BaseException] = {}
                for f in done:
                    broken |= self._collect(f, crashed)
                if broken and self.inflight:
                    # a broken pool fails every task it still holds
                    wait(list(self.inflight))
                    for f in list(self.inflight):
                        self._collect(f, crashed)
                self._file_crashes(crashed)
                if self.timeout is not None and self._expire():
                    broken = True
                if broken:
                    self._replace_pool()
        except BaseException:
            # Ctrl-C, or an error of the sweep itself: return at once.  Tasks
            # not started are cancelled; the sweep's own pools are killed; a
            # task already running on the executor you passed runs on there
            # (its result is dropped) -- the executor itself stays usable.
            for f in self.inflight:
                f.cancel()
            for ex in self.own:
                _kill_workers(ex)
                ex.shutdown(wait=False, cancel_futures=True)
            self.own.clear()
            raise
        finally:
            for ex in self.own:            # all their tasks are done
                ex.shutdown(wait=True, cancel_futures=True)

    def _submit(self) -> bool:
        """Fill the window; True if the executor turned out to be broken."""
        if self.current is None:
            return False
        queue = self.isolate if self.isolate else self.pending
        if self.isolate:
            limit: int | None = 1
        elif self.nw is None:
            limit = None
        else:
            # threads held by timed-out tasks do not take new ones
            held = sum(not f.done() for f in self.stuck)
            limit = max(1, self.nw - held) if self.timeout is not None else self.nw + 1
        now = time.monotonic()
        while queue and (limit is None or len(self.inflight) < limit):
            i = queue[0]
            try:
                f = self.current.submit(_run_config, self.token, self.blob,
                                        self.configs[i], self.crashes[i], not self.threads)
            except BrokenExecutor:           # it broke since the last wait
                return True
            queue.popleft()
            self.inflight[f] = i
            if not self.threads:
                self.since[f] = now
        return False

    def _replace_pool(self) -> None:
        current = self.current
        self.current = _fresh_pool(current) if current is not None else None
        if self.current is not None:
            self.own.append(self.current)
        if current is not None and current in self.own:
            self.own.remove(current)
            current.shutdown(wait=False, cancel_futures=True)

    def _not_run(self) -> None:
        """The executor is broken and cannot be replaced: report the rest."""
        for i in list(self.isolate) + list(self.pending):
            if i not in self.failures:
                self.failures[i] = SweepFailure(
                    i, self.configs[i], "not run", "the executor broke before "
                    "this configuration could run", "")
                self.tick()
        self.isolate.clear()
        self.pending.clear()

    # -- outcomes ---------------------------------------------------------

    def _collect(self, f: Future[tuple[str, Any, str]],
                 crashed: dict[int, BaseException]) -> bool:
        """File the outcome of a finished task; True if the pool broke."""
        i = self.inflight.pop(f)
        self.since.pop(f, None)
        try:
            status, value, tb = f.result()
        except BrokenExecutor as exc:            # the process pool lost a worker
            crashed[i] = exc
            return True
        except Exception as exc:  # noqa: BLE001 - reported per configuration
            if type(exc).__name__ == "KilledWorker":     # Dask: its worker died
                crashed[i] = exc
                return False
            msg, tb = _format_exc(exc)           # e.g. a config that does not pickle
            self._fail(i, "exception", msg, tb)
            return False
        if status != "ok":
            self._fail(i, "exception", value, tb)
        elif self.threads:
            self.results[i] = value
            self.tick()
        else:
            try:
                self.results[i] = pickle.loads(value)
            except Exception as exc:  # noqa: BLE001 - reported per configuration
                msg, tb = _format_exc(exc)
                self._fail(i, "exception", "its result was computed but cannot be "
                           f"unpickled on the driver: {msg}", tb)
                return False
            self.tick()
        return False

    def _fail(self, i: int, kind: str, error: str, tb: str) -> None:
        self.failures[i] = SweepFailure(i, self.configs[i], kind, error, tb)
        self.tick()

    def _file_crashes(self, crashed: dict[int, BaseException]) -> None:
        for i in sorted(crashed):
            self.crashes[i] += 1
            if self.crashes[i] > self.retries:
                msg, tb = _format_exc(crashed[i])
                n_others = len(crashed) - 1 + len(self.inflight)
                others = ("alone" if n_others == 0 else
                          f"with {n_others} other run(s) in flight")
                self._fail(i, "worker died",
                           f"{msg} (its worker process died while it ran, {others}; "
                           f"{self.crashes[i]} time(s))", tb)
            else:
                self.retried.append(i)
                self.isolate.append(i)

    def _expire(self) -> bool:
        """Fail the tasks past the timeout; True if that broke the pool (its
        worker processes were killed: the other tasks in flight run again)."""
        assert self.timeout is not None
        now = time.monotonic()
        if self.threads:
            for f in self.inflight:
                if f not in self.since and f.running():
                    self.since[f] = now
        late = [f for f, t0 in self.since.items() if now - t0 > self.timeout]
        if not late:
            return False
        killed = self.current is not None and _kill_workers(self.current)
        how = ("its worker process was killed" if killed else
               "a thread cannot be stopped: it runs on in the executor"
               if self.threads else
               "cancelled; a task already running on this executor runs on")
        for f in late:
            i = self.inflight.pop(f)
            del self.since[f]
            f.cancel()
            if self.threads:
                self.stuck.append(f)
            self._fail(i, "timed out",
                       f"TimeoutError: still running after timeout={self.timeout:g} s "
                       f"({how})", "")
        if not killed:
            return False
        # the pool is broken: its other tasks are innocent, run them again
        for f, i in sorted(self.inflight.items(), key=lambda kv: -kv[1]):
            f.cancel()
            self.pending.appendleft(i)
        self.inflight.clear()
        self.since.clear()
        return True


def check_retries(retries: int, where: str) -> int:
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise ValueError(f"{where}: retries must be an int >= 0, got {retries!r}")
    return int(retries)


def check_executor(executor: Any, where: str) -> Executor | None:
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"{where}: executor must be a concurrent.futures.Executor "
                        f"(or None to run serially), got {type(executor).__name__}")
    client = _dask_client(executor)
    if client is not None and client is executor:
        # a Dask Client's own futures are not concurrent.futures ones
        return client.get_executor()   # type: ignore[no-any-return]
    return executor  # type: ignore[no-any-return]



def _dask_client(executor: Any) -> Any:
    """The ``distributed.Client`` behind a Dask Client/ClientExecutor, else None."""
    mod = type(executor).__module__ or ""
    if not mod.startswith("distributed"):
        return None
    dd = _optional("distributed")
    if dd is None:
        return None
    if isinstance(executor, dd.Client):
        return executor
    if isinstance(executor, dd.client.ClientExecutor):
        return executor._client
    return None


