"""The input gradient's own W^T panels (``_replay._set_wt_panels``), per ISA.

Run: ``PYTHONPATH=src python benchmarks/bench_wt_panels.py [--isa
avx2,baseline,portable] [--H 128,256,512] [--cols 32,64,256] [--N
100,1000,10000] [--rounds 9] [--only kernel|step]`` (inside ``/work/bin/quiet
taskset -c 0`` on a shared machine).

A layer's backward computes dX = W^T dZ.  The old path reads W^T from the
forward's packed panels of W, transposed (``fg_gemm_rows``' ``trans``); the
new one packs W^T into panels of its own once per replay and runs the
forward's loops and micro-kernel on them.  Both add the same products in the
same order (the same bits; this script checks it for the kernel).  Two A/Bs,
the sides interleaved round by round in one process, for each ISA of the
layer kernels (``_replay._set_isa``):

* ``kernel``: the product alone (``_replay._kernel_rows`` on H x H weights
  and ``--cols`` columns, the replay's chunk widths): GFLOP/s of each side
  from the median CPU time per call;
* ``step``: one training step of ``make_demo_step(MLP(2, [H, H, 1]))`` (the
  grid's workload, ``fastgrad.bench.grid_peers.FastgradSide``; the packing
  included) with ``_set_wt_panels(False)`` and ``(True)``: median CPU and
  wall time per step.

Ratios are new / old (below 1: the W^T panels help), with the median and
range of the per-round ratios.
"""
import argparse
import os
import statistics
import sys
import time

MR = 8                                   # rows of a packed weight panel


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _pack(W):
    """W (M, K) in panels of MR rows, as one row (the kernels' layout)."""
    import numpy as np
    M, K = W.shape
    Mp = -(-M // MR) * MR
    P = np.zeros((Mp, K))
    P[:M] = W
    return np.ascontiguousarray(P.reshape(Mp // MR, MR, K).transpose(0, 2, 1)).reshape(1, -1)


def _interleave(calls, rounds, seconds=0.05):
    """Median CPU (and wall) seconds per call of each side, interleaved;
    the per-round ratios side 1 / side 0."""
    calls[0]()
    c0 = time.process_time()
    calls[0]()
    k = max(1, int(seconds / max(time.process_time() - c0, 1e-6)))
    cpu = [[], []]
    wall = [[], []]
    for rnd in range(rounds):
        for s in ((0, 1) if rnd % 2 else (1, 0)):
            calls[s]()
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(k):
                calls[s]()
            cpu[s].append((time.process_time() - c0) / k)
            wall[s].append((time.perf_counter() - w0) / k)
    ratios = sorted(b / a for a, b in zip(*cpu))
    return ([statistics.median(c) for c in cpu], [statistics.median(w) for w in wall],
            ratios)


def kernel_ab(isa, H, cols, rounds):
    import numpy as np
    from fastgrad import _replay
    rng = np.random.default_rng(H)
    W = rng.normal(size=(H, H))
    P, PT = _pack(W), _pack(W.T.copy())
    ld = -(-cols // 8) * 8
    dz = rng.normal(size=(H, ld))
    rows = np.arange(H, dtype=np.int32)
    mode = np.full(H, 1, np.uint8)
    outs = [np.zeros((H, ld)), np.zeros((H, ld))]

    def old():
        _replay._kernel_rows(P, H, H, True, None, None, mode, False, dz, rows, outs[0],
                             rows, cols)

    def new():
        _replay._kernel_rows(PT, H, H, False, None, None, mode, False, dz, rows, outs[1],
                             rows, cols)

    old()
    new()
    if outs[0][:, :cols].tobytes() != outs[1][:, :cols].tobytes():
        raise SystemExit(f"{isa} H={H} cols={cols}: the two paths' bits differ")
    cpu, _, pr = _interleave([old, new], rounds)
    fl = 2.0 * H * H * cols
    print(f"kernel {isa:9s} H=K={H:4d} cols={cols:4d}: old {fl / cpu[0] * 1e-9:6.2f} GFLOP/s, "
          f"new {fl / cpu[1] * 1e-9:6.2f}; time new/old {cpu[1] / cpu[0]:.3f} (per round "
          f"median {statistics.median(pr):.3f}, {pr[0]:.3f}-{pr[-1]:.3f})", flush=True)


def step_ab(isa, H, N, side, rounds):
    from fastgrad import _replay

    def with_panels(on):
        def call():
            _replay._set_wt_panels(on)
            side.step()
        return call

    cpu, wall, pr = _interleave([with_panels(False), with_panels(True)], rounds, 0.25)
    print(f"step   {isa:9s} H={H:4d} N={N:6d}: old CPU {cpu[0] * 1e3:9.2f} ms (wall "
          f"{wall[0] * 1e3:9.2f}), new CPU {cpu[1] * 1e3:9.2f} ms (wall {wall[1] * 1e3:9.2f}); "
          f"CPU new/old {cpu[1] / cpu[0]:.3f} (per round median {statistics.median(pr):.3f}, "
          f"{pr[0]:.3f}-{pr[-1]:.3f}); wall {wall[1] / wall[0]:.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="comma-separated (default: every one)")
    ap.add_argument("--H", type=_ints, default=[128, 256, 512])
    ap.add_argument("--cols", type=_ints, default=[32, 64, 256])
    ap.add_argument("--N", type=_ints, default=[100, 1000, 10_000])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--only", choices=("kernel", "step"), default=None)
    args = ap.parse_args(argv)

    from fastgrad import _replay
    from fastgrad.bench.grid_peers import FastgradSide

    isas = args.isa.split(",") if args.isa else _replay._supported_isas()
    print("load at start", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    old_isa = _replay._isa()
    old_wt = _replay._set_wt_panels(True)
    try:
        if args.only != "step":
            for isa in isas:
                _replay._set_isa(isa)
                for H in args.H:
                    for cols in args.cols:
                        kernel_ab(isa, H, cols, args.rounds)
        if args.only != "kernel":
            for H in args.H:
                sides = {N: FastgradSide(H, N) for N in args.N}
                for isa in isas:
                    _replay._set_isa(isa)
                    for N in args.N:
                        step_ab(isa, H, N, sides[N], args.rounds)
    finally:
        _replay._set_wt_panels(old_wt)
        _replay._set_isa(old_isa)
    print("load at end", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
