"""Gradient rows reused by liveness in the training tape (issue 20).

A program without dense layers gives a gradient row only to the slots whose
gradients are live at once (see ``_grad_rows`` in _replay_plan.pxi).  Oracles:
a liveness walk written here from ``Program.tape()`` (no two slots whose
gradients are live at the same instruction share a row), the same program
compiled with the reuse off (the same bits, parameter gradients included,
whatever the chunks), and the eager engine one row at a time (outputs and
input gradients bit for bit).
"""
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("compiled graph replay")

_replay = pytest.importorskip("fastgrad._replay")

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

OPS = ("mul", "square", "add", "sub", "div", "max", "exp", "tanh", "softplus",
       "sum", "lse", "softmax", "scale")


def build(xs, ps, steps):
    """A random graph over inputs xs and parameters ps; returns [output 0,
    output 1] (output 1 keeps a second output's slots in the program)."""
    nodes = list(xs) + list(ps)
    for op, picks in steps:
        a, b = (nodes[i % len(nodes)] for i in (picks[0], picks[-1]))
        pick = [nodes[i % len(nodes)] for i in picks]
        if op == "mul":
            nodes.append(a * b)
        elif op == "square":
            nodes.append(a * a)                         # one operand twice
        elif op == "add":
            nodes.append(a + b)
        elif op == "sub":
            nodes.append(a - b)
        elif op == "div":
            nodes.append(a / (b * b + 1.0))
        elif op == "max":
            nodes.append(fastgrad.maximum(a, b))
        elif op == "exp":
            nodes.append((a * 0.25).exp())
        elif op == "tanh":
            nodes.append(a.tanh())
        elif op == "softplus":
            nodes.append(a.softplus())
        elif op == "sum":
            nodes.append(fastgrad.sum(pick + pick[:1] + [0.5]))   # repeats
        elif op == "lse":
            nodes.append(fastgrad.logsumexp(pick))
        elif op == "softmax":
            nodes.extend(fastgrad.softmax(pick))
        else:
            nodes.append(a * 1.5 + b)
    return [fastgrad.sum(nodes[-3:] + list(xs) + list(ps)), nodes[len(nodes) // 2]]


steps_st = st.lists(st.tuples(st.sampled_from(OPS),
                              st.lists(st.integers(0, 60), min_size=1, max_size=4)),
                    min_size=1, max_size=40)


def bits(a):
    return np.ascontiguousarray(a, np.float64).view(np.uint64)


def compile_with(reuse, steps, n_in, pvals):
    old = _replay._set_grad_row_reuse(reuse)
    try:
        ps = [Value(v) for v in pvals]
        prog = fastgrad.compile(lambda xs: build(xs, ps, steps), n_in, params=ps)
        prog._grad_rows()                  # the plan, made under this setting
    finally:
        _replay._set_grad_row_reuse(old)
    return prog


def run(prog, X, num_threads=1):
    out = np.empty((X.shape[0], prog.n_outputs))
    G = np.empty_like(X)
    pg = np.empty(prog.n_params)
    prog.batch(X, reduce="sum", outputs=out, input_grad=G, param_grad=pg,
               num_threads=num_threads)
    return out, G, pg


def live_intervals(prog):
    """Slot -> (first, last) instruction indices of the backward during which
    its gradient is live (the backward runs k = n - 1 .. 0: an operand's
    gradient is born at the latest live consumer, an instruction's output's
    dies at its own index; inputs live to the end, -1; output 0 from n)."""
    t = prog.tape()["batched"]
    n_in = prog.n_inputs
    n = len(t["op"])
    out0 = prog.graph()["outputs"][0]
    live = {}
    if out0[0] in ("row", "input"):
        live[out0[1]] = n
    for k in range(n - 1, -1, -1):
        o = n_in + k
        if o not in live:
            continue                       # its instruction does not run
        kind, a, b = int(t["kind"][k]), int(t["a"][k]), int(t["b"][k])
        if kind == 4:
            cnt = int(t["nary"][b])
            rows = [int(r) for r in t["nary"][b + 1:b + 1 + cnt] if r >= 0]
        else:
            rows = ([a] if kind in (0, 1, 3) else []) + ([b] if kind in (0, 2) else [])
        for r in rows:
            live.setdefault(r, k)
    return {r: (start, r - n_in if r >= n_in else -1) for r, start in live.items()}


def check_no_alias(prog):
    gm, n_rows = prog._grad_rows()
    iv = live_intervals(prog)
    for r in iv:
        assert 0 <= gm[r] < n_rows, (r, gm[r], n_rows)
    for r in range(prog.n_inputs):
        assert gm[r] == r                  # read after the backward
    by_row = {}
    for r, (hi, lo) in iv.items():
        by_row.setdefault(int(gm[r]), []).append((lo, hi, r))
    for spans in by_row.values():
        spans.sort()
        for (lo1, hi1, r1), (lo2, hi2, r2) in zip(spans, spans[1:]):
            # intervals [lo, hi] of one row must not share an instruction
            assert hi1 < lo2, f"slots {r1} and {r2} share gradient row: {spans}"
    return n_rows


@SETTINGS
@given(steps_st, st.integers(1, 4), st.integers(0, 2))
def test_gradient_rows_never_alias_a_live_row(steps, n_in, n_par):
    rng = np.random.default_rng(len(steps) * 100 + n_in)
    prog = compile_with(True, steps, n_in, list(rng.uniform(-2, 2, n_par)))
    check_no_alias(prog)


@SETTINGS
@given(steps_st, st.integers(1, 70), st.integers(1, 4), st.integers(0, 2),
       st.sampled_from([0, 8, 16]))
def test_reuse_gives_the_same_bits(steps, B, n_in, n_par, cols):
    rng = np.random.default_rng(len(steps) * 1000 + B)
    pvals = list(rng.uniform(-2, 2, n_par))
    X = rng.uniform(-3, 3, (B, n_in))
    old = _replay._set_chunk_cols(cols)    # B spans several chunks (0: the rule)
    try:
        on = run(compile_with(True, steps, n_in, pvals), X)
        off = run(compile_with(False, steps, n_in, pvals), X)
    finally:
        _replay._set_chunk_cols(old)
    for u, v in zip(on, off):
        assert np.array_equal(bits(u), bits(v))


def eager_rows(steps, X, pvals):
    outs, grads = [], []
    for row in X:
        xs = [Value(v) for v in row]
        ps = [Value(v) for v in pvals]
        y = build(xs, ps, steps)[0]
        y.backward()
        outs.append(y.data)
        grads.append([x.grad for x in xs])
    return np.array(outs), np.array(grads)


def test_irregular_graph_in_chunks_equals_eager_rows():
    from fastgrad.bench import irregular as ir
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, ir.N_INPUTS))
    for style in ("primitives", "composed"):
        prog, _ = ir.compile_program(120, style)
        gm, n_rows = prog._grad_rows()
        assert n_rows < prog.n_instructions    # rows are reused
        check_no_alias(prog)
        old = _replay._set_chunk_cols(16)      # 150 rows: 10 chunks
        old_b = _replay._set_block_cols(32)    # 5 blocks: two workers' buffers
        try:
            out, G, _ = run(prog, X)
            out2, G2, _ = run(prog, X, num_threads=2)
        finally:
            _replay._set_chunk_cols(old)
            _replay._set_block_cols(old_b)
        assert np.array_equal(bits(out), bits(out2)) and np.array_equal(bits(G), bits(G2))
        for j in (0, 17, 149):
            xs = [Value(v) for v in X[j]]
            y = ir.build_values(xs, 120, style)
            y.backward()
            assert struct.pack("<d", out[j, 0]) == struct.pack("<d", y.data)
            assert np.array_equal(bits(G[j]), bits([x.grad for x in xs]))


