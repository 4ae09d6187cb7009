"""backward() alone: the demo graph vs micrograd (target >= 40x), and ns/node
as the graph grows: 10^5, 10^6 and 10^7 nodes (the 10^7 graph takes ~1.5 GB
and a few seconds per round; FASTGRAD_BENCH_MODE=smoke shrinks it all)."""
import pytest

from fastgrad.bench import cases

# the scaling series always goes to 10^7 here (the CLI's quick mode stops at 10^6)
_SCALING_MODE = "smoke" if cases.bench_mode() == "smoke" else "full"


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("backward"))
def test_backward(workload, impl, pair, gc_mode):
    workload("backward", impl, pair, gc_mode)


@pytest.mark.parametrize("impl, pair, gc_mode",
                         cases.pytest_params("backward_scaling", mode=_SCALING_MODE))
def test_backward_scaling(workload, impl, pair, gc_mode):
    workload("backward_scaling", impl, pair, gc_mode)
