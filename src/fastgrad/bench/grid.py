"""The H x N benchmark grid (issue 13): fastgrad compiled against its array peers.

Shared by ``benchmarks/bench_grid.py`` (the standalone script; its options
are :func:`main`'s) and ``fastgrad bench`` (the ``grid`` workload: a reduced
grid in ``--quick``, the full one in ``--full``, one tiny cell in ``--smoke``).
Private: no public API.

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
(``time.perf_counter``).  The process CPU time of each side's rounds is
recorded too: ``cpu/wall`` near 1.0 confirms that the side ran on one core.

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
the best peer.  The FLOP-bound time of a cell is its FLOPs at the machine's
peak (``--peak-gflops``, default 126: the issue's figure for this machine's
single-core AVX-512 float64 peak).
"""
import argparse
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import random
import statistics
import subprocess
import sys
import time
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

from fastgrad.bench import workloads as bc

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]
else:
    Array = Any

__all__ = [
    "PEERS", "PEER_LABELS", "PEER_FACTORIES", "Problem", "Side", "SideResult",
    "CellResult", "moons", "count_flops", "run_cell", "run_grid", "single_core",
    "plan", "make_runner", "format_report", "write_heatmap", "main",
]

SEED = 1337             # random.seed of the fastgrad model's weights
DATA_SEED = 0           # NumPy seed of the moons
NOISE = 0.1
LR = 0.05
ALPHA = 1e-4
LOSS_RTOL = 1e-10
PARAM_RTOL = 1e-9
PARAM_ATOL = 1e-12
OP_FMULADD = 100
PEAK_GFLOPS = 126.0
DEMO_CELL = (16, 100)
DEFAULT_H = (16, 32, 64, 128)
DEFAULT_N = (100, 1000, 10000)
ROUND_S = 0.02
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

PEERS = ("numpy_mlp", "torch_eager", "torch_compile", "jax_jit", "hips_autograd")
PEER_LABELS = {
    "fastgrad": "fastgrad compiled",
    "numpy_mlp": "NumPy fwd/bwd",
    "torch_eager": "torch eager",
    "torch_compile": "torch.compile",
    "jax_jit": "jax.jit",
    "hips_autograd": "HIPS autograd",
}
# a failure of these peers (on the first, compiling, call) is a skipped entry
_SKIP_ON_ERROR = {"torch_compile": "torch.compile failed on this machine"}


# ---------------------------------------------------------------------------
# the problem: data, weights, parameter layout
# ---------------------------------------------------------------------------

def moons(n: int, noise: float = NOISE, seed: int = DATA_SEED) -> Tuple[Array, Array]:
    """Two interleaved half circles, seeded (sklearn's ``make_moons`` shape).

    Returns ``(X, y)``: X of shape (n, 2), y of shape (n,) with labels
    -1.0 (upper moon) and +1.0 (lower moon), shuffled; float64, C-contiguous.
    """
    import numpy as np
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, math.pi, n_out)
    t_in = np.linspace(0.0, math.pi, n_in)
    X = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
                        np.stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1)])
    y = np.concatenate([-np.ones(n_out), np.ones(n_in)])
    X += rng.normal(0.0, noise, X.shape)
    perm = rng.permutation(n)
    return np.ascontiguousarray(X[perm]), np.ascontiguousarray(y[perm])


@dataclasses.dataclass
class Problem:
    """One cell's inputs: the data, the starting weights and the layout.

    ``weights`` is flat, in micrograd's ``parameters()`` order; ``sizes`` is
    ``(2, H, H, 1)``.
    """
    H: int
    N: int
    X: Array
    y: Array
    weights: Array
    lr: float = LR
    alpha: float = ALPHA

    @property
    def sizes(self) -> Tuple[int, ...]:
        return (2, self.H, self.H, 1)

    def layers(self) -> List[Tuple[Array, Array]]:
        """Fresh copies of ``(W, b)`` per layer, W of shape (out, in)."""
        return unflatten(self.weights, self.sizes)


