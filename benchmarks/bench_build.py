"""Building a graph with operators: fastgrad vs the same expression on floats.

Target: at most 3x the time of Python floats (speed-up >= 0.33x).
"""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("build"))
def test_build(workload, impl, pair, gc_mode):
    workload("build", impl, pair, gc_mode)
