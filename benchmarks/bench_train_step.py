"""micrograd's demo training step, fastgrad vs every baseline.

Target: >= 100x micrograd 0.1.0 with the garbage collector on (as users run
it); also measured with gc disabled on both sides.  Baselines: micrograd,
fastgrad.reference, PyTorch scalar autograd (0-d float64 tensors), PyTorch
vectorized torch.nn (float64, one thread).
"""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode",
                         cases.pytest_params("train_step", ("on", "off")))
def test_train_step(workload, impl, pair, gc_mode):
    workload("train_step", impl, pair, gc_mode)
