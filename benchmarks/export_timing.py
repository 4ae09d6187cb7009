"""How long exporting takes: Program.to_torch / to_onnx beside compile.

For micrograd's demo program (MLP(2, [16, 16, 1]), svm loss, L2 penalty)
and the same program with H = 128 and 512 hidden units per layer: the time
to record it (``make_demo_step``: the baseline, measured in the same run),
``Program.graph()``, ``to_torch()``, ``to_onnx()`` (the model in memory) and
``to_onnx(path)`` (written to a file).  Imports are done before timing; the
steps are interleaved, repeated, and reported as the median of wall and CPU
(``time.process_time``) seconds, with the load average.

Run (with torch and onnx installed; timings through the lock on the shared
machine)::

    PYTHONPATH=src /work/bin/quiet python benchmarks/export_timing.py
"""
import argparse
import os
import random
import statistics
import tempfile
import time


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,128,512", help="hidden widths H")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import onnx  # noqa: F401  (imported before timing)
    import torch  # noqa: F401

    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP

    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'H':>5} {'params':>8} {'step':<12} {'wall ms':>10} {'cpu ms':>10}  "
          f"{'x compile (cpu)':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for H in [int(h) for h in args.sizes.split(",")]:
            rows = {k: ([], []) for k in ("compile", "graph", "to_torch", "to_onnx",
                                          "to_onnx(path)")}
            repeat = args.repeat if H < 512 else max(2, args.repeat // 2)
            for r in range(repeat + 1):       # round 0 warms up, untimed
                random.seed(1337)
                model = MLP(2, [H, H, 1])
                step, w, c = _timed(lambda: make_demo_step(model))
                prog = step.program
                timed = [("compile", w, c)]
                for name, fn in (("graph", prog.graph), ("to_torch", prog.to_torch),
                                 ("to_onnx", prog.to_onnx),
                                 ("to_onnx(path)",
                                  lambda: prog.to_onnx(os.path.join(tmp, "m.onnx")))):
                    _, w, c = _timed(fn)
                    timed.append((name, w, c))
                if r > 0:
                    for name, w, c in timed:
                        rows[name][0].append(w)
                        rows[name][1].append(c)
            base = statistics.median(rows["compile"][1])
            for name, (walls, cpus) in rows.items():
                cpu = statistics.median(cpus)
                print(f"{H:>5} {prog.n_params:>8} {name:<12} "
                      f"{statistics.median(walls) * 1e3:>10.1f} {cpu * 1e3:>10.1f}  "
                      f"{cpu / base:>15.2f}")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
