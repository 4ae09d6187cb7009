"""``fastgrad bench``: time fastgrad against its baselines and print a table.

Every workload (defined once in :mod:`fastgrad._benchcases`, shared with the
pytest-benchmark suite in ``benchmarks/``) runs on fastgrad and on each
baseline with identical inputs.  For each row the first (warm-up) call of
both sides is compared -- values, gradients, losses within a tolerance --
*before* any timing: a mismatch is a FAILURE row and a non-zero exit, never a
speed-up.  Timings are the median of several rounds after the warm-up.
Baselines that are not installed give a skipped row with the reason.

Modes: ``--quick`` (default, under two minutes on a 2-core machine),
``--full`` (larger sizes, 10^7-node backward, the full H x N grid),
``--smoke`` (tiny sizes, for the test suite: checks everything, times nothing
meaningful).

The ``grid`` workload (:mod:`fastgrad._benchgrid`, issue 13) compares fastgrad
with several peers at once: per cell (H, N) every peer is checked against
fastgrad, then all of them are timed interleaved; it gives one row per (cell,
peer) and, after the table, the H x N ratio table (fastgrad / best peer),
GFLOP/s and the demo cell's FLOP-bound ratio.  ``--quick`` runs H in {16, 64}
x N in {100, 1000}, ``--full`` the whole 4 x 3 grid.  With ``--plot``, its
heatmap goes to ``PATH-grid.png`` (or to PATH when only the grid ran).

Exit status: 0 all rows ok or skipped, 1 a FAILURE row, 2 bad arguments or an
output file that cannot be written.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from typing import IO, Any, Optional, Sequence, cast

from fastgrad.bench import workloads as bc

Row = dict[str, Any]     # one result row (also one JSON record)

__all__ = ["add_arguments", "run", "machine_info"]

_PROG = "fastgrad bench"


# ---------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``bench`` subcommand's parser (``fastgrad.__main__`` builds it).

    Examples
    --------
    >>> import argparse
    >>> from fastgrad.bench import add_arguments
    >>> p = argparse.ArgumentParser(); add_arguments(p)
    >>> a = p.parse_args(["--smoke", "--only", "build"]); (a.mode, a.only, a.gc)
    ('smoke', 'build', 'on')
    """
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="default sizes: the demo's 100 points, graphs up to "
                           "10^6 nodes; under two minutes")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="larger sizes and more rounds (10^7-node backward, the "
                           "full H x N grid)")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="tiny sizes: checks every workload in seconds "
                           "(timings meaningless)")
    parser.set_defaults(mode="quick")
    names = ", ".join([c.name for c in bc.CASES] + bc.AREAS)
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these workloads or areas ({names})")
    parser.add_argument("--gc", choices=["on", "off"], default="on",
                        help="'off': also repeat every timing with the garbage "
                             "collector disabled on both sides (default: on only)")
    parser.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="draw a log-scale bar chart of the speed-ups (matplotlib)")
    parser.add_argument("--list", action="store_true",
                        help="list the workloads and exit")


def _fail(msg: str, code: int = 2) -> int:
    print(f"{_PROG}: {msg}", file=sys.stderr)
    return code


def _select(only: Optional[str]) -> tuple[list[bc.Case], Optional[str]]:
    """The cases named in ``only`` (names or areas), or an error message."""
    if not only:
        return list(bc.CASES), None
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        return [], "--only needs at least one workload name"
    known = {c.name for c in bc.CASES}
    for w in wanted:
        if w not in known and w not in bc.AREAS:
            choices = ", ".join([c.name for c in bc.CASES] + bc.AREAS)
            return [], f"unknown workload {w!r} in --only (choose from: {choices})"
    return [c for c in bc.CASES if c.name in wanted or c.area in wanted], None


