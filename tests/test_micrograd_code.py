"""Real micrograd code runs unchanged (issue 11).

Patterns taken from notebooks and course code written for PyPI micrograd
0.1.0: extending ``Value`` by assignment, subclassing it, drawing code that
reads ``_prev`` twice, constant leaves in drawings, and the lecture's
hand-built nodes whose ``_backward`` closure refers to the node.  micrograd
itself is the oracle wherever it can run the same code.
"""
import gc
import math
import os
import pickle
import random
import subprocess
import sys
import textwrap
import weakref

import pytest

from fastgrad import Value

from _expressions import micrograd_readme_expression

mg = pytest.importorskip("micrograd.engine")


# ---------------------------------------------------------------------------
# the lecture's hand-built ops, written once for any Value class
# ---------------------------------------------------------------------------

def lecture_ops(V):
    """tanh and exp exactly as the lecture adds them to its Value class V."""

    def tanh(self):
        x = self.data
        t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
        out = V(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t ** 2) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        x = self.data
        out = V(math.exp(x), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad
        out._backward = _backward
        return out

    return tanh, exp


class LectureMLP:
    """The lecture's MLP: tanh neurons, written against any Value class."""

    def __init__(self, V, nin, nouts, seed):
        rng = random.Random(seed)
        sizes = [nin] + nouts
        self.layers = [
            [([V(rng.uniform(-1, 1)) for _ in range(sizes[i])], V(rng.uniform(-1, 1)))
             for _ in range(sizes[i + 1])]
            for i in range(len(nouts))
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = [sum((wi * xi for wi, xi in zip(w, x)), b).tanh() for w, b in layer]
        return x[0] if len(x) == 1 else x

    def parameters(self):
        return [p for layer in self.layers for w, b in layer for p in w + [b]]


def _train(V, steps=20):
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    model = LectureMLP(V, 3, [4, 4, 1], seed=42)
    losses = []
    for _ in range(steps):
        ypred = [model(x) for x in xs]
        loss = sum(((yout - ygt) ** 2 for ygt, yout in zip(ys, ypred)), V(0.0))
        for p in model.parameters():
            p.grad = 0.0
        loss.backward()
        for p in model.parameters():
            p.data += -0.05 * p.grad
        losses.append(float(loss.data))
    return losses, [float(p.data) for p in model.parameters()]


def test_extending_value_by_assignment_trains_like_micrograd(monkeypatch):
    for V in (Value, mg.Value):
        tanh, exp = lecture_ops(V)
        monkeypatch.setattr(V, "tanh", tanh, raising=False)
        monkeypatch.setattr(V, "exp", exp, raising=False)
    ours = _train(Value)
    theirs = _train(mg.Value)
    assert ours[0][-1] < ours[0][0]                       # it does train
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12, abs=1e-12)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-12, abs=1e-12)


def test_assigned_method_applies_to_existing_values(monkeypatch):
    before = Value(0.5)
    node = before * 2                 # made by an operator, before the patch
    monkeypatch.setattr(Value, "exp", lecture_ops(Value)[1])
    e = node.exp()
    assert e._op == "exp" and e._prev == {node}
    assert before.exp()._op == "exp"
    e.backward()
    assert node.grad == pytest.approx(math.exp(1.0), rel=1e-15)


def test_new_class_attribute_and_deletion():
    Value.double_it = lambda self: self * 2
    try:
        assert Value(3.0).double_it().data == 6.0
        assert (Value(1.0) + 1).double_it().data == 4.0
    finally:
        del Value.double_it
    assert not hasattr(Value(1.0), "double_it")


def test_special_method_replacement_takes_effect(monkeypatch):
    calls = []
    original = Value.__truediv__

    def truediv(self, other):          # micrograd's own definition
        calls.append(other)
        return self * other ** -1
    monkeypatch.setattr(Value, "__truediv__", truediv)
    out = Value(3.0) / 2
    assert calls == [2] and out._op == "*" and out.data == 1.5
    monkeypatch.undo()
    assert Value.__truediv__ is original
    assert (Value(3.0) / 2)._op == "/"


