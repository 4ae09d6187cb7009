"""fastgrad.export's torch writer: a Plan as a generated ``torch.nn.Module``.

The module's ``forward`` and ``penalty`` are Python source generated from the
plan (``module.code`` shows it): one torch operation per recorded
instruction, a dense layer as one ``nn.Linear`` (plus its activation), in
the program's order.  The floats follow fastgrad's where torch allows it:

* ``c / x`` is ``torch.div(c, x)`` (``Tensor.__rtruediv__`` multiplies by a
  reciprocal: two roundings), a fused multiply-add is a product then a sum
  (two roundings, as eager), and the scalar dot chain of an L2 penalty and
  the batch reduction of ``loss`` are a cumulative sum, which runs in order
  on the CPU (the same floats as ``Program.batch``).
* ``maximum``/``minimum`` are autograd Functions with fastgrad's gradient
  (a tie splits it; a nan operand gets none: torch gives nan operands the
  whole gradient).  relu, abs, pow, sqrt, log and the other ops use torch's
  own gradients, whose conventions at the kinks are fastgrad's (relu'(0) = 0,
  abs'(0) = 0, d(x**0)/dx = 0, d(0**y)/dy = 0 for y >= 0).

Not the same bits: ``nn.Linear`` sums in BLAS order; torch's exp, log, tanh,
sigmoid and pow are its own vectorised functions (within an ulp or two of
fastgrad's).  Hence tolerances, not identity, in tests/test_export.py.
"""
import linecache
import math
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from fastgrad._export_plan import LayerPlan, Plan, Ref

__all__ = ["ExportedProgram", "build_module"]


# ---------------------------------------------------------------------------
# ops whose torch gradient convention is not fastgrad's
# ---------------------------------------------------------------------------

def _sum_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient to an operand's shape (a 0-d scalar)."""
    if g.shape == shape:
        return g
    return g.sum().reshape(shape)


class _Maximum(torch.autograd.Function):
    """torch.maximum with fastgrad's gradient: to the larger operand, half
    each on a tie, none to either when one is nan (torch gives nan operands
    the whole gradient)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return torch.maximum(a, b)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor]:
        a, b = ctx.saved_tensors
        half = g * 0.5
        ga = torch.where(a == b, half, torch.where(a > b, g, 0.0))
        gb = torch.where(a == b, half, torch.where(a < b, g, 0.0))
        return _sum_to(ga, a.shape), _sum_to(gb, b.shape)


class _Minimum(torch.autograd.Function):
    """torch.minimum with fastgrad's gradient (see _Maximum)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return torch.minimum(a, b)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor]:
        a, b = ctx.saved_tensors
        half = g * 0.5
        ga = torch.where(a == b, half, torch.where(a < b, g, 0.0))
        gb = torch.where(a == b, half, torch.where(a > b, g, 0.0))
        return _sum_to(ga, a.shape), _sum_to(gb, b.shape)


class _Abs(torch.autograd.Function):
    """torch.abs with fastgrad's gradient ``g if a > 0, -g if a < 0, else
    0``: torch's ``g * sgn(a)`` is nan at a == 0 when g is infinite (the
    gradient of ``sqrt(abs(x))`` at 0)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor) -> Tensor:
        ctx.save_for_backward(a)
        return torch.abs(a)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return torch.where(a > 0, g, torch.where(a < 0, -g, 0.0))


def absolute(a: Tensor) -> Tensor:
    out: Tensor = _Abs.apply(a)  # type: ignore[no-untyped-call]
    return out


def maximum(a: Tensor, b: Tensor) -> Tensor:
    out: Tensor = _Maximum.apply(a, b)  # type: ignore[no-untyped-call]
    return out


def minimum(a: Tensor, b: Tensor) -> Tensor:
    out: Tensor = _Minimum.apply(a, b)  # type: ignore[no-untyped-call]
    return out


def nary_sum(*xs: Tensor) -> Tensor:
    """fastgrad.sum: ``((0.0 + x_0) + x_1) + ...`` in order (CPU), rows and
    0-d scalars mixed."""
    cols = torch.broadcast_tensors(xs[0] + 0.0, *xs[1:])  # type: ignore[no-untyped-call]
    return torch.cumsum(torch.stack(cols, -1), -1)[..., -1]


def nary_logsumexp(*xs: Tensor) -> Tensor:
    """fastgrad.logsumexp over operands side by side (rows and 0-d scalars);
    its gradient is softmax times g, as fastgrad's."""
    cols = torch.broadcast_tensors(*xs)  # type: ignore[no-untyped-call]
    return torch.logsumexp(torch.stack(cols, -1), -1)


