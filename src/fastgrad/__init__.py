"""fastgrad: scalar reverse-mode autodiff, compiled; a drop-in for micrograd."""
from fastgrad.engine import Value, maximum, minimum, no_grad

__all__ = ["Value", "maximum", "minimum", "no_grad"]
__version__ = "0.1.0"
from fastgrad.compiled import compile, compile_graph  # noqa: F401 (trace once, run many)
