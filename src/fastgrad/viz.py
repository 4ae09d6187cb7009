"""Draw a computational graph: ``to_dot`` (DOT text) and ``draw_dot`` (graphviz).

Both walk the graph from a root Value through ``_prev`` with an explicit stack
(no recursion, any depth), so they work on fastgrad Values, on
``fastgrad.reference`` Values and on anything else that has micrograd's
``data``, ``grad``, ``_op`` and ``_prev`` (``label`` is optional).

The picture is the one micrograd's ``trace_graph`` notebook draws: one record
per Value showing ``label | data | grad``, and for every Value produced by an
operation a small oval with the operation (``+``, ``*``, ``ReLU``, ...) whose
operands point into it.  A constant baked into a fastgrad node (``x * 2``)
shows up as its own leaf record, as it would in micrograd.

A graph with more than ``max_nodes`` Values is refused with a ``ValueError``
that says how many it has: Graphviz needs minutes for the ~66,000 nodes of one
training step of micrograd's demo, and the result is unreadable anyway.
"""
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import graphviz

__all__ = ["to_dot", "draw_dot", "DEFAULT_MAX_NODES"]

#: graphs with more Values than this are refused unless max_nodes is raised
DEFAULT_MAX_NODES = 5000

# Past max_nodes the walk goes on only to say how big the graph is; it stops
# here so that a huge graph is refused quickly and without much memory.
_COUNT_CAP = 200_000

_RANKDIRS = ("LR", "TB", "RL", "BT")


