"""Numerical gradients (fastgrad.numgrad): num_grad per-element overhead vs
the lecture's nditer loop (target >= 10x), gradcheck on the demo loss.
Skipped with the reason until fastgrad.numgrad is installed."""
import pytest

from conftest import matrix


@pytest.mark.parametrize("impl, pair, gc_mode", matrix("num_grad"))
def test_num_grad(workload, impl, pair, gc_mode):
    workload("num_grad", impl, pair, gc_mode)


@pytest.mark.parametrize("impl, pair, gc_mode", matrix("gradcheck"))
def test_gradcheck(workload, impl, pair, gc_mode):
    workload("gradcheck", impl, pair, gc_mode)
