"""Model code styles (issue 20): the ways users write a model, and their peers.

Each :class:`Style` is one way of writing a small MLP with ``fastgrad.Value``
(the classes below are the user code: micrograd's ``sum(..., self.b)``, the
textbook ``sum(w*x) + b``, ``b + sum(...)``, no bias, the nn-zero-to-hero
lecture's tanh classes, tanh / sigmoid / hand-written sigmoid hidden layers,
scikit-learn's digits with a softmax cross-entropy written with exp and log).
:class:`FastgradSide` compiles it (``fastgrad.compile``) and trains with
``Program.sgd_step``; the peers compute the same mathematics (same weights,
data, loss, SGD) with whole arrays: hand-written NumPy (:class:`NumpySide`),
``jax.jit`` of ``value_and_grad`` and the update (:class:`JaxSide`), PyTorch
eager (:class:`TorchSide`), each on one thread.

Used by ``benchmarks/bench_styles.py`` (every peer of a row checked, then
timed interleaved, wall and CPU time, the ratio to the best peer) and by
``fastgrad bench --full`` (the ``styles`` workload: fastgrad against each peer,
checked first).  Private: no public API.
"""
import dataclasses
import math
import os
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import numpy.typing as npt

from fastgrad import Value
from fastgrad.bench import harness

Array = npt.NDArray[np.float64]

__all__ = ["STYLES", "STYLE_BY_NAME", "Style", "PEERS", "FastgradSide", "NumpySide",
           "JaxSide", "TorchSide", "make_runner", "plan", "moons"]

LR = 0.05
ALPHA = 1e-4
SEED = 1337
LOSS_RTOL = 1e-10
PARAM_RTOL = 1e-9
PARAM_ATOL = 1e-12

XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _jax() -> Any:
    """jax with float64, single-threaded XLA when jax is not imported yet."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_SINGLE_THREAD).strip()
    jax = harness.require("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _torch() -> Any:
    torch = harness.require("torch")
    torch.set_num_threads(1)
    return torch


def moons(n: int, noise: float = 0.1, seed: int = 0) -> Tuple[Any, Any]:
    """Two interleaved half circles (sklearn's ``make_moons`` shape), seeded:
    X (n, 2) and labels y (n,) of -1.0 / +1.0, float64."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    t_out = np.linspace(0.0, math.pi, n_out)
    t_in = np.linspace(0.0, math.pi, n - n_out)
    X = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
                        np.stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1)])
    y = np.concatenate([-np.ones(n_out), np.ones(n - n_out)])
    X += rng.normal(0.0, noise, X.shape)
    perm = rng.permutation(n)
    return np.ascontiguousarray(X[perm]), np.ascontiguousarray(y[perm])


# ---------------------------------------------------------------------------
# the model code, as users write it
# ---------------------------------------------------------------------------

def activate(z: Value, act: str) -> Value:
    """The activation functions of the rows (``sigmoid_hand``: written by hand)."""
    if act == "relu":
        return z.relu()
    if act == "tanh":
        return z.tanh()
    if act == "sigmoid":
        return z.sigmoid()
    if act == "sigmoid_hand":
        return 1 / (1 + (-z).exp())
    return z


class Neuron:
    """micrograd's Neuron (``micrograd/nn.py``): the bias starts the sum."""

    def __init__(self, nin: int, act: str) -> None:
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.act = act

    def __call__(self, x: List[Value]) -> Value:
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return activate(act, self.act)

    def parameters(self) -> List[Value]:
        return self.w + [self.b]


class SumPlusBias(Neuron):
    """The textbook ``w . x + b``."""

    def __call__(self, x: List[Value]) -> Value:
        act = sum(wi * xi for wi, xi in zip(self.w, x)) + self.b
        return activate(act, self.act)


class BiasPlusSum(Neuron):
    def __call__(self, x: List[Value]) -> Value:
        act = self.b + sum(wi * xi for wi, xi in zip(self.w, x))
        return activate(act, self.act)


