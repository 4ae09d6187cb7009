"""Building a graph with operators: fastgrad vs the same expression on floats.

Target: at most 3x the time of Python floats (speed-up >= 0.33x).
"""
import pytest

from fastgrad.bench import workloads as bc


@pytest.mark.parametrize("impl, pair, gc_mode", bc.pytest_params("build"))
def test_build(workload, impl, pair, gc_mode):
    workload("build", impl, pair, gc_mode)
