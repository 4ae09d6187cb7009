"""Layers found by what the graph computes, not by how the sum was spelled.

``fastgrad.compile`` groups neurons into dense layers whatever way the
neuron's sum is written (``_replay_layers.pxi``): starting at its bias, at
Python ``sum()``'s int 0 or at its first product; with the bias first, last
(either operand order) or absent; ``w*x`` or ``x*w``; a comprehension or a
hand-written loop.  The activation ops after the sum (relu, tanh, sigmoid,
exp, log, a hand-written sigmoid ...) run in the layer's epilogue.

Oracles: eager mode (the same Values' ``backward()``) and PyTorch.  Forward
values must be eager's floats bit for bit (``tobytes()``: signs of zero
included); gradients agree within the tolerance documented in
test_layers.py (the layer backward sums in another order).  What was found
is asserted through ``Program.summary()``.
"""
import math
import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("dense layers of the compiled replay")

if fastgrad.COMPILED:
    from fastgrad import _replay


def close(a, b):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale)


# ---------------------------------------------------------------------------
# neuron sums, as users write them
# ---------------------------------------------------------------------------

def s_bias_first(w, b, x):        # micrograd: sum(..., self.b)
    return sum((wi * xi for wi, xi in zip(w, x)), b)


def s_sum_plus_b(w, b, x):        # the textbook w.x + b: 0 + w0*x0 + ... + b
    return sum(wi * xi for wi, xi in zip(w, x)) + b


def s_b_plus_sum(w, b, x):
    return b + sum(wi * xi for wi, xi in zip(w, x))


def s_no_bias(w, b, x):
    return sum(wi * xi for wi, xi in zip(w, x))


def s_x_times_w(w, b, x):         # xi*wi under sum(zip(x, w))
    return sum(xi * wi for xi, wi in zip(x, w)) + b


def s_loop(w, b, x):              # act = w[0]*x[0]; act = act + ...; + b
    act = w[0] * x[0]
    for i in range(1, len(w)):
        act = act + w[i] * x[i]
    return act + b


def s_loop_no_bias(w, b, x):
    act = x[0] * w[0]
    for i in range(1, len(w)):
        act = act + x[i] * w[i]
    return act


def s_loop_bias_first(w, b, x):
    act = b
    for wi, xi in zip(w, x):
        act = act + wi * xi
    return act


def s_const_start(w, b, x):       # sum(..., 0.5): starts at a number
    return sum((wi * xi for wi, xi in zip(w, x)), 0.5)


def s_value_zero_start(w, b, x):  # sum(..., Value(0.0)): a constant leaf
    return sum((wi * xi for wi, xi in zip(w, x)), Value(0.0))


# form -> (summary start, summary bias, whether b is a parameter)
FORMS = {
    s_bias_first: ("bias", "first", True),
    s_sum_plus_b: ("0", "last", True),
    s_b_plus_sum: ("0", "last", True),
    s_no_bias: ("0", "none", False),
    s_x_times_w: ("0", "last", True),
    s_loop: ("first product", "last", True),
    s_loop_no_bias: ("first product", "none", False),
    s_loop_bias_first: ("bias", "first", True),
    s_const_start: ("constant", "none", False),
    s_value_zero_start: ("0", "none", False),
}

ACTS = {
    "none": (lambda z: z, ()),
    "relu": (lambda z: z.relu(), ("relu",)),
    "tanh": (lambda z: z.tanh(), ("tanh",)),
    "sigmoid": (lambda z: z.sigmoid(), ("sigmoid",)),
    "sigmoid_hand": (lambda z: 1 / (1 + (-z).exp()),
                     ("mulc -1", "exp", "addc 1", "rdivc 1")),
    "softplus_hand": (lambda z: (z.exp() + 1).log(), ("exp", "addc 1", "log")),
    "exp": (lambda z: z.exp(), ("exp",)),
    "tanh_scaled": (lambda z: z.tanh() * 2 - 1, ("tanh", "mulc 2", "addc -1")),
    "relu_tanh": (lambda z: z.relu().tanh(), ("relu", "tanh")),
    "abs_sqrt": (lambda z: (z - 0.25).abs().sqrt(), ("addc -0.25", "abs", "sqrt")),
    "square": (lambda z: z ** 2, ("powc 2",)),
    "rsub_div": (lambda z: (1 - z) / 3, ("rsubc 1", "divc 3")),
}


