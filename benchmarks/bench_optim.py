"""Optimizer steps (fastgrad.optim) over 10,000 Values vs the Python loop
(target >= 20x for SGD and SGD with momentum).  Skipped with the reason until
fastgrad.optim is installed."""
import pytest

from conftest import matrix


@pytest.mark.parametrize("name", ["sgd_step", "sgd_momentum_step", "adam_step"])
@pytest.mark.parametrize("impl, pair, gc_mode", matrix("sgd_step"))
def test_optim_step(workload, name, impl, pair, gc_mode):
    workload(name, impl, pair, gc_mode)
