"""Deep and wide graphs: nothing recursive on graph depth (build, backward,
``_prev`` traversal, deallocation), and memory comes back after ``del``.

All of it runs under the DEFAULT recursion limit: nothing here (or in
fastgrad) calls sys.setrecursionlimit.
"""
import gc
import math
import sys
import tracemalloc

import pytest

from fastgrad import Value, maximum

DEPTH = 1_000_000


@pytest.fixture(autouse=True)
def default_recursion_limit():
    # CPython's default; a deep test that passed only thanks to a raised
    # limit would prove nothing
    assert sys.getrecursionlimit() <= 1000
    yield


def blocks():
    gc.collect()
    return sys.getallocatedblocks()


def test_micrograd_fails_where_fastgrad_must_work():
    # why this file exists: micrograd's recursive topological sort
    mg = pytest.importorskip("micrograd.engine")
    y = mg.Value(1.0)
    for _ in range(2000):
        y = y + 1
    with pytest.raises(RecursionError):
        y.backward()


def test_million_deep_chain_builds_backprops_and_frees():
    base = blocks()
    x = Value(0.5)
    y = x
    for _ in range(DEPTH):
        y = y + x                        # x feeds every level: fan-in of 10**6
    # the graph is really there (up to 256 nodes come from the freelist of
    # recently freed Values and allocate no new block)
    assert blocks() - base > DEPTH - 1000
    y.backward()
    assert y.data == (DEPTH + 1) * 0.5   # exact in binary floating point
    assert x.grad == float(DEPTH + 1)
    y.backward()                         # a second sort of the same graph
    assert x.grad > DEPTH + 1
    del y                                # iterative deallocation: no crash
    assert blocks() - base < 1000        # ... and every node is gone
    assert x.data == 0.5


def test_million_deep_mixed_chain_against_forward_mode_on_floats():
    # each level applies a different op; the oracle carries value and
    # derivative along on plain floats (forward mode).  The cycle's local
    # derivatives multiply to ~1, so the end gradient stays O(1): a vanished
    # gradient would make the comparison meaningless.
    one = Value(1.0)
    steps = [
        (lambda v: v * 1.25, lambda t: (t * 1.25, 1.25)),
        (lambda v: v + 0.001, lambda t: (t + 0.001, 1.0)),
        (lambda v: v.relu(), lambda t: (t if t > 0 else 0.0, 1.0 if t > 0 else 0.0)),
        (lambda v: -v, lambda t: (-t, -1.0)),
        (lambda v: v * -1, lambda t: (-t, -1.0)),
        (lambda v: v.exp(), lambda t: (math.exp(t), math.exp(t))),
        (lambda v: v.log(), lambda t: (math.log(t), 1.0 / t)),
        (lambda v: v / 1.25, lambda t: (t / 1.25, 1 / 1.25)),
        (lambda v: v.sqrt(), lambda t: (math.sqrt(t), 0.5 / math.sqrt(t))),
        (lambda v: v ** 2, lambda t: (t * t, 2.0 * t)),
        (lambda v: 0.3 - v, lambda t: (0.3 - t, -1.0)),
        (lambda v: 0.3 - v, lambda t: (0.3 - t, -1.0)),
        (lambda v: v * one, lambda t: (t, 1.0)),
    ]
    x = Value(0.7)
    y, t, d = x, 0.7, 1.0
    for i in range(DEPTH):
        op, flt = steps[i % len(steps)]
        y = op(y)
        t, local = flt(t)
        d *= local
    assert 0.5 < abs(d) < 2.0 and t > 0.0
    assert y.data == pytest.approx(t, rel=1e-9)
    y.backward()
    assert x.grad == pytest.approx(d, rel=1e-9)
    del y


def test_prev_traversal_of_a_deep_chain_is_iterative():
    n = 200_000
    x = Value(1.0)
    y = x
    for _ in range(n):
        y = y.relu()
    # micrograd-style walk over _prev with an explicit stack
    seen, stack = set(), [y]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(v._prev)
    assert len(seen) == n + 1 and x in seen
    del seen, stack, y


def test_deep_chain_freed_from_the_root_keeps_referenced_middle_alive():
    x = Value(2.0)
    y = x
    middle = None
    for i in range(300_000):
        y = y * 1.0
        if i == 150_000:
            middle = y
    del y
    gc.collect()
    # the lower half is still reachable through `middle` and intact
    assert middle.data == 2.0 and middle._op == "*"
    middle.backward()
    assert x.grad == 1.0
    del middle
    assert x._prev == set() and x.data == 2.0


def test_deep_chain_of_hand_built_nodes():
    base = blocks()
    x = Value(1.0)
    y = x
    for _ in range(100_000):
        y = Value(y.data + 1.0, (y,), "inc")     # no _backward: a gradient stop
    y.backward()
    assert y.grad == 1.0 and x.grad == 0.0 and y.data == 100_001.0
    del y
    assert blocks() - base < 1000


def test_wide_graph_tree_reduction_and_fan_out():
    n = 1 << 18
    xs = [Value(i * 1e-3) for i in range(n)]
    shared = Value(3.0)
    level = [xi * xi + shared for xi in xs]          # shared: fan-out of n
    while len(level) > 1:                            # balanced tree, depth 18
        level = [level[i] + level[i + 1] for i in range(0, len(level), 2)]
    total = level[0]
    total.backward()
    assert shared.grad == float(n)
    assert all(xi.grad == 2 * xi.data for xi in xs)
    assert total.data == pytest.approx(sum(v.data ** 2 for v in xs) + 3.0 * n, rel=1e-12)


def test_wide_fan_in_through_maximum():
    xs = [Value(float(i % 97)) for i in range(100_000)]
    m = xs[0]
    for v in xs[1:]:
        m = maximum(m, v)
    m.backward()
    assert m.data == 96.0
    # ties at 96 split the gradient evenly, level by level: it still sums to 1
    assert sum(v.grad for v in xs) == pytest.approx(1.0, rel=1e-12)
    assert all(v.grad == 0.0 for v in xs if v.data < 96.0)


def test_build_and_free_loops_do_not_grow_memory():
    base = blocks()
    for _ in range(5):
        x = Value(1.0)
        y = x
        for _ in range(100_000):
            y = (y * 1.0 + 0.0).relu()
        y.backward()
        del x, y
    assert blocks() - base < 1000


def test_tracemalloc_sees_the_graph_memory_returned():
    tracemalloc.start()
    try:
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        x = Value(1.5)
        y = x
        for _ in range(50_000):
            y = y * x + 1.0
        y = y.tanh()
        y.backward()
        during, _ = tracemalloc.get_traced_memory()
        del x, y
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert during - start > 50_000 * 2 * 32      # the nodes were traced
    assert after - start < 64 * 1024             # and released
