"""The irregular-graph workload: many scalar operations, no layer structure.

The graph is the one of Alex Rogozhnikov's post "Fastest Autograd in the
West" (2023): 100 inputs, then ``n_ops`` operations; operation ``k`` appends,
by ``k % 4``,

0. ``softplus(nodes[-10])``
1. ``sum(nodes[-30:-10:5])`` (4 terms)
2. ``nodes[-20] * nodes[-10]``
3. ``softmax(nodes[-4:])`` (4 new nodes)

The output is the last node; one *row* is a forward and a backward pass (the
gradient with respect to the 100 inputs) for one input vector.

Sides (every one checked against the others before anything is timed):

* ``fastgrad-batched``: the graph written with fastgrad Values, compiled once,
  run with ``Program.batch(X, reduce="sum", input_grad=G)`` over all rows;
* ``fastgrad-per-row``: the same program, ``value_and_grad`` one row at a time;
* ``c-tape``: a plain C tape -- an array of (op, output, operands) records, a
  forward loop and a backward loop over it, one row at a time, no SIMD across
  rows -- compiled from C source at benchmark time with the C compiler at
  hand (``cc -O2``) and called through ctypes; skipped, with the reason, when
  there is no compiler;
* ``numba-tape``: the same tape loops under ``numba.njit`` (when installed).

``fastgrad bench`` runs it as the ``irregular`` (batched) and
``irregular_per_row`` workloads (:func:`make_irregular`); ``python -m
fastgrad.bench.irregular`` (or ``benchmarks/bench_irregular.py``) prints the
table of every side at once, interleaved, with CPU time beside wall time.

The fastgrad graph is written two ways: ``primitives`` uses ``Value.softplus``,
``fastgrad.sum`` and ``fastgrad.softmax`` (one instruction per operation, the
softmax one n-ary logsumexp plus one instruction per output), ``composed``
only micrograd's operators (``(1 + x.exp()).log()``, Python's ``sum``, a
max-shifted softmax from ``maximum``/``exp``/``/``), as code written before
the primitives existed.
"""
import ctypes
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastgrad.bench.harness import NotAvailable, Runner

__all__ = ["N_INPUTS", "graph_spec", "build_values", "make_side", "SIDES",
           "make_irregular", "check", "main"]

N_INPUTS = 100

# tape records: kind, out, a, b, c, d (unused operands -1)
SOFTPLUS, SUM4, PROD, SOFTMAX4 = 0, 1, 2, 3


# ---------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------

def graph_spec(n_ops: int) -> Tuple[np.ndarray, int]:
    """The workload as a tape: an (n_ops, 6) int32 array of records
    (kind, first output node, operand nodes...) and the number of nodes."""
    nodes = list(range(N_INPUTS))
    n = N_INPUTS
    recs: List[Tuple[int, ...]] = []
    for k in range(n_ops):
        kind = k % 4
        if kind == SOFTPLUS:
            recs.append((kind, n, nodes[-10], -1, -1, -1))
            nodes.append(n)
            n += 1
        elif kind == SUM4:
            recs.append((kind, n, *nodes[-30:-10:5]))
            nodes.append(n)
            n += 1
        elif kind == PROD:
            recs.append((kind, n, nodes[-20], nodes[-10], -1, -1))
            nodes.append(n)
            n += 1
        else:
            recs.append((kind, n, *nodes[-4:]))
            nodes.extend(range(n, n + 4))
            n += 4
    return np.array(recs, np.int32).reshape(-1, 6), n


def build_values(inputs: Sequence[Any], n_ops: int, style: str) -> Any:
    """The graph on fastgrad Values; returns the output node."""
    import fastgrad
    nodes = list(inputs)
    if style == "primitives":
        fsum, softmax = fastgrad.sum, fastgrad.softmax
        for k in range(n_ops):
            kind = k % 4
            if kind == SOFTPLUS:
                nodes.append(nodes[-10].softplus())
            elif kind == SUM4:
                nodes.append(fsum(nodes[-30:-10:5]))
            elif kind == PROD:
                nodes.append(nodes[-20] * nodes[-10])
            else:
                nodes.extend(softmax(nodes[-4:]))
    elif style == "composed":
        maximum = fastgrad.maximum
        for k in range(n_ops):
            kind = k % 4
            if kind == SOFTPLUS:
                nodes.append((1 + nodes[-10].exp()).log())
            elif kind == SUM4:
                nodes.append(sum(nodes[-30:-10:5]))
            elif kind == PROD:
                nodes.append(nodes[-20] * nodes[-10])
            else:
                xs = nodes[-4:]
                m = maximum(maximum(maximum(xs[0], xs[1]), xs[2]), xs[3])
                es = [(x - m).exp() for x in xs]
                s = sum(es)
                nodes.extend(e / s for e in es)
    else:
        raise ValueError(f"unknown style {style!r}")
    return nodes[-1]


