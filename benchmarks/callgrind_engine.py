"""Instruction-count probe of the eager engine, for callgrind.

``step``: micrograd's demo training step (forward, zero_grad, backward, SGD);
``build``: the demo loss graph alone; ``backward``: build + backward (so
backward alone = backward - build); ``smooth``: 1,000 Values through tanh,
sigmoid, exp and log (4,000 nodes) and their backward (the smooth
activations' per-node cost).  Per-iteration cost = (I(N) - I(0)) / N,
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
elif mode == "smooth":
    from fastgrad import Value
    xs = [Value(-3.0 + 6.0 * i / 999) for i in range(1000)]
    for _ in range(n):
        for x in xs:
            (x.tanh() + x.sigmoid() + x.exp() + (x * x + 0.5).log()).backward()
else:
    raise SystemExit("usage: callgrind_engine.py {step|build|backward|smooth} N")
