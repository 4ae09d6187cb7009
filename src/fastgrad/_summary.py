"""What :func:`fastgrad.compile` found in a graph: ``Program.summary()``.

A compiled Program runs a graph in two ways: **dense layers** (groups of
neurons that sum products of the same per-sample values with scalar weights,
run as matrix kernels with their activation) and, for everything else, **one
instruction at a time** (a loop over the batch per recorded operation).
:class:`ProgramSummary` lists the layers found -- shapes, how each neuron's
sum starts and where its bias is added, the activation ops run in the
layer's epilogue -- and what runs per instruction, with the share of the
per-sample FLOPs on each path.  :class:`PerformanceWarning` is what
``compile`` emits when most of a big program's work is products of weights
and per-sample values that were *not* found as layers.

Pure Python (the pure-Python build has no ``compile``, but the classes
exist in both builds).
"""
import dataclasses
from typing import Optional

__all__ = ["PerformanceWarning", "LayerSummary", "ProgramSummary"]

# a program warns when its per-instruction path holds at least this many
# products of a scalar and a per-sample value per sample (a 64 x 64 layer is
# 4,096), and they are most of its per-sample FLOPs
WARN_PRODUCTS = 4096


class PerformanceWarning(UserWarning):
    """A compiled Program runs most of its work one instruction at a time
    where it looks like it could run as dense layers (see
    ``Program.summary()``).

    ``warnings.simplefilter("ignore", fastgrad.PerformanceWarning)`` silences
    it; ``"error"`` turns it into an exception.

    Examples
    --------
    >>> import warnings
    >>> import fastgrad
    >>> issubclass(fastgrad.PerformanceWarning, UserWarning)
    True
    """


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """One dense layer of a compiled Program.

    Attributes
    ----------
    inputs : int
        Per-sample values each neuron reads (K).
    outputs : int
        Neurons (H).
    start : str
        How each neuron's sum starts: ``"bias"`` (``sum(..., b)``: the bias
        is the first term), ``"0"`` (Python's ``sum()`` starts at the int
        0), ``"first product"`` (a hand-written loop starting at ``w[0] *
        x[0]``), ``"constant"`` (another number), or ``"mixed"``.
    bias : str
        Where the bias is added: ``"first"``, ``"last"`` (``sum(...) + b``
        or ``b + sum(...)``), ``"none"``, or ``"mixed"``.
    activation : tuple of str
        The ops run on the layer's outputs in its epilogue, in order
        (``("relu",)``, ``("tanh",)``, ``("mulc -1", "exp", "addc 1",
        "rdivc 1")`` for ``1 / (1 + (-z).exp())`` ...); empty when none.
    flops : int
        Forward FLOPs per sample (a multiply-add is 2, an epilogue op 1).
    """
    inputs: int
    outputs: int
    start: str
    bias: str
    activation: tuple[str, ...]
    flops: int

    def describe(self) -> str:
        """One line: ``64 -> 64, sum starts at 0, bias last, tanh``."""
        act = ", ".join(self.activation) if self.activation else "no activation"
        bias = {"first": "bias first", "last": "bias last", "none": "no bias",
                "mixed": "bias mixed"}[self.bias]
        return (f"{self.inputs} -> {self.outputs}, sum starts at {self.start}, "
                f"{bias}, {act}")


@dataclasses.dataclass(frozen=True)
class ProgramSummary:
    """What ``fastgrad.compile`` found in a graph (``Program.summary()``).

    Attributes
    ----------
    layers : tuple of LayerSummary
        The dense layers, in the order the training replay runs them.
    per_instruction : tuple of (str, int)
        The per-sample instructions that run one at a time outside the
        layers: (op name, count), most frequent first (``fmuladd`` is a
        fused ``acc + w * x``).
    shared_instructions : int
        Instructions run once per replay (on parameters only: an L2
        penalty ...), not per sample.
    layer_flops, other_flops : int
        Forward FLOPs per sample on the layer path and per instruction.
    products_outside : int
        Products of a scalar (weight) and a per-sample value per sample that
        run per instruction (the work a layer would have done).
    chains, chains_in_layers, chains_repeating_a_row : int
        Dot chains (a neuron's sum of products) found, grouped into layers,
        and left out because they read a per-sample value twice.
    recognised : bool
        False when layer recognition was switched off (a testing hook).
    """
    layers: tuple[LayerSummary, ...]
    per_instruction: tuple[tuple[str, int], ...]
    shared_instructions: int
    layer_flops: int
    other_flops: int
    products_outside: int
    chains: int
    chains_in_layers: int
    chains_repeating_a_row: int
    recognised: bool = True

    @property
    def layer_share(self) -> float:
        """Fraction of the per-sample forward FLOPs run in layers (0.0-1.0)."""
        total = self.layer_flops + self.other_flops
        return self.layer_flops / total if total else 0.0

    def warning(self) -> Optional[str]:
        """The PerformanceWarning text ``compile`` emits for this program, or
        None: when products of weights and per-sample values outside layers
        are at least WARN_PRODUCTS per sample and most of its FLOPs."""
        if not self.recognised or self.products_outside < WARN_PRODUCTS:
            return None
        total = self.layer_flops + self.other_flops
        if 2 * self.products_outside <= total / 2:      # a multiply-add: 2 FLOPs
            return None
        why = []
        if self.chains_repeating_a_row:
            why.append(f"{self.chains_repeating_a_row:,} neuron sums read a per-sample "
                       "value twice")
        fused = dict(self.per_instruction).get("fmuladd", 0)
        if fused:
            why.append(f"{fused:,} multiply-adds are not part of a sum found as a "
                       "neuron (a running sum or a product read by something else, "
                       "or a sum starting from a per-sample value)")
        return (
            f"compile: {self.products_outside:,} products of a weight and a per-sample "
            f"value per sample ({100 * (1 - self.layer_share):.0f}% of the per-sample "
            "FLOPs) run one instruction at a time, not as dense layers"
            + (f" ({'; '.join(why)})" if why else "")
            + ". A layer is found when neurons sum products of the same per-sample "
            "values in the same order, each running sum read only by the next term; "
            "see Program.summary()")

    def __str__(self) -> str:
        lines = [f"{len(self.layers)} dense layer{'s' if len(self.layers) != 1 else ''}, "
                 f"{100 * self.layer_share:.1f}% of the per-sample FLOPs "
                 f"({self.layer_flops:,} of {self.layer_flops + self.other_flops:,})"]
        for i, layer in enumerate(self.layers):
            lines.append(f"  layer {i}: {layer.describe()}")
        if self.per_instruction:
            ops = ", ".join(f"{name} x{count:,}" for name, count in self.per_instruction)
            lines.append(f"per instruction, per sample: {ops}")
        else:
            lines.append("per instruction, per sample: nothing")
        lines.append(f"once per replay: {self.shared_instructions:,} instructions")
        if not self.recognised:
            lines.append("(layer recognition was switched off)")
        return "\n".join(lines)
