"""The demo step's forward alone (building the loss graph over 100 points):
with bench_backward it shows where a training step's time goes."""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("forward"))
def test_forward(workload, impl, pair, gc_mode):
    workload("forward", impl, pair, gc_mode)
