"""fastgrad.export's ONNX writer: a Plan as an ONNX model (inference).

Inputs ``X`` (batch, n_inputs); outputs ``Y`` (batch, n_outputs) and, when the
program has one, ``penalty`` (a scalar).  Dense layers are ``Gemm`` nodes
(weights and biases as initializers named as in the torch module's
``state_dict``) followed by their activation; every other instruction is one
elementwise node (or two: ``acc + s*x`` is Mul then Add) on (batch,) rows or
0-d scalars, in the program's order.  Default opset 17.
"""
from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastgrad._export_plan import LayerPlan, Plan, Ref

__all__ = ["OPSET", "build_model"]

#: the default opset (Shape with start/end needs 15; nothing here needs more)
OPSET = 17
MIN_OPSET = 15

# op -> (ONNX op type, operand order); "c" is the op's constant
_SIMPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "add": ("Add", ("a", "b")), "sub": ("Sub", ("a", "b")),
    "mul": ("Mul", ("a", "b")), "div": ("Div", ("a", "b")),
    "pow": ("Pow", ("a", "b")), "max": ("Max", ("a", "b")),
    "min": ("Min", ("a", "b")),
    "addc": ("Add", ("a", "c")), "mulc": ("Mul", ("a", "c")),
    "rsubc": ("Sub", ("c", "a")), "divc": ("Div", ("a", "c")),
    "rdivc": ("Div", ("c", "a")), "powc": ("Pow", ("a", "c")),
    "rpowc": ("Pow", ("c", "a")),
    "relu": ("Relu", ("a",)), "tanh": ("Tanh", ("a",)), "exp": ("Exp", ("a",)),
    "log": ("Log", ("a",)), "sigmoid": ("Sigmoid", ("a",)), "abs": ("Abs", ("a",)),
    "sqrt": ("Sqrt", ("a",)),
}

_NARY = ("sum", "logsumexp")

#: the ops an ONNX model can compute (tests check the rules table's)
OPS = frozenset(_SIMPLE) | {"relu_grad", "sign_grad", "tie_grad", "fmuladd", "dot",
                            "layer", "log1p", "softplus", "softmax"} | set(_NARY)


