"""Validating the step size from curvature (the lecture, extended).

Lecture 3 picks the step size by trying several and keeping the best.
Second derivatives say where the cliff is.  Near a minimum the loss is
roughly quadratic, f(w) ~ f* + (w - w*)^T H (w - w*) / 2, and a gradient step
multiplies the error along each eigenvector of H by (1 - lr * lambda): it
shrinks only if lr < 2 / lambda for every eigenvalue, i.e.

    gradient descent is stable  <=>  lr < 2 / lambda_max.

lambda_max comes from power iteration on Hessian-vector products
(``fastgrad.functional.hvp``, never forming H).  ``optim.lr_sweep`` then
shows the loss blowing up just above 2 / lambda_max:

* on a quadratic bowl -- example 03's line fit, loss 2 (w-3)^2 + (b-1)^2,
  Hessian diag(4, 2): lambda_max = 4, bound 0.5, exactly where 03 saw
  divergence start;
* on the demo MLP's loss (micrograd's moons + MLP(2, [16, 16, 1])) at its
  initial weights.  There the bound is *local*: it holds where H was measured
  and for as long as the curvature there stays the same; training moves the
  weights and changes lambda_max.

Finally, the MLP's Hessian (337 x 337) is checked against central
differences of its gradient (on 48 random columns, to keep it quick).

Run: python examples/06_curvature_step_size.py [--plot step_size_bound.png]
"""
import argparse
import random

import numpy as np

from fastgrad import Value, grad
from fastgrad.functional import hessian, hvp
from fastgrad.nn import MLP
from fastgrad.optim import lr_sweep

ALPHA = 1e-4


