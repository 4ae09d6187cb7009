"""fastgrad: scalar reverse-mode autodiff, compiled; a drop-in for micrograd."""
from fastgrad.engine import Value, maximum, minimum, no_grad

__all__ = ["Value", "maximum", "minimum", "no_grad"]
from fastgrad.numgrad import num_grad, gradcheck, GradcheckError; __all__ += ["num_grad", "gradcheck", "GradcheckError"]  # noqa: E402,E702
__version__ = "0.1.0"
from fastgrad.viz import draw_dot, to_dot  # noqa: E402  (graph drawing)
__all__ += ["draw_dot", "to_dot"]
