"""Engine features beyond micrograd's surface: pickling, instance dicts,
a user-replaced ``_backward`` on an operator node."""
import copy
import pickle
import random

import pytest

from fastgrad import Value, maximum
from fastgrad.nn import MLP

micrograd_engine = pytest.importorskip("micrograd.engine")



def test_pickle_round_trip_keeps_values_grads_ops_and_labels():
    a, b = Value(2.0, label="a"), Value(-3.0)
    c = ((a * b + a ** 2.0) * -1).relu() + maximum(a, b) / 4 + 2 ** b
    c.backward()
    c2 = pickle.loads(pickle.dumps(c))
    # walk both graphs in the same canonical order and compare every node
    def nodes(root):
        out, stack, seen = [], [root], set()
        while stack:
            v = stack.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            out.append(v)
            stack.extend(sorted(v._prev, key=lambda p: (p.data, p._op)))
        return sorted(out, key=lambda v: (v._op, v.data, v.grad))
    n1, n2 = nodes(c), nodes(c2)
    assert [(v.data, v.grad, v._op, v.label) for v in n1] == \
           [(v.data, v.grad, v._op, v.label) for v in n2]
    # the copy is a live graph: backward works and matches the original
    for v in n2:
        v.grad = 0.0
    c2.backward()
    assert sorted(v.grad for v in n2) == sorted(v.grad for v in n1)


def test_pickle_and_deepcopy_a_model():
    random.seed(3)
    m = MLP(3, [4, 1])
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert [p.data for p in clone.parameters()] == [p.data for p in m.parameters()]
        assert all(p is not q for p, q in zip(clone.parameters(), m.parameters()))
        assert clone([1.0, 2.0, 3.0]).data == m([1.0, 2.0, 3.0]).data


@pytest.mark.compiled_only("the pure-Python Value pickles recursively (default "
                           "pickling of nested objects)")
def test_pickle_a_deep_chain_without_recursion():
    x = Value(1.0)
    y = x
    for _ in range(200_000):
        y = y * 1.0 + 1.0
    y2 = pickle.loads(pickle.dumps(y))
    assert y2.data == y.data == 200_001.0


def test_vars_and_user_attributes():
    # micrograd's keys first (see test_micrograd_fidelity.py), then the user's
    v = Value(1.0)
    assert list(vars(v)) == ["data", "grad", "_backward", "_prev", "_op"]
    v.note = "hi"
    assert vars(v)["note"] == "hi" and v.note == "hi"
    assert list(vars(v))[5:] == ["note"]
    w = Value(2.0, label="w")
    assert w.label == "w" and Value(0.0).label == ""


def test_user_backward_on_an_operator_node_replaces_its_rule_like_micrograd():
    def run(V):
        a, b = V(3.0), V(4.0)
        c = a * b
        def only_to_a():             # a rule of the user's own
            a.grad += 10 * c.grad
        c._backward = only_to_a
        d = c + a
        d.backward()
        return a.grad, b.grad
    assert run(Value) == run(micrograd_engine.Value) == (11.0, 0.0)


def _user_code_graph(V, where, kind):
    """A chain with one node that may run user code -- an instance dict, a
    user ``_backward`` or a hand-built node -- at the root, in the middle, at
    a leaf or nowhere; returns (root, every node)."""
    def mark(v, kids):
        if kind == "dict":
            v.note = "a dict, no _backward"
        elif kind == "user_backward":
            def bw():
                for k in kids:
                    k.grad += 3.0 * v.grad + 0.25
            v._backward = bw
        return v

    def node(data, kids, op, here):
        if here and kind == "hand_built":
            return V(data, tuple(kids), "hand")     # no rule: stops gradient
        return None

    a, b = V(1.5), V(-2.0)
    if where == "leaf":
        mark(a, [b])
    x0 = a * b
    x1 = node(x0.data + a.data, (x0, a), "+", where == "middle") or x0 + a
    if where == "middle":
        mark(x1, [x0, a])
    x2 = x1 * x1
    x3 = (x2 - b).relu() * 0.5 + x0
    root = node(x3.data, (x3,), "id", where == "root") or x3 * 2.0
    if where == "root":
        mark(root, [x3])
    return root, [a, b, x0, x1, x2, x3, root]


@pytest.mark.parametrize("where", ["root", "middle", "leaf", "nowhere"])
@pytest.mark.parametrize("kind", ["dict", "user_backward", "hand_built"])
def test_a_node_that_may_run_user_code_anywhere_in_the_sweep(where, kind):
    # backward() sweeps with borrowed pointers until the first node that may
    # run user code, then owns the rest: every position of that node, each
    # kind, against micrograd (twice: a second sweep of the same graph)
    if kind == "hand_built" and where == "leaf":
        pytest.skip("a hand-built node without operands is a leaf")
    got, want = [], []
    for V, out in ((Value, got), (micrograd_engine.Value, want)):
        root, nodes = _user_code_graph(V, where, kind)
        every, stack = [], [root]
        while stack:
            v = stack.pop()
            every.append(v)
            stack.extend(v._prev)
        for _ in range(2):
            for v in every:
                v.grad = 0.0
            root.backward()
            out.append([v.grad for v in nodes])
    assert got == want


def test_backward_of_graphs_larger_and_smaller_than_the_last():
    # the sort's order buffer starts at the last sort's node count: graphs
    # below, at, one above and far above it, against micrograd
    def run(V, n):
        xs = [V(0.5 + 0.25 * (i % 7)) for i in range(n)]
        level = [xs[i] * xs[i - 1] * 0.5 for i in range(n)]
        while len(level) > 1:       # a tree of sums (micrograd's sort recurses)
            level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        level[0].backward()
        return [x.grad for x in xs]
    for n in (1500, 10, 1500, 1501, 6000, 1, 3000):
        assert run(Value, n) == run(micrograd_engine.Value, n), n


@pytest.mark.compiled_only("fastgrad._engine's pickle records")
def test_unpickling_rejects_bad_records():
    from fastgrad._engine import _rebuild_graph
    with pytest.raises(ValueError, match="empty"):
        _rebuild_graph([])
    with pytest.raises(ValueError, match="op code"):
        _rebuild_graph([(1.0, 0.0, 99, 0, None, None, None)])


@pytest.mark.compiled_only("fastgrad._engine's visit stamps")
def test_visit_stamps_do_not_collide_after_2_to_the_32_sorts():
    # a node whose stamp is 2**32 sorts old must not be taken as visited
    # (that would silently skip it and everything under it in backward)
    from fastgrad._engine import _set_sort_epoch
    try:
        x = Value(3.0)
        y = x * x              # y's stamp is set by the sort below
        _set_sort_epoch(41)
        y.backward()           # sort number 42
        assert x.grad == 6.0
        x.grad = y.grad = 0.0
        _set_sort_epoch(41 + 2**32)   # next sort: low 32 bits equal 42 again
        z = y + 1.0
        z.backward()
        assert y.grad == 1.0   # y (stamped 42 long ago) was still visited
        assert x.grad == 6.0
    finally:
        _set_sort_epoch(0)