def unflatten(flat: Array, sizes: Sequence[int]) -> List[Tuple[Array, Array]]:
    """micrograd order (per neuron: weights, bias) -> ``[(W, b), ...]`` copies."""
    out = []
    pos = 0
    for nin, nout in zip(sizes[:-1], sizes[1:]):
        block = flat[pos:pos + nout * (nin + 1)].reshape(nout, nin + 1)
        out.append((block[:, :nin].copy(), block[:, nin].copy()))
        pos += nout * (nin + 1)
    if pos != len(flat):
        raise ValueError(f"{len(flat)} weights for layer sizes {tuple(sizes)} "
                         f"(expected {pos})")
    return out


def flatten(layers: Sequence[Tuple[Any, Any]]) -> Array:
    """``[(W, b), ...]`` (array-likes) -> one float64 vector in micrograd order."""
    import numpy as np
    parts = []
    for W, b in layers:
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1, 1)
        parts.append(np.hstack([W, b]).ravel())
    return np.concatenate(parts)


# ---------------------------------------------------------------------------
# the sides
# ---------------------------------------------------------------------------

class Side:
    """One implementation training its own copy of the model."""

    name = "?"

    def step(self) -> Tuple[float, float]:
        """One training step; returns ``(loss, accuracy)`` before the update."""
        raise NotImplementedError

    def params(self) -> Array:
        """The current parameters, flat, in micrograd's order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the side holds (optional)."""


class FastgradSide(Side):
    """``fastgrad.compiled.make_demo_step`` on ``MLP(2, [H, H, 1])``."""

    name = "fastgrad"

    def __init__(self, H: int, N: int) -> None:
        compiled = bc.require("fastgrad.compiled", ("make_demo_step",))
        from fastgrad.nn import MLP
        state = random.getstate()          # leave the caller's random state alone
        try:
            random.seed(SEED)
            self.model = MLP(2, [H, H, 1])
        finally:
            random.setstate(state)
        self.plist = self.model.parameters()
        X, y = moons(N)
        self.problem = Problem(H, N, X, y, self.params())
        self._step = compiled.make_demo_step(self.model, alpha=ALPHA)
        self.program: Any = self._step.program
        self._X, self._y, self._lr = X, y, LR

    def step(self) -> Tuple[float, float]:
        loss, acc = self._step(self._X, self._y, self._lr)
        return loss, acc

    def params(self) -> Array:
        import numpy as np
        return np.array([p.data for p in self.plist], dtype=np.float64)


class NumpySide(Side):
    """Hand-written NumPy forward and backward, in-place SGD."""

    name = "numpy_mlp"

    def __init__(self, prob: Problem) -> None:
        self.layers = prob.layers()
        self.X, self.y = prob.X, prob.y
        self.lr, self.alpha = prob.lr, prob.alpha

    def step(self) -> Tuple[float, float]:
        import numpy as np
        X, y, layers = self.X, self.y, self.layers
        last = len(layers) - 1
        acts = [X]                      # the input of each layer
        h = X
        for i, (W, b) in enumerate(layers):
            z = h @ W.T
            z += b
            h = np.maximum(z, 0.0) if i < last else z
            acts.append(h)
        s = h[:, 0]
        n = y.shape[0]
        margin = 1.0 - y * s
        loss = np.maximum(margin, 0.0).sum() / n
        loss += self.alpha * sum(float((W * W).sum() + (b * b).sum()) for W, b in layers)
        acc = float(np.mean((y > 0) == (s > 0)))
        # backward: g = dloss/d(output of layer i), then the update
        g = np.where(margin > 0, -y / n, 0.0)[:, None]
        two_alpha = 2.0 * self.alpha
        for i in range(last, -1, -1):
            W, b = layers[i]
            gW = g.T @ acts[i]
            gb = g.sum(axis=0)
            if i > 0:
                g = g @ W                   # before W changes
                g *= acts[i] > 0            # relu: pass where its output > 0
            gW += two_alpha * W
            gb += two_alpha * b
            W -= self.lr * gW
            b -= self.lr * gb
        return float(loss), acc

    def params(self) -> Array:
        return flatten(self.layers)


def _torch() -> Any:
    torch = bc.require("torch")
    torch.set_num_threads(1)
    return torch


