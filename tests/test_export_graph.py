"""Program.graph(): the recorded program as plain data, what fastgrad.export
reads.  These tests fail when a change to the recorder's tables (layer
metadata, op codes) is not carried into the description; they need neither
torch nor onnx.

Oracles: hand-derived descriptions of small programs; the program's own
replay, re-computed in plain Python from the description alone (an
interpreter written here, independent of fastgrad.export).
"""
import math
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value
from fastgrad.nn import MLP

pytestmark = pytest.mark.compiled_only("Program.graph() describes a compiled program")


def test_small_program_by_hand():
    w, b = Value(2.0), Value(0.5)
    prog = fastgrad.compile(lambda x: [(x[0] * w + b).relu(), w * w], 1, params=[w, b],
                            penalty=lambda ps: 0.25 * ps[1])
    g = prog.graph()
    assert (g["n_inputs"], g["n_outputs"], g["n_params"]) == (1, 2, 2)
    assert g["params"] == (w, b) and g["params"][0] is w
    assert g["constants"] == []
    # x*w + b is one fused multiply-add: acc b, scalar w, row x
    assert g["batched"] == [
        {"op": "fmuladd", "out": ("row", 1), "args": [("param", 1), ("param", 0),
                                                      ("input", 0)], "const": None},
        {"op": "relu", "out": ("row", 2), "args": [("row", 1)], "const": None}]
    ops = [(i["op"], i["args"], i["const"]) for i in g["scalar"]]
    assert ("mul", [("param", 0), ("param", 0)], None) in ops
    assert ("mulc", [("param", 1)], 0.25) in ops
    square = next(i["out"] for i in g["scalar"] if i["op"] == "mul")
    assert g["outputs"] == [("row", 2), square]
    assert g["penalty"] == next(i["out"] for i in g["scalar"] if i["op"] == "mulc")
    assert g["layers"] == []


def test_constants_and_every_operand_kind():
    w = Value(3.0)
    # Value(-1.5), made in the trace, is neither input nor param: a constant
    prog = fastgrad.compile(lambda x: fastgrad.maximum(x[0] / Value(-1.5), w) - 2.0, 1,
                            params=[w])
    g = prog.graph()
    assert g["constants"] == [-1.5]
    assert [(i["op"], i["args"], i["const"]) for i in g["batched"]] == [
        ("div", [("input", 0), ("const", 0)], None),
        ("max", [("row", 1), ("param", 0)], None),
        ("addc", [("row", 2)], -2.0)]


def test_every_rule_op_has_a_name():
    from fastgrad import _replay
    names = set(_replay._OP_NAMES.values())
    # codes 1..N_PURE_OPS-1, then (after OP_CUSTOM = N_PURE_OPS) issue 20's
    codes = list(range(1, _replay._N_PURE_OPS)) + list(
        range(_replay._N_PURE_OPS + 1, _replay._N_OPS))
    assert sorted(_replay._OP_NAMES) == codes
    assert len(names) == len(_replay._OP_NAMES)
    assert {"fmuladd", "dot", "layer"} == set(_replay._TAPE_OP_NAMES.values())


def test_demo_layers_in_micrograd_order():
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    from fastgrad.compiled import make_demo_step
    g = make_demo_step(model).program.graph()
    params = model.parameters()
    index = {id(p): i for i, p in enumerate(g["params"])}
    assert [len(L["outputs"]) for L in g["layers"]] == [16, 16, 1]
    assert [len(L["inputs"]) for L in g["layers"]] == [2, 16, 16]
    assert all(L["epilogue"] == [("relu", None)] for L in g["layers"][:2])
    assert g["layers"][2]["epilogue"] == []
    assert g["layers"][0]["inputs"] == [("input", 0), ("input", 1)]
    # each layer row is one micrograd neuron: its weights and bias are its
    # parameters (in some row order)
    for L, layer in zip(g["layers"], model.layers):
        rows = {tuple(r[1] for r in w) + (b[1],) for w, b in zip(L["weights"], L["start"])}
        want = {tuple(index[id(p)] for p in n.w) + (index[id(n.b)],) for n in layer.neurons}
        assert rows == want
        assert L["end"] is None
    # the layers read each other's outputs; the batched tape names them
    assert set(g["layers"][1]["inputs"]) == set(g["layers"][0]["outputs"])
    layer_ins = [i for i in g["batched"] if i["op"] == "layer"]
    assert [i["layer"] for i in layer_ins] == [0, 1, 2]
    assert len(params) == g["n_params"] == 337
    assert g["penalty"] is not None


# -- an interpreter of the description (float64, numpy), the oracle below ------

