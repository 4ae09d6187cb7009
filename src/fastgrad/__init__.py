"""fastgrad: scalar reverse-mode autodiff, compiled with Cython; a drop-in for micrograd.

>>> from fastgrad import Value
>>> x = Value(3.0)
>>> y = x * x + 2 * x
>>> y.backward()
>>> y.data, x.grad
(15.0, 8.0)

``fastgrad.COMPILED`` is True when the compiled (Cython) build runs and False
in the pure-Python fallback (no C compiler at install time, or
``FASTGRAD_NO_EXTENSIONS=1``); ``fastgrad --version`` says the same.
"""
from fastgrad._backend import COMPILED
from fastgrad.engine import Value, maximum, minimum, no_grad
from fastgrad.numgrad import GradcheckError, gradcheck, num_grad
from fastgrad.viz import draw_dot, to_dot
from fastgrad.compiled import compile, compile_graph
from fastgrad import data, optim

__all__ = [
    "Value", "maximum", "minimum", "no_grad",
    "num_grad", "gradcheck", "GradcheckError",
    "draw_dot", "to_dot",
    "compile", "compile_graph",
    "optim", "data",
    "COMPILED",
]
__version__ = "0.1.0"
