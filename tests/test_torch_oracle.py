"""PyTorch (float64 0-d tensors) as an extra oracle: every op's value and
gradient, micrograd's README expression and sanity check, and the gradient of
an MLP loss.  Skipped when torch is not installed."""
import math
import random

import pytest

torch = pytest.importorskip("torch")

import fastgrad                                          # noqa: E402
from fastgrad import Value                               # noqa: E402
from fastgrad.nn import MLP                              # noqa: E402


class FastLib:
    maximum = staticmethod(fastgrad.maximum)
    minimum = staticmethod(fastgrad.minimum)

    @staticmethod
    def leaf(x):
        return Value(x)

    @staticmethod
    def grad(v):
        return v.grad

    @staticmethod
    def data(v):
        return v.data


class TorchLib:
    maximum = staticmethod(torch.maximum)
    minimum = staticmethod(torch.minimum)

    @staticmethod
    def leaf(x):
        return torch.tensor(x, dtype=torch.float64, requires_grad=True)

    @staticmethod
    def grad(t):
        return 0.0 if t.grad is None else t.grad.item()

    @staticmethod
    def data(t):
        return t.item()


def same(x, y, rel=1e-12):
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return x == pytest.approx(y, rel=rel, abs=1e-300)


def run(lib, fn, xs):
    leaves = [lib.leaf(x) for x in xs]
    out = fn(lib, *leaves)
    out.backward()
    return lib.data(out), [lib.grad(v) for v in leaves]


def check(fn, xs):
    got = run(FastLib, fn, xs)
    want = run(TorchLib, fn, xs)
    assert same(got[0], want[0]), (xs, got, want)
    assert all(same(g, w) for g, w in zip(got[1], want[1])), (xs, got, want)


UNARY = {
    "neg": lambda L, a: -a,
    "relu": lambda L, a: a.relu(),
    "tanh": lambda L, a: a.tanh(),
    "exp": lambda L, a: a.exp(),
    "sigmoid": lambda L, a: a.sigmoid(),
    "abs": lambda L, a: a.abs(),
    "abs_builtin": lambda L, a: abs(a),
    "square": lambda L, a: a ** 2,
    "cube": lambda L, a: a ** 3,
    "inverse": lambda L, a: a ** -1,
    "inverse_sq": lambda L, a: a ** -2,
    "add_c": lambda L, a: a + 2.5,
    "radd_c": lambda L, a: 2.5 + a,
    "sub_c": lambda L, a: a - 2.5,
    "rsub_c": lambda L, a: 2.5 - a,
    "mul_c": lambda L, a: a * -1.5,
    "rmul_c": lambda L, a: -1.5 * a,
    "div_c": lambda L, a: a / 0.3,
    "rdiv_c": lambda L, a: 0.3 / a,
    "rpow_c": lambda L, a: 2.0 ** a,
    "rpow_frac": lambda L, a: 0.5 ** a,
    "max_c": lambda L, a: L.maximum(a, a * 0 + 0.25),
    "min_c": lambda L, a: L.minimum(a, a * 0 + 0.25),
}
# any real point (zero excluded where the op divides by it)
ALL_POINTS = [-3.5, -1.0, -0.25, 0.0, 0.25, 1.0, 3.5, 1000.0, -1000.0]


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_and_constant_ops(name):
    fn = UNARY[name]
    for x in ALL_POINTS:
        if x == 0.0 and name in ("inverse", "inverse_sq", "rdiv_c"):
            continue
        if abs(x) == 1000.0 and name in ("exp", "cube", "rpow_c", "rpow_frac"):
            continue                                   # overflow: see test_engine_ops
        check(fn, [x])


POSITIVE_ONLY = {
    "log": lambda L, a: a.log(),
    "sqrt": lambda L, a: a.sqrt(),
    "pow_half": lambda L, a: a ** 0.5,
    "pow_frac": lambda L, a: a ** 1.7,
    "pow_neg_frac": lambda L, a: a ** -0.5,
}


@pytest.mark.parametrize("name", sorted(POSITIVE_ONLY))
def test_positive_domain_ops(name):
    for x in [1e-6, 0.01, 0.5, 1.0, 2.0, 77.0, 1e10]:
        check(POSITIVE_ONLY[name], [x])


