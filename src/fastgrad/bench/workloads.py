"""The workloads of ``fastgrad bench`` and ``benchmarks/``: each a ``make_*``
function building one side (fastgrad or a baseline) as a
:class:`~fastgrad.bench.harness.Runner`.

Anything optional (micrograd, PyTorch, ``fastgrad.reference``, the
``fastgrad.optim`` / ``numgrad`` / ``compiled`` modules) is imported inside
``make`` (:func:`~fastgrad.bench.harness.require`); when it is missing
``make`` raises :class:`~fastgrad.bench.harness.NotAvailable` and the row is
skipped with that reason.

Adding a workload: write its ``make`` here (or in a module of its own beside
this one, for a family of workloads) and its ``plan`` and :class:`Case` in
:mod:`fastgrad.bench.cases`.  Both front ends pick it up.

Node counts ("ns/node", "bytes/node") are the number of operations fastgrad
records for the expression (interior nodes); leaves (parameters, inputs,
constants) are not counted.  The same count is used for every engine, so
per-node figures compare the same amount of work.
"""
import importlib
import math
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fastgrad.bench.harness import Mismatch, NotAvailable, Runner, require

__all__ = [
    "moons", "demo_weights", "demo_nodes", "demo_loss", "engine", "DEMO_ARCH",
    "lecture_num_grad",
]

# ---------------------------------------------------------------------------
# data and engines
# ---------------------------------------------------------------------------

def moons(n: int, noise: float = 0.1,
          seed: int = 0) -> Tuple[List[List[float]], List[float]]:
    """Two interleaved half circles (sklearn's ``make_moons`` construction).

    Returns ``(X, y)``: a list of ``[x0, x1]`` float pairs and a list of int
    labels in {-1, +1} (the micrograd demo's ``y*2 - 1``), shuffled.
    """
    rng = random.Random(seed)
    n_out = n // 2
    n_in = n - n_out
    pts = []
    for i in range(n_out):
        t = math.pi * i / max(n_out - 1, 1)
        pts.append(([math.cos(t), math.sin(t)], -1))
    for i in range(n_in):
        t = math.pi * i / max(n_in - 1, 1)
        pts.append(([1.0 - math.cos(t), 0.5 - math.sin(t)], 1))
    for p, _ in pts:
        p[0] += rng.gauss(0.0, noise)
        p[1] += rng.gauss(0.0, noise)
    rng.shuffle(pts)
    return [p for p, _ in pts], [label for _, label in pts]


DEMO_ARCH = (2, [16, 16, 1])


def demo_weights(nin: int = 2, nouts: Sequence[int] = (16, 16, 1),
                 seed: int = 1337) -> List[float]:
    """Parameters of ``MLP(nin, nouts)`` in micrograd's ``parameters()`` order.

    Weights uniform in [-1, 1), biases 0, from a private generator (the
    global ``random`` state is left alone).
    """
    rng = random.Random(seed)
    sizes = [nin] + list(nouts)
    flat: List[float] = []
    for i in range(len(nouts)):
        for _ in range(sizes[i + 1]):
            flat.extend(rng.uniform(-1, 1) for _ in range(sizes[i]))
            flat.append(0.0)
    return flat


def demo_nodes(n_points: int, nin: int = 2, nouts: Sequence[int] = (16, 16, 1)) -> int:
    """Operations in the demo loss graph over ``n_points`` points.

    Per point: each neuron with k inputs records k products and k sums (plus
    a relu when hidden); the svm margin adds 3 (``-y*s``, ``1 + .``, relu)
    and the data-loss sum 1.  Then the mean's scaling (1), the L2 term
    (a product and a sum per parameter, the alpha scaling: 2P + 1) and the
    final sum (1).
    """
    sizes = [nin] + list(nouts)
    per_point = 0
    n_params = 0
    for i in range(len(nouts)):
        k, m = sizes[i], sizes[i + 1]
        hidden = i != len(nouts) - 1
        per_point += m * (2 * k + (1 if hidden else 0))
        n_params += m * (k + 1)
    return n_points * (per_point + 4) + 1 + 2 * n_params + 1 + 1


