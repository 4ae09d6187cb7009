"""Numerical vs analytic gradient (lecture 3, "Numerical Gradient").

The lecture's first way to get a gradient is finite differences: nudge one
input by a tiny h, evaluate f again, and take (f(x + h) - f(x)) / h.  It needs
one extra evaluation of f per input and is only approximate.  Backpropagation
(fastgrad's backward()) gives all partial derivatives exactly in one sweep.
Finite differences remain the standard way to *check* backprop: compare the
two with a relative error, as cs231n teaches.

Run: python examples/01_numerical_gradient.py
"""
import numpy as np

from fastgrad import Value
from fastgrad.numgrad import num_grad


def f(v):
    """f(a, b, c) = a*b + c**2; works on a numpy array and on a list of Values."""
    return v[0] * v[1] + v[2] ** 2


def lecture_num_grad(f, x, h=1e-5):
    """The lecture's loop, step by step: perturb each element in place, restore it."""
    fx = f(x)
    grad = np.zeros(x.shape)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old_value = x[ix]
        x[ix] = old_value + h          # f(x + h) ...
        fxh = f(x)
        x[ix] = old_value              # ... and put x back as it was
        grad[ix] = (fxh - fx) / h
        it.iternext()
    return grad


def relative_error(a, n):
    """|a - n| / max(|a|, |n|), 0 when both are 0 (cs231n: <= 1e-7 is good)."""
    scale = np.maximum(np.abs(a), np.abs(n))
    return np.where(scale > 0, np.abs(a - n) / np.where(scale > 0, scale, 1), 0.0)


x = np.array([3.0, -4.0, 2.0])

# analytic: by hand df/da = b, df/db = a, df/dc = 2c  ->  [-4, 3, 4]
values = [Value(float(xi)) for xi in x]
out = f(values)
out.backward()
analytic = np.array([v.grad for v in values])

loop = lecture_num_grad(f, x)                          # the lecture's code
forward = num_grad(f, x, h=1e-5, method="forward")     # same formula, fastgrad's loop
central = num_grad(f, x, h=1e-5, method="central")     # (f(x+h) - f(x-h)) / 2h

np.set_printoptions(precision=6, floatmode="fixed", suppress=True)
print(f"f(3, -4, 2) = {out.data}")
print(f"analytic (backward):        {analytic}")
print(f"lecture's loop (forward):   {loop}")
print(f"num_grad, forward:          {forward}")
print(f"num_grad, central:          {central}")
print(f"max relative error, forward: {relative_error(analytic, forward).max():.1e}")
print(f"max relative error, central: {relative_error(analytic, central).max():.1e}")
# The forward difference is off by about h for the curved c**2 term (4 + h);
# the central difference cancels that error term and agrees to ~1e-10.
