"""The H x N benchmark grid (issue 13): fastgrad compiled against its array peers.

Shared by ``benchmarks/bench_grid.py`` (the standalone script; its options
are :func:`fastgrad.bench.grid_report.main`'s) and ``fastgrad bench`` (the
``grid`` workload: a reduced grid in ``--quick``, the full one in ``--full``,
one tiny cell in ``--smoke``).
Private: no public API.  The problem and the peers are in
:mod:`fastgrad.bench.grid_peers`, the report and the script in
:mod:`fastgrad.bench.grid_report`.

Workload
--------
One cell is a pair (H, N): a full-batch training step of
``fastgrad.nn.MLP(2, [H, H, 1])`` (weights drawn after ``random.seed(1337)``)
on N two-moons points (:func:`moons`, seeded NumPy; labels -1.0/+1.0)::

    loss = mean over rows of relu(1 - y * score) + 1e-4 * sum(p * p)
    p -= lr * dloss/dp            (SGD, lr = 0.05)

The fastgrad side is exactly ``fastgrad.compiled.make_demo_step(model)``,
timed as ``step(X, y, lr)``; it returns ``(loss, accuracy)``, so every peer
computes the accuracy of its scores too (the same work on each side).

Peers, each starting from the weights copied out of the fastgrad model, in
float64, on one thread:

* ``numpy_mlp``: hand-written NumPy forward and backward (``@`` matmuls,
  ``np.maximum`` relu, masks for its backward) -- always;
* ``torch_eager``: ``torch.nn.Sequential`` of ``Linear``/``ReLU``,
  ``torch.optim.SGD``, ``torch.set_num_threads(1)`` -- when torch is
  installed;
* ``torch_compile``: ``torch.compile`` of that step function (zero_grad,
  forward, loss, backward, ``opt.step()``); its compile happens in the first
  call, which is the checked step, never a timed one.  If torch.compile fails
  on the machine, a skipped entry with the reason;
* ``jax_jit``: ``jax.jit`` of the whole step (``value_and_grad`` and the
  update), ``jax_enable_x64`` -- when jax is installed;
* ``hips_autograd``: HIPS ``autograd`` -- only when installed.

Correctness gate
----------------
Before any timing, every peer's first step is compared with fastgrad's first
step: the loss to 1e-10 relative, and every parameter after the update to
1e-9 relative / 1e-12 absolute (``|f - p| <= atol + rtol*|p|``), in
micrograd's ``parameters()`` order (per layer, per neuron: its weights, then
its bias).  A mismatch is a FAILURE entry and a non-zero exit status, never a
ratio.  Each side then keeps training its own copy while it is timed.

Timing
------
Interleaved in one process: each round runs every side in turn (the order
rotates from round to round), one untimed step, then ``k`` timed steps, ``k``
chosen per side so that a round lasts at least ``round_s`` (20 ms); the
figure is the median over the rounds (7 by default) of the per-step time
(``time.perf_counter``).  The process CPU time per step is recorded beside
it (``time.process_time``, median over the rounds; the report's CPU-time
ratio table): on one thread ``cpu/wall`` near 1.0 confirms that the side ran
on one core, and on a busy machine the CPU time is the steadier figure.

One thread: while the grid runs, the main thread is bound to one CPU
(``os.sched_setaffinity``, Linux) and every thread started meanwhile inherits
that binding; NumPy's BLAS is limited to one thread (``threadpoolctl`` when
installed, and ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
=1 set by the script before NumPy is imported); torch runs
``set_num_threads(1)``; and ``XLA_FLAGS`` gets
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` before
jax is first imported.  Those XLA flags alone do not keep jax 0.10's matmuls
on one core (measured here: 1.9 s of CPU per second of wall time), which is
why the CPU binding is there.

Threads mode (``bench_grid.py --threads T``, :func:`default_threads`): no CPU
binding and no limits: every peer runs at its default thread count (NumPy's
BLAS, torch's intra-op threads, XLA's pool), fastgrad with
``make_demo_step(model, num_threads=T)`` (the same bits for every T).  The
ratios then compare the wall time of each side with all the cores it takes;
the CPU-time table shows what that costs.

FLOP count
----------
Counted from the recorded program (``step.program.tape()``), whose batched
tape runs once per sample and whose scalar tape runs once per step:

* forward cost of a per-sample instruction: 2 for a fused multiply-add
  (op code 100, ``OP_FMULADD``), 1 for every other instruction;
* backward cost: 2 x the forward cost;
* step FLOPs = N x sum over the batched tape of (forward + backward cost)
  + 3 x (number of scalar instructions) + 2 x n_params (the SGD update).

GFLOP/s = step FLOPs / step time, for fastgrad and, with the same count, for
the best peer.  The FLOP-bound time of a cell is its FLOPs at this core's
*measured* mul+add peak (:func:`measured_peak_gflops`: independent
multiply-then-add chains in registers with the layer kernels' vectors, no
FMA, as the kernels compute; 44 GFLOP/s on a Zen 3 core with AVX2), or at
``--peak-gflops`` when given.
"""