def ordered_sum(t: Tensor, start: Optional[Tensor] = None) -> Tensor:
    """``((start + t[0]) + t[1]) + ...`` in this order on the CPU (torch's
    cumulative sum runs in order there; ``t.sum()`` does not): the floats of
    fastgrad's sequential sums.  Its gradient is exactly 1 for every term."""
    if start is not None:
        t = torch.cat([start.reshape(1), t])
    return torch.cumsum(t, 0)[-1]


# ---------------------------------------------------------------------------
# op table: one torch expression per recorded op
# ---------------------------------------------------------------------------

def _lit(c: float) -> str:
    """A float as an exact Python literal (inf and nan are names in the
    generated code's namespace)."""
    if math.isnan(c):
        return "nan"
    return repr(float(c))


# op -> template over operand expressions a, b and the literal c.  Operand
# expressions are names or subscripts (atoms), so no parentheses are needed.
_TEMPLATES: dict[str, str] = {
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "mul": "{a} * {b}",
    "div": "{a} / {b}",
    "pow": "torch.pow({a}, {b})",
    "max": "maximum({a}, {b})",
    "min": "minimum({a}, {b})",
    "relu_grad": "torch.where({b} > 0, {a}, 0.0)",
    "sign_grad": "torch.where({b} > 0, {a}, torch.where({b} < 0, -{a}, 0.0))",
    "tie_grad": "torch.where({b} > 0, {a}, torch.where({b} == 0, {a} * 0.5, 0.0))",
    "addc": "{a} + {c}",
    "mulc": "{a} * {c}",
    "rsubc": "{c} - {a}",          # torch.rsub: c - a, one rounding
    "divc": "{a} / {c}",
    "rdivc": "torch.div({ct}, {a})",   # not c / a: __rtruediv__ is c * (1/a)
    "powc": "torch.pow({a}, {c})",
    "rpowc": "torch.pow({c}, {a})",
    "relu": "torch.relu({a})",
    "tanh": "torch.tanh({a})",
    "exp": "torch.exp({a})",
    "log": "torch.log({a})",
    "sigmoid": "torch.sigmoid({a})",
    "abs": "absolute({a})",
    "sqrt": "torch.sqrt({a})",
    "fmuladd": "{a} + {b} * {x}",      # acc + s * x: two roundings, as eager
    "log1p": "torch.log1p({a})",
    # max(a, 0) + log1p(e**-|a|) with sigmoid(a) as its gradient; not
    # F.softplus, which returns a itself above its threshold (20: 2e-9 off)
    "softplus": "torch.logaddexp({a}, {zero})",
    "softmax": "torch.exp({a} - {b})",  # e**(a - b), b = logsumexp of a's row
    "sum": "nary_sum({args})",
    "logsumexp": "nary_logsumexp({args})",
}

#: the ops an exported module can compute (tests check the rules table's)
OPS = frozenset(_TEMPLATES) | {"dot", "layer"}


def _activation(epilogue: list[tuple[str, Optional[float]]]) -> nn.Module:
    """A layer's activation: the torch module when it is one op, else the chain."""
    one = epilogue[0][0] if len(epilogue) == 1 else None
    if one == "relu":
        return nn.ReLU()
    if one == "tanh":
        return nn.Tanh()
    if one == "sigmoid":
        return nn.Sigmoid()
    return Elementwise(epilogue)