def rows(n_rows: int, seed: int = 0) -> np.ndarray:
    """The input rows: standard normal, fixed seed."""
    return np.random.default_rng(seed).standard_normal((n_rows, N_INPUTS))


# ---------------------------------------------------------------------------
# the C tape
# ---------------------------------------------------------------------------

C_SOURCE = r"""
#include <math.h>
#include <string.h>

/* One row at a time: values v and gradients g of every node, the tape in
   records of 6 ints (kind, out, a, b, c, d). */
static void row(int n_ops, const int *t, int n_in, int n_nodes,
                const double *x, double *v, double *g, double *out,
                double *gx) {
    int k, i;
    memcpy(v, x, n_in * sizeof(double));
    for (k = 0; k < n_ops; k++) {
        const int *r = t + 6 * k;
        int o = r[1];
        switch (r[0]) {
        case 0: {                                   /* softplus */
            double a = v[r[2]];
            v[o] = (a > 0 ? a : 0.0) + log1p(exp(-fabs(a)));
            break;
        }
        case 1:                                     /* sum of 4 */
            v[o] = v[r[2]] + v[r[3]] + v[r[4]] + v[r[5]];
            break;
        case 2:                                     /* product */
            v[o] = v[r[2]] * v[r[3]];
            break;
        default: {                                  /* softmax of 4 */
            double m = v[r[2]], e[4], s = 0.0, inv;
            for (i = 1; i < 4; i++) if (v[r[2 + i]] > m) m = v[r[2 + i]];
            for (i = 0; i < 4; i++) { e[i] = exp(v[r[2 + i]] - m); s += e[i]; }
            inv = 1.0 / s;
            for (i = 0; i < 4; i++) v[o + i] = e[i] * inv;
        }
        }
    }
    *out = v[n_nodes - 1];
    memset(g, 0, n_nodes * sizeof(double));
    g[n_nodes - 1] = 1.0;
    for (k = n_ops - 1; k >= 0; k--) {
        const int *r = t + 6 * k;
        int o = r[1];
        switch (r[0]) {
        case 0: {
            double a = v[r[2]], sg;
            if (a >= 0) sg = 1.0 / (1.0 + exp(-a));
            else { double e = exp(a); sg = e / (1.0 + e); }
            g[r[2]] += sg * g[o];
            break;
        }
        case 1:
            for (i = 0; i < 4; i++) g[r[2 + i]] += g[o];
            break;
        case 2:
            g[r[2]] += v[r[3]] * g[o];
            g[r[3]] += v[r[2]] * g[o];
            break;
        default: {
            double dot = 0.0;
            for (i = 0; i < 4; i++) dot += v[o + i] * g[o + i];
            for (i = 0; i < 4; i++) g[r[2 + i]] += v[o + i] * (g[o + i] - dot);
        }
        }
    }
    memcpy(gx, g, n_in * sizeof(double));
}

void tape_rows(int n_rows, int n_ops, const int *t, int n_in, int n_nodes,
               const double *X, double *v, double *g, double *out, double *G) {
    int j;
    for (j = 0; j < n_rows; j++)
        row(n_ops, t, n_in, n_nodes, X + (long)j * n_in, v, g, out + j,
            G + (long)j * n_in);
}
"""

C_FLAGS = ["-O2", "-fPIC", "-shared"]
_C_LIB: Dict[str, Any] = {}