def power_iteration(f, x, shift=0.0, iters=200, tol=1e-9, seed=0):
    """Eigenvalue of H - shift*I of largest magnitude: v <- (H - shift) v,
    until the Rayleigh quotient changes by less than tol (relative)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(len(x))
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        _, hv = hvp(f, x, v)
        hv = hv - shift * v
        lam, previous = float(v @ hv), lam      # Rayleigh quotient
        v = hv / np.linalg.norm(hv)
        if abs(lam - previous) <= tol * abs(lam):
            break
    return lam


def largest_eigenvalue(f, x):
    """lambda_max of the Hessian of f at x from Hessian-vector products.

    Power iteration finds the eigenvalue of largest *magnitude*; if that one
    is negative (a saddle direction), iterate again on H - lam*I, whose
    largest-magnitude eigenvalue is lambda_max - lam.
    """
    lam = power_iteration(f, x)
    if lam < 0:
        lam = power_iteration(f, x, shift=lam) + lam
    return lam


# -- a quadratic bowl: example 03's line fit ---------------------------------
xs = [-2.0, -1.0, 0.0, 1.0, 2.0]
ys = [3.0 * x + 1.0 for x in xs]


def line_loss(params):
    w, b = params
    return sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) * (1.0 / len(xs))


# -- the demo MLP ------------------------------------------------------------
def moons(n=100, noise=0.1, seed=1):
    rng = np.random.default_rng(seed)
    t = np.pi * rng.random(n)
    inner = rng.random(n) < 0.5
    X = np.where(inner[:, None],
                 np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]),
                 np.column_stack([np.cos(t), np.sin(t)]))
    X += noise * rng.standard_normal((n, 2))
    y = np.where(inner, 1.0, -1.0)
    return X.tolist(), y.tolist()


X, Y = moons()


def make_model():
    random.seed(1337)
    return MLP(2, [16, 16, 1])


def mlp_loss(model):
    """micrograd's demo loss: mean svm margin + L2."""
    scores = [model(row) for row in X]
    losses = [(1 + -yi * si).relu() for yi, si in zip(Y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    return data_loss + ALPHA * sum(p * p for p in model.parameters())


def sweep(factory, loss_fn, bound, steps, factors):
    res = lr_sweep(factory, loss_fn, lrs=[f * bound for f in factors], steps=steps)
    start = res.losses[0, 0]
    print(f"  lr_sweep, {steps} steps from the same start (loss {start:.6g}):")
    for f, lr, final in zip(factors, res.lrs, res.final):
        verdict = "diverged" if not final < start else "decreased"
        print(f"    lr = {f:4.2f} x 2/lambda_max = {lr:<9.4g} final loss {final:<12.6g}"
              f" {verdict}")
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the loss-vs-lr plot to this PNG file")
    args = parser.parse_args()

    print("quadratic bowl (example 03): loss = 2 (w-3)^2 + (b-1)^2")
    lam_q = largest_eigenvalue(line_loss, [0.0, 0.0])
    bound_q = 2.0 / lam_q
    print(f"  lambda_max by power iteration on hvp: {lam_q:.6f}   bound 2/lambda_max = "
          f"{bound_q:.6f}")
    sweep(lambda: [Value(0.0), Value(0.0)], line_loss, bound_q, steps=50,
          factors=[0.5, 0.8, 0.95, 1.05, 1.2, 1.5])

    print("demo MLP loss (100 moons points, MLP(2, [16, 16, 1]), initial weights)")
    model = make_model()
    params = model.parameters()
    theta = [p.data for p in params]
    lam_m = largest_eigenvalue(lambda ps: mlp_loss(model), params)
    bound_m = 2.0 / lam_m
    print(f"  lambda_max by power iteration on hvp: {lam_m:.6f}   bound 2/lambda_max = "
          f"{bound_m:.6f}  (local: at these weights)")
    sweep(make_model, mlp_loss, bound_m, steps=30,
          factors=[0.5, 0.95, 1.05, 2.0, 3.0, 4.0, 6.0])
    print("  The bound is local: it describes steps small enough for the loss to\n"
          "  look quadratic around these weights.  The hinge loss has kinks and a\n"
          "  large gradient here, so one step at 2/lambda_max already leaves that\n"
          "  region: the bound is no sharp cliff on this loss.  Runs just above it\n"
          "  still reduce the loss; only steps several times larger diverge.")

    print("Hessian of the demo MLP loss at the initial weights vs central "
          "differences of its gradient")
    for p, t in zip(params, theta):
        p.data = t
    H = hessian(lambda ps: mlp_loss(model), params)
    h = 1e-6

    def gradient(at):
        for p, t in zip(params, at):
            p.data = t
        return np.array([g.data for g in grad(mlp_loss(model), params)])

    theta = np.array(theta)
    # 48 random columns (two gradients each) keep the check to a few seconds
    cols = np.sort(np.random.default_rng(0).choice(len(theta), 48, replace=False))
    H_fd = np.empty((len(theta), len(cols)))
    for c, j in enumerate(cols):
        e = np.zeros(len(theta))
        e[j] = h
        H_fd[:, c] = (gradient(theta + e) - gradient(theta - e)) / (2 * h)
    err = np.max(np.abs(H[:, cols] - H_fd)) / np.max(np.abs(H[:, cols]))
    print(f"  H is {H.shape[0]} x {H.shape[1]}; on {len(cols)} random columns "
          f"max |H - H_fd| / max |H| = {err:.2e}; symmetric to "
          f"{np.max(np.abs(H - H.T)):.1e}")
    print(f"  largest eigenvalue of H by numpy: {np.linalg.eigvalsh((H + H.T) / 2)[-1]:.6f} "
          f"(power iteration: {lam_m:.6f})")

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter, NullFormatter
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        panels = [(axes[0], "quadratic bowl (example 03)", bound_q, 2.0, 50,
                   lambda: [Value(0.0), Value(0.0)], line_loss),
                  (axes[1], "demo MLP loss (initial weights)", bound_m, 8.0, 30,
                   make_model, mlp_loss)]
        for ax, title, bound, top, steps, factory, fn in panels:
            dense = lr_sweep(factory, fn, lrs=np.geomspace(bound / 4, bound * top, 17),
                             steps=steps)
            finals = np.where(np.isfinite(dense.final), dense.final, np.nan)
            finals = np.maximum(finals, 1e-30)       # converged to rounding (or 0)
            ax.semilogy(dense.lrs, finals, "o-", label=f"loss after {steps} steps")
            ax.axvline(bound, color="red", linestyle="--",
                       label=f"2 / lambda_max = {bound:.3g}")
            ax.axhline(dense.losses[0, 0], color="gray", linestyle=":",
                       label="initial loss")
            ax.set_xscale("log")
            ax.set_xticks([bound * f for f in (0.25, 0.5, 1, 2, 4, 8) if f <= top])
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("learning rate (log scale)")
            ax.set_ylabel("loss")
            ax.set_title(title)
            ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
