"""Dense layers in the compiled replay (fastgrad/_replay_layers.pxi).

``fastgrad.compile`` groups a micrograd Layer's dot chains into one layer
instruction whose forward is a matrix kernel and whose backward sums in
another order than the per-instruction replay and eager mode.  Oracles:

* eager mode (the Values' own ``backward()``) and the same graph recorded with
  layers switched off (``_replay._set_layers(False)``: the per-instruction
  replay, itself checked bit for bit against eager in test_compiled.py);
* the layer kernels of every instruction set this CPU runs (and the plain C
  build that MSVC compiles), against each other, bit for bit.

By how much the reordered sums differ: forward values (losses, outputs) are
the same floats as eager, always -- compared by their bits (``same``):
``np.array_equal(-0.0, 0.0)`` is True, so it cannot tell.  Gradients are compared with
``rtol=1e-12, atol=1e-12 * max(1, max |g|)``; on the graphs below the
largest relative difference measured is of the order of 1e-15 (a few ulps),
see ``test_reordering_error_is_a_few_ulps``.
"""
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value
from fastgrad.compiled import make_demo_step
from fastgrad.nn import MLP

pytestmark = pytest.mark.compiled_only("dense layers of the compiled replay")

if fastgrad.COMPILED:
    from fastgrad import _replay


def same(a, b, msg=""):
    """The same bits (a -0.0 is not a +0.0; NaNs compare alike)."""
    a = np.array(a, dtype=np.float64, copy=True)
    b = np.array(b, dtype=np.float64, copy=True)
    assert a.shape == b.shape, msg
    a[np.isnan(a)] = np.nan
    b[np.isnan(b)] = np.nan
    assert a.tobytes() == b.tobytes(), f"{msg}: {a.ravel()[:8]} vs {b.ravel()[:8]}"


def close(a, b):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale)


def _compile(fn, n_in, params, penalty=None, layers=True):
    old = _replay._set_layers(layers)
    try:
        return fastgrad.compile(fn, n_in, params=params, penalty=penalty)
    finally:
        _replay._set_layers(old)


def _eager_batch(fn, params, X, reduce="mean", penalty=None):
    """Loss, parameter gradients, input gradients, outputs of the batch loss
    in eager mode (one graph over all rows)."""
    for p in params:
        p.grad = 0.0
    rows = [[Value(float(v)) for v in r] for r in X]
    outs = [fn(r) for r in rows]
    outs = [o if isinstance(o, list) else [o] for o in outs]
    total = sum(o[0] for o in outs)
    if reduce == "mean":
        total = total * (1.0 / len(rows))
    if penalty is not None:
        total = total + penalty(params)
    total.backward()
    return (total.data, [p.grad for p in params],
            np.array([[v.grad for v in r] for r in rows]),
            np.array([[v.data for v in o] for o in outs]))


def _replay_batch(prog, X, reduce="mean"):
    B = len(X)
    for p in prog.params:
        p.grad = 0.0
    pg = np.empty(prog.n_params)
    gin = np.empty((B, prog.n_inputs))
    outs = np.empty((B, prog.n_outputs))
    loss = prog.batch(X, reduce=reduce, outputs=outs, param_grad=pg, input_grad=gin)
    return loss, pg, gin, outs


def test_mlp_layers_are_found():
    random.seed(0)
    model = MLP(3, [5, 4, 1])
    prog = _compile(lambda x: model(x), 3, model.parameters())
    # 5 chains over the 3 inputs (relu), 4 over their 5 outputs (relu), and
    # the output neuron: 1 chain over 4 rows
    assert prog.n_layers == 3
    assert "3 dense layers" in repr(prog)
    # introspection still reports the recorded instructions
    assert prog.n_instructions == _compile(lambda x: model(x), 3, model.parameters(),
                                           layers=False).n_instructions
    assert _compile(lambda x: model(x), 3, model.parameters(), layers=False).n_layers == 0


def test_lone_multiply_add_is_not_a_layer():
    w, b = Value(2.0), Value(0.5)
    prog = _compile(lambda x: b + w * x[0], 1, [w, b])
    assert prog.n_layers == 0