def c_compiler() -> Optional[str]:
    """The C compiler at hand: $CC, Python's configured one, or cc/gcc/clang."""
    for cand in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0],
                 "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def c_tape_lib() -> Any:
    """The C tape, compiled now (once per process) and loaded with ctypes."""
    if "lib" in _C_LIB:
        return _C_LIB["lib"]
    cc = c_compiler()
    if cc is None:
        raise NotAvailable("no C compiler found ($CC, cc, gcc, clang)")
    tmp = tempfile.mkdtemp(prefix="fastgrad-ctape-")
    src = os.path.join(tmp, "tape.c")
    lib = os.path.join(tmp, "tape.so")
    with open(src, "w") as fh:
        fh.write(C_SOURCE)
    try:
        subprocess.run([cc, *C_FLAGS, src, "-o", lib, "-lm"], check=True,
                       capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        msg = getattr(exc, "stderr", "") or str(exc)
        raise NotAvailable(f"the C tape did not compile with {cc}: {msg[:200]}") from None
    dll = ctypes.CDLL(lib)
    dll.tape_rows.restype = None
    _C_LIB["lib"] = dll
    _C_LIB["cc"] = cc
    return dll


def _ptr(a: np.ndarray) -> Any:
    return a.ctypes.data_as(ctypes.c_void_p)


# ---------------------------------------------------------------------------
# the numba tape (the same loops)
# ---------------------------------------------------------------------------

_NUMBA: Dict[str, Any] = {}


def numba_tape() -> Any:
    """The tape loops compiled by numba (once per process)."""
    if "fn" in _NUMBA:
        return _NUMBA["fn"]
    try:
        import numba
    except ImportError:
        raise NotAvailable("not available: numba is not installed") from None

    def tape_rows(t: Any, n_in: int, n_nodes: int, X: Any, out: Any,
                  G: Any) -> None:  # pragma: no cover - jitted
        v = np.empty(n_nodes)
        g = np.empty(n_nodes)
        e = np.empty(4)
        n_ops = t.shape[0]
        for j in range(X.shape[0]):
            for i in range(n_in):
                v[i] = X[j, i]
            for k in range(n_ops):
                kind = t[k, 0]
                o = t[k, 1]
                if kind == 0:
                    a = v[t[k, 2]]
                    v[o] = (a if a > 0 else 0.0) + math.log1p(math.exp(-abs(a)))
                elif kind == 1:
                    v[o] = v[t[k, 2]] + v[t[k, 3]] + v[t[k, 4]] + v[t[k, 5]]
                elif kind == 2:
                    v[o] = v[t[k, 2]] * v[t[k, 3]]
                else:
                    m = v[t[k, 2]]
                    for i in range(1, 4):
                        if v[t[k, 2 + i]] > m:
                            m = v[t[k, 2 + i]]
                    s = 0.0
                    for i in range(4):
                        e[i] = math.exp(v[t[k, 2 + i]] - m)
                        s += e[i]
                    inv = 1.0 / s
                    for i in range(4):
                        v[o + i] = e[i] * inv
            out[j] = v[n_nodes - 1]
            g[:] = 0.0
            g[n_nodes - 1] = 1.0
            for k in range(n_ops - 1, -1, -1):
                kind = t[k, 0]
                o = t[k, 1]
                if kind == 0:
                    a = v[t[k, 2]]
                    if a >= 0:
                        sg = 1.0 / (1.0 + math.exp(-a))
                    else:
                        ea = math.exp(a)
                        sg = ea / (1.0 + ea)
                    g[t[k, 2]] += sg * g[o]
                elif kind == 1:
                    for i in range(4):
                        g[t[k, 2 + i]] += g[o]
                elif kind == 2:
                    g[t[k, 2]] += v[t[k, 3]] * g[o]
                    g[t[k, 3]] += v[t[k, 2]] * g[o]
                else:
                    dot = 0.0
                    for i in range(4):
                        dot += v[o + i] * g[o + i]
                    for i in range(4):
                        g[t[k, 2 + i]] += v[o + i] * (g[o + i] - dot)
            for i in range(n_in):
                G[j, i] = g[i]

    # compiled by a call, not as a decorator: numba ships no types (mypy
    # --strict refuses an untyped decorator)
    jitted: Any = numba.njit(cache=False, fastmath=False)(tape_rows)
    _NUMBA["fn"] = jitted
    return jitted


# ---------------------------------------------------------------------------
# sides
# ---------------------------------------------------------------------------

class Side:
    """One implementation: ``run(X)`` -> (outputs (B,), input gradients (B, 100))."""

    def __init__(self, name: str, run: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]],
                 info: str = "") -> None:
        self.name = name
        self.run = run
        self.info = info


def compile_program(n_ops: int, style: str) -> Tuple[Any, float]:
    """(Program, seconds to trace and record it)."""
    import fastgrad
    from fastgrad import _backend
    if not _backend.COMPILED:
        raise NotAvailable(f"not available: fastgrad.compile needs the compiled build "
                           f"({_backend.REASON})")
    if style == "primitives" and not hasattr(fastgrad, "softmax"):
        raise NotAvailable("this fastgrad has no softplus/sum/softmax primitives")
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the graph reads a random subset of the inputs by design: the
            # others get gradient 0 (issue 20), as the TracerWarning says
            warnings.filterwarnings("ignore", message=r"compile: inputs? \[",
                                    category=fastgrad.TracerWarning)
            prog = fastgrad.compile(lambda xs: build_values(xs, n_ops, style), N_INPUTS)
    except ValueError as exc:
        if "every input must be used" not in str(exc):
            raise
        # fastgrad before issue 20 refused inputs the output does not read:
        # list the inputs as extra outputs (no effect on output 0's gradient)
        t0 = time.perf_counter()
        prog = fastgrad.compile(lambda xs: [build_values(xs, n_ops, style), *xs],
                                N_INPUTS)
    return prog, time.perf_counter() - t0


