"""A realistic user script, type-checked by ``mypy --strict`` and pyright's strict
mode (tests/test_typing.py, and .ci/lint.sh), and run by the test suite.

It touches every public entry point the documentation's tutorials use: Value
and its operators, maximum/minimum, no_grad, grad (first and second order),
functional (hessian, hvp, jacobian, vhp), num_grad and gradcheck, nn.MLP,
optim (SGD, Adam, lr_sweep), data, compile and the Program methods,
make_demo_step, viz, TracerWarning, sweep and DataParallel.  No annotation
below is needed only to please a checker: inferred types must be precise.
"""
import random
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

import fastgrad
from fastgrad import (GradcheckError, TracerWarning, Value, grad, gradcheck, maximum, minimum,
                      no_grad, num_grad, to_dot)
from fastgrad.compiled import Program, make_demo_step
from fastgrad.data import iterate_minibatches, sample_batch
from fastgrad.distributed import DataParallel, SweepResult
from fastgrad.functional import hessian, hvp, jacobian, vhp
from fastgrad.nn import MLP
from fastgrad.optim import SGD, Adam, LRSweepResult, lr_sweep

random.seed(0)
rng = np.random.default_rng(0)
X: npt.NDArray[np.float64] = rng.normal(size=(64, 2))
y: npt.NDArray[np.float64] = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)

# -- eager training: nn, optim, data ------------------------------------------
model = MLP(2, [8, 8, 1])
params = model.parameters()
opt = SGD(params, lr=0.05, momentum=0.9)


def batch_loss(Xb: npt.NDArray[np.float64], yb: npt.NDArray[np.float64]) -> Value:
    scores: list[Value] = [model([Value(float(a)), Value(float(b))]) for a, b in Xb]
    hinge = [(1 - float(t) * s).relu() for t, s in zip(yb, scores)]
    data_loss = sum(hinge, Value(0.0)) / len(hinge)      # a start Value: typed Value
    return data_loss + 1e-4 * sum((p * p for p in model.parameters()), Value(0.0))


loss = batch_loss(X, y)
for epoch in range(2):
    for Xb, yb in iterate_minibatches(X, y, batch_size=16, rng=rng):
        loss = batch_loss(Xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.lr = 0.05 * (1 - epoch / 2)

Xs, ys = sample_batch(X, y, 8, rng=1)
with no_grad():
    preds = [model(list(row)).data for row in Xs.tolist()]
adam = Adam(params, lr=1e-2)
adam.step()


def make_params() -> list[Value]:
    return [Value(0.0), Value(0.0)]


def line_loss(ps: list[Value]) -> Value:
    w, b = ps
    return sum(((w * x + b - (3 * x + 1)) ** 2 for x in (-1.0, 0.0, 1.0)), Value(0.0))


sweep_lr: LRSweepResult = lr_sweep(make_params, line_loss, lrs=[0.01, 0.1], steps=5)
best_lr = sweep_lr.best_lr                    # None when every rate diverged

# -- gradients: the lecture's gates, gradient checking --------------------------
a, b = Value(1.5, label="a"), Value(-0.5, label="b")
f = (a * b).tanh() + a ** 2 - b.exp() + maximum(a, b) * minimum(a, 0.0)
f.backward()
assert gradcheck(lambda u, v: (u * v).tanh() + u ** 2 - v.exp(), [a, b])
g = num_grad(lambda x: float(x[0] ** 2 + 3 * x[1]), np.array([2.0, 1.0]))
assert abs(g[0] - 4.0) < 1e-6 and abs(g[1] - 3.0) < 1e-6
message = ""
try:
    gradcheck(lambda u: u * 2.0, [Value(1.0)], atol=-1.0)
except (GradcheckError, ValueError) as err:
    message = str(err)

# -- second order ---------------------------------------------------------------
x = Value(3.0)
(dy,) = grad(x ** 3, x, create_graph=True)        # tuple[Value, ...]: no Optional
(d2y,) = grad(dy, x)
second: float = d2y.data + dy.grad
(maybe,) = grad(x * 2, [Value(1.0)], allow_unused=True)
unused = maybe is None


def rosenbrock(v: list[Value]) -> Value:
    return (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2


H = hessian(rosenbrock, [1.0, 1.0])
value, Hv = hvp(rosenbrock, [1.0, 1.0], [1.0, 0.0])
_, vH = vhp(rosenbrock, [1.0, 1.0], [0.0, 1.0])
J = jacobian(lambda v: [v[0] * v[1], v[0] + v[1]], [2.0, 3.0])
step = np.linalg.solve(H, np.array([1.0, 0.0])) + Hv + vH + J[0]

# -- the compiled replay --------------------------------------------------------
w = Value(2.0)
prog: Program = fastgrad.compile(lambda v: (v[0] * w).relu() + v[1], n_inputs=2, params=[w])
out = prog.forward([3.0, 1.0])
val, dx = prog.value_and_grad([3.0, 1.0])
n_ops: int = prog.n_instructions + prog.n_layers
tape = prog.tape()


def per_sample(v: list[Value]) -> list[Value]:
    s: Value = model(v[:2])
    return [(1 + -v[2] * s).relu(), s]


def penalty(ps: list[Value]) -> Value:
    return 1e-4 * sum((p * p for p in ps), Value(0.0))


train = fastgrad.compile(per_sample, 3, params=params, penalty=penalty)
batch_value: float = train.batch((X, y))
outputs = train.predict((X, y))
first_output: float = float(outputs[0, 0])
sgd_value: float = train.sgd_step((X, y), lr=0.1)
demo_step = make_demo_step(MLP(2, [4, 4, 1]))
demo_loss, demo_acc = demo_step(X, y, 0.1)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TracerWarning)
    frozen = fastgrad.compile(lambda v: v[0] * 2 if v[0].data > 0 else v[0], 1)

# -- past one machine -----------------------------------------------------------


def train_run(lr: float, seed: int) -> float:
    random.seed(seed)
    p = Value(1.0)
    for _ in range(5):
        p.grad = 0.0
        (p * p).backward()
        p.data -= lr * p.grad
    return p.data


result: SweepResult = fastgrad.sweep(train_run, {"lr": [0.1, 0.2]}, seeds=[0, 1],
                                     progress=False)
finals = [r for _, r in result]
with ThreadPoolExecutor(2) as pool:
    res2 = fastgrad.distributed.sweep(train_run, [{"lr": 0.1, "seed": 0}], executor=pool,
                                      progress=False)
    with DataParallel(per_sample, 3, params, (X, y), pool, penalty=penalty) as dp:
        dp_loss: float = dp.batch()
        dp_sgd: float = dp.sgd_step(0.1)

# -- graphs: DOT text needs nothing; a user attribute goes through setattr -------
dot_text: str = to_dot(f)
setattr(f, "note", "the output")
print(f"loss {loss.data:.4f}, f {f.data:.4f}, grad a {a.grad:.4f}, ops {n_ops}, "
      f"{len(preds)} predictions, {len(dot_text.splitlines())} DOT lines, "
      f"second {second}, unused {unused}, best lr {best_lr}, {len(finals)} sweep runs, "
      f"batch {batch_value:.4f}, data-parallel {dp_loss:.4f}, demo {demo_loss:.4f}, "
      f"{len(res2)} + {frozen.n_inputs} + {len(tape)} + {float(step[0]):.3f} "
      f"+ {first_output:.3f} + {sgd_value:.3f} + {dp_sgd:.3f} + {demo_acc} + {out} "
      f"+ {val} + {float(dx[0])} + {value} + {len(message)}")
