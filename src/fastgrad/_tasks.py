"""Past one machine: sweeps and data-parallel training on any executor.

Python's standard interface for "run this somewhere" is
:class:`concurrent.futures.Executor`: :class:`~concurrent.futures.ProcessPoolExecutor`
(the cores of this machine), Dask (``Client.get_executor()``, or the
``distributed.Client`` itself) for a cluster, Ray's executors.  Two jobs use it:

* :func:`sweep` runs one training per configuration of a grid (learning
  rates x seeds x architectures ...), one task each; results come back in grid
  order and equal to a serial run bit for bit (same code, same seed).  A
  failing configuration is reported with its parameters and traceback; the
  others' results are kept.  ``fastgrad.optim.lr_sweep(..., executor=...)``
  is built on it.
* :class:`DataParallel` trains one compiled program on data split into shards:
  each shard and the program are sent to the workers once, then every step
  sends the parameter values and gets back each shard's summed loss and
  gradient, which the driver adds up in a fixed order.

What reaches the workers: functions, models and data are pickled -- with
``cloudpickle`` when it is installed (lambdas, closures, functions of
``__main__``), else with the standard :mod:`pickle` (then they must be
importable by name on the workers: module-level functions of an installed
module).  A compiled ``Program`` cannot be pickled, so ``DataParallel`` ships
the recipe (``fn``, ``params``) and every worker records it again.
"""
from __future__ import annotations

import importlib
import itertools
import math
import numbers
import pickle
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from fastgrad.engine import Value

__all__ = ["DataParallel", "SweepError", "SweepFailure", "SweepResult", "sweep"]

F64 = npt.NDArray[np.float64]
Config = dict[str, Any]


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


def _configs(grid: Mapping[str, Iterable[Any]] | Iterable[Mapping[str, Any]],
             seeds: Iterable[int] | None, where: str) -> list[Config]:
    if isinstance(grid, Mapping):
        keys = list(grid)
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"{where}: grid keys must be parameter names "
                                f"(str), got {type(k).__name__} {k!r}")
        axes = []
        for k in keys:
            v = grid[k]
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise TypeError(f"{where}: grid[{k!r}] must be a list of values, "
                                f"got {type(v).__name__} {v!r}")
            axes.append(list(v))
        configs = [dict(zip(keys, combo)) for combo in itertools.product(*axes)]
    elif isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(f"{where}: grid must be a dict of name -> list of values, "
                        f"or a list of dicts, got {type(grid).__name__}")
    else:
        configs = []
        for i, c in enumerate(grid):
            if not isinstance(c, Mapping):
                raise TypeError(f"{where}: grid item {i} must be a dict of "
                                f"parameters, got {type(c).__name__} {c!r}")
            configs.append(dict(c))
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
            raise TypeError(f"{where}: seeds must be a list of ints, got "
                            f"{type(seeds).__name__}")
        seed_list = list(seeds)
        for s in seed_list:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral):
                raise TypeError(f"{where}: seeds must be ints, got "
                                f"{type(s).__name__} {s!r}")
        for c in configs:
            if "seed" in c:
                raise ValueError(f"{where}: a configuration already has a 'seed' "
                                 f"({c!r}); pass seeds in the grid or in seeds=, "
                                 "not both")
        configs = [dict(c, seed=int(s)) for c in configs for s in seed_list]
    if not configs:
        raise ValueError(f"{where}: the grid is empty")
    return configs


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


def _run_all(train_fn: Callable[..., Any], configs: list[Config],
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


def _check_retries(retries: int, where: str) -> int:
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise ValueError(f"{where}: retries must be an int >= 0, got {retries!r}")
    return int(retries)


def _check_executor(executor: Any, where: str) -> Executor | None:
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"{where}: executor must be a concurrent.futures.Executor "
                        f"(or None to run serially), got {type(executor).__name__}")
    client = _dask_client(executor)
    if client is not None and client is executor:
        # a Dask Client's own futures are not concurrent.futures ones
        return client.get_executor()   # type: ignore[no-any-return]
    return executor  # type: ignore[no-any-return]


