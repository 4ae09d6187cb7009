"""Running ``fastgrad bench``'s workloads into rows: each side checked against
the other on its first call, then both timed interleaved (the grid's cells:
every peer of a cell at once, :func:`fastgrad.bench.grid.run_cell`)."""
import contextlib
import gc
import time
from typing import Any, Optional, cast

from fastgrad.bench import harness as h
from fastgrad.bench.cases import BASELINE_LABELS
from fastgrad.bench.report import Row, Progress

__all__ = ["run_case"]

# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------

def _row(case: h.Case, pair: h.Pair, gc_mode: str) -> Row:
    return {
        "workload": case.name,
        "variant": pair.label,
        "area": case.area,
        "title": case.title,
        "unit": case.unit,
        "kind": case.kind,
        "baseline": pair.baseline,
        "baseline_label": BASELINE_LABELS.get(pair.baseline, pair.baseline),
        "gc": gc_mode if case.kind == "time" else "-",
        "params": dict(pair.params),
        "status": None,
        "reason": None,
        "nodes": None,
        "baseline_s": None,              # wall clock, median over the rounds
        "fastgrad_s": None,
        "baseline_cpu_s": None,          # process CPU time: median over the
        "fastgrad_cpu_s": None,          # unpreempted rounds if enough (Times.cpu_s)
        "baseline_cpu_all_s": None,      # the same over every round
        "fastgrad_cpu_all_s": None,
        "baseline_preempted": None,      # rounds with a context switch inside
        "fastgrad_preempted": None,
        "baseline_clean_only": None,     # cpu_s over the unpreempted rounds alone
        "fastgrad_clean_only": None,
        "baseline_min_s": None,
        "fastgrad_min_s": None,
        "baseline_bytes": None,
        "fastgrad_bytes": None,
        "speedup": None,                 # CPU time: baseline / fastgrad (verdicts)
        "speedup_wall": None,            # wall clock: baseline / fastgrad
        "below_resolution": False,       # net of shared work: too small to time
        "shared_s": None,
        "shared_cpu_s": None,
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


class _Side:
    """One implementation's runner plus its checked result and timing."""

    def __init__(self, case: h.Case, impl: str, params: dict[str, Any]) -> None:
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
                self.nbytes, self.result = h.measure_memory(self.runner)
            else:
                self.result = h.run_once(self.runner)
            self.first_s = time.perf_counter() - t0
        except h.NotAvailable as exc:
            self.skip = str(exc)
            self.runner = None
        except Exception as exc:   # a crash of one side is a row, not the end
            self.error = h.describe_error(exc)
            self.runner = None

    def close(self) -> None:
        if self.runner is not None and self.runner.close is not None:
            self.runner.close()
        self.runner = None


def run_case(case: h.Case, mode: str, gc_mode: str, progress: Progress,
             grid_cells: Optional[list[Any]] = None,
             grid_threads: Optional[int] = None) -> list[Row]:
    """Rows of one case in one gc mode (progress is called per row).

    A ``grid`` case appends its :class:`fastgrad.bench.grid.CellResult` s to
    ``grid_cells``; ``grid_threads`` (``--threads``: a count, 0 for every
    CPU, None for one thread and one CPU) chooses its threads mode.
    """
    if case.kind == "grid":
        return _run_grid_case(case, mode, progress,
                              grid_cells if grid_cells is not None else [],
                              grid_threads)
    rows: list[Row] = []
    fastgrad: dict[Any, _Side] = {}          # params key -> _Side, shared by pairs of equal size
    pairs = case.plan(mode)
    one_cpu: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if case.single_core:
        from fastgrad.bench import grid
        one_cpu = grid.single_core()
    try:
        with one_cpu:
            _run_pairs(case, pairs, rows, fastgrad, mode, gc_mode, progress)
    finally:
        for side in fastgrad.values():
            side.close()
        fastgrad.clear()
        gc.collect()
    return rows


def _run_pairs(case: h.Case, pairs: list[h.Pair], rows: list[Row],
               fastgrad: dict[Any, "_Side"], mode: str, gc_mode: str,
               progress: Progress) -> None:
    gc_off = gc_mode == "off"
    for pair in pairs:
        row = _row(case, pair, gc_mode)
        progress.start(row)
        with h.isolated_gc(unfreeze=False):
            _run_row(row, case, pair, fastgrad, mode, gc_off)
        rows.append(row)
        progress.done(row)


def _run_grid_case(case: h.Case, mode: str, progress: Progress,
                   cells: list[Any], threads: Optional[int] = None) -> list[Row]:
    """The H x N grid: per cell, every peer checked against fastgrad, then all
    of them timed interleaved (fastgrad.bench.grid.run_cell); one row per
    (cell, peer), the peer as the baseline.  ``threads`` not None: the
    threads mode (fastgrad's ``num_threads``, 0: every CPU; the peers at
    their default thread counts, no CPU binding)."""
    from fastgrad.bench import grid
    _, _, _, round_s = grid.mode_grid(mode)
    skips = grid.mode_skips(mode)
    groups: dict[Any, list[h.Pair]] = {}
    for pair in case.plan(mode):
        groups.setdefault(pair.key, []).append(pair)
    rows: list[Row] = []
    num_threads = 1 if threads is None else (threads or None)
    with (grid.default_threads(num_threads) if threads is not None
          else grid.single_core()) as how:
        for pairs in groups.values():
            first = pairs[0]
            row0 = _row(case, first, "on")
            progress.start(row0)
            with h.isolated_gc(unfreeze=False):
                cell = grid.run_cell(int(first.params["H"]), int(first.params["N"]),
                                     [cast(str, p.baseline) for p in pairs],
                                     rounds=first.rounds, round_s=round_s, skip=skips,
                                     num_threads=num_threads)
            cells.append(cell)
            for i, pair in enumerate(pairs):
                row = row0 if i == 0 else _row(case, pair, "on")
                if i:
                    progress.start(row)
                _fill_grid_row(row, cell, cast(str, pair.baseline))
                row["grid"].update(threads=how, threads_mode=threads is not None,
                                   num_threads=num_threads)
                if threads is not None:          # the peers are not held to one thread
                    row["baseline_label"] = (row["baseline_label"].removesuffix(" 1-thread")
                                             + ", default threads")
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


def _run_row(row: Row, case: h.Case, pair: h.Pair, fastgrad: dict[Any, "_Side"],
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


def _set_times(row: Row, prefix: str, times: h.Times, nodes: Optional[int]) -> None:
    row[f"{prefix}_s"] = times.median_wall
    row[f"{prefix}_cpu_s"] = times.cpu_s
    row[f"{prefix}_cpu_all_s"] = times.median_cpu
    row[f"{prefix}_preempted"] = times.preempted
    row[f"{prefix}_clean_only"] = times.clean_only
    row[f"{prefix}_min_s"] = min(times.wall)
    row["fastgrad_rounds" if prefix == "fastgrad" else "rounds"] = len(times)
    if nodes:
        row["ns_per_node" if prefix == "fastgrad" else "baseline_ns_per_node"] = \
            times.cpu_s / nodes * 1e9


def _fill_fastgrad(row: Row, case: h.Case, pair: h.Pair, fg: "_Side",
                   gc_off: bool) -> None:
    """A fastgrad-only row: fastgrad's figure alone."""
    nodes = fg.runner.nodes
    row["nodes"] = nodes
    if case.kind == "memory":
        row["fastgrad_bytes"] = fg.nbytes
        if nodes:
            row["bytes_per_node"] = fg.nbytes / nodes
    else:
        _set_times(row, "fastgrad", h.time_runner(fg.runner, pair.fg_rounds, gc_off), nodes)


def _run_pair(row: Row, case: h.Case, pair: h.Pair, fg: "_Side", mode: str,
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
            row["max_rel_diff"] = h.compare(fg.result, base.result, case.rtol, case.atol)
        except h.Mismatch as exc:
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
            ft, bt = h.time_pair(fg.runner, base.runner, pair.fg_rounds, pair.rounds,
                                 gc_off, blocks=2 if base.first_s > 0.1 else 3,
                                 warm_s=0.0 if mode == "smoke" else 0.1)
            _set_times(row, "fastgrad", ft, nodes)
            _set_times(row, "baseline", bt, nodes)
            num, den = row["baseline_cpu_s"], row["fastgrad_cpu_s"]
            num_w, den_w = row["baseline_s"], row["fastgrad_s"]
            if case.shared is not None:
                # the ratio of what differs: both times minus the shared work
                st = h.time_runner(case.shared(pair.params), pair.fg_rounds, gc_off,
                                   warmup=True)
                row["shared_s"], row["shared_cpu_s"] = st.median_wall, st.cpu_s
                net_f, net_b = h.net_of_shared(ft, st), h.net_of_shared(bt, st)
                num_w -= st.median_wall
                den_w -= st.median_wall
                if nodes:
                    row["ns_per_node"] = None if net_f is None else net_f / nodes * 1e9
                    row["baseline_ns_per_node"] = \
                        None if net_b is None else net_b / nodes * 1e9
                if net_f is None or net_b is None:
                    row["below_resolution"] = True
                    below = ("both sides'" if net_f is None and net_b is None
                             else "fastgrad's" if net_f is None else "the baseline's")
                    num = den = None
                else:
                    num, den = net_b, net_f
    finally:
        base.close()
        del base
        gc.collect()
    row["speedup"] = num / den if num is not None and den and den > 0 else None
    if case.kind == "time":
        row["speedup_wall"] = (num_w / den_w if row["speedup"] is not None and den_w > 0
                               and num_w > 0 else None)
    if row["below_resolution"]:
        row["reason"] = (f"{below} time net of the shared work ({case.shared_what}) is "
                         "below timer resolution at this size: for a figure, run "
                         f"`fastgrad bench --full --only {case.name}` (larger sizes)")
    target = case.targets.get(pair.baseline)
    if target is not None and not gc_off:     # targets are stated with gc on
        row["target"] = target[1]
        if mode != "smoke" and row["speedup"] is not None:
            row["target_met"] = row["speedup"] >= target[0]
    row["status"] = "ok"
