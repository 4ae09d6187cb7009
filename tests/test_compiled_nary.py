"""The issue-20 primitives in compiled programs: one instruction each
(n-ary ``sum``/``logsumexp`` with an operand list, softmax's ``exp(x - lse)``,
``softplus``, ``log1p``), the same floats as eager mode.

Oracles: the eager engine on each row (forward values and input gradients bit
for bit; parameter gradients, which a batch sums in another order, to
rounding), and the pure-Python reference engine (forward values bit for bit).
"""
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value
from fastgrad import reference as ref

pytestmark = pytest.mark.compiled_only("compiled graph replay")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

OPS = ("softplus", "log1p", "sum", "lse", "softmax", "mul", "add", "ce", "lsm")


def build(lib, xs, ps, steps):
    """A random graph over inputs ``xs`` and parameters ``ps`` (lib: fastgrad
    or fastgrad.reference); ``steps``: (op, picks) pairs; returns the output."""
    nodes = list(xs) + list(ps)
    for op, picks in steps:
        pick = [nodes[i % len(nodes)] for i in picks]
        if op == "softplus":
            nodes.append(pick[0].softplus())
        elif op == "log1p":
            nodes.append((pick[0] * pick[0]).log1p())
        elif op == "sum":
            nodes.append(lib.sum(pick + [0.25]))          # a constant operand too
        elif op == "lse":
            nodes.append(lib.logsumexp(pick))
        elif op == "softmax":
            nodes.extend(lib.softmax(pick))
        elif op == "mul":
            nodes.append(pick[0] * pick[-1])
        elif op == "add":
            nodes.append(pick[0] + pick[-1])
        elif op == "ce":
            nodes.append(lib.cross_entropy(pick, len(pick) - 1))
        else:
            nodes.extend(lib.log_softmax(pick))
    # every input and parameter used (compile refuses unused ones)
    return lib.sum(nodes[-3:] + list(xs) + list(ps))


steps_st = st.lists(st.tuples(st.sampled_from(OPS),
                              st.lists(st.integers(0, 50), min_size=1, max_size=5)),
                    min_size=1, max_size=14)


def bits(a):
    return np.ascontiguousarray(a, np.float64).view(np.uint64)


def eager_rows(steps, X, pvals):
    outs, grads, pgrads = [], [], np.zeros(len(pvals))
    for row in X:
        xs = [Value(v) for v in row]
        ps = [Value(v) for v in pvals]
        y = build(fastgrad, xs, ps, steps)
        y.backward()
        outs.append(y.data)
        grads.append([x.grad for x in xs])
        pgrads += [p.grad for p in ps]
    return np.array(outs), np.array(grads), pgrads


@SETTINGS
@given(steps_st, st.integers(1, 37), st.integers(1, 4), st.integers(0, 2))
def test_random_graphs_batch_equals_eager(steps, B, n_in, n_par):
    rng = np.random.default_rng(len(steps) * 1000 + B)
    pvals = list(rng.uniform(-2, 2, n_par))
    ps = [Value(v) for v in pvals]
    prog = fastgrad.compile(lambda xs: build(fastgrad, xs, ps, steps), n_in, params=ps)
    X = rng.uniform(-3, 3, (B, n_in))
    out = np.empty((B, 1))
    G = np.empty((B, n_in))
    pg = np.empty(n_par)
    prog.batch(X, reduce="sum", outputs=out, input_grad=G, param_grad=pg)
    e_out, e_g, e_pg = eager_rows(steps, X, pvals)
    assert np.array_equal(bits(out[:, 0]), bits(e_out))
    assert np.array_equal(bits(G), bits(e_g))
    assert np.allclose(pg, e_pg, rtol=1e-12, atol=1e-12)
    assert np.array_equal(bits(prog.predict(X)), bits(e_out))
    # one row: value_and_grad, parameter gradients included (same order)
    for p in ps:
        p.grad = 0.0
    v, g = prog.value_and_grad(X[0], accumulate=False)
    e1_out, e1_g, e1_pg = eager_rows(steps, X[:1], pvals)
    assert struct.pack("<d", v) == struct.pack("<d", e1_out[0])
    assert np.array_equal(bits(g), bits(e1_g[0]))
    assert [p.grad for p in ps] == list(e1_pg)


@SETTINGS
@given(steps_st, st.integers(1, 3))
def test_reference_engine_gives_the_compiled_floats(steps, n_in):
    rng = np.random.default_rng(len(steps))
    X = rng.uniform(-3, 3, (5, n_in))
    prog = fastgrad.compile(lambda xs: build(fastgrad, xs, [], steps), n_in)
    got = prog.predict(X)
    want = [build(ref, [ref.Value(v) for v in row], [], steps).data for row in X]
    assert np.array_equal(bits(got), bits(np.array(want)))