class NoBias(Neuron):
    def __call__(self, x: List[Value]) -> Value:
        act = sum(wi * xi for wi, xi in zip(self.w, x))
        return activate(cast(Value, act), self.act)   # (sum() of Values: a Value)

    def parameters(self) -> List[Value]:
        return self.w


class LectureNeuron:
    """The nn-zero-to-hero lecture's Neuron: random bias, tanh always."""

    def __init__(self, nin: int, act: str = "tanh") -> None:
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(random.uniform(-1, 1))

    def __call__(self, x: List[Value]) -> Value:
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        out = act.tanh()
        return out

    def parameters(self) -> List[Value]:
        return self.w + [self.b]


class Layer:
    def __init__(self, nin: int, nout: int, neuron: Callable[..., Any], act: str) -> None:
        self.neurons = [neuron(nin, act) for _ in range(nout)]

    def __call__(self, x: List[Value]) -> Any:
        outs = [n(x) for n in self.neurons]
        return outs[0] if len(outs) == 1 else outs

    def parameters(self) -> List[Value]:
        return [p for n in self.neurons for p in n.parameters()]


class MLP:
    def __init__(self, sizes: Sequence[int], neuron: Callable[..., Any],
                 acts: Sequence[str]) -> None:
        self.layers = [Layer(sizes[i], sizes[i + 1], neuron, acts[i])
                       for i in range(len(sizes) - 1)]

    def __call__(self, x: List[Value]) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> List[Value]:
        return [p for layer in self.layers for p in layer.parameters()]


def hinge(score: Value, y: Value) -> Value:
    """micrograd demo's max-margin loss of one sample."""
    return (1 + -y * score).relu()


def mse(score: Value, y: Value) -> Value:
    return (score - y) ** 2


def cross_entropy(logits: List[Value], y: List[Value]) -> Value:
    """Softmax cross-entropy written with exp and log (one-hot ``y``)."""
    counts = [logit.exp() for logit in logits]
    denom = sum(counts)
    probs = [c / denom for c in counts]
    return cast(Value, -sum(yk * p.log() for yk, p in zip(y, probs)))


# ---------------------------------------------------------------------------
# the rows
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Style:
    name: str
    label: str
    sizes: Tuple[int, ...]
    neuron: Callable[..., Any]
    acts: Tuple[str, ...]        # per layer
    loss: str                    # "hinge" (+ L2 penalty), "mse", "ce"
    data: str                    # "moons" or "digits"
    Ns: Tuple[int, ...]

    @property
    def bias(self) -> bool:
        return self.neuron is not NoBias


H = 64
_HID = ("relu", "relu", "none")
STYLES = [
    Style("micrograd", "micrograd's sum((wi*xi ...), self.b), relu, hinge + L2",
          (2, H, H, 1), Neuron, _HID, "hinge", "moons", (1000, 10000)),
    Style("sum_plus_b", "sum(wi*xi ...) + b", (2, H, H, 1), SumPlusBias, _HID, "hinge",
          "moons", (1000, 10000)),
    Style("b_plus_sum", "b + sum(wi*xi ...)", (2, H, H, 1), BiasPlusSum, _HID, "hinge",
          "moons", (1000, 10000)),
    Style("no_bias", "sum(wi*xi ...), no bias", (2, H, H, 1), NoBias, _HID, "hinge",
          "moons", (1000, 10000)),
    Style("lecture_tanh", "lecture classes: tanh everywhere, MSE", (2, H, H, 1),
          LectureNeuron, ("tanh", "tanh", "tanh"), "mse", "moons", (1000, 10000)),
    Style("tanh_hidden", "micrograd code, tanh hidden", (2, H, H, 1), Neuron,
          ("tanh", "tanh", "none"), "hinge", "moons", (1000, 10000)),
    Style("sigmoid_hidden", "micrograd code, sigmoid hidden", (2, H, H, 1), Neuron,
          ("sigmoid", "sigmoid", "none"), "hinge", "moons", (1000, 10000)),
    Style("sigmoid_hand", "micrograd code, 1/(1+(-z).exp()) hidden", (2, H, H, 1), Neuron,
          ("sigmoid_hand", "sigmoid_hand", "none"), "hinge", "moons", (1000, 10000)),
    Style("digits_relu", "digits 64-32-10, relu, softmax CE from exp/log", (64, 32, 10),
          Neuron, ("relu", "none"), "ce", "digits", (1797,)),
    Style("digits_tanh", "digits 64-32-10, lecture classes (tanh), softmax CE",
          (64, 32, 10), LectureNeuron, ("tanh", "tanh"), "ce", "digits", (1797,)),
]
STYLE_BY_NAME = {s.name: s for s in STYLES}


