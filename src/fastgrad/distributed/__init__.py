"""Past one machine: sweeps and data-parallel training on any executor.

Python's standard interface for "run this somewhere" is
:class:`concurrent.futures.Executor`: :class:`~concurrent.futures.ProcessPoolExecutor`
(the cores of this machine), Dask (``Client.get_executor()``, or the
``distributed.Client`` itself) for a cluster, Ray's executors.  Two jobs use it:

* :func:`sweep` (:mod:`fastgrad.distributed.sweeps`) runs one training per
  configuration of a grid (learning rates x seeds x architectures ...), one
  task each; results come back in grid order and equal to a serial run bit
  for bit (same code, same seed).  A failing configuration is reported with
  its parameters and traceback; the others' results are kept.
  ``fastgrad.optim.lr_sweep(..., executor=...)`` runs on the same machinery
  (:mod:`fastgrad._tasks`).
* :class:`DataParallel` (:mod:`fastgrad.distributed.data_parallel`) trains one
  compiled program on data split into shards: each shard and the program are
  sent to the workers once, then every step sends the parameter values and
  gets back each shard's summed loss and gradient, which the driver adds up
  in a fixed order.

What reaches the workers: functions, models and data are pickled -- with
``cloudpickle`` when it is installed (lambdas, closures, functions of
``__main__``), else with the standard :mod:`pickle` (then they must be
importable by name on the workers: module-level functions of an installed
module).  A compiled ``Program`` cannot be pickled, so ``DataParallel`` ships
the recipe (``fn``, ``params``) and every worker records it again.
"""
from fastgrad._tasks import SweepError, SweepFailure, SweepResult
from fastgrad.distributed.data_parallel import DataParallel
from fastgrad.distributed.sweeps import sweep

__all__ = ["DataParallel", "SweepError", "SweepFailure", "SweepResult", "sweep"]
