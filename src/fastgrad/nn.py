"""Neural-network building blocks: micrograd's ``nn`` on fastgrad Values.

Same classes, constructors, reprs and weight initialisation as
``micrograd.nn`` (weights from ``random.uniform(-1, 1)`` drawn in the same
order, biases 0), so ``random.seed(s)`` gives the same model in both.  One
fix: a width-1 hidden layer works (``MLP(2, [16, 1, 1])``); micrograd's fails.
"""
import random
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union, cast

from fastgrad._backend import COMPILED

# Type checkers see the compiled engine (its .pyi stub) whatever the build: the
# pure-Python Value has the same interface.
if TYPE_CHECKING or COMPILED:
    from fastgrad._engine import Value, dot_add, zero_grad as _zero_grad
else:
    # The pure-Python build: fastgrad.reference binds its engine here
    # (_use_engine) when it is imported, which fastgrad.engine does before
    # this module can be imported (the package's __init__ imports it first).
    # nn does not import reference: reference's own nn subclasses these classes.
    Value = dot_add = _zero_grad = None

# what a layer accepts: Values or plain numbers (a width-1 layer's output is a bare Value)
_Inputs = Union[Value, Sequence[Union[Value, float]]]

__all__ = ["Module", "Neuron", "Layer", "MLP"]


class Module:
    """Base class: holds parameters and can zero their gradients."""

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to 0."""
        _zero_grad(self.parameters())

    def parameters(self) -> list[Value]:
        """The list of trainable Values."""
        return []


class Neuron(Module):
    """One unit: ``relu(w . x + b)`` (or linear when ``nonlin=False``).

    Parameters
    ----------
    nin : int
        Number of inputs.
    nonlin : bool, default True
        Apply ReLU to the output.

    Examples
    --------
    >>> import random; random.seed(0)
    >>> from fastgrad.nn import Neuron
    >>> n = Neuron(2)
    >>> n
    ReLUNeuron(2)
    >>> n([1.0, -1.0]).data >= 0
    True
    """

    # the engine a Neuron builds on; fastgrad.reference swaps in its own
    _Value: "type[Any]" = Value

    def __init__(self, nin: int, nonlin: bool = True) -> None:
        if isinstance(nin, bool) or not isinstance(nin, int) or nin < 1:
            raise ValueError(f"Neuron: nin must be a positive int, got {nin!r}")
        self.w: list[Value] = [self._Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b: Value = self._Value(0)
        self.nonlin = nonlin

    def __call__(self, x: _Inputs) -> Value:
        if isinstance(x, self._Value):
            x = [cast(Value, x)]          # the output of a width-1 layer
        return self._forward(cast("Sequence[Union[Value, float]]", x))

    def _forward(self, x: Sequence[Union[Value, float]]) -> Value:
        # b + w0*x0 + w1*x1 + ... (then relu), the graph micrograd builds
        return dot_add(self.w, x, self.b, self.nonlin)

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons reading the same inputs.

    Returns a list of outputs, or the bare Value when ``nout == 1`` (as
    micrograd does).
    """

    _Neuron = Neuron

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        if isinstance(nout, bool) or not isinstance(nout, int) or nout < 1:
            raise ValueError(f"Layer: nout must be a positive int, got {nout!r}")
        self.neurons = [self._Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x: _Inputs) -> Any:
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """A multi-layer perceptron: ReLU hidden layers, a linear last layer.

    Parameters
    ----------
    nin : int
        Number of inputs.
    nouts : list of int
        Width of each layer, the last one being the output size.

    Examples
    --------
    >>> import random; random.seed(1337)
    >>> from fastgrad.nn import MLP
    >>> model = MLP(2, [16, 16, 1])
    >>> len(model.parameters())
    337
    >>> score = model([0.5, -0.3])
    """

    _Layer = Layer

    def __init__(self, nin: int, nouts: Iterable[int]) -> None:
        nouts = list(nouts)
        if not nouts:
            raise ValueError("MLP: nouts must name at least one layer")
        sz = [nin] + nouts
        self.layers = [self._Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1)
                       for i in range(len(nouts))]

    def __call__(self, x: _Inputs) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def _use_engine(value: type, dot_add_fn: Any, zero_grad_fn: Any) -> None:
    """Build on another engine's Value (the pure-Python build: called by
    fastgrad.reference with its own)."""
    # through globals(): an assignment here would make type checkers widen
    # Value to whatever this function receives (pyright: list[Unknown] for
    # model.parameters())
    globals().update(Value=value, dot_add=dot_add_fn, _zero_grad=zero_grad_fn)
    Neuron._Value = value
