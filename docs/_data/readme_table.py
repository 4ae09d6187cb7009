"""The README's short speed table, made from docs/_data/bench.json.

Run ``python docs/_data/readme_table.py`` after refreshing bench.json (a real
``fastgrad bench --json docs/_data/bench.json`` run) and paste its output
between the README's ``bench-table`` markers; ``tests/test_docs.py`` fails
when the README's table and the JSON disagree.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (workload, baseline, what the row says)
ROWS = [
    ("train_step", "micrograd", "micrograd's demo training step, eager, vs micrograd 0.1.0"),
    ("backward", "micrograd", "backward() alone on the demo graph, vs micrograd"),
    ("memory", "micrograd", "memory of the demo step's graph, vs micrograd"),
    ("replay_train_step", "micrograd", "the demo step compiled, vs micrograd"),
    ("replay_train_step", "torch_nn", "the demo step compiled, vs PyTorch torch.nn (1 thread)"),
]


def _ratio(r):
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def table(run):
    """The Markdown table (a header line, then one line per row of ROWS)."""
    by = {(r["workload"], r["baseline"]): r for r in run["rows"]
          if r.get("gc") != "off" and r["kind"] != "grid"}
    m = run["machine"]
    lines = ["| what | speed-up |", "| --- | --: |"]
    for workload, baseline, text in ROWS:
        row = by.get((workload, baseline))
        if row is None or row.get("speedup") is None:
            continue
        word = " less" if row["kind"] == "memory" else ""
        lines.append(f"| {text} | {_ratio(row['speedup'])}{word} |")
    lines.append("")
    lines.append(f"(`fastgrad bench`, {run['mode']} mode, {m['date_utc']}, {m['cpu']} "
                 f"with {m['cpus']} logical CPUs, {m['python']}.)")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "bench.json"
    print(table(json.loads(path.read_text())))
