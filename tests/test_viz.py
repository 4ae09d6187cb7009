"""to_dot / draw_dot: the drawn graph has exactly the expected nodes and edges."""
import re
import sys

import pytest

from fastgrad import Value, draw_dot, maximum, to_dot
from fastgrad import viz

NODE = re.compile(r'^\s*(\w+) \[label=(?:"((?:[^"\\]|\\.)*)"|(\w+))( shape=record)?\]$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+)$")


def parse_dot(text):
    """Return ({name: (label, is_record)}, [(tail, head)]) from DOT text.

    Only the statements to_dot/draw_dot emit are accepted; any other line in
    the body fails the test, so nothing unexpected slips through.
    """
    lines = text.strip().splitlines()
    assert lines[0] == "digraph {" and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if line.strip() in ("rankdir=LR", "graph [rankdir=LR]", "rankdir=TB",
                            "graph [rankdir=TB]"):
            continue
        m = NODE.match(line)
        if m:
            name, quoted, bare, record = m.groups()
            assert name not in nodes, f"node {name} declared twice"
            nodes[name] = (quoted if quoted is not None else bare, bool(record))
            continue
        m = EDGE.match(line)
        assert m, f"unexpected DOT line: {line!r}"
        edges.append(m.groups())
    for tail, head in edges:
        assert tail in nodes and head in nodes, (tail, head)
    return nodes, edges


def record_fields(label):
    """'{ x | data 3.0000 | grad -8.0000 }' -> ['x', 'data 3.0000', 'grad -8.0000']"""
    assert label.startswith("{ ") and label.endswith(" }")
    return [f.strip() for f in label[2:-2].split(" | ")]


def gate_graph():
    """The lecture's f = 2(xy + max(z, w)) at [3, -4, 2, -1], backpropagated."""
    x, y, z, w = (Value(v, label=n) for v, n in zip([3.0, -4.0, 2.0, -1.0], "xyzw"))
    p = x * y
    p.label = "p"
    q = maximum(z, w)
    q.label = "q"
    v = p + q
    v.label = "v"
    f = 2 * v
    f.label = "f"
    f.backward()
    return f


def summarize(text):
    """Name every node by what it shows, and the edges by those names.

    A record is named by its label ('const' for the unlabelled constant 2),
    an operation oval by 'op(<label of the Value it produces>)'.
    """
    nodes, edges = parse_dot(text)
    names, values = {}, {}
    records = {n: lab for n, (lab, rec) in nodes.items() if rec}
    for n, lab in records.items():
        fields = record_fields(lab)
        key = fields[0] if len(fields) == 3 else "const"
        names[n] = key
        values[key] = tuple(fields[-2:])
    # every op oval has exactly one outgoing edge, into the Value it makes
    for n, (lab, rec) in nodes.items():
        if not rec:
            outs = [h for t, h in edges if t == n]
            assert len(outs) == 1
            names[n] = f"{lab}({names[outs[0]]})"
    return set(names.values()), sorted((names[t], names[h]) for t, h in edges), values


def test_to_dot_lecture_gate_exact_nodes_and_edges():
    nodes, edges, values = summarize(to_dot(gate_graph()))
    # hand-drawn from the slide: 8 Values + the constant 2, 4 operations
    assert nodes == {"x", "y", "z", "w", "p", "q", "v", "f", "const",
                     "*(p)", "max(q)", "+(v)", "*(f)"}
    assert edges == sorted([
        ("x", "*(p)"), ("y", "*(p)"), ("*(p)", "p"),
        ("z", "max(q)"), ("w", "max(q)"), ("max(q)", "q"),
        ("p", "+(v)"), ("q", "+(v)"), ("+(v)", "v"),
        ("v", "*(f)"), ("const", "*(f)"), ("*(f)", "f"),
    ])
    # the slide's forward values and gradients [-8, 6, 2, 0]
    assert values["f"] == ("data -20.0000", "grad 1.0000")
    assert values["x"] == ("data 3.0000", "grad -8.0000")
    assert values["y"] == ("data -4.0000", "grad 6.0000")
    assert values["z"] == ("data 2.0000", "grad 2.0000")
    assert values["w"] == ("data -1.0000", "grad 0.0000")
    assert values["p"] == ("data -12.0000", "grad 2.0000")
    assert values["const"][0] == "data 2.0000"


def test_to_dot_rankdir_and_unlabelled_leaf():
    a = Value(1.5)
    text = to_dot(a, rankdir="TB")
    assert "rankdir=TB" in text
    nodes, edges = parse_dot(text)
    assert list(nodes.values()) == [("{ data 1.5000 | grad 0.0000 }", True)]
    assert edges == []


def test_to_dot_shared_operand_drawn_once():
    a = Value(3.0, label="a")
    m = a * a               # a is both operands: one edge, as micrograd's _prev
    m.label = "m"
    b = m + a               # a feeds a second operation
    b.label = "b"
    b.backward()
    nodes, edges, values = summarize(to_dot(b))
    assert nodes == {"a", "m", "b", "*(m)", "+(b)"}
    assert edges == sorted([("a", "*(m)"), ("*(m)", "m"), ("m", "+(b)"),
                            ("a", "+(b)"), ("+(b)", "b")])
    assert values["a"] == ("data 3.0000", "grad 7.0000")    # d(a^2 + a)/da = 2a + 1


def test_to_dot_escapes_labels():
    a = Value(1.0, label='we{ir}d | "label" <x>\\')
    text = to_dot(a)
    nodes, _ = parse_dot(text)
    (label, _), = nodes.values()
    assert label.startswith(r'{ we\{ir\}d\ \|\ \"label\"\ \<x\>\\ |')


def test_to_dot_deep_chain_is_iterative():
    x = Value(0.5, label="x")
    y = x
    for _ in range(3000):           # far deeper than the recursion limit allows
        y = y + x
    nodes, edges = parse_dot(to_dot(y, max_nodes=5000))
    assert len([n for n in nodes if not n.endswith("_op")]) == 3001
    # two operand edges per '+' (one for the first, x + x) and one op edge each
    assert len(edges) == (2 * 3000 - 1) + 3000


def test_size_limit_refused_with_count():
    x = Value(1.0)
    y = x
    for _ in range(50):
        y = y + x                   # 51 Values
    with pytest.raises(ValueError, match=r"has 51 nodes, more than max_nodes=10"):
        to_dot(y, max_nodes=10)
    # 2 operand edges per '+' except x + x (1), plus one op edge per '+'
    assert to_dot(y, max_nodes=51).count("->") == (2 * 50 - 1) + 50


def test_huge_graph_stops_counting(monkeypatch):
    monkeypatch.setattr(viz, "_COUNT_CAP", 1000)
    x = Value(1.0)
    y = x
    for _ in range(5000):
        y = y + x
    with pytest.raises(ValueError, match=r"more than 1,000 nodes \(max_nodes=100\)"):
        to_dot(y, max_nodes=100)


def test_default_limit_refuses_demo_sized_graph():
    x = Value(1.0)
    y = x
    for _ in range(viz.DEFAULT_MAX_NODES):
        y = y + x
    with pytest.raises(ValueError, match=f"has {viz.DEFAULT_MAX_NODES + 1:,} nodes"):
        to_dot(y)


@pytest.mark.parametrize("kwargs, err", [
    ({"rankdir": "XY"}, "rankdir must be one of"),
    ({"max_nodes": 0}, "max_nodes must be a positive int, got 0"),
    ({"max_nodes": 2.5}, "max_nodes must be a positive int, got 2.5"),
])
def test_bad_arguments(kwargs, err):
    with pytest.raises(ValueError, match=err):
        to_dot(Value(1.0), **kwargs)


def test_not_a_value():
    with pytest.raises(TypeError, match="to_dot: expected a Value.*got float"):
        to_dot(3.0)


def test_works_on_micrograd_values():
    mg = pytest.importorskip("micrograd.engine")
    a, b = mg.Value(2.0), mg.Value(-3.0)
    c = (a * b).relu()       # micrograd Values have no label attribute
    c.backward()
    nodes, edges = parse_dot(to_dot(c))
    assert sorted(lab for lab, rec in nodes.values() if not rec) == ["*", "ReLU"]
    assert len(edges) == 2 + 1 + 1 + 1


def test_works_on_reference_values():
    ref = pytest.importorskip("fastgrad.reference")
    x, y, z = (ref.Value(v, label=n) for v, n in zip([3.0, -4.0, 2.0], "xyz"))
    p = x * y
    p.label = "p"
    v = p + z
    v.label = "v"
    f = 2 * v
    f.label = "f"
    f.backward()
    nodes, edges, values = summarize(to_dot(f))
    assert nodes == {"x", "y", "z", "p", "v", "f", "const", "*(p)", "+(v)", "*(f)"}
    assert len(edges) == 9
    assert values["f"] == ("data -20.0000", "grad 1.0000")
    assert values["x"] == ("data 3.0000", "grad -8.0000")


def test_draw_dot_builds_the_same_graph():
    graphviz = pytest.importorskip("graphviz")
    f = gate_graph()
    dot = draw_dot(f, format="png", rankdir="TB")
    assert isinstance(dot, graphviz.Digraph)
    assert dot.format == "png"
    assert summarize(dot.source) == summarize(to_dot(f, rankdir="TB"))


def test_draw_dot_size_limit():
    pytest.importorskip("graphviz")
    x = Value(1.0)
    y = x + x + x
    with pytest.raises(ValueError, match="draw_dot: the graph has 3 nodes"):
        draw_dot(y, max_nodes=2)


def test_draw_dot_without_graphviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r'pip install "fastgrad\[viz\]"'):
        draw_dot(Value(1.0))
