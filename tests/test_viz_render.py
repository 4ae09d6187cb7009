"""draw_dot without the Graphviz ``dot`` program: a message that says what to do.

PATH is emptied so that ``dot`` cannot be found whether or not it is installed;
every way of rendering (Jupyter's display hooks, ``.pipe()``, ``.render()``,
``.view()``) must fail with fastgrad's message naming ``to_dot`` and the install
commands, still as a ``graphviz.ExecutableNotFound``.
"""
import pickle

import pytest

graphviz = pytest.importorskip("graphviz")

from fastgrad import Value, draw_dot, to_dot  # noqa: E402

INSTALL = ("apt install graphviz", "brew install graphviz",
           "conda install -c conda-forge graphviz", "winget install graphviz")


def graph():
    x, y = Value(3.0, label="x"), Value(-4.0, label="y")
    f = x * y + x
    f.label = "f"
    f.backward()
    return f


def check_message(exc):
    text = str(exc.value)
    assert "Graphviz 'dot' program" in text
    assert "fastgrad.to_dot(root)" in text
    for command in INSTALL:
        assert command in text
    assert isinstance(exc.value, graphviz.ExecutableNotFound)   # old handlers still work
    assert isinstance(exc.value.__cause__, graphviz.ExecutableNotFound)


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setenv("PATH", "")


def test_still_a_digraph_with_the_same_source():
    f = graph()
    dot = draw_dot(f)
    assert isinstance(dot, graphviz.Digraph)
    # the DOT body is to_dot's (graphviz writes the graph attribute its own way)
    body = [line for line in dot.source.splitlines() if "rankdir" not in line]
    assert body == [line for line in to_dot(f).splitlines() if "rankdir" not in line]


def test_pipe_without_dot(no_dot):
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        draw_dot(graph()).pipe()
    check_message(exc)


def test_jupyter_display_without_dot(no_dot):
    dot = draw_dot(graph())
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        dot._repr_mimebundle_()            # what Jupyter calls to show the object
    check_message(exc)
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        dot._repr_image_svg_xml()
    check_message(exc)


def test_render_and_view_without_dot(no_dot, tmp_path):
    dot = draw_dot(graph(), format="png")
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        dot.render(str(tmp_path / "graph"))
    check_message(exc)
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        dot.view(str(tmp_path / "graph2"))
    check_message(exc)


def test_unflatten_without_dot(no_dot):
    with pytest.raises(graphviz.ExecutableNotFound) as exc:
        draw_dot(graph()).unflatten()
    # unflatten is a Graphviz program of its own; the same help applies
    assert "fastgrad.to_dot(root)" in str(exc.value)


def test_copy_and_pickle_keep_the_class(no_dot):
    dot = draw_dot(graph())
    for other in (dot.copy(), pickle.loads(pickle.dumps(dot))):
        assert type(other) is type(dot) and other.source == dot.source
        with pytest.raises(graphviz.ExecutableNotFound, match="fastgrad.to_dot"):
            other.pipe()