class _Engine:
    """What the generic workloads need from a scalar engine."""

    def __init__(self, name: str, Value: Any, MLP: Any,
                 scalar: Optional[Callable[[Any], float]] = None,
                 zero_grad: Optional[Callable[[Any], None]] = None) -> None:
        self.name = name
        self.Value = Value
        self.MLP = MLP
        self.scalar = scalar or (lambda v: v.data)
        self._zero_grad = zero_grad

    def zero_grad(self, model: Any) -> None:
        if self._zero_grad is not None:
            self._zero_grad(model)
        else:
            model.zero_grad()

    def grad(self, p: Any) -> float:
        g = p.grad
        if g is None:
            return 0.0
        return g.item() if hasattr(g, "item") else float(g)

    def model(self, weights: Sequence[float], nin: int = 2,
              nouts: Sequence[int] = (16, 16, 1)) -> Any:
        """An MLP whose parameters are set to ``weights``."""
        state = random.getstate()      # micrograd's MLP draws from `random`
        try:
            model = self.MLP(nin, list(nouts))
        finally:
            random.setstate(state)
        params = model.parameters()
        if len(params) != len(weights):
            raise Mismatch(f"{self.name}: MLP has {len(params)} parameters, "
                           f"expected {len(weights)}")
        for p, w in zip(params, weights):
            p.data = w
        return model


def _torch() -> Any:
    torch = require("torch")
    torch.set_num_threads(1)
    return torch


class _TorchScalarNeuron:
    def __init__(self, torch: Any, weights: Sequence[float], nonlin: bool) -> None:
        def t(x: float) -> Any:
            return torch.tensor(x, dtype=torch.float64, requires_grad=True)
        self.w = [t(w) for w in weights[:-1]]
        self.b = t(weights[-1])
        self.nonlin = nonlin

    def __call__(self, x: Any) -> Any:
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> List[Any]:
        return self.w + [self.b]


class _TorchScalarMLP:
    """micrograd's MLP over 0-d float64 tensors (PyTorch's scalar autograd)."""

    def __init__(self, torch: Any, weights: Sequence[float], nin: int = 2,
                 nouts: Sequence[int] = (16, 16, 1)) -> None:
        sizes = [nin] + list(nouts)
        self.layers = []
        pos = 0
        for i in range(len(nouts)):
            layer = []
            for _ in range(sizes[i + 1]):
                n = sizes[i] + 1
                layer.append(_TorchScalarNeuron(torch, weights[pos:pos + n],
                                                i != len(nouts) - 1))
                pos += n
            self.layers.append(layer)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            out = [n(x) for n in layer]
            x = out[0] if len(out) == 1 else out
        return x

    def parameters(self) -> List[Any]:
        return [p for layer in self.layers for n in layer for p in n.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None


def engine(name: str) -> "_Engine":
    """The scalar engine called ``name`` (raises NotAvailable if missing)."""
    if name == "fastgrad":
        from fastgrad.engine import Value
        from fastgrad.nn import MLP
        return _Engine(name, Value, MLP)
    if name == "micrograd":
        eng = require("micrograd.engine")
        nn = require("micrograd.nn")
        return _Engine(name, eng.Value, nn.MLP)
    if name == "reference":
        ref = require("fastgrad.reference", ("Value", "MLP"))
        return _Engine(name, ref.Value, ref.MLP)
    if name == "torch_scalar":
        torch = _torch()

        def value(x: float) -> Any:
            return torch.tensor(float(x), dtype=torch.float64, requires_grad=True)

        eng = _Engine(name, value, None, scalar=lambda v: v.item())
        eng.model = lambda weights, nin=2, nouts=(16, 16, 1): _TorchScalarMLP(  # type: ignore[method-assign]
            torch, weights, nin, nouts)
        return eng
    raise NotAvailable(f"not available: no scalar engine called {name}")


# ---------------------------------------------------------------------------
# core workloads: the micrograd demo
# ---------------------------------------------------------------------------

def demo_loss(eng: "_Engine", model: Any, X: Sequence[Sequence[float]],
              y: Sequence[float], alpha: float = 1e-4) -> Any:
    """micrograd's demo loss: svm margin + L2, built with operators.

    Written once for every scalar engine (the notebook's code): inputs become
    Values, each score is ``model(x)``, loss ``mean(relu(1 - y*s)) +
    alpha * sum(p*p)``.
    """
    V = eng.Value
    inputs = [[V(a), V(b)] for a, b in X]
    scores = [model(x) for x in inputs]
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    return data_loss + reg_loss


def _make_train_step_torch_nn(params: Dict[str, Any]) -> Runner:
    torch = _torch()
    X, y = moons(params["points"], seed=params.get("seed", 0))
    weights = demo_weights(*DEMO_ARCH)
    nin, nouts = DEMO_ARCH
    sizes = [nin] + nouts
    layers = []
    pos = 0
    for i in range(len(nouts)):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            for j in range(sizes[i + 1]):
                lin.weight[j] = torch.tensor(weights[pos:pos + sizes[i]], dtype=torch.float64)
                lin.bias[j] = weights[pos + sizes[i]]
                pos += sizes[i] + 1
        layers.append(lin)
        if i != len(nouts) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    plist = list(model.parameters())
    opt = torch.optim.SGD(plist, lr=1.0)
    state = {"k": 0}

    def step() -> Any:
        k = state["k"]
        scores = model(Xt).squeeze(1)
        data_loss = torch.relu(1 + -yt * scores).mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in plist)
        loss = data_loss + reg_loss
        opt.zero_grad()
        loss.backward()
        opt.param_groups[0]["lr"] = 1.0 - 0.9 * k / 100
        opt.step()
        state["k"] = (k + 1) % 100
        return loss.item()

    def result(loss: Any) -> Any:
        flat = []
        with torch.no_grad():
            for lin in model:
                if isinstance(lin, torch.nn.Linear):
                    for j in range(lin.weight.shape[0]):
                        flat.extend(lin.weight[j].tolist())
                        flat.append(lin.bias[j].item())
        return [loss, flat]

    return Runner(step, result=result, nodes=demo_nodes(params["points"]))