@pytest.mark.parametrize("shape", [[1], [3, 1], [4, 4, 1], [5, 7, 2], [16, 16, 1],
                                   [9, 1, 3]])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_mlp_batch_matches_eager(shape, reduce):
    random.seed(len(shape) * 10 + shape[0])
    n_in = 2
    model = MLP(n_in, shape)
    params = model.parameters()

    def fn(x):
        out = model(x)
        return list(out) if isinstance(out, list) else out

    def loss_fn(x):
        out = fn(x)
        outs = out if isinstance(out, list) else [out]
        return [sum((o * o for o in outs), Value(0.0))] + outs

    rng = np.random.default_rng(1)
    X = rng.normal(size=(37, n_in))
    def pen(ps):
        return 1e-3 * sum(p * p for p in ps)

    prog = _compile(loss_fn, n_in, params, penalty=pen)
    assert prog.n_layers >= 1
    e_loss, e_pg, e_gin, e_out = _eager_batch(loss_fn, params, X, reduce, pen)
    loss, pg, gin, outs = _replay_batch(prog, X, reduce)
    # forward: the chains' own operations in order -> eager's floats
    same(loss, e_loss)
    same(outs, e_out)
    close(pg, e_pg)
    close(gin, e_gin)
    # the per-instruction replay of the same graph
    off = _compile(loss_fn, n_in, params, penalty=pen, layers=False)
    o_loss, o_pg, o_gin, o_out = _replay_batch(off, X, reduce)
    same(loss, o_loss)
    close(pg, o_pg)
    close(gin, o_gin)


def test_chunked_batch_matches_single_rows():
    # many column chunks: the weight-gradient sums are kept across chunks
    random.seed(3)
    model = MLP(2, [24, 24, 1])
    params = model.parameters()
    prog = _compile(lambda x: model(x), 2, params)
    rng = np.random.default_rng(2)
    X = rng.uniform(-2, 2, size=(20_000, 2))
    loss, pg, gin, outs = _replay_batch(prog, X, "sum")
    off = _compile(lambda x: model(x), 2, params, layers=False)
    o_loss, o_pg, o_gin, o_out = _replay_batch(off, X, "sum")
    same(loss, o_loss)
    same(outs, o_out)
    close(pg, o_pg)
    close(gin, o_gin)


def test_value_and_grad_and_forward_use_layers():
    random.seed(4)
    model = MLP(3, [6, 1])
    params = model.parameters()
    prog = _compile(lambda x: model(x), 3, params)
    x = [0.3, -1.2, 2.0]
    xs = [Value(v) for v in x]
    model.zero_grad()
    out = model(xs)
    out.backward()
    eager_pg = [p.grad for p in params]
    same(prog.forward(x), out.data)
    same(prog.eval_params([p.data for p in params], x), out.data)
    model.zero_grad()
    v, dx = prog.value_and_grad(x)
    same(v, out.data)
    close(dx, [t.grad for t in xs])
    close([p.grad for p in params], eager_pg)


def test_demo_step_matches_eager_training():
    # 20 SGD steps of the demo, eager and compiled, from the same weights
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)
    random.seed(1337)
    m1 = MLP(2, [16, 16, 1])
    random.seed(1337)
    m2 = MLP(2, [16, 16, 1])
    step = make_demo_step(m2)
    assert step.program.n_layers == 3
    for k in range(20):
        lr = 0.5
        m1.zero_grad()
        scores = [m1([Value(a), Value(b)]) for a, b in X]
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in m1.parameters())
        total.backward()
        for p in m1.parameters():
            p.data -= lr * p.grad
        loss, _ = step(X, y, lr)
        assert loss == pytest.approx(total.data, rel=1e-12, abs=1e-15)
    close([p.data for p in m2.parameters()], [p.data for p in m1.parameters()])


def test_kernels_of_every_isa_agree_bit_for_bit():
    isas = _replay._supported_isas(emulated=True)
    # portable: the plain C build (MSVC's), compiled on every platform
    assert "portable" in isas
    random.seed(6)
    model = MLP(3, [13, 9, 2])            # tails: 13, 9 rows are not multiples of 4
    params = model.parameters()
    prog = _compile(lambda x: model(x), 3, params)
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1003, 3))        # column tails too
    results = {}
    old = _replay._isa()
    # also over many column chunks (the weight-gradient lanes carried over)
    old_chunk = _replay._set_chunk_bytes(16 * 40 * 96)
    try:
        for isa in isas:
            _replay._set_isa(isa)
            results[isa] = _replay_batch(prog, X, "sum")
            results[isa + " chunked"] = _replay_batch(
                _compile(lambda x: model(x), 3, params), X, "sum")
    finally:
        _replay._set_isa(old)
        _replay._set_chunk_bytes(old_chunk)
    for isa, res in results.items():
        base = results["portable chunked" if "chunked" in isa else "portable"]
        same(res[0], base[0], isa)
        for a, b in zip(res[1:], base[1:]):
            same(a, b, isa)
    # chunking changes the order of the weight-gradient sums, not the values
    # beyond rounding
    close(results["portable chunked"][1], results["portable"][1])