import contextlib
import dataclasses
import gc
import math
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from fastgrad.bench import harness
from fastgrad.bench.harness import describe_error as _describe
from fastgrad.bench.grid_peers import (
    PEER_FACTORIES, PEER_LABELS, PEERS, Array, FastgradSide, Problem, Side,
)

__all__ = [
    "SideResult", "CellResult", "count_flops", "run_cell", "run_grid", "single_core",
    "check_close", "plan", "make_runner", "mode_grid", "mode_skips", "measured_peak_gflops",
    "default_threads",
]

LOSS_RTOL = 1e-10
PARAM_RTOL = 1e-9
PARAM_ATOL = 1e-12
OP_FMULADD = 100
PEAK_GFLOPS: Optional[float] = None       # None: measured (measured_peak_gflops)
DEMO_CELL = (16, 100)
DEFAULT_H = (16, 32, 64, 128)
DEFAULT_N = (100, 1000, 10000)
ROUND_S = 0.02

# a failure of these peers (on the first, compiling, call) is a skipped entry
_SKIP_ON_ERROR = {"torch_compile": "torch.compile failed on this machine"}

_PEAK: Dict[str, float] = {}


def measured_peak_gflops() -> Optional[float]:
    """This core's mul+add peak in GFLOP/s with the instruction set the
    layer kernels run with (measured once per process, ~0.3 s), or None in
    the pure-Python build."""
    try:
        from fastgrad import _replay
    except ImportError:
        return None
    isa = _replay._isa()
    if isa not in _PEAK:
        _PEAK[isa] = _replay._peak_gflops()
    return _PEAK[isa]


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------

def count_flops(program: Any, n_rows: int) -> int:
    """FLOPs of one training step of ``program`` over ``n_rows`` samples.

    The definition in the module docstring: per-sample forward cost 2 for
    ``OP_FMULADD`` (100) and 1 for any other instruction, backward twice the
    forward; ``n_rows * sum(fwd + bwd)`` over the batched tape, plus 3 per
    scalar instruction, plus 2 per parameter (the SGD update).
    """
    import numpy as np
    tape = program.tape()
    ops = np.asarray(tape["batched"]["op"])
    fwd = int(np.where(ops == OP_FMULADD, 2, 1).sum())
    n_scalar = int(np.asarray(tape["scalar"]["op"]).size)
    return n_rows * 3 * fwd + 3 * n_scalar + 2 * int(program.n_params)


# ---------------------------------------------------------------------------
# one thread
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def single_core() -> Iterator[str]:
    """Bind the main thread to one CPU and NumPy's BLAS to one thread.

    Yields a one-line description of what was done.  Threads started inside
    the block (jax's pool among them) keep the binding; the main thread's
    previous CPU set and the BLAS limits are restored on exit.
    """
    notes = []
    old_cpus: Optional[set[int]] = None
    setaff = getattr(os, "sched_setaffinity", None)
    getaff = getattr(os, "sched_getaffinity", None)
    if setaff is not None and getaff is not None:
        try:
            old_cpus = set(getaff(0))
            cpu = min(old_cpus)
            setaff(0, {cpu})
            notes.append(f"main thread bound to CPU {cpu} (of {len(old_cpus)})")
        except OSError as exc:
            old_cpus = None
            notes.append(f"CPU binding failed ({exc}): sides may use several cores")
    else:
        notes.append("no CPU binding on this platform")
    limiter: Any = None
    try:
        import threadpoolctl
        limiter = threadpoolctl.threadpool_limits(limits=1)
        notes.append("BLAS 1 thread (threadpoolctl)")
    except ImportError:
        blas = os.environ.get("OPENBLAS_NUM_THREADS")
        notes.append(f"BLAS threads: OPENBLAS_NUM_THREADS={blas or 'unset'} "
                     "(threadpoolctl not installed)")
    try:
        yield "; ".join(notes)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        if old_cpus is not None and setaff is not None:
            with contextlib.suppress(OSError):
                setaff(0, old_cpus)


