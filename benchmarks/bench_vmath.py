"""fastgrad's vector elementary functions (_vmath.h): speed, and what they buy.

Run from a checkout with the compiled build in place (inside /work/bin/quiet
on a shared machine)::

    PYTHONPATH=src python benchmarks/bench_vmath.py functions [--n 10000] [--rounds 15]
    PYTHONPATH=src python benchmarks/bench_vmath.py replay [--n 1000,10000] [--rounds 15]
        [--baseline-src /path/to/other/checkout/src]
    PYTHONPATH=src python benchmarks/bench_vmath.py nets [--n 1000,10000] [--rounds 5]
        [--rows lecture_tanh,tanh_hidden,sigmoid_hidden] [--repeat 2] [--baseline-src ...]
    PYTHONPATH=src python benchmarks/bench_vmath.py epilogue [--n 1000,10000] [--rounds 9]
        [--rows sigmoid_hand]
    PYTHONPATH=src python benchmarks/bench_vmath.py eager [--baseline-src ...]
    PYTHONPATH=src python benchmarks/bench_vmath.py ir [--baseline-src ...]

``functions``: ns per element of exp, expm1, log, log1p, tanh, sigmoid and
softplus over an array of ``--n`` doubles (in L1/L2), for every build this
CPU runs (portable = width 1, baseline = 2, avx2 = 4, avx512-shape-on-avx2 =
the 8-wide body for AVX2), against the C library in a scalar loop (glibc;
sigmoid and softplus in the engine's former stable forms), NumPy's ufuncs
(sigmoid as 1/(1+exp(-x)), softplus as logaddexp(0, x)) and ``jax.jit`` of
jax.numpy / jax.nn (when jax is installed).  Inputs: uniform over a range
where every function is regular.  Each side is checked against the C
library's result first (1e-12 relative: the same function; the distance in
ulps is printed) and the sides are interleaved round by round;
the figure is the minimum over rounds of the CPU time (``time.process_time``)
per element, wall time beside it.

``replay``: one compiled training step (``Program.sgd_step``, forward +
backward + SGD update) of a tanh MLP 2-64-64-1 with MSE loss, written as a
user writes it with Values, at batch sizes ``--n``, against ``jax.jit`` of
the same step (float64, one thread), and against the same step in the build
at ``--baseline-src`` (e.g. a checkout of main before the vector maths),
which runs in alternating subprocesses (a module cannot be loaded twice in
one process).  Both check their first loss against NumPy by hand (1e-12).

``nets``: issue 20's smooth-activation rows (``fastgrad.bench.styles``:
micrograd's code with tanh hidden layers, the nn-zero-to-hero lecture
classes with tanh everywhere and MSE, micrograd's code with sigmoid hidden
layers; 2-64-64-1 on moons, one ``Program.sgd_step`` per step) at ``--n``
rows, on every ISA this CPU runs (``fastgrad._replay._set_isa``), against
the hand-written NumPy step, ``jax.jit(value_and_grad)`` and PyTorch eager,
all on one pinned core with one BLAS thread, interleaved in one process
(every peer's first step checked against fastgrad's, as bench_styles.py
does).  With ``--baseline-src`` (a checkout without the vector maths) the
same worker runs in that build too: the two builds' processes alternate
``--repeat`` times (a compiled module cannot be loaded twice in one
process), and each process's ratios are against the peers timed in it.
Figures: the median per-step CPU and wall time over the rounds, the best
process of each build.

``epilogue``: the user's sigmoid ``1/(1+(-z).exp())`` as a layer epilogue,
fused (one pass per row block forward; the backward reads the kept exp) against
op by op (one pass per op; the backward recomputes exp), switched with
``fastgrad._replay._set_epi_fused`` in one process: ms per
``Program.sgd_step`` of the styles row ``sigmoid_hand`` (2-64-64-1, hinge)
on every ISA, the two sides alternating round by round (the order flips each
round), medians of the per-round CPU and wall times.

``eager``: ns per eager op (``Value.tanh()`` ... on 10,000 Values, node
creation included; ``v * 1.5`` as a reference op) in this build and in
``--baseline-src``'s, alternating processes.

``ir``: instructions per call under callgrind (``valgrind`` needed;
counts are stable on a loaded machine): the inclusive count of each eager
``Value.op()`` Cython method (node creation and the rule; not the
interpreter's call overhead) in this build and ``--baseline-src``'s, and of
the width-1 functions (``fg_vm_*_row_plain``, what eager inlines) against
glibc's over rows of 1,000 doubles, one run per function.

Prints the load average before and after; nothing is asserted about time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_cpu_multi_thread_eigen" not in _flags:
    os.environ["XLA_FLAGS"] = (
        _flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import numpy as np  # noqa: E402

RANGES = {"exp": (-20.0, 20.0), "expm1": (-5.0, 5.0), "log": (1e-3, 1e3),
          "log1p": (-0.5, 10.0), "tanh": (-5.0, 5.0), "sigmoid": (-20.0, 20.0),
          "softplus": (-20.0, 20.0)}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _timeit(fn, reps):
    """(cpu, wall) seconds per call: one round of ``reps`` calls."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.process_time() - c0) / reps, (time.perf_counter() - w0) / reps


