"""One-row replays (issue 20): ``value_and_grad``, ``forward`` and a batch of
one row run the tape in scalar C on one column (_replay_row.pxi) instead of
the batched kernels on a padded block.

Oracles: the batched kernels on the same row (``_replay._set_row_path(False)``
sends a one-row call there), and the eager engine (forward values and
gradients of the same graph, built with Values).  "The same" is the same bits
(``tobytes()``: -0.0 is not 0.0), on every ISA of ``_supported_isas()``.
"""
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value, maximum
from fastgrad.compiled import compile_graph
from fastgrad.nn import MLP
from _interrupt import interrupt_inside, needs_timer_signal  # noqa: E402
from _op_tables import SAFE_BINARY, SAFE_UNARY  # noqa: E402

pytestmark = pytest.mark.compiled_only("compiled graph replay (fastgrad._replay)")

_replay = pytest.importorskip("fastgrad._replay")
ISAS = _replay._supported_isas()


def bits(x):
    return np.asarray(x, np.float64).tobytes()


@pytest.fixture
def isa_restore():
    old = _replay._isa()
    yield
    _replay._set_isa(old)


@pytest.fixture
def row_path_restore():
    old = _replay._set_row_path(True)
    yield
    _replay._set_row_path(old)


# ---------------------------------------------------------------------------
# random graphs over every op of _rules.pxd
# ---------------------------------------------------------------------------
# Wrapped so that eager never raises for a finite operand (eager checks
# domains, the replay does not).  The *_GRAD ops come from a
# create_graph=True gradient of relu / abs / max.

def _grad_of(fn, a, b):
    (g,) = fastgrad.grad(fn(a, b), a, create_graph=True)
    return g


UNARY = {
    **SAFE_UNARY,
    "log1p": lambda a: (a * a).log1p(),
    "softplus": lambda a: a.softplus(),
}
BINARY = {
    **SAFE_BINARY,
    "relu_grad": lambda a, b: _grad_of(lambda u, v: (u * v).relu(), a, b),
    "sign_grad": lambda a, b: _grad_of(lambda u, v: abs(u - v), a, b),
    "tie_grad": lambda a, b: _grad_of(lambda u, v: maximum(u, v), a, b),
}
NARY = {
    "sum": lambda xs: fastgrad.sum(xs),
    "logsumexp": lambda xs: fastgrad.logsumexp(xs),
    "softmax": lambda xs: fastgrad.softmax(xs)[-1],
}
OPS = sorted(UNARY) + sorted(BINARY) + sorted(NARY)
# kinks (relu at 0, ties, -0.0) and plain floats
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5]


def recipe(seed, n_steps=None):
    """A random graph: (n_inputs, n_params, constants, steps)."""
    rng = random.Random(seed)
    n_in = rng.randint(1, 4)
    n_par = rng.randint(0, 3)
    consts = [rng.choice([-2.0, 0.0, -0.0, 0.75, 3.0]) for _ in range(rng.randint(0, 2))]
    n_leaves = n_in + n_par + len(consts)
    steps = []
    for k in range(n_steps or rng.randint(1, 16)):
        op = OPS[(seed + k) % len(OPS)] if k < 2 else rng.choice(OPS)
        args = [rng.randrange(n_leaves + k) for _ in range(rng.randint(1, 5))]
        steps.append((op, args))
    return n_in, n_par, consts, steps