def dataset(style: Style, N: int) -> Tuple[Array, Array]:
    """Inputs X (N, nin) and targets: (N,) labels -1/+1 or (N, 10) one-hot."""
    if style.data == "moons":
        return moons(N)
    sk = harness.require("sklearn.datasets")
    d = sk.load_digits()
    X = np.ascontiguousarray(d.data[:N] / 16.0, dtype=np.float64)
    Y = np.zeros((X.shape[0], 10))
    Y[np.arange(X.shape[0]), d.target[:N]] = 1.0
    return X, Y


def layers_of(model: MLP, bias: bool) -> List[Tuple[Array, Optional[Array]]]:
    """(W, b) per layer from the Values (b None without biases)."""
    out = []
    for layer in model.layers:
        W = np.array([[w.data for w in n.w] for n in layer.neurons])
        b = np.array([n.b.data for n in layer.neurons]) if bias else None
        out.append((W, b))
    return out


def flatten(layers: Sequence[Tuple[Any, Any]]) -> Array:
    """micrograd's parameter order: per neuron its weights, then its bias."""
    parts = []
    for W, b in layers:
        W = np.asarray(W)
        if b is None:
            parts.append(W.ravel())
        else:
            parts.append(np.concatenate([W, np.asarray(b)[:, None]], axis=1).ravel())
    return np.concatenate(parts)


# ---------------------------------------------------------------------------
# sides
# ---------------------------------------------------------------------------

class FastgradSide:
    name = "fastgrad"

    def __init__(self, style: Style, N: int) -> None:
        import fastgrad
        state = random.getstate()
        try:
            random.seed(SEED)
            self.model = MLP(style.sizes, style.neuron, style.acts)
        finally:
            random.setstate(state)
        self.params = self.model.parameters()
        self.X, self.Y = dataset(style, N)
        nin, nout = style.sizes[0], style.sizes[-1]
        n_y = 1 if self.Y.ndim == 1 else self.Y.shape[1]
        model = self.model

        def per_sample(v: List[Value]) -> Value:
            x, y = v[:nin], v[nin:]
            out = model(x)
            if style.loss == "hinge":
                return hinge(out, y[0])
            if style.loss == "mse":
                return mse(out, y[0])
            return cross_entropy(out if nout > 1 else [out], y)

        penalty = ((lambda ps: ALPHA * sum(p * p for p in ps))
                   if style.loss == "hinge" else None)
        t0 = time.perf_counter()
        self.program = fastgrad.compile(per_sample, nin + n_y, params=self.params,
                                        penalty=penalty)
        self.compile_s = time.perf_counter() - t0
        self.inputs = (self.X, self.Y)
        self.initial = layers_of(model, style.bias)

    def step(self) -> float:
        return self.program.sgd_step(self.inputs, LR)

    def flat(self) -> Array:
        return np.array([p.data for p in self.params])


def _np_act(z: Array, act: str) -> Array:
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "tanh":
        return np.tanh(z)
    if act in ("sigmoid", "sigmoid_hand"):
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _np_dact(h: Array, act: str) -> Any:
    """d act / dz from the activation's output h."""
    if act == "relu":
        return h > 0
    if act == "tanh":
        return 1.0 - h * h
    if act in ("sigmoid", "sigmoid_hand"):
        return h * (1.0 - h)
    return None


