"""num_threads of the compiled replay: speed-up over one thread, and the bits.

Run: ``PYTHONPATH=src python benchmarks/bench_threads.py [--H 64,128] [--N 10000]
[--threads 1,2] [--rounds 7]`` (inside ``/work/bin/quiet`` on a shared machine).

One training step of ``make_demo_step(MLP(2, [H, H, 1]))`` (hinge + 1e-4 L2,
full batch of N two-moons-like points, float64) per call of
``Program.batch`` (loss and parameter gradients), for each thread count, the
counts interleaved round by round in one process; per count the median over
the rounds of the wall time per call and of the process CPU time per call
(``time.process_time``: all threads).  Before timing, every count's loss and
gradients are checked to be the same bits as one thread's.  Prints the
speed-up (one thread's wall time / this count's) and the load average.
Issue 21's target: >= 1.7x with 2 threads at H = 128, N = 10,000 on an idle
2-core machine.
"""
import argparse
import os
import random
import statistics
import sys
import time

import numpy as np


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--H", type=_ints, default=[64, 128])
    ap.add_argument("--N", type=_ints, default=[10_000])
    ap.add_argument("--threads", type=_ints, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="calls per round and count")
    args = ap.parse_args(argv)

    import fastgrad
    from fastgrad import _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP

    print(f"fastgrad {fastgrad.__version__}, kernels: {_replay._isa()}, "
          f"CPUs for this process: {len(os.sched_getaffinity(0))}, "
          f"load at start {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    print("| H | N | threads | wall ms/step | CPU ms/step | speed-up (wall) | same bits |")
    print("|---|---|---|---|---|---|---|")
    for H in args.H:
        random.seed(1337)
        model = MLP(2, [H, H, 1])
        prog = make_demo_step(model).program
        pg = np.empty(prog.n_params)
        for N in args.N:
            rng = np.random.default_rng(0)
            X = rng.uniform(-1.5, 2.5, size=(N, 2))
            y = np.where(X[:, 1] > np.sin(X[:, 0]), 1.0, -1.0)
            ref = None
            same = {}
            for n in args.threads:
                loss = prog.batch((X, y), param_grad=pg, num_threads=n)
                bits = (np.float64(loss).tobytes(), pg.tobytes())
                ref = bits if ref is None else ref
                same[n] = bits == ref
            wall = {n: [] for n in args.threads}
            cpu = {n: [] for n in args.threads}
            for _ in range(args.rounds):
                for n in args.threads:
                    w0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(args.calls):
                        prog.batch((X, y), param_grad=pg, num_threads=n)
                    wall[n].append((time.perf_counter() - w0) / args.calls)
                    cpu[n].append((time.process_time() - c0) / args.calls)
            w1 = statistics.median(wall[args.threads[0]])
            for n in args.threads:
                w = statistics.median(wall[n])
                c = statistics.median(cpu[n])
                print(f"| {H} | {N:,} | {n} | {w * 1e3:.2f} | {c * 1e3:.2f} | "
                      f"{w1 / w:.2f}x | {'yes' if same[n] else 'NO'} |", flush=True)
    la = os.getloadavg()
    print(f"load at end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
