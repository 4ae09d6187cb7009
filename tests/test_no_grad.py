"""fastgrad.no_grad(): a context manager and decorator under which operations
compute values but record no graph."""
import random
import threading

import pytest

from fastgrad import Value, maximum, minimum, no_grad
from fastgrad.engine import is_grad_enabled, set_grad_enabled
from fastgrad.nn import MLP


@pytest.fixture(autouse=True)
def grad_mode_restored():
    # a failing test must not leave recording off for the rest of the suite
    assert is_grad_enabled()
    yield
    set_grad_enabled(True)


def every_op(x, y):
    return [x + y, x - y, x * y, x / y, x ** 2, x ** y, 2 ** x, -x, x + 1,
            1 - x, 3 * x, 1 / x, x.relu(), x.tanh(), x.exp(), x.log(),
            x.sigmoid(), x.abs(), abs(x), x.sqrt(), maximum(x, y), minimum(x, 1.0)]


def test_ops_inside_produce_leaves_with_the_right_values():
    x, y = Value(1.5), Value(0.5)
    recorded = every_op(x, y)
    with no_grad():
        assert not is_grad_enabled()
        leaves = every_op(x, y)
    assert is_grad_enabled()
    for r, leaf in zip(recorded, leaves):
        assert leaf.data == r.data
        assert leaf._prev == set() and leaf._op == ""
        assert r._prev != set()
    # backward from such a leaf is an error (there is no graph), as PyTorch's
    # "does not require grad"; nothing is touched
    with pytest.raises(RuntimeError, match="recording off"):
        leaves[2].backward()
    assert (x.grad, y.grad, leaves[2].grad) == (0.0, 0.0, 0.0)


def test_decorator():
    x = Value(2.0)

    @no_grad()
    def evaluate(v):
        assert not is_grad_enabled()
        return v * v + 1

    out = evaluate(x)
    assert is_grad_enabled()
    assert out.data == 5.0 and out._prev == set()
    assert (x * x)._prev == {x}


def test_nested():
    x = Value(3.0)
    with no_grad():
        with no_grad():
            a = x * 2
        assert not is_grad_enabled()     # the inner exit keeps the outer setting
        b = x * 2
    assert is_grad_enabled()
    assert a._prev == set() and b._prev == set()
    assert (x * 2)._prev != set()


def test_restored_after_exception():
    x = Value(1.0)
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            x / 0
    assert is_grad_enabled()

    @no_grad()
    def fails():
        raise KeyError("boom")
    with pytest.raises(KeyError):
        fails()
    assert is_grad_enabled()
    assert (x + 1)._prev != set()


def test_errors_still_raised_inside():
    with no_grad():
        with pytest.raises(ValueError):
            Value(-1.0).log()
        with pytest.raises(TypeError):
            Value(1.0) + "x"


def test_set_grad_enabled_returns_previous_mode():
    assert set_grad_enabled(False) is True
    assert set_grad_enabled(False) is False
    assert set_grad_enabled(True) is False
    assert is_grad_enabled() is True


def test_model_evaluation_under_no_grad_matches_recorded_forward():
    random.seed(7)
    model = MLP(2, [8, 8, 1])
    xs = [[0.3, -1.2], [1.5, 0.25], [-0.7, 0.9]]
    recorded = [model(x).data for x in xs]
    with no_grad():
        outs = [model(x) for x in xs]
    assert [o.data for o in outs] == recorded
    assert all(o._prev == set() for o in outs)
    assert all(p.grad == 0.0 for p in model.parameters())


def test_grad_mode_is_thread_local():
    # documented: each thread has its own setting, on at thread start
    # (issue #12, item 7; see tests/test_grad_mode_threads.py)
    seen = []
    with no_grad():
        t = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        t.start()
        t.join()
        assert not is_grad_enabled()
    assert seen == [True]


def test_recursive_decorated_function_restores_mode():
    @no_grad()
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(3) == 3
    assert is_grad_enabled()


def test_reentering_one_instance_restores_mode():
    ng = no_grad()
    with ng:
        with ng:
            pass
    assert is_grad_enabled()
