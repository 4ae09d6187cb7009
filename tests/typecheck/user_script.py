"""A realistic user script, type-checked by tests/test_typing.py with mypy --strict.

It touches every typed public entry point a user reaches for: Value and its
operators, nn.MLP, optim.SGD/Adam, num_grad, gradcheck, no_grad, compile,
data and viz.  It is also run (it must work, not only type-check).
"""
import random

import numpy as np
import numpy.typing as npt

import fastgrad
from fastgrad import Value, gradcheck, no_grad, num_grad, to_dot
from fastgrad.data import iterate_minibatches, sample_batch
from fastgrad.nn import MLP
from fastgrad.optim import SGD, Adam

random.seed(0)
rng = np.random.default_rng(0)
X: npt.NDArray[np.float64] = rng.normal(size=(64, 2))
y: npt.NDArray[np.float64] = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)

model = MLP(2, [8, 8, 1])
opt = SGD(model.parameters(), lr=0.05, momentum=0.9)


def batch_loss(Xb: npt.NDArray[np.float64], yb: npt.NDArray[np.float64]) -> Value:
    scores: list[Value] = [model([Value(float(a)), Value(float(b))]) for a, b in Xb]
    hinge = [(1 - float(t) * s).relu() for t, s in zip(yb, scores)]
    data_loss = sum(hinge, Value(0.0)) / len(hinge)      # a start Value: typed Value
    return data_loss + 1e-4 * sum((p * p for p in model.parameters()), Value(0.0))


for epoch in range(3):
    for Xb, yb in iterate_minibatches(X, y, batch_size=16, rng=rng):
        loss = batch_loss(Xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.lr = 0.05 * (1 - epoch / 3)

Xs, ys = sample_batch(X, y, 8, rng=1)
with no_grad():
    preds: list[float] = [model(list(row)).data for row in Xs.tolist()]

# hand-derived gradients against finite differences
a, b = Value(1.5, label="a"), Value(-0.5, label="b")
f = (a * b).tanh() + a ** 2 - b.exp()
f.backward()
assert gradcheck(lambda u, v: (u * v).tanh() + u ** 2 - v.exp(), [a, b])
g = num_grad(lambda x: float(x[0] ** 2 + 3 * x[1]), np.array([2.0, 1.0]))
assert abs(g[0] - 4.0) < 1e-6 and abs(g[1] - 3.0) < 1e-6
m = fastgrad.maximum(a, b) + fastgrad.minimum(a, 0.0)

# the compiled replay of one sample's score
w = Value(2.0)
prog = fastgrad.compile(lambda v: (v[0] * w).relu() + v[1], n_inputs=2, params=[w])
out = prog.forward([3.0, 1.0])
val, dx = prog.value_and_grad([3.0, 1.0])
adam = Adam(list(prog.params), lr=1e-2)
adam.step()
n_ops: int = prog.n_instructions

# graphs: DOT text needs nothing; a user attribute goes through setattr
dot_text: str = to_dot(f)
setattr(f, "note", "the output")
print(f"loss {loss.data:.4f}, f {f.data:.4f}, grad a {a.grad:.4f}, ops {n_ops}, "
      f"{len(preds)} predictions, {len(dot_text.splitlines())} DOT lines, {m.data}")
