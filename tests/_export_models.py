"""Models the export tests (and their DDP worker processes) record, each as
a compiled Program with its data.  Written as their users write them."""
import random

import numpy as np

import fastgrad
from fastgrad import Value
from fastgrad.compiled import make_demo_step
from fastgrad.nn import MLP


def moons(n=100, seed=1337):
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=n, noise=0.1, random_state=np.random.RandomState(seed))
    return X, (y * 2 - 1).astype(np.float64)


def demo(seed=1337):
    """micrograd's demo: MLP(2, [16, 16, 1]), svm loss, 1e-4 L2 penalty.
    Returns (program, inputs) with inputs the tuple (X, y)."""
    random.seed(seed)
    model = MLP(2, [16, 16, 1])
    prog = make_demo_step(model).program
    return prog, moons()


# -- the nn-zero-to-hero lecture's classes: tanh everywhere, random biases,
# -- sum((wi*xi ...), self.b), squared error


class LectureNeuron:
    def __init__(self, nin):
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(random.uniform(-1, 1))

    def __call__(self, x):
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.tanh()

    def parameters(self):
        return self.w + [self.b]


class LectureLayer:
    def __init__(self, nin, nout):
        self.neurons = [LectureNeuron(nin) for _ in range(nout)]

    def __call__(self, x):
        outs = [n(x) for n in self.neurons]
        return outs[0] if len(outs) == 1 else outs

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]


class LectureMLP:
    def __init__(self, nin, nouts):
        sz = [nin] + nouts
        self.layers = [LectureLayer(sz[i], sz[i + 1]) for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


def lecture(seed=0, n=64):
    """MLP(3, [4, 4, 1]) of the lecture, per-sample (ypred - y)**2."""
    random.seed(seed)
    model = LectureMLP(3, [4, 4, 1])

    def per_sample(v):
        return [(model(v[:3]) - v[3]) ** 2]

    prog = fastgrad.compile(per_sample, 4, params=model.parameters())
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 3))
    y = np.sign(X[:, 0] * X[:, 1] + X[:, 2])
    return prog, (X, y)


def digits(seed=0, hidden=32, nonlin="relu"):
    """scikit-learn's digits, MLP(64, [hidden, 10]), softmax cross-entropy
    written from exp/log: log(sum(exp(z))) - z[label] (label one-hot inputs)."""
    from sklearn.datasets import load_digits
    data = load_digits()
    X = data.data / 16.0
    Y = np.eye(10)[data.target]
    random.seed(seed)
    model = MLP(64, [hidden, 10])
    if nonlin == "tanh":
        for neuron in model.layers[0].neurons:
            neuron.nonlin = False

    def per_sample(v):
        x, onehot = v[:64], v[64:]
        h = model.layers[0](x)
        if nonlin == "tanh":
            h = [hi.tanh() for hi in h]
        z = model.layers[1](h)
        lse = sum(zi.exp() for zi in z).log()
        return [lse - sum(t * zi for t, zi in zip(onehot, z))] + z

    prog = fastgrad.compile(per_sample, 74, params=model.parameters(),
                            penalty=lambda ps: 1e-4 * sum(p * p for p in ps))
    return prog, (X, Y)


# -- the other ways users write a neuron (issue 20's model-code styles)

NEURON_STYLES = {
    "sum(...) + b": lambda w, x, b: sum(wi * xi for wi, xi in zip(w, x)) + b,
    "b + sum(...)": lambda w, x, b: b + sum(wi * xi for wi, xi in zip(w, x)),
    "sum(...), no bias": lambda w, x, b: sum(wi * xi for wi, xi in zip(w, x)),
    "sum((x*w ...), b)": lambda w, x, b: sum((xi * wi for wi, xi in zip(w, x)), b),
}
ACTIVATION_STYLES = {
    "relu": lambda z: z.relu(),
    "tanh": lambda z: z.tanh(),
    "sigmoid": lambda z: z.sigmoid(),
    "1/(1+exp(-z))": lambda z: 1 / (1 + (-z).exp()),
}


def styled(neuron, activation, sizes=(2, 8, 8, 1), seed=0, n=40):
    """An MLP written with the given neuron sum and hidden activation,
    per-sample squared error; returns (program, (X, y))."""
    random.seed(seed)
    Ws = [[[Value(random.uniform(-1, 1)) for _ in range(sizes[i])]
           for _ in range(sizes[i + 1])] for i in range(len(sizes) - 1)]
    bs = [[Value(random.uniform(-0.5, 0.5)) for _ in range(sizes[i + 1])]
          for i in range(len(sizes) - 1)]
    dot, act = NEURON_STYLES[neuron], ACTIVATION_STYLES[activation]
    uses_bias = neuron != "sum(...), no bias"
    params = [p for W, b in zip(Ws, bs) for row, bi in zip(W, b)
              for p in row + ([bi] if uses_bias else [])]

    def per_sample(v):
        h = v[:sizes[0]]
        for li, (W, b) in enumerate(zip(Ws, bs)):
            z = [dot(row, h, bi) for row, bi in zip(W, b)]
            h = z if li == len(Ws) - 1 else [act(zi) for zi in z]
        return [(h[0] - v[sizes[0]]) ** 2, h[0]]

    prog = fastgrad.compile(per_sample, sizes[0] + 1, params=params)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, sizes[0]))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1])
    return prog, (X, y)