@pytest.mark.parametrize("width, B", [(43, 100), (7, 5), (1, 3)])
def test_blocked_weight_gradients_agree_across_isas(width, B):
    # 43 x 43 weights over 100 columns: the weight-gradient kernel blocks its
    # x rows (28, then 15: a tail of whole and single-column tiles) and a
    # forward of 43 rows ends in row tiles of 2 and 1; 7 rows: 4 + 2 + 1
    random.seed(width)
    model = MLP(2, [width, width, 1])
    params = model.parameters()

    def fn(x):
        return model(x)

    X = np.random.default_rng(width).normal(size=(B, 2))
    prog = _compile(fn, 2, params)
    assert prog.n_layers == (3 if width > 1 else 1)   # a 1 x 1 chain is no layer
    results = {}
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas(emulated=True):
            _replay._set_isa(isa)
            results[isa] = _replay_batch(prog, X, "sum")
    finally:
        _replay._set_isa(old)
    base = results["portable"]
    for isa, res in results.items():
        same(res[0], base[0], isa)
        for a, b in zip(res[1:], base[1:]):
            same(a, b, isa)
    # and the per-instruction replay (layers off), to rounding
    off = _replay_batch(_compile(fn, 2, params, layers=False), X, "sum")
    assert base[0] == off[0]
    for a, b in zip(base[1:], off[1:]):
        close(a, b)


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown ISA"):
        _replay._set_isa("avx9000")
    assert _replay._isa() in _replay._supported_isas()


def test_reordering_error_is_a_few_ulps():
    # the documented size of the difference: at most 1e-13 relative to the
    # largest gradient on a 64-wide MLP over 2,000 rows (measured ~1e-15)
    random.seed(7)
    model = MLP(2, [64, 64, 1])
    params = model.parameters()
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2000, 2))
    on = _compile(lambda x: model(x), 2, params)
    off = _compile(lambda x: model(x), 2, params, layers=False)
    _, pg, gin, _ = _replay_batch(on, X, "mean")
    _, opg, ogin, _ = _replay_batch(off, X, "mean")
    scale = np.max(np.abs(opg))
    assert np.max(np.abs(pg - opg)) <= 1e-13 * scale
    assert np.max(np.abs(gin - ogin)) <= 1e-13 * max(np.max(np.abs(ogin)), 1e-300)


# ---------------------------------------------------------------------------
# random layered graphs
# ---------------------------------------------------------------------------
# MLP-like graphs with what a layer pass must get right: shared or derived
# weights (scalar results), relu / tanh / no activation, an output read by
# more than its activation, skip connections, inputs read twice, dead
# neurons (never used downstream), constants as biases.

ACTS = ["relu", "tanh", "none", "relu_and_raw"]


@st.composite
def layered(draw):
    n_in = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    acts = [draw(st.sampled_from(ACTS)) for _ in widths]
    derived = draw(st.booleans())          # weights w * 1.5 (scalar results)
    skip = draw(st.booleans())             # add input 0 to the output
    dead = draw(st.booleans())             # drop the last neuron of layer 0
    twice = draw(st.booleans())            # layer 0 reads input 0 twice
    return n_in, widths, acts, derived, skip, dead, twice


