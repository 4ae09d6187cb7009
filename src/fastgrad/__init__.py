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
from typing import TYPE_CHECKING

from fastgrad._backend import COMPILED
from fastgrad.engine import (Value, cross_entropy, log_softmax, logsumexp, maximum,
                             minimum, no_grad, softmax, sum)
from fastgrad.numgrad import GradcheckError, gradcheck, num_grad
from fastgrad.viz import draw_dot, to_dot
from fastgrad.compiled import compile, compile_graph
from fastgrad.autograd import grad
from fastgrad._tracing import TracerWarning
from fastgrad._summary import PerformanceWarning
from fastgrad import data, optim

if TYPE_CHECKING:
    # imported on first use at run time (below); type checkers see them now
    from fastgrad import distributed as distributed
    from fastgrad.distributed import sweep as sweep


def __getattr__(name: str) -> object:
    # fastgrad.sweep and fastgrad.distributed load concurrent.futures on first
    # use, so that ``import fastgrad`` stays as light as the eager engine
    if name in ("sweep", "distributed"):
        import fastgrad.distributed as distributed
        return distributed.sweep if name == "sweep" else distributed
    raise AttributeError(f"module 'fastgrad' has no attribute {name!r}")


__all__ = [
    "Value", "maximum", "minimum", "no_grad",
    "sum", "logsumexp", "softmax", "log_softmax", "cross_entropy",
    "num_grad", "gradcheck", "GradcheckError",
    "draw_dot", "to_dot",
    "compile", "compile_graph", "grad", "TracerWarning", "PerformanceWarning",
    "optim", "data", "sweep", "distributed",
    "COMPILED",
]
__version__ = "0.1.0"