class Net:
    """n_in -> widths[0] -> ... -> widths[-1], every neuron summed by ``form``,
    activation ``act`` on the hidden layers (none on the last)."""

    def __init__(self, n_in, widths, form, act, seed=0):
        rnd = random.Random(seed)
        self.form = form
        self.act = ACTS[act][0]
        self.layers = []
        k = n_in
        for h in widths:
            self.layers.append([([Value(rnd.uniform(-1, 1)) for _ in range(k)],
                                 Value(rnd.uniform(-0.5, 0.5))) for _ in range(h)])
            k = h
        uses_b = FORMS[form][2]
        self.params = [p for layer in self.layers for w, b in layer
                       for p in w + ([b] if uses_b else [])]

    def __call__(self, x):
        h = list(x)
        for li, layer in enumerate(self.layers):
            out = [self.form(w, b, h) for w, b in layer]
            if li < len(self.layers) - 1:
                out = [self.act(z) for z in out]
            h = out
        return h


def eager_batch(fn, params, X, reduce="sum"):
    """Outputs, loss, parameter and input gradients of sum/mean over rows of
    output 0, in eager mode."""
    for p in params:
        p.grad = 0.0
    rows = [[Value(float(v)) for v in r] for r in X]
    outs = [fn(r) for r in rows]
    total = sum(o[0] for o in outs)
    if reduce == "mean":
        total = total * (1.0 / len(rows))
    total.backward()
    return (np.array([[v.data for v in o] for o in outs]), total.data,
            np.array([p.grad for p in params]),
            np.array([[v.grad for v in r] for r in rows]))


def replay_batch(prog, X, reduce="sum"):
    B = len(X)
    for p in prog.params:
        p.grad = 0.0
    outs = np.empty((B, prog.n_outputs))
    pg = np.empty(prog.n_params)
    gin = np.empty((B, prog.n_inputs))
    loss = prog.batch(X, reduce=reduce, outputs=outs, param_grad=pg, input_grad=gin)
    return outs, loss, pg, gin


def check_against_eager(fn, params, n_in, X, reduce="sum"):
    prog = fastgrad.compile(fn, n_in, params=params)
    e_out, e_loss, e_pg, e_gin = eager_batch(fn, params, X, reduce)
    outs, loss, pg, gin = replay_batch(prog, X, reduce)
    assert outs.tobytes() == e_out.tobytes()
    assert np.float64(loss).tobytes() == np.float64(e_loss).tobytes()
    close(pg, e_pg)
    close(gin, e_gin)
    return prog


@pytest.mark.parametrize("form", list(FORMS), ids=lambda f: f.__name__)
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid_hand"])
def test_every_form_is_found_and_matches_eager(form, act):
    net = Net(3, [5, 4, 2], form, act, seed=hash(form.__name__) % 1000)

    def fn(x):
        out = net(x)
        return [out[0] * out[1] + out[1]] + out

    X = np.random.default_rng(1).normal(size=(29, 3))
    prog = check_against_eager(fn, net.params, 3, X)
    s = prog.summary()
    start, bias, _ = FORMS[form]
    assert [(ly.inputs, ly.outputs) for ly in s.layers] == [(3, 5), (5, 4), (4, 2)]
    for ly in s.layers:
        assert (ly.start, ly.bias) == (start, bias), ly
    assert [ly.activation for ly in s.layers] == [ACTS[act][1], ACTS[act][1], ()]
    # what is left per instruction: the loss (a mul and an add)
    assert dict(s.per_instruction) == {"mul": 1, "add": 1}
    assert s.products_outside == 0
    assert s.warning() is None