class Elementwise(nn.Module):
    """A layer's activation chain that is not one torch activation, e.g. the
    sigmoid written as ``1 / (1 + (-z).exp())``: its ops in order."""

    def __init__(self, ops: list[tuple[str, Optional[float]]]) -> None:
        super().__init__()
        self.ops = [(op, c) for op, c in ops]
        src = ["def _chain(z):"]
        for op, c in self.ops:
            if op not in _TEMPLATES or any(f in _TEMPLATES[op] for f in ("{b}", "{args}")):
                raise ValueError(f"export: {op!r} cannot be a layer activation")
            expr = _TEMPLATES[op].format(a="z", c=_lit(c) if c is not None else "",
                                         ct=f"torch.full_like(z, {_lit(c or 0.0)})",
                                         zero="torch.zeros_like(z)")
            src.append(f"    z = {expr}")
        src.append("    return z")
        self._source = "\n".join(src) + "\n"

    def forward(self, z: Tensor) -> Tensor:
        return _compiled(self._source, "_chain")(z)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return ", ".join(op if c is None else f"{op}({c!r})" for op, c in self.ops)


# ---------------------------------------------------------------------------
# generated source, compiled once per distinct text
# ---------------------------------------------------------------------------

_CACHE: dict[tuple[str, str], Callable[..., Any]] = {}


def _compiled(source: str, name: str) -> Callable[..., Any]:
    key = (source, name)
    fn = _CACHE.get(key)
    if fn is None:
        filename = f"<fastgrad export {abs(hash(source)):x}>"
        # the source in linecache: tracebacks and debuggers show its lines
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict[str, Any] = {
            "torch": torch, "F": torch.nn.functional, "inf": math.inf, "nan": math.nan,
            "maximum": maximum, "minimum": minimum, "absolute": absolute,
            "ordered_sum": ordered_sum, "nary_sum": nary_sum,
            "nary_logsumexp": nary_logsumexp,
        }
        exec(compile(source, filename, "exec"), namespace)
        fn = namespace[name]
        _CACHE[key] = fn
    return fn