def _unwritable(path: str, what: str) -> Optional[str]:
    """Why ``path`` cannot be written (a one-line message), or None."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        return f"cannot write {what} to {path}: it is a directory"
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        return f"cannot write {what} to {path}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK) or (os.path.exists(full)
                                          and not os.access(full, os.W_OK)):
        return f"cannot write {what} to {path}: permission denied"
    return None


# ---------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _c_compiler() -> str:
    cc = (sysconfig.get_config_var("CC") or "").split()
    if not cc:
        return "unknown"
    try:
        out = subprocess.run(cc[:1] + ["--version"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()
        return out[0].strip() if out else cc[0]
    except (OSError, subprocess.SubprocessError):
        return cc[0]


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def machine_info() -> dict[str, Any]:
    """A dict describing the machine, the interpreter and the builds timed.

    Returns
    -------
    dict
        ``cpu``, ``cpus``, ``platform``, ``python``, ``python_compiler``,
        ``c_compiler`` (the first line of ``$CC --version``), ``fastgrad``
        and the versions of Cython, numpy, micrograd and torch (None when
        not installed), ``date_utc``.

    Examples
    --------
    >>> from fastgrad.bench import machine_info
    >>> sorted(machine_info())[:3]
    ['c_compiler', 'cpu', 'cpus']
    """
    import fastgrad
    from fastgrad import _backend
    if _backend.COMPILED:
        from fastgrad import _engine
        extension = os.path.basename(getattr(_engine, "__file__", "?"))
    else:
        extension = None
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "fastgrad": getattr(fastgrad, "__version__", "?"),
        "fastgrad_build": _backend.BUILD,
        "fastgrad_extension": extension,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_compiler": platform.python_compiler(),
        "c_compiler": _c_compiler(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
    }
    for dist in ("Cython", "numpy", "micrograd", "torch", "jax"):
        info[dist.lower()] = _version(dist)
    return info


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------

def _row(case: bc.Case, pair: bc.Pair, gc_mode: str) -> Row:
    return {
        "workload": case.name,
        "variant": pair.label,
        "area": case.area,
        "title": case.title,
        "unit": case.unit,
        "kind": case.kind,
        "baseline": pair.baseline,
        "baseline_label": bc.BASELINE_LABELS.get(pair.baseline, pair.baseline),
        "gc": gc_mode if case.kind == "time" else "-",
        "params": dict(pair.params),
        "status": None,
        "reason": None,
        "nodes": None,
        "baseline_s": None,
        "fastgrad_s": None,
        "baseline_min_s": None,
        "fastgrad_min_s": None,
        "baseline_bytes": None,
        "fastgrad_bytes": None,
        "speedup": None,
        "shared_s": None,
        "ns_per_node": None,
        "baseline_ns_per_node": None,
        "bytes_per_node": None,
        "baseline_bytes_per_node": None,
        "target": None,
        "target_met": None,
        "max_rel_diff": None,
        "rounds": None,
        "fastgrad_rounds": None,
    }


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) < 160 else text[:157] + "..."


class _Side:
    """One implementation's runner plus its checked result and timing."""

    def __init__(self, case: bc.Case, impl: str, params: dict[str, Any]) -> None:
        self.runner: Any = None
        self.result: Any = None
        self.skip: Optional[str] = None
        self.error: Optional[str] = None
        self.nbytes: Any = None
        self.first_s = 0.0
        try:
            self.runner = case.make(impl, params)
            t0 = time.perf_counter()
            if case.kind == "memory":
                self.nbytes, self.result = bc.measure_memory(self.runner)
            else:
                self.result = bc.run_once(self.runner)
            self.first_s = time.perf_counter() - t0
        except bc.NotAvailable as exc:
            self.skip = str(exc)
            self.runner = None
        except Exception as exc:   # a crash of one side is a row, not the end
            self.error = _describe(exc)
            self.runner = None

    def close(self) -> None:
        if self.runner is not None and self.runner.close is not None:
            self.runner.close()
        self.runner = None


def _run_case(case: bc.Case, mode: str, gc_mode: str, progress: "_Progress",
              grid_cells: Optional[list[Any]] = None) -> list[Row]:
    """Rows of one case in one gc mode (progress is called per row).

    A ``grid`` case appends its :class:`fastgrad._benchgrid.CellResult` s to
    ``grid_cells``.
    """
    if case.kind == "grid":
        return _run_grid_case(case, mode, progress,
                              grid_cells if grid_cells is not None else [])
    rows: list[Row] = []
    gc_off = gc_mode == "off"
    fastgrad: dict[Any, _Side] = {}          # params key -> _Side, shared by pairs of equal size
    pairs = case.plan(mode)
    try:
        for pair in pairs:
            row = _row(case, pair, gc_mode)
            progress.start(row)
            with bc.isolated_gc(unfreeze=False):
                _run_row(row, case, pair, fastgrad, mode, gc_off)
            rows.append(row)
            progress.done(row)
    finally:
        for side in fastgrad.values():
            side.close()
        fastgrad.clear()
        gc.collect()
    return rows