# ---------------------------------------------------------------------------
# running a cell
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def default_threads(num_threads: Optional[int]) -> Iterator[str]:
    """The grid's threads mode: the peers at their default thread counts
    (no binding, no BLAS limit; torch and jax left alone), fastgrad with
    ``num_threads`` (None: every CPU).  Yields a one-line description."""
    from fastgrad.bench import grid_peers
    getaff = getattr(os, "sched_getaffinity", None)
    ncpu = len(getaff(0)) if getaff is not None else (os.cpu_count() or 1)
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    old = grid_peers.ONE_THREAD
    grid_peers.ONE_THREAD = False
    try:
        yield (f"threads mode, {ncpu} CPUs, no binding; peers at their default thread "
               f"counts (OPENBLAS_NUM_THREADS={blas or 'unset'}); fastgrad num_threads="
               f"{num_threads if num_threads is not None else f'None ({ncpu})'}")
    finally:
        grid_peers.ONE_THREAD = old


@dataclasses.dataclass
class SideResult:
    """One side of a cell: its status, its check and its timing."""
    name: str
    status: str = "ok"                  # "ok", "skipped" or "FAILURE"
    reason: Optional[str] = None
    first_s: Optional[float] = None     # the checked first step (compile included)
    loss_rel_diff: Optional[float] = None
    param_rel_diff: Optional[float] = None
    steps_per_round: Optional[int] = None
    times: List[float] = dataclasses.field(default_factory=list)   # per step, per round
    cpu_times: List[float] = dataclasses.field(default_factory=list)   # CPU s per step
    cpu_per_wall: Optional[float] = None

    @property
    def label(self) -> str:
        return PEER_LABELS.get(self.name, self.name)

    @property
    def s(self) -> Optional[float]:
        """Median seconds per step over the rounds."""
        return statistics.median(self.times) if self.times else None

    @property
    def cpu_s(self) -> Optional[float]:
        """Median process CPU seconds per step over the rounds."""
        return statistics.median(self.cpu_times) if self.cpu_times else None

    def as_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(label=self.label, s=self.s, cpu_s=self.cpu_s,
                 min_s=min(self.times) if self.times else None)
        return d


@dataclasses.dataclass
class CellResult:
    """fastgrad and its peers at one (H, N)."""
    H: int
    N: int
    fastgrad: SideResult
    peers: List[SideResult]
    flops: Optional[int] = None
    n_params: Optional[int] = None

    @property
    def best(self) -> Optional[SideResult]:
        """The fastest peer that was checked and timed."""
        ok = [p for p in self.peers if p.status == "ok" and p.s is not None]
        return min(ok, key=lambda p: p.s or 0.0) if ok else None

    @property
    def failures(self) -> int:
        return sum(r.status == "FAILURE" for r in [self.fastgrad] + self.peers)

    @property
    def ratio(self) -> Optional[float]:
        """fastgrad time / best peer time (<= 1.0: fastgrad wins)."""
        best = self.best
        if self.failures or best is None or self.fastgrad.s is None or not best.s:
            return None
        return self.fastgrad.s / best.s

    @property
    def cpu_ratio(self) -> Optional[float]:
        """fastgrad CPU time / the best peer's CPU time per step (the best
        peer by wall time, as in :attr:`ratio`)."""
        best = self.best
        if (self.failures or best is None or self.fastgrad.cpu_s is None
                or not best.cpu_s):
            return None
        return self.fastgrad.cpu_s / best.cpu_s

    def gflops(self, side: Optional[SideResult]) -> Optional[float]:
        if side is None or side.s is None or not self.flops:
            return None
        return self.flops / side.s / 1e9

    def as_dict(self) -> Dict[str, Any]:
        best = self.best
        return {
            "H": self.H, "N": self.N, "flops": self.flops, "n_params": self.n_params,
            "fastgrad_s": self.fastgrad.s, "best_peer": best.name if best else None,
            "best_peer_s": best.s if best else None, "ratio": self.ratio,
            "fastgrad_cpu_s": self.fastgrad.cpu_s,
            "best_peer_cpu_s": best.cpu_s if best else None, "cpu_ratio": self.cpu_ratio,
            "fastgrad_gflops": self.gflops(self.fastgrad),
            "best_peer_gflops": self.gflops(best),
            "failures": self.failures,
            "sides": [r.as_dict() for r in [self.fastgrad] + self.peers],
        }


