"""The H x N grid's report (tables, GFLOP/s, heatmap) and its script
(``benchmarks/bench_grid.py`` runs :func:`main`)."""
import argparse
import datetime
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from fastgrad.bench.grid import (
    DEFAULT_H, DEFAULT_N, DEMO_CELL, PEAK_GFLOPS, ROUND_S, CellResult, default_threads,
    measured_peak_gflops, run_grid, single_core,
)
from fastgrad.bench.grid_peers import ALPHA, LR, PEER_LABELS, PEERS, xla_flags_set

__all__ = ["format_report", "write_heatmap", "ratio_table", "cell_table", "demo_line",
           "main"]

# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

def fmt_time(s: Optional[float]) -> str:
    """``36.9 us``, ``4.01 ms``, ``1.20 s`` (3 significant digits)."""
    if s is None:
        return "-"
    if s >= 0.9995:
        return f"{s:.2f} s"
    if s >= 0.9995e-3:                  # (999.6 us would print as 1e+03 us)
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_ratio(r: Optional[float], mark: bool = True) -> str:
    """``**0.50x** (wins)`` at or below 1.0, ``4.8x`` above (the issue's layout)."""
    if r is None:
        return "-"
    text = f"{r:.2f}x" if r < 10 else f"{r:.1f}x"
    return f"**{text}** (wins)" if mark and r <= 1.0 else text