def make_train_step(impl: str, params: Dict[str, Any]) -> Runner:
    """One step of the micrograd demo: forward, zero_grad, backward, SGD.

    The notebook's loop body, verbatim apart from the engine: the learning
    rate follows its schedule ``1.0 - 0.9*k/100``.  The result checked is the
    step's loss and every parameter after the update.
    """
    if impl == "torch_nn":
        return _make_train_step_torch_nn(params)
    eng = engine(impl)
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)
    state = {"k": 0}

    def step() -> Any:
        k = state["k"]
        total_loss = demo_loss(eng, model, X, y)
        eng.zero_grad(model)
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        state["k"] = (k + 1) % 100
        return eng.scalar(total_loss)

    def result(loss: Any) -> Any:
        return [loss, [eng.scalar(p) for p in model.parameters()]]

    return Runner(step, result=result, nodes=demo_nodes(params["points"]))


def _graph_nodes(root: Any) -> List[Any]:
    """Every node reachable from root (iterative; for zeroing gradients)."""
    seen = {id(root): root}
    stack = [root]
    while stack:
        v = stack.pop()
        for c in v._prev:
            if id(c) not in seen:
                seen[id(c)] = c
                stack.append(c)
    return list(seen.values())


def make_backward(impl: str, params: Dict[str, Any]) -> Runner:
    """backward() alone on the demo loss graph.

    A fresh graph is built (untimed) before each call, as in training, where
    backward always runs on a graph just built; parameter gradients are reset
    with it.  The result checked is the loss and every parameter's gradient.
    """
    eng = engine(impl)
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)
    ps = model.parameters()
    holder: Dict[str, Any] = {}

    def setup() -> None:
        holder.clear()          # the previous graph goes first
        eng.zero_grad(model)
        holder["loss"] = demo_loss(eng, model, X, y)

    def fn() -> Any:
        holder["loss"].backward()

    def result(_: Any) -> Any:
        return [eng.scalar(holder["loss"]), [eng.grad(p) for p in ps]]

    return Runner(fn, setup=setup, result=result, nodes=demo_nodes(params["points"]),
                  close=holder.clear)


