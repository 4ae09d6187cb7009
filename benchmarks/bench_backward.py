"""backward() alone: the demo graph vs micrograd (target >= 40x), and ns/node
as the graph grows (10^5, 10^6; 10^7 with FASTGRAD_BENCH_MODE=full)."""
import pytest

from fastgrad import _benchcases as bc


@pytest.mark.parametrize("impl, pair, gc_mode", bc.pytest_params("backward"))
def test_backward(workload, impl, pair, gc_mode):
    workload("backward", impl, pair, gc_mode)


@pytest.mark.parametrize("impl, pair, gc_mode",
                         bc.pytest_params("backward_scaling"))
def test_backward_scaling(workload, impl, pair, gc_mode):
    workload("backward_scaling", impl, pair, gc_mode)