def _grid_table(cells: Sequence[CellResult], cell_text: Callable[[CellResult], str]) -> str:
    Hs = sorted({c.H for c in cells})
    Ns = sorted({c.N for c in cells})
    by = {(c.H, c.N): c for c in cells}
    lines = ["| H \\ N | " + " | ".join(f"{n:,}" for n in Ns) + " |",
             "|---|" + "---|" * len(Ns)]
    for H in Hs:
        row = [cell_text(by[H, N]) if (H, N) in by else "" for N in Ns]
        lines.append(f"| {H} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _status_text(c: CellResult) -> str:
    if c.failures:
        return "FAILURE"
    if c.fastgrad.status != "ok":
        return c.fastgrad.status
    return "no peer"


def ratio_table(cells: Sequence[CellResult]) -> str:
    """The issue's H x N table of fastgrad time / best peer time."""
    return _grid_table(cells, lambda c: fmt_ratio(c.ratio) if c.ratio is not None
                       else _status_text(c))


def cell_table(cells: Sequence[CellResult], peers: Sequence[str]) -> str:
    """One line per cell: every side's time, the best peer, ratio, GFLOP/s."""
    head = (["H", "N", "fastgrad"] + [PEER_LABELS[p] for p in peers]
            + ["best peer", "ratio", "fastgrad GFLOP/s", "best peer GFLOP/s"])
    body = []
    for c in cells:
        sides = {r.name: r for r in c.peers}
        row = [str(c.H), f"{c.N:,}", fmt_time(c.fastgrad.s)]
        for p in peers:
            side = sides.get(p)
            if side is None or side.status == "ok":
                row.append(fmt_time(side.s if side else None))
            else:
                row.append(side.status)
        best = c.best
        fg_g, best_g = c.gflops(c.fastgrad), c.gflops(best)
        row += [best.label if best else "-", fmt_ratio(c.ratio, mark=False),
                f"{fg_g:.2f}" if fg_g is not None else "-",
                f"{best_g:.2f}" if best_g is not None else "-"]
        body.append(row)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    left = {len(head) - 4}                          # the best peer's name
    lines: List[str] = []
    for line in [head] + body:
        cells_ = [x.ljust(w) if i in left else x.rjust(w) for i, (x, w) in
                  enumerate(zip(line, widths))]
        lines.append("| " + " | ".join(cells_) + " |")
    lines.insert(1, "|" + "|".join(("-" * (w + 2)) if i in left else ("-" * (w + 1) + ":")
                                   for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def demo_line(cells: Sequence[CellResult], peak_gflops: Optional[float] = PEAK_GFLOPS) -> str:
    """The demo cell's FLOPs, FLOP-bound time and fastgrad's ratio to it
    (``peak_gflops`` None: this core's measured mul+add peak)."""
    H, N = DEMO_CELL
    c = next((c for c in cells if (c.H, c.N) == DEMO_CELL), None)
    if c is None or c.flops is None:
        return (f"demo cell (H={H}, N={N}): not in this grid (or fastgrad did not run), "
                "no FLOP-bound figure")
    measured = peak_gflops is None
    if peak_gflops is None:
        peak_gflops = measured_peak_gflops()
        if peak_gflops is None:
            return (f"demo cell (H={H}, N={N}): {c.flops:,} FLOPs per step; no measured "
                    "peak in this build (--peak-gflops to give one)")
    bound = c.flops / (peak_gflops * 1e9)
    text = (f"demo cell (H={H}, N={N}): {c.flops:,} FLOPs per step (counted from the "
            f"recorded program); FLOP-bound time {fmt_time(bound)} at {peak_gflops:.3g} "
            "GFLOP/s")
    if measured:
        from fastgrad import _replay
        text += (f" (this core's measured mul+add peak, {_replay._isa()} vectors; "
                 "--peak-gflops to change)")
    if c.fastgrad.s is not None:
        text += (f"; fastgrad {fmt_time(c.fastgrad.s)} = {c.fastgrad.s / bound:.1f}x the "
                 "FLOP-bound time (goal: <= 4x)")
    return text


def notes(cells: Sequence[CellResult], skips: bool = True,
          threaded: bool = False) -> List[str]:
    """One line per failed side, per skipped one (each reason once; not with
    ``skips=False``), and per side that used more than one core (not in the
    threads mode, ``threaded=True``, where they may)."""
    out: List[str] = []
    skipped: Dict[Tuple[str, Optional[str]], List[str]] = {}
    for c in cells:
        for r in [c.fastgrad] + c.peers:
            if r.status == "skipped":
                skipped.setdefault((r.label, r.reason), []).append(f"H={c.H} N={c.N}")
            elif r.status != "ok":
                out.append(f"{r.status}: H={c.H} N={c.N} {r.label}: {r.reason}")
            elif not threaded and r.cpu_per_wall is not None and r.cpu_per_wall > 1.25:
                out.append(f"warning: H={c.H} N={c.N} {r.label} used "
                           f"{r.cpu_per_wall:.2f} s of CPU per second: more than one core")
    if skips:
        for (label, reason), where in skipped.items():
            cells_text = "every cell" if len(where) == len(cells) > 1 else ", ".join(where)
            out.append(f"skipped: {label} ({cells_text}): {reason}")
    return out


def format_report(cells: Sequence[CellResult], peers: Sequence[str] = PEERS,
                  peak_gflops: Optional[float] = PEAK_GFLOPS,
                  skip_notes: bool = True, threaded: bool = False) -> str:
    """The grid's text report: per-cell table, the issue's tables (wall
    time, then CPU time), demo line, notes (``skip_notes=False``: without
    the skipped sides, for a caller that lists them already; ``threaded``:
    the threads mode, where sides may use several cores)."""
    shown = [p for p in peers if any(r.name == p and r.status != "skipped"
                                     for c in cells for r in c.peers)] or list(peers)
    parts = [cell_table(cells, shown), "",
             "fastgrad time / best peer time per step (<= 1.0x: fastgrad wins):", "",
             ratio_table(cells), "",
             "fastgrad CPU time / best peer's CPU time per step (process CPU time, "
             "median over the rounds; the best peer by wall time):", "",
             _grid_table(cells, lambda c: fmt_ratio(c.cpu_ratio, mark=False)), "",
             "best peer:", "",
             _grid_table(cells, lambda c: c.best.label if c.best else "-"), "",
             "fastgrad GFLOP/s (FLOPs counted from the recorded program):", "",
             _grid_table(cells, lambda c: (f"{c.gflops(c.fastgrad):.2f}"
                                           if c.gflops(c.fastgrad) is not None else "-")),
             "", demo_line(cells, peak_gflops)]
    extra = notes(cells, skips=skip_notes, threaded=threaded)
    if extra:
        parts += [""] + extra
    return "\n".join(parts)


def write_heatmap(cells: Sequence[CellResult], path: str, title: str) -> None:
    """Heatmap of fastgrad time / best peer time, annotated with the ratio.

    A diverging colormap centred at 1.0 on a log scale (blue: fastgrad
    wins, red: a peer wins); cells without a ratio are grey.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    Hs = sorted({c.H for c in cells})
    Ns = sorted({c.N for c in cells})
    by = {(c.H, c.N): c for c in cells}
    R = np.full((len(Hs), len(Ns)), np.nan)
    for i, H in enumerate(Hs):
        for j, N in enumerate(Ns):
            c = by.get((H, N))
            if c is not None and c.ratio is not None:
                R[i, j] = c.ratio
    finite = R[np.isfinite(R)]
    span = max(2.0, float(np.max(np.maximum(finite, 1.0 / finite)))) if finite.size else 2.0
    fig = Figure(figsize=(1.9 * len(Ns) + 2.6, 0.9 * len(Hs) + 1.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = _diverging_cmap()
    im = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, norm=LogNorm(1.0 / span, span),
                   origin="lower", aspect="auto")
    for i, H in enumerate(Hs):
        for j, N in enumerate(Ns):
            c = by.get((H, N))
            r = R[i, j]
            if np.isfinite(r):
                best = c.best.label if c and c.best else ""
                text = f"{r:.2f}x\n{best}"
                dark = abs(math.log(r)) > 0.6 * math.log(span)
            else:
                text = _status_text(c) if c else ""
                dark = False
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(Ns)))
    ax.set_xticklabels([f"{n:,}" for n in Ns])
    ax.set_yticks(range(len(Hs)))
    ax.set_yticklabels([str(h) for h in Hs])
    ax.set_xlabel("N (points per full batch)")
    ax.set_ylabel("H (hidden width)")
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("fastgrad time / best peer time (log; < 1: fastgrad wins)")
    fig.tight_layout()
    fig.savefig(path)


def _diverging_cmap() -> Any:
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"]
    if hasattr(cmap, "with_extremes"):          # matplotlib >= 3.4
        return cmap.with_extremes(bad="0.8")
    cmap = cmap.copy()
    cmap.set_bad("0.8")
    return cmap


# ---------------------------------------------------------------------------
# the script
# ---------------------------------------------------------------------------

def source_commit() -> Optional[str]:
    """``abc1234`` (``+ uncommitted changes`` when dirty) of the fastgrad
    checkout being run, or None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def header(info: Mapping[str, Any], rounds: int, round_s: float, threads: str,
           commit: Optional[str], threaded: bool = False) -> str:
    """The lines naming the machine, the versions and the protocol."""
    jax_v = info.get("jax")
    if threaded:
        thread_line = (f"threads: {threads}; XLA_FLAGS="
                       f"{os.environ.get('XLA_FLAGS', '(unset)')!r}")
    else:
        thread_line = (
            f"threads: one per side: {threads}; torch.set_num_threads(1); "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r}"
            + ("" if "jax" not in sys.modules or xla_flags_set()
               else " (jax was imported before the flags could be set)"))
    return "\n".join([
        f"fastgrad {info['fastgrad']} H x N grid -- {info['date_utc']}"
        + (f" -- commit {commit}" if commit else ""),
        f"measured: fastgrad's {info.get('fastgrad_build', 'compiled')} build"
        + (f" ({info['fastgrad_extension']})" if info.get("fastgrad_extension") else ""),
        f"machine: {info['cpu']} ({info['cpus']} logical CPUs), {info['platform']}",
        f"python:  {info['python']}; numpy {info['numpy']}, "
        f"torch {info.get('torch') or 'not installed'}, jax {jax_v or 'not installed'}",
        thread_line,
        "workload: full-batch training step of MLP(2, [H, H, 1]) (random.seed(1337)) on N "
        f"two-moons points, float64: mean(relu(1 - y*score)) + {ALPHA:g}*sum(p*p), "
        f"SGD lr {LR:g}; every peer checked against fastgrad's first step",
        f"timing: median over {rounds} interleaved rounds of the time per step, each round "
        f">= {round_s * 1e3:.0f} ms of steps per side",
    ])


def _threads(text: str) -> int:
    """``--threads``: a count >= 1, or ``all`` (0: every CPU)."""
    if text.strip().lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads: expected a count >= 1 or 'all', "
                                         f"got {text!r}")
    return n


def _ints(text: str, what: str) -> List[int]:
    try:
        vals = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated integers, "
                                         f"got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{what}: expected positive integers, got {text!r}")
    return vals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_grid.py",
        description="fastgrad compiled against NumPy, PyTorch and JAX on the H x N grid "
                    "(issue 13): full-batch MLP(2, [H, H, 1]) training steps, float64, "
                    "one thread, checked before timing.")
    p.add_argument("--H", type=lambda s: _ints(s, "--H"), default=list(DEFAULT_H),
                   metavar="H[,H]", help="hidden widths (default 16,32,64,128)")
    p.add_argument("--N", type=lambda s: _ints(s, "--N"), default=list(DEFAULT_N),
                   metavar="N[,N]", help="points per batch (default 100,1000,10000)")
    p.add_argument("--rounds", type=int, default=7,
                   help="interleaved timing rounds per cell (default 7)")
    p.add_argument("--round-ms", type=float, default=ROUND_S * 1e3,
                   help="minimum milliseconds of steps per side per round (default 20)")
    p.add_argument("--peers", default=",".join(PEERS), metavar="NAME[,NAME]",
                   help=f"peers to run (default all installed: {', '.join(PEERS)})")
    p.add_argument("--plot", metavar="PATH.png", help="draw the ratio heatmap (matplotlib)")
    p.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    p.add_argument("--threads", type=_threads, default=None, metavar="T|all",
                   help="threads mode: fastgrad with make_demo_step(num_threads=T) "
                        "('all': every CPU) against the peers at their default thread "
                        "counts, no CPU binding (default: everything on one thread "
                        "and one CPU)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="peak GFLOP/s for the FLOP-bound line (default: this core's "
                        "measured mul+add peak)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the grid; print the report; return 0, or 1 on a FAILURE, 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers:
        parser.error(f"--peers: unknown peer(s) {', '.join(unknown) or '(none)'} "
                     f"(choose from {', '.join(PEERS)})")
    if args.rounds < 1 or args.round_ms < 0 or (args.peak_gflops is not None
                                                 and args.peak_gflops <= 0):
        parser.error("--rounds must be >= 1, --round-ms >= 0, --peak-gflops > 0")
    from fastgrad.bench.report import unwritable, machine_info
    for path, what in ((args.json, "JSON"), (args.plot, "the plot")):
        if path:
            why = unwritable(path, what)
            if why:
                parser.error(why)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib, which is not installed")
    info = machine_info()
    commit = source_commit()
    round_s = args.round_ms / 1e3

    def progress(i: int, total: int, H: int, N: int, cell: Optional[CellResult]) -> None:
        if cell is None:
            print(f"[{i:2d}/{total}] H={H} N={N:,} ...", end="", file=sys.stderr, flush=True)
            return
        parts = [f"fastgrad {fmt_time(cell.fastgrad.s)}"]
        parts += [f"{r.label} {fmt_time(r.s) if r.status == 'ok' else r.status}"
                  for r in cell.peers if r.status != "skipped"]
        print(" " + ", ".join(parts) + f"; ratio {fmt_ratio(cell.ratio, mark=False)}",
              file=sys.stderr, flush=True)

    threaded = args.threads is not None
    num_threads = 1 if args.threads is None else (args.threads or None)
    t0 = time.perf_counter()
    with (default_threads(num_threads) if threaded else single_core()) as threads:
        head = header(info, args.rounds, round_s, threads, commit, threaded)
        print(head, file=sys.stderr, flush=True)
        cells = run_grid(args.H, args.N, peers, args.rounds, round_s, progress=progress,
                         num_threads=num_threads)
    elapsed = time.perf_counter() - t0
    failures = sum(c.failures for c in cells)
    print(head)
    print()
    print(format_report(cells, peers, args.peak_gflops, threaded=threaded))
    print(f"\n(grid run in {elapsed:.0f} s)")
    if failures:
        print(f"\n{failures} FAILURE(s): a peer's result did not match fastgrad's, or a "
              "side raised")
    if args.json:
        doc = {"fastgrad_bench_grid": 1, "machine": info, "commit": commit,
               "threads": threads, "xla_flags": os.environ.get("XLA_FLAGS"),
               "threads_mode": threaded, "num_threads": num_threads,
               "rounds": args.rounds, "round_s": round_s,
               "peak_gflops": (args.peak_gflops if args.peak_gflops is not None
                               else measured_peak_gflops()),
               "peak_measured": args.peak_gflops is None, "failures": failures,
               "elapsed_s": elapsed, "cells": [c.as_dict() for c in cells]}
        try:
            import json
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1, default=str)
                f.write("\n")
        except OSError as exc:
            print(f"bench_grid.py: cannot write JSON to {args.json}: {exc}", file=sys.stderr)
            return 2
    if args.plot:
        title = (f"fastgrad compiled / best of NumPy, PyTorch, JAX per step, float64, one "
                 f"thread each\n{info['cpu']}, {datetime.date.today()}"
                 + (f", commit {commit}" if commit else ""))
        try:
            write_heatmap(cells, args.plot, title)
        except (OSError, ValueError) as exc:
            print(f"bench_grid.py: cannot write the plot to {args.plot}: {exc}",
                  file=sys.stderr)
            return 2
        print(f"heatmap written to {args.plot}")
    return 1 if failures else 0