def sweep(train_fn: Callable[..., Any],
          grid: Mapping[str, Iterable[Any]] | Iterable[Mapping[str, Any]],
          *, seeds: Iterable[int] | None = None,
          executor: Executor | None = None, progress: bool | None = None,
          retries: int = 1, errors: str = "raise") -> SweepResult:
    """Run ``train_fn(**config)`` for every configuration of a grid.

    One task per configuration on ``executor`` (any
    :class:`concurrent.futures.Executor`: a ``ProcessPoolExecutor``, Dask's
    ``Client.get_executor()`` or ``Client``, ...), or serially in this process
    with ``executor=None``.  Results come back in grid order, and they are
    the serial run's bit for bit when ``train_fn`` is deterministic given its
    arguments (seed the random generators from ``seed``: each task may run in
    a different process).

    Parameters
    ----------
    train_fn : callable
        ``train_fn(**config)`` -> a picklable result (e.g. the loss curve).
        It is pickled once (with cloudpickle when installed, so lambdas and
        closures work; else it must be importable by name on the workers)
        and sent with every task: keep large data out of its closure (load it
        inside, or cache it in a module global of the worker).
    grid : dict of str -> list, or list of dict
        ``{"lr": [0.1, 1.0], "hidden": [8, 16]}`` means every combination, the
        last key varying fastest (``itertools.product`` order); a list of
        dicts is taken as the configurations themselves.
    seeds : iterable of int, optional
        Run every configuration once per seed, passing ``seed=s`` (seeds vary
        fastest).
    executor : concurrent.futures.Executor, optional
        Where to run; None runs serially here.
    progress : bool, optional
        A tqdm bar counting finished runs (default: shown when tqdm is
        installed; ``False`` hides it).
    retries : int, default 1
        When a worker process dies (``BrokenProcessPool``), the configurations
        that were in flight are run again, one at a time on a new pool with the
        same settings, up to ``retries`` times each; the one that kills its
        worker again is reported as failed ("worker died").  Configurations
        not yet started are unaffected.  (The executor you passed stays broken;
        the new pools are shut down before returning.  Dask retries a task
        whose worker died by itself, ``distributed.scheduler.allowed-failures``
        times, then reports ``KilledWorker`` for it.)
    errors : {"raise", "keep"}, default "raise"
        What to do when configurations fail: raise :class:`SweepError`
        (carrying the results of the others in ``.result``) after every
        configuration has run, or return the result with ``.failures`` set.

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        Some configurations failed (with ``errors="raise"``).

    Examples
    --------
    >>> from fastgrad import Value, sweep
    >>> def train(lr, seed):
    ...     x = Value(float(seed))
    ...     for _ in range(10):
    ...         x.grad = 0.0
    ...         (x * x).backward()
    ...         x.data -= lr * x.grad
    ...     return x.data
    >>> res = sweep(train, {"lr": [0.1, 0.4]}, seeds=[1, 2], progress=False)
    >>> [(c["lr"], c["seed"]) for c in res.configs]
    [(0.1, 1), (0.1, 2), (0.4, 1), (0.4, 2)]
    >>> [round(r, 6) for r in res.results]
    [0.107374, 0.214748, 0.0, 0.0]

    With ``concurrent.futures.ProcessPoolExecutor(2)`` as ``executor`` the
    same numbers come from two processes.
    """
    where = "sweep"
    if not callable(train_fn):
        raise TypeError(f"{where}: train_fn must be callable, got {type(train_fn).__name__}")
    if errors not in ("raise", "keep"):
        raise ValueError(f"{where}: errors must be 'raise' or 'keep', got {errors!r}")
    configs = _configs(grid, seeds, where)
    res = _run_all(train_fn, configs, _check_executor(executor, where), progress,
                   _check_retries(retries, where), where)
    if res.failures and errors == "raise":
        raise SweepError(res, res.failures)
    return res


# ---------------------------------------------------------------------------
# lr_sweep on an executor (called by fastgrad.optim.lr_sweep)
# ---------------------------------------------------------------------------

class _StartFrom:
    """A model factory whose models start from given weights."""

    def __init__(self, factory: Callable[[], Any], start: F64) -> None:
        self.factory = factory
        self.start = start

    def __call__(self) -> Any:
        from fastgrad import _optim
        from fastgrad.optim import _parameters_of
        model = self.factory()
        params = _parameters_of(model, "lr_sweep")
        if len(params) != len(self.start):
            raise ValueError(f"lr_sweep: model_factory returned {len(params)} "
                             f"parameters, but {len(self.start)} the first time")
        _optim.ValueSlots(params).set_data(self.start)
        return model