def make_side(name: str, n_ops: int, cache: Dict[Any, Any]) -> Side:
    """A side by name: fastgrad-batched[-composed], fastgrad-per-row[-composed],
    c-tape, numba-tape.  ``cache`` keeps programs and tapes between sides."""
    if name.startswith("fastgrad"):
        style = "composed" if name.endswith("-composed") else "primitives"
        key = ("prog", n_ops, style)
        if key not in cache:
            cache[key] = compile_program(n_ops, style)
        prog = cache[key][0]
        info = f"{prog.n_instructions} instructions"
        if name.startswith("fastgrad-batched"):
            def run(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
                out = np.empty((X.shape[0], prog.n_outputs))
                G = np.empty_like(X)
                prog.batch(X, reduce="sum", outputs=out, input_grad=G)
                return out[:, 0], G
        else:
            def run(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
                out = np.empty(X.shape[0])
                G = np.empty_like(X)
                vg = prog.value_and_grad
                for j in range(X.shape[0]):
                    out[j], G[j] = vg(X[j])   # (value is output 0)
                return out, G
        return Side(name, run, info)
    tkey = ("tape", n_ops)
    if tkey not in cache:
        cache[tkey] = graph_spec(n_ops)
    tape, n_nodes = cache[tkey]
    if name == "c-tape":
        lib = c_tape_lib()
        v = np.empty(n_nodes)
        g = np.empty(n_nodes)

        def run(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            X = np.ascontiguousarray(X, np.float64)
            out = np.empty(X.shape[0])
            G = np.empty_like(X)
            lib.tape_rows(ctypes.c_int(X.shape[0]), ctypes.c_int(tape.shape[0]),
                          _ptr(tape), ctypes.c_int(N_INPUTS), ctypes.c_int(n_nodes),
                          _ptr(X), _ptr(v), _ptr(g), _ptr(out), _ptr(G))
            return out, G
        return Side(name, run, f"{_C_LIB['cc']} {' '.join(C_FLAGS)}, {n_nodes} nodes")
    if name == "numba-tape":
        fn = numba_tape()

        def run(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            out = np.empty(X.shape[0])
            G = np.empty_like(X)
            fn(tape, N_INPUTS, n_nodes, X, out, G)
            return out, G
        run(rows(2))       # compile outside the timings
        import numba
        return Side(name, run, f"numba {numba.__version__}")
    raise ValueError(f"unknown side {name!r}")


SIDES = ("c-tape", "numba-tape", "fastgrad-batched", "fastgrad-per-row",
         "fastgrad-batched-composed", "fastgrad-per-row-composed")


def make_irregular(impl: str, params: Dict[str, Any]) -> Runner:
    """One side of the ``irregular`` workloads of ``fastgrad bench``.

    ``impl``: "fastgrad", "c_tape" or "numba_tape"; ``params``: ``ops``,
    ``rows``, ``per_row`` (fastgrad: ``value_and_grad`` one row at a time
    instead of one ``batch`` call; the tapes always go one row at a time) and
    ``style`` ("primitives" or "composed").  A call returns the outputs and
    the input gradients of every row.
    """
    n_ops, n_rows = int(params["ops"]), int(params["rows"])
    if impl == "fastgrad":
        name = "fastgrad-per-row" if params.get("per_row") else "fastgrad-batched"
        if params.get("style", "primitives") == "composed":
            name += "-composed"
    else:
        name = impl.replace("_", "-")
    side = make_side(name, n_ops, {})
    X = rows(n_rows)
    _, n_nodes = graph_spec(n_ops)

    def result(res: Tuple[np.ndarray, np.ndarray]) -> Any:
        return [res[0].tolist(), res[1].tolist()]
    return Runner(fn=lambda: side.run(X), result=result, nodes=n_rows * n_nodes)


def check(results: Dict[str, Tuple[np.ndarray, np.ndarray]], ref: str,
          rtol: float = 1e-9) -> Dict[str, float]:
    """Largest relative difference of each side's outputs and gradients from
    ``ref``'s; raises AssertionError past ``rtol``."""
    worst = {}
    r_out, r_g = results[ref]
    scale = max(float(np.max(np.abs(r_g))), 1e-300)
    for name, (out, g) in results.items():
        if not (np.all(np.isfinite(out)) and np.all(np.isfinite(g))):
            raise AssertionError(f"{name}: non-finite outputs or gradients")
        d_out = float(np.max(np.abs(out - r_out) / np.maximum(np.abs(r_out), 1e-300)))
        # gradients: relative to the largest gradient of the row set (many
        # gradients are tiny sums of cancelling terms)
        d_g = float(np.max(np.abs(g - r_g))) / scale
        if d_out > rtol or d_g > rtol:
            raise AssertionError(f"{name} differs from {ref}: outputs by {d_out:.3g}, "
                                 f"gradients by {d_g:.3g} (relative)")
        worst[name] = max(d_out, d_g)
    return worst


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------

def _time(fn: Callable[[], Any]) -> Tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def run_size(n_ops: int, n_rows: int, per_row_rows: int, reps: int,
             sides: Sequence[str], out: Any = sys.stdout) -> Dict[str, Any]:
    """Check, then time every side ``reps`` times, interleaved; print a table."""
    cache: Dict[Any, Any] = {}
    made: List[Side] = []
    skipped = {}
    for name in sides:
        try:
            made.append(make_side(name, n_ops, cache))
        except NotAvailable as exc:
            skipped[name] = str(exc)
    X = rows(n_rows)
    Xs = X[:per_row_rows]
    # check on the per-row subset (every side), before any timing
    results = {s.name: s.run(Xs) for s in made}
    ref = "c-tape" if "c-tape" in results else made[0].name
    worst = check(results, ref)
    wall: Dict[str, List[float]] = {s.name: [] for s in made}
    cpu: Dict[str, List[float]] = {s.name: [] for s in made}
    load0 = open("/proc/loadavg").read().split()[:3]
    for _ in range(reps):
        for s in made:
            data = Xs if "per-row" in s.name else X
            w, c = _time(lambda: s.run(data))
            wall[s.name].append(w / data.shape[0])
            cpu[s.name].append(c / data.shape[0])
    load1 = open("/proc/loadavg").read().split()[:3]
    _, n_nodes = cache.get(("tape", n_ops), graph_spec(n_ops))
    print(f"\n## {n_ops:,} ops ({n_nodes:,} nodes), {n_rows:,} rows batched, "
          f"{per_row_rows:,} rows per-row; {reps} interleaved reps; "
          f"load {' '.join(load0)} -> {' '.join(load1)}", file=out)
    for (kind, style), (prog, secs) in sorted(
            ((k[1:], v) for k, v in cache.items() if k[0] == "prog")):
        print(f"compile ({style}): {secs:.3f} s, {prog.n_instructions:,} instructions, "
              f"{secs / n_ops * 1e6:.1f} us per op", file=out)
    base = ref
    bw = min(wall[base]) if base in wall else float("nan")
    bc = min(cpu[base]) if base in cpu else float("nan")
    print(f"| side | us/row wall (min, median) | us/row CPU (min) | ratio to {base} "
          f"wall | CPU | max rel. diff | notes |", file=out)
    print("|---|---|---|---|---|---|---|", file=out)
    for s in made:
        ws = sorted(wall[s.name])
        cs = sorted(cpu[s.name])
        print(f"| {s.name} | {ws[0] * 1e6:.1f}, {ws[len(ws) // 2] * 1e6:.1f} | "
              f"{cs[0] * 1e6:.1f} | {ws[0] / bw:.2f}x | {cs[0] / bc:.2f}x | "
              f"{worst[s.name]:.1e} | {s.info} |", file=out)
    for name, why in skipped.items():
        print(f"| {name} | skipped: {why} | | | | | |", file=out)
    return {"wall": wall, "cpu": cpu, "worst": worst, "skipped": skipped,
            "load": (load0, load1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--per-row-rows", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--isa", default=None,
                    help="the replay kernels' ISA (fastgrad._replay._set_isa: portable, "
                         "baseline, avx2, avx512; default: the best this CPU runs)")
    args = ap.parse_args(argv)
    import fastgrad
    from fastgrad import _replay
    if args.isa is not None:
        try:
            _replay._set_isa(args.isa)
        except ValueError as e:
            ap.error(f"--isa: {e}")
    print(f"fastgrad {fastgrad.__version__}, replay ISA {_replay._isa()}, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    for n_ops in args.ops:
        run_size(n_ops, args.rows, min(args.per_row_rows, args.rows), args.reps,
                 args.sides.split(","))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
