"""fastgrad's benchmarks: the ``fastgrad bench`` command and the workloads it
shares with the pytest-benchmark suite (``benchmarks/``).

A tool around the library, not part of it: this package imports fastgrad's
public modules, and nothing in the library imports it (``.ci/check_imports.py``
checks both in the lint job).
"""
from fastgrad.bench.cli import add_arguments, machine_info, main, run

__all__ = ["add_arguments", "run", "main", "machine_info"]
