"""The H x N grid of issue 13: fastgrad compiled against NumPy, PyTorch and JAX.

Run from a checkout with the compiled build in place::

    PYTHONPATH=src python benchmarks/bench_grid.py [--H 16,32,64,128] [--N 100,1000,10000]
        [--rounds 7] [--plot grid.png] [--json grid.json] [--peak-gflops X]
        [--threads T|all] [--isa NAME]

One cell (H, N) is a full-batch training step of ``fastgrad.nn.MLP(2, [H, H, 1])``
(``random.seed(1337)`` weights) on N two-moons points, float64, one thread per
side: ``fastgrad.compiled.make_demo_step`` against hand-written NumPy, PyTorch
eager and ``torch.compile`` (when torch is installed), ``jax.jit`` (when jax
is installed) and HIPS autograd (when installed).  Every peer's first step is
checked against fastgrad's (loss to 1e-10, parameters to 1e-9 relative) before
any timing: a mismatch is a FAILURE and exit status 1.  Prints each side's
time per step, the ratio fastgrad / best peer per cell (the issue's table),
GFLOP/s (FLOPs counted from the recorded program) and the demo cell's
FLOP-bound ratio.  ``fastgrad bench --full`` runs the same grid (``--only grid``).

The definitions (workload, FLOP count, timing, thread pinning) are in the
docstring of ``src/fastgrad/bench/grid.py``.  This script sets
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` to 1 and adds
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` to
``XLA_FLAGS`` before NumPy, jax or torch are imported, and binds the process
to one CPU while the grid runs.  ``--threads T`` (issue 21's threads mode)
does none of that: the peers run at their default thread counts, fastgrad
with ``make_demo_step(model, num_threads=T)`` (``all``: every CPU).
``--isa NAME`` (this script only, not ``fastgrad bench``) runs fastgrad's layer
kernels with that instruction set (``fastgrad._replay._set_isa``: portable,
baseline, avx2, avx512; default: the best the CPU runs); the report names it.
"""
import os
import sys

# before anything imports numpy (fastgrad does), jax or torch; not in the
# threads mode, where every peer keeps its default thread count
if not any(a == "--threads" or a.startswith("--threads=") for a in sys.argv[1:]):
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    _flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen" not in _flags:
        os.environ["XLA_FLAGS"] = (
            _flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()

from fastgrad.bench import grid_report  # noqa: E402


def _take_isa(argv):
    """argv without ``--isa NAME`` / ``--isa=NAME``, and NAME (or None)."""
    rest, isa, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--isa":
            if i + 1 >= len(argv):
                sys.exit("bench_grid.py: --isa needs a name")
            isa = argv[i + 1]
            i += 2
            continue
        if a.startswith("--isa="):
            isa = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return rest, isa


if __name__ == "__main__":
    sys.argv[1:], _isa = _take_isa(sys.argv[1:])
    if _isa is not None:
        from fastgrad import _replay
        try:
            _replay._set_isa(_isa)
        except ValueError as e:
            sys.exit(f"bench_grid.py: --isa: {e}")
    sys.exit(grid_report.main())