# ---------------------------------------------------------------------------
# subclassing
# ---------------------------------------------------------------------------

def make_subclass(Base):
    """The same user subclass over fastgrad's or micrograd's Value."""

    class ValueExt(Base):
        def __init__(self, data, _children=(), _op="", note=""):
            super().__init__(data, _children, _op)
            self.note = note

        def __add__(self, other):
            other = other if isinstance(other, Base) else ValueExt(other)
            out = ValueExt(self.data + other.data, (self, other), "+")

            def _backward():
                self.grad += out.grad
                other.grad += out.grad
            out._backward = _backward
            return out

        def __mul__(self, other):
            other = other if isinstance(other, Base) else ValueExt(other)
            out = ValueExt(self.data * other.data, (self, other), "*")

            def _backward():
                self.grad += other.data * out.grad
                other.grad += self.data * out.grad
            out._backward = _backward
            return out

        def __pow__(self, k):
            assert isinstance(k, (int, float))
            out = ValueExt(self.data ** k, (self,), f"**{k}")

            def _backward():
                self.grad += (k * self.data ** (k - 1)) * out.grad
            out._backward = _backward
            return out

        def relu(self):
            out = ValueExt(0.0 if self.data < 0 else self.data, (self,), "ReLU")

            def _backward():
                self.grad += (out.data > 0) * out.grad
            out._backward = _backward
            return out

        def cube(self):
            return self * self * self

    return ValueExt


def _subclass_expression(Base):
    E = make_subclass(Base)
    a, b, g = micrograd_readme_expression(E)
    h = g + a.cube() + E(1.0, note="x").relu()
    h.backward()
    return [g.data, h.data, a.grad, b.grad], [type(v) is E for v in (a, b, g, h)]


@pytest.mark.compiled_only("the compiled Value's derived operators on subclasses")
def test_subclass_gives_micrograds_numbers():
    ours, kinds = _subclass_expression(Value)
    theirs, their_kinds = _subclass_expression(mg.Value)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert kinds == their_kinds == [True] * 4
    assert issubclass(make_subclass(Value), Value)
    assert make_subclass(Value)(1.0, note="n").note == "n"


@pytest.mark.compiled_only("the compiled Value's one-node derived operators")
def test_subclass_operators_compose_like_micrograd():
    E = make_subclass(Value)
    x = E(3.0)
    y = x - 1                      # micrograd: x + (-1), through E.__add__
    assert type(y) is E and y._op == "+" and y.data == 2.0
    assert type(2 / x) is E and type(-x) is E and type(1 + x) is E
    z = x.tanh()                   # not overridden: fastgrad's own op
    assert type(z) is not E and isinstance(z, Value)
    z.backward()
    assert x.grad == pytest.approx(1 - math.tanh(3.0) ** 2, rel=1e-14)
    plain = Value(3.0)             # Value itself: one node each
    assert (plain - Value(1.0))._op == "-" and (2 / plain)._op == "/"


class Tagged(Value):
    """A module-level subclass, so that pickle can find it."""

    def __init__(self, data, tag=""):
        super().__init__(data)
        self.tag = tag


def test_subclass_instances_pickle_and_deepcopy():
    import copy
    t = Tagged(2.0, tag="w")
    y = t * t + 1
    for clone in (pickle.loads(pickle.dumps(y)), copy.deepcopy(y)):
        (one, node) = sorted(clone._prev, key=lambda v: v.data)
        assert one.data == 1.0
        (leaf,) = node._prev
        assert type(leaf) is Tagged and leaf.tag == "w" and leaf.data == 2.0
        clone.backward()
        assert leaf.grad == 4.0
    t2 = pickle.loads(pickle.dumps(t))
    assert type(t2) is Tagged and t2.tag == "w"


@pytest.mark.compiled_only("the compiled engine's pickle records")
def test_pickle_rejects_a_record_whose_class_is_not_a_value():
    from fastgrad import _engine
    records = [(1.0, 0.0, 0, 0, None, None, None, dict)]
    with pytest.raises(ValueError, match="subclass of Value"):
        _engine._rebuild_graph(records)