def test_every_isa_gives_the_same_bits():
    from fastgrad import _replay
    steps = [("softmax", [0, 1, 2, 3]), ("lse", [4, 5, 0]), ("softplus", [7]),
             ("sum", [1, 6, 7, 8, 2]), ("ce", [0, 2, 9]), ("log1p", [3])]
    X = np.random.default_rng(3).uniform(-4, 4, (45, 4))
    results = []
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            prog = fastgrad.compile(lambda xs: build(fastgrad, xs, [], steps), 4)
            G = np.empty_like(X)
            out = np.empty((45, 1))
            prog.batch(X, reduce="sum", outputs=out, input_grad=G)
            results.append((bits(out), bits(G), bits(prog.predict(X))))
    finally:
        _replay._set_isa(old)
    for r in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(r, results[0]))


def test_one_instruction_each():
    prog = fastgrad.compile(lambda x: fastgrad.sum(fastgrad.softmax(x)), 4)
    tape = prog.tape()["batched"]
    names = [int(op) for op in tape["op"]]
    # logsumexp, 4 outputs, the sum: 6 instructions
    assert len(names) == 6 and prog.n_instructions == 6
    k = int(np.nonzero(tape["kind"] == 4)[0][0])     # the logsumexp (kind K_N)
    off = tape["b"][k]
    assert list(tape["nary"][off:off + 5]) == [4, 0, 1, 2, 3]      # count, rows
    two = fastgrad.compile(lambda x: x[0].softplus() + x[1].log1p(), 2)
    assert two.n_instructions == 3


def test_scalar_operands_and_the_scalar_tape():
    # n-ary instructions over parameters only run once per replay (scalar
    # tape), mixed ones read the scalar slots (-1 - slot in the list)
    w = [Value(0.5), Value(-1.5), Value(2.0)]
    pen = lambda ps: 0.01 * fastgrad.sum([p * p for p in ps])   # noqa: E731

    def f(x):
        z = fastgrad.logsumexp(w)                    # parameters only
        return fastgrad.logsumexp([x[0], w[0], 3.0]) * z + fastgrad.sum([x[1], w[2]])
    prog = fastgrad.compile(f, 2, params=w, penalty=pen)
    tape = prog.tape()
    assert len(tape["scalar"]["nary"]) > 0 and min(tape["batched"]["nary"]) < 0
    X = np.random.default_rng(1).normal(size=(20, 2))
    pg = np.empty(3)
    loss = prog.batch(X, reduce="mean", param_grad=pg)
    ws = [Value(v.data) for v in w]
    total = fastgrad.sum([
        fastgrad.logsumexp([Value(r[0]), ws[0], 3.0]) * fastgrad.logsumexp(ws)
        + fastgrad.sum([Value(r[1]), ws[2]]) for r in X]) * (1.0 / 20) + pen(ws)
    total.backward()
    assert loss == pytest.approx(total.data, rel=1e-14)
    assert np.allclose(pg, [p.grad for p in ws], rtol=1e-12)


def test_repeated_operands_and_outputs_that_are_nary():
    def f(x):
        s = fastgrad.sum([x[0], x[0], x[1] * 2.0, x[0]])
        p = fastgrad.softmax([x[1], x[1], s])
        return [fastgrad.logsumexp([s, s]), s, p[2]]
    prog = fastgrad.compile(f, 2)
    X = np.array([[0.5, -1.0], [2.0, 3.0], [-0.0, 0.0]])
    out = np.empty((3, 3))
    G = np.empty((3, 2))
    prog.batch(X, reduce="sum", outputs=out, input_grad=G)
    for r in range(3):
        xs = [Value(v) for v in X[r]]
        ys = f(xs)
        ys[0].backward()
        assert np.array_equal(bits(out[r]), bits([y.data for y in ys]))
        assert np.array_equal(bits(G[r]), bits([x.grad for x in xs]))


def test_special_values_in_the_batch():
    inf, nan = math.inf, math.nan
    X = np.array([[inf, 1.0], [-inf, -inf], [nan, 1.0], [-inf, 0.0], [1e308, 1e308],
                  [-745.0, 800.0], [0.0, -0.0]])
    f = lambda x: fastgrad.sum(fastgrad.softmax(x) + [fastgrad.logsumexp(x),  # noqa: E731
                                                       x[0].softplus()])
    prog = fastgrad.compile(f, 2)
    out = np.empty((len(X), 1))
    G = np.empty_like(X)
    prog.batch(X, reduce="sum", outputs=out, input_grad=G)
    for r, row in enumerate(X):
        xs = [Value(v) for v in row]
        y = f(xs)
        y.backward()
        e = np.array([y.data] + [x.grad for x in xs])
        c = np.concatenate([out[r], G[r]])
        same = (e == c) | (np.isnan(e) & np.isnan(c))
        assert same.all(), (row, e, c)