class _LRRun:
    """One rate of an lr_sweep, run by the serial ``lr_sweep`` itself."""

    def __init__(self, factory: _StartFrom, loss_fn: Callable[[Any], Any], steps: int,
                 optimizer: Any, eval_fn: Callable[[Any], Any] | None,
                 optimizer_kwargs: dict[str, Any]) -> None:
        self.factory = factory
        self.loss_fn = loss_fn
        self.steps = steps
        self.optimizer = optimizer
        self.eval_fn = eval_fn
        self.optimizer_kwargs = optimizer_kwargs

    def __call__(self, lr: float) -> tuple[F64, float | None]:
        from fastgrad.optim import lr_sweep
        r = lr_sweep(self.factory, self.loss_fn, lrs=[lr], steps=self.steps,
                     optimizer=self.optimizer, eval_fn=self.eval_fn,
                     **self.optimizer_kwargs)
        val = None if r.val_losses is None else float(r.val_losses[0])
        return r.losses[0], val


def _lr_sweep_on(executor: Executor, model_factory: Callable[[], Any],
                 loss_fn: Callable[[Any], Any], lrs: list[float], steps: int,
                 optimizer: Any, eval_fn: Callable[[Any], Any] | None,
                 optimizer_kwargs: dict[str, Any], progress: bool | None,
                 retries: int) -> Any:
    """``lr_sweep`` with one task per rate; see ``fastgrad.optim.lr_sweep``."""
    from fastgrad import _optim
    from fastgrad.optim import LRSweepResult, _parameters_of
    where = "lr_sweep"
    checked = _check_executor(executor, where)
    retries = _check_retries(retries, where)
    # the first model's weights are every run's start, as in the serial sweep
    params = _parameters_of(model_factory(), where)
    start = np.empty(len(params))
    _optim.ValueSlots(params).get_data(start)
    run = _LRRun(_StartFrom(model_factory, start), loss_fn, steps, optimizer,
                 eval_fn, dict(optimizer_kwargs))
    configs: list[Config] = [{"lr": lr} for lr in lrs]
    res = _run_all(run, configs, checked, progress, retries, where)
    ok = [i for i in range(len(lrs)) if res.results[i] is not None]
    losses = np.full((len(ok), steps + 1), np.nan)
    val = None if eval_fn is None else np.full(len(ok), np.nan)
    for row, i in enumerate(ok):
        losses[row] = res.results[i][0]
        if val is not None:
            val[row] = res.results[i][1]
    out = LRSweepResult([lrs[i] for i in ok], losses.reshape(len(ok), steps + 1), val)
    if res.failures:
        raise SweepError(out, res.failures)
    return out


# ---------------------------------------------------------------------------
# data-parallel training of a compiled program
# ---------------------------------------------------------------------------

class _Miss:
    """Returned by a worker that has not got the shard yet."""


_MISS = _Miss()
ShardOut = Union[_Miss, tuple[float, F64, float, float]]


def _build_shard(blob: bytes, arrays: tuple[F64, ...], expected: tuple[int, int, int]) -> Any:
    """Record the program from its recipe, in a worker; check it is the same."""
    from fastgrad import _optim
    from fastgrad.compiled import compile as fg_compile
    fn, n_inputs, params, example = pickle.loads(blob)
    try:
        prog = fg_compile(fn, n_inputs, params=params, example=example)
    except ValueError as exc:
        raise ValueError(
            f"DataParallel: recording the program on a worker failed ({exc}); "
            "fn must reach the parameters it was given: a fn that finds its "
            "model through a global of an importable module sees that module's "
            "own model on the worker -- use a closure or a function of "
            "__main__ (with cloudpickle installed), or "
            "cloudpickle.register_pickle_by_value(module)") from exc
    got = (prog.n_params, prog.n_outputs, prog.n_instructions)
    if got != expected:
        raise RuntimeError(f"DataParallel: the program recorded on a worker differs "
                           f"from the driver's (params, outputs, instructions "
                           f"{got} != {expected}); fn must trace the same graph "
                           "everywhere")
    slots = _optim.ValueSlots(list(prog.params))
    return prog, slots, arrays, np.empty(prog.n_params)


def _shard_step(token: str, shard: int, theta: F64,
                payload: tuple[bytes, tuple[F64, ...], tuple[int, int, int]] | None
                ) -> ShardOut:
    """Worker side of a step: the shard's summed loss and gradient at theta."""
    entry = _cache_get(token, shard)
    if entry is None:
        if payload is None:
            return _MISS
        entry = _build_shard(*payload)
        _cache_put(token, shard, entry)
    prog, slots, arrays, grad = entry
    t0, c0 = time.perf_counter(), time.thread_time()
    slots.set_data(theta)
    loss = prog.batch(arrays, reduce="sum", param_grad=grad, accumulate=False)
    return (float(loss), grad.copy(), time.perf_counter() - t0,
            time.thread_time() - c0)


