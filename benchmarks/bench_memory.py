"""Memory of the demo step's graph (tracemalloc): target at most 1/10 of
micrograd's.  Not a timing: the figures are in the ratio summary."""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("memory"))
def test_memory(memory, impl, pair, gc_mode):
    assert memory("memory", impl, pair) > 0