def check_close(what: str, fast: Any, peer: Any, rtol: float, atol: float) -> float:
    """Check ``|fast - peer| <= atol + rtol*|peer|`` elementwise.

    Returns the largest relative difference; raises :class:`harness.Mismatch`
    naming the first element that fails (or a size mismatch, or a NaN).
    """
    import numpy as np
    f = np.asarray(fast, dtype=np.float64).ravel()
    p = np.asarray(peer, dtype=np.float64).ravel()
    if f.shape != p.shape:
        raise harness.Mismatch(f"{what}: fastgrad has {f.size} numbers, the peer {p.size}")
    diff = np.abs(f - p)
    bad = ~(diff <= atol + rtol * np.abs(p))        # NaN anywhere fails too
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rel = diff[i] / max(abs(p[i]), 1e-300)
        raise harness.Mismatch(f"{what} item {i} of {f.size}: fastgrad {f[i]!r}, peer {p[i]!r} "
                          f"(relative difference {rel:.3g}; tolerance {rtol:g} relative, "
                          f"{atol:g} absolute)")
    scale = np.maximum(np.maximum(np.abs(f), np.abs(p)), atol / rtol if rtol else 1e-300)
    return float((diff / scale).max()) if diff.size else 0.0


def _first_step(side: Side) -> Tuple[float, float, Array, float]:
    t0 = time.perf_counter()
    loss, acc = side.step()
    t = time.perf_counter() - t0
    return loss, acc, side.params(), t


def _steps_per_round(side: Side, round_s: float) -> int:
    """Untimed warm-up steps (>= round_s of them, at least 2); the step count
    that makes a round last at least ``round_s``."""
    clock = time.perf_counter
    n = 0
    t0 = clock()
    while True:
        side.step()
        n += 1
        el = clock() - t0
        if n >= 2 and el >= round_s:
            break
    return max(1, math.ceil(round_s / (el / n)))


def run_cell(H: int, N: int, peers: Sequence[str] = PEERS, rounds: int = 7,
             round_s: float = ROUND_S, skip: Optional[Mapping[str, str]] = None,
             gc_off: bool = False,
             factories: Optional[Mapping[str, Callable[[Problem], Side]]] = None,
             num_threads: Optional[int] = 1) -> CellResult:
    """Check every peer against fastgrad at (H, N), then time them interleaved.

    ``skip`` maps peer names to the reason they are not run; ``factories``
    defaults to :data:`PEER_FACTORIES` (looked up at call time, so tests can
    replace a peer); ``num_threads`` is fastgrad's (``make_demo_step``'s).
    Never raises for a side's failure: it is in the result.
    """
    factories = PEER_FACTORIES if factories is None else factories
    skip = skip or {}
    fg_res = SideResult("fastgrad")
    results = [SideResult(p) for p in peers]
    cell = CellResult(H, N, fg_res, results)
    sides: List[Tuple[Side, SideResult]] = []
    try:
        try:
            fg = FastgradSide(H, N, num_threads)
            f_loss, _, f_params, fg_res.first_s = _first_step(fg)
        except harness.NotAvailable as exc:
            fg_res.status, fg_res.reason = "skipped", str(exc)
        except Exception as exc:
            fg_res.status, fg_res.reason = "FAILURE", f"fastgrad raised {_describe(exc)}"
        if fg_res.status != "ok":
            for r in results:
                r.status, r.reason = "skipped", f"fastgrad: {fg_res.status}"
            return cell
        sides.append((fg, fg_res))
        cell.n_params = len(fg.plist)
        cell.flops = count_flops(fg.program, N)
        for r in results:
            if r.name in skip:
                r.status, r.reason = "skipped", skip[r.name]
                continue
            if r.name not in factories:
                r.status, r.reason = "FAILURE", f"no peer called {r.name!r}"
                continue
            side: Optional[Side] = None
            try:
                side = factories[r.name](fg.problem)
                p_loss, _, p_params, r.first_s = _first_step(side)
            except harness.NotAvailable as exc:
                r.status, r.reason = "skipped", str(exc)
            except Exception as exc:
                if r.name in _SKIP_ON_ERROR:
                    r.status = "skipped"
                    r.reason = f"{_SKIP_ON_ERROR[r.name]}: {_describe(exc)}"
                else:
                    r.status, r.reason = "FAILURE", f"{r.label} raised {_describe(exc)}"
            if r.status != "ok" or side is None:
                if side is not None:
                    side.close()
                continue
            try:
                r.loss_rel_diff = check_close("loss", f_loss, p_loss, LOSS_RTOL, 0.0)
                r.param_rel_diff = check_close("parameter after the update", f_params,
                                               p_params, PARAM_RTOL, PARAM_ATOL)
            except harness.Mismatch as exc:
                r.status = "FAILURE"
                r.reason = f"{r.label} differs from fastgrad: {exc}"
                side.close()
                continue
            sides.append((side, r))
        if cell.failures:
            return cell                 # no timing for a cell with a wrong answer
        _time_sides(sides, rounds, round_s, gc_off)
    finally:
        for side, _ in sides:
            side.close()
        sides.clear()
        gc.collect()
    return cell