def _dask_shard_step(token: str, shard: int, theta: F64, blob: bytes,
                     arrays: tuple[F64, ...], expected: tuple[int, int, int]) -> ShardOut:
    # on Dask the recipe and the shard are already in the worker's memory
    # (scattered there once); only theta travels with the task
    return _shard_step(token, shard, theta, (blob, arrays, expected))


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


class DataParallel:
    """Data-parallel replay of a compiled program on an executor.

    The data (``inputs``) is split into ``n_shards`` contiguous row blocks.
    Each worker records the program (``fastgrad.compile(fn, n_inputs,
    params)``) and receives its shards once; then every :meth:`batch` sends
    the driver's current parameter values, each shard computes its *summed*
    loss and gradient (``Program.batch(..., reduce="sum", param_grad=...)``),
    and the driver adds them up in shard order, scales by ``1/B`` for a mean,
    and adds the penalty (computed on the driver).  Any optimizer then works
    on the driver's parameters, as after ``Program.batch``.

    The loss equals a single-process ``program.batch(inputs)`` up to the order
    of the floating-point summation (shard sums added together instead of one
    running sum): a relative difference of order 1e-16 per step.

    Parameters
    ----------
    fn, n_inputs, params, penalty, example
        As for :func:`fastgrad.compile` (a Program cannot be pickled, so this
        recipe is what the workers receive: ``fn`` and ``params`` are pickled
        together, so a model that ``fn`` closes over arrives with the same
        parameter Values).
    inputs : array_like (B, n_inputs), or tuple of arrays
        The whole training set, as for ``Program.batch`` (e.g. ``(X, y)``).
    executor : concurrent.futures.Executor or distributed.Client
        Where the shards live.  With Dask (a ``Client`` or
        ``Client.get_executor()``) every shard is scattered to one worker and
        every step runs where its shard is.  With any other executor (e.g.
        ``ProcessPoolExecutor``) a task cannot choose its process: a worker
        that has not got a shard yet answers so, and that shard is sent
        again with the retried task; after the first steps every worker
        process holds every shard it has been asked for (up to the whole
        data set per process), and only parameters travel.
    n_shards : int, optional
        Default: the executor's number of workers.

    Attributes
    ----------
    program : Program
        The driver's own program (with the penalty): ``predict``, evaluation.
    n_shards : int
    shard_sizes : list of int
    last_worker_seconds, last_worker_cpu_seconds : list of float
        Per shard, the wall and CPU time the last step spent computing in its
        worker (the rest of a step's wall time is communication, scheduling
        and the sum).

    Examples
    --------
    >>> import numpy as np
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from fastgrad import Value
    >>> from fastgrad.distributed import DataParallel
    >>> w = Value(1.0)
    >>> X = np.arange(6.0).reshape(6, 1)
    >>> with ThreadPoolExecutor(2) as ex, DataParallel(
    ...         lambda v: v[0] * w * w, 1, [w], X, ex, n_shards=3) as dp:
    ...     loss = dp.batch(reduce="sum")
    >>> loss, w.grad        # sum(x) * w**2 and its derivative 2 * sum(x) * w
    (15.0, 30.0)
    """

    program: Any
    n_shards: int
    n_rows: int
    shard_sizes: list[int]
    last_worker_seconds: list[float]
    last_worker_cpu_seconds: list[float]
    _pen: Any
    _params: list[Value]
    _slots: Any
    _client: Any
    _shards: list[tuple[F64, ...]]
    _token: str
    _expected: tuple[int, int, int]
    _blob: bytes
    _blob_future: Any
    _executor: Any
    _grad: F64
    _resend: bool
    _closed: bool
    _dask: list[tuple[str, Any]]
    _lock: threading.Lock

    def __init__(self, fn: Callable[[list[Value]], Any], n_inputs: int,
                 params: Iterable[Value], inputs: Any, executor: Any,
                 n_shards: int | None = None, *,
                 penalty: Callable[[list[Value]], Value] | None = None,
                 example: Sequence[float] | None = None) -> None:
        from fastgrad import _optim
        from fastgrad.compiled import compile as fg_compile
        from fastgrad.compiled import compile_graph
        where = "DataParallel"
        if executor is None or not callable(getattr(executor, "submit", None)):
            raise TypeError(f"{where}: executor must be a concurrent.futures.Executor "
                            f"or a distributed.Client, got {type(executor).__name__}")
        params = list(params)
        self.program = fg_compile(fn, n_inputs, params=params, penalty=penalty,
                                  example=example)
        local = fg_compile(fn, n_inputs, params=params, example=example)
        self._pen = None
        if penalty is not None:
            self._pen = compile_graph(penalty(params), inputs=[], params=params)
        self._params = params
        self._slots = _optim.ValueSlots(params)
        arrays = self._arrays(inputs, n_inputs, where)
        B = arrays[0].shape[0]
        local.predict(tuple(a[:1] for a in arrays))      # checks the layout
        self._client = _dask_client(executor)
        nw = (len(self._client.scheduler_info()["workers"]) if self._client is not None
              else _max_workers(executor))
        if n_shards is None:
            if nw is None:
                raise ValueError(f"{where}: pass n_shards (this executor does not "
                                 "say how many workers it has)")
            n_shards = nw
        if isinstance(n_shards, bool) or not isinstance(n_shards, numbers.Integral) \
                or not 1 <= n_shards <= B:
            raise ValueError(f"{where}: n_shards must be an int between 1 and the "
                             f"{B} rows, got {n_shards!r}")
        self.n_shards = int(n_shards)
        self.n_rows = B
        bounds = np.linspace(0, B, self.n_shards + 1).round().astype(int)
        self._shards = [tuple(np.ascontiguousarray(a[lo:hi]) for a in arrays)
                        for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.shard_sizes = [int(hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._token = uuid.uuid4().hex
        self._expected = (local.n_params, local.n_outputs, local.n_instructions)
        self._blob = _dumps((fn, n_inputs, params, example), "fn and params", where)
        self._executor = executor
        self._grad = np.empty(len(params))
        self.last_worker_seconds = []
        self.last_worker_cpu_seconds = []
        self._resend = False           # benchmark knob: ship the shard every step
        self._lock = threading.Lock()
        self._closed = False
        self._dask: list[Any] = []
        if self._client is not None:
            workers = sorted(self._client.scheduler_info()["workers"])
            self._blob_future = self._client.scatter(self._blob, broadcast=True,
                                                     hash=False)
            self._dask = []
            for i, shard in enumerate(self._shards):
                w = workers[i % len(workers)]
                fut = self._client.scatter([shard], workers=[w], hash=False)[0]
                self._dask.append((w, fut))

    @staticmethod
    def _arrays(inputs: Any, n_inputs: int, where: str) -> tuple[F64, ...]:
        parts = inputs if isinstance(inputs, tuple) else (inputs,)
        arrays = []
        for a in parts:
            arr = np.asarray(a)
            if arr.ndim not in (1, 2):
                raise ValueError(f"{where}: inputs must be (B, k) or (B,) arrays, "
                                 f"got shape {arr.shape}")
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{where}: inputs must be real arrays, got dtype "
                                f"{arr.dtype}")
            arrays.append(np.asarray(arr, dtype=np.float64))
        if not arrays:
            raise ValueError(f"{where}: inputs is empty")
        B = arrays[0].shape[0]
        if any(a.shape[0] != B for a in arrays):
            raise ValueError(f"{where}: the input arrays have different numbers of "
                             f"rows: {[a.shape[0] for a in arrays]}")
        if B == 0:
            raise ValueError(f"{where}: inputs has 0 rows")
        return tuple(arrays)

    # -- one step ---------------------------------------------------------

    def _gather(self, theta: F64) -> list[tuple[float, F64, float, float]]:
        if self._closed:
            raise RuntimeError("DataParallel: used after close()")
        if self._client is not None:
            futs = [self._client.submit(_dask_shard_step, self._token, i, theta,
                                        self._blob_future, fut, self._expected,
                                        workers=[w], allow_other_workers=False,
                                        pure=False)
                    for i, (w, fut) in enumerate(self._dask)]
            out: list[Any] = self._client.gather(futs)
            return out
        ex = self._executor
        payloads = [(self._blob, s, self._expected) for s in self._shards]
        futures = [ex.submit(_shard_step, self._token, i, theta,
                             payloads[i] if self._resend else None)
                   for i in range(self.n_shards)]
        results: list[Any] = [f.result() for f in futures]
        missed = [i for i, r in enumerate(results) if isinstance(r, _Miss)]
        # a worker without the shard: send it with the task (it keeps it)
        while missed:
            again = {i: ex.submit(_shard_step, self._token, i, theta, payloads[i])
                     for i in missed}
            for i, f in again.items():
                results[i] = f.result()
            missed = [i for i in missed if isinstance(results[i], _Miss)]
        return results

    def batch(self, reduce: str = "mean", param_grad: F64 | None = None,
              accumulate: bool = True) -> float:
        """Loss and gradient over all the data, at the parameters' current values.

        Like ``program.batch(inputs, reduce=...)`` on the whole data set: the
        gradient is added to each parameter's ``.grad`` (or set, with
        ``accumulate=False``) and also written to ``param_grad`` if given.

        Parameters
        ----------
        reduce : {"mean", "sum"}
        param_grad : ndarray (n_params,) float64, optional
        accumulate : bool, default True

        Returns
        -------
        float
            The loss (plus the penalty).
        """
        if reduce not in ("mean", "sum"):
            raise ValueError(f"DataParallel.batch: reduce must be 'mean' or 'sum', "
                             f"got {reduce!r}")
        # one step at a time: the shards' programs and the sum buffer are shared
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("DataParallel.batch: already running in another "
                               "thread; a DataParallel is not re-entrant")
        try:
            return self._batch(reduce, param_grad, accumulate)
        finally:
            self._lock.release()

    def _batch(self, reduce: str, param_grad: F64 | None, accumulate: bool) -> float:
        n = len(self._params)
        if param_grad is not None and (
                not isinstance(param_grad, np.ndarray) or param_grad.dtype != np.float64
                or param_grad.shape != (n,) or not param_grad.flags.writeable):
            raise ValueError(f"DataParallel.batch: param_grad must be a writeable "
                             f"float64 array of shape ({n},)")
        theta = np.empty(n)
        self._slots.get_data(theta)
        old = np.empty(n)
        self._slots.get_grad(old)        # (the penalty program overwrites .grad)
        parts = self._gather(theta)
        total = 0.0
        g = self._grad
        g[:] = 0.0
        for loss, grad, _, _ in parts:       # shard order: a fixed summation order
            total += loss
            g += grad
        self.last_worker_seconds = [p[2] for p in parts]
        self.last_worker_cpu_seconds = [p[3] for p in parts]
        if reduce == "mean":
            scale = 1.0 / self.n_rows
            total = total * scale
            g *= scale
        if self._pen is not None:
            pen_grad = np.empty(n)
            pen, _ = self._pen.value_and_grad([], accumulate=False, param_grad=pen_grad)
            total = total + pen
            g += pen_grad
        if accumulate:
            new = (old + g).tolist()
        else:
            new = g.tolist()
        for p, v in zip(self._params, new):
            p.grad = v
        if param_grad is not None:
            param_grad[:] = g
        return total

    def sgd_step(self, lr: float, reduce: str = "mean") -> float:
        """One plain SGD step: :meth:`batch`, then ``p.data -= lr * grad``.

        As ``Program.sgd_step``: each ``.grad`` is set to this step's gradient.

        Returns
        -------
        float
            The loss before the update.
        """
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) \
                or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"DataParallel.sgd_step: lr must be a finite number "
                             f">= 0, got {lr!r}")
        loss = self.batch(reduce=reduce, accumulate=False)
        self._slots.sgd(None, float(lr), 0.0, 0.0, 0.0, False, False, True)
        return loss

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Release the shards (Dask: on every worker; in this process: the cache).

        Processes of a plain executor drop them when newer jobs need the room
        (a few jobs are kept per process) or when the executor shuts down.
        """
        if self._closed:
            return
        self._closed = True
        _forget(self._token)
        if self._client is not None:
            futs = [f for _, f in self._dask] + [self._blob_future]
            self._client.cancel(futs)
            try:
                self._client.run(_forget, self._token)
            except Exception:  # noqa: BLE001, S110 - a worker that is gone has nothing to forget
                pass
            self._dask = []

    def __enter__(self) -> DataParallel:  # noqa: PYI034 - final in spirit, 3.9 has no Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<fastgrad DataParallel: {self.n_rows} rows in {self.n_shards} "
                f"shards {self.shard_sizes}, {len(self._params)} params>")