class TorchSide(Side):
    """``torch.nn`` Sequential + ``torch.optim.SGD``; ``compiled``: torch.compile."""

    def __init__(self, prob: Problem, compiled: bool = False) -> None:
        torch = _torch()
        self.name = "torch_compile" if compiled else "torch_eager"
        mods: List[Any] = []
        layers = prob.layers()
        for i, (W, b) in enumerate(layers):
            lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if i != len(layers) - 1:
                mods.append(torch.nn.ReLU())
        self.model = model = torch.nn.Sequential(*mods)
        self.linears = [m for m in mods if isinstance(m, torch.nn.Linear)]
        plist = list(model.parameters())
        opt = torch.optim.SGD(plist, lr=prob.lr)
        alpha = prob.alpha
        self.X = torch.from_numpy(prob.X.copy())
        self.y = torch.from_numpy(prob.y.copy())

        def train_step(X: Any, y: Any) -> Tuple[Any, Any]:
            opt.zero_grad()
            s = model(X).squeeze(1)
            loss = torch.relu(1.0 - y * s).mean() + alpha * sum((p * p).sum() for p in plist)
            loss.backward()
            opt.step()
            acc = ((y > 0) == (s > 0)).to(torch.float64).mean()
            return loss.detach(), acc

        if compiled:
            # a fresh compile per cell: new modules would be recompiles of the
            # same code, and past the recompile limit dynamo silently runs eager
            torch._dynamo.reset()
            _quiet_dynamo_profiler_note()
            self._fn = torch.compile(train_step)
        else:
            self._fn = train_step
        self._torch = torch

    def step(self) -> Tuple[float, float]:
        loss, acc = self._fn(self.X, self.y)
        return float(loss.item()), float(acc.item())

    def params(self) -> Array:
        with self._torch.no_grad():
            return flatten([(lin.weight.numpy(), lin.bias.numpy()) for lin in self.linears])

    def close(self) -> None:
        if self.name == "torch_compile":
            self._torch._dynamo.reset()


def _drop_profiler_note(record: Any) -> bool:
    return not str(record.msg).startswith("Profiler record function")


def _quiet_dynamo_profiler_note() -> None:
    """Drop dynamo's one-line note that it ignores the profiler hooks of
    ``opt.step()`` (a warning on stderr, about profiling, not the results)."""
    import logging
    log = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if _drop_profiler_note not in log.filters:
        log.addFilter(_drop_profiler_note)


