"""``fastgrad bench``: time fastgrad against its baselines and print a table.

Every workload (defined once in :mod:`fastgrad.bench.cases`, shared with the
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

The ``grid`` workload (:mod:`fastgrad.bench.grid`, issue 13) compares fastgrad
with several peers at once: per cell (H, N) every peer is checked against
fastgrad, then all of them are timed interleaved; it gives one row per (cell,
peer) and, after the table, the H x N ratio table (fastgrad / best peer),
GFLOP/s and the demo cell's FLOP-bound ratio.  ``--quick`` runs H in {16, 64}
x N in {100, 1000}, ``--full`` the whole 4 x 3 grid.  With ``--plot``, its
heatmap goes to ``PATH-grid.png`` (or to PATH when only the grid ran).
``--only grid --threads T`` (or ``all``) runs the grid in its threads mode
(issue 21, as ``benchmarks/bench_grid.py --threads``): fastgrad with
``make_demo_step(model, num_threads=T)`` against the peers at their default
thread counts, no CPU binding; without it every side of the grid runs on
one thread and one CPU.

Exit status: 0 all rows ok or skipped, 1 a FAILURE row, 2 bad arguments or an
output file that cannot be written.
"""
import argparse
import gc
import json
import os
import sys
from typing import Any, Optional, Sequence

from fastgrad.bench import cases
from fastgrad.bench.harness import Case
from fastgrad.bench.report import (
    Progress, format_footer, format_header, format_table, load_average, machine_info,
    unwritable, write_plot,
)
from fastgrad.bench.runner import run_case

__all__ = ["add_arguments", "run", "main"]

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
    names = ", ".join([c.name for c in cases.CASES] + cases.AREAS)
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
    parser.add_argument("--threads", type=_threads, default=None, metavar="T|all",
                        help="the grid's threads mode: fastgrad with "
                             "make_demo_step(num_threads=T) ('all': every CPU) against "
                             "the peers at their default thread counts, no CPU binding "
                             "(with --only grid; default: every side of the grid on one "
                             "thread and one CPU)")


def _threads(text: str) -> int:
    """``--threads``: a count >= 1, or ``all`` (0); the grid script's parser."""
    from fastgrad.bench.grid_report import _threads as parse   # imported when given
    return parse(text)


def _fail(msg: str, code: int = 2) -> int:
    print(f"{_PROG}: {msg}", file=sys.stderr)
    return code


def _select(only: Optional[str]) -> tuple[list[Case], Optional[str]]:
    """The cases named in ``only`` (names or areas), or an error message."""
    if not only:
        return list(cases.CASES), None
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        return [], "--only needs at least one workload name"
    known = {c.name for c in cases.CASES}
    for w in wanted:
        if w not in known and w not in cases.AREAS:
            choices = ", ".join([c.name for c in cases.CASES] + cases.AREAS)
            return [], f"unknown workload {w!r} in --only (choose from: {choices})"
    return [c for c in cases.CASES if c.name in wanted or c.area in wanted], None


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
    selected, err = _select(args.only)
    if err:
        return _fail(err)
    threads: Optional[int] = getattr(args, "threads", None)
    if threads is not None and (not selected or any(c.kind != "grid" for c in selected)):
        # the other workloads hold torch to one thread for the whole process
        return _fail("--threads is the grid's threads mode: use it with --only grid")
    if args.list:
        for c in selected:
            print(f"{c.name:20s} [{c.area}] {c.title}")
        return 0
    for path, what in ((args.json, "JSON"), (args.plot, "the plot")):
        if path:
            why = unwritable(path, what)
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
                for c in selected)
    print(header, file=sys.stderr, flush=True)
    progress = Progress(total, sys.stderr)
    rows = []
    grid_cells: list[Any] = []
    try:
        for case in selected:
            for g in (gc_modes if case.kind == "time" else ["on"]):
                rows.extend(run_case(case, mode, g, progress, grid_cells,
                                     grid_threads=threads))
    finally:
        gc.unfreeze()
    failures = sum(r["status"] == "FAILURE" for r in rows)
    print(header)
    print()
    print(format_table(rows))
    if grid_cells:
        from fastgrad.bench import grid_report
        how = next((r["grid"].get("threads") for r in rows if r.get("grid")), None)
        print("\nH x N grid (the `grid` rows; fastgrad.bench.grid, "
              "benchmarks/bench_grid.py)" + (f"; {how}" if how else "") + ":\n")
        print(grid_report.format_report(grid_cells, skip_notes=False,
                                        threaded=threads is not None))
    code = 1 if failures else 0
    if failures:
        print(f"\n{failures} FAILURE row(s): fastgrad's result did not match", flush=True)
    load_end = load_average()
    print("\n" + format_footer(load_end, rows, info), flush=True)
    if args.json:
        doc = {"fastgrad_bench": 2, "mode": mode, "gc": gc_modes, "machine": info,
               "load_average_end": load_end,
               "failures": failures, "rows": rows,
               # the grid's threads mode: fastgrad's num_threads (None: every
               # CPU); False / 1 when the grid ran on one thread and one CPU
               "grid_threads_mode": threads is not None,
               "grid_num_threads": 1 if threads is None else (threads or None),
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
                    from fastgrad.bench import grid_report
                    grid_report.write_heatmap(grid_cells, path, header.splitlines()[0]
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
