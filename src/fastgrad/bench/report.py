"""``fastgrad bench``'s output: the machine description, the table, the chart,
the progress lines.  A row is a plain dict (:data:`Row`), also one JSON record."""
import datetime
import os
import platform
import subprocess
import sysconfig
from typing import IO, Any, Optional, Sequence

from fastgrad.bench.cases import get_case

Row = dict[str, Any]     # one result row (also one JSON record)

__all__ = ["Row", "machine_info", "load_average", "format_table", "format_header",
           "format_footer", "write_plot"]


def unwritable(path: str, what: str) -> Optional[str]:
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


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
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
        "load_average": load_average(),
    }
    for dist in ("Cython", "numpy", "micrograd", "torch", "jax"):
        info[dist.lower()] = _version(dist)
    return info


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


def _cpu_or_wall(row: Row, prefix: str) -> Optional[float]:
    cpu = row.get(f"{prefix}_cpu_s")
    return cpu if cpu is not None else row.get(f"{prefix}_s")


def _cells(row: Row) -> list[str]:
    if row["kind"] == "memory":
        base, fast = _fmt_bytes(row["baseline_bytes"]), _fmt_bytes(row["fastgrad_bytes"])
    else:
        # CPU time; the grid's rows are wall clock on one pinned core
        base = _fmt_time(_cpu_or_wall(row, "baseline")) or "-"
        fast = _fmt_time(_cpu_or_wall(row, "fastgrad"))
    target = row["target"] or ""
    if row["target_met"] is not None:
        target += " ok" if row["target_met"] else " MISSED"
    if row.get("below_resolution"):
        speedup = wall = ns = BELOW
    else:
        speedup = _fmt_ratio(row["speedup"]) or "-"
        wall = _fmt_ratio(row.get("speedup_wall")) or "-"
        ns = "-" if row["ns_per_node"] is None else f"{row['ns_per_node']:.3g}"
    bpn = "-" if row["bytes_per_node"] is None else f"{row['bytes_per_node']:.3g}"
    return [_label(row), row["baseline_label"], row["gc"], base, fast,
            speedup, wall, target or "-", ns, bpn]


BELOW = "below timer resolution"
_HEAD = ["workload", "baseline", "gc", "baseline cpu", "fastgrad cpu",
         "speed-up", "(wall)", "target", "ns/node", "bytes/node"]
_RIGHT = {3, 4, 5, 6, 8, 9}


def format_table(rows: Sequence[Row]) -> str:
    """The results as a plain-text (Markdown-compatible) table."""
    body = []
    notes = []
    for row in rows:
        cells = _cells(row)
        if row["status"] in ("skipped", "FAILURE"):
            cells[3:] = [row["status"]] + [""] * (len(_HEAD) - 4)
            note = (f"{row['status']}: {_label(row)}"
                    + (f" vs {row['baseline_label']}" if row["baseline"] else "")
                    + f": {row['reason']}")
            if note not in notes:         # (the gc=off repeat of a skip)
                notes.append(note)
        elif row.get("below_resolution"):
            note = f"{_label(row)} vs {row['baseline_label']}: {row['reason']}"
            if note not in notes:
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
        f"load average (1, 5, 15 min) at the start: {_fmt_load(info.get('load_average'))}",
        "times are process CPU time (time.process_time) per call (one step, one "
        "backward, one build...), the median over the rounds that ran without a "
        "context switch when at least 5 did (a preempted round resumes with caches "
        "refilled by other processes, on this process's clock), else over every "
        "round; speed-up = baseline / fastgrad in CPU time, which the targets are "
        "checked on (other processes on the machine lengthen wall time far more "
        "than CPU time); (wall) = the same ratio in wall-clock time, median over "
        "every round; memory rows compare bytes; ns/node and bytes/node are "
        "fastgrad's",
    ])


def _fmt_load(load: Optional[Sequence[float]]) -> str:
    return "unknown" if not load else " ".join(f"{x:.2f}" for x in load)


def format_footer(load_end: Optional[Sequence[float]], rows: Sequence[Row] = (),
                  info: Optional[dict[str, Any]] = None) -> str:
    """The last lines: how many timed rounds were preempted, a warning when
    the load exceeded the CPUs, and the load average when the run ended."""
    lines = []
    timed = [r for r in rows if r.get("kind") == "time" and r.get("status") == "ok"]
    total = preempted = 0
    for r in timed:
        for prefix, count in (("fastgrad", "fastgrad_rounds"), ("baseline", "rounds")):
            if r.get(f"{prefix}_preempted") is not None and r.get(count):
                total += r[count]
                preempted += r[f"{prefix}_preempted"]
    if total:
        lines.append(f"preempted rounds (a context switch during the timed call): "
                     f"{preempted} of {total} ({100.0 * preempted / total:.0f}%); "
                     "a side's CPU figure leaves them out when at least 5 rounds were not")
    cpus = (info or {}).get("cpus")
    loads = [x[0] for x in ((info or {}).get("load_average"), load_end) if x]
    if cpus and loads and max(loads) > cpus:
        lines.append(
            f"WARNING: the load average ({max(loads):.2f}) exceeded the {cpus} logical "
            "CPUs: this process shared its CPUs with other processes; their cache "
            "traffic can lengthen even the CPU time of uninterrupted rounds, most for "
            "short calls, so a verdict near its target may differ from an idle "
            "machine's. For figures to quote, run again on an idle machine.")
    lines.append(f"load average (1, 5, 15 min) at the end: {_fmt_load(load_end)}")
    return "\n".join(lines)


def write_plot(rows: Sequence[Row], path: str, title: str) -> None:
    """Horizontal log-scale bar chart of the speed-ups of the ok rows."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    # (the grid's rows have their own chart: fastgrad.bench.grid_report.write_heatmap)
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
            target = get_case(r["workload"]).targets.get(r["baseline"])
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


class Progress:
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
                msg = (f"{_fmt_time(_cpu_or_wall(row, 'baseline'))} vs "
                       f"{_fmt_time(_cpu_or_wall(row, 'fastgrad'))}")
            else:
                msg = _fmt_time(_cpu_or_wall(row, "fastgrad"))
            if row.get("below_resolution"):
                msg += f" ({BELOW})"
            elif row["speedup"] is not None:
                msg += f" ({_fmt_ratio(row['speedup'])})"
        else:
            msg = f"{row['status']}: {row['reason']}"
        print(f" {msg}", file=self.stream, flush=True)
