"""Mini-batch stochastic gradient descent (lecture 3, "Gradient Descent").

The lecture's loop:

    while True:
        data_batch = sample_data(training_data, 256)
        weights_grad = eval_grad(loss_fun, data_batch, weights)
        weights += - step_size * weights_grad

Each step looks at a random batch of 256 points instead of all 1,000, so it
is cheap and still heads downhill on average.  Here: a small MLP learns two
interleaving half-moons with the svm loss of micrograd's demo, updated by
fastgrad.optim.SGD.

Run: python examples/04_minibatch_sgd.py
"""
import random

import numpy as np

from fastgrad import no_grad
from fastgrad.nn import MLP
from fastgrad.optim import SGD

N, BATCH, STEPS = 1000, 256, 100
rng = np.random.default_rng(0)
random.seed(0)                       # fastgrad.nn draws weights from random

# two half-moons (as sklearn's make_moons), labels -1 and +1
t = rng.uniform(0, np.pi, N)
upper = rng.random(N) < 0.5
X = np.where(upper[:, None],
             np.c_[np.cos(t), np.sin(t)],
             np.c_[1 - np.cos(t), 0.5 - np.sin(t)]) + rng.normal(0, 0.1, (N, 2))
y = np.where(upper, -1, 1)
rows, labels = X.tolist(), y.tolist()

model = MLP(2, [8, 8, 1])
opt = SGD(model.parameters(), lr=0.5)


def sample_data(batch_size):
    """A random batch of (row, label) pairs, drawn without replacement."""
    idx = rng.choice(N, size=batch_size, replace=False)
    return [rows[i] for i in idx], [labels[i] for i in idx]


def loss_fun(Xb, yb):
    scores = [model(row) for row in Xb]
    data_loss = sum((1 - yi * s).relu() for yi, s in zip(yb, scores)) * (1.0 / len(yb))
    reg_loss = 1e-4 * sum(p * p for p in model.parameters())
    return data_loss + reg_loss


def accuracy():
    with no_grad():                  # evaluation only: build no graph
        return np.mean([(model(r).data > 0) == (yi > 0) for r, yi in zip(rows, labels)])


print(f"start: accuracy on all {N} points {accuracy():.3f}")
for step in range(STEPS):
    Xb, yb = sample_data(BATCH)
    loss = loss_fun(Xb, yb)
    opt.zero_grad()
    loss.backward()
    opt.lr = 0.5 * (1 - 0.9 * step / STEPS)     # decay the step size
    opt.step()
    if step % 20 == 0 or step == STEPS - 1:
        print(f"step {step:3d}  batch loss {loss.data:.4f}")
print(f"end: accuracy on all {N} points {accuracy():.3f}")