def build_layered(spec, params_holder):
    n_in, widths, acts, derived, skip, dead, twice = spec
    rnd = random.Random(sum(widths) * 7 + n_in)
    layers = []
    fan_in = n_in + (1 if twice else 0)
    for li, h in enumerate(widths):
        neurons = [([Value(rnd.uniform(-1, 1)) for _ in range(fan_in)],
                    Value(rnd.uniform(-0.5, 0.5))) for _ in range(h)]
        layers.append(neurons)
        fan_in = h - 1 if (dead and li == 0 and h > 1) else h
    params = [p for neurons in layers for ws, b in neurons for p in ws + [b]]
    params_holder[:] = params

    def fn(x):
        h = list(x) + ([x[0]] if twice else [])
        extra = []
        for li, neurons in enumerate(layers):
            out = []
            for ws, b in neurons:
                ws2 = [w * 1.5 for w in ws] if derived else ws
                z = sum((w * xi for w, xi in zip(ws2, h)), b)
                act = acts[li]
                if act == "relu":
                    z = z.relu()
                elif act == "tanh":
                    z = z.tanh()
                elif act == "relu_and_raw":
                    z = z.relu() + z * 0.25
                out.append(z)
            if dead and li == 0 and len(out) > 1:
                extra.append(out[-1])      # only a second output reads it:
                out = out[:-1]             # no gradient reaches its row
            h = out
        y = sum(h[1:], h[0])
        if skip:
            y = y + x[0]
        return [y] + extra

    return fn


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=layered(), data=st.data())
def test_random_layered_graphs_match_eager(spec, data):
    params = []
    fn = build_layered(spec, params)
    n_in = spec[0]
    prog = _compile(fn, n_in, params)
    # expected layers, by hand: H chains over K distinct rows, H > 1 or K > 1
    n_in_, widths, _, _, _, dead, twice = spec
    expected, K = 0, n_in_
    for li, h in enumerate(widths):
        if not (li == 0 and twice) and (h > 1 or K > 1):
            expected += 1
        K = h - 1 if (dead and li == 0 and h > 1) else h
    assert prog.n_layers == expected
    B = data.draw(st.integers(1, 40))
    X = np.array([[data.draw(st.one_of(st.sampled_from([0.0, -1.0, 1.0]),
                                       st.floats(-3, 3, allow_nan=False)))
                   for _ in range(n_in)] for _ in range(B)])
    reduce = data.draw(st.sampled_from(["sum", "mean"]))
    e_loss, e_pg, e_gin, e_out = _eager_batch(fn, params, X, reduce)
    loss, pg, gin, outs = _replay_batch(prog, X, reduce)
    same(loss, e_loss)
    same(outs, e_out)
    close(pg, e_pg)
    close(gin, e_gin)
    # one row through value_and_grad
    for p in params:
        p.grad = 0.0
    xs = [Value(float(v)) for v in X[0]]
    out = fn(xs)[0]
    out.backward()
    eg = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    v, dx = prog.value_and_grad(X[0])
    same(v, out.data)
    close(dx, [t.grad for t in xs])
    close([p.grad for p in params], eg)


def test_recording_leaves_the_garbage_collector_as_it_was():
    # recording pauses the cyclic collector (see compiled._build) and must
    # restore it, enabled or not, also when recording fails
    import gc
    w = Value(1.0)
    assert gc.isenabled()
    fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
    assert gc.isenabled()
    gc.disable()
    try:
        fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ValueError):
        fastgrad.compile(lambda x: x[0] * w, 1, params=[w, w])
    assert gc.isenabled()


def test_negative_zero_bias_stays_negative_zero():
    # issue 26 item 4: the vector kernels started their sums at 0.0 + bias,
    # which turns a bias of -0.0 into +0.0 (then 1/h is +inf where eager mode
    # and predict give -inf).  Inputs 0.0 and negative weights: every product
    # is -0.0, so eager's h is exactly the bias' -0.0 (and relu keeps it).
    H = 6
    ws = [[Value(-1.0 - 0.5 * i), Value(-2.0)] for i in range(H)]
    bs = [Value(-0.0) for _ in range(H)]
    params = [p for w, b in zip(ws, bs) for p in w + [b]]

    def fn(x):
        hs = [sum((wi * xi for wi, xi in zip(w, x)), b).relu() for w, b in zip(ws, bs)]
        return [sum(hs, Value(0.0))] + hs

    X = np.array([[0.0, 0.0], [0.0, -0.0], [1.0, -1.0]])
    prog = _compile(fn, 2, params)
    assert prog.n_layers == 1
    e_loss, e_pg, e_gin, e_out = _eager_batch(fn, params, X, "sum")
    assert np.signbit(e_out[0, 1:]).all() and not e_out[0, 1:].any()   # the oracle
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas(emulated=True):
            _replay._set_isa(isa)
            loss, pg, gin, outs = _replay_batch(prog, X, "sum")
            same(loss, e_loss, isa)
            same(outs, e_out, isa)
            close(pg, e_pg)
            same(prog.predict(X), e_out, isa)
    finally:
        _replay._set_isa(old)