def test_many_column_chunks():
    from fastgrad import _replay
    steps = [("softmax", [0, 1, 2]), ("lse", [3, 4]), ("softplus", [5]), ("sum", [6, 2, 7])]
    prog = fastgrad.compile(lambda xs: build(fastgrad, xs, [], steps), 3)
    X = np.random.default_rng(7).normal(size=(1000, 3))
    G1 = np.empty_like(X)
    out1 = np.empty((1000, 1))
    prog.batch(X, reduce="sum", outputs=out1, input_grad=G1)
    old = _replay._set_chunk_bytes(1)               # the smallest chunks
    try:
        prog2 = fastgrad.compile(lambda xs: build(fastgrad, xs, [], steps), 3)
        G2 = np.empty_like(X)
        out2 = np.empty((1000, 1))
        prog2.batch(X, reduce="sum", outputs=out2, input_grad=G2)
    finally:
        _replay._set_chunk_bytes(old)
    assert np.array_equal(bits(out1), bits(out2)) and np.array_equal(bits(G1), bits(G2))


def test_with_dense_layers_and_cross_entropy():
    # an MLP's logits (found as dense layers) into cross_entropy with one-hot
    # inputs: layer gradients are reordered sums (tests/test_layers.py bounds
    # them), the rest must hold together
    import random
    from fastgrad.nn import MLP
    random.seed(4)
    model = MLP(4, [8, 3])

    def f(x):
        logits = model(x[:4])
        return fastgrad.cross_entropy(logits, x[4:])
    prog = fastgrad.compile(f, 7, params=model.parameters())
    assert prog.n_layers >= 1
    rng = np.random.default_rng(5)
    X = np.hstack([rng.normal(size=(30, 4)), np.eye(3)[rng.integers(0, 3, 30)]])
    out = np.empty((30, 1))
    pg = np.empty(len(model.parameters()))
    prog.batch(X, reduce="mean", outputs=out, param_grad=pg)
    model.zero_grad()
    losses = [f([Value(v) for v in row]) for row in X]
    total = fastgrad.sum(losses) * (1.0 / 30)
    total.backward()
    assert np.array_equal(bits(out[:, 0]), bits([loss.data for loss in losses]))
    assert np.allclose(pg, [p.grad for p in model.parameters()], rtol=1e-10, atol=1e-13)


def test_irregular_workload_small():
    from fastgrad.bench import irregular as bi
    prog, _ = bi.compile_program(60, "primitives")
    X = bi.rows(9)
    out = np.empty((9, prog.n_outputs))
    G = np.empty_like(X)
    prog.batch(X, reduce="sum", outputs=out, input_grad=G)
    for r in range(9):
        xs = [Value(v) for v in X[r]]
        y = bi.build_values(xs, 60, "primitives")
        y.backward()
        assert struct.pack("<d", y.data) == struct.pack("<d", out[r, 0])
        assert np.array_equal(bits(G[r]), bits([x.grad for x in xs]))


def test_compiles_the_differentiable_rules():
    # grad(create_graph=True) through logsumexp builds softmax nodes: the
    # gradient graph compiles and replays to eager's floats
    x = [Value(0.3), Value(-0.7), Value(1.1)]
    y = fastgrad.logsumexp(x) + x[0].softplus() * x[1].log1p()
    g = fastgrad.grad(y, x, create_graph=True)
    prog = fastgrad.compile_graph(list(g), inputs=x)
    want = [gi.data for gi in g]
    got = prog.forward([0.3, -0.7, 1.1])
    assert np.array_equal(bits(got), bits(want))


def test_program_graph_lists_the_nary_operands():
    w = Value(0.5)
    prog = fastgrad.compile(
        lambda x: fastgrad.sum([x[1], w, x[0], 2.0]) + fastgrad.logsumexp([w, w * w]),
        2, params=[w])
    g = prog.graph()
    (s,) = [i for i in g["batched"] if i["op"] == "sum"]
    assert s["args"] == [("input", 1), ("param", 0), ("input", 0), ("const", 0)]
    (lse,) = [i for i in g["scalar"] if i["op"] == "logsumexp"]
    assert lse["args"][0] == ("param", 0) and lse["args"][1][0] == "scalar"