def _check_args(where: str, rankdir: str, max_nodes: int) -> None:
    if rankdir not in _RANKDIRS:
        raise ValueError(f"{where}: rankdir must be one of {', '.join(_RANKDIRS)}, "
                         f"got {rankdir!r}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"{where}: max_nodes must be a positive int, got {max_nodes!r}")


def _trace(root: Any, max_nodes: int, where: str) -> tuple[list[Any], list[tuple[int, int]]]:
    """Collect the Values reachable from root and the operand edges.

    Returns ``(nodes, edges)``: nodes in discovery order (root first), edges as
    ``(child_index, parent_index)`` pairs.  Each node's ``_prev`` is read
    exactly once, and every node is kept referenced while the walk runs, so
    ``id()`` stays unique even for the fresh leaf Values that fastgrad's
    ``_prev`` makes for baked constants.
    """
    for attr in ("data", "grad", "_op", "_prev"):
        if not hasattr(root, attr):
            raise TypeError(f"{where}: expected a Value (with data, grad, _op and "
                            f"_prev), got {type(root).__name__}")
    index = {id(root): 0}
    nodes = [root]
    edges: list[tuple[int, int]] = []
    stack = [root]
    cap = max(max_nodes, _COUNT_CAP)
    while stack:
        node = stack.pop()
        parent = index[id(node)]
        for child in node._prev:
            key = id(child)
            i = index.get(key)
            if i is None:
                i = len(nodes)
                index[key] = i
                nodes.append(child)
                stack.append(child)
                if i >= cap:     # i + 1 nodes found and more may follow
                    raise ValueError(
                        f"{where}: the graph has more than {cap:,} nodes "
                        f"(max_nodes={max_nodes:,}); draw a smaller expression")
            edges.append((i, parent))
    if len(nodes) > max_nodes:
        raise ValueError(
            f"{where}: the graph has {len(nodes):,} nodes, more than "
            f"max_nodes={max_nodes:,}; draw a smaller expression or pass a "
            f"larger max_nodes")
    return nodes, edges


def _escape_record(text: str) -> str:
    """Escape text for a field of a Graphviz record label."""
    out = []
    for ch in text:
        if ch in '\\{}|<>" ':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        else:
            out.append(ch)
    return "".join(out)


def _escape_string(text: str) -> str:
    """Escape text for a double-quoted DOT string (a plain label)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _layout(root: Any, max_nodes: int, where: str,
            ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """The drawing as plain data: ``(records, ops, edges)``.

    records: ``(name, label)`` of each Value; ops: ``(name, label)`` of each
    operation oval; edges: ``(tail, head)`` names.
    """
    nodes, edges = _trace(root, max_nodes, where)
    records: list[tuple[str, str]] = []
    ops: list[tuple[str, str]] = []
    out_edges: list[tuple[str, str]] = []
    op_of: list[str] = []
    for i, n in enumerate(nodes):
        name = f"v{i}"
        label = getattr(n, "label", "") or ""
        fields = [] if not label else [_escape_record(str(label))]
        fields += [f"data {n.data:.4f}", f"grad {n.grad:.4f}"]
        records.append((name, "{ " + " | ".join(fields) + " }"))
        op = n._op
        if op:
            ops.append((name + "_op", _escape_string(str(op))))
            out_edges.append((name + "_op", name))
            op_of.append(name + "_op")
        else:
            op_of.append(name)
    for child, parent in edges:
        out_edges.append((f"v{child}", op_of[parent]))
    return records, ops, out_edges


def to_dot(root: Any, rankdir: str = "LR", max_nodes: int = DEFAULT_MAX_NODES) -> str:
    """Return the computational graph of ``root`` as Graphviz DOT text.

    Needs nothing beyond fastgrad: paste the text into any Graphviz viewer or
    run ``dot -Tsvg``.  Each Value is a record ``label | data | grad``
    (4 decimals, as micrograd's notebook); each operation is an oval.

    Parameters
    ----------
    root : Value
        The output of the expression (fastgrad, ``fastgrad.reference`` or any
        micrograd-like Value).
    rankdir : {"LR", "TB", "RL", "BT"}, default "LR"
        Layout direction (left to right by default).
    max_nodes : int, default 5000
        Refuse graphs with more Values than this.

    Returns
    -------
    str
        A ``digraph`` in the DOT language.

    Raises
    ------
    ValueError
        If the graph has more than ``max_nodes`` Values (the message gives the
        count), or ``rankdir`` / ``max_nodes`` is invalid.
    TypeError
        If ``root`` is not a Value.

    Examples
    --------
    >>> from fastgrad import Value, to_dot
    >>> x = Value(3.0, label="x")
    >>> y = (x * x).relu()
    >>> print(to_dot(y).count("->"))
    4
    """
    _check_args("to_dot", rankdir, max_nodes)
    records, ops, edges = _layout(root, max_nodes, "to_dot")
    lines = ["digraph {", f"\trankdir={rankdir}"]
    lines += [f'\t{name} [label="{label}" shape=record]' for name, label in records]
    lines += [f'\t{name} [label="{label}"]' for name, label in ops]
    lines += [f"\t{tail} -> {head}" for tail, head in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_dot(root: Any, format: str = "svg", rankdir: str = "LR",
             max_nodes: int = DEFAULT_MAX_NODES) -> "graphviz.Digraph":
    """Return the computational graph of ``root`` as a ``graphviz.Digraph``.

    In Jupyter the returned object displays itself; elsewhere call
    ``.render("graph")`` or read ``.source``.  Needs the ``graphviz`` Python
    package (``pip install "fastgrad[viz]"``, or ``pip install ".[viz]"`` from
    a checkout) to build the object, and the Graphviz ``dot`` program to
    render it (``apt install graphviz``, ``brew install graphviz``, ``conda
    install -c conda-forge graphviz`` or ``winget install graphviz``).
    Without ``dot``, rendering (display in Jupyter, ``.render()``,
    ``.pipe()``) raises ``fastgrad._graphviz.GraphvizNotFound`` (a
    ``graphviz.ExecutableNotFound``) saying so; :func:`to_dot` gives the same
    graph as DOT text with no dependency.

    Parameters
    ----------
    root : Value
        The output of the expression.
    format : str, default "svg"
        Output format used when the graph is rendered ("svg", "png", ...).
    rankdir : {"LR", "TB", "RL", "BT"}, default "LR"
        Layout direction.
    max_nodes : int, default 5000
        Refuse graphs with more Values than this.

    Returns
    -------
    graphviz.Digraph

    Raises
    ------
    ImportError
        If the graphviz package is not installed (the message says what to
        install).
    ValueError
        If the graph has more than ``max_nodes`` Values, or an argument is
        invalid.

    Examples
    --------
    >>> from fastgrad import Value, draw_dot
    >>> a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    >>> c = a * b; c.label = "c"
    >>> c.backward()
    >>> dot = draw_dot(c)                               # doctest: +SKIP
    >>> dot.render("graph", view=True)                  # doctest: +SKIP
    """
    try:
        import graphviz  # noqa: F401  (the optional dependency; checked here)

        from fastgrad._graphviz import Digraph
    except ImportError as exc:
        raise ImportError(
            'draw_dot needs the graphviz Python package: pip install "fastgrad[viz]" '
            '(from a checkout: pip install ".[viz]"); to_dot gives the DOT text '
            "without it") from exc
    _check_args("draw_dot", rankdir, max_nodes)
    records, ops, edges = _layout(root, max_nodes, "draw_dot")
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
    for name, label in records:
        dot.node(name, label=label, shape="record")
    for name, label in ops:
        dot.node(name, label=label)
    for tail, head in edges:
        dot.edge(tail, head)
    return dot
