"""The H x N grid's problem and its sides: the data, the weights' layout, and one
class per implementation of the training step (fastgrad's compiled demo step,
NumPy, PyTorch eager and compiled, JAX, HIPS autograd).  The protocol is in
:mod:`fastgrad.bench.grid`'s docstring."""
import dataclasses
import math
import os
import random
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from fastgrad.bench import harness

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]
else:
    Array = Any

__all__ = ["PEERS", "PEER_LABELS", "PEER_FACTORIES", "Problem", "Side", "moons",
           "flatten", "unflatten"]

SEED = 1337             # random.seed of the fastgrad model's weights
DATA_SEED = 0           # NumPy seed of the moons
NOISE = 0.1
LR = 0.05
ALPHA = 1e-4
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

    def __init__(self, H: int, N: int, num_threads: Optional[int] = 1) -> None:
        compiled = harness.require("fastgrad.compiled", ("make_demo_step",))
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
        self._step = compiled.make_demo_step(self.model, alpha=ALPHA, num_threads=num_threads)
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


# False (the grid's --threads mode): the peers keep their default thread
# counts (torch's intra-op threads, XLA's thread pool); set by
# fastgrad.bench.grid.default_threads()
ONE_THREAD = True


def _torch() -> Any:
    torch = harness.require("torch")
    if ONE_THREAD:
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
    if ONE_THREAD:
        xla_flags_set()
    jax = harness.require("jax")
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
        ag = harness.require("autograd")
        anp = harness.require("autograd.numpy")
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