def _interleaved(sides, rounds, reps):
    """min over rounds of (cpu, wall) per call, sides interleaved per round."""
    best = {k: [float("inf"), float("inf")] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            c, w = _timeit(fn, reps)
            best[k][0] = min(best[k][0], c)
            best[k][1] = min(best[k][1], w)
    return best


def _ulps(a, b):
    """max distance in ulps (as ordered integers) between two float arrays."""
    ia = a.view(np.int64)
    ib = b.view(np.int64)
    ia = np.where(ia < 0, np.int64(-2 ** 63) - ia, ia)
    ib = np.where(ib < 0, np.int64(-2 ** 63) - ib, ib)
    return int(np.max(np.abs(ia - ib)))


# ---------------------------------------------------------------------------
# functions
# ---------------------------------------------------------------------------

def bench_functions(n, rounds):
    from fastgrad import _vmath_ext as V
    rng = np.random.default_rng(0)
    jax = jnp = None
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
    numpy_fn = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
                "tanh": np.tanh, "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
                "softplus": lambda x: np.logaddexp(0.0, x)}
    jax_fn = {}
    if jax is not None:
        jf = {"exp": jnp.exp, "expm1": jnp.expm1, "log": jnp.log, "log1p": jnp.log1p,
              "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus}
        jax_fn = {k: jax.jit(f) for k, f in jf.items()}
    isas = V.supported()
    reps = max(1, 200_000 // n)
    rows = {}
    dists = {}
    for name in V.FUNCTIONS:
        lo, hi = RANGES[name]
        x = rng.uniform(lo, hi, n)
        out = np.empty(n)
        want = V.libm(name, x)
        sides = {}
        dist = {}

        def check(label, got):
            # the same function (to 1e-12): a sanity check, not a grade; the
            # distance from libm in ulps is printed
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=label)
            dist[label] = _ulps(np.asarray(got, np.float64), want)

        for isa in isas:
            check(isa, V.evaluate(name, x, isa))
            sides[isa] = (lambda isa=isa: V.evaluate(name, x, isa, out))
        sides["libm loop"] = lambda: V.libm(name, x, out)
        check("numpy", numpy_fn[name](x))
        sides["numpy"] = lambda: numpy_fn[name](x)
        if jax_fn:
            xj = jnp.asarray(x)
            f = jax_fn[name]
            check("jax.jit", np.asarray(f(xj)))
            sides["jax.jit"] = lambda: f(xj).block_until_ready()
        dists[name] = dist
        best = _interleaved(sides, rounds, reps)
        rows[name] = {k: (c / n * 1e9, w / n * 1e9) for k, (c, w) in best.items()}
    cols = list(next(iter(rows.values())))
    print(f"ns per element (CPU time; wall in parentheses), n = {n}, min of {rounds} rounds")
    print(f"{'function':10s}" + "".join(f"{c:>22s}" for c in cols))
    for name, r in rows.items():
        print(f"{name:10s}" + "".join(f"{r[c][0]:13.2f} ({r[c][1]:6.2f})" for c in cols))
    print("\nmax distance from the C library's result, in ulps (a peer's accuracy "
          "differs; fastgrad's is <= 0.52 ulp from the exact value, tanh 0.75)")
    print(f"{'function':10s}" + "".join(f"{c:>12s}" for c in dists["exp"]))
    for name, d in dists.items():
        print(f"{name:10s}" + "".join(f"{d[c]:12d}" for c in d))
    best_isa = isas[-2] if isas[-1].startswith("avx512-shape") else isas[-1]
    print(f"\nspeed-up of {best_isa} over: " + ", ".join(
        f"{c}" for c in cols if c not in isas))
    for name, r in rows.items():
        print(f"{name:10s}" + "".join(
            f"  {c}: {r[c][0] / r[best_isa][0]:5.1f}x" for c in cols if c not in isas))
    return rows


# ---------------------------------------------------------------------------
# replay: a tanh MLP's compiled training step
# ---------------------------------------------------------------------------

def _tanh_mlp(seed=1337, sizes=(2, 64, 64, 1)):
    """Weights as nested lists (W[l][i][j], b[l][i]), deterministic."""
    rng = np.random.default_rng(seed)
    W, b = [], []
    for k in range(len(sizes) - 1):
        W.append(rng.uniform(-1, 1, (sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]))
        b.append(rng.uniform(-0.1, 0.1, sizes[k + 1]))
    return W, b


def _data(n, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1])
    return X, y