@SETTINGS
@given(steps_st, st.integers(33, 90), st.integers(1, 3))
def test_chunked_batch_equals_eager_rows(steps, B, n_in):
    rng = np.random.default_rng(len(steps) + 7 * B)
    X = rng.uniform(-3, 3, (B, n_in))
    prog = compile_with(True, steps, n_in, [])
    old = _replay._set_chunk_cols(8)
    try:
        out, G, _ = run(prog, X)
    finally:
        _replay._set_chunk_cols(old)
    e_out, e_g = eager_rows(steps, X, [])
    assert np.array_equal(bits(out[:, 0]), bits(e_out))
    assert np.array_equal(bits(G), bits(e_g))


def test_layer_programs_keep_a_row_per_slot():
    import random
    from fastgrad.nn import MLP
    random.seed(1)
    model = MLP(2, [8, 8, 1])
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    assert prog.n_layers > 0
    gm, n_rows = prog._grad_rows()
    assert list(gm) == list(range(len(gm))) and n_rows == len(gm)


def test_chunk_rule_by_working_set():
    from fastgrad.bench import irregular as ir
    X = ir.rows(1024)
    widths = {}
    for ops in (100, 2000):
        prog, _ = ir.compile_program(ops, "composed")
        run(prog, X)
        widths[ops] = _replay._last_chunk()
    # a short tape: its chunk stays in cache (FIT_BYTES); a long one
    # streams, and is sized by its live rows instead: wider, not narrower
    assert widths[100] >= 32 and widths[2000] >= 32
    assert widths[2000] % 8 == 0 and widths[100] % 8 == 0