@pytest.mark.parametrize("act", list(ACTS))
def test_epilogue_chains_match_eager_bit_for_bit(act):
    net = Net(4, [6, 6, 1], s_sum_plus_b, act, seed=3)
    X = np.random.default_rng(2).normal(size=(41, 4))
    X[:, 0] = np.where(np.arange(41) % 3 == 0, 0.0, X[:, 0])
    prog = check_against_eager(lambda x: net(x), net.params, 4, X)
    s = prog.summary()
    assert [ly.activation for ly in s.layers] == [ACTS[act][1]] * 2 + [()]
    assert s.per_instruction == ()


def test_epilogue_over_many_chunks_and_blocks():
    # 700 columns: several 256-column blocks of the epilogue's backward, and
    # small column chunks (the pre-activation rows are per chunk)
    net = Net(2, [9, 7, 1], s_b_plus_sum, "sigmoid_hand", seed=4)
    X = np.random.default_rng(3).uniform(-2, 2, size=(700, 2))
    old = _replay._set_chunk_bytes(16 * 40 * 64)
    try:
        check_against_eager(lambda x: net(x), net.params, 2, X, "mean")
    finally:
        _replay._set_chunk_bytes(old)


def test_signs_of_zero_follow_each_form():
    # every product is -0.0 (weights +-1 times inputs -0.0 / +0.0): the sum's
    # sign of zero depends on where it starts, and the bias -0.0 too
    def neurons(x, wsign):
        w = [Value(wsign * 1.0), Value(-wsign * 1.0)]
        bneg = Value(-0.0)
        bpos = Value(0.0)
        return [s(w, b, x) for s in (s_bias_first, s_sum_plus_b, s_b_plus_sum,
                                     s_no_bias, s_loop, s_loop_no_bias,
                                     s_loop_bias_first, s_x_times_w)
                for b in (bneg, bpos)]

    X = np.array([[-0.0, 0.0], [0.0, -0.0], [-0.0, -0.0], [0.0, 0.0], [1.0, -0.0]])
    for wsign in (1.0, -1.0):
        def fn(x):
            a = neurons(x, wsign)
            b = neurons(x, wsign)        # a second neuron per form: a layer
            return a + b
        params = []
        prog = fastgrad.compile(fn, 2, params=params)
        e_out, _, _, _ = eager_batch(fn, params, X)
        outs = np.empty((len(X), prog.n_outputs))
        prog.batch(X, outputs=outs, grad=False)
        assert outs.tobytes() == e_out.tobytes()
        # the training replay: one layer of the 32 neurons, every kernel build
        assert [(ly.outputs, ly.start, ly.bias) for ly in prog.summary().layers] == [
            (32, "mixed", "mixed")]
        old = _replay._isa()
        try:
            for isa in _replay._supported_isas():
                _replay._set_isa(isa)
                outs[:] = 1.0
                prog.batch(X, outputs=outs)
                assert outs.tobytes() == e_out.tobytes(), isa
        finally:
            _replay._set_isa(old)
        # and the eager values really differ in sign between the forms
        assert max(len({v.tobytes() for v in row}) for row in e_out) == 2


def test_kernels_of_every_isa_agree_on_forms_and_epilogues():
    net = Net(3, [13, 9, 2], s_loop, "softplus_hand", seed=5)
    X = np.random.default_rng(4).normal(size=(203, 3))
    prog = fastgrad.compile(lambda x: net(x), 3, params=net.params)
    results = {}
    old = _replay._isa()
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            results[isa] = replay_batch(prog, X)
    finally:
        _replay._set_isa(old)
    base = results["portable"]
    for isa, res in results.items():
        for a, b in zip(res, base):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), isa