def _numpy_loss(W, b, X, y):
    h = X.T
    for k in range(len(W)):
        h = W[k] @ h + b[k][:, None]
        if k < len(W) - 1:
            h = np.tanh(h)
    return float(np.mean((h[0] - y) ** 2))


def replay_worker(ns, rounds, lr=1e-3):
    """This process's fastgrad: time the compiled step; JSON on stdout."""
    import fastgrad
    from fastgrad import Value
    from fastgrad import _replay
    W0, b0 = _tanh_mlp()
    res = {"isa": _replay._isa(), "fastgrad": fastgrad.__file__}
    for n in ns:
        X, y = _data(n)
        W = [[[Value(float(v)) for v in row] for row in Wk] for Wk in W0]
        b = [[Value(float(v)) for v in bk] for bk in b0]
        params = [p for Wk, bk in zip(W, b) for row, bi in zip(Wk, bk) for p in row + [bi]]

        def model(v):
            x, target = v[:2], v[2]
            h = x
            for k in range(len(W)):
                # the lecture's neuron: sum((wi*xi for ...), b), tanh hidden
                h = [sum((wi * xi for wi, xi in zip(row, h)), bi) for row, bi in zip(W[k], b[k])]
                if k < len(W) - 1:
                    h = [t.tanh() for t in h]
            d = h[0] - target
            return d * d

        prog = fastgrad.compile(model, 3, params=params)
        XY = np.column_stack([X, y])
        loss = prog.batch(XY, reduce="mean", grad=False)
        want = _numpy_loss(W0, b0, X, y)
        assert abs(loss - want) <= 1e-12 * max(1.0, abs(want)), (loss, want)
        theta = prog.param_values().copy()

        def step():
            prog.sgd_step(XY, lr, reduce="mean")

        reps = max(1, 20_000 // n)
        best = _interleaved({"fg": step}, rounds, reps)["fg"]
        # put the weights back (the steps moved them)
        for p, v in zip(prog.params, theta):
            p.data = float(v)
        res[str(n)] = best
    print(json.dumps(res))


def jax_step_times(ns, rounds, lr=1e-3):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    W0, b0 = _tanh_mlp()

    def loss_fn(params, X, y):
        h = X.T
        for k, (Wk, bk) in enumerate(params):
            h = Wk @ h + bk[:, None]
            if k < len(params) - 1:
                h = jnp.tanh(h)
        return jnp.mean((h[0] - y) ** 2)

    @jax.jit
    def step(params, X, y):
        loss, g = jax.value_and_grad(loss_fn)(params, X, y)
        return [(Wk - lr * gW, bk - lr * gb) for (Wk, bk), (gW, gb) in zip(params, g)], loss

    out = {}
    for n in ns:
        X, y = _data(n)
        params = [(jnp.asarray(Wk), jnp.asarray(bk)) for Wk, bk in zip(W0, b0)]
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        _, loss = step(params, Xj, yj)
        want = _numpy_loss(W0, b0, X, y)
        assert abs(float(loss) - want) <= 1e-12 * max(1.0, abs(want)), (float(loss), want)
        state = {"p": params}

        def run():
            state["p"], l_ = step(state["p"], Xj, yj)
            l_.block_until_ready()

        reps = max(1, 20_000 // n)
        out[str(n)] = _interleaved({"jax": run}, rounds, reps)["jax"]
    return out


def bench_replay(ns, rounds, baseline_src):
    me = os.path.abspath(__file__)
    srcs = {"this build": os.environ.get("PYTHONPATH", "src")}
    if baseline_src:
        srcs["baseline"] = baseline_src
    # alternate the builds' processes, several times; keep each one's best
    best = {}
    for _ in range(3):
        for label, src in srcs.items():
            env = dict(os.environ, PYTHONPATH=src)
            proc = subprocess.run(
                [sys.executable, me, "_replay_worker", "--n", ",".join(map(str, ns)),
                 "--rounds", str(rounds)],
                capture_output=True, text=True, env=env, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            b = best.setdefault(label, {"isa": res["isa"]})
            for n in ns:
                c, w = res[str(n)]
                old = b.get(str(n), (float("inf"), float("inf")))
                b[str(n)] = (min(old[0], c), min(old[1], w))
    jx = jax_step_times(ns, rounds)
    print("tanh MLP 2-64-64-1, MSE, one sgd_step (forward + backward + update), "
          "float64; ms per step, CPU time (wall)")
    for n in ns:
        line = f"N={n:6d}"
        for label, b in best.items():
            c, w = b[str(n)]
            line += f"  {label} [{b['isa']}]: {c * 1e3:7.3f} ({w * 1e3:7.3f})"
        if jx:
            c, w = jx[str(n)]
            line += f"  jax.jit: {c * 1e3:7.3f} ({w * 1e3:7.3f})"
        print(line)
        mine = best["this build"][str(n)][0]
        ratios = []
        if "baseline" in best:
            ratios.append(f"this/baseline {mine / best['baseline'][str(n)][0]:.2f}x")
        if jx:
            ratios.append(f"this/jax.jit {mine / jx[str(n)][0]:.2f}x")
        print("         " + ", ".join(ratios))


# ---------------------------------------------------------------------------
# nets: issue 20's tanh / sigmoid rows, every ISA, before and after
# ---------------------------------------------------------------------------

NET_ROWS = ("tanh_hidden", "lecture_tanh", "sigmoid_hidden")
NET_PEERS = ("numpy", "jax.jit", "torch eager")


def nets_worker(rows, ns, rounds, peers, round_s=0.05):
    """This process's fastgrad: every ISA and the peers, interleaved; JSON."""
    import statistics

    from fastgrad import _replay
    from fastgrad.bench import grid, harness
    from fastgrad.bench.styles import (LOSS_RTOL, PARAM_ATOL, PARAM_RTOL, PEERS,
                                       STYLE_BY_NAME, FastgradSide)
    isas = list(_replay._supported_isas())
    old_isa = _replay._isa()
    out = {"isas": isas, "default_isa": old_isa, "rows": []}
    with grid.single_core() as how:
        out["binding"] = how
        for name in rows:
            style = STYLE_BY_NAME[name]
            for n in ns:
                rec = {"row": name, "label": style.label, "N": n, "load": [loadavg()]}
                with harness.isolated_gc():
                    fg = FastgradSide(style, n)
                    rec["layers"] = fg.program.n_layers
                    rec["compile_s"] = fg.compile_s
                    f_loss = fg.step()
                    f_flat = fg.flat()
                    sides = []
                    for isa in isas:
                        def step(isa=isa):
                            _replay._set_isa(isa)
                            return fg.step()
                        sides.append((f"fastgrad[{isa}]", step))
                    skipped = {}
                    for peer in peers:
                        try:
                            side = PEERS[peer](style, fg.X, fg.Y, fg.initial)
                            p_loss = side.step()
                            grid.check_close("loss", f_loss, p_loss, LOSS_RTOL, 0.0)
                            grid.check_close("parameters after the update", f_flat,
                                             side.flat(), PARAM_RTOL, PARAM_ATOL)
                        except harness.NotAvailable as exc:
                            skipped[peer] = str(exc)
                            continue
                        sides.append((peer, side.step))
                    rec["skipped"] = skipped
                    # steps per round (~round_s each), after a warm-up
                    ks = []
                    for _, fn in sides:
                        k, t0 = 0, time.perf_counter()
                        while k < 2 or time.perf_counter() - t0 < round_s:
                            fn()
                            k += 1
                        ks.append(max(1, int(round_s / ((time.perf_counter() - t0) / k)) + 1))
                    cpu = {lab: [] for lab, _ in sides}
                    wall = {lab: [] for lab, _ in sides}
                    for rnd in range(rounds):
                        order = list(range(len(sides)))
                        order = order[rnd % len(order):] + order[:rnd % len(order)]
                        for j in order:
                            lab, fn = sides[j]
                            fn()     # the ISA switch and a warm cache outside the timing
                            c0, w0 = time.process_time(), time.perf_counter()
                            for _ in range(ks[j]):
                                fn()
                            w1, c1 = time.perf_counter(), time.process_time()
                            cpu[lab].append((c1 - c0) / ks[j])
                            wall[lab].append((w1 - w0) / ks[j])
                    _replay._set_isa(old_isa)
                    rec["cpu"] = {k: statistics.median(v) for k, v in cpu.items()}
                    rec["wall"] = {k: statistics.median(v) for k, v in wall.items()}
                rec["load"].append(loadavg())
                out["rows"].append(rec)
    print(json.dumps(out))


def bench_nets(rows, ns, rounds, peers, repeat, baseline_src):
    me = os.path.abspath(__file__)
    srcs = {"after": os.environ.get("PYTHONPATH", "src")}
    if baseline_src:
        srcs["before"] = baseline_src
    runs = {k: [] for k in srcs}
    for r in range(repeat):
        for label, src in (list(srcs.items()) if r % 2 == 0 else list(srcs.items())[::-1]):
            env = dict(os.environ, PYTHONPATH=src)
            proc = subprocess.run(
                [sys.executable, me, "_nets_worker", "--rows", ",".join(rows),
                 "--n", ",".join(map(str, ns)), "--rounds", str(rounds),
                 "--peers", ",".join(peers)],
                capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"the {label} worker failed ({src})")
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"# {label} ({src}) run {len(runs[label])} done, load {loadavg()}",
                  flush=True)
    first = runs["after"][0]
    print(f"# {first['binding']}; ISAs {', '.join(first['isas'])} (default "
          f"{first['default_isa']}); medians over {rounds} interleaved rounds, best of "
          f"{repeat} processes per build; ms per training step, CPU time (wall)")

    def best(label, i, key, side):
        vals = [run["rows"][i][key].get(side) for run in runs[label]]
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    hdr = ("| model code | N | layers | ISA | before | after | after/before (cpu) | numpy "
           "| jax.jit | torch eager | after/best peer cpu (wall) | before/best peer cpu |"
           " load |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for i, rec in enumerate(first["rows"]):
        loads = sorted({x for run in sum(runs.values(), []) for x in run["rows"][i]["load"]})
        for isa in first["isas"]:
            fgk = f"fastgrad[{isa}]"
            cells = {}
            for label in srcs:
                c, w = best(label, i, "cpu", fgk), best(label, i, "wall", fgk)
                cells[label] = (c, w)
            # peers: the best process of the "after" build (same processes as
            # its fastgrad figures); the before build's ratio uses its own
            pc = {p: (best("after", i, "cpu", p), best("after", i, "wall", p)) for p in peers}
            ok = {p: v for p, v in pc.items() if v[0] is not None}
            bp = min(ok, key=lambda p: ok[p][0]) if ok else None

            def fmt(v):
                return "-" if v is None or v[0] is None else f"{v[0]*1e3:.3f} ({v[1]*1e3:.3f})"
            after = cells["after"]
            before = cells.get("before")
            r_ab = (f"{after[0] / before[0]:.2f}x" if before and before[0] else "-")
            r_peer = (f"{after[0] / ok[bp][0]:.2f}x ({after[1] / ok[bp][1]:.2f}x) vs {bp}"
                      if bp else "-")
            if before and before[0]:
                bpc = {p: best("before", i, "cpu", p) for p in peers}
                bpc = {p: v for p, v in bpc.items() if v is not None}
                r_before = (f"{before[0] / min(bpc.values()):.2f}x" if bpc else "-")
            else:
                r_before = "-"
            print(f"| {rec['label']} | {rec['N']:,} | {rec['layers']} | {isa} | "
                  f"{fmt(before) if before else '-'} | {fmt(after)} | {r_ab} | "
                  + " | ".join(fmt(pc[p]) for p in peers) +
                  f" | {r_peer} | {r_before} | {loads[0]} .. {loads[-1]} |")
    for label in srcs:
        for run in runs[label]:
            for rec in run["rows"]:
                for p, why in rec["skipped"].items():
                    print(f"- {label} {rec['row']} N={rec['N']}: {p} skipped: {why}")


# ---------------------------------------------------------------------------
# eager: the cost of a smooth op in eager mode
# ---------------------------------------------------------------------------

def eager_worker(rounds):
    """This process's fastgrad: ns per eager op (node creation included)."""
    from fastgrad import Value
    xs = [Value(v) for v in np.random.default_rng(3).uniform(0.05, 3.0, 10_000).tolist()]
    ops = {"tanh": lambda v: v.tanh(), "sigmoid": lambda v: v.sigmoid(),
           "exp": lambda v: v.exp(), "log": lambda v: v.log(),
           "mul (reference op)": lambda v: v * 1.5}
    sides = {k: (lambda f=f: [f(v) for v in xs]) for k, f in ops.items()}
    best = _interleaved(sides, rounds, 3)
    print(json.dumps({k: (c / len(xs) * 1e9, w / len(xs) * 1e9) for k, (c, w) in best.items()}))


def bench_eager(rounds, baseline_src):
    me = os.path.abspath(__file__)
    srcs = {"this build": os.environ.get("PYTHONPATH", "src")}
    if baseline_src:
        srcs["baseline"] = baseline_src
    best = {}
    for _ in range(5):
        for label, src in srcs.items():
            env = dict(os.environ, PYTHONPATH=src)
            proc = subprocess.run([sys.executable, me, "_eager_worker", "--rounds", str(rounds)],
                                  capture_output=True, text=True, env=env, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            b = best.setdefault(label, {})
            for k, (c, w) in res.items():
                old = b.get(k, (float("inf"), float("inf")))
                b[k] = (min(old[0], c), min(old[1], w))
    print("eager Value ops, ns per op (node creation included), CPU time (wall), "
          "min over 5 alternating processes")
    for k in best["this build"]:
        line = f"{k:20s}" + "".join(f"  {lab}: {b[k][0]:7.1f} ({b[k][1]:7.1f})"
                                    for lab, b in best.items())
        if "baseline" in best:
            line += f"   ratio {best['this build'][k][0] / best['baseline'][k][0]:.3f}"
        print(line)


# ---------------------------------------------------------------------------
# ir: instructions per call (callgrind), this build against glibc
# ---------------------------------------------------------------------------

IR_OPS = ("tanh", "sigmoid", "exp", "log", "log1p", "softplus")
IR_FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh")
IR_DOMAIN = {"log": (0.05, 30.0), "log1p": (-0.9, 30.0), "exp": (-20.0, 20.0),
             "expm1": (-5.0, 5.0)}


def _ir_values(name):
    lo, hi = IR_DOMAIN.get(name, (-6.0, 6.0))
    return np.random.default_rng(11).uniform(lo, hi, 1000)


def ir_worker(kind, n, only=None):
    """The measured calls, each op / function ``n`` x 1,000 times."""
    if kind == "eager":
        from fastgrad import Value
        for op in IR_OPS:
            xs = [Value(v) for v in _ir_values(op).tolist()]
            for _ in range(n):
                for v in xs:
                    getattr(v, op)()
    else:
        from fastgrad import _vmath_ext as V
        for name in [only] if only else IR_FUNCTIONS:
            x = _ir_values(name)
            out = np.empty_like(x)
            for _ in range(n):
                V.evaluate(name, x, "portable", out)
                V.libm(name, x, out)


def _callgrind(src, args):
    """{function symbol: inclusive Ir} of one run of this script."""
    import re
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=src)
        out = f"{tmp}/cg.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, os.path.abspath(__file__), "_ir_worker"] + args,
            capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"callgrind run failed: {args}")
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                             capture_output=True, text=True, check=True).stdout
    inc = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*?:(\S+)\s", line)
        if m:
            inc.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return inc


def bench_ir(n, baseline_src):
    """Instructions per call: eager ``Value.op()`` in this build and the
    baseline's (glibc inside), and the width-1 functions against glibc's."""
    import re
    import shutil
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    srcs = {"this build": os.environ.get("PYTHONPATH", "src")}
    if baseline_src:
        srcs["baseline"] = baseline_src
    calls = n * 1000
    print(f"instructions (callgrind Ir, inclusive) per call, {calls:,} calls each")
    print("\neager Value.op() (the Cython method: node creation and the rule included; "
          "the interpreter's call overhead not):")
    eager = {}
    for label, src in srcs.items():
        inc = _callgrind(src, ["--kind", "eager", "--n", str(n)])
        eager[label] = {}
        for op in IR_OPS:
            pat = re.compile(r"__pyx_pw_8fastgrad_7_engine_5Value_\d+" + op + "$")
            hits = [v for k, v in inc.items() if pat.match(k)]
            eager[label][op] = hits[0] / calls if hits else float("nan")
    print(f"{'op':10s}" + "".join(f"{lab:>14s}" for lab in srcs)
          + ("    difference" if baseline_src else ""))
    for op in IR_OPS:
        line = f"{op:10s}" + "".join(f"{eager[lab][op]:14.1f}" for lab in srcs)
        if baseline_src:
            line += f"{eager['this build'][op] - eager['baseline'][op]:+14.1f}"
        print(line)
    print("\nthe functions alone (row of 1,000 doubles): fastgrad's width-1 build "
          "(fg_vm_*_row_plain, what eager inlines) against glibc's function:")
    print(f"{'function':10s}{'fastgrad':>12s}{'glibc':>12s}{'ratio':>8s}   glibc symbol")
    for name in IR_FUNCTIONS:
        # one run per function: glibc's tanh calls its expm1, so a shared run
        # would charge tanh's calls to expm1
        inc = _callgrind(srcs["this build"],
                         ["--kind", "functions", "--n", str(n), "--name", name])
        a = inc.get(f"fg_vm_{name}_row_plain", float("nan")) / calls
        # glibc's entry points: tanh, __exp1/exp, __log/log ... (the largest
        # inclusive count among the symbols named after the function)
        pat = re.compile(r"^(__)?" + name + r"(_fma|_avx2|f64)?(@@?GLIBC\S*)?$")
        cands = {k: v for k, v in inc.items() if pat.match(k)}
        sym = max(cands, key=cands.get) if cands else None
        b = cands[sym] / calls if sym else float("nan")
        print(f"{name:10s}{a:12.1f}{b:12.1f}{a / b:8.2f}   {sym}")


# ---------------------------------------------------------------------------
# epilogue: the user's sigmoid fused vs op by op, same process
# ---------------------------------------------------------------------------

def bench_epilogue(rows, ns, rounds):
    from fastgrad import _replay
    from fastgrad.bench.styles import STYLE_BY_NAME, FastgradSide
    old_isa = _replay._isa()
    old = _replay._set_epi_fused(True)
    print(f"{'row':14s}{'N':>7s} {'ISA':10s}{'fused cpu (wall)':>22s}"
          f"{'op by op cpu (wall)':>24s}{'ratio cpu (wall)':>20s}")
    try:
        for name in rows:
            for N in ns:
                side = FastgradSide(STYLE_BY_NAME[name], N)
                reps = max(1, 20000 // N)
                for isa in _replay._supported_isas():
                    _replay._set_isa(isa)
                    res = {True: ([], []), False: ([], [])}
                    for fused in (True, False):          # warm-up
                        _replay._set_epi_fused(fused)
                        side.step()
                    for r in range(rounds):
                        for fused in ((True, False) if r % 2 == 0 else (False, True)):
                            _replay._set_epi_fused(fused)
                            c0, w0 = time.process_time(), time.perf_counter()
                            for _ in range(reps):
                                side.step()
                            res[fused][0].append((time.process_time() - c0) / reps * 1e3)
                            res[fused][1].append((time.perf_counter() - w0) / reps * 1e3)
                    fc, fw = (statistics.median(v) for v in res[True])
                    uc, uw = (statistics.median(v) for v in res[False])
                    print(f"{name:14s}{N:7d} {isa:10s}{fc:11.3f} ({fw:8.3f})"
                          f"{uc:13.3f} ({uw:8.3f}){fc / uc:11.3f} ({fw / uw:.3f})",
                          flush=True)
    finally:
        _replay._set_epi_fused(old)
        _replay._set_isa(old_isa)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["functions", "replay", "nets", "epilogue", "eager", "ir",
                                     "_replay_worker", "_nets_worker", "_eager_worker",
                                     "_ir_worker"])
    ap.add_argument("--n", default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--baseline-src", default=None)
    ap.add_argument("--rows", default=",".join(NET_ROWS))
    ap.add_argument("--peers", default=",".join(NET_PEERS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--kind", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = (5 if args.what in ("nets", "_nets_worker")
                       else 9 if args.what == "epilogue" else 15)
    if args.what == "_ir_worker":
        ir_worker(args.kind, int(args.n), args.name)
        return 0
    if args.what == "_nets_worker":
        nets_worker(args.rows.split(","), [int(v) for v in args.n.split(",")], args.rounds,
                    [p for p in args.peers.split(",") if p])
        return 0
    if args.what == "_replay_worker":
        replay_worker([int(v) for v in args.n.split(",")], args.rounds)
        return 0
    if args.what == "_eager_worker":
        eager_worker(args.rounds)
        return 0
    print(f"load average before: {loadavg()}")
    if args.what == "functions":
        bench_functions(int(args.n or 10000), args.rounds)
    elif args.what == "epilogue":
        rows = args.rows.split(",") if args.rows != ",".join(NET_ROWS) else ["sigmoid_hand"]
        bench_epilogue(rows, [int(v) for v in (args.n or "1000,10000").split(",")],
                       args.rounds)
    elif args.what == "eager":
        bench_eager(args.rounds, args.baseline_src)
    elif args.what == "ir":
        bench_ir(int(args.n or 5), args.baseline_src)
    elif args.what == "nets":
        bench_nets(args.rows.split(","), [int(v) for v in (args.n or "1000,10000").split(",")],
                   args.rounds, [p for p in args.peers.split(",") if p], args.repeat,
                   args.baseline_src)
    else:
        bench_replay([int(v) for v in (args.n or "1000,10000").split(",")], args.rounds,
                     args.baseline_src)
    print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