def xla_flags_set() -> bool:
    """Whether ``XLA_FLAGS`` holds the single-thread flags (adds them if jax
    is not imported yet; returns False when it is too late)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen=false" in flags:
        return True
    if "jax" in sys.modules:
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_SINGLE_THREAD).strip()
    return True


def _jax() -> Any:
    xla_flags_set()
    jax = bc.require("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


class JaxSide(Side):
    """``jax.jit`` of the whole step: ``value_and_grad`` and the SGD update."""

    name = "jax_jit"

    def __init__(self, prob: Problem) -> None:
        jax = _jax()
        jnp = jax.numpy
        self.p = [(jnp.asarray(W), jnp.asarray(b)) for W, b in prob.layers()]
        last = len(self.p) - 1
        alpha, lr = prob.alpha, prob.lr

        def loss_fn(params: Any, X: Any, y: Any) -> Tuple[Any, Any]:
            h = X
            for i, (W, b) in enumerate(params):
                h = h @ W.T + b
                if i < last:
                    h = jax.nn.relu(h)
            s = h[:, 0]
            loss = jnp.mean(jax.nn.relu(1.0 - y * s)) + alpha * sum(
                jnp.sum(W * W) + jnp.sum(b * b) for W, b in params)
            return loss, jnp.mean((y > 0) == (s > 0))

        def train_step(params: Any, X: Any, y: Any) -> Tuple[Any, Any, Any]:
            (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, X, y)
            new = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
            return new, loss, acc

        self._fn = jax.jit(train_step)
        self.X = jnp.asarray(prob.X)
        self.y = jnp.asarray(prob.y)

    def step(self) -> Tuple[float, float]:
        self.p, loss, acc = self._fn(self.p, self.X, self.y)
        return float(loss), float(acc)

    def params(self) -> Array:
        import numpy as np
        return flatten([(np.asarray(W), np.asarray(b)) for W, b in self.p])


class AutogradSide(Side):
    """HIPS ``autograd``: ``value_and_grad`` of the NumPy-style loss."""

    name = "hips_autograd"

    def __init__(self, prob: Problem) -> None:
        ag = bc.require("autograd")
        anp = bc.require("autograd.numpy")
        self.layers = [[W, b] for W, b in prob.layers()]
        self.X, self.y = prob.X, prob.y
        self.lr = prob.lr
        last = len(self.layers) - 1
        alpha = prob.alpha
        scores: Dict[str, Any] = {}

        def loss_fn(flat: Any) -> Any:
            h = self.X
            for i in range(last + 1):
                W, b = flat[2 * i], flat[2 * i + 1]
                z = anp.dot(h, W.T) + b
                h = anp.where(z > 0, z, 0.0) if i < last else z
            s = h[:, 0]
            scores["s"] = getattr(s, "_value", s)        # unboxed, for the accuracy
            m = 1.0 - self.y * s
            reg = 0.0
            for p in flat:
                reg = reg + anp.sum(p * p)
            return anp.mean(anp.where(m > 0, m, 0.0)) + alpha * reg

        self._vg = ag.value_and_grad(loss_fn)
        self._scores = scores

    def step(self) -> Tuple[float, float]:
        import numpy as np
        flat = [a for pair in self.layers for a in pair]
        loss, grads = self._vg(flat)
        s = self._scores["s"]
        acc = float(np.mean((self.y > 0) == (s > 0)))
        for p, g in zip(flat, grads):
            p -= self.lr * g
        return float(loss), acc

    def params(self) -> Array:
        return flatten([(W, b) for W, b in self.layers])


PEER_FACTORIES: Dict[str, Callable[[Problem], Side]] = {
    "numpy_mlp": NumpySide,
    "torch_eager": lambda prob: TorchSide(prob, compiled=False),
    "torch_compile": lambda prob: TorchSide(prob, compiled=True),
    "jax_jit": JaxSide,
    "hips_autograd": AutogradSide,
}


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
    cpu_per_wall: Optional[float] = None

    @property
    def label(self) -> str:
        return PEER_LABELS.get(self.name, self.name)

    @property
    def s(self) -> Optional[float]:
        """Median seconds per step over the rounds."""
        return statistics.median(self.times) if self.times else None

    def as_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(label=self.label, s=self.s,
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
            "fastgrad_gflops": self.gflops(self.fastgrad),
            "best_peer_gflops": self.gflops(best),
            "failures": self.failures,
            "sides": [r.as_dict() for r in [self.fastgrad] + self.peers],
        }


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) < 200 else line[:197] + "..."


def check_close(what: str, fast: Any, peer: Any, rtol: float, atol: float) -> float:
    """Check ``|fast - peer| <= atol + rtol*|peer|`` elementwise.

    Returns the largest relative difference; raises :class:`bc.Mismatch`
    naming the first element that fails (or a size mismatch, or a NaN).
    """
    import numpy as np
    f = np.asarray(fast, dtype=np.float64).ravel()
    p = np.asarray(peer, dtype=np.float64).ravel()
    if f.shape != p.shape:
        raise bc.Mismatch(f"{what}: fastgrad has {f.size} numbers, the peer {p.size}")
    diff = np.abs(f - p)
    bad = ~(diff <= atol + rtol * np.abs(p))        # NaN anywhere fails too
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rel = diff[i] / max(abs(p[i]), 1e-300)
        raise bc.Mismatch(f"{what} item {i} of {f.size}: fastgrad {f[i]!r}, peer {p[i]!r} "
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
             ) -> CellResult:
    """Check every peer against fastgrad at (H, N), then time them interleaved.

    ``skip`` maps peer names to the reason they are not run; ``factories``
    defaults to :data:`PEER_FACTORIES` (looked up at call time, so tests can
    replace a peer).  Never raises for a side's failure: it is in the result.
    """
    factories = PEER_FACTORIES if factories is None else factories
    skip = skip or {}
    fg_res = SideResult("fastgrad")
    results = [SideResult(p) for p in peers]
    cell = CellResult(H, N, fg_res, results)
    sides: List[Tuple[Side, SideResult]] = []
    try:
        try:
            fg = FastgradSide(H, N)
            f_loss, _, f_params, fg_res.first_s = _first_step(fg)
        except bc.NotAvailable as exc:
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
            except bc.NotAvailable as exc:
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
            except bc.Mismatch as exc:
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
             = None) -> List[CellResult]:
    """Every cell of Hs x Ns (H-major), each in a fresh gc state.

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
            with bc.isolated_gc():
                cell = run_cell(H, N, peers, rounds, round_s, skip)
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


