"""fastgrad against micrograd 0.1.0 itself: the README expression, its test
suite's sanity check, and micrograd's demo trained side by side."""
import gc
import random

import pytest

import fastgrad.engine
import fastgrad.nn

from _expressions import micrograd_readme_expression

mge = pytest.importorskip("micrograd.engine")
mgnn = pytest.importorskip("micrograd.nn")

FAST = (fastgrad.engine.Value, fastgrad.nn.MLP)
MICRO = (mge.Value, mgnn.MLP)


def readme_expression(Value):
    a, b, g = micrograd_readme_expression(Value)
    return g.data, a.grad, b.grad


def test_readme_expression_printed_values():
    # the numbers printed in micrograd's README
    g, ga, gb = readme_expression(fastgrad.engine.Value)
    assert f"{g:.4f}" == "24.7041"
    assert f"{ga:.4f}" == "138.8338"
    assert f"{gb:.4f}" == "645.5773"


def test_readme_expression_matches_micrograd():
    got = readme_expression(fastgrad.engine.Value)
    want = readme_expression(mge.Value)
    # micrograd divides as a * b**-1, fastgrad in one node: rounding only
    assert got == pytest.approx(want, rel=1e-13)


def sanity_check(Value):
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return y.data, x.grad


def test_sanity_check_matches_micrograd_exactly():
    # only + * relu: the same floating-point operations, bit for bit
    assert sanity_check(fastgrad.engine.Value) == sanity_check(mge.Value)
    # torch's numbers from micrograd's test_engine.py, derived by hand:
    # z = 3x + 2, y = z**2 + (relu(z) + z x)(1 + x); at x = -4: z = -10
    y, g = sanity_check(fastgrad.engine.Value)
    assert y == 100.0 + (0.0 + 40.0) * (-3.0) == -20.0
    # dy/dx = 2z*3 + (3x + z + 0) (1 + x) + (z x)  with relu'(z) = 0
    assert g == 2 * -10 * 3 + (3 * -4 + -10) * (1 - 4) + (-10 * -4) == 46.0


# ---------------------------------------------------------------------------
# micrograd's demo notebook, trained side by side
# ---------------------------------------------------------------------------

def moons():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.make_moons(n_samples=100, noise=0.1, random_state=1)
    return X, y * 2 - 1          # labels -1 / 1, as the demo


def _noop():
    pass


def break_cycles(root):
    """Drop micrograd's per-node closures once backward is done (each one is a
    reference cycle through its node), so the graph dies by reference
    counting instead of piling up for the cyclic collector.  Numbers are not
    affected: the closures are never called again."""
    seen, stack = set(), [root]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        v._backward = _noop
        stack.extend(v._prev)


def train(engine, X, y, steps, seed, after_step=None):
    """The demo's training loop verbatim; returns per-step (loss, accuracy)
    and the final parameters."""
    Value, MLP = engine
    random.seed(seed)
    model = MLP(2, [16, 16, 1])

    def loss():
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        alpha = 1e-4
        reg_loss = alpha * sum((p * p for p in model.parameters()))
        total_loss = data_loss + reg_loss
        accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
        return total_loss, sum(accuracy) / len(accuracy)

    history = []
    for k in range(steps):
        total_loss, acc = loss()
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        history.append((float(total_loss.data), acc))
        if after_step is not None:
            after_step(total_loss)
    return history, [float(p.data) for p in model.parameters()]


def train_micrograd(X, y, steps, seed):
    # micrograd's per-node closures make every step a cyclic-GC workout; the
    # collector does not change a single number, so pause it (and free each
    # step's graph by breaking its cycles) to keep the suite fast
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return train(MICRO, X, y, steps, seed, after_step=break_cycles)
    finally:
        if was_enabled:
            gc.enable()


def assert_same_training(fast, slow):
    (hist_f, params_f), (hist_s, params_s) = fast, slow
    assert len(hist_f) == len(hist_s)
    for k, ((lf, af), (ls, as_)) in enumerate(zip(hist_f, hist_s)):
        assert lf == pytest.approx(ls, rel=1e-9, abs=0.0), k
        assert af == as_, k
    assert params_f == pytest.approx(params_s, rel=1e-9, abs=1e-12)


def test_demo_three_steps_other_seed():
    X, y = moons()
    assert_same_training(train(FAST, X, y, 3, seed=0), train_micrograd(X, y, 3, seed=0))


@pytest.mark.slow
def test_demo_twenty_steps_side_by_side():
    X, y = moons()
    fast = train(FAST, X, y, 20, seed=1337)
    slow = train_micrograd(X, y, 20, seed=1337)
    assert_same_training(fast, slow)
    # the run is not degenerate: the model learns
    losses = [lo for lo, _ in fast[0]]
    assert losses[-1] < 0.5 * losses[0]
    assert fast[0][-1][1] >= 0.9
