"""Model code styles (issue 20): the ways users write a model, compiled, against the peers.

Run from a checkout with the compiled build in place::

    PYTHONPATH=src python benchmarks/bench_styles.py [--rows NAME,...] [--N 1000,10000]
        [--rounds 7] [--json out.json]

Each row is one way of writing the same kind of model with ``fastgrad.Value``
(the class code is below, as a user would write it), compiled with
``fastgrad.compile`` and trained with ``Program.sgd_step`` (full batch,
float64, SGD).  The peers compute the same mathematics (same weights, same
data, same loss) with whole-array operations: hand-written NumPy forward and
backward, ``jax.jit(value_and_grad)`` of the step, PyTorch eager; each on one
thread (the process is bound to one CPU, BLAS limited to one thread).

Before timing, every peer's first step is checked against fastgrad's (loss
to 1e-10 relative, parameters after the update to 1e-9 relative / 1e-12
absolute); a mismatch is a FAILURE and exit status 1.  Then the sides are
timed interleaved (rounds rotate the order; the median of the per-step
times); the CPU time (``time.process_time``) of each side is measured beside
the wall time.  The ratio is fastgrad / best peer (<= 1.0: fastgrad wins),
by wall time and by CPU time.  Each row says how many dense layers the
compiler found and which kernel build (ISA) ran.
"""
import argparse
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# before anything imports numpy (fastgrad does), jax or torch
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_cpu_multi_thread_eigen" not in _flags:
    os.environ["XLA_FLAGS"] = (
        _flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import numpy as np  # noqa: E402

from fastgrad import Value  # noqa: E402
from fastgrad.bench import grid, grid_peers, grid_report, harness  # noqa: E402

LR = 0.05
ALPHA = 1e-4
SEED = 1337
LOSS_RTOL = 1e-10
PARAM_RTOL = 1e-9
PARAM_ATOL = 1e-12


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
        return activate(act, self.act)

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
    return -sum(yk * p.log() for yk, p in zip(y, probs))


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


def dataset(style: Style, N: int) -> Tuple[np.ndarray, np.ndarray]:
    """Inputs X (N, nin) and targets: (N,) labels -1/+1 or (N, 10) one-hot."""
    if style.data == "moons":
        return grid_peers.moons(N)
    sk = harness.require("sklearn.datasets")
    d = sk.load_digits()
    X = np.ascontiguousarray(d.data[:N] / 16.0, dtype=np.float64)
    Y = np.zeros((X.shape[0], 10))
    Y[np.arange(X.shape[0]), d.target[:N]] = 1.0
    return X, Y


def layers_of(model: MLP, bias: bool) -> List[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """(W, b) per layer from the Values (b None without biases)."""
    out = []
    for layer in model.layers:
        W = np.array([[w.data for w in n.w] for n in layer.neurons])
        b = np.array([n.b.data for n in layer.neurons]) if bias else None
        out.append((W, b))
    return out


def flatten(layers: Sequence[Tuple[Any, Any]]) -> np.ndarray:
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

    def flat(self) -> np.ndarray:
        return np.array([p.data for p in self.params])


def _np_act(z: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "tanh":
        return np.tanh(z)
    if act in ("sigmoid", "sigmoid_hand"):
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _np_dact(h: np.ndarray, act: str) -> Any:
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

    def __init__(self, style: Style, X: np.ndarray, Y: np.ndarray, layers: Any) -> None:
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
            gb = g.sum(axis=0) if b is not None else None
            if i > 0:
                g = g @ W
            if st.loss == "hinge":
                gW += 2 * ALPHA * W
                if b is not None:
                    gb += 2 * ALPHA * b
            W -= LR * gW
            if b is not None:
                b -= LR * gb
        return float(loss)

    def flat(self) -> np.ndarray:
        return flatten(self.layers)


class JaxSide:
    name = "jax.jit"

    def __init__(self, style: Style, X: np.ndarray, Y: np.ndarray, layers: Any) -> None:
        jax = grid_peers._jax()
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

    def flat(self) -> np.ndarray:
        return flatten([(np.asarray(W), None if b is None else np.asarray(b))
                        for W, b in self.p])


class TorchSide:
    name = "torch eager"

    def __init__(self, style: Style, X: np.ndarray, Y: np.ndarray, layers: Any) -> None:
        torch = grid_peers._torch()
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

    def flat(self) -> np.ndarray:
        with self.torch.no_grad():
            return flatten([(W.numpy(), None if b is None else b.numpy())
                            for W, b in self.p])


PEERS: Dict[str, Callable[..., Any]] = {
    "numpy": NumpySide, "jax.jit": JaxSide, "torch eager": TorchSide}


# ---------------------------------------------------------------------------
# running a row
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class SideTimes:
    name: str
    status: str = "ok"
    reason: str = ""
    wall: List[float] = dataclasses.field(default_factory=list)    # per step, per round
    cpu: List[float] = dataclasses.field(default_factory=list)

    @property
    def s(self) -> Optional[float]:
        return statistics.median(self.wall) if self.wall else None

    @property
    def cpu_s(self) -> Optional[float]:
        return statistics.median(self.cpu) if self.cpu else None


@dataclasses.dataclass
class RowResult:
    style: str
    label: str
    N: int
    layers: int
    instructions: int
    isa: str
    compile_s: float
    loadavg: str
    sides: List[SideTimes]
    summary: str = ""

    def best(self) -> Optional[SideTimes]:
        ok = [s for s in self.sides[1:] if s.status == "ok" and s.s]
        return min(ok, key=lambda s: s.s or 0.0) if ok else None

    def ratio(self, cpu: bool = False) -> Optional[float]:
        b = self.best()
        f = self.sides[0]
        if b is None or f.status != "ok" or any(s.status == "FAILURE" for s in self.sides):
            return None
        if cpu:
            return (f.cpu_s or 0.0) / b.cpu_s if b.cpu_s else None
        return (f.s or 0.0) / b.s if b.s else None


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "n/a"


def run_row(style: Style, N: int, peers: Sequence[str], rounds: int,
            round_s: float = 0.05) -> RowResult:
    from fastgrad import _replay
    fg = FastgradSide(style, N)
    summary = ""
    if hasattr(fg.program, "summary"):
        summary = str(fg.program.summary())
    res = RowResult(style.name, style.label, N, fg.program.n_layers,
                    fg.program.n_instructions, _replay._isa(), fg.compile_s, _loadavg(),
                    [SideTimes("fastgrad")], summary)
    f_loss = fg.step()
    f_flat = fg.flat()
    sides: List[Tuple[Any, SideTimes]] = [(fg, res.sides[0])]
    for name in peers:
        r = SideTimes(name)
        res.sides.append(r)
        try:
            side = PEERS[name](style, fg.X, fg.Y, fg.initial)
            p_loss = side.step()
            grid.check_close("loss", f_loss, p_loss, LOSS_RTOL, 0.0)
            grid.check_close("parameters after the update", f_flat, side.flat(),
                           PARAM_RTOL, PARAM_ATOL)
        except harness.NotAvailable as exc:
            r.status, r.reason = "skipped", str(exc)
            continue
        except harness.Mismatch as exc:
            r.status, r.reason = "FAILURE", f"differs from fastgrad: {exc}"
            continue
        sides.append((side, r))
    if any(r.status == "FAILURE" for r in res.sides):
        return res
    # warm-up and steps per round
    ks = []
    for side, _ in sides:
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < round_s:
            side.step()
            n += 1
        ks.append(max(1, math.ceil(round_s / ((time.perf_counter() - t0) / n))))
    for rnd in range(rounds):
        order = list(range(len(sides)))
        order = order[rnd % len(order):] + order[:rnd % len(order)]
        for j in order:
            side, r = sides[j]
            side.step()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(ks[j]):
                side.step()
            t1, c1 = time.perf_counter(), time.process_time()
            r.wall.append((t1 - t0) / ks[j])
            r.cpu.append((c1 - c0) / ks[j])
    res.loadavg += " -> " + _loadavg()
    return res


def _ms(s: Optional[float]) -> str:
    return "-" if s is None else f"{s * 1e3:.3f}"


def report(rows: Sequence[RowResult]) -> str:
    lines = ["| model code | N | layers | fastgrad ms (cpu) | numpy | jax.jit | torch eager "
             "| ratio wall | ratio cpu | ISA | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = {s.name: s for s in r.sides}

        def side(name: str) -> str:
            s = cells.get(name)
            if s is None:
                return "-"
            if s.status != "ok":
                return s.status
            return f"{_ms(s.s)} ({_ms(s.cpu_s)})"

        rw, rc = r.ratio(), r.ratio(cpu=True)
        lines.append(
            f"| {r.label} | {r.N:,} | {r.layers} | {side('fastgrad')} | {side('numpy')} | "
            f"{side('jax.jit')} | {side('torch eager')} | "
            f"{'-' if rw is None else f'{rw:.2f}x'} | {'-' if rc is None else f'{rc:.2f}x'} "
            f"| {r.isa} | {r.loadavg} |")
    notes = [f"- {r.label} N={r.N}: {s.name} {s.status}: {s.reason}"
             for r in rows for s in r.sides if s.status != "ok"]
    return "\n".join(lines + notes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=",".join(s.name for s in STYLES))
    ap.add_argument("--N", default=None, help="override the row sizes (comma list)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--summary", action="store_true", help="print Program.summary()")
    args = ap.parse_args(argv)
    peers = [p for p in args.peers.split(",") if p]
    rows: List[RowResult] = []
    with grid.single_core() as how:
        print(f"# model code styles; {how}; commit {grid_report.source_commit()}", flush=True)
        for name in args.rows.split(","):
            style = STYLE_BY_NAME[name]
            Ns = [int(n) for n in args.N.split(",")] if args.N else style.Ns
            for N in Ns:
                with harness.isolated_gc():
                    r = run_row(style, N, peers, args.rounds)
                rows.append(r)
                print(report([r]).splitlines()[-1], flush=True)
                if args.summary and r.summary:
                    print(r.summary)
    print()
    print(report(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([dataclasses.asdict(r) | {"ratio": r.ratio(), "ratio_cpu": r.ratio(True)}
                       for r in rows], fh, indent=1)
    return 1 if any(s.status == "FAILURE" for r in rows for s in r.sides) else 0


if __name__ == "__main__":
    sys.exit(main())