def _time_sides(sides: Sequence[Tuple[Side, SideResult]], rounds: int, round_s: float,
                gc_off: bool) -> None:
    """Interleaved rounds; fills each SideResult's times and cpu_per_wall."""
    for side, r in sides:
        r.steps_per_round = _steps_per_round(side, round_s)
    wall = [0.0] * len(sides)
    cpu = [0.0] * len(sides)
    clock, cpu_clock = time.perf_counter, time.process_time
    was_enabled = gc.isenabled()
    if gc_off:
        gc.disable()
    try:
        for rnd in range(rounds):
            order = list(range(len(sides)))
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for j in order:
                side, r = sides[j]
                k = r.steps_per_round or 1
                side.step()                 # untimed: back to a warm state
                c0 = cpu_clock()
                t0 = clock()
                for _ in range(k):
                    side.step()
                t1 = clock()
                c1 = cpu_clock()
                r.times.append((t1 - t0) / k)
                r.cpu_times.append((c1 - c0) / k)
                wall[j] += t1 - t0
                cpu[j] += c1 - c0
    finally:
        if gc_off and was_enabled:
            gc.enable()
    for j, (_, r) in enumerate(sides):
        r.cpu_per_wall = cpu[j] / wall[j] if wall[j] > 0 else None


def run_grid(Hs: Sequence[int], Ns: Sequence[int], peers: Sequence[str] = PEERS,
             rounds: int = 7, round_s: float = ROUND_S,
             skip: Optional[Mapping[str, str]] = None,
             progress: Optional[Callable[[int, int, int, int, Optional[CellResult]], None]]
             = None, num_threads: Optional[int] = 1) -> List[CellResult]:
    """Every cell of Hs x Ns (H-major), each in a fresh gc state
    (``num_threads``: fastgrad's, see :func:`run_cell`).

    ``progress(i, total, H, N, result)`` is called before (result None) and
    after each cell.
    """
    cells = []
    total = len(Hs) * len(Ns)
    i = 0
    for H in Hs:
        for N in Ns:
            i += 1
            if progress:
                progress(i, total, H, N, None)
            with harness.isolated_gc():
                cell = run_cell(H, N, peers, rounds, round_s, skip, num_threads=num_threads)
            cells.append(cell)
            if progress:
                progress(i, total, H, N, cell)
    return cells


# ---------------------------------------------------------------------------
# fastgrad bench: plan and runners
# ---------------------------------------------------------------------------

def mode_grid(mode: str) -> Tuple[Tuple[int, ...], Tuple[int, ...], int, float]:
    """(Hs, Ns, rounds, round seconds) of a ``fastgrad bench`` mode."""
    if mode == "smoke":
        return (4,), (8,), 3, 0.001
    if mode == "quick":
        return (16, 64), (100, 1000), 5, ROUND_S
    return DEFAULT_H, DEFAULT_N, 7, ROUND_S


def mode_skips(mode: str) -> Dict[str, str]:
    """Peers a mode leaves out, with the reason (``not available: ...``)."""
    if mode == "smoke":
        return {"torch_compile": "not available: torch.compile is not run in --smoke "
                                 "mode (its compile takes seconds per cell)"}
    return {}


def plan(mode: str) -> List[harness.Pair]:
    """One Pair per (cell, peer) for ``fastgrad bench`` (baseline = the peer)."""
    Hs, Ns, rounds, _ = mode_grid(mode)
    return [harness.Pair(peer, {"H": H, "N": N}, label=f"H={H} N={N}", rounds=rounds,
                    fg_rounds=rounds)
            for H in Hs for N in Ns for peer in PEERS]


def make_runner(impl: str, params: Dict[str, Any]) -> harness.Runner:
    """A :class:`harness.Runner` of one side of a cell (``impl`` "fastgrad" or a peer).

    ``fn()`` is one step; the result checked is ``[loss, parameters]``.
    (``fastgrad bench`` runs the grid through :func:`run_cell` instead, which
    checks all the peers of a cell and times them interleaved.)
    """
    H, N = int(params["H"]), int(params["N"])
    fg = FastgradSide(H, N)
    side: Side = fg
    if impl != "fastgrad":
        if impl not in PEER_FACTORIES:
            raise harness.NotAvailable(f"not available: no grid peer called {impl}")
        side = PEER_FACTORIES[impl](fg.problem)
        fg.close()

    def result(out: Tuple[float, float]) -> Any:
        return [out[0], side.params().tolist()]

    return harness.Runner(side.step, result=result, close=side.close)
