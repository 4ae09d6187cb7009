"""Graduate without rewriting: a compiled Program as a PyTorch module or an
ONNX model.

:func:`to_torch` turns a :class:`~fastgrad.compiled.Program` into a
``torch.nn.Module`` that computes the same outputs for a batch, whose
parameters are the program's (so ``torch.optim``, DistributedDataParallel,
a GPU and ``torch.compile`` take over the training), and whose ``penalty()``
is the recorded penalty term.  :func:`to_onnx` writes an ONNX model that
onnxruntime (or any ONNX runtime) runs.  :func:`load_torch_state` copies
weights trained in torch back into your ``Value``\\ s.  ``prog.to_torch()``,
``prog.to_onnx(path)`` and ``prog.load_torch_state(module)`` are the same
functions as methods.

Both read the recorded program (``Program.graph()``), not your Python code:
what ``compile`` traced is what is exported, dense layers as ``nn.Linear`` /
``Gemm`` with their activation, everything else one elementwise torch op /
ONNX node per recorded instruction.  torch and onnx are optional::

    pip install "fastgrad[export]"      # torch, onnx, onnxruntime

Agreement with fastgrad (float64; tests/test_export.py): outputs within
1e-12 relative, gradients within 1e-10, one ``torch.optim.SGD`` step equal to
``Program.sgd_step`` within 1e-12.  Not bit for bit: ``nn.Linear`` sums in
BLAS order, and torch's ``exp``/``log``/``tanh``/``sigmoid``/``pow`` are its
own implementations (within an ulp or two of fastgrad's).

Op mapping (fastgrad op: torch; ONNX, default opset 17)
-------------------------------------------------------
=============  ================================  ===============================
op             torch                             ONNX
=============  ================================  ===============================
add sub mul    ``a + b``, ``a - b``, ``a * b``   Add, Sub, Mul
div            ``a / b``                         Div
pow            ``torch.pow(a, b)``               Pow
max / min      autograd Function (see below)     Max / Min
addc mulc      ``a + c``, ``a * c``              Add, Mul (c an initializer)
rsubc divc     ``c - a``, ``a / c``              Sub, Div
rdivc          ``torch.div(c, a)``               Div
powc rpowc     ``torch.pow(a, c)``, ``(c, a)``   Pow
relu tanh exp  ``torch.relu`` ...                Relu, Tanh, Exp
log sigmoid    ``torch.log``, ``torch.sigmoid``  Log, Sigmoid
abs sqrt       ``torch.abs``, ``torch.sqrt``     Abs, Sqrt
relu_grad      ``where(b > 0, a, 0)``            Greater, Where
sign_grad      ``where(b > 0, a, ...)``          Greater, Less, Neg, Where
tie_grad       ``where(b > 0, a, ...)``          Greater, Equal, Mul, Where
fmuladd        ``acc + s * x``                   Mul, Add
dot (scalar)   ordered cumulative sum            Gather, Mul, ReduceSum, Add
layer          ``nn.Linear`` + activation        Gemm (transB=1) + activation
log1p          ``torch.log1p``                   Log, Mul, Div, Where (no Log1p)
softplus       ``torch.logaddexp(a, 0)``         Relu, Abs, Exp + log1p's nodes
softmax        ``torch.exp(a - b)``              Sub, Exp
sum (n-ary)    ordered cumulative sum            Add (Sum) in order
logsumexp      ``torch.logsumexp``               ReduceLogSumExp
=============  ================================  ===============================

Gradient conventions at kinks are fastgrad's: relu'(0) = 0, abs'(0) = 0,
``d(x**0)/dx = 0``, ``d(0**y)/dy = 0`` for y >= 0 (torch's own rules agree);
a max/min tie splits the gradient (as ``torch.maximum``), and a nan operand
of max/min gets no gradient (``torch.maximum`` gives it all of it: hence the
autograd Function).  Where torch differs and the export keeps torch's rule:
relu of nan passes the gradient in torch (fastgrad: 0); the sign of a zero
may differ (``torch.maximum(-0.0, 0.0)``, ``x ** 0.5`` at -0.0).

``Program.graph()``
-------------------
Plain data: ``n_inputs``, ``n_outputs``, ``n_params``, ``params`` (your
Values), ``constants`` (baked leaf values), ``scalar`` and ``batched``
(instructions in run order), ``layers``, ``outputs``, ``penalty``.  An
operand is ``("input", i)``, ``("param", i)``, ``("const", k)``,
``("scalar", slot)`` or ``("row", row)``.  An instruction is
``{"op", "out", "args", "const"}``; ``"fmuladd"`` has args
``[acc, s, x]`` (``acc + s*x``), ``"dot"`` has ``"terms"`` (pairs whose
products are added to ``args[0]`` in order), ``"sum"`` and ``"logsumexp"``
have any number of args (``"softmax"`` is ``exp(args[0] - args[1])``,
``args[1]`` the logsumexp of its row), ``"layer"`` has ``"layer"`` (an
index in ``layers``) and a list ``"out"``.  A layer is ``{"inputs",
"outputs", "weights", "start", "end", "epilogue"}``: row h computes
``((start[h] + w[h][0]*x[0]) + w[h][1]*x[1]) + ... + end[h]`` then the
epilogue's ops (a list of ``(op, const)``) in order; ``start[h]`` is an
operand, ``("value", c)`` for a constant, or None (the sum starts at its
first product); ``end`` is None or a list of operands / None.

Examples
--------
>>> import random, numpy as np, torch
>>> import fastgrad
>>> from fastgrad.nn import MLP
>>> random.seed(0)
>>> model = MLP(2, [4, 1])
>>> prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
>>> net = prog.to_torch()
>>> net
ExportedProgram(
  n_inputs=2, n_outputs=1, n_params=17, penalty=False
  (layers): ModuleList(
    (0): Sequential(
      (0): Linear(in_features=2, out_features=4, bias=True)
      (1): ReLU()
    )
    (1): Sequential(
      (0): Linear(in_features=4, out_features=1, bias=True)
      (1): Identity()
    )
  )
  (activations): ModuleDict()
)
>>> X = np.array([[0.5, -1.0], [2.0, 0.25]])
>>> y = net(torch.from_numpy(X))[:, 0].detach().numpy()
>>> bool(np.allclose(y, prog.predict(X), rtol=1e-12, atol=0))
True
"""
import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    import onnx
    import torch

    from fastgrad._export_torch import ExportedProgram
    from fastgrad._replay import Program