def test_forward_value_and_grad_and_eval_params_use_the_forms():
    net = Net(3, [6, 1], s_sum_plus_b, "sigmoid_hand", seed=6)
    prog = fastgrad.compile(lambda x: net(x)[0], 3, params=net.params)
    assert prog.n_layers == 2
    x = [0.3, -1.2, 2.0]
    xs = [Value(v) for v in x]
    for p in net.params:
        p.grad = 0.0
    out = net(xs)[0]
    out.backward()
    eg = [p.grad for p in net.params]
    assert prog.forward(x) == out.data
    assert prog.eval_params([p.data for p in net.params], x) == out.data
    for p in net.params:
        p.grad = 0.0
    v, dx = prog.value_and_grad(x)
    assert v == out.data
    close(dx, [t.grad for t in xs])
    close([p.grad for p in net.params], eg)
    # finite differences of the compiled program (c_eval: the unpacked path)
    num = fastgrad.num_grad(prog.wrt_params(x), np.array([p.data for p in net.params]))
    np.testing.assert_allclose(num, eg, rtol=1e-6, atol=1e-8)


def test_gradients_against_torch():
    torch = pytest.importorskip("torch")
    rnd = np.random.default_rng(7)
    W1, b1 = rnd.uniform(-1, 1, (8, 3)), rnd.uniform(-1, 1, 8)
    W2, b2 = rnd.uniform(-1, 1, (1, 8)), rnd.uniform(-1, 1, 1)
    X = rnd.normal(size=(50, 3))
    y = np.sign(rnd.normal(size=50))
    w1 = [[Value(v) for v in row] for row in W1]
    c1 = [Value(v) for v in b1]
    w2 = [[Value(v) for v in row] for row in W2]
    c2 = [Value(v) for v in b2]
    params = [p for row, b in zip(w1, c1) for p in row + [b]] + \
        [p for row, b in zip(w2, c2) for p in row + [b]]

    def fn(v):
        x, yi = v[:3], v[3]
        h = [1 / (1 + (-(sum(wi * xi for wi, xi in zip(row, x)) + b)).exp())
             for row, b in zip(w1, c1)]
        s = c2[0] + sum(wi * hi for wi, hi in zip(w2[0], h))
        return (s - yi) ** 2

    prog = fastgrad.compile(fn, 4, params=params)
    assert prog.n_layers == 2
    pg = np.empty(prog.n_params)
    loss = prog.batch((X, y), reduce="mean", param_grad=pg)
    tW1 = torch.tensor(W1, requires_grad=True)
    tb1 = torch.tensor(b1, requires_grad=True)
    tW2 = torch.tensor(W2, requires_grad=True)
    tb2 = torch.tensor(b2, requires_grad=True)
    h = torch.sigmoid(torch.from_numpy(X) @ tW1.T + tb1)
    s = (h @ tW2.T + tb2)[:, 0]
    tl = ((s - torch.from_numpy(y)) ** 2).mean()
    tl.backward()
    expect = np.concatenate([
        np.concatenate([tW1.grad.numpy(), tb1.grad.numpy()[:, None]], 1).ravel(),
        np.concatenate([tW2.grad.numpy(), tb2.grad.numpy()[:, None]], 1).ravel()])
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(pg, expect, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# what must not become (part of) a layer -- and still gives eager's results
# ---------------------------------------------------------------------------

def test_a_product_read_elsewhere_stays_out_of_the_layer():
    net = Net(3, [5, 1], s_sum_plus_b, "tanh", seed=8)
    w0, b0 = net.layers[0][0]

    def fn(x):
        out = net(x)
        return [out[0], w0[0] * x[0]]      # neuron 0's first product, again

    # the product w0[0]*x[0] is a separate node here (not shared with neuron
    # 0): build one that *is* shared
    def fn_shared(x):
        p = w0[0] * x[0]
        z0 = p + w0[1] * x[1] + w0[2] * x[2] + b0
        hs = [z0.tanh()] + [sum(wi * xi for wi, xi in zip(w, x)) + b
                            for w, b in net.layers[0][1:]]
        hs = [hs[0]] + [h.tanh() for h in hs[1:]]
        w, b = net.layers[1][0]
        return [sum(wi * hi for wi, hi in zip(w, hs)) + b, p]

    X = np.random.default_rng(8).normal(size=(17, 3))
    check_against_eager(fn, net.params, 3, X)
    prog = check_against_eager(fn_shared, net.params, 3, X)
    s = prog.summary()
    # neuron 0 is not in the hidden layer (its product is an output): 4 of 5
    assert [(ly.inputs, ly.outputs) for ly in s.layers] == [(3, 4), (5, 1)]


def test_a_running_sum_read_elsewhere_is_not_a_neuron():
    ws = [[Value(0.1 * (i + j) - 0.3) for j in range(4)] for i in range(3)]
    params = [w for row in ws for w in row]

    def fn(x):
        outs = []
        for row in ws:
            partial = row[0] * x[0] + row[1] * x[1]
            outs.append(partial + row[2] * x[2] + row[3] * x[3])
            outs.append(partial)           # the running sum is read twice
        return outs

    X = np.random.default_rng(9).normal(size=(11, 4))
    prog = check_against_eager(fn, params, 4, X)
    s = prog.summary()
    # the partial sums (over x0, x1) form a layer; the rest does not
    assert [(ly.inputs, ly.outputs) for ly in s.layers] == [(2, 3)]
    assert dict(s.per_instruction)["fmuladd"] == 6


def test_rows_in_another_order_or_read_twice_are_other_layers():
    rnd = random.Random(10)
    ws = [[Value(rnd.uniform(-1, 1)) for _ in range(4)] for _ in range(4)]
    params = [w for row in ws for w in row]

    def fn(x):
        orders = [(0, 1, 2, 3), (0, 1, 2, 3), (3, 2, 1, 0), (0, 1, 0, 1)]
        return [sum(w * x[i] for w, i in zip(row, order))
                for row, order in zip(ws, orders)]

    X = np.random.default_rng(10).normal(size=(13, 4))
    prog = check_against_eager(fn, params, 4, X)
    s = prog.summary()
    assert sorted((ly.inputs, ly.outputs) for ly in s.layers) == [(4, 1), (4, 2)]
    assert s.chains == 4 and s.chains_in_layers == 3 and s.chains_repeating_a_row == 1


def test_different_activations_stop_the_shared_epilogue():
    rnd = random.Random(11)
    ws = [[Value(rnd.uniform(-1, 1)) for _ in range(3)] for _ in range(4)]
    params = [w for row in ws for w in row]
    acts = [lambda z: z.tanh() * 2, lambda z: z.tanh() * 3,
            lambda z: z.tanh() * 2, lambda z: z.tanh()]

    def fn(x):
        return [act(sum(w * xi for w, xi in zip(row, x)))
                for row, act in zip(ws, acts)]

    X = np.random.default_rng(11).normal(size=(9, 3))
    prog = check_against_eager(fn, params, 3, X)
    s = prog.summary()
    assert [ly.activation for ly in s.layers] == [("tanh",)]
    assert dict(s.per_instruction) == {"mulc": 3}


def test_pre_activation_read_twice_keeps_it_out_of_the_epilogue():
    net = Net(2, [4, 1], s_sum_plus_b, "none", seed=12)

    def fn(x):
        zs = [s_sum_plus_b(w, b, x) for w, b in net.layers[0]]
        hs = [z.relu() + z * 0.25 for z in zs]
        w, b = net.layers[1][0]
        return [s_sum_plus_b(w, b, hs)]

    X = np.random.default_rng(12).normal(size=(10, 2))
    prog = check_against_eager(fn, net.params, 2, X)
    assert [ly.activation for ly in prog.summary().layers] == [(), ()]


def test_lone_products_are_not_layers():
    w = Value(2.0)
    prog = fastgrad.compile(lambda x: (w * x[0]).tanh() + x[0] * w, 1, params=[w])
    assert prog.n_layers == 0
    assert prog.summary().layers == ()


# ---------------------------------------------------------------------------
# Program.summary() and the PerformanceWarning
# ---------------------------------------------------------------------------

def test_summary_of_the_demo_model():
    random.seed(1337)
    from fastgrad.nn import MLP
    model = MLP(2, [16, 16, 1])
    step = fastgrad.compiled.make_demo_step(model)
    s = step.program.summary()
    assert [ly.describe() for ly in s.layers] == [
        "2 -> 16, sum starts at bias, bias first, relu",
        "16 -> 16, sum starts at bias, bias first, relu",
        "16 -> 1, sum starts at bias, bias first, no activation"]
    assert s.layer_flops == 2 * (2 * 16 + 16 * 16 + 16) + 16 + 16
    # the loss: relu(1 + -y * score) -> mulc, mul, addc, relu
    assert dict(s.per_instruction) == {"mulc": 1, "mul": 1, "addc": 1, "relu": 1}
    assert s.other_flops == 4
    assert s.shared_instructions > 0       # the L2 penalty
    text = str(s)
    assert "3 dense layers" in text and "layer 1: 16 -> 16" in text
    assert isinstance(s, fastgrad.compiled.ProgramSummary)


def _unrecognisable(n_in, H):
    """H neurons over the inputs each read twice (x + x): not a layer."""
    rnd = random.Random(13)
    ws = [[Value(rnd.uniform(-1, 1)) for _ in range(2 * n_in)] for _ in range(H)]
    params = [w for row in ws for w in row]

    def fn(x):
        xx = list(x) + list(x)
        hs = [sum(w * xi for w, xi in zip(row, xx)).tanh() for row in ws]
        return sum(hs)

    return fn, params


def test_performance_warning_fires_once_naming_the_construct():
    fn, params = _unrecognisable(32, 64)        # 4,096 products per sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prog = fastgrad.compile(fn, 32, params=params)
    perf = [w for w in caught if issubclass(w.category, fastgrad.PerformanceWarning)]
    assert len(perf) == 1
    msg = str(perf[0].message)
    assert "4,096 products" in msg and "read a per-sample value twice" in msg
    assert perf[0].filename == __file__          # points at the compile call
    s = prog.summary()
    assert s.layers == () and s.chains_repeating_a_row == 64
    assert s.warning() == msg


def test_no_performance_warning_for_small_or_recognised_programs():
    fn, params = _unrecognisable(8, 16)          # 256 products: small
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastgrad.compile(fn, 8, params=params)
        random.seed(0)
        from fastgrad.nn import MLP
        model = MLP(32, [64, 64, 1])             # big, found as layers
        prog = fastgrad.compile(lambda x: model(x), 32, params=model.parameters())
        assert prog.summary().layer_share == 1.0
        # layer recognition switched off (a testing hook): no warning either
        old = _replay._set_layers(False)
        try:
            prog = fastgrad.compile(lambda x: model(x), 32, params=model.parameters())
        finally:
            _replay._set_layers(old)
    s = prog.summary()
    assert not s.recognised and s.layers == () and s.warning() is None
    assert "switched off" in str(s)


def test_performance_warning_is_exported():
    assert "PerformanceWarning" in fastgrad.__all__
    assert issubclass(fastgrad.PerformanceWarning, UserWarning)
    assert math.isclose(fastgrad.compiled.ProgramSummary(
        (), (), 0, 0, 0, 0, 0, 0, 0).layer_share, 0.0)


# ---------------------------------------------------------------------------
# random layered graphs: forms and activation chains mixed per neuron
# ---------------------------------------------------------------------------

FORM_LIST = list(FORMS)
CHAIN_OPS = [
    ("relu", lambda z: z.relu()), ("tanh", lambda z: z.tanh()),
    ("sigmoid", lambda z: z.sigmoid()), ("mulc", lambda z: z * -0.5),
    ("addc", lambda z: z + 0.25), ("exp_half", lambda z: (z * 0.5).exp()),
    ("rsub", lambda z: 1 - z), ("abs", lambda z: abs(z)),
]


@st.composite
def mixed_net(draw):
    n_in = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    # per layer: one form and chain for most neurons, another for some
    layers = []
    for h, k in zip(widths, [n_in] + widths[:-1]):
        # known limit: over one value, a neuron without bias written as a
        # loop is a bare product w*x (no sum node), which the recorder does
        # not take as a neuron (it runs per instruction, same floats: see
        # test_bare_products_over_one_value)
        choices = FORM_LIST if k > 1 else [f for f in FORM_LIST if f is not s_loop_no_bias]
        forms = [draw(st.sampled_from(choices)) for _ in range(h)]
        chain = draw(st.lists(st.integers(0, len(CHAIN_OPS) - 1), max_size=3))
        odd = draw(st.lists(st.booleans(), min_size=h, max_size=h))
        layers.append((forms, chain, odd))
    extra_out = draw(st.booleans())        # a pre-activation also an output
    return n_in, widths, layers, extra_out


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=mixed_net(), data=st.data())
def test_random_mixed_forms_match_eager(spec, data):
    n_in, widths, layer_specs, extra_out = spec
    rnd = random.Random(sum(widths) * 31 + n_in)
    weights = []
    k = n_in
    for h in widths:
        weights.append([([Value(rnd.choice([-0.0, 0.0, rnd.uniform(-1, 1)]))
                          for _ in range(k)], Value(rnd.choice([-0.0, 0.5, -0.25])))
                        for _ in range(h)])
        k = h
    params = [p for (forms, _, _), layer in zip(layer_specs, weights)
              for form, (w, b) in zip(forms, layer)
              for p in w + ([b] if FORMS[form][2] else [])]

    def fn(x):
        h = list(x)
        extra = []
        for (forms, chain, odd), layer in zip(layer_specs, weights):
            out = []
            for i, (w, b) in enumerate(layer):
                z = forms[i](w, b, h)
                if extra_out and i == 0:
                    extra.append(z)
                ops = chain[:-1] if odd[i] and chain else chain
                for c in ops:
                    z = CHAIN_OPS[c][1](z)
                out.append(z)
            h = out
        y = h[0]
        for v in h[1:]:
            y = y + v
        return [y] + extra

    prog = fastgrad.compile(fn, n_in, params=params)
    # every layer of the net is found, whatever its neurons' forms (a lone
    # product, one neuron over one value, is not a layer)
    fan_in = [n_in] + widths[:-1]
    assert prog.n_layers == sum(1 for h, k in zip(widths, fan_in) if h > 1 or k > 1)
    B = data.draw(st.integers(1, 20))
    X = np.array([[data.draw(st.sampled_from([0.0, -0.0, 1.0, -2.0, 0.5]))
                   for _ in range(n_in)] for _ in range(B)])
    e_out, e_loss, e_pg, e_gin = eager_batch(fn, params, X)
    outs, loss, pg, gin = replay_batch(prog, X)
    assert outs.tobytes() == e_out.tobytes()
    assert np.float64(loss).tobytes() == np.float64(e_loss).tobytes()
    close(pg, e_pg)
    close(gin, e_gin)
    # forward only (the OP_DOT tape) too
    assert prog.predict(X).reshape(B, -1).tobytes() == e_out.tobytes()


@pytest.mark.parametrize("other", [s_bias_first, s_loop_no_bias])
def test_bare_products_over_one_value(other):
    """A layer over one value whose neurons include a bare product ``w*x``
    (no bias, no sum node): not (wholly) a layer, and the same bits as eager."""
    rnd = random.Random(5)
    layer = [([Value(rnd.uniform(-1, 1))], Value(0.5)) for _ in range(3)]
    forms = [s_bias_first, other, s_loop_no_bias]
    params = [p for f, (w, b) in zip(forms, layer) for p in w + ([b] if FORMS[f][2] else [])]

    def fn(x):
        zs = [f(w, b, list(x)).relu() for f, (w, b) in zip(forms, layer)]
        return [zs[0] + zs[1] + zs[2]]

    prog = fastgrad.compile(fn, 1, params=params)
    X = np.array([[0.0], [-0.0], [1.5], [-2.0]])
    e_out, e_loss, e_pg, e_gin = eager_batch(fn, params, X)
    outs, loss, pg, gin = replay_batch(prog, X)
    assert outs.tobytes() == e_out.tobytes()
    close(pg, e_pg)
    close(gin, e_gin)
