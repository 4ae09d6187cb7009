"""``sweep``: one training per configuration of a grid, on any executor.

The grid becomes a list of configurations here; running them (in a bounded
window of tasks, with the failure of a configuration or of a worker process
reported per configuration and the others' results kept) is
:mod:`fastgrad._tasks`'s, shared with ``fastgrad.optim.lr_sweep``.
"""
from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from typing import Any, Callable

from fastgrad._tasks import (
    Config, SweepError, SweepResult, check_executor, check_retries, run_all,
)

__all__ = ["sweep"]


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


def _check_timeout(timeout: Any, executor: Executor | None, where: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{where}: timeout must be a number of seconds (or None), got "
                        f"{type(timeout).__name__} {timeout!r}")
    seconds = float(timeout)
    if not seconds > 0:                       # also NaN
        raise ValueError(f"{where}: timeout must be > 0 seconds, got {timeout!r}")
    if executor is None:
        raise ValueError(f"{where}: timeout needs an executor (a configuration that "
                         "runs serially in this process cannot be stopped); pass e.g. "
                         "executor=ProcessPoolExecutor(n)")
    return seconds


def sweep(train_fn: Callable[..., Any],
          grid: Mapping[str, Iterable[Any]] | Iterable[Mapping[str, Any]],
          *, seeds: Iterable[int] | None = None,
          executor: Executor | None = None, progress: bool | None = None,
          retries: int = 1, errors: str = "raise",
          timeout: float | None = None) -> SweepResult:
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
    timeout : float, optional
        Seconds a configuration may run (needs an ``executor``).  One that
        runs longer is reported as failed ("timed out") and the sweep goes on
        with the others.  Its worker is stopped where the executor allows it:
        on a ``ProcessPoolExecutor`` its worker process is killed -- which
        breaks that pool (``concurrent.futures`` cannot lose one worker), so
        the configurations in flight beside it run again on a new pool with
        the same settings, and an executor you passed is left broken, as
        after a crash.  A thread cannot be stopped: on a
        ``ThreadPoolExecutor`` the timed-out call runs on in its thread (the
        sweep does not wait for it, and gives its thread no new task).  On
        Dask the task is cancelled, but a task already running keeps its
        worker thread until it returns.  The time counts from the start of
        the configuration in a thread pool, from its submission elsewhere
        (while a timeout is set, at most one configuration per worker is in
        flight, so a configuration starts when it is submitted).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        Some configurations failed (with ``errors="raise"``).
    KeyboardInterrupt
        Ctrl-C during the sweep: it returns at once (the results so far are
        lost).  Configurations not started are cancelled; the worker
        processes of the pools the sweep made itself (after a crash or a
        timeout) are killed; on an executor you passed, a configuration
        already running runs to its end (its result is dropped) and the
        executor stays usable.

    Notes
    -----
    Any exception ``train_fn`` raises is its configuration's failure, with
    the traceback from the worker: ``SystemExit`` too (``sys.exit()``,
    argparse's ``parser.error`` in a script's entry point), any
    ``BaseException`` except ``KeyboardInterrupt``, which stops the sweep.
    So is a result that cannot be pickled in the worker or unpickled on the
    driver (e.g. an instance of a class the driver cannot import).

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
    checked = check_executor(executor, where)
    res = run_all(train_fn, configs, checked, progress, check_retries(retries, where),
                  where, _check_timeout(timeout, checked, where))
    if res.failures and errors == "raise":
        raise SweepError(res, res.failures)
    return res