__all__ = ["to_torch", "to_onnx", "load_torch_state", "EXTRA"]

#: the pip extra that installs export's optional dependencies
EXTRA = "export"


def _require(module: str, feature: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs {module.split('.')[0]}, an optional dependency of "
            f"fastgrad: pip install \"fastgrad[{EXTRA}]\"") from exc


def _plan(program: "Program", where: str) -> Any:
    from fastgrad._backend import require_compiled
    require_compiled(f"fastgrad.export.{where}")
    from fastgrad._export_plan import Plan
    from fastgrad._replay import Program
    if not isinstance(program, Program):
        raise TypeError(f"{where}: expected a compiled fastgrad Program "
                        f"(fastgrad.compile(...)), got {type(program).__name__}")
    return Plan(program.graph())


def to_torch(program: "Program", dtype: "Optional[torch.dtype]" = None) -> "ExportedProgram":
    """A compiled Program as a ``torch.nn.Module``.

    Parameters
    ----------
    program : Program
        From ``fastgrad.compile`` / ``compile_graph``.
    dtype : torch.dtype, optional
        Of the parameters, constants and computation (default
        ``torch.float64``, fastgrad's own).

    Returns
    -------
    ExportedProgram
        A ``torch.nn.Module``: ``module(X)`` gives the outputs for a batch,
        shape (B, n_outputs) (``X``: (B, n_inputs), or several (B,)/(B, k)
        tensors side by side); ``module.penalty()`` the penalty term,
        ``module.loss(X, reduce="mean")`` what ``Program.batch`` returns.
        Its parameters start at the Values' current ``.data``;
        ``module.code`` is its generated ``forward``/``penalty``.

    Raises
    ------
    ImportError
        torch is not installed (``pip install "fastgrad[export]"``).
    TypeError
        ``program`` is not a Program.

    Examples
    --------
    >>> import numpy as np, torch, fastgrad
    >>> w = fastgrad.Value(2.0)
    >>> prog = fastgrad.compile(lambda x: (x[0] * w).tanh(), 1, params=[w],
    ...                         penalty=lambda ps: 0.5 * ps[0] * ps[0])
    >>> net = prog.to_torch()
    >>> loss = net.loss(torch.tensor([[0.25], [-1.0]]))
    >>> loss.backward()
    >>> prog.batch(np.array([[0.25], [-1.0]])) == loss.item()
    True
    >>> bool(abs(w.grad - net.gradient_vector()[0].item()) < 1e-15)
    True
    """
    torch = _require("torch", "fastgrad.export.to_torch")
    plan = _plan(program, "to_torch")
    from fastgrad._export_torch import build_module
    dt = torch.float64 if dtype is None else dtype
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise TypeError(f"to_torch: dtype must be a floating torch.dtype, got {dtype!r}")
    return build_module(plan, [p.data for p in program.params], dt)


