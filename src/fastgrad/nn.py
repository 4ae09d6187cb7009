"""Neural-network building blocks: micrograd's ``nn`` on fastgrad Values.

Same classes, constructors, reprs and weight initialisation as
``micrograd.nn`` (weights from ``random.uniform(-1, 1)`` drawn in the same
order, biases 0), so ``random.seed(s)`` gives the same model in both, and the
same call semantics: a Neuron pairs its weights with the inputs as
``zip(self.w, x)`` does (``Neuron(3)`` on 2 inputs uses 2 pairs).  One fix: a
width-1 hidden layer works (``MLP(2, [16, 1, 1])``); micrograd's fails.
``from fastgrad.nn import *`` binds what ``from micrograd.nn import *`` does:
``random``, ``Value``, ``Module``, ``Neuron``, ``Layer`` and ``MLP``.
"""
import itertools
import operator
import random
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

from fastgrad._backend import COMPILED

# Type checkers see the compiled engine (its .pyi stub) whatever the build: the
# pure-Python Value has the same interface.
if TYPE_CHECKING or COMPILED:
    from fastgrad._engine import Value, _is_tracing, dot_add, zero_grad as _zero_grad
else:
    # The pure-Python build: fastgrad.reference binds its engine here
    # (_use_engine) when it is imported, which fastgrad.engine does before
    # this module can be imported (the package's __init__ imports it first).
    # nn does not import reference: reference's own nn subclasses these classes.
    Value = dot_add = _zero_grad = None

    def _is_tracing() -> bool:        # compile() needs the compiled build
        return False

# what a layer accepts: Values or plain numbers (a width-1 layer's output is a bare Value)
_Inputs = Union[Value, Iterable[Union[Value, float]]]

# micrograd.nn has no __all__: its star-import binds its public names, the
# modules it imports included
__all__ = ["random", "Value", "Module", "Neuron", "Layer", "MLP"]


def _count(n: Any, what: str, cls: str) -> int:
    # micrograd passes it to range(): any int-like (a numpy int too); a bool
    # or a negative count is a mistake we name (micrograd builds nothing)
    if isinstance(n, bool):
        raise ValueError(f"{cls}: {what} must be a non-negative int, got {n!r}")
    try:
        k = operator.index(n)
    except TypeError:
        raise TypeError(f"{cls}: {what} must be an int, got "
                        f"{type(n).__name__}") from None
    if k < 0:
        raise ValueError(f"{cls}: {what} must be a non-negative int, got {n!r}")
    return k


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
        nin = _count(nin, "nin", "Neuron")
        self.w: list[Value] = [self._Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b: Value = self._Value(0)
        self.nonlin = nonlin

    def __call__(self, x: _Inputs) -> Value:
        if not isinstance(x, (list, tuple)):
            x = self._inputs(x)
        if len(x) != len(self.w):
            return self._zip_call(x)
        return self._forward(self.w, x)

    def _inputs(self, x: Any) -> Sequence[Union[Value, float]]:
        if isinstance(x, self._Value):
            return [x]                    # the output of a width-1 layer
        if hasattr(x, "__len__") and hasattr(x, "__getitem__"):
            return list(x)                # a numpy array, a range...
        # an iterator: zip(self.w, x) takes at most len(self.w) items of it
        return list(itertools.islice(x, len(self.w)))

    def _zip_call(self, x: Sequence[Union[Value, float]]) -> Value:
        n = len(self.w)
        if _is_tracing():
            # compile() records this call once for every later replay: a
            # silently dropped input or weight would be baked into it
            raise ValueError(
                f"{self!r} expects {n} input{'s' if n != 1 else ''}, got "
                f"{len(x)} (while compile() traced it: eager calls pair them "
                "as micrograd's zip(self.w, x) does, but a compiled model must "
                "be given exactly its inputs)")
        # micrograd: sum((wi*xi for wi, xi in zip(self.w, x)), self.b)
        m = min(n, len(x))
        return self._forward(self.w[:m], x[:m])

    def _forward(self, w: list[Value], x: Sequence[Union[Value, float]]) -> Value:
        # b + w0*x0 + w1*x1 + ... (then relu), the graph micrograd builds
        return dot_add(w, x, self.b, self.nonlin)

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
        nout = _count(nout, "nout", "Layer")
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
