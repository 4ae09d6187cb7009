"""The H x N benchmark grid (fastgrad.bench.grid, benchmarks/bench_grid.py).

Nothing here asserts a timing: tiny cells (H=4, N=8) with 1 ms rounds check
the structure of the report, the correctness gate and the FLOP count.
"""
import json
import os

import numpy as np
import pytest

from fastgrad.bench import harness
from fastgrad.bench import grid, grid_peers, grid_report
from fastgrad.__main__ import main as cli_main

compiled = pytest.mark.compiled_only("the grid times fastgrad.compiled's replay")

TINY = dict(rounds=1, round_s=0.0)


def _affinity():
    get = getattr(os, "sched_getaffinity", None)
    return get(0) if get else None


# ---------------------------------------------------------------------------
# FLOP count
# ---------------------------------------------------------------------------

class _FakeProgram:
    def __init__(self, batched, scalar, n_params):
        self._tape = {"batched": {"op": np.array(batched, dtype=np.uint8)},
                      "scalar": {"op": np.array(scalar, dtype=np.uint8)}}
        self.n_params = n_params

    def tape(self):
        return self._tape


def test_flop_count_definition_on_a_synthetic_tape():
    # batched: two OP_FMULADD (fwd 2 each) + three other ops (fwd 1 each):
    # fwd 7, bwd 14 -> 21 per sample; N = 10 -> 210.  Scalar: 4 instructions
    # -> 12.  SGD: 2 x 5 params -> 10.  Total 232.
    prog = _FakeProgram([100, 3, 100, 18, 1], [1, 3, 3, 12], 5)
    assert grid.count_flops(prog, 10) == 232
    assert grid.count_flops(_FakeProgram([], [], 0), 1000) == 0


@compiled
def test_flop_count_of_a_compiled_program():
    from fastgrad import Value
    from fastgrad.compiled import compile
    w, b = Value(0.5), Value(0.25)
    prog = compile(lambda x: [(w * x[0] + x[1] * b).relu()], 2, params=[w, b],
                   penalty=lambda ps: ps[0] * ps[0])
    tape = prog.tape()
    # The recorder today: per sample w*x0 (a product), then + x1*b fused into
    # one OP_FMULADD, then relu; the penalty w*w is one scalar instruction.
    # (If the recorder changes how it records this graph, update the hand
    # count below, not count_flops.)
    assert tape["batched"]["op"].tolist() == [3, 100, 18], tape["batched"]["op"]
    assert tape["scalar"]["op"].size == 1
    # By hand, N = 5 samples:
    #   forward per sample: mul 1 + fmuladd 2 + relu 1 = 4; backward 2 x 4 = 8
    #   batched: 5 x (4 + 8) = 60
    #   scalar tape: 3 x 1 instruction = 3
    #   SGD update: 2 x 2 parameters = 4
    #   total: 60 + 3 + 4 = 67
    assert grid.count_flops(prog, 5) == 67


@compiled
def test_flop_count_of_the_demo_step_grows_linearly_in_n():
    side = grid_peers.FastgradSide(4, 8)
    f1, f2 = grid.count_flops(side.program, 1), grid.count_flops(side.program, 2)
    assert grid.count_flops(side.program, 8) == f1 + 7 * (f2 - f1)
    n_params = 4 * 3 + 4 * 5 + 5
    assert side.program.n_params == n_params


# ---------------------------------------------------------------------------
# the peers agree with fastgrad
# ---------------------------------------------------------------------------

def test_moons_is_seeded_and_labelled():
    X, y = grid_peers.moons(11)
    X2, y2 = grid_peers.moons(11)
    assert X.shape == (11, 2) and y.shape == (11,)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert sorted(set(y.tolist())) == [-1.0, 1.0] and (y > 0).sum() == 6