@pytest.mark.compiled_only("the compiled engine's pickle records")
def test_pickles_of_the_previous_format_still_load():
    from fastgrad import _engine
    # fastgrad 0.1.0 records: 7 fields, op codes 9 = x * c and 15 = relu
    records = [(2.0, 0.0, 0, 0, None, None, None),
               (6.0, 0.0, 9, 0, 0, 3.0, None),
               (6.0, 0.0, 15, 0, 1, 0.0, None)]
    z = _engine._rebuild_graph(records)
    (y,) = z._prev
    assert (z._op, y._op, z.data) == ("ReLU", "*", 6.0)
    z.backward()
    (x, three) = sorted(y._prev, key=lambda v: v.data)
    assert (x.data, x.grad, three.data) == (2.0, 3.0, 3.0)


# ---------------------------------------------------------------------------
# _prev: the same objects on every read, constant leaves with gradients
# ---------------------------------------------------------------------------

EXPRESSIONS = [
    lambda x: x * 2, lambda x: 2 * x, lambda x: x + 1, lambda x: 1 + x,
    lambda x: x - 1, lambda x: -x, lambda x: 3 - x, lambda x: x / 4,
    lambda x: 4 / x, lambda x: 2 ** x, lambda x: x ** 2,
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_prev_returns_the_same_objects_every_time(expr):
    y = expr(Value(1.5))
    first = list(y._prev)
    assert sorted(map(id, y._prev)) == sorted(map(id, first))
    assert {id(v) for v in y._prev} == {id(v) for v in first}


@pytest.mark.parametrize("read_prev_first", [True, False])
@pytest.mark.parametrize("expr", EXPRESSIONS[:6])
def test_constant_leaves_get_micrograds_gradients(expr, read_prev_first):
    # same structure in both engines: compare every node's (data, grad)
    results = []
    for V in (Value, mg.Value):
        x = V(1.5)
        y = expr(x) * expr(x)
        if read_prev_first:
            _nodes(y)
        y.backward()
        results.append([x for n in sorted((float(n.data), float(n.grad)) for n in _nodes(y))
                        for x in n])
    assert results[0] == pytest.approx(results[1], rel=1e-15)


@pytest.mark.parametrize("expr, d_const", [
    (lambda x: 3 - x, lambda x: 1.0),               # d(c - x)/dc
    (lambda x: x / 4, lambda x: -x / 16),           # d(x / c)/dc
    (lambda x: 4 / x, lambda x: 1 / x),             # d(c / x)/dc
    (lambda x: 2 ** x, lambda x: x * 2 ** (x - 1)),  # d(c ** x)/dc
])
@pytest.mark.parametrize("read_prev_first", [True, False])
def test_constant_leaf_gradient_is_the_derivative(expr, d_const, read_prev_first):
    # micrograd builds these from other nodes; the leaf fastgrad shows is the
    # constant the user wrote, and its gradient is d out / d constant
    x = Value(1.5)
    y = expr(x)
    if read_prev_first:
        y._prev
    y.backward()
    (const,) = [v for v in y._prev if v is not x]
    assert const.grad == pytest.approx(d_const(1.5), rel=1e-14)
    assert x.grad == pytest.approx((expr(1.5 + 1e-6) - expr(1.5 - 1e-6)) / 2e-6,
                                   rel=1e-8)


def test_reading_prev_changes_no_value_or_gradient():
    def run(read):
        x, w = Value(0.7), Value(-1.3)
        y = ((x * 2 + 1) * w - 3 - x / 4 + 4 / w + 2 ** x).tanh()
        if read:
            _nodes(y)
        y.backward()
        return y.data, x.grad, w.grad
    assert run(True) == run(False)


def _nodes(root):
    seen, stack, out = set(), [root], []
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        out.append(v)
        stack.extend(v._prev)
    return out


def _drawing(root):
    """What the trace_graph notebook's draw_dot emits: one record per node,
    one op node per operation, edges between names made from id()."""
    nodes, edges = set(), set()
    stack = [root]
    while stack:                                  # first pass: trace()
        v = stack.pop()
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                stack.append(child)
    declared, labels, links = set(), [], []
    for n in nodes:                               # second pass: the drawing
        uid = str(id(n))
        declared.add(uid)
        labels.append("{ data %.4f | grad %.4f }" % (n.data, n.grad))
        if n._op:
            declared.add(uid + n._op)
            labels.append(n._op)
            links.append((uid + n._op, uid))
    for n1, n2 in edges:
        links.append((str(id(n1)), str(id(n2)) + n2._op))
    return sorted(labels), all(a in declared and b in declared for a, b in links)


def test_micrograd_style_draw_dot_matches_micrograd():
    drawings = []
    for V in (Value, mg.Value):
        x = V(3.0)
        y = x * 2 + 1
        y.backward()
        drawings.append(_drawing(y))
    assert drawings[0][1] and drawings[1][1]      # every edge hits a declared node
    assert drawings[0][0] == drawings[1][0]
    assert "{ data 2.0000 | grad 3.0000 }" in drawings[0][0]   # the constant 2
    assert "{ data 1.0000 | grad 1.0000 }" in drawings[0][0]   # the constant 1


# ---------------------------------------------------------------------------
# cycles through user code are collected; engine nodes stay compact
# ---------------------------------------------------------------------------

def test_cycle_through_a_parameter_attribute_is_collected():
    class Model:
        pass
    m = Model()
    m.p = Value(1.0)
    m.p.owner = m                  # p -> dict -> m -> p
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


def test_subclass_cycle_is_collected():
    E = make_subclass(Value)
    a = E(2.0)
    out = a * a                    # hand-built by the subclass, closure -> out
    ref = weakref.ref(out)
    del a, out
    gc.collect()
    assert ref() is None


@pytest.mark.compiled_only("the compiled engine's untracked operator nodes")
def test_operator_nodes_are_not_gc_tracked():
    x = Value(1.0)                 # made from Python: tracked
    y = x * 2 + 1                  # made by operators: plain, compact
    assert gc.is_tracked(x)
    assert not gc.is_tracked(y) and not any(gc.is_tracked(v) for v in y._prev)
    assert type(x).__name__ == type(y).__name__ == "Value"
    assert isinstance(x, Value) and isinstance(y, Value)


_MEMORY_SCRIPT = textwrap.dedent("""
    import math, random, sys
    from fastgrad import Value

    def tanh(self):                      # the lecture's hand-built node
        x = self.data
        t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
        out = Value(t, (self,), 'tanh')
        def _backward():
            self.grad += (1 - t ** 2) * out.grad
        out._backward = _backward
        return out
    Value.tanh = tanh

    def rss_mb():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    rng = random.Random(0)
    sizes = [3, 4, 4, 1]
    layers = [[([Value(rng.uniform(-1, 1)) for _ in range(sizes[i])],
                Value(rng.uniform(-1, 1))) for _ in range(sizes[i + 1])]
              for i in range(3)]
    params = [p for l in layers for w, b in l for p in w + [b]]
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    steps = int(sys.argv[1])
    for k in range(steps):
        preds = []
        for x in xs:
            h = x
            for l in layers:
                h = [sum((wi * xi for wi, xi in zip(w, h)), b).tanh() for w, b in l]
            preds.append(h[0])
        loss = sum((p - y) ** 2 for p, y in zip(preds, ys))
        for p in params:
            p.grad = 0.0
        loss.backward()
        for p in params:
            p.data -= 0.05 * p.grad
        if k == 2999:        # after warm-up (CPython 3.13 grows ~8 MB once by step 3000)
            start = rss_mb()
    print(start, rss_mb())
""")


def test_hand_built_idiom_memory_stays_flat():
    # 10,000 training steps (3,000 to 13,000) of the lecture's MLP with
    # hand-built tanh nodes (each one a cycle node -> _backward -> node): RSS
    # must not grow
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:       # sanitizer build: no quarantine of freed memory
        env["ASAN_OPTIONS"] += ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, "13000"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    start, end = map(float, proc.stdout.split())
    assert end - start < 5.0, f"RSS grew from {start:.1f} MB to {end:.1f} MB"