def _run_grid_case(case: bc.Case, mode: str, progress: "_Progress",
                   cells: list[Any]) -> list[Row]:
    """The H x N grid: per cell, every peer checked against fastgrad, then all
    of them timed interleaved (fastgrad._benchgrid.run_cell); one row per
    (cell, peer), the peer as the baseline."""
    from fastgrad.bench import grid
    _, _, _, round_s = grid.mode_grid(mode)
    skips = grid.mode_skips(mode)
    groups: dict[Any, list[bc.Pair]] = {}
    for pair in case.plan(mode):
        groups.setdefault(pair.key, []).append(pair)
    rows: list[Row] = []
    with grid.single_core():
        for pairs in groups.values():
            first = pairs[0]
            row0 = _row(case, first, "on")
            progress.start(row0)
            with bc.isolated_gc(unfreeze=False):
                cell = grid.run_cell(int(first.params["H"]), int(first.params["N"]),
                                     [cast(str, p.baseline) for p in pairs],
                                     rounds=first.rounds, round_s=round_s, skip=skips)
            cells.append(cell)
            for i, pair in enumerate(pairs):
                row = row0 if i == 0 else _row(case, pair, "on")
                if i:
                    progress.start(row)
                _fill_grid_row(row, cell, cast(str, pair.baseline))
                rows.append(row)
                progress.done(row)
    return rows


def _fill_grid_row(row: Row, cell: Any, peer: str) -> None:
    """One (cell, peer) row of the grid from the cell's result."""
    fg = cell.fastgrad
    side = next(r for r in cell.peers if r.name == peer)
    best = cell.best
    row["grid"] = {"H": cell.H, "N": cell.N, "flops": cell.flops,
                   "ratio_to_best": cell.ratio, "best_peer": best.name if best else None,
                   "fastgrad_gflops": cell.gflops(fg)}
    if fg.status != "ok":
        row.update(status=fg.status, reason=fg.reason)
    elif side.status != "ok":
        row.update(status=side.status, reason=side.reason)
    elif cell.failures:
        row.update(status="skipped",
                   reason="not timed: another side of this cell is a FAILURE")
    else:
        row.update(status="ok", fastgrad_s=fg.s, baseline_s=side.s,
                   fastgrad_min_s=min(fg.times), baseline_min_s=min(side.times),
                   fastgrad_rounds=len(fg.times), rounds=len(side.times),
                   max_rel_diff=max(side.loss_rel_diff or 0.0, side.param_rel_diff or 0.0),
                   speedup=side.s / fg.s if fg.s else None)


def _run_row(row: Row, case: bc.Case, pair: bc.Pair, fastgrad: dict[Any, "_Side"],
             mode: str, gc_off: bool) -> None:
    """Fill ``row``: check fastgrad against the baseline, then time both."""
    fg = fastgrad.get(pair.key)
    if fg is None:
        fg = fastgrad[pair.key] = _Side(case, "fastgrad", pair.params)
    if fg.skip:
        row.update(status="skipped", reason=fg.skip)
    elif fg.error:
        row.update(status="FAILURE", reason=f"fastgrad raised {fg.error}")
    elif pair.baseline is None:
        msg = case.self_check(fg.result) if case.self_check else None
        if msg:
            row.update(status="FAILURE", reason=msg)
        else:
            _fill_fastgrad(row, case, pair, fg, gc_off)
            row["status"] = "ok"
    else:
        _run_pair(row, case, pair, fg, mode, gc_off)


def _set_times(row: Row, prefix: str, times: Sequence[float], nodes: Optional[int],
               rounds: int) -> None:
    t = statistics.median(times)
    row[f"{prefix}_s"] = t
    row[f"{prefix}_min_s"] = min(times)
    row["fastgrad_rounds" if prefix == "fastgrad" else "rounds"] = rounds
    if nodes:
        row["ns_per_node" if prefix == "fastgrad" else "baseline_ns_per_node"] = \
            t / nodes * 1e9


def _fill_fastgrad(row: Row, case: bc.Case, pair: bc.Pair, fg: "_Side",
                   gc_off: bool) -> None:
    """A fastgrad-only row: fastgrad's figure alone."""
    nodes = fg.runner.nodes
    row["nodes"] = nodes
    if case.kind == "memory":
        row["fastgrad_bytes"] = fg.nbytes
        if nodes:
            row["bytes_per_node"] = fg.nbytes / nodes
    else:
        _, times = bc.time_runner(fg.runner, pair.fg_rounds, gc_off)
        _set_times(row, "fastgrad", times, nodes, pair.fg_rounds)