class _Writer:
    """Source of one entry point (forward or penalty) of the module."""

    def __init__(self, plan: Plan, consts: dict[str, tuple[int, float]],
                 indices: list[list[int]]) -> None:
        self.plan = plan
        self.lines: list[str] = []
        self.head: dict[str, str] = {}       # name -> binding, emitted first
        self.consts = consts                 # float.hex -> (index, value) in self.constants
        self.indices = indices               # index buffers self.index{k}
        self.batched_name: dict[Ref, str] = {}
        self.layer_done: set[str] = set()

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def bind(self, name: str, expr: str) -> str:
        self.head.setdefault(name, expr)
        return name

    def const_tensor(self, value: float) -> str:
        key = float(value).hex()             # -0.0 and 0.0 apart
        if key not in self.consts:
            self.consts[key] = (len(self.consts), float(value))
        self.bind("C", "self.constants.unbind(0)")
        return f"C[{self.consts[key][0]}]"

    def gather(self, refs: list[Ref]) -> str:
        """A 1-D tensor of scalar operands: one gather from the parameters when
        all are parameters (an L2 penalty's terms), else a stack."""
        if all(kind == "param" for kind, _ in refs):
            self.bind("theta", "self._theta()")
            self.indices.append([self.plan.flat[i] for _, i in refs])
            return f"theta[self.index{len(self.indices) - 1}]"
        return f"torch.stack([{', '.join(self.sref(r) for r in refs)}])"

    def sref(self, ref: Ref) -> str:
        kind, i = ref
        if kind == "scalar":
            return f"s{i}"
        if kind == "const":
            return self.const_tensor(self.plan.constants[i])
        own = self.plan.owner[i]
        if own[0] == "scalars":
            self.bind("S", "self.scalars.unbind(0)")
            return f"S[{own[1]}]"
        if own[0] == "weight":
            self.bind(f"W{own[1]}", f"self.layers[{own[1]}][0].weight")
            return f"W{own[1]}[{own[2]}, {own[3]}]"
        self.bind(f"B{own[1]}", f"self.layers[{own[1]}][0].bias")
        return f"B{own[1]}[{own[2]}]"

    def bref(self, ref: Ref) -> str:
        kind, i = ref
        if kind == "input":
            return self.bind(f"x{i}", f"X[:, {i}]")
        return self.batched_name[ref]

    def ref(self, ref: Ref) -> str:
        return self.bref(ref) if ref[0] in ("input", "row") else self.sref(ref)

    # -- instructions ------------------------------------------------------

    def instr(self, ins: dict[str, Any]) -> None:
        op = ins["op"]
        if op == "layer":
            self.layer(self.plan.layers[ins["layer"]])
            return
        out = ins["out"]
        name = f"s{out[1]}" if out[0] == "scalar" else f"r{out[1]}"
        if op == "dot":
            self.emit(f"{name} = {self.dot(ins)}")
        else:
            self.emit(f"{name} = {self.expr(op, ins['args'], ins['const'])}")
        if out[0] == "row":
            self.batched_name[out] = name

    def expr(self, op: str, args: list[Ref], c: Optional[float]) -> str:
        if op not in _TEMPLATES:
            raise NotImplementedError(f"export: no torch mapping for op {op!r}")
        names = [self.ref(r) for r in args]
        fields = {"a": names[0], "b": names[1] if len(names) > 1 else "",
                  "x": names[2] if len(names) > 2 else "",
                  "c": _lit(c) if c is not None else "", "args": ", ".join(names)}
        if op == "rdivc":
            fields["ct"] = self.const_tensor(c if c is not None else 0.0)
        if op == "softplus":
            fields["zero"] = self.const_tensor(0.0)
        return _TEMPLATES[op].format(**fields)

    def dot(self, ins: dict[str, Any]) -> str:
        # ((acc + a0*b0) + a1*b1) + ...: the products at once, then an ordered sum
        acc = self.sref(ins["args"][0])
        a = self.gather([t[0] for t in ins["terms"]])
        if all(t[0] == t[1] for t in ins["terms"]):
            return f"ordered_sum({a}.square(), {acc})"
        return f"ordered_sum({a} * {self.gather([t[1] for t in ins['terms']])}, {acc})"

    def matrix(self, rows: list[Ref]) -> str:
        """The (B, K) matrix of rows: a slice or a whole layer output when the
        rows are its columns in order, else the columns stacked."""
        if all(r[0] == "input" for r in rows):
            idx = [r[1] for r in rows]
            if idx == list(range(idx[0], idx[0] + len(idx))):
                if len(idx) == self.plan.n_inputs:
                    return "X"
                return f"X[:, {idx[0]}:{idx[0] + len(idx)}]"
        for lay in self.plan.layers:
            if rows == lay.outputs and f"h{lay.index}" in self.layer_done:
                return f"h{lay.index}"
        return f"torch.stack([{', '.join(self.bref(r) for r in rows)}], 1)"

    def bias_vector(self, lay: LayerPlan) -> str:
        """A layer's bias as a (H,) tensor from its rows' terms."""
        rows = []
        for terms in lay.terms:
            names = [self.const_tensor(t[1]) if t[0] == "value" else self.sref(t)
                     for t in terms] or [self.const_tensor(0.0)]
            rows.append(" + ".join(names))
        return f"torch.stack([{', '.join(rows)}])"

    def layer(self, lay: LayerPlan) -> None:
        h = f"h{lay.index}"
        xin = self.matrix(lay.inputs)
        if lay.owns_weight:
            mod = self.bind(f"L{lay.module}", f"self.layers[{lay.module}]")
            if lay.owns_bias or not lay.has_bias:
                self.emit(f"{h} = {mod}({xin})")
            else:
                self.emit(f"{h} = {mod}[1]({mod}[0]({xin}) + {self.bias_vector(lay)})")
        else:
            H, K = lay.shape
            w = ", ".join(self.sref(r) for row in lay.weights for r in row)
            self.emit(f"w{lay.index} = torch.stack([{w}]).reshape({H}, {K})")
            bias = self.bias_vector(lay) if lay.has_bias else "None"
            act = self.bind(f"A{lay.index}", f"self.activations['{lay.index}']")
            self.emit(f"{h} = {act}(F.linear({xin}, w{lay.index}, {bias}))")
        self.layer_done.add(h)
        for j, ref in enumerate(lay.outputs):
            self.batched_name[ref] = f"{h}[:, {j}]"

    def source(self, name: str, args: str, ret: str) -> str:
        head = [f"    {n} = {e}" for n, e in self.head.items()]
        return "\n".join([f"def {name}({args}):"] + head + self.lines
                         + [f"    return {ret}"]) + "\n"


