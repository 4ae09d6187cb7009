"""The chunk floor of wide layers (``_replay._set_layer_min_cols``), per ISA.

Run: ``PYTHONPATH=src python benchmarks/bench_layer_min_cols.py [--isa
portable,baseline,avx2] [--H 512] [--N 100,1000,10000] [--floor 256]
[--rounds 9]`` (inside ``/work/bin/quiet taskset -c 0`` on a shared machine).

One training step of ``make_demo_step(MLP(2, [H, H, 1]))`` (the grid's
workload, ``fastgrad.bench.grid_peers.FastgradSide``) with the floor off (0)
and at ``--floor`` columns per chunk, the two interleaved round by round in
one process, for each ISA of the layer kernels (``_replay._set_isa``).  Prints
per cell the median over the rounds of the process CPU time and the wall time
per step, and the ratio floor / no floor (below 1: the floor helps), with
the median and range of the per-round ratios.  The floor applies only to
programs with a layer of more than 512 KiB of weights (H = 512 here).
"""
import argparse
import os
import statistics
import sys
import time


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="comma-separated (default: every one)")
    ap.add_argument("--H", type=int, default=512)
    ap.add_argument("--N", type=_ints, default=[100, 1000, 10_000])
    ap.add_argument("--floor", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)

    from fastgrad import _replay
    from fastgrad.bench.grid_peers import FastgradSide

    isas = args.isa.split(",") if args.isa else _replay._supported_isas()
    vals = [0, args.floor]
    print("load at start", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    sides = {N: FastgradSide(args.H, N) for N in args.N}
    old_isa = _replay._isa()
    old_floor = _replay._set_layer_min_cols(0)
    try:
        for isa in isas:
            _replay._set_isa(isa)
            for N in args.N:
                fn = sides[N].step
                fn()
                c0 = time.process_time()
                fn()
                k = max(1, int(0.3 / max(time.process_time() - c0, 1e-6)))
                wall = {a: [] for a in vals}
                cpu = {a: [] for a in vals}
                for rnd in range(args.rounds):
                    for a in (vals if rnd % 2 else vals[::-1]):
                        _replay._set_layer_min_cols(a)
                        fn()
                        c0, w0 = time.process_time(), time.perf_counter()
                        for _ in range(k):
                            fn()
                        wall[a].append((time.perf_counter() - w0) / k)
                        cpu[a].append((time.process_time() - c0) / k)
                pr = sorted(c1 / c0 for c0, c1 in zip(cpu[0], cpu[args.floor]))
                c_off, c_on = statistics.median(cpu[0]), statistics.median(cpu[args.floor])
                w_off, w_on = statistics.median(wall[0]), statistics.median(wall[args.floor])
                print(f"{isa:9s} H={args.H} N={N:6d}: floor 0 CPU {c_off * 1e3:9.2f} ms "
                      f"(wall {w_off * 1e3:9.2f}); floor {args.floor} CPU {c_on * 1e3:9.2f} ms "
                      f"(wall {w_on * 1e3:9.2f}); CPU ratio {c_on / c_off:.3f} (per round "
                      f"median {statistics.median(pr):.3f}, {pr[0]:.3f}-{pr[-1]:.3f}); "
                      f"wall ratio {w_on / w_off:.3f}", flush=True)
    finally:
        _replay._set_layer_min_cols(old_floor)
        _replay._set_isa(old_isa)
    print("load at end", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
