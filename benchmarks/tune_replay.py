"""Tuning figures for fastgrad.compiled (not a pytest module).

Run: ``PYTHONPATH=src python benchmarks/tune_replay.py``

Prints the process CPU time (best of 5 blocks; less sensitive to other
processes on a shared machine than wall-clock) of
* the demo training step (``Program.sgd_step``, 100 points),
* the forward-only batch of the demo loss (100 points),
* scoring a 10,000-point grid (``Program.predict``),
with the fused mul-add instruction on and off, and the scoring time for a
few forward-only chunk sizes.
"""
import random
import time

import numpy as np

import fastgrad
from fastgrad import _replay
from fastgrad.compiled import make_demo_step
from fastgrad.nn import MLP


def cpu_time(f, n):
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            f()
        best = min(best, (time.process_time() - t) / n)
    return best


def workloads():
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=100, noise=0.1, random_state=1)
    y = (y * 2 - 1).astype(np.float64)
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    prog = make_demo_step(model).program
    score = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    xx, yy = np.meshgrid(np.linspace(-2, 3, 100), np.linspace(-1.5, 2, 100))
    grid = np.c_[xx.ravel(), yy.ravel()]
    out = np.empty(len(grid))
    return prog, score, (X, y), grid, out


def main():
    for fuse in (False, True):
        _replay._set_fusion(fuse)
        prog, score, Xy, grid, out = workloads()
        step = cpu_time(lambda: prog.sgd_step(Xy, 0.0), 4000)
        fwd = cpu_time(lambda: prog.batch(Xy, grad=False), 4000)
        sc = cpu_time(lambda: score.predict(grid, out=out), 200)
        print(f"fusion={'on ' if fuse else 'off'}: {prog.n_instructions} instr; "
              f"demo step {step * 1e6:6.1f} us, forward batch {fwd * 1e6:5.1f} us, "
              f"score 10k {sc * 1e6:7.1f} us ({len(grid) / sc / 1e6:.1f} Mpoints/s)")
    _replay._set_fusion(True)
    prog, score, Xy, grid, out = workloads()
    for kb in (16, 24, 32, 64, 256):
        old = _replay._set_chunk_bytes(kb * 1024, True)
        sc = cpu_time(lambda: score.predict(grid, out=out), 200)
        _replay._set_chunk_bytes(old, True)
        print(f"forward-only chunk {kb:5d} KB: score 10k {sc * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