def build(rec, inputs, params):
    """The graph's outputs on Values: [main output, a second one]."""
    n_in, n_par, consts, steps = rec
    nodes = list(inputs) + list(params) + [Value(c) for c in consts]
    for op, args in steps:
        xs = [nodes[i] for i in args]
        if op in UNARY:
            nodes.append(UNARY[op](xs[0]))
        elif op in BINARY:
            nodes.append(BINARY[op](xs[0], xs[-1]))
        else:
            nodes.append(NARY[op](xs))
    out = nodes[-1] + nodes[len(nodes) // 2] * 0.5
    # every input and parameter in the graph (the compiler warns otherwise)
    for v in nodes[:n_in + n_par]:
        out = out + v * 0.125
    return [out, nodes[-1] * nodes[0]]


def draw_row(rng, n):
    return np.array([rng.choice(SPECIAL) if rng.random() < 0.3 else rng.uniform(-3, 3)
                     for _ in range(n)])


def compile_recipe(rec, params):
    return fastgrad.compile(lambda xs: build(rec, xs, params), rec[0], params=params)


def one_row_results(prog, params, x):
    """Everything a one-row call gives: value_and_grad (value, input and
    parameter gradients, .grad), forward of both outputs, and a batch of the
    row (loss, outputs, input and parameter gradients, sum and mean)."""
    res = []
    for p in params:
        p.grad = 0.0
    pg = np.empty(len(params))
    val, dx = prog.value_and_grad(x, param_grad=pg)
    res += [("value", val), ("dx", dx), ("pg", pg), (".grad", [p.grad for p in params])]
    res.append(("forward", prog.forward(x)))
    res.append(("forward-list", prog.forward(list(x))))
    for reduce in ("sum", "mean"):
        outs = np.empty((1, prog.n_outputs))
        gin = np.empty((1, prog.n_inputs))
        pg2 = np.empty(len(params))
        loss = prog.batch(x.reshape(1, -1), reduce=reduce, outputs=outs, input_grad=gin,
                          param_grad=pg2, accumulate=False)
        res += [(f"batch {reduce}", loss), ("outputs", outs), ("input_grad", gin),
                ("param_grad", pg2)]
    res.append(("predict", prog.predict(x.reshape(1, -1))))
    return res


def assert_same(a, b, what):
    assert len(a) == len(b)
    for (name, u), (_, v) in zip(a, b):
        assert bits(u) == bits(v), f"{what}: {name} {u!r} != {v!r}"


@pytest.mark.parametrize("seed", range(60))
def test_random_graph_one_row_equals_batched_and_eager(seed, isa_restore,
                                                       row_path_restore):
    rec = recipe(seed)
    rng = random.Random(1000 + seed)
    params = [Value(rng.uniform(-2, 2)) for _ in range(rec[1])]
    prog = compile_recipe(rec, params)
    rows = [draw_row(rng, rec[0]) for _ in range(3)]
    for x in rows:
        # eager: the same graph on Values
        xs = [Value(float(v)) for v in x]
        for p in params:
            p.grad = 0.0
        out = build(rec, xs, params)
        out[0].backward()
        eager_dx = [v.grad for v in xs]
        eager_pg = [p.grad for p in params]
        first = None
        for isa in ISAS:
            _replay._set_isa(isa)
            _replay._set_row_path(True)
            row = one_row_results(prog, params, x)
            _replay._set_row_path(False)
            batched = one_row_results(prog, params, x)
            assert_same(row, batched, f"seed {seed} {isa}: one row vs batched")
            if first is None:
                first = row
            assert_same(row, first, f"seed {seed} {isa} vs {ISAS[0]}")
        got = dict(first)
        # eager: forward values bit for bit; the loss is 0.0 + output 0 (a
        # sum over the rows, as eager's sum() of the losses)
        assert bits(got["forward"]) == bits([o.data for o in out])
        assert bits(got["value"]) == bits(0.0 + out[0].data)
        assert bits(got["dx"]) == bits(eager_dx), (got["dx"], eager_dx)
        assert bits(got["pg"]) == bits(eager_pg), (got["pg"], eager_pg)


@pytest.mark.parametrize("seed", range(8))
def test_long_random_graph_one_row(seed, row_path_restore):
    # more instructions than the short graphs: shared operands, long n-ary runs
    rec = recipe(500 + seed, n_steps=120)
    rng = random.Random(seed)
    params = [Value(rng.uniform(-1, 1)) for _ in range(rec[1])]
    prog = compile_recipe(rec, params)
    x = draw_row(rng, rec[0])
    _replay._set_row_path(True)
    row = one_row_results(prog, params, x)
    _replay._set_row_path(False)
    assert_same(row, one_row_results(prog, params, x), f"seed {seed}")


def test_signed_zeros_and_non_finite_values(row_path_restore):
    # -0.0 outputs and gradients, inf and nan through the row
    w = Value(-0.0)
    prog = fastgrad.compile(
        lambda x: [x[0] * w, (x[1] * x[1]).log(), x[2].relu() + x[0].exp()], 3,
        params=[w])
    for x in ([-0.0, 0.0, -0.0], [1.0, 0.0, float("nan")], [float("inf"), -1.0, 0.0],
              [-710.0, 1e-300, -1e-300]):
        x = np.array(x)
        _replay._set_row_path(True)
        row = one_row_results(prog, [w], x)
        _replay._set_row_path(False)
        assert_same(row, one_row_results(prog, [w], x), f"x = {x}")
    _replay._set_row_path(True)
    assert bits(prog.forward(np.array([-0.0, 1.0, 1.0]))[0]) == bits(-0.0 * -0.0)
    assert bits(prog.forward(np.array([1.0, 1.0, 1.0]))[0]) == bits(-0.0)


def test_penalty_and_sgd_step_one_row(row_path_restore):
    ws = [Value(0.5), Value(-1.25)]

    def run(on):
        _replay._set_row_path(on)
        for w, v in zip(ws, (0.5, -1.25)):
            w.data, w.grad = v, 0.0
        prog = fastgrad.compile(lambda x: (x[0] * ws[0] + x[1]).tanh() * ws[1], 2,
                                params=ws, penalty=lambda ps: 0.5 * (ps[0] * ps[0]))
        X = np.array([[0.3, -0.7]])
        losses = [prog.sgd_step(X, 0.1) for _ in range(3)]
        losses.append(prog.batch(X, reduce="mean"))
        return losses + [w.data for w in ws] + [w.grad for w in ws]
    assert bits(run(True)) == bits(run(False))


@pytest.mark.parametrize("style", ["primitives", "composed"])
def test_irregular_graph_one_row_equals_batched(style, isa_restore, row_path_restore):
    # the benchmark's graph (softplus, sums, products, softmaxes; composed:
    # exp/log/max/sub/div): rows one after another through the same buffers
    irregular = pytest.importorskip("fastgrad.bench.irregular")
    prog, _ = irregular.compile_program(60, style)
    X = irregular.rows(3, seed=5)
    X[1, :7] = [0.0, -0.0, 40.0, -40.0, 1e-300, -750.0, 710.0]
    first = None
    for isa in ISAS:
        _replay._set_isa(isa)
        got = []
        for on in (True, False):
            _replay._set_row_path(on)
            got.append([r for x in X for r in one_row_results(prog, [], x)])
        assert_same(got[0], got[1], f"{style} {isa}: one row vs batched")
        first = first or got[0]
        assert_same(got[0], first, f"{style} {isa} vs {ISAS[0]}")


def test_one_row_plans_share_the_gradient_buffer(row_path_restore):
    # calls with and without input gradients and with the penalty (sgd_step):
    # different backward plans (an input skipped by one takes gradients in
    # the other), interleaved on one program: each call as on the batched
    # kernels
    w = Value(0.75)
    X = np.array([[0.5, -2.0], [-0.0, 3.0], [1.5, 0.25]])

    def run(on):
        _replay._set_row_path(on)
        w.data, w.grad = 0.75, 0.0
        prog = fastgrad.compile(
            lambda x: (x[0] * w).softplus() + fastgrad.sum([x[1], x[0] * x[1], w]),
            2, params=[w], penalty=lambda ps: ps[0] * ps[0])
        out = []
        for x in X:
            out += [*prog.value_and_grad(x, accumulate=False)[1], w.grad]
            out += [prog.batch(x.reshape(1, -1), accumulate=False), w.grad]
            out += [prog.sgd_step(x.reshape(1, -1), 0.01), w.data, w.grad]
            gin = np.empty((1, 2))
            out += [prog.batch(x.reshape(1, -1), input_grad=gin, accumulate=False),
                    *gin[0], w.grad, prog.forward(x)]
        return out
    assert bits(run(True)) == bits(run(False))


# ---------------------------------------------------------------------------
# programs with dense layers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [True, False])
def test_mlp_one_row_with_and_without_layers(layers, isa_restore, row_path_restore):
    # with layers: gradients on the batched path, forward here; without:
    # all of it here.  Either way the same bits as the batched kernels.
    random.seed(3)
    model = MLP(3, [6, 5, 1])
    params = model.parameters()
    old = _replay._set_layers(layers)
    try:
        prog = fastgrad.compile(lambda x: model(x), 3, params=params)
    finally:
        _replay._set_layers(old)
    assert (prog.n_layers > 0) == layers
    x = np.array([0.25, -1.5, 0.0])
    first = None
    for isa in ISAS:
        _replay._set_isa(isa)
        _replay._set_row_path(True)
        row = one_row_results(prog, params, x)
        _replay._set_row_path(False)
        assert_same(row, one_row_results(prog, params, x), f"{isa}")
        first = first or row
        assert_same(row, first, f"{isa} vs {ISAS[0]}")
    # eager: forward bit for bit
    out = model([Value(v) for v in x])
    assert bits(dict(first)["forward"]) == bits(out.data)


# ---------------------------------------------------------------------------
# arguments, errors, interrupts
# ---------------------------------------------------------------------------

def test_one_row_arguments_and_errors(row_path_restore):
    w = Value(2.0)
    prog = fastgrad.compile(lambda x: [x[0] * w + x[1], x[1]], 2, params=[w])
    ref = prog.forward(np.array([3.0, 4.0]))
    # other dtypes, layouts and sequences: converted, the same result
    for x in ([3.0, 4.0], (3, 4), np.array([3, 4], np.int32),
              np.array([3.0, 4.0], np.float32), np.array([3.0, 9.0, 4.0])[::2],
              np.array([3.0, 4.0]).astype(">f8")):
        assert bits(prog.forward(x)) == bits(ref)
        val, dx = prog.value_and_grad(x, accumulate=False)
        assert val == 10.0 and bits(dx) == bits([2.0, 1.0]) and w.grad == 3.0
    val, dx = prog.value_and_grad(np.array([3.0, 4.0]))
    assert dx.shape == (2,) and dx.dtype == np.float64 and w.grad == 6.0
    x = np.array([3.0, 4.0])
    x.flags.writeable = False
    assert prog.value_and_grad(x, accumulate=False)[0] == 10.0
    with pytest.raises(ValueError, match="expected one input vector of length 2"):
        prog.value_and_grad(np.zeros(3))
    with pytest.raises(ValueError, match="expected one input vector of length 2"):
        prog.forward(np.zeros((1, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        prog.value_and_grad(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="param_grad"):
        prog.value_and_grad(np.zeros(2), param_grad=np.zeros(3))
    # no inputs, or no parameters
    prog0 = compile_graph([w * w], inputs=[], params=[w])
    val, dx = prog0.value_and_grad(np.zeros(0), accumulate=False)
    assert val == 4.0 and dx.shape == (0,) and w.grad == 4.0
    assert prog0.forward(np.zeros(0)) == 4.0


def test_one_row_signal_checks_do_not_change_results(row_path_restore):
    rec = recipe(7, n_steps=60)
    rng = random.Random(7)
    params = [Value(rng.uniform(-1, 1)) for _ in range(rec[1])]
    prog = compile_recipe(rec, params)
    x = draw_row(rng, rec[0])
    ref = one_row_results(prog, params, x)
    old = _replay._set_signal_work(1)         # a check after every instruction
    try:
        got = one_row_results(prog, params, x)
    finally:
        _replay._set_signal_work(old)
    assert_same(got, ref, "signal checks")


@needs_timer_signal
def test_one_row_ctrl_c_leaves_the_parameters(row_path_restore):
    # a long tape: 120,000 logsumexps of 8 terms, ~30 ms for one row (the
    # timer signal needs a call of a few scheduler ticks)
    w = Value(0.5)

    def f(x):
        nodes = [x[0] * w, x[1] * w, x[0], x[1]]
        for _ in range(120_000):
            nodes.append(fastgrad.logsumexp(nodes[-8:]))
        return nodes[-1]
    prog = fastgrad.compile(f, 2, params=[w])
    x = np.array([0.3, -0.2])
    val, dx = prog.value_and_grad(x, accumulate=False)
    G = w.grad
    w.grad = 0.0
    old = _replay._set_signal_work(1 << 12)

    def check():
        # interrupted: nothing stored; finished: .grad set, .data unchanged
        assert w.data == 0.5 and w.grad in (0.0, G)
    try:
        interrupt_inside(lambda: prog.value_and_grad(x, accumulate=False), "_replay",
                         check=check)
    finally:
        _replay._set_signal_work(old)
    v2, dx2 = prog.value_and_grad(x, accumulate=False)
    assert bits([v2, *dx2]) == bits([val, *dx]) and w.grad == G