class NumpySide:
    """Hand-written NumPy forward and backward, in-place SGD (one thread)."""

    name = "numpy"

    def __init__(self, style: Style, X: Array, Y: Array, layers: Any) -> None:
        self.style = style
        self.layers = [(W.copy(), None if b is None else b.copy()) for W, b in layers]
        self.X, self.Y = X, Y

    def step(self) -> float:
        st, X, Y, layers = self.style, self.X, self.Y, self.layers
        n = X.shape[0]
        hs = [X]
        h = X
        for (W, b), act in zip(layers, st.acts):
            z = h @ W.T
            if b is not None:
                z += b
            h = _np_act(z, act)
            hs.append(h)
        if st.loss == "hinge":
            s = h[:, 0]
            margin = 1.0 - Y * s
            loss = np.maximum(margin, 0.0).sum() / n
            loss += ALPHA * sum(float((W * W).sum() + (0.0 if b is None else (b * b).sum()))
                                for W, b in layers)
            g = np.where(margin > 0, -Y / n, 0.0)[:, None]
        elif st.loss == "mse":
            d = h[:, 0] - Y
            loss = float((d * d).sum() / n)
            g = (2.0 / n * d)[:, None]
        else:
            E = np.exp(h)
            P = E / E.sum(axis=1, keepdims=True)
            loss = float(-(Y * np.log(P)).sum() / n)
            g = (P - Y) / n
        for i in range(len(layers) - 1, -1, -1):
            W, b = layers[i]
            d = _np_dact(hs[i + 1], st.acts[i])
            if d is not None:
                g = g * d
            gW = g.T @ hs[i]
            if i > 0:
                g_in = g @ W
            if st.loss == "hinge":
                gW += 2 * ALPHA * W
            W -= LR * gW
            if b is not None:
                gb = g.sum(axis=0)
                if st.loss == "hinge":
                    gb += 2 * ALPHA * b
                b -= LR * gb
            if i > 0:
                g = g_in
        return float(loss)

    def flat(self) -> Array:
        return flatten(self.layers)


class JaxSide:
    name = "jax.jit"

    def __init__(self, style: Style, X: Array, Y: Array, layers: Any) -> None:
        jax = _jax()
        jnp = jax.numpy
        self.p = [(jnp.asarray(W), None if b is None else jnp.asarray(b)) for W, b in layers]
        acts, loss_kind = style.acts, style.loss

        def act_fn(z: Any, act: str) -> Any:
            if act == "relu":
                return jax.nn.relu(z)
            if act == "tanh":
                return jnp.tanh(z)
            if act in ("sigmoid", "sigmoid_hand"):
                return jax.nn.sigmoid(z)
            return z

        def loss_fn(params: Any, X: Any, Y: Any) -> Any:
            h = X
            for (W, b), act in zip(params, acts):
                h = h @ W.T
                if b is not None:
                    h = h + b
                h = act_fn(h, act)
            if loss_kind == "hinge":
                s = h[:, 0]
                reg = sum(jnp.sum(W * W) + (0.0 if b is None else jnp.sum(b * b))
                          for W, b in params)
                return jnp.mean(jax.nn.relu(1.0 - Y * s)) + ALPHA * reg
            if loss_kind == "mse":
                return jnp.mean((h[:, 0] - Y) ** 2)
            return -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(h, axis=1), axis=1))

        def train_step(params: Any, X: Any, Y: Any) -> Any:
            loss, grads = jax.value_and_grad(loss_fn)(params, X, Y)
            new = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
            return new, loss

        self._fn = jax.jit(train_step)
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)

    def step(self) -> float:
        self.p, loss = self._fn(self.p, self.X, self.Y)
        return float(loss)

    def flat(self) -> Array:
        return flatten([(np.asarray(W), None if b is None else np.asarray(b))
                        for W, b in self.p])