def _generate(plan: Plan) -> tuple[str, list[float], list[list[int]]]:
    """Source of ``forward(self, X)`` and ``penalty(self)``; the constants
    they read from ``self.constants`` and their index buffers."""
    consts: dict[str, tuple[int, float]] = {}
    indices: list[list[int]] = []
    fw = _Writer(plan, consts, indices)
    for ins in plan.fwd_scalar:
        fw.instr(ins)
    for ins in plan.batched:
        fw.instr(ins)
    outs = []
    for ref in plan.outputs:
        if ref[0] in ("input", "row"):
            outs.append(fw.bref(ref))
        else:
            outs.append(f"{fw.sref(ref)}.expand(X.shape[0])")
    forward = fw.source("forward", "self, X", f"torch.stack([{', '.join(outs)}], 1)")
    pw = _Writer(plan, consts, indices)
    for ins in plan.pen_scalar:
        pw.instr(ins)
    ret = "self.constants.new_zeros(())" if plan.penalty is None else pw.sref(plan.penalty)
    penalty = pw.source("penalty", "self", ret)
    table = [0.0] * len(consts)
    for i, value in consts.values():
        table[i] = value
    return forward + "\n\n" + penalty, table, indices


# ---------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------

class ExportedProgram(nn.Module):
    """A compiled fastgrad Program as a torch Module (made by
    :func:`fastgrad.export.to_torch`).

    ``forward(X)`` computes the program's outputs for a batch: ``X`` of shape
    (B, n_inputs), or several (B,)/(B, k) tensors whose columns are read side
    by side (``module(X, y)``, as ``Program.batch((X, y))``); returns (B,
    n_outputs).  ``penalty()`` is the recorded penalty term (0 when there is
    none) and ``loss(...)`` what ``Program.batch`` returns: output 0 reduced
    over the rows plus the penalty.  The parameters are the program's, in
    ``nn.Linear`` layers (``layers``) and one vector (``scalars``) for the
    rest; ``parameter_vector()`` / ``gradient_vector()`` list them in the
    program's order.  ``code`` is the generated source of forward/penalty.
    """

    constants: Tensor

    def __init__(self, plan: Plan, values: list[float], dtype: torch.dtype) -> None:
        super().__init__()
        self.n_inputs = plan.n_inputs
        self.n_outputs = plan.n_outputs
        self.n_params = plan.n_params
        self.has_penalty = plan.penalty is not None
        self.layers = nn.ModuleList()
        self.activations = nn.ModuleDict()
        for lay in plan.layers:
            H, K = lay.shape
            act = _activation(lay.epilogue) if lay.epilogue else nn.Identity()
            if lay.owns_weight:
                lin = nn.Linear(K, H, bias=lay.owns_bias, dtype=dtype)
                self.layers.append(nn.Sequential(lin, act))
            else:
                self.activations[str(lay.index)] = act
        if plan.free:
            self.scalars = nn.Parameter(torch.zeros(len(plan.free), dtype=dtype))
        self.code, table, indices = _generate(plan)
        self.register_buffer("constants", torch.tensor(table + [0.0], dtype=dtype))
        for k, idx in enumerate(indices):
            self.register_buffer(f"index{k}", torch.tensor(idx, dtype=torch.long),
                                 persistent=False)
        self._tensor_names = [name for name, _ in plan.tensors]
        self._flat = list(plan.flat)
        self.load_parameter_vector(values)

    # -- entry points ----------------------------------------------------------

    def _inputs(self, inputs: tuple[Tensor, ...]) -> Tensor:
        if not inputs:
            raise TypeError("forward: expected the input batch X (B, n_inputs), "
                            "or several (B,)/(B, k) tensors side by side")
        cols = [t if t.dim() == 2 else t.reshape(t.shape[0], -1) for t in inputs]
        X = cols[0] if len(cols) == 1 else torch.cat(cols, 1)
        if X.dim() != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"forward: expected {self.n_inputs} input columns, got "
                             f"shape{'s' if len(inputs) > 1 else ''} "
                             f"{[tuple(t.shape) for t in inputs]}")
        return X.to(self.constants.dtype)

    def forward(self, *inputs: Tensor) -> Tensor:
        X = self._inputs(inputs)
        return _compiled(self.code, "forward")(self, X)  # type: ignore[no-any-return]

    def penalty(self) -> Tensor:
        """The penalty term (a 0-d tensor; 0 when the program has none)."""
        return _compiled(self.code, "penalty")(self)  # type: ignore[no-any-return]

    def loss(self, *inputs: Tensor, reduce: str = "mean") -> Tensor:
        """``Program.batch``'s loss: output 0 summed over the rows in row
        order (times ``1.0 / B`` for ``reduce="mean"``), plus the penalty."""
        if reduce not in ("mean", "sum"):
            raise ValueError(f"loss: reduce must be 'mean' or 'sum', got {reduce!r}")
        out0 = self(*inputs)[:, 0]
        total = ordered_sum(out0)
        if reduce == "mean":
            total = total * (1.0 / out0.shape[0])
        return total + self.penalty()

    # -- parameters in the program's order ---------------------------------------

    def _tensors(self) -> list[Tensor]:
        return [self.get_parameter(name) for name in self._tensor_names]

    def _theta(self) -> Tensor:
        """The parameter tensors flattened end to end (differentiable)."""
        return torch.cat([self.constants.new_zeros(0)]
                         + [t.reshape(-1) for t in self._tensors()])

    def parameter_vector(self) -> Tensor:
        """The parameters as one detached 1-D tensor, in the program's order
        (``Program.params``)."""
        with torch.no_grad():
            return self._theta()[self._flat]

    def gradient_vector(self) -> Tensor:
        """The parameters' ``.grad`` in the program's order (0 where None)."""
        with torch.no_grad():
            flat = torch.cat([self.constants.new_zeros(0)]
                             + [(t.grad if t.grad is not None else torch.zeros_like(t))
                                .reshape(-1) for t in self._tensors()])
            return flat[self._flat]

    def load_parameter_vector(self, values: Union[Tensor, list[float]]) -> None:
        """Set the parameters from values in the program's order."""
        vec = torch.as_tensor(values, dtype=self.constants.dtype).reshape(-1)
        if vec.shape[0] != self.n_params:
            raise ValueError(f"load_parameter_vector: expected {self.n_params} "
                             f"values, got {vec.shape[0]}")
        tensors = self._tensors()
        if not tensors:
            return
        flat = torch.empty(sum(t.numel() for t in tensors), dtype=vec.dtype)
        flat[self._flat] = vec
        with torch.no_grad():
            pos = 0
            for t in tensors:
                t.copy_(flat[pos:pos + t.numel()].reshape(t.shape))
                pos += t.numel()

    def extra_repr(self) -> str:
        return (f"n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
                f"n_params={self.n_params}, penalty={self.has_penalty}")


def build_module(plan: Plan, values: list[float], dtype: torch.dtype) -> ExportedProgram:
    return ExportedProgram(plan, values, dtype)