def make_backward_scaling(impl: str, params: Dict[str, Any]) -> Runner:
    """backward() alone on a demo-shaped graph of about ``nodes`` operations.

    The demo loss over as many points as it takes to reach the size, so the
    graph has the shape of real training; it is rebuilt (untimed) before each
    call.  fastgrad only: the figure is ns per node as the graph grows.
    """
    if impl != "fastgrad":
        raise NotAvailable(f"not available: {impl} is not run at this size")
    from fastgrad.engine import zero_grad
    eng = engine(impl)
    per_point = demo_nodes(2) - demo_nodes(1)
    points = max(1, round((params["nodes"] - demo_nodes(0)) / per_point))
    X, y = moons(points, seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)
    ps = model.parameters()
    holder: Dict[str, Any] = {}

    def setup() -> None:
        # a fresh graph each round (untimed): every call sees the same state
        holder.clear()
        zero_grad(ps)
        holder["loss"] = demo_loss(eng, model, X, y)

    def fn() -> Any:
        holder["loss"].backward()

    def result(_: Any) -> Any:
        return [holder["loss"].data, [p.grad for p in ps]]

    def close() -> None:
        holder.clear()

    return Runner(fn, setup=setup, result=result, nodes=demo_nodes(points), close=close)


def make_forward(impl: str, params: Dict[str, Any]) -> Runner:
    """The demo step's forward alone: building the loss graph over the points.

    With train_step and backward it splits the step: step ~ forward +
    backward + zero_grad/update (337 parameters).  The graph returned is
    freed after the clock stops.  The result checked is the loss.
    """
    eng = engine(impl)
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)

    def fn() -> Any:
        return demo_loss(eng, model, X, y)

    return Runner(fn, result=eng.scalar, nodes=demo_nodes(params["points"]))


def make_memory(impl: str, params: Dict[str, Any]) -> Runner:
    """The demo step's graph (forward of the loss), measured by tracemalloc."""
    if impl == "torch_scalar":
        raise NotAvailable("not available: tracemalloc does not see PyTorch's "
                           "C++ allocations")
    eng = engine(impl)
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)

    def fn() -> Any:
        return demo_loss(eng, model, X, y)

    return Runner(fn, result=eng.scalar, nodes=demo_nodes(params["points"]))


# ---------------------------------------------------------------------------
# core workloads: building with operators, deep chains
# ---------------------------------------------------------------------------

def build_expr(w0: Any, w1: Any, b: Any, c: Any,
               pts: Sequence[Tuple[float, float, float]]) -> Any:
    """The expression the build workload records: 13 operations per point.

    Plain operators only (``+ - * / **``), Value-Value and Value-constant,
    so it runs unchanged on Python floats.
    """
    total = 0.0
    for x0, x1, t in pts:
        h = w0 * x0 + w1 * x1 + b
        s = h * h / (1.0 + h * h) + c * (x0 - x1)
        d = s - t
        total = total + d ** 2
    return total


BUILD_OPS_PER_POINT = 13


def make_build(impl: str, params: Dict[str, Any]) -> Runner:
    """Build (only) the graph of :func:`build_expr`; floats are the baseline."""
    rng = random.Random(params.get("seed", 0))
    n = params["points"]
    pts = [(rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-1, 1)) for _ in range(n)]
    ws = [0.7, -1.3, 0.25, 0.5]
    if impl == "floats":
        def fn() -> Any:
            return build_expr(ws[0], ws[1], ws[2], ws[3], pts)
        return Runner(fn, result=lambda out: out, nodes=BUILD_OPS_PER_POINT * n)
    eng = engine(impl)
    vs = [eng.Value(w) for w in ws]

    def fn() -> Any:  # type: ignore[no-redef]  # the Value variant of fn above
        # the graph is freed after the clock stops
        return build_expr(vs[0], vs[1], vs[2], vs[3], pts)

    return Runner(fn, result=eng.scalar, nodes=BUILD_OPS_PER_POINT * n)


def make_deep_chain(impl: str, params: Dict[str, Any]) -> Runner:
    """Build, backprop and free a chain ``x = relu(x*w + 1e-4)`` of given depth.

    3 operations per level; ``w`` is shared by every level, so its gradient
    sums over the whole chain.  The result checked is the output and the
    gradients of ``w`` and of the start.
    """
    eng = engine(impl)
    depth = params["depth"]

    def fn() -> Any:
        x0 = eng.Value(0.5)
        w = eng.Value(0.9999)
        x = x0
        for _ in range(depth):
            x = (x * w + 0.0001).relu()
        x.backward()
        return eng.scalar(x), eng.grad(w), eng.grad(x0)

    return Runner(fn, nodes=3 * depth)