class TorchSide:
    name = "torch eager"

    def __init__(self, style: Style, X: Array, Y: Array, layers: Any) -> None:
        torch = _torch()
        self.torch = torch
        self.p = [(torch.tensor(W, requires_grad=True),
                   None if b is None else torch.tensor(b, requires_grad=True))
                  for W, b in layers]
        self.plist = [t for W, b in self.p for t in (W, b) if t is not None]
        self.opt = torch.optim.SGD(self.plist, lr=LR)
        self.style = style
        self.X, self.Y = torch.from_numpy(X.copy()), torch.from_numpy(Y.copy())

    def step(self) -> float:
        torch, st = self.torch, self.style
        self.opt.zero_grad()
        h = self.X
        for (W, b), act in zip(self.p, st.acts):
            h = h @ W.T
            if b is not None:
                h = h + b
            if act == "relu":
                h = torch.relu(h)
            elif act == "tanh":
                h = torch.tanh(h)
            elif act in ("sigmoid", "sigmoid_hand"):
                h = torch.sigmoid(h)
        if st.loss == "hinge":
            loss = torch.relu(1.0 - self.Y * h[:, 0]).mean() + ALPHA * sum(
                (p * p).sum() for p in self.plist)
        elif st.loss == "mse":
            loss = ((h[:, 0] - self.Y) ** 2).mean()
        else:
            loss = -(self.Y * torch.log_softmax(h, dim=1)).sum(dim=1).mean()
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def flat(self) -> Array:
        with self.torch.no_grad():
            return flatten([(W.numpy(), None if b is None else b.numpy())
                            for W, b in self.p])


PEERS: Dict[str, Callable[..., Any]] = {
    "numpy": NumpySide, "jax.jit": JaxSide, "torch eager": TorchSide}
# the peers' names in fastgrad bench (its BASELINE_LABELS)
PEER_KEYS = {"numpy_mlp": "numpy", "jax_jit": "jax.jit", "torch_eager": "torch eager"}




# ---------------------------------------------------------------------------
# fastgrad bench: plan and runners
# ---------------------------------------------------------------------------

def plan(mode: str) -> List[harness.Pair]:
    """One Pair per (style, N, peer): ``full`` every row of issue 20's table
    (N=1,000 and 10,000; digits: its 1,797 images); ``quick`` two rows at
    N=1,000 (the textbook ``sum(w*x) + b`` and the lecture's tanh classes);
    ``smoke`` one tiny row against NumPy (a check, no timing)."""
    rounds = {"smoke": 3, "quick": 7, "full": 9}[mode]
    pairs = []
    peers: Sequence[str] = ("numpy_mlp",) if mode == "smoke" else tuple(PEER_KEYS)
    for st in STYLES:
        if mode == "smoke":
            Ns: Sequence[int] = (16,) if st.name == "sum_plus_b" else ()
        elif mode == "quick":
            Ns = (1000,) if st.name in ("sum_plus_b", "lecture_tanh") else ()
        else:
            Ns = st.Ns
        for N in Ns:
            for peer in peers:
                pairs.append(harness.Pair(peer, {"style": st.name, "N": N},
                                          label=f"{st.name} N={N}", rounds=rounds,
                                          fg_rounds=rounds))
    return pairs


def make_runner(impl: str, params: Dict[str, Any]) -> harness.Runner:
    """One side of a row: ``impl`` "fastgrad" or a peer key; ``fn()`` is one
    training step, the checked result ``[loss, parameters after it]``."""
    from fastgrad import _backend
    if not _backend.COMPILED:
        raise harness.NotAvailable("not available: fastgrad.compile needs the compiled "
                                   f"build ({_backend.REASON})")
    st = STYLE_BY_NAME[params["style"]]
    fg = FastgradSide(st, int(params["N"]))
    side: Any = fg
    if impl != "fastgrad":
        if impl not in PEER_KEYS:
            raise harness.NotAvailable(f"not available: no styles peer called {impl}")
        side = PEERS[PEER_KEYS[impl]](st, fg.X, fg.Y, fg.initial)

    def result(out: float) -> Any:
        return [out, side.flat().tolist()]

    nodes = fg.program.n_instructions * int(params["N"])
    return harness.Runner(side.step, result=result, nodes=nodes)