def test_flatten_unflatten_round_trip_in_micrograd_order():
    sizes = (2, 3, 1)
    flat = np.arange(3 * 3 + 4, dtype=np.float64)
    layers = grid_peers.unflatten(flat, sizes)
    # neuron 0 of layer 0: weights 0, 1 then bias 2
    assert layers[0][0][0].tolist() == [0.0, 1.0] and layers[0][1][0] == 2.0
    assert np.array_equal(grid_peers.flatten(layers), flat)
    with pytest.raises(ValueError):
        grid_peers.unflatten(flat[:-1], sizes)


@compiled
def test_numpy_peer_matches_and_is_timed():
    cell = grid.run_cell(4, 8, ["numpy_mlp"], **TINY)
    assert cell.failures == 0
    (r,) = cell.peers
    assert r.status == "ok" and len(r.times) == 1
    assert r.loss_rel_diff <= grid.LOSS_RTOL and r.param_rel_diff <= grid.PARAM_RTOL
    assert cell.ratio is not None and cell.ratio > 0
    assert cell.best is r and cell.flops > 0 and cell.n_params == 37


@compiled
@pytest.mark.parametrize("peer", ["torch_eager", "jax_jit", "hips_autograd"])
def test_optional_peer_matches(peer, monkeypatch):
    module = {"torch_eager": "torch", "jax_jit": "jax", "hips_autograd": "autograd"}[peer]
    pytest.importorskip(module)
    monkeypatch.setenv("XLA_FLAGS", grid_peers.XLA_SINGLE_THREAD)
    cell = grid.run_cell(4, 8, [peer], **TINY)
    (r,) = cell.peers
    assert r.status == "ok", r.reason
    assert cell.failures == 0 and cell.ratio is not None