def to_onnx(program: "Program", path: "Optional[Union[str, os.PathLike[str]]]" = None,
            dtype: Optional[str] = None, opset: Optional[int] = None) -> "onnx.ModelProto":
    """A compiled Program as an ONNX model (inference), saved to ``path``.

    The model has input ``X`` (batch, n_inputs) and outputs ``Y`` (batch,
    n_outputs) and, when the program has a penalty, ``penalty`` (a scalar).
    Dense layers are ``Gemm`` nodes (weights as initializers) plus their
    activation; other instructions elementwise nodes in the program's order.

    Parameters
    ----------
    program : Program
    path : str or path-like, optional
        Where to write the model (``onnx.save``); None writes nothing.
    dtype : {"float64", "float32"}, optional
        Element type of the model (default "float64").
    opset : int, optional
        ONNX opset of the default domain (default 17; at least 15).

    Returns
    -------
    onnx.ModelProto
        The model, checked by ``onnx.checker``.

    Examples
    --------
    >>> import numpy as np, fastgrad, onnxruntime
    >>> w = fastgrad.Value(2.0)
    >>> prog = fastgrad.compile(lambda x: (x[0] * w).relu(), 1, params=[w])
    >>> model = prog.to_onnx()
    >>> sess = onnxruntime.InferenceSession(model.SerializeToString(),
    ...                                     providers=["CPUExecutionProvider"])
    >>> sess.run(["Y"], {"X": np.array([[1.5], [-3.0]])})[0].tolist()
    [[3.0], [0.0]]
    """
    onnx = _require("onnx", "fastgrad.export.to_onnx")
    plan = _plan(program, "to_onnx")
    from fastgrad._export_onnx import build_model
    dt = "float64" if dtype is None else str(dtype)
    if dt not in ("float64", "float32"):
        raise ValueError(f"to_onnx: dtype must be 'float64' or 'float32', got {dtype!r}")
    model = build_model(plan, [p.data for p in program.params], dt, opset)
    if path is not None:
        onnx.save(model, path)
    return model


def load_torch_state(program: "Program",
                     module: "Union[torch.nn.Module, Mapping[str, torch.Tensor]]") -> None:
    """Copy trained weights into the program's parameter Values (``.data``).

    Parameters
    ----------
    program : Program
        The program the module was exported from (or one recorded the same
        way: the tensors are matched by name and shape).
    module : ExportedProgram, DistributedDataParallel of one, or a state_dict
        The trained module, or its ``state_dict()`` (e.g. from ``torch.load``;
        a ``"module."`` prefix left by DDP is accepted).

    Raises
    ------
    ValueError
        A tensor is missing or has another shape than the program's.

    Examples
    --------
    >>> import torch, fastgrad
    >>> w = fastgrad.Value(2.0)
    >>> prog = fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
    >>> net = prog.to_torch()
    >>> with torch.no_grad():
    ...     _ = net.scalars.fill_(5.0)
    >>> prog.load_torch_state(net)
    >>> w.data
    5.0
    """
    torch = _require("torch", "fastgrad.export.load_torch_state")
    plan = _plan(program, "load_torch_state")
    if isinstance(module, torch.nn.Module):
        inner = getattr(module, "module", None)      # DistributedDataParallel
        state = (inner if isinstance(inner, torch.nn.Module) else module).state_dict()
    elif isinstance(module, Mapping):
        state = dict(module)
    else:
        raise TypeError("load_torch_state: expected an exported torch module or its "
                        f"state_dict, got {type(module).__name__}")
    pieces = []
    for name, shape in plan.tensors:
        t = state.get(name, state.get("module." + name))
        if t is None:
            raise ValueError(f"load_torch_state: no tensor {name!r} in the module "
                             "(was it exported from this program?)")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"load_torch_state: {name!r} has shape {tuple(t.shape)}, "
                             f"the program's is {tuple(shape)}")
        pieces.append(t.detach().to("cpu", torch.float64).reshape(-1))
    if not pieces:
        return
    flat = torch.cat(pieces)[plan.flat].tolist()
    for p, v in zip(program.params, flat):
        p.data = v
