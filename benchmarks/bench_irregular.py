"""The irregular-graph workload (issue 20): Rogozhnikov's "Fastest Autograd in
the West" graph -- softplus, 4-term sums, products, 4-way softmax -- forward
and backward of 100 inputs per row; fastgrad's compiled replay (one batch
call, and value_and_grad one row at a time) against a plain C tape and a
numba tape (see ``fastgrad.bench.irregular``).

As a pytest-benchmark module (``pytest benchmarks/bench_irregular.py``) it
times each pair with the shared harness; run as a script it prints the table
of every side interleaved, with CPU time beside wall time and the load::

    PYTHONPATH=src python benchmarks/bench_irregular.py --ops 1000 10000 \\
        --rows 10000 --per-row-rows 500 --reps 3
"""
import pytest

from fastgrad.bench import cases


@pytest.mark.parametrize("impl, pair, gc_mode", cases.pytest_params("irregular"))
def test_irregular(workload, impl, pair, gc_mode):
    workload("irregular", impl, pair)


@pytest.mark.parametrize("impl, pair, gc_mode",
                         cases.pytest_params("irregular_per_row"))
def test_irregular_per_row(workload, impl, pair, gc_mode):
    workload("irregular_per_row", impl, pair)


if __name__ == "__main__":
    from fastgrad.bench import irregular
    raise SystemExit(irregular.main())
