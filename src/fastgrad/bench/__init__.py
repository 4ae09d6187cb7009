"""fastgrad's benchmarks: the ``fastgrad bench`` command and the workloads it
shares with the pytest-benchmark suite (``benchmarks/``).

A tool around the library, not part of it: this package imports fastgrad's
public modules, and nothing in the library imports it (``.ci/check_imports.py``
checks both in the lint job).  Its modules, each importing only the ones
listed before it:

* :mod:`~fastgrad.bench.harness` -- what a workload is (``Case``, ``Pair``,
  ``Runner``), the correctness check, timing and memory;
* :mod:`~fastgrad.bench.workloads` -- the scalar workloads (the micrograd demo
  step, backward, build, deep chains, num_grad, optimizers, replay);
* :mod:`~fastgrad.bench.grid_peers`, :mod:`~fastgrad.bench.grid` -- the H x N
  grid: its problem and peers (NumPy, PyTorch, JAX...), then the cells run
  checked and interleaved;
* :mod:`~fastgrad.bench.cases` -- the registry: :data:`CASES` with their sizes
  per mode (``benchmarks/`` parametrizes over it too);
* :mod:`~fastgrad.bench.report`, :mod:`~fastgrad.bench.runner`,
  :mod:`~fastgrad.bench.grid_report` -- rows, tables, charts, the grid's report
  and script (``benchmarks/bench_grid.py``);
* :mod:`~fastgrad.bench.cli` -- ``fastgrad bench`` itself.

Adding a workload: its ``make`` (in ``workloads.py`` or a module of its own
beside it), its ``plan`` and a :class:`Case` appended to ``cases.CASES``.
"""
from fastgrad.bench.cli import add_arguments, main, run
from fastgrad.bench.report import format_header, format_table, machine_info, write_plot

__all__ = ["add_arguments", "run", "main", "machine_info", "format_table", "format_header",
           "write_plot"]
