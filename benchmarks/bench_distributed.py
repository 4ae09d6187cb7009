"""Past one machine: data-parallel steps and a sweep, 1 process vs 2 workers.

A script, not a pytest-benchmark module (worker pools and wall-clock ratios
do not fit pedantic rounds); it defines no tests.  Run::

    PYTHONPATH=src python benchmarks/bench_distributed.py            # everything
    PYTHONPATH=src python benchmarks/bench_distributed.py --only dp  # or: sweep
    PYTHONPATH=src python benchmarks/bench_distributed.py --dask     # + Dask rows

1. **Data-parallel step** (``fastgrad.distributed.DataParallel``): micrograd's
   demo model (MLP(2, [16, 16, 1]), svm loss + 1e-4 L2, plain SGD) on
   ``make_moons(N, noise=0.1)``.  One process: ``Program.sgd_step`` on the
   whole batch.  Two workers: ``DataParallel(..., ProcessPoolExecutor(2),
   n_shards=2).sgd_step``.  Blocks of steps of the two alternate (so that load
   from other users hits both) and the median step time of each is compared.
   Also printed: each step's communication cost (step time minus the slower
   worker's compute time) and the bytes of one task and one answer; with
   ``N = 200,000`` the cost of sending each shard with every step (what a
   plain executor without the worker cache would pay); and the speed-up for
   smaller N, to see where it stops paying off.
2. **Sweep** (``fastgrad.sweep``): 16 learning rates x 4 seeds = 64 runs, each
   100 compiled SGD steps of the demo on 1,000 moons points; serial in this
   process vs ``ProcessPoolExecutor(2)`` (already started; the start-up time
   of the pool is printed separately), alternated, repeated.  The results are
   checked to be bitwise equal.

Both figures are ratios of times measured in the same run, interleaved.  The
machine may be shared: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np

import fastgrad
from fastgrad.distributed import DataParallel, sweep
from fastgrad.distributed.data_parallel import _shard_step
from fastgrad.nn import MLP

ALPHA = 1e-4


def _context() -> Any:
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods()
                         else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["fastgrad.distributed", "fastgrad.nn"])
    return ctx


def moons(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=n, noise=0.1, random_state=seed)
    return X, y * 2.0 - 1.0


def demo_recipe(seed: int = 1337) -> tuple[Any, Any, Any]:
    random.seed(seed)
    model = MLP(2, [16, 16, 1])

    def per_sample(v: list[fastgrad.Value]) -> list[fastgrad.Value]:
        score = model(v[:2])
        return [(1 + -v[2] * score).relu(), score]

    return model, per_sample, (lambda ps: ALPHA * sum(p * p for p in ps))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spin(n: int) -> float:
    t = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t


def capacity(pool: ProcessPoolExecutor, n: int = 3_000_000) -> float:
    """How many cores two busy workers get right now (2.0 on an idle machine).

    One CPU-bound task alone, then two at once: 2 * t(one) / t(two at once)
    -- the ceiling of any 2-worker speed-up measured at this moment.
    """
    one = min(pool.submit(_spin, n).result() for _ in range(2))
    both = min(max(pool.map(_spin, [n, n])) for _ in range(2))
    return 2 * one / both


# -- 1. data-parallel steps ------------------------------------------------------

def bench_dp(executor: Any, n: int, blocks: int, steps: int,
             resend: bool = False) -> dict[str, float]:
    X, y = moons(n)
    model1, f1, pen = demo_recipe()
    prog = fastgrad.compile(f1, 3, params=model1.parameters(), penalty=pen)
    model2, f2, pen = demo_recipe()
    dp = DataParallel(f2, 3, model2.parameters(), (X, y), executor, n_shards=2,
                      penalty=pen)
    # warm-up: workers record the program and receive their shards; check
    for _ in range(3):
        a = prog.sgd_step((X, y), 0.05)
        b = dp.sgd_step(0.05)
        assert abs(a - b) <= 1e-12 * abs(a), (a, b)
    dp._resend = resend
    single: list[float] = []
    single_cpu: list[float] = []
    parallel: list[float] = []
    comm: list[float] = []
    shard_cpu: list[float] = []
    for _ in range(blocks):
        for _ in range(steps):
            t, c = time.perf_counter(), time.thread_time()
            prog.sgd_step((X, y), 0.01)
            single.append(time.perf_counter() - t)
            single_cpu.append(time.thread_time() - c)
        for _ in range(steps):
            t = time.perf_counter()
            dp.sgd_step(0.01)
            dt = time.perf_counter() - t
            parallel.append(dt)
            comm.append(dt - max(dp.last_worker_seconds))
            shard_cpu.append(max(dp.last_worker_cpu_seconds))
    theta = np.empty(len(model2.parameters()))
    task = len(pickle.dumps((_shard_step, dp._token, 0, theta, None)))
    answer = len(pickle.dumps((0.0, theta, 0.0, 0.0)))
    shard = len(pickle.dumps(dp._shards[0]))
    dp.close()
    s, p = statistics.median(single), statistics.median(parallel)
    return {"n": n, "single": s, "parallel": p, "speedup": s / p,
            "comm": statistics.median(comm), "single_cpu": statistics.median(single_cpu),
            "shard_cpu": statistics.median(shard_cpu), "task_bytes": task,
            "answer_bytes": answer, "shard_bytes": shard}


# -- 2. the sweep ----------------------------------------------------------------

def make_train(n_points: int = 1000, steps: int = 100) -> Any:
    X, y = moons(n_points, seed=1)

    def train(lr: float, seed: int) -> tuple[list[float], float, int]:
        # returns the loss curve, and the CPU time and process that ran it
        c = time.thread_time()
        random.seed(seed)
        model = MLP(2, [16, 16, 1])

        def per_sample(v: list[fastgrad.Value]) -> list[fastgrad.Value]:
            score = model(v[:2])
            return [(1 + -v[2] * score).relu(), score]

        prog = fastgrad.compile(per_sample, 3, params=model.parameters(),
                                penalty=lambda ps: ALPHA * sum(p * p for p in ps))
        losses = [prog.sgd_step((X, y), lr) for _ in range(steps)]
        return losses, time.thread_time() - c, os.getpid()

    return train


def bench_sweep(pool: Any, repeats: int) -> dict[str, Any]:
    train = make_train()
    grid = {"lr": np.logspace(-3, 0.5, 16).tolist()}
    seeds = [0, 1, 2, 3]
    serial_t: list[float] = []
    par_t: list[float] = []
    cpu_serial: list[float] = []
    cpu_busiest: list[float] = []
    for _ in range(repeats):
        t = time.perf_counter()
        rs = sweep(train, grid, seeds=seeds, progress=False)
        serial_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        rp = sweep(train, grid, seeds=seeds, executor=pool, progress=False)
        par_t.append(time.perf_counter() - t)
        assert len(rs.results) == 64
        assert [r[0] for r in rp.results] == [r[0] for r in rs.results], \
            "parallel sweep differs from serial"
        cpu_serial.append(sum(r[1] for r in rs.results))
        per_worker: dict[int, float] = {}
        for _, cpu, pid in rp.results:
            per_worker[pid] = per_worker.get(pid, 0.0) + cpu
        cpu_busiest.append(max(per_worker.values()))
    s, p = statistics.median(serial_t), statistics.median(par_t)
    return {"serial": s, "parallel": p, "speedup": s / p,
            "serial_all": serial_t, "parallel_all": par_t,
            "cpu_serial": statistics.median(cpu_serial),
            "cpu_busiest": statistics.median(cpu_busiest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["dp", "sweep"])
    ap.add_argument("--repeats", type=int, default=3, help="sweep repeats (default 3)")
    ap.add_argument("--blocks", type=int, default=6,
                    help="alternating blocks of steps per size (default 6)")
    ap.add_argument("--steps", type=int, default=5, help="steps per block (default 5)")
    ap.add_argument("--sizes", default="1000,3000,10000,30000,100000,200000",
                    help="data-set sizes for the data-parallel rows")
    ap.add_argument("--dask", action="store_true",
                    help="also run the data-parallel step on a Dask LocalCluster(2)")
    args = ap.parse_args()
    print(f"load average before: {load()}  (cores: {os.cpu_count()})")
    t = time.perf_counter()
    pool = ProcessPoolExecutor(2, mp_context=_context())
    list(pool.map(abs, [1, 2]))              # workers up
    print(f"ProcessPoolExecutor(2) start-up (forkserver, fastgrad preloaded): "
          f"{time.perf_counter() - t:.2f} s")
    print(f"cores two busy workers get now: {capacity(pool):.2f} (2.00 if idle)")
    try:
        if args.only in (None, "dp"):
            print("\n== data-parallel SGD step, demo MLP 2-16-16-1, 2 shards ==")
            print("(wall time per step, medians; comm = step - slower worker's compute;"
                  " CPU: one process's step vs the busier shard's)")
            print(f"{'points':>8} {'1 process':>11} {'2 workers':>11} {'speed-up':>9} "
                  f"{'comm/step':>10} {'CPU 1 proc':>11} {'CPU shard':>10}")
            for n in [int(s) for s in args.sizes.split(",")]:
                r = bench_dp(pool, n, args.blocks, args.steps)
                print(f"{n:>8} {r['single'] * 1e3:>9.2f}ms {r['parallel'] * 1e3:>9.2f}ms "
                      f"{r['speedup']:>8.2f}x {r['comm'] * 1e3:>8.2f}ms "
                      f"{r['single_cpu'] * 1e3:>9.2f}ms {r['shard_cpu'] * 1e3:>8.2f}ms")
            print(f"per step and shard: task {r['task_bytes']} B out, answer "
                  f"{r['answer_bytes']} B back (shard of {n} // 2 rows: "
                  f"{r['shard_bytes'] / 1e6:.1f} MB, sent once)")
            n = max(int(s) for s in args.sizes.split(","))
            r2 = bench_dp(pool, n, args.blocks, args.steps, resend=True)
            print(f"shipping both shards with every step instead ({n} points): "
                  f"{r2['parallel'] * 1e3:.2f} ms/step vs 1 process "
                  f"{r2['single'] * 1e3:.2f} ms ({r2['speedup']:.2f}x), "
                  f"communication {r2['comm'] * 1e3:.2f} ms/step")
            with ThreadPoolExecutor(2) as threads:     # the replay releases the GIL
                for m in sorted({10000, n}):
                    r = bench_dp(threads, m, args.blocks, args.steps)
                    print(f"ThreadPoolExecutor(2), {m} points: {r['parallel'] * 1e3:.2f} "
                          f"ms/step vs 1 process {r['single'] * 1e3:.2f} ms "
                          f"({r['speedup']:.2f}x), overhead {r['comm'] * 1e3:.2f} ms/step")
            if args.dask:
                import distributed
                with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                              host="127.0.0.1",
                                              dashboard_address=None) as cluster, \
                        distributed.Client(cluster) as client:
                    for n in (30000, 200000):
                        r = bench_dp(client, n, args.blocks, args.steps)
                        print(f"Dask LocalCluster(2), {n} points: {r['parallel'] * 1e3:.2f} "
                              f"ms/step vs 1 process {r['single'] * 1e3:.2f} ms "
                              f"({r['speedup']:.2f}x), communication "
                              f"{r['comm'] * 1e3:.2f} ms/step")
        if args.only in (None, "sweep"):
            print("\n== sweep: 16 lr x 4 seeds = 64 runs (100 compiled steps on 1000 "
                  "points each) ==")
            r = bench_sweep(pool, args.repeats)
            print(f"serial {r['serial']:.2f} s, ProcessPoolExecutor(2) "
                  f"{r['parallel']:.2f} s: {r['speedup']:.2f}x (medians of "
                  f"{args.repeats}; serial {[round(x, 2) for x in r['serial_all']]}, "
                  f"parallel {[round(x, 2) for x in r['parallel_all']]}); "
                  "results bitwise equal")
            print(f"CPU time: serial {r['cpu_serial']:.2f} s; the busier worker "
                  f"{r['cpu_busiest']:.2f} s (so with 2 free cores: "
                  f"{r['cpu_serial'] / r['cpu_busiest']:.2f}x)")
        print(f"\ncores two busy workers get now: {capacity(pool):.2f} (2.00 if idle)")
    finally:
        pool.shutdown(wait=True)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
