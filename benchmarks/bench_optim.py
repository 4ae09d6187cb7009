"""Optimizer step cost: fastgrad.optim against the loops people write by hand.

Run (from a checkout with the extensions built in place)::

    PYTHONPATH=src python -m pytest benchmarks/bench_optim.py -q -s

Each test times the baseline and fastgrad's step in the same process (best
of several repeats, ``timeit``-style, per call), prints the ratio, records it
in pytest-benchmark's ``extra_info`` and asserts the target of issue 4:

* SGD over 10,000 Values: >= 20x faster than ``p.data -= lr * p.grad``;
* momentum SGD over 10,000 Values: >= 20x faster than the same formula in Python;
* the array path: within 2x of numpy's in-place ``p -= lr * g``.

Adam is timed for the record (no target).
"""
import timeit

import numpy as np
import pytest

from fastgrad import Value
from fastgrad.optim import SGD, Adam

N = 10_000
LR = 1e-12          # tiny: repeated steps leave the parameters where they are


def best_of(fn, repeat=7, min_time=0.05):
    """Seconds per call: best over ``repeat`` runs of an auto-sized loop."""
    number = 1
    while True:
        t = timeit.timeit(fn, number=number)
        if t >= min_time:
            break
        number *= 2
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def make_values(n=N, seed=0):
    rng = np.random.default_rng(seed)
    params = [Value(float(x)) for x in rng.normal(size=n)]
    for p, g in zip(params, rng.normal(size=n)):
        p.grad = float(g)
    return params


def report(benchmark, name, base, ours, *, faster_than=None, within=None):
    ratio = base / ours
    benchmark.extra_info.update(baseline_us=base * 1e6, fastgrad_us=ours * 1e6,
                                speedup=ratio)
    print(f"\n{name}: baseline {base * 1e6:.1f} us, fastgrad {ours * 1e6:.1f} us, "
          f"speedup {ratio:.1f}x")
    if faster_than is not None:
        assert ratio >= faster_than, f"{name}: {ratio:.1f}x < target {faster_than}x"
    if within is not None:
        assert ours <= within * base, f"{name}: {ours / base:.2f}x numpy > {within}x"


def test_sgd_values_vs_python_loop(benchmark):
    params = make_values()
    opt = SGD(params, lr=LR)

    def python_loop():
        lr = LR
        for p in params:
            p.data -= lr * p.grad

    base = best_of(python_loop)
    ours = best_of(opt.step)
    benchmark(opt.step)
    report(benchmark, "SGD step, 10k Values", base, ours, faster_than=20)


def test_momentum_sgd_values_vs_python_loop(benchmark):
    params = make_values()
    mu, damp, lr = 0.9, 0.0, LR
    opt = SGD(params, lr=lr, momentum=mu)
    opt.step()          # past the first step (buffer = gradient)
    bufs = [p.grad for p in params]

    def python_loop():
        # torch.optim.SGD's rule, written the way micrograd users would
        for i, p in enumerate(params):
            b = bufs[i] = bufs[i] * mu + (1 - damp) * p.grad
            p.data -= lr * b

    base = best_of(python_loop)
    ours = best_of(opt.step)
    benchmark(opt.step)
    report(benchmark, "momentum SGD step, 10k Values", base, ours, faster_than=20)


def test_adam_values_vs_python_loop(benchmark):
    params = make_values()
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, LR
    opt = Adam(params, lr=lr)
    m = [0.0] * N
    v = [0.0] * N
    t = [0]

    def python_loop():
        t[0] += 1
        step_size = lr / (1 - b1 ** t[0])
        bc2_sqrt = (1 - b2 ** t[0]) ** 0.5
        for i, p in enumerate(params):
            g = p.grad
            m[i] += (1 - b1) * (g - m[i])
            v[i] = v[i] * b2 + (1 - b2) * g * g
            p.data -= step_size * m[i] / ((v[i] ** 0.5) / bc2_sqrt + eps)

    base = best_of(python_loop)
    ours = best_of(opt.step)
    benchmark(opt.step)
    report(benchmark, "Adam step, 10k Values (no target)", base, ours)


@pytest.mark.parametrize("n", [N, 1_000_000])
def test_sgd_arrays_vs_numpy_inplace(benchmark, n):
    rng = np.random.default_rng(0)
    p = rng.normal(size=n)
    g = rng.normal(size=n)
    opt = SGD.from_arrays([p], [g], lr=LR)

    def numpy_inplace():
        nonlocal p
        p -= LR * g

    base = best_of(numpy_inplace)
    ours = best_of(opt.step)
    benchmark(opt.step)
    report(benchmark, f"SGD step, array of {n}", base, ours, within=2.0)


@pytest.mark.parametrize("n", [N, 1_000_000])
def test_momentum_sgd_arrays_vs_numpy(benchmark, n):
    # no target in the issue; recorded for the notes
    rng = np.random.default_rng(0)
    p = rng.normal(size=n)
    g = rng.normal(size=n)
    buf = g.copy()
    opt = SGD.from_arrays([p], [g], lr=LR, momentum=0.9)
    opt.step()

    def numpy_momentum():
        np.multiply(buf, 0.9, out=buf)
        np.add(buf, g, out=buf)
        np.subtract(p, LR * buf, out=p)

    base = best_of(numpy_momentum)
    ours = best_of(opt.step)
    benchmark(opt.step)
    report(benchmark, f"momentum SGD step, array of {n} (no target)", base, ours)
