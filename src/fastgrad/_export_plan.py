"""The export plan: a recorded program's description (``Program.graph()``)
arranged for a tensor framework.  Pure Python, no torch or onnx here.

Decided once, shared by the torch and ONNX writers:

* **Which parameters become which tensors.**  A dense layer whose H x K
  weights are distinct parameters owned by no earlier layer becomes a
  ``Linear`` whose weight *is* those parameters (likewise its bias); every
  other parameter is an entry of one vector, ``scalars``.  ``flat[i]`` is the
  position of program parameter ``i`` in the concatenation of the tensors in
  ``tensors`` order (how weights are copied in and out, in program order).
* **The order of a layer's outputs.**  A layer's neurons form a set; they are
  put in the order in which the next layer reading all of them reads them,
  so an MLP exports as ``Linear -> act -> Linear ...`` with no permutation in
  between (micrograd's own neuron order).
* **Which scalar instructions each entry point needs** (``forward`` those read
  by per-sample instructions, layers and outputs; ``penalty`` those under the
  penalty), in tape order.
"""
from typing import Any, Optional

Ref = tuple[str, int]
Instr = dict[str, Any]

#: activations a framework has as a module (a one-op epilogue)
ACTIVATIONS = ("relu", "tanh", "sigmoid")


class LayerPlan:
    """One dense layer: ``outputs = epilogue(W @ inputs + bias)``.

    A row's bias is what its sum adds besides the products: its start and
    its end term (``Program.graph()``), zeros dropped (they change at most
    the sign of a zero).  ``bias`` is one operand per row when every row has
    exactly one such term (a ``Linear``'s bias), else None and ``terms``
    lists each row's terms (added up as scalars).
    """

    def __init__(self, index: int, desc: dict[str, Any]) -> None:
        self.index = index
        self.inputs: list[Ref] = list(desc["inputs"])
        self.outputs: list[Ref] = list(desc["outputs"])
        self.weights: list[list[Ref]] = [list(row) for row in desc["weights"]]
        H = len(self.outputs)
        end = desc["end"] or [None] * H
        self.terms: list[list[Ref]] = [
            [t for t in (desc["start"][h], end[h])
             if t is not None and not (t[0] == "value" and t[1] == 0.0)]
            for h in range(H)]
        self.bias: Optional[list[Ref]] = None
        if all(len(t) == 1 and t[0][0] != "value" for t in self.terms):
            self.bias = [t[0] for t in self.terms]
        self.has_bias = any(self.terms)
        self.epilogue: list[tuple[str, Optional[float]]] = list(desc["epilogue"])
        self.owns_weight = False
        self.owns_bias = False
        self.module: Optional[int] = None     # position among the Linear modules

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.outputs), len(self.inputs)

    def reorder(self, order: list[Ref]) -> None:
        """Put the outputs (and their weight rows and biases) in ``order``."""
        pos = {ref: h for h, ref in enumerate(self.outputs)}
        idx = [pos[ref] for ref in order]
        self.outputs = [self.outputs[h] for h in idx]
        self.weights = [self.weights[h] for h in idx]
        self.terms = [self.terms[h] for h in idx]
        if self.bias is not None:
            self.bias = [self.bias[h] for h in idx]


def _params_of(refs: list[Ref]) -> Optional[list[int]]:
    """The parameter indices of refs when all are distinct parameters."""
    if not all(kind == "param" for kind, _ in refs):
        return None
    idx = [i for _, i in refs]
    return idx if len(set(idx)) == len(idx) else None


class Plan:
    """See the module docstring.  ``graph`` is ``Program.graph()``."""

    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph
        self.n_inputs: int = graph["n_inputs"]
        self.n_outputs: int = graph["n_outputs"]
        self.n_params: int = graph["n_params"]
        self.constants: list[float] = list(graph["constants"])
        self.layers = [LayerPlan(i, d) for i, d in enumerate(graph["layers"])]
        self.batched: list[Instr] = list(graph["batched"])
        self.outputs: list[Ref] = list(graph["outputs"])
        self.penalty: Optional[Ref] = graph["penalty"]
        self._order_layers()
        self._own_params()
        self._split_scalar(list(graph["scalar"]))

    # -- layers --------------------------------------------------------------

    def _order_layers(self) -> None:
        for lay in self.layers:
            outs = set(lay.outputs)
            for ins in self.batched:
                if ins["op"] != "layer" or ins["layer"] == lay.index:
                    continue
                reads = self.layers[ins["layer"]].inputs
                if len(reads) == len(outs) and set(reads) == outs:
                    lay.reorder(list(reads))
                    break

    def _own_params(self) -> None:
        owner: dict[int, tuple[Any, ...]] = {}
        tensors: list[tuple[str, tuple[int, ...]]] = []
        flat: dict[int, int] = {}
        size = 0
        n_mod = 0
        for lay in self.layers:
            H, K = lay.shape
            w = _params_of([r for row in lay.weights for r in row])
            if w is None or any(i in owner for i in w):
                continue
            b = None if lay.bias is None else _params_of(lay.bias)
            if b is not None:
                in_w = set(w)
                if any(i in owner or i in in_w for i in b):
                    b = None
            lay.module = n_mod
            lay.owns_weight = True
            lay.owns_bias = b is not None
            for q, i in enumerate(w):
                owner[i] = ("weight", n_mod, q // K, q % K)
                flat[i] = size + q
            tensors.append((f"layers.{n_mod}.0.weight", (H, K)))
            size += H * K
            if b is not None:
                for h, i in enumerate(b):
                    owner[i] = ("bias", n_mod, h)
                    flat[i] = size + h
                tensors.append((f"layers.{n_mod}.0.bias", (H,)))
                size += H
            n_mod += 1
        self.n_modules = n_mod
        self.layers_by_module = {lay.module: lay for lay in self.layers
                                 if lay.module is not None}
        self.free = [i for i in range(self.n_params) if i not in owner]
        for j, i in enumerate(self.free):
            owner[i] = ("scalars", j)
            flat[i] = size + j
        if self.free:
            tensors.append(("scalars", (len(self.free),)))
        self.owner = owner
        self.tensors = tensors
        self.flat = [flat[i] for i in range(self.n_params)]

    # -- the scalar tape, split by entry point ---------------------------------

    def _split_scalar(self, scalar: list[Instr]) -> None:
        def reads(ins: Instr) -> list[Ref]:
            refs = list(ins["args"])
            for a, b in ins.get("terms", ()):
                refs += [a, b]
            return refs

        def needed(roots: list[Ref]) -> list[Instr]:
            want = {r for r in roots if r[0] == "scalar"}
            keep = []
            for ins in reversed(scalar):
                if ins["out"] in want:
                    keep.append(ins)
                    want.update(r for r in reads(ins) if r[0] == "scalar")
            return keep[::-1]

        roots: list[Ref] = [r for r in self.outputs]
        for ins in self.batched:
            roots += ins["args"]
            if ins["op"] == "fmuladd":
                roots.append(ins["args"][1])
        for lay in self.layers:
            roots += [r for row in lay.weights for r in row]
            roots += [r for t in lay.terms for r in t if r[0] != "value"]
        self.fwd_scalar = needed(roots)
        self.pen_scalar = needed([self.penalty] if self.penalty is not None else [])