@compiled
def test_missing_peer_is_skipped(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jax", None)
    cell = grid.run_cell(4, 8, ["numpy_mlp", "jax_jit"], **TINY)
    r = cell.peers[1]
    assert r.status == "skipped" and r.reason == "not available: jax not installed"
    assert cell.ratio is not None            # NumPy still gives the cell a ratio


# ---------------------------------------------------------------------------
# the correctness gate
# ---------------------------------------------------------------------------

class _Perturbed(grid_peers.Side):
    """A peer that gets the loss or the parameters slightly wrong."""

    def __init__(self, inner, loss=0.0, param=0.0):
        self.inner, self.dloss, self.dparam = inner, loss, param
        self.name = inner.name

    def step(self):
        loss, acc = self.inner.step()
        return loss * (1 + self.dloss), acc

    def params(self):
        p = self.inner.params().copy()
        p[-1] += self.dparam * max(abs(p[-1]), 1.0)
        return p


def _perturb(monkeypatch, **delta):
    real = grid_peers.PEER_FACTORIES["numpy_mlp"]
    monkeypatch.setitem(grid_peers.PEER_FACTORIES, "numpy_mlp",
                        lambda prob: _Perturbed(real(prob), **delta))


@compiled
@pytest.mark.parametrize("delta", [{"loss": 1e-8}, {"param": 1e-7}])
def test_wrong_peer_is_a_failure_not_a_ratio(monkeypatch, delta):
    _perturb(monkeypatch, **delta)
    cell = grid.run_cell(4, 8, ["numpy_mlp"], **TINY)
    (r,) = cell.peers
    assert r.status == "FAILURE"
    assert "differs from fastgrad" in r.reason
    assert ("loss" if "loss" in delta else "parameter after the update") in r.reason
    assert cell.failures == 1 and cell.ratio is None
    assert r.times == [] and cell.fastgrad.times == []      # nothing timed


@compiled
def test_difference_within_tolerance_passes(monkeypatch):
    _perturb(monkeypatch, loss=1e-13, param=1e-12)
    cell = grid.run_cell(4, 8, ["numpy_mlp"], **TINY)
    assert cell.peers[0].status == "ok"
    assert 0 < cell.peers[0].loss_rel_diff < grid.LOSS_RTOL


@compiled
def test_script_exits_non_zero_on_a_wrong_peer(monkeypatch, capsys):
    _perturb(monkeypatch, loss=1e-6)
    code = grid_report.main(["--H", "4", "--N", "8", "--rounds", "1", "--round-ms", "0",
                      "--peers", "numpy_mlp"])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILURE" in out and "differs from fastgrad" in out


@compiled
def test_bench_exits_non_zero_on_a_wrong_peer(monkeypatch, tmp_path):
    _perturb(monkeypatch, loss=1e-6)
    monkeypatch.setitem(__import__("sys").modules, "torch", None)    # keep it quick
    monkeypatch.setitem(__import__("sys").modules, "jax", None)
    out = tmp_path / "b.json"
    assert cli_main(["bench", "--smoke", "--only", "grid", "--json", str(out)]) == 1
    rows = {r["baseline"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["numpy_mlp"]["status"] == "FAILURE"
    assert rows["numpy_mlp"]["speedup"] is None and rows["numpy_mlp"]["fastgrad_s"] is None


@compiled
def test_compile_failure_is_a_skip_with_the_reason(monkeypatch):
    def broken(prob):
        raise RuntimeError("inductor: no C++ compiler")
    monkeypatch.setitem(grid_peers.PEER_FACTORIES, "torch_compile", broken)
    cell = grid.run_cell(4, 8, ["numpy_mlp", "torch_compile"], **TINY)
    r = cell.peers[1]
    assert r.status == "skipped"
    assert r.reason == ("torch.compile failed on this machine: "
                        "RuntimeError: inductor: no C++ compiler")
    assert cell.failures == 0 and cell.ratio is not None


@compiled
def test_a_peer_that_raises_is_a_failure(monkeypatch):
    def broken(prob):
        raise ValueError("shapes")
    monkeypatch.setitem(grid_peers.PEER_FACTORIES, "numpy_mlp", broken)
    cell = grid.run_cell(4, 8, ["numpy_mlp"], **TINY)
    assert cell.peers[0].status == "FAILURE"
    assert "raised ValueError: shapes" in cell.peers[0].reason


# ---------------------------------------------------------------------------
# the script and fastgrad bench
# ---------------------------------------------------------------------------

@compiled
def test_script_smoke_run_writes_report_json_and_heatmap(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    before = _affinity()
    js, png = tmp_path / "g.json", tmp_path / "g.png"
    code = grid_report.main(["--H", "4,6", "--N", "8", "--rounds", "2", "--round-ms", "1",
                      "--peers", "numpy_mlp", "--json", str(js), "--plot", str(png),
                      "--peak-gflops", "50"])
    assert code == 0
    assert _affinity() == before               # the CPU binding is undone
    out = capsys.readouterr().out
    assert "| H \\ N | 8 |" in out
    assert "| 4 | " in out and "| 6 | " in out
    assert "demo cell (H=16, N=100): not in this grid" in out
    doc = json.loads(js.read_text())
    assert doc["failures"] == 0 and doc["rounds"] == 2
    assert [(c["H"], c["N"]) for c in doc["cells"]] == [(4, 8), (6, 8)]
    for c in doc["cells"]:
        assert c["flops"] > 0 and c["ratio"] > 0 and c["fastgrad_gflops"] > 0
        assert c["best_peer"] == "numpy_mlp"
        assert [s["name"] for s in c["sides"]] == ["fastgrad", "numpy_mlp"]
        assert all(len(s["times"]) == 2 for s in c["sides"])
    assert png.stat().st_size > 0


@compiled
@pytest.mark.parametrize("given, expected", [("2", 2), ("all", None)])
def test_script_threads_mode_gives_fastgrad_num_threads_and_frees_the_peers(
        given, expected, monkeypatch, tmp_path, capsys):
    seen = []
    real = grid.FastgradSide

    def side(H, N, num_threads=1):
        seen.append(num_threads)
        s = real(H, N, num_threads)
        seen.append(s._step.num_threads)     # what make_demo_step was given
        return s

    monkeypatch.setattr(grid, "FastgradSide", side)
    before = _affinity()
    js = tmp_path / "t.json"
    code = grid_report.main(["--H", "4", "--N", "8", "--rounds", "2", "--round-ms", "0",
                             "--peers", "numpy_mlp", "--json", str(js), "--threads", given])
    assert code == 0
    assert _affinity() == before
    assert grid_peers.ONE_THREAD                 # the peers' policy is restored
    ncpu = len(before) if before is not None else (os.cpu_count() or 1)
    assert seen == [expected, expected if expected is not None else ncpu]
    out = capsys.readouterr().out
    assert "threads mode" in out and "no binding" in out
    assert f"fastgrad num_threads={given if expected else f'None ({ncpu})'}" in out
    assert "one per side" not in out
    assert "fastgrad CPU time / best peer's CPU time per step" in out
    doc = json.loads(js.read_text())
    assert doc["threads_mode"] is True and doc["num_threads"] == expected
    (c,) = doc["cells"]
    assert c["failures"] == 0 and c["cpu_ratio"] > 0
    assert c["fastgrad_cpu_s"] > 0 and c["best_peer_cpu_s"] > 0
    assert all(len(s["cpu_times"]) == 2 for s in c["sides"])


@compiled
def test_script_one_thread_mode_is_the_default(tmp_path, capsys):
    js = tmp_path / "o.json"
    code = grid_report.main(["--H", "4", "--N", "8", "--rounds", "1", "--round-ms", "0",
                             "--peers", "numpy_mlp", "--json", str(js)])
    assert code == 0
    out = capsys.readouterr().out
    assert "threads: one per side" in out and "threads mode" not in out
    doc = json.loads(js.read_text())
    assert doc["threads_mode"] is False and doc["num_threads"] == 1


def test_threads_mode_leaves_torch_and_jax_thread_counts_alone(monkeypatch):
    calls = []

    class FakeTorch:
        @staticmethod
        def set_num_threads(n):
            calls.append(n)

    monkeypatch.setattr(harness, "require", lambda name, *a, **k: FakeTorch)
    assert grid_peers._torch() is FakeTorch and calls == [1]
    with grid.default_threads(2) as text:
        assert not grid_peers.ONE_THREAD and "num_threads=2" in text
        assert grid_peers._torch() is FakeTorch and calls == [1]   # not called again
    assert grid_peers.ONE_THREAD


@pytest.mark.parametrize("threads", [None, "2"])
def test_script_sets_single_thread_blas_only_without_threads(threads, tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = tmp_path / "probe.py"
    # run the script's preamble (not the grid): import it as a module with
    # the given argv and report the environment it leaves
    probe.write_text(
        "import os, runpy, sys\n"
        f"sys.argv = ['bench_grid.py'] + {(['--threads', threads] if threads else [])!r}\n"
        f"runpy.run_path({os.path.join(root, 'benchmarks', 'bench_grid.py')!r}, "
        "run_name='probe')\n"
        "print(os.environ.get('OPENBLAS_NUM_THREADS'), "
        "'xla_cpu_multi_thread_eigen' in os.environ.get('XLA_FLAGS', ''))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "XLA_FLAGS")}
    res = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == (["None", "False"] if threads else ["1", "True"])


@pytest.mark.parametrize("args", [["--H", "0"], ["--N", "x"], ["--peers", "bogus"],
                                  ["--rounds", "0"], ["--threads", "0"],
                                  ["--threads", "x"]])
def test_script_bad_arguments(args, capsys):
    with pytest.raises(SystemExit) as exc:
        grid_report.main(args)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bench_lists_the_grid(capsys):
    assert cli_main(["bench", "--list", "--only", "grid"]) == 0
    assert "grid" in capsys.readouterr().out
    pairs = grid.plan("smoke")
    assert {p.baseline for p in pairs} == set(grid_peers.PEERS)
    assert {(p.params["H"], p.params["N"]) for p in grid.plan("full")} == {
        (h, n) for h in grid.DEFAULT_H for n in grid.DEFAULT_N}


@compiled
def test_bench_smoke_grid_rows_and_heatmap(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    before = _affinity()
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    code = cli_main(["bench", "--smoke", "--only", "grid", "--json", str(js),
                     "--plot", str(png)])
    assert code == 0
    assert _affinity() == before
    doc = json.loads(js.read_text())
    rows = {r["baseline"]: r for r in doc["rows"]}
    assert set(rows) == set(grid_peers.PEERS)
    r = rows["numpy_mlp"]
    assert r["status"] == "ok" and r["workload"] == "grid" and r["variant"] == "H=4 N=8"
    assert r["speedup"] > 0 and r["fastgrad_s"] > 0 and r["max_rel_diff"] < 1e-9
    assert r["grid"]["flops"] > 0 and r["grid"]["ratio_to_best"] > 0
    assert rows["torch_compile"]["status"] == "skipped"
    assert rows["torch_compile"]["reason"].startswith("not available:")
    (cell,) = doc["grid"]
    assert (cell["H"], cell["N"]) == (4, 8) and cell["failures"] == 0
    out = capsys.readouterr().out
    assert "| H \\ N | 8 |" in out and "demo cell" in out
    assert png.stat().st_size > 0                   # only the grid ran: the heatmap


# ---------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------

def _cell(H, N, fg_s, peer_s, status="ok"):
    fg = grid.SideResult("fastgrad", times=[fg_s])
    peer = grid.SideResult("numpy_mlp", status=status, times=[peer_s] if status == "ok" else [])
    return grid.CellResult(H, N, fg, [peer], flops=1000)


def test_ratio_table_uses_the_issue_layout():
    cells = [_cell(16, 100, 1.0, 2.0), _cell(16, 1000, 4.8, 1.0),
             _cell(32, 100, 1.0, 1.0, status="FAILURE"), _cell(32, 1000, 1.0, 0.05)]
    text = grid_report.ratio_table(cells)
    assert text.splitlines() == [
        "| H \\ N | 100 | 1,000 |",
        "|---|---|---|",
        "| 16 | **0.50x** (wins) | 4.80x |",
        "| 32 | FAILURE | 20.0x |",
    ]


def test_demo_line_reports_the_flop_bound_ratio():
    c = _cell(16, 100, 2e-5, 1e-5)
    c.flops = 126_000
    line = grid_report.demo_line([c], 126.0)
    assert "126,000 FLOPs" in line and "1 us" in line
    assert "20.0x the FLOP-bound time" in line and "measured" not in line


def test_demo_line_uses_the_measured_peak_by_default():
    pytest.importorskip("fastgrad._replay")
    from fastgrad import _replay
    peak = grid.measured_peak_gflops()
    # positive, and well under 64 FLOPs per cycle at 6 GHz; no lower bound
    # from the hardware: the sanitizer build runs the loop unoptimised
    # (0.92 GFLOP/s under ASan here, 44 in the normal build)
    assert 0.0 < peak <= 400.0
    c = _cell(16, 100, 2e-5, 1e-5)
    c.flops = 126_000
    line = grid_report.demo_line([c])
    assert f"at {peak:.3g} GFLOP/s" in line
    assert f"measured mul+add peak, {_replay._isa()} vectors" in line


def test_heatmap_with_missing_cells(tmp_path):
    pytest.importorskip("matplotlib")
    cells = [_cell(16, 100, 1.0, 2.0), _cell(16, 1000, 1.0, 1.0, status="FAILURE"),
             _cell(64, 100, 9.0, 1.0)]
    path = tmp_path / "h.png"
    grid_report.write_heatmap(cells, str(path), "test")
    assert path.stat().st_size > 0


def test_check_close_names_the_first_bad_item():
    assert grid.check_close("p", [1.0, 2.0], [1.0, 2.0], 1e-9, 1e-12) == 0.0
    with pytest.raises(harness.Mismatch, match="p item 1 of 3"):
        grid.check_close("p", [1.0, 2.0, 3.0], [1.0, 2.1, 3.0], 1e-9, 1e-12)
    with pytest.raises(harness.Mismatch, match="item 0"):
        grid.check_close("p", [float("nan")], [1.0], 1e-9, 1e-12)
    with pytest.raises(harness.Mismatch, match="2 numbers, the peer 1"):
        grid.check_close("p", [1.0, 2.0], [1.0], 1e-9, 1e-12)