class _Builder:
    def __init__(self, plan: Plan, values: list[float], elem: int, opset: int) -> None:
        self.plan = plan
        self.opset = opset
        self.batch_shape: Optional[str] = None
        self.elem = elem
        self.np_dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.names: dict[Ref, str] = {}
        self.count = 0
        self.layer_done: set[str] = set()
        self.has_theta = False
        self.columns: dict[Ref, tuple[str, int]] = {}   # layer output -> (matrix, column)
        # values onnxruntime can fold to constants: the initializers and what
        # is computed from them alone (every parameter and scalar; see arith)
        self.folds: set[str] = set()
        self.negated: dict[str, str] = {}
        self._initial_tensors(values)

    # -- names, constants, initializers ------------------------------------------

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], hint: str, out: Optional[str] = None,
             **attrs: Any) -> str:
        out = out or self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        if inputs and all(name in self.folds for name in inputs):
            self.folds.add(out)
        return out

    def init(self, name: str, array: "np.ndarray[Any, Any]") -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(array, name)
            self.folds.add(name)
        return name

    def const(self, value: float) -> str:
        key = float(value).hex().replace("-", "m").replace(".", "_").replace("+", "p")
        return self.init(f"c_{key}", np.array(value, dtype=self.np_dtype))

    def ints(self, values: list[int], scalar: bool = False) -> str:
        arr = np.array(values[0] if scalar else values, dtype=np.int64)
        tag = "_".join(str(v) for v in values) if len(values) <= 8 else self.fresh("n")
        return self.init(f"i{'s' if scalar else ''}_{tag}", arr)

    def _initial_tensors(self, values: list[float]) -> None:
        flat = np.zeros(sum(int(np.prod(s)) for _, s in self.plan.tensors), self.np_dtype)
        flat[self.plan.flat] = values
        pos = 0
        for name, shape in self.plan.tensors:
            n = int(np.prod(shape))
            self.init(name, flat[pos:pos + n].reshape(shape))
            pos += n

    # -- operands ------------------------------------------------------------------

    def sref(self, ref: Ref) -> str:
        kind, i = ref
        if kind == "scalar":
            return self.names[ref]
        if kind == "const":
            return self.const(self.plan.constants[i])
        if ref in self.names:
            return self.names[ref]
        own = self.plan.owner[i]
        if own[0] == "scalars":
            src, idx = "scalars", own[1]
        elif own[0] == "weight":
            src = self.flat_of(f"layers.{own[1]}.0.weight")
            idx = own[2] * self.plan.layers_by_module[own[1]].shape[1] + own[3]
        else:
            src, idx = f"layers.{own[1]}.0.bias", own[2]
        name = self.node("Gather", [src, self.ints([idx], scalar=True)], f"p{i}", axis=0)
        self.names[ref] = name
        return name

    def flat_of(self, name: str) -> str:
        flat = f"{name}.flat"
        if not any(flat in n.output for n in self.nodes):
            self.node("Reshape", [name, self.ints([-1])], "", out=flat)
        return flat

    def bref(self, ref: Ref) -> str:
        if ref not in self.names:
            # an input column or a layer's output column, taken when first read
            src, j = self.columns.get(ref, ("X", ref[1]))
            hint = f"{'x' if ref[0] == 'input' else 'r'}{ref[1]}"
            self.names[ref] = self.node("Gather", [src, self.ints([j], scalar=True)],
                                        hint, axis=1)
        return self.names[ref]

    def ref(self, ref: Ref) -> str:
        return self.bref(ref) if ref[0] in ("input", "row") else self.sref(ref)

    # -- instructions --------------------------------------------------------------

    def instr(self, ins: dict[str, Any]) -> None:
        op = ins["op"]
        if op == "layer":
            self.layer(self.plan.layers[ins["layer"]])
            return
        out = ins["out"]
        hint = f"{'s' if out[0] == 'scalar' else 'r'}{out[1]}"
        if op == "dot":
            name = self.dot(ins, hint)
        elif op in _NARY:
            name = self.nary(op, ins["args"], hint)
        else:
            name = self.elementwise(op, [self.ref(r) for r in ins["args"]],
                                    ins["const"], hint)
        self.names[out] = name

    def elementwise(self, op: str, args: list[str], c: Optional[float], hint: str) -> str:
        if op in _SIMPLE:
            kind, order = _SIMPLE[op]
            operands = {"a": args[0], "b": args[1] if len(args) > 1 else "",
                        "c": self.const(c) if c is not None else ""}
            if kind in ("Add", "Sub", "Mul", "Div"):
                return self.arith(kind, operands[order[0]], operands[order[1]], hint)
            return self.node(kind, [operands[k] for k in order], hint)
        if op == "fmuladd":
            prod = self.arith("Mul", args[1], args[2], hint + "_prod")
            return self.arith("Add", args[0], prod, hint)
        if op == "log1p":
            return self.log1p(args[0], hint)
        if op == "softplus":
            # max(a, 0) + log1p(e**-|a|), as fastgrad computes it
            a = args[0]
            e = self.node("Exp", [self.node("Neg", [self.node("Abs", [a], hint + "_abs")],
                                            hint + "_nabs")], hint + "_e")
            return self.arith("Add", self.node("Relu", [a], hint + "_pos"),
                              self.log1p(e, hint + "_l"), hint)
        if op == "softmax":            # e**(a - b)
            return self.node("Exp", [self.arith("Sub", args[0], args[1], hint + "_d")], hint)
        zero = self.const(0.0)
        a, b = args
        pos = self.node("Greater", [b, zero], hint + "_pos")
        if op == "relu_grad":
            return self.node("Where", [pos, a, zero], hint)
        if op == "sign_grad":
            neg = self.node("Less", [b, zero], hint + "_neg")
            other = self.node("Where", [neg, self.node("Neg", [a], hint + "_m"), zero],
                              hint + "_w")
            return self.node("Where", [pos, a, other], hint)
        if op == "tie_grad":
            tie = self.node("Equal", [b, zero], hint + "_tie")
            half = self.node("Mul", [a, self.const(0.5)], hint + "_half")
            other = self.node("Where", [tie, half, zero], hint + "_w")
            return self.node("Where", [pos, a, other], hint)
        raise NotImplementedError(f"export: no ONNX mapping for op {op!r}")

    def log1p(self, x: str, hint: str) -> str:
        """log(1 + x) to a few ulps: ONNX has no Log1p, and Log(1 + x) loses
        x's digits below 1's last bit (all of them for |x| < 1e-16).  With u =
        1 + x rounded, log(u) * x / (u - 1) corrects for that rounding
        (Goldberg, "What every computer scientist should know about
        floating-point arithmetic", 1991, thm. 4); x itself where u == 1, and
        +inf where u is +inf (the quotient would be inf/inf)."""
        one = self.const(1.0)
        u = self.arith("Add", x, one, hint + "_u")
        ratio = self.arith("Div", self.arith("Mul", self.node("Log", [u], hint + "_log"), x,
                                             hint + "_num"),
                           self.arith("Sub", u, one, hint + "_den"), hint + "_q")
        at_one = self.node("Equal", [u, one], hint + "_one")
        at_inf = self.node("IsInf", [u], hint + "_inf", detect_negative=0)
        return self.node("Where", [at_one, x, self.node("Where", [at_inf, u, ratio],
                                                          hint + "_w")], hint)

    def nary(self, op: str, refs: list[Ref], hint: str) -> str:
        """fastgrad.sum (in order, from 0.0 + x_0 as Python's sum()) and
        logsumexp (ReduceLogSumExp over the operands side by side)."""
        names = [self.ref(r) for r in refs]
        if op == "sum":
            total = self.arith("Add", names[0], self.const(0.0), hint + "_0")
            for name in names[1:]:
                total = self.arith("Add", total, name, hint + "_s")
            return total
        rows = any(r[0] in ("input", "row") for r in refs)
        axis = 1 if rows else 0
        cols = []
        for r, name in zip(refs, names):
            if rows and r[0] not in ("input", "row"):
                name = self.node("Expand", [name, self.batch()], hint + "_b")
            cols.append(self.node("Unsqueeze", [name, self.ints([axis])], hint + "_u"))
        stacked = self.node("Concat", cols, hint + "_x", axis=axis)
        if self.opset >= 18:           # axes became an input
            return self.node("ReduceLogSumExp", [stacked, self.ints([axis])], hint,
                             keepdims=0)
        return self.node("ReduceLogSumExp", [stacked], hint, axes=[axis], keepdims=0)

    def batch(self) -> str:
        """The batch size as a 1-element shape (for Expand)."""
        if self.batch_shape is None:
            self.batch_shape = self.node("Shape", ["X"], "batch", start=0, end=1)
        return self.batch_shape

    def arith(self, kind: str, x: str, y: str, hint: str) -> str:
        """``x kind y`` for Add/Sub/Mul/Div, safe from onnxruntime's
        NoopElimination.

        onnxruntime (1.32, default optimizations) deletes ``x + c``, ``x - c``,
        ``x * c`` and ``x / c`` when ``c`` is a constant whose value *as a
        float32* is 0 or 1 -- also for doubles such as 1 + 1e-10 or 1e-200,
        and for any value it can fold to a constant (every parameter and
        scalar result here: ``folds``).  So where such a value takes part, the
        operation is
        written in an equal form it leaves alone: ``Sum(x, y)`` for ``x + y``
        and ``Sum(x, -y)`` for ``x - y`` (a two-term Sum is one rounded
        addition), ``(-x) * (-y)`` and ``(-x) / (-y)`` (negation is exact, and
        a negated constant near 1 is near -1).  Two rows need none of this.
        """
        if not (x in self.folds or y in self.folds):
            return self.node(kind, [x, y], hint)
        if kind == "Add":
            return self.node("Sum", [x, y], hint)
        if kind == "Sub":
            return self.node("Sum", [x, self.neg(y)], hint)
        return self.node(kind, [self.neg(x), self.neg(y)], hint)

    def neg(self, name: str) -> str:
        if name not in self.negated:
            self.negated[name] = self.node("Neg", [name], name + "_neg")
        return self.negated[name]

    def vector(self, refs: list[Ref], hint: str) -> str:
        if all(kind == "param" for kind, _ in refs):
            theta = self.theta()
            return self.node("Gather", [theta, self.ints([self.plan.flat[i] for _, i in refs])],
                             hint, axis=0)
        cols = [self.node("Unsqueeze", [self.sref(r), self.ints([0])], hint + "_u")
                for r in refs]
        return self.node("Concat", cols, hint, axis=0)

    def theta(self) -> str:
        """The parameter tensors flattened end to end (the plan's ``flat``)."""
        if not self.has_theta:
            parts = [self.node("Reshape", [name, self.ints([-1])], "flat")
                     for name, _ in self.plan.tensors]
            self.node("Concat", parts, "", out="theta", axis=0)
            self.has_theta = True
        return "theta"

    def dot(self, ins: dict[str, Any], hint: str) -> str:
        a = self.vector([t[0] for t in ins["terms"]], hint + "_a")
        b = self.vector([t[1] for t in ins["terms"]], hint + "_b")
        prod = self.node("Mul", [a, b], hint + "_prod")
        total = self.node("ReduceSum", [prod, self.ints([0])], hint + "_sum", keepdims=0)
        return self.arith("Add", self.sref(ins["args"][0]), total, hint)

    def bias_vector(self, lay: LayerPlan, hint: str) -> str:
        """A layer's bias as a (H,) tensor from its rows' terms."""
        if lay.bias is not None:
            return self.vector(lay.bias, hint)
        cols = []
        for terms in lay.terms:
            names = [self.const(t[1]) if t[0] == "value" else self.sref(t) for t in terms]
            total = names[0] if names else self.const(0.0)
            for name in names[1:]:
                total = self.arith("Add", total, name, hint + "_t")
            cols.append(self.node("Unsqueeze", [total, self.ints([0])], hint + "_u"))
        return self.node("Concat", cols, hint, axis=0)

    def matrix(self, rows: list[Ref], hint: str) -> str:
        if all(r[0] == "input" for r in rows):
            idx = [r[1] for r in rows]
            if idx == list(range(idx[0], idx[0] + len(idx))):
                if len(idx) == self.plan.n_inputs:
                    return "X"
                return self.node("Slice", ["X", self.ints([idx[0]]),
                                           self.ints([idx[0] + len(idx)]), self.ints([1])],
                                 hint)
        for lay in self.plan.layers:
            if rows == lay.outputs and f"h{lay.index}" in self.layer_done:
                return f"h{lay.index}"
        cols = [self.node("Unsqueeze", [self.bref(r), self.ints([1])], hint + "_u")
                for r in rows]
        return self.node("Concat", cols, hint, axis=1)

    def layer(self, lay: LayerPlan) -> None:
        H, K = lay.shape
        h = f"h{lay.index}"
        xin = self.matrix(lay.inputs, h + "_in")
        if lay.owns_weight:
            w = f"layers.{lay.module}.0.weight"
        else:
            w = self.node("Reshape", [self.vector([r for row in lay.weights for r in row],
                                                  h + "_wv"), self.ints([H, K])], h + "_w")
        inputs = [xin, w]
        if lay.owns_bias:
            inputs.append(f"layers.{lay.module}.0.bias")
        elif lay.has_bias:
            inputs.append(self.bias_vector(lay, h + "_b"))
        z = self.node("Gemm", inputs, h + "_z" if lay.epilogue else "", transB=1,
                      out=None if lay.epilogue else h)
        for q, (op, c) in enumerate(lay.epilogue):
            last = q == len(lay.epilogue) - 1
            z = self.elementwise(op, [z], c, h if last else f"{h}_e{q}")
        if lay.epilogue:
            # the last epilogue node's output is named h (rename it)
            self.nodes[-1].output[0] = h
        self.layer_done.add(h)
        for j, ref in enumerate(lay.outputs):
            self.columns[ref] = (h, j)


