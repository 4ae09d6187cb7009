"""num_threads of the compiled replay: speed-up over one thread, and the bits.

Run: ``PYTHONPATH=src python benchmarks/bench_threads.py [--H 64,128] [--N 10000]
[--threads 1,2] [--rounds 7] [--what batch,step] [--isa avx2]`` (inside
``/work/bin/quiet`` on a shared machine).

``batch``: one ``Program.batch`` call (loss and parameter gradients) of
``make_demo_step(MLP(2, [H, H, 1]))``'s program (hinge + 1e-4 L2, full batch of
N two-moons-like points, float64); ``step``: one call of the demo step itself
(``make_demo_step(model, num_threads=n)``: the batch, the SGD update, the
accuracy).  For each thread count, the counts interleaved round by round in
one process (the order reversed every other round); per count the wall time
per call of every round, their median, the median process CPU time per call
(``time.process_time``: all threads) and the host's steal ticks
(``/proc/stat``, all CPUs, during that count's rounds: time a VM's vCPUs
waited for the host; 0 on an idle host).  Before timing, every count's loss
and gradients (``batch``) or parameters after two steps (``step``) are
checked to be the same bits as one thread's.  Prints the speed-up (the first
count's median wall time / this count's, and the median of the per-round
ratios) and the load average.  Issue 21's target: >= 1.7x with 2 threads at
H = 128, N = 10,000 on an idle 2-core machine.
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


def _steal():
    """The host's steal ticks so far (all CPUs; 0 where /proc/stat has none)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if len(fields) > 8 else 0
    except OSError:
        return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--H", type=_ints, default=[64, 128])
    ap.add_argument("--N", type=_ints, default=[10_000])
    ap.add_argument("--threads", type=_ints, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="calls per round and count")
    ap.add_argument("--what", default="batch",
                    help="comma-separated: batch (Program.batch), step (the demo step)")
    ap.add_argument("--isa", default=None,
                    help="the layer kernels' ISA (fastgrad._replay._set_isa: portable, "
                         "baseline, avx2, avx512; default: the best this CPU runs)")
    args = ap.parse_args(argv)
    whats = [w.strip() for w in args.what.split(",") if w.strip()]
    if not whats or any(w not in ("batch", "step") for w in whats):
        ap.error("--what: batch and/or step")

    import fastgrad
    from fastgrad import _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP

    if args.isa is not None:
        try:
            _replay._set_isa(args.isa)
        except ValueError as e:
            ap.error(f"--isa: {e}")

    def model_of(H):
        random.seed(1337)
        return MLP(2, [H, H, 1])

    print(f"fastgrad {fastgrad.__version__}, kernels: {_replay._isa()}, "
          f"CPUs for this process: {len(os.sched_getaffinity(0))}, "
          f"load at start {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}", flush=True)
    print("| what | H | N | threads | wall ms/call (rounds) | median | CPU ms/call | "
          "steal ticks | speed-up (wall) | per-round speed-up | same bits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for what in whats:
        for H in args.H:
            for N in args.N:
                rng = np.random.default_rng(0)
                X = rng.uniform(-1.5, 2.5, size=(N, 2))
                y = np.where(X[:, 1] > np.sin(X[:, 0]), 1.0, -1.0)
                fns = {}
                same = {}
                ref = None
                if what == "batch":
                    prog = make_demo_step(model_of(H)).program
                    pg = np.empty(prog.n_params)
                    for n in args.threads:
                        loss = prog.batch((X, y), param_grad=pg, num_threads=n)
                        bits = (np.float64(loss).tobytes(), pg.tobytes())
                        ref = bits if ref is None else ref
                        same[n] = bits == ref

                        def fn(n=n):
                            prog.batch((X, y), param_grad=pg, num_threads=n)
                        fns[n] = fn
                else:
                    for n in args.threads:
                        model = model_of(H)
                        step = make_demo_step(model, num_threads=n)
                        for _ in range(2):
                            step(X, y, 0.01)
                        bits = np.array([p.data for p in model.parameters()]).tobytes()
                        ref = bits if ref is None else ref
                        same[n] = bits == ref

                        def fn(step=step):
                            step(X, y, 0.01)
                        fns[n] = fn
                wall = {n: [] for n in args.threads}
                cpu = {n: [] for n in args.threads}
                steal = dict.fromkeys(args.threads, 0)
                for r in range(args.rounds):
                    order = args.threads if r % 2 == 0 else args.threads[::-1]
                    for n in order:
                        fns[n]()                        # (warm: its buffers, caches)
                        s0 = _steal()
                        w0, c0 = time.perf_counter(), time.process_time()
                        for _ in range(args.calls):
                            fns[n]()
                        wall[n].append((time.perf_counter() - w0) / args.calls)
                        cpu[n].append((time.process_time() - c0) / args.calls)
                        steal[n] += _steal() - s0
                n1 = args.threads[0]
                w1 = statistics.median(wall[n1])
                for n in args.threads:
                    w = statistics.median(wall[n])
                    c = statistics.median(cpu[n])
                    per = statistics.median(a / b for a, b in zip(wall[n1], wall[n]))
                    rounds = " ".join(f"{v * 1e3:.1f}" for v in wall[n])
                    print(f"| {what} | {H} | {N:,} | {n} | {rounds} | {w * 1e3:.2f} | "
                          f"{c * 1e3:.2f} | {steal[n]} | {w1 / w:.2f}x | {per:.2f}x | "
                          f"{'yes' if same[n] else 'NO'} |", flush=True)
    la = os.getloadavg()
    print(f"load at end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