_UNARY = {"relu": lambda a: np.where(a < 0, 0.0, a), "tanh": np.tanh, "exp": np.exp,
          "log": np.log, "sqrt": np.sqrt, "abs": np.abs,
          "sigmoid": lambda a: np.where(a >= 0, 1 / (1 + np.exp(-np.abs(a))),
                                        np.exp(-np.abs(a)) / (1 + np.exp(-np.abs(a))))}
_CONST = {"addc": lambda a, c: a + c, "mulc": lambda a, c: a * c,
          "rsubc": lambda a, c: c - a, "divc": lambda a, c: a / c,
          "rdivc": lambda a, c: c / a, "powc": lambda a, c: a ** c,
          "rpowc": lambda a, c: c ** a}
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "pow": np.power, "max": np.maximum, "min": np.minimum}


def interpret(g, X):
    """Outputs of the described program for the rows of X, plain numpy."""
    vals = {("param", i): p.data for i, p in enumerate(g["params"])}
    vals.update({("const", k): c for k, c in enumerate(g["constants"])})
    vals.update({("input", i): X[:, i] for i in range(g["n_inputs"])})
    with np.errstate(all="ignore"):
        for ins in g["scalar"] + g["batched"]:
            op, args = ins["op"], [vals.get(r) for r in ins["args"]]
            if op == "layer":
                L = g["layers"][ins["layer"]]
                for h, out in enumerate(L["outputs"]):
                    start = L["start"][h]
                    if start is None:
                        z = -0.0
                    else:
                        z = start[1] if start[0] == "value" else vals[start]
                    for w, x in zip(L["weights"][h], L["inputs"]):
                        z = z + vals[w] * vals[x]
                    if L["end"] is not None and L["end"][h] is not None:
                        z = z + vals[L["end"][h]]
                    for eop, c in L["epilogue"]:
                        z = _UNARY[eop](z) if c is None else _CONST[eop](z, c)
                    vals[out] = z
                continue
            if op == "dot":
                z = args[0]
                for a, b in ins["terms"]:
                    z = z + vals[a] * vals[b]
            elif op == "fmuladd":
                z = args[0] + args[1] * args[2]
            elif op in _BINARY:
                z = _BINARY[op](args[0], args[1])
            elif op in _CONST:
                z = _CONST[op](args[0], ins["const"])
            else:
                z = _UNARY[op](args[0])
            vals[ins["out"]] = z
    return np.column_stack([np.broadcast_to(vals[r], (X.shape[0],)) for r in g["outputs"]])


def _close(a, b, rtol):
    scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 1.0
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(b)
    assert np.all(np.abs(a[ok] - b[ok]) <= rtol * scale)


@pytest.mark.parametrize("hidden", [[16, 16, 1], [3, 1]])
def test_description_computes_what_the_program_computes(hidden):
    random.seed(7)
    model = MLP(2, hidden)
    prog = fastgrad.compile(lambda x: [model(x[:2]) * x[2], (model(x[:2]) - x[2]) ** 2],
                            3, params=model.parameters())
    X = np.random.default_rng(0).normal(size=(50, 3))
    _close(interpret(prog.graph(), X), prog.predict(X), 1e-13)


def test_description_of_every_op():
    w, v = Value(0.7), Value(-1.3)

    def fn(x):
        a, b = x
        k = Value(2.5)
        outs = [a + b, a - w, a * v, a / (b + 3), (abs(a) + 0.5) ** b, fastgrad.maximum(a, w),
                fastgrad.minimum(b, k), a + 2.0, a * 3.0, 2.0 - a, a / 4.0, 2.0 / (b + 3),
                abs(a) ** 1.5, 2.0 ** a, a.relu(), a.tanh(), a.exp(), (abs(b) + 1).log(),
                a.sigmoid(), abs(a), (abs(a) + 1).sqrt(), w * v + a]
        return outs

    prog = fastgrad.compile(fn, 2, params=[w, v])
    g = prog.graph()
    ops = {i["op"] for i in g["scalar"] + g["batched"]}
    assert ops >= {"add", "sub", "mul", "div", "pow", "max", "min", "addc", "mulc",
                   "rsubc", "divc", "rdivc", "powc", "rpowc", "relu", "tanh", "exp",
                   "log", "sigmoid", "abs", "sqrt"}
    X = np.random.default_rng(1).normal(size=(20, 2))
    _close(interpret(g, X), prog.predict(X), 1e-14)


def test_graph_is_a_copy_and_plain_data():
    w = Value(1.0)
    prog = fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
    g1 = prog.graph()
    g1["batched"].clear()
    assert prog.graph()["batched"] != []
    assert math.isfinite(prog.forward([2.0]))
