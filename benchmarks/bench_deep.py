"""Deep chains: build, backward and free x = relu(x*w + 1e-4), per node.

micrograd runs at depth 250 (its recursive sort stops near 1000 nodes);
fastgrad.reference and PyTorch run deeper.
"""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("deep_chain"))
def test_deep_chain(workload, impl, pair, gc_mode):
    workload("deep_chain", impl, pair, gc_mode)