def _run_pair(row: Row, case: bc.Case, pair: bc.Pair, fg: "_Side", mode: str,
              gc_off: bool) -> None:
    """Check fastgrad against one baseline, then time both, interleaved."""
    base = _Side(case, cast(str, pair.baseline), pair.params)   # not None here
    nodes = fg.runner.nodes
    row["nodes"] = nodes
    try:
        if base.skip:
            row.update(status="skipped", reason=base.skip)
            return
        if base.error:
            row.update(status="FAILURE",
                       reason=f"baseline {pair.baseline} raised {base.error}")
            return
        try:
            row["max_rel_diff"] = bc.compare(fg.result, base.result, case.rtol, case.atol)
        except bc.Mismatch as exc:
            row.update(status="FAILURE",
                       reason=f"result differs from {row['baseline_label']}: {exc}")
            return
        # checked: now the figures
        if case.kind == "memory":
            row["fastgrad_bytes"] = fg.nbytes
            row["baseline_bytes"] = base.nbytes
            if nodes:
                row["bytes_per_node"] = fg.nbytes / nodes
                row["baseline_bytes_per_node"] = base.nbytes / nodes
            num, den = base.nbytes, fg.nbytes
        else:
            # a slow baseline (a second a call) alternates twice, not three times
            # (smoke mode checks, its times mean nothing: one warm-up call)
            ft, bt = bc.time_pair(fg.runner, base.runner, pair.fg_rounds, pair.rounds,
                                  gc_off, blocks=2 if base.first_s > 0.1 else 3,
                                  warm_s=0.0 if mode == "smoke" else 0.1)
            _set_times(row, "fastgrad", ft, nodes, pair.fg_rounds)
            _set_times(row, "baseline", bt, nodes, pair.rounds)
            num, den = row["baseline_s"], row["fastgrad_s"]
            if case.shared is not None:
                # the ratio of what differs: both times minus the shared work
                shared, _ = bc.time_runner(case.shared(pair.params), pair.fg_rounds,
                                           gc_off, warmup=True)
                row["shared_s"] = shared
                num, den = num - shared, den - shared
                if nodes:
                    row["ns_per_node"] = den / nodes * 1e9
                    row["baseline_ns_per_node"] = num / nodes * 1e9
    finally:
        base.close()
        del base
        gc.collect()
    row["speedup"] = num / den if den and den > 0 else None
    if row["speedup"] is None and case.kind == "time":
        row["reason"] = "fastgrad's time net of the shared work is below timer noise"
    target = case.targets.get(pair.baseline)
    if target is not None and not gc_off:     # targets are stated with gc on
        row["target"] = target[1]
        if mode != "smoke" and row["speedup"] is not None:
            row["target_met"] = row["speedup"] >= target[0]
    row["status"] = "ok"


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

def _fmt_time(s: Optional[float]) -> str:
    if s is None:
        return ""
    # thresholds just below each unit: 999.6 us prints as 1 ms, not 1e+03 us
    if s >= 0.9995:
        return f"{s:.2f} s"
    if s >= 0.9995e-3:
        return f"{s * 1e3:.3g} ms"
    if s >= 0.9995e-6:
        return f"{s * 1e6:.3g} us"
    return f"{s * 1e9:.3g} ns"


def _fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def _fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return ""
    if r >= 100:
        return f"{r:,.0f}x"
    return f"{r:.3g}x"


def _label(row: Row) -> str:
    return f"{row['workload']} {row['variant']}".strip()


def _cells(row: Row) -> list[str]:
    if row["kind"] == "memory":
        base, fast = _fmt_bytes(row["baseline_bytes"]), _fmt_bytes(row["fastgrad_bytes"])
    else:
        base, fast = _fmt_time(row["baseline_s"]), _fmt_time(row["fastgrad_s"])
    target = row["target"] or ""
    if row["target_met"] is not None:
        target += " ok" if row["target_met"] else " MISSED"
    ns = "" if row["ns_per_node"] is None else f"{row['ns_per_node']:.3g}"
    bpn = "" if row["bytes_per_node"] is None else f"{row['bytes_per_node']:.3g}"
    return [_label(row), row["baseline_label"], row["gc"], base, fast,
            _fmt_ratio(row["speedup"]), target, ns, bpn]


_HEAD = ["workload", "baseline", "gc", "baseline time", "fastgrad time",
         "speed-up", "target", "ns/node", "bytes/node"]
