"""Model code styles (issue 20): the ways users write a model, compiled, against the peers.

Run from a checkout with the compiled build in place::

    PYTHONPATH=src python benchmarks/bench_styles.py [--rows NAME,...] [--N 1000,10000]
        [--rounds 7] [--json out.json] [--isa NAME]

Each row is one way of writing the same kind of model with ``fastgrad.Value``
(the class code is in ``src/fastgrad/bench/styles.py``, as a user would write
it), compiled with
``fastgrad.compile`` and trained with ``Program.sgd_step`` (full batch,
float64, SGD).  The peers compute the same mathematics (same weights, same
data, same loss) with whole-array operations: hand-written NumPy forward and
backward, ``jax.jit(value_and_grad)`` of the step, PyTorch eager; each on one
thread (the process is bound to one CPU, BLAS limited to one thread).

Before timing, every peer's first step is checked against fastgrad's (loss
to 1e-10 relative, parameters after the update to 1e-9 relative / 1e-12
absolute); a mismatch is a FAILURE and exit status 1.  Then the sides are
timed interleaved (rounds rotate the order; the median of the per-step
times); the CPU time (``time.process_time``) of each side is measured beside
the wall time.  The ratio is fastgrad / best peer (<= 1.0: fastgrad wins),
by wall time and by CPU time.  Each row says how many dense layers the
compiler found and which kernel build (ISA) ran.
"""
import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple

# before anything imports numpy (fastgrad does), jax or torch
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_cpu_multi_thread_eigen" not in _flags:
    os.environ["XLA_FLAGS"] = (
        _flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

from fastgrad.bench import grid, grid_report, harness  # noqa: E402
from fastgrad.bench.styles import (  # noqa: E402
    LOSS_RTOL, PARAM_ATOL, PARAM_RTOL, PEERS, STYLE_BY_NAME, STYLES, FastgradSide, Style,
)

# ---------------------------------------------------------------------------
# running a row
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class SideTimes:
    name: str
    status: str = "ok"
    reason: str = ""
    wall: List[float] = dataclasses.field(default_factory=list)    # per step, per round
    cpu: List[float] = dataclasses.field(default_factory=list)

    @property
    def s(self) -> Optional[float]:
        return statistics.median(self.wall) if self.wall else None

    @property
    def cpu_s(self) -> Optional[float]:
        return statistics.median(self.cpu) if self.cpu else None


@dataclasses.dataclass
class RowResult:
    style: str
    label: str
    N: int
    layers: int
    instructions: int
    isa: str
    compile_s: float
    loadavg: str
    sides: List[SideTimes]
    summary: str = ""

    def best(self) -> Optional[SideTimes]:
        ok = [s for s in self.sides[1:] if s.status == "ok" and s.s]
        return min(ok, key=lambda s: s.s or 0.0) if ok else None

    def ratio(self, cpu: bool = False) -> Optional[float]:
        b = self.best()
        f = self.sides[0]
        if b is None or f.status != "ok" or any(s.status == "FAILURE" for s in self.sides):
            return None
        if cpu:
            return (f.cpu_s or 0.0) / b.cpu_s if b.cpu_s else None
        return (f.s or 0.0) / b.s if b.s else None


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "n/a"


def run_row(style: Style, N: int, peers: Sequence[str], rounds: int,
            round_s: float = 0.05) -> RowResult:
    from fastgrad import _replay
    fg = FastgradSide(style, N)
    summary = ""
    if hasattr(fg.program, "summary"):
        summary = str(fg.program.summary())
    res = RowResult(style.name, style.label, N, fg.program.n_layers,
                    fg.program.n_instructions, _replay._isa(), fg.compile_s, _loadavg(),
                    [SideTimes("fastgrad")], summary)
    f_loss = fg.step()
    f_flat = fg.flat()
    sides: List[Tuple[Any, SideTimes]] = [(fg, res.sides[0])]
    for name in peers:
        r = SideTimes(name)
        res.sides.append(r)
        try:
            side = PEERS[name](style, fg.X, fg.Y, fg.initial)
            p_loss = side.step()
            grid.check_close("loss", f_loss, p_loss, LOSS_RTOL, 0.0)
            grid.check_close("parameters after the update", f_flat, side.flat(),
                           PARAM_RTOL, PARAM_ATOL)
        except harness.NotAvailable as exc:
            r.status, r.reason = "skipped", str(exc)
            continue
        except harness.Mismatch as exc:
            r.status, r.reason = "FAILURE", f"differs from fastgrad: {exc}"
            continue
        sides.append((side, r))
    if any(r.status == "FAILURE" for r in res.sides):
        return res
    # warm-up and steps per round
    ks = []
    for side, _ in sides:
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < round_s:
            side.step()
            n += 1
        ks.append(max(1, math.ceil(round_s / ((time.perf_counter() - t0) / n))))
    for rnd in range(rounds):
        order = list(range(len(sides)))
        order = order[rnd % len(order):] + order[:rnd % len(order)]
        for j in order:
            side, r = sides[j]
            side.step()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(ks[j]):
                side.step()
            t1, c1 = time.perf_counter(), time.process_time()
            r.wall.append((t1 - t0) / ks[j])
            r.cpu.append((c1 - c0) / ks[j])
    res.loadavg += " -> " + _loadavg()
    return res


def _ms(s: Optional[float]) -> str:
    return "-" if s is None else f"{s * 1e3:.3f}"


def report(rows: Sequence[RowResult]) -> str:
    lines = ["| model code | N | layers | fastgrad ms (cpu) | numpy | jax.jit | torch eager "
             "| ratio wall | ratio cpu | ISA | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = {s.name: s for s in r.sides}

        def side(name: str) -> str:
            s = cells.get(name)
            if s is None:
                return "-"
            if s.status != "ok":
                return s.status
            return f"{_ms(s.s)} ({_ms(s.cpu_s)})"

        rw, rc = r.ratio(), r.ratio(cpu=True)
        lines.append(
            f"| {r.label} | {r.N:,} | {r.layers} | {side('fastgrad')} | {side('numpy')} | "
            f"{side('jax.jit')} | {side('torch eager')} | "
            f"{'-' if rw is None else f'{rw:.2f}x'} | {'-' if rc is None else f'{rc:.2f}x'} "
            f"| {r.isa} | {r.loadavg} |")
    notes = [f"- {r.label} N={r.N}: {s.name} {s.status}: {s.reason}"
             for r in rows for s in r.sides if s.status != "ok"]
    return "\n".join(lines + notes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=",".join(s.name for s in STYLES))
    ap.add_argument("--N", default=None, help="override the row sizes (comma list)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--summary", action="store_true", help="print Program.summary()")
    ap.add_argument("--isa", default=None,
                    help="the layer kernels' ISA (fastgrad._replay._set_isa: portable, "
                         "baseline, avx2, avx512; default: the best this CPU runs)")
    args = ap.parse_args(argv)
    if args.isa is not None:
        from fastgrad import _replay
        try:
            _replay._set_isa(args.isa)
        except ValueError as e:
            ap.error(f"--isa: {e}")
    peers = [p for p in args.peers.split(",") if p]
    rows: List[RowResult] = []
    with grid.single_core() as how:
        print(f"# model code styles; {how}; commit {grid_report.source_commit()}", flush=True)
        for name in args.rows.split(","):
            style = STYLE_BY_NAME[name]
            Ns = [int(n) for n in args.N.split(",")] if args.N else style.Ns
            for N in Ns:
                with harness.isolated_gc():
                    r = run_row(style, N, peers, args.rounds)
                rows.append(r)
                print(report([r]).splitlines()[-1], flush=True)
                if args.summary and r.summary:
                    print(r.summary)
    print()
    print(report(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([dataclasses.asdict(r) | {"ratio": r.ratio(), "ratio_cpu": r.ratio(True)}
                       for r in rows], fh, indent=1)
    return 1 if any(s.status == "FAILURE" for r in rows for s in r.sides) else 0


if __name__ == "__main__":
    sys.exit(main())
