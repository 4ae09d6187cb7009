"""backward() alone: the demo graph vs micrograd (target >= 40x), and ns/node
as the graph grows (10^5, 10^6; 10^7 with FASTGRAD_BENCH_MODE=full)."""
import pytest

from conftest import matrix


@pytest.mark.parametrize("impl, pair, gc_mode", matrix("backward"))
def test_backward(workload, impl, pair, gc_mode):
    workload("backward", impl, pair, gc_mode)


@pytest.mark.parametrize("impl, pair, gc_mode", matrix("backward_scaling"))
def test_backward_scaling(workload, impl, pair, gc_mode):
    workload("backward_scaling", impl, pair, gc_mode)