# ---------------------------------------------------------------------------
# numerical gradients (issue 3): fastgrad.numgrad
# ---------------------------------------------------------------------------

def lecture_num_grad(f: Callable[[Any], Any], x: Any, h: float = 1e-5) -> Any:
    """The lecture's forward-difference loop over ``np.nditer`` (baseline)."""
    import numpy as np
    fx = f(x)
    grad = np.zeros(x.shape)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        fxh = f(x)
        x[ix] = old
        grad[ix] = (fxh - fx) / h
        it.iternext()
    return grad


def _first(a: Any) -> Any:
    return a[0]


def make_num_grad(impl: str, params: Dict[str, Any]) -> Runner:
    """Forward-difference gradient of a trivial ``f`` (``x[0]``) over an array.

    Measures the per-element overhead of the perturb/evaluate/restore loop.
    """
    np = require("numpy")
    n = params["elements"]
    x = np.random.default_rng(params.get("seed", 0)).uniform(-1, 1, n)
    if impl == "nditer":
        def fn() -> Any:
            return lecture_num_grad(_first, x, 1e-5)
    elif impl == "fastgrad":
        mod = _numgrad_module()

        def fn() -> Any:
            return mod.num_grad(_first, x, h=1e-5, method="forward")
    else:
        raise NotAvailable(f"not available: no num_grad baseline {impl}")
    return Runner(fn, nodes=n)


def shared_num_grad_calls(params: Dict[str, Any]) -> Runner:
    """The calls to ``f`` that both num_grad loops make (n + 1), from C."""
    from collections import deque
    from itertools import repeat
    np = require("numpy")
    n = params["elements"]
    x = np.random.default_rng(params.get("seed", 0)).uniform(-1, 1, n)

    def fn() -> Any:
        deque(map(_first, repeat(x, n + 1)), maxlen=0)

    return Runner(fn, nodes=n)


def _numgrad_module() -> Any:
    try:
        return require("fastgrad.numgrad", ("num_grad",))
    except NotAvailable:
        fg = importlib.import_module("fastgrad")
        if hasattr(fg, "num_grad"):
            return fg
        raise


def make_gradcheck(impl: str, params: Dict[str, Any]) -> Runner:
    """gradcheck of the demo MLP loss with respect to every parameter."""
    if impl != "fastgrad":
        raise NotAvailable(f"not available: no gradcheck baseline {impl}")
    mod = _numgrad_module()
    if not hasattr(mod, "gradcheck"):
        raise NotAvailable("not available: fastgrad.numgrad has no gradcheck")
    eng = engine("fastgrad")
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)
    ps = model.parameters()
    neurons = [n for layer in model.layers for n in layer.neurons]

    def f(*values: Any) -> Any:
        # the loss as a function of the parameters it is handed
        pos = 0
        for n in neurons:
            k = len(n.w)
            n.w = list(values[pos:pos + k])
            n.b = values[pos + k]
            pos += k + 1
        return demo_loss(eng, model, X, y)

    def fn() -> Any:
        return mod.gradcheck(f, ps, raise_exception=False)

    return Runner(fn, result=bool)


# ---------------------------------------------------------------------------
# optimizers (issue 4): fastgrad.optim
# ---------------------------------------------------------------------------

def _optim_params(n: int, seed: int = 0) -> List[Any]:
    from fastgrad.engine import Value
    rng = random.Random(seed)
    ps = []
    for _ in range(n):
        p = Value(rng.uniform(-1, 1))
        p.grad = rng.uniform(-1, 1)
        ps.append(p)
    return ps


