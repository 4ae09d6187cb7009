"""Gradient descent and the step size (lecture 3, "Gradient Descent").

Fit a line y = w*x + b to five points by repeatedly stepping against the
gradient of the mean squared error, for several step sizes (learning rates),
and pick the best: the lecture's "validate learning rate".  Too small a step
barely moves in 50 steps; too large a step overshoots and diverges.

Here the answer is known in closed form: with x = [-2..2] and y = 3x + 1 the
loss is 2(w - 3)^2 + (b - 1)^2, so from w = b = 0 after k steps of size lr it is
18 (1 - 4 lr)^(2k) + (1 - 2 lr)^(2k), and any lr >= 0.5 diverges.

Run: python examples/03_gradient_descent.py
"""
from fastgrad import Value

xs = [-2.0, -1.0, 0.0, 1.0, 2.0]
ys = [3.0 * x + 1.0 for x in xs]          # the line to recover: w = 3, b = 1
STEPS = 50


def loss_fn(w, b):
    """Mean squared error of the line w*x + b on the five points."""
    return sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) * (1.0 / len(xs))


def train(lr, steps=STEPS):
    w, b = Value(0.0), Value(0.0)
    for _ in range(steps):
        loss = loss_fn(w, b)
        w.grad = b.grad = 0.0        # backward() accumulates: reset first
        loss.backward()
        for p in (w, b):             # the lecture's: weights += -step_size * grad
            p.data -= lr * p.grad
    return loss_fn(w, b).data, w.data, b.data


start = loss_fn(Value(0.0), Value(0.0)).data
print(f"initial loss {start}")
results = {}
for lr in [0.001, 0.01, 0.1, 0.3, 0.6]:
    loss, w, b = train(lr)
    results[lr] = loss
    verdict = "diverged" if loss > start else ("slow" if loss > 1e-3 else "converged")
    print(f"lr {lr:<6} loss after {STEPS} steps {loss:.6g}  (w = {w:.4f}, b = {b:.4f})"
          f"  {verdict}")
best = min(results, key=results.get)
print(f"best step size: {best}")