def test_boundary_points():
    check(lambda L, a: a.sqrt(), [0.0])          # gradient +inf in both
    check(lambda L, a: a ** 0.5, [0.0])
    check(lambda L, a: a ** 2, [0.0])
    check(lambda L, a: a.relu(), [0.0])          # gradient 0 at the kink
    check(lambda L, a: a.abs(), [0.0])


BINARY = {
    "add": lambda L, a, b: a + b,
    "sub": lambda L, a, b: a - b,
    "mul": lambda L, a, b: a * b,
    "div": lambda L, a, b: a / b,
    "maximum": lambda L, a, b: L.maximum(a, b),
    "minimum": lambda L, a, b: L.minimum(a, b),
}
PAIRS = [(1.5, -2.0), (-0.3, 0.7), (2.0, 2.0), (-1.0, -1.0), (0.0, 3.0), (4.0, 0.5)]


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops(name):
    for a, b in PAIRS:                           # ties included (2, 2), (-1, -1)
        check(BINARY[name], [a, b])
        if not (name == "div" and a == 0.0):
            check(lambda L, x, y: BINARY[name](L, x, x) * y, [a, b])  # shared operand


def test_value_pow_value():
    for a, b in [(1.7, 2.3), (0.4, -1.5), (2.0, 0.5), (3.0, 0.0), (0.9, -3.0),
                 (0.0, 2.0), (0.0, 0.5), (-2.0, 3.0), (-1.5, -2.0)]:
        # negative base with an integer exponent: d/db is nan in both
        check(lambda L, x, y: x ** y, [a, b])


def test_readme_expression():
    def expr(L, a, b):
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + (b + a).relu()
        d = d + 3 * d + (b - a).relu()
        e = c - d
        f = e ** 2
        g = f / 2.0
        g = g + 10.0 / f
        return g
    check(expr, [-4.0, 2.0])


def test_sanity_check_expression():
    def expr(L, x):
        z = 2 * x + 2 + x
        q = z.relu() + z * x
        h = (z * z).relu()
        return h + q + q * x
    check(expr, [-4.0])
    check(expr, [1.3])


def test_beyond_micrograd_expression():
    def expr(L, x, y):
        u = (x * y).tanh() + (x - y).sigmoid() * (y.abs() + 1).log()
        v = L.maximum(u, x.exp() / 4) - L.minimum(y, x) ** 2
        return (v * v + 1).sqrt() + 2 ** (x / 3)
    for xs in ([0.3, -1.2], [1.1, 0.4], [-0.8, -0.8]):
        check(expr, xs)


def test_mlp_loss_gradient():
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    rng = random.Random(5)
    X = [[rng.uniform(-1.5, 2.5), rng.uniform(-1, 1.5)] for _ in range(20)]
    Y = [rng.choice([-1, 1]) for _ in range(20)]

    # fastgrad: the demo's svm loss + L2
    scores = [model(x) for x in X]
    data_loss = sum((1 + -yi * s).relu() for yi, s in zip(Y, scores)) * (1.0 / len(X))
    loss = data_loss + 1e-4 * sum(p * p for p in model.parameters())
    loss.backward()

    # torch: the same weights as float64 tensors
    layers = []
    for layer in model.layers:
        W = torch.tensor([[w.data for w in n.w] for n in layer.neurons],
                         dtype=torch.float64, requires_grad=True)
        B = torch.tensor([n.b.data for n in layer.neurons],
                         dtype=torch.float64, requires_grad=True)
        layers.append((W, B, layer.neurons[0].nonlin))
    h = torch.tensor(X, dtype=torch.float64)
    for W, B, nonlin in layers:
        h = h @ W.T + B
        if nonlin:
            h = torch.relu(h)
    y = torch.tensor(Y, dtype=torch.float64)
    t_loss = torch.relu(1 - y * h[:, 0]).mean()
    t_loss = t_loss + 1e-4 * sum((W ** 2).sum() + (B ** 2).sum() for W, B, _ in layers)
    t_loss.backward()

    assert loss.data == pytest.approx(t_loss.item(), rel=1e-12)
    got = [p.grad for p in model.parameters()]
    want = []
    for W, B, _ in layers:
        for i in range(W.shape[0]):
            want += W.grad[i].tolist() + [B.grad[i].item()]
    assert len(got) == len(want) == 337
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert any(g != 0.0 for g in got)
