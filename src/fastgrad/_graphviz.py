"""The ``graphviz.Digraph`` that ``fastgrad.draw_dot`` returns.

A plain ``graphviz.Digraph`` that fails with a message saying what to do when
the Graphviz ``dot`` program is missing: graphviz's own ``ExecutableNotFound``
only says "make sure the Graphviz executables are on your systems' PATH",
which in Jupyter reads as if fastgrad were broken.  Imported only by
``draw_dot`` (it needs the optional ``graphviz`` package).
"""
from typing import Any

import graphviz

__all__ = ["Digraph", "GraphvizNotFound", "NO_DOT_HELP"]

NO_DOT_HELP = (
    "rendering a fastgrad graph needs the Graphviz 'dot' program, which is not "
    "on PATH (the graphviz Python package only calls it). Install it: "
    "apt install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
    "conda install -c conda-forge graphviz, or winget install graphviz "
    "(Windows; then put its bin folder on PATH), and restart the kernel. "
    "Without it, fastgrad.to_dot(root) (or this object's .source) gives the DOT "
    "text, which any Graphviz viewer draws."
)


class GraphvizNotFound(graphviz.ExecutableNotFound):  # type: ignore[misc]
    """The Graphviz ``dot`` program is missing (a ``graphviz.ExecutableNotFound``)."""

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)   # the parent formats a command line


class Digraph(graphviz.Digraph):  # type: ignore[misc]
    """``graphviz.Digraph`` whose rendering explains a missing ``dot`` program.

    Every way of rendering goes through ``pipe`` (Jupyter's
    ``_repr_mimebundle_``, ``_repr_image_svg_xml``), ``render`` (``view``) or
    ``unflatten``; those three re-raise graphviz's ``ExecutableNotFound`` as
    :class:`GraphvizNotFound` with install instructions.
    """

    def pipe(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().pipe(*args, **kwargs)
        except graphviz.ExecutableNotFound as exc:
            raise GraphvizNotFound(NO_DOT_HELP) from exc

    def render(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().render(*args, **kwargs)
        except graphviz.ExecutableNotFound as exc:
            raise GraphvizNotFound(NO_DOT_HELP) from exc

    def unflatten(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().unflatten(*args, **kwargs)
        except graphviz.ExecutableNotFound as exc:
            raise GraphvizNotFound(NO_DOT_HELP) from exc
