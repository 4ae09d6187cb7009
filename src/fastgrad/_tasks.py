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
    wait,
)
from typing import Any, Callable

__all__ = ["SweepError", "SweepFailure", "SweepResult", "run_all", "check_executor",
           "check_retries"]

Config = dict[str, Any]


def _public(cls: type) -> type:
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



def _run_config(token: str, blob: bytes, config: Config,
                attempt: int) -> tuple[str, Any, str]:
    """Worker side of a sweep task: ("ok", result, "") or ("error", msg, tb).

    Exceptions are returned as text: an exception object may not pickle, its
    traceback never does.  ``attempt`` only makes a retry a new task for
    engines that name tasks by their arguments (Dask would hand back the
    failed one).
    """
    try:
        fn = _loads_cached(token, blob)
        return ("ok", fn(**config), "")
    except Exception as exc:  # noqa: BLE001 - any failure of train_fn is reported
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())


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
    if progress is False:
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
             retries: int, where: str) -> SweepResult:
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
                except Exception as exc:  # noqa: BLE001 - reported per configuration
                    msg, tb = _format_exc(exc)
                    failures[i] = SweepFailure(i, cfg, "exception", msg, tb)
                tick()
        else:
            _run_on(executor, train_fn, configs, results, failures, retried,
                    retries, tick, where)
    finally:
        if bar is not None:
            bar.close()
    return SweepResult(configs, results, [failures[i] for i in sorted(failures)],
                       sorted(set(retried)))


def _collect(f: Future[tuple[str, Any, str]], i: int, configs: list[Config],
             results: list[Any], failures: dict[int, SweepFailure],
             crashed: dict[int, BaseException], tick: Callable[[], None]) -> bool:
    """File the outcome of configuration i's task; True if the pool broke."""
    try:
        status, value, tb = f.result()
    except BrokenExecutor as exc:            # the process pool lost a worker
        crashed[i] = exc
        return True
    except Exception as exc:  # noqa: BLE001 - reported per configuration
        if type(exc).__name__ == "KilledWorker":     # Dask: its worker died
            crashed[i] = exc
            return False
        msg, tb = _format_exc(exc)           # e.g. an unpicklable result
        failures[i] = SweepFailure(i, configs[i], "exception", msg, tb)
        tick()
        return False
    if status == "ok":
        results[i] = value
    else:
        failures[i] = SweepFailure(i, configs[i], "exception", value, tb)
    tick()
    return False


def _run_on(executor: Executor, train_fn: Callable[..., Any], configs: list[Config],
            results: list[Any], failures: dict[int, SweepFailure],
            retried: list[int], retries: int, tick: Callable[[], None],
            where: str) -> None:
    token = uuid.uuid4().hex
    blob = _dumps(train_fn, "train_fn", where)
    pending: deque[int] = deque(range(len(configs)))
    isolate: deque[int] = deque()       # suspects of a crash, re-run one at a time
    crashes = [0] * len(configs)
    inflight: dict[Future[tuple[str, Any, str]], int] = {}
    # At most max_workers + 1 tasks in flight (when the executor says how many
    # it has; the one extra keeps a worker that finishes from waiting for the
    # driver): when a worker process dies, the configurations in flight are the
    # only suspects, and those never submitted are unaffected.
    nw = _max_workers(executor)
    window = None if nw is None else nw + 1
    current: Executor | None = executor
    own: list[Executor] = []
    try:
        while pending or isolate or inflight:
            broken = False
            if current is not None:
                queue = isolate if isolate else pending
                limit = 1 if isolate else window
                while queue and (limit is None or len(inflight) < limit):
                    i = queue[0]
                    try:
                        f = current.submit(_run_config, token, blob, configs[i],
                                           crashes[i])
                    except BrokenExecutor:           # it broke since the last wait
                        broken = True
                        break
                    queue.popleft()
                    inflight[f] = i
            if broken and not inflight:
                current = _fresh_pool(current) if current is not None else None
                if current is not None:
                    own.append(current)
                continue
            if not inflight:
                # the executor is broken and cannot be replaced: report the rest
                for i in list(isolate) + list(pending):
                    if i not in failures:
                        failures[i] = SweepFailure(
                            i, configs[i], "not run", "the executor broke before "
                            "this configuration could run", "")
                        tick()
                isolate.clear()
                pending.clear()
                break
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            crashed: dict[int, BaseException] = {}
            for f in done:
                broken |= _collect(f, inflight.pop(f), configs, results, failures,
                                   crashed, tick)
            if broken and inflight:
                # a broken pool fails every task it still holds
                wait(list(inflight))
                for f in list(inflight):
                    _collect(f, inflight.pop(f), configs, results, failures,
                             crashed, tick)
            for i in sorted(crashed):
                crashes[i] += 1
                if crashes[i] > retries:
                    msg, tb = _format_exc(crashed[i])
                    n_others = len(crashed) - 1 + len(inflight)
                    others = ("alone" if n_others == 0 else
                              f"with {n_others} other run(s) in flight")
                    failures[i] = SweepFailure(
                        i, configs[i], "worker died",
                        f"{msg} (its worker process died while it ran, {others}; "
                        f"{crashes[i]} time(s))", tb)
                    tick()
                else:
                    retried.append(i)
                    isolate.append(i)
            if broken and current is not None:
                current = _fresh_pool(current)
                if current is not None:
                    own.append(current)
    except BaseException:
        for f in inflight:
            f.cancel()
        raise
    finally:
        for ex in own:
            ex.shutdown(wait=True, cancel_futures=True)


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


