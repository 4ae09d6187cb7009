"""Instruction-count probe of the eager engine, for callgrind.

``step``: micrograd's demo training step (forward, zero_grad, backward, SGD);
``build``: the demo loss graph alone; ``backward``: build + backward (so
backward alone = backward - build).  Per-iteration cost = (I(N) - I(0)) / N,
which cancels start-up and imports; instruction counts are stable where
wall-clock times on a shared machine are not::

    PY=$(python -c "import sys; print(sys.executable)")
    for n in 0 5; do OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONPATH=src \\
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        $PY benchmarks/callgrind_engine.py step $n 2>&1 | grep Collected; done
"""
import sys

from fastgrad.bench import workloads

mode, n = sys.argv[1], int(sys.argv[2])
if mode == "step":
    r = workloads.make_train_step("fastgrad", {"points": 100})
    for _ in range(n):
        r.fn()
elif mode in ("backward", "build"):
    r = workloads.make_backward("fastgrad", {"points": 100})
    for _ in range(n):
        r.setup()
        if mode == "backward":
            r.fn()
else:
    raise SystemExit("usage: callgrind_engine.py {step|build|backward} N")