def plan(mode: str) -> List[bc.Pair]:
    """One Pair per (cell, peer) for ``fastgrad bench`` (baseline = the peer)."""
    Hs, Ns, rounds, _ = mode_grid(mode)
    return [bc.Pair(peer, {"H": H, "N": N}, label=f"H={H} N={N}", rounds=rounds,
                    fg_rounds=rounds)
            for H in Hs for N in Ns for peer in PEERS]


def make_runner(impl: str, params: Dict[str, Any]) -> bc.Runner:
    """A :class:`bc.Runner` of one side of a cell (``impl`` "fastgrad" or a peer).

    ``fn()`` is one step; the result checked is ``[loss, parameters]``.
    (``fastgrad bench`` runs the grid through :func:`run_cell` instead, which
    checks all the peers of a cell and times them interleaved.)
    """
    H, N = int(params["H"]), int(params["N"])
    fg = FastgradSide(H, N)
    side: Side = fg
    if impl != "fastgrad":
        if impl not in PEER_FACTORIES:
            raise bc.NotAvailable(f"not available: no grid peer called {impl}")
        side = PEER_FACTORIES[impl](fg.problem)
        fg.close()

    def result(out: Tuple[float, float]) -> Any:
        return [out[0], side.params().tolist()]

    return bc.Runner(side.step, result=result, close=side.close)


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

def fmt_time(s: Optional[float]) -> str:
    """``36.9 us``, ``4.01 ms``, ``1.20 s`` (3 significant digits)."""
    if s is None:
        return "-"
    if s >= 0.9995:
        return f"{s:.2f} s"
    if s >= 0.9995e-3:                  # (999.6 us would print as 1e+03 us)
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_ratio(r: Optional[float], mark: bool = True) -> str:
    """``**0.50x** (wins)`` at or below 1.0, ``4.8x`` above (the issue's layout)."""
    if r is None:
        return "-"
    text = f"{r:.2f}x" if r < 10 else f"{r:.1f}x"
    return f"**{text}** (wins)" if mark and r <= 1.0 else text


