"""num_grad's per-element cost against the lecture's np.nditer loop; gradcheck time.

Run (from a checkout with the extensions built in place)::

    PYTHONPATH=src python -m pytest benchmarks/bench_numgrad.py -q -s
    PYTHONPATH=src python benchmarks/bench_numgrad.py      # plain figures

Target of issue 3: with a trivial ``f`` (``x[0]``) on a 10**5-element array,
the per-element overhead of ``num_grad`` (time per element minus the cost of
the call(s) to ``f`` itself) is at least 10x lower than the lecture's.  Both
loops run in the same process, method "forward" (one call of f per element,
as the lecture).  gradcheck on micrograd's demo loss is timed for the record.
"""
import operator
import random
import time
from collections import deque
from itertools import repeat

import numpy as np
import pytest

from fastgrad import Value, gradcheck, num_grad
from fastgrad.bench.workloads import lecture_num_grad  # the lecture's nditer loop
from fastgrad.nn import MLP

N = 100_000
TRIVIAL_F = operator.itemgetter(0)     # f(x) = x[0]: about the cheapest f there is


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_element(n=N, pairs=7):
    """Per-element times (seconds) of both loops on a trivial f, and f's cost.

    Overhead = loop time minus the time of calling f the same number of times
    from C (``deque(map(f, repeat(x, calls)))``), each difference taken on a
    pair of back-to-back runs and the median over ``pairs`` pairs kept, so
    that load from other processes hits both halves of a pair alike.
    """
    x = np.random.default_rng(0).uniform(-1, 1, size=n)

    def calls(k):
        return lambda: deque(map(TRIVIAL_F, repeat(x, k)), maxlen=0)

    loops = {
        # name: (loop, calls of f per element)
        "lecture": (lambda: lecture_num_grad(TRIVIAL_F, x), 1),
        "forward": (lambda: num_grad(TRIVIAL_F, x, method="forward"), 1),
        "central": (lambda: num_grad(TRIVIAL_F, x, method="central"), 2),
    }
    out = {}
    for name, (loop, k) in loops.items():
        loop()                                   # warm up
        total, over = [], []
        for _ in range(pairs):
            t_loop = seconds(loop)
            t_f = seconds(calls(k * n))
            total.append(t_loop / n)
            over.append((t_loop - t_f) / n)
        out[name] = float(np.median(total))
        out[name + "_overhead"] = float(np.median(over))
    out["f"] = min(seconds(calls(n)) for _ in range(pairs)) / n
    return out


def demo_loss(n_points, seed=0):
    """micrograd's demo: MLP(2, [16, 16, 1]), svm loss + L2 on make_moons."""
    from sklearn.datasets import make_moons
    random.seed(seed)
    X, y = make_moons(n_samples=100, noise=0.1, random_state=1)
    y = y * 2 - 1
    model = MLP(2, [16, 16, 1])
    params = model.parameters()
    Xb, yb = X[:n_points], y[:n_points]

    def loss(*_):
        inputs = [list(map(Value, xrow)) for xrow in Xb]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(yb, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        return data_loss + 1e-4 * sum((p * p for p in params))

    return loss, params


# ---------------------------------------------------------------------------
# pytest-benchmark: the two loops side by side
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_x():
    return np.random.default_rng(0).uniform(-1, 1, size=N)


@pytest.mark.benchmark(group="num_grad: trivial f, 10**5 elements")
def test_lecture_nditer(benchmark, big_x):
    benchmark.pedantic(lecture_num_grad, args=(TRIVIAL_F, big_x), rounds=3, iterations=1)


@pytest.mark.benchmark(group="num_grad: trivial f, 10**5 elements")
def test_fastgrad_forward(benchmark, big_x):
    benchmark.pedantic(num_grad, args=(TRIVIAL_F, big_x), kwargs={"method": "forward"},
                       rounds=5, iterations=1)


@pytest.mark.benchmark(group="num_grad: trivial f, 10**5 elements")
def test_fastgrad_central(benchmark, big_x):
    benchmark.pedantic(num_grad, args=(TRIVIAL_F, big_x), rounds=5, iterations=1)


@pytest.mark.benchmark(group="num_grad: overhead ratio")
def test_overhead_ratio(benchmark):
    t = benchmark.pedantic(per_element, rounds=1, iterations=1)
    # our overhead can measure <= 0 (it is within noise of the f call itself)
    ratio = t["lecture_overhead"] / max(t["forward_overhead"], 1e-12)
    benchmark.extra_info.update({k: v * 1e9 for k, v in t.items()}, overhead_ratio=ratio)
    print(f"\nper element: lecture {t['lecture'] * 1e9:.0f} ns, fastgrad forward "
          f"{t['forward'] * 1e9:.0f} ns, central {t['central'] * 1e9:.0f} ns; "
          f"f alone {t['f'] * 1e9:.0f} ns; overhead lecture "
          f"{t['lecture_overhead'] * 1e9:.0f} ns vs fastgrad "
          f"{t['forward_overhead'] * 1e9:.0f} ns: {ratio:.1f}x lower")
    assert ratio >= 10, f"per-element overhead only {ratio:.1f}x lower (target 10x)"


@pytest.mark.benchmark(group="gradcheck: demo MLP loss (337 parameters)")
@pytest.mark.parametrize("n_points", [4, 100])
def test_gradcheck_demo_loss(benchmark, n_points):
    pytest.importorskip("sklearn")
    loss, params = demo_loss(n_points)
    ok = benchmark.pedantic(gradcheck, args=(loss, params),
                            kwargs={"raise_exception": False}, rounds=1, iterations=1)
    benchmark.extra_info["passed"] = ok


def main():
    t = per_element()
    print(f"num_grad, trivial f = x[0], {N} float64 elements (per element, median of "
          "7 runs):")
    print(f"  lecture np.nditer (forward): {t['lecture'] * 1e9:8.0f} ns")
    print(f"  fastgrad forward           : {t['forward'] * 1e9:8.0f} ns")
    print(f"  fastgrad central (2 calls) : {t['central'] * 1e9:8.0f} ns")
    print(f"  the call f(x) alone        : {t['f'] * 1e9:8.0f} ns")
    print(f"  overhead beyond f: lecture {t['lecture_overhead'] * 1e9:.0f} ns, "
          f"fastgrad forward {t['forward_overhead'] * 1e9:.0f} ns, central "
          f"{t['central_overhead'] * 1e9:.0f} ns "
          f"-> {t['lecture_overhead'] / max(t['forward_overhead'], 1e-12):.1f}x lower "
          "(forward); "
          f"total time {t['lecture'] / t['forward']:.1f}x lower")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return
    for n_points in (4, 100):
        loss, params = demo_loss(n_points)
        start = time.perf_counter()
        ok = gradcheck(loss, params, raise_exception=False)
        elapsed = time.perf_counter() - start
        print(f"gradcheck, demo MLP loss on {n_points} points, {len(params)} parameters "
              f"({2 * len(params)} evaluations): {elapsed:.3f} s, passed={ok}")


if __name__ == "__main__":
    main()
