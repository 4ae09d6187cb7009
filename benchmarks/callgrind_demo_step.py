"""N eager steps of micrograd's demo (MLP 2-16-16-1, 100 points), for callgrind.

Instruction counts are stable where wall-clock times on a shared machine are
not.  Per-step cost = (I(12) - I(2)) / 10, which cancels start-up and imports::

    PY=$(python -c "import sys; print(sys.executable)")
    for n in 2 12; do PYTHONHASHSEED=0 PYTHONPATH=src valgrind --tool=callgrind \\
        --callgrind-out-file=cg.$n.out $PY benchmarks/callgrind_demo_step.py $n; done
    # the compiled engine alone: sum the _engine.cpython* lines of
    callgrind_annotate --threshold=100 cg.12.out
"""
import sys

from fastgrad import demo

steps = int(sys.argv[1])
eng = demo.load_engine("fastgrad")
model = demo._build_model(eng, 1337)
X, y, rng = demo._data(1337)
step = demo._eager_step_factory(eng, model, X, y)
for _ in range(steps):
    step(None, 0.5)