def _grid_table(cells: Sequence[CellResult], cell_text: Callable[[CellResult], str]) -> str:
    Hs = sorted({c.H for c in cells})
    Ns = sorted({c.N for c in cells})
    by = {(c.H, c.N): c for c in cells}
    lines = ["| H \\ N | " + " | ".join(f"{n:,}" for n in Ns) + " |",
             "|---|" + "---|" * len(Ns)]
    for H in Hs:
        row = [cell_text(by[H, N]) if (H, N) in by else "" for N in Ns]
        lines.append(f"| {H} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _status_text(c: CellResult) -> str:
    if c.failures:
        return "FAILURE"
    if c.fastgrad.status != "ok":
        return c.fastgrad.status
    return "no peer"


def ratio_table(cells: Sequence[CellResult]) -> str:
    """The issue's H x N table of fastgrad time / best peer time."""
    return _grid_table(cells, lambda c: fmt_ratio(c.ratio) if c.ratio is not None
                       else _status_text(c))


def cell_table(cells: Sequence[CellResult], peers: Sequence[str]) -> str:
    """One line per cell: every side's time, the best peer, ratio, GFLOP/s."""
    head = (["H", "N", "fastgrad"] + [PEER_LABELS[p] for p in peers]
            + ["best peer", "ratio", "fastgrad GFLOP/s", "best peer GFLOP/s"])
    body = []
    for c in cells:
        sides = {r.name: r for r in c.peers}
        row = [str(c.H), f"{c.N:,}", fmt_time(c.fastgrad.s)]
        for p in peers:
            side = sides.get(p)
            if side is None or side.status == "ok":
                row.append(fmt_time(side.s if side else None))
            else:
                row.append(side.status)
        best = c.best
        fg_g, best_g = c.gflops(c.fastgrad), c.gflops(best)
        row += [best.label if best else "-", fmt_ratio(c.ratio, mark=False),
                f"{fg_g:.2f}" if fg_g is not None else "-",
                f"{best_g:.2f}" if best_g is not None else "-"]
        body.append(row)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    left = {len(head) - 4}                          # the best peer's name
    lines: List[str] = []
    for line in [head] + body:
        cells_ = [x.ljust(w) if i in left else x.rjust(w) for i, (x, w) in
                  enumerate(zip(line, widths))]
        lines.append("| " + " | ".join(cells_) + " |")
    lines.insert(1, "|" + "|".join(("-" * (w + 2)) if i in left else ("-" * (w + 1) + ":")
                                   for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def demo_line(cells: Sequence[CellResult], peak_gflops: float = PEAK_GFLOPS) -> str:
    """The demo cell's FLOPs, FLOP-bound time and fastgrad's ratio to it."""
    H, N = DEMO_CELL
    c = next((c for c in cells if (c.H, c.N) == DEMO_CELL), None)
    if c is None or c.flops is None:
        return (f"demo cell (H={H}, N={N}): not in this grid (or fastgrad did not run), "
                "no FLOP-bound figure")
    bound = c.flops / (peak_gflops * 1e9)
    text = (f"demo cell (H={H}, N={N}): {c.flops:,} FLOPs per step (counted from the "
            f"recorded program); FLOP-bound time {fmt_time(bound)} at {peak_gflops:g} "
            "GFLOP/s")
    if peak_gflops == PEAK_GFLOPS:
        text += (" (the issue's figure for this machine's single-core AVX-512 float64 "
                 "peak; --peak-gflops to change)")
    if c.fastgrad.s is not None:
        text += (f"; fastgrad {fmt_time(c.fastgrad.s)} = {c.fastgrad.s / bound:.1f}x the "
                 "FLOP-bound time (goal: <= 4x)")
    return text


def notes(cells: Sequence[CellResult], skips: bool = True) -> List[str]:
    """One line per failed side, per skipped one (each reason once; not with
    ``skips=False``), and per side that used more than one core."""
    out: List[str] = []
    skipped: Dict[Tuple[str, Optional[str]], List[str]] = {}
    for c in cells:
        for r in [c.fastgrad] + c.peers:
            if r.status == "skipped":
                skipped.setdefault((r.label, r.reason), []).append(f"H={c.H} N={c.N}")
            elif r.status != "ok":
                out.append(f"{r.status}: H={c.H} N={c.N} {r.label}: {r.reason}")
            elif r.cpu_per_wall is not None and r.cpu_per_wall > 1.25:
                out.append(f"warning: H={c.H} N={c.N} {r.label} used "
                           f"{r.cpu_per_wall:.2f} s of CPU per second: more than one core")
    if skips:
        for (label, reason), where in skipped.items():
            cells_text = "every cell" if len(where) == len(cells) > 1 else ", ".join(where)
            out.append(f"skipped: {label} ({cells_text}): {reason}")
    return out


def format_report(cells: Sequence[CellResult], peers: Sequence[str] = PEERS,
                  peak_gflops: float = PEAK_GFLOPS, skip_notes: bool = True) -> str:
    """The grid's text report: per-cell table, the issue's tables, demo line,
    notes (``skip_notes=False``: without the skipped sides, for a caller that
    lists them already)."""
    shown = [p for p in peers if any(r.name == p and r.status != "skipped"
                                     for c in cells for r in c.peers)] or list(peers)
    parts = [cell_table(cells, shown), "",
             "fastgrad time / best peer time per step (<= 1.0x: fastgrad wins):", "",
             ratio_table(cells), "",
             "best peer:", "",
             _grid_table(cells, lambda c: c.best.label if c.best else "-"), "",
             "fastgrad GFLOP/s (FLOPs counted from the recorded program):", "",
             _grid_table(cells, lambda c: (f"{c.gflops(c.fastgrad):.2f}"
                                           if c.gflops(c.fastgrad) is not None else "-")),
             "", demo_line(cells, peak_gflops)]
    extra = notes(cells, skips=skip_notes)
    if extra:
        parts += [""] + extra
    return "\n".join(parts)


def write_heatmap(cells: Sequence[CellResult], path: str, title: str) -> None:
    """Heatmap of fastgrad time / best peer time, annotated with the ratio.

    A diverging colormap centred at 1.0 on a log scale (blue: fastgrad
    wins, red: a peer wins); cells without a ratio are grey.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    Hs = sorted({c.H for c in cells})
    Ns = sorted({c.N for c in cells})
    by = {(c.H, c.N): c for c in cells}
    R = np.full((len(Hs), len(Ns)), np.nan)
    for i, H in enumerate(Hs):
        for j, N in enumerate(Ns):
            c = by.get((H, N))
            if c is not None and c.ratio is not None:
                R[i, j] = c.ratio
    finite = R[np.isfinite(R)]
    span = max(2.0, float(np.max(np.maximum(finite, 1.0 / finite)))) if finite.size else 2.0
    fig = Figure(figsize=(1.9 * len(Ns) + 2.6, 0.9 * len(Hs) + 1.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = _diverging_cmap()
    im = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, norm=LogNorm(1.0 / span, span),
                   origin="lower", aspect="auto")
    for i, H in enumerate(Hs):
        for j, N in enumerate(Ns):
            c = by.get((H, N))
            r = R[i, j]
            if np.isfinite(r):
                best = c.best.label if c and c.best else ""
                text = f"{r:.2f}x\n{best}"
                dark = abs(math.log(r)) > 0.6 * math.log(span)
            else:
                text = _status_text(c) if c else ""
                dark = False
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(Ns)))
    ax.set_xticklabels([f"{n:,}" for n in Ns])
    ax.set_yticks(range(len(Hs)))
    ax.set_yticklabels([str(h) for h in Hs])
    ax.set_xlabel("N (points per full batch)")
    ax.set_ylabel("H (hidden width)")
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("fastgrad time / best peer time (log; < 1: fastgrad wins)")
    fig.tight_layout()
    fig.savefig(path)


def _diverging_cmap() -> Any:
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"]
    if hasattr(cmap, "with_extremes"):          # matplotlib >= 3.4
        return cmap.with_extremes(bad="0.8")
    cmap = cmap.copy()
    cmap.set_bad("0.8")
    return cmap


# ---------------------------------------------------------------------------
# the script
# ---------------------------------------------------------------------------

def source_commit() -> Optional[str]:
    """``abc1234`` (``+ uncommitted changes`` when dirty) of the fastgrad
    checkout being run, or None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def header(info: Mapping[str, Any], rounds: int, round_s: float, threads: str,
           commit: Optional[str]) -> str:
    """The lines naming the machine, the versions and the protocol."""
    jax_v = info.get("jax")
    return "\n".join([
        f"fastgrad {info['fastgrad']} H x N grid -- {info['date_utc']}"
        + (f" -- commit {commit}" if commit else ""),
        f"measured: fastgrad's {info.get('fastgrad_build', 'compiled')} build"
        + (f" ({info['fastgrad_extension']})" if info.get("fastgrad_extension") else ""),
        f"machine: {info['cpu']} ({info['cpus']} logical CPUs), {info['platform']}",
        f"python:  {info['python']}; numpy {info['numpy']}, "
        f"torch {info.get('torch') or 'not installed'}, jax {jax_v or 'not installed'}",
        f"threads: one per side: {threads}; torch.set_num_threads(1); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r}"
        + ("" if "jax" not in sys.modules or xla_flags_set()
           else " (jax was imported before the flags could be set)"),
        "workload: full-batch training step of MLP(2, [H, H, 1]) (random.seed(1337)) on N "
        f"two-moons points, float64: mean(relu(1 - y*score)) + {ALPHA:g}*sum(p*p), "
        f"SGD lr {LR:g}; every peer checked against fastgrad's first step",
        f"timing: median over {rounds} interleaved rounds of the time per step, each round "
        f">= {round_s * 1e3:.0f} ms of steps per side",
    ])


def _ints(text: str, what: str) -> List[int]:
    try:
        vals = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated integers, "
                                         f"got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{what}: expected positive integers, got {text!r}")
    return vals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_grid.py",
        description="fastgrad compiled against NumPy, PyTorch and JAX on the H x N grid "
                    "(issue 13): full-batch MLP(2, [H, H, 1]) training steps, float64, "
                    "one thread, checked before timing.")
    p.add_argument("--H", type=lambda s: _ints(s, "--H"), default=list(DEFAULT_H),
                   metavar="H[,H]", help="hidden widths (default 16,32,64,128)")
    p.add_argument("--N", type=lambda s: _ints(s, "--N"), default=list(DEFAULT_N),
                   metavar="N[,N]", help="points per batch (default 100,1000,10000)")
    p.add_argument("--rounds", type=int, default=7,
                   help="interleaved timing rounds per cell (default 7)")
    p.add_argument("--round-ms", type=float, default=ROUND_S * 1e3,
                   help="minimum milliseconds of steps per side per round (default 20)")
    p.add_argument("--peers", default=",".join(PEERS), metavar="NAME[,NAME]",
                   help=f"peers to run (default all installed: {', '.join(PEERS)})")
    p.add_argument("--plot", metavar="PATH.png", help="draw the ratio heatmap (matplotlib)")
    p.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    p.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS,
                   help="peak GFLOP/s for the FLOP-bound line (default 126: the issue's "
                        "figure for this machine's single-core AVX-512 float64 peak)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the grid; print the report; return 0, or 1 on a FAILURE, 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers:
        parser.error(f"--peers: unknown peer(s) {', '.join(unknown) or '(none)'} "
                     f"(choose from {', '.join(PEERS)})")
    if args.rounds < 1 or args.round_ms < 0 or args.peak_gflops <= 0:
        parser.error("--rounds must be >= 1, --round-ms >= 0, --peak-gflops > 0")
    from fastgrad.bench.cli import _unwritable, machine_info
    for path, what in ((args.json, "JSON"), (args.plot, "the plot")):
        if path:
            why = _unwritable(path, what)
            if why:
                parser.error(why)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib, which is not installed")
    info = machine_info()
    commit = source_commit()
    round_s = args.round_ms / 1e3

    def progress(i: int, total: int, H: int, N: int, cell: Optional[CellResult]) -> None:
        if cell is None:
            print(f"[{i:2d}/{total}] H={H} N={N:,} ...", end="", file=sys.stderr, flush=True)
            return
        parts = [f"fastgrad {fmt_time(cell.fastgrad.s)}"]
        parts += [f"{r.label} {fmt_time(r.s) if r.status == 'ok' else r.status}"
                  for r in cell.peers if r.status != "skipped"]
        print(" " + ", ".join(parts) + f"; ratio {fmt_ratio(cell.ratio, mark=False)}",
              file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with single_core() as threads:
        head = header(info, args.rounds, round_s, threads, commit)
        print(head, file=sys.stderr, flush=True)
        cells = run_grid(args.H, args.N, peers, args.rounds, round_s, progress=progress)
    elapsed = time.perf_counter() - t0
    failures = sum(c.failures for c in cells)
    print(head)
    print()
    print(format_report(cells, peers, args.peak_gflops))
    print(f"\n(grid run in {elapsed:.0f} s)")
    if failures:
        print(f"\n{failures} FAILURE(s): a peer's result did not match fastgrad's, or a "
              "side raised")
    if args.json:
        doc = {"fastgrad_bench_grid": 1, "machine": info, "commit": commit,
               "threads": threads, "xla_flags": os.environ.get("XLA_FLAGS"),
               "rounds": args.rounds, "round_s": round_s,
               "peak_gflops": args.peak_gflops, "failures": failures,
               "elapsed_s": elapsed, "cells": [c.as_dict() for c in cells]}
        try:
            import json
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1, default=str)
                f.write("\n")
        except OSError as exc:
            print(f"bench_grid.py: cannot write JSON to {args.json}: {exc}", file=sys.stderr)
            return 2
    if args.plot:
        title = (f"fastgrad compiled / best of NumPy, PyTorch, JAX per step, float64, one "
                 f"thread each\n{info['cpu']}, {datetime.date.today()}"
                 + (f", commit {commit}" if commit else ""))
        try:
            write_heatmap(cells, args.plot, title)
        except (OSError, ValueError) as exc:
            print(f"bench_grid.py: cannot write the plot to {args.plot}: {exc}",
                  file=sys.stderr)
            return 2
        print(f"heatmap written to {args.plot}")
    return 1 if failures else 0