def make_optim(kind: str) -> Callable[[str, Dict[str, Any]], Runner]:
    """A workload maker for one optimizer configuration (``kind``)."""

    def make(impl: str, params: Dict[str, Any]) -> Runner:
        n = params["params"]
        ps = _optim_params(n, params.get("seed", 0))
        lr, mu, b1, b2, eps = 0.01, 0.9, 0.9, 0.999, 1e-8
        if impl == "fastgrad":
            optim = require("fastgrad.optim", ("SGD", "Adam"))
            if kind == "sgd":
                opt = optim.SGD(ps, lr=lr)
            elif kind == "momentum":
                opt = optim.SGD(ps, lr=lr, momentum=mu)
            else:
                opt = optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps)
            fn = opt.step
        elif impl == "python_loop":
            if kind == "sgd":
                def fn() -> Any:
                    for p in ps:
                        p.data -= lr * p.grad
            elif kind == "momentum":
                bufs = [None] * n

                def fn() -> Any:
                    for i, p in enumerate(ps):
                        g = p.grad
                        b = bufs[i]
                        b = g if b is None else mu * b + g
                        bufs[i] = b
                        p.data -= lr * b
            else:
                m = [0.0] * n
                v = [0.0] * n
                t = [0]

                def fn() -> Any:
                    t[0] += 1
                    bc1 = 1 - b1 ** t[0]
                    bc2_sqrt = math.sqrt(1 - b2 ** t[0])
                    step_size = lr / bc1
                    for i, p in enumerate(ps):
                        g = p.grad
                        m[i] = b1 * m[i] + (1 - b1) * g
                        v[i] = b2 * v[i] + (1 - b2) * g * g
                        p.data -= step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)
        else:
            raise NotAvailable(f"not available: no optimizer baseline {impl}")
        return Runner(fn, result=lambda _: [p.data for p in ps], nodes=n)

    return make


def make_sgd_array(impl: str, params: Dict[str, Any]) -> Runner:
    """One SGD step on a float64 parameter array (the optimizers' array path).

    Baseline: numpy's in-place ``p -= lr * g``.
    """
    np = require("numpy")
    n = params["params"]
    rng = np.random.default_rng(params.get("seed", 0))
    p = rng.uniform(-1, 1, n)
    g = rng.uniform(-1, 1, n)
    lr = 0.01
    if impl == "fastgrad":
        optim = require("fastgrad.optim", ("SGD",))
        if not hasattr(optim.SGD, "from_arrays"):
            raise NotAvailable("not available: fastgrad.optim.SGD has no from_arrays")
        opt = optim.SGD.from_arrays([p], [g], lr=lr)
        fn = opt.step
    elif impl == "numpy":
        def fn() -> Any:
            p.__isub__(lr * g)      # p -= lr * g, in place
    else:
        raise NotAvailable(f"not available: no array baseline {impl}")
    return Runner(fn, result=lambda _: p.copy(), nodes=n)


# ---------------------------------------------------------------------------
# compiled replay (issue 7): fastgrad.compiled
# ---------------------------------------------------------------------------

def make_replay_train_step(impl: str, params: Dict[str, Any]) -> Runner:
    """The demo training step through compiled graph replay (issue 7).

    fastgrad side: ``fastgrad.compiled.make_demo_step`` records the demo's
    per-sample loss once (untimed, in make); each timed call replays the
    batch forward and backward and applies the SGD update in C.  Baselines
    run :func:`make_train_step`; the result checked is the same: the step's
    loss and every parameter after the update.
    """
    if impl == "eager":
        return make_train_step("fastgrad", params)
    if impl != "fastgrad":
        return make_train_step(impl, params)
    compiled = require("fastgrad.compiled", ("make_demo_step",))
    np = require("numpy")
    eng = engine("fastgrad")
    X, y = moons(params["points"], seed=params.get("seed", 0))
    model = eng.model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)
    step_fn = compiled.make_demo_step(model, alpha=1e-4)
    Xa = np.array(X, dtype=np.float64)
    ya = np.array(y, dtype=np.float64)
    ps = model.parameters()
    state = {"k": 0}

    def step() -> Any:
        k = state["k"]
        loss, _ = step_fn(Xa, ya, 1.0 - 0.9 * k / 100)
        state["k"] = (k + 1) % 100
        return loss

    def result(loss: Any) -> Any:
        return [float(loss), [p.data for p in ps]]

    return Runner(step, result=result, nodes=demo_nodes(params["points"]))


def make_replay_record(impl: str, params: Dict[str, Any]) -> Runner:
    """Recording the demo step for replay (the one-off cost of compiling)."""
    if impl != "fastgrad":
        raise NotAvailable(f"not available: no record baseline {impl}")
    compiled = require("fastgrad.compiled", ("make_demo_step",))
    model = engine("fastgrad").model(demo_weights(*DEMO_ARCH), *DEMO_ARCH)

    def fn() -> Any:
        compiled.make_demo_step(model, alpha=1e-4)

    return Runner(fn, result=lambda _: 0.0)
