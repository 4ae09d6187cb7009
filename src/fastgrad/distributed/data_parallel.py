"""``DataParallel``: one compiled program trained on data split into shards.

The shard protocol: the recipe of the program (``fn``, ``params``) and each
shard are sent to the workers once (scattered to one worker each on Dask;
sent again with a retried task on executors that cannot pick the process);
every step sends the parameter values and gets back each shard's summed loss
and gradient, which the driver adds up in shard order.
"""
from __future__ import annotations

import math
import numbers
import pickle
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from fastgrad._tasks import (
    _cache_get, _cache_put, _dask_client, _dumps, _forget, _max_workers,
)
from fastgrad.engine import Value

__all__ = ["DataParallel"]

F64 = npt.NDArray[np.float64]


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
        if self._client is not None and nw == 0:
            # the shards are placed on the workers present now, one each
            raise RuntimeError(
                f"{where}: the Dask cluster has no worker yet (a cluster starts its "
                "workers in the background); wait for them before creating the "
                "DataParallel, e.g. client.wait_for_workers(2)")
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