_RIGHT = {3, 4, 5, 7, 8}


def format_table(rows: Sequence[Row]) -> str:
    """The results as a plain-text (Markdown-compatible) table."""
    body = []
    notes = []
    for row in rows:
        cells = _cells(row)
        if row["status"] in ("skipped", "FAILURE"):
            cells[3:] = [row["status"]] + [""] * 5
            note = (f"{row['status']}: {_label(row)}"
                    + (f" vs {row['baseline_label']}" if row["baseline"] else "")
                    + f": {row['reason']}")
            if note not in notes:         # (the gc=off repeat of a skip)
                notes.append(note)
        body.append(cells)
    widths = [max(len(r[i]) for r in [_HEAD] + body) for i in range(len(_HEAD))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(c.rjust(w) if i in _RIGHT else c.ljust(w))
        return "| " + " | ".join(out) + " |"

    lines = [line(_HEAD),
             "|" + "|".join(("-" * (w + 1) + ":") if i in _RIGHT else ("-" * (w + 2))
                            for i, w in enumerate(widths)) + "|"]
    lines += [line(c) for c in body]
    return "\n".join(lines + ([""] + notes if notes else []))


def format_header(info: dict[str, Any], mode: str, gc_modes: Sequence[str]) -> str:
    return "\n".join([
        f"fastgrad {info['fastgrad']} bench ({mode} mode, gc {'+'.join(gc_modes)}) "
        f"-- {info['date_utc']}",
        f"measured: fastgrad's {info.get('fastgrad_build', 'compiled')} build"
        + (f" ({info['fastgrad_extension']})" if info.get("fastgrad_extension") else
           " (no compiled extension: the figures are NOT the compiled engine's)"),
        f"machine: {info['cpu']} ({info['cpus']} logical CPUs), {info['platform']}",
        f"python:  {info['python']} ({info['python_compiler']}); "
        f"C compiler: {info['c_compiler']}; Cython {info['cython'] or 'not installed'}",
        f"baselines: micrograd {info['micrograd'] or 'not installed'}, "
        f"torch {info['torch'] + ' (1 thread)' if info['torch'] else 'not installed'}, "
        f"jax {info.get('jax') or 'not installed'}, numpy {info['numpy']}",
        "times are per call (one step, one backward, one build...); speed-up = "
        "baseline / fastgrad; memory rows compare bytes; ns/node and bytes/node "
        "are fastgrad's",
    ])


def write_plot(rows: Sequence[Row], path: str, title: str) -> None:
    """Horizontal log-scale bar chart of the speed-ups of the ok rows."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    # (the grid's rows have their own chart: fastgrad._benchgrid.write_heatmap)
    ok = [r for r in rows if r["status"] == "ok" and r["speedup"] and r["kind"] != "grid"]
    fig = Figure(figsize=(9, 1.2 + 0.35 * max(len(ok), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{_label(r)} vs {r['baseline_label']}"
              + (f" (gc {r['gc']})" if r["gc"] == "off" else "") for r in ok]
    vals = [r["speedup"] for r in ok]
    # green: target met, red: target missed, blue: no target (a figure to read)
    colors = [{True: "tab:green", False: "tab:red"}.get(r["target_met"], "tab:blue")
              for r in ok]
    ypos = list(range(len(ok)))[::-1]
    if ok:
        ax.barh(ypos, vals, color=colors)
        for y, v in zip(ypos, vals):
            ax.text(v, y, f" {_fmt_ratio(v)}", va="center", fontsize=8)
        for y, r in zip(ypos, ok):
            target = bc.get_case(r["workload"]).targets.get(r["baseline"])
            if target is not None:
                ax.plot([target[0]], [y], marker="|", color="black", markersize=16)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(min(min(vals), 1.0) / 2, max(max(vals), 1.0) * 5)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("speed-up = baseline / fastgrad (memory: bytes), log scale\n"
                  "| = target; green: met, red: missed, blue: no target")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


class _Progress:
    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.n = 0
        self.stream = stream

    def start(self, row: Row) -> None:
        self.n += 1
        gc_part = f", gc {row['gc']}" if row["kind"] == "time" else ""
        against = f" vs {row['baseline_label']}" if row["baseline"] else ""
        print(f"[{self.n:2d}/{self.total}] {_label(row)}{against}{gc_part} ...",
              end="", file=self.stream, flush=True)

    def done(self, row: Row) -> None:
        if row["status"] == "ok":
            if row["kind"] == "memory":
                msg = f"{_fmt_bytes(row['baseline_bytes'])} vs {_fmt_bytes(row['fastgrad_bytes'])}"
            elif row["baseline"]:
                msg = f"{_fmt_time(row['baseline_s'])} vs {_fmt_time(row['fastgrad_s'])}"
            else:
                msg = _fmt_time(row["fastgrad_s"])
            if row["speedup"] is not None:
                msg += f" ({_fmt_ratio(row['speedup'])})"
        else:
            msg = f"{row['status']}: {row['reason']}"
        print(f" {msg}", file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; return the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed with the options of :func:`add_arguments`.

    Returns
    -------
    int
        0 when every row is ok or skipped, 1 when a row is a FAILURE
        (fastgrad's result differs from a baseline's, or a side raised),
        2 for bad arguments or an output file that cannot be written.

    Examples
    --------
    >>> from fastgrad.__main__ import main      # parses, then calls run()
    >>> main(["bench", "--list", "--only", "optim"])  # doctest: +NORMALIZE_WHITESPACE
    sgd_step             [optim] SGD step over 10,000 Value parameters
    sgd_momentum_step    [optim] SGD(momentum=0.9) step over 10,000 Value parameters
    sgd_array_step       [optim] SGD step on a 10,000-element float64 array (the array path)
    adam_step            [optim] Adam step over 10,000 Value parameters
    0
    """
    cases, err = _select(args.only)
    if err:
        return _fail(err)
    if args.list:
        for c in cases:
            print(f"{c.name:20s} [{c.area}] {c.title}")
        return 0
    for path, what in ((args.json, "JSON"), (args.plot, "the plot")):
        if path:
            why = _unwritable(path, what)
            if why:
                return _fail(why)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib, which is not installed "
                         '(pip install "fastgrad[bench]"; from a checkout: '
                         'pip install ".[bench]")')
    mode = args.mode or "quick"
    gc_modes = ["on", "off"] if args.gc == "off" else ["on"]
    info = machine_info()
    header = format_header(info, mode, gc_modes)
    total: int = sum(len(c.plan(mode)) * (len(gc_modes) if c.kind == "time" else 1)
                for c in cases)
    print(header, file=sys.stderr, flush=True)
    progress = _Progress(total, sys.stderr)
    rows = []
    grid_cells: list[Any] = []
    try:
        for case in cases:
            for g in (gc_modes if case.kind == "time" else ["on"]):
                rows.extend(_run_case(case, mode, g, progress, grid_cells))
    finally:
        gc.unfreeze()
    failures = sum(r["status"] == "FAILURE" for r in rows)
    print(header)
    print()
    print(format_table(rows))
    if grid_cells:
        from fastgrad.bench import grid as _benchgrid
        print("\nH x N grid (the `grid` rows; fastgrad._benchgrid, "
              "benchmarks/bench_grid.py):\n")
        print(_benchgrid.format_report(grid_cells, skip_notes=False))
    code = 1 if failures else 0
    if failures:
        print(f"\n{failures} FAILURE row(s): fastgrad's result did not match", flush=True)
    if args.json:
        doc = {"fastgrad_bench": 1, "mode": mode, "gc": gc_modes, "machine": info,
               "failures": failures, "rows": rows,
               "grid": [c.as_dict() for c in grid_cells]}
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1, default=str)
                f.write("\n")
        except OSError as exc:
            return _fail(f"cannot write JSON to {args.json}: {exc.strerror or exc}")
    if args.plot:
        # the grid's heatmap replaces the bar chart when only the grid ran,
        # else it goes beside it (PATH-grid.png)
        only_grid = bool(grid_cells) and all(r["kind"] == "grid" for r in rows)
        plots = [] if only_grid else [("bars", args.plot)]
        if grid_cells:
            stem, ext = os.path.splitext(args.plot)
            plots.append(("grid", args.plot if only_grid else f"{stem}-grid{ext or '.png'}"))
        for what, path in plots:
            try:
                if what == "bars":
                    write_plot(rows, path, header.splitlines()[0])
                else:
                    from fastgrad.bench import grid as _benchgrid
                    _benchgrid.write_heatmap(grid_cells, path, header.splitlines()[0]
                                             + "\nfastgrad compiled / best peer, per step")
                    print(f"grid heatmap written to {path}")
            except (OSError, ValueError) as exc:
                return _fail(f"cannot write the plot to {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}")
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