def build_model(plan: Plan, values: list[float], dtype: str = "float64",
                opset: Optional[int] = None) -> onnx.ModelProto:
    """The ONNX model of a plan (see the module docstring)."""
    opset = OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"to_onnx: opset must be >= {MIN_OPSET}, got {opset}")
    elem = {"float64": TensorProto.DOUBLE, "float32": TensorProto.FLOAT}[dtype]
    b = _Builder(plan, values, elem, opset)
    for ins in plan.fwd_scalar:
        b.instr(ins)
    for ins in plan.batched:
        b.instr(ins)
    cols = []
    for ref in plan.outputs:
        name = b.ref(ref)
        if ref[0] not in ("input", "row"):
            name = b.node("Expand", [name, b.batch()], "out")
        cols.append(b.node("Unsqueeze", [name, b.ints([1])], "out"))
    b.node("Concat", cols, "", out="Y", axis=1)
    outputs = [helper.make_tensor_value_info("Y", elem, ["batch", plan.n_outputs])]
    if plan.penalty is not None:
        for ins in plan.pen_scalar:
            if ins["out"] not in b.names:
                b.instr(ins)
        b.node("Identity", [b.sref(plan.penalty)], "", out="penalty")
        outputs.append(helper.make_tensor_value_info("penalty", elem, []))
    used = {name for node in b.nodes for name in node.input}
    graph = helper.make_graph(
        b.nodes, "fastgrad_program",
        [helper.make_tensor_value_info("X", elem, ["batch", plan.n_inputs])],
        outputs, [t for name, t in b.inits.items() if name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastgrad")
    model.ir_version = min(model.ir_version, _IR_FOR_OPSET.get(opset, model.ir_version))
    onnx.checker.check_model(model)
    return model


# the IR version each opset came with: a model declares the oldest that holds
# its opset, so older onnxruntime builds still load it
_IR_FOR_OPSET = {15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
