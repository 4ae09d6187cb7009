"""Compiled graph replay (fastgrad.compiled) against the eager engine.

Oracles: the eager engine (a separate code path: Value operators + backward),
hand-derived values, and per-sample loops for the batch reductions.
"""
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value, maximum
from fastgrad.compiled import compile_graph, make_demo_step
from fastgrad.nn import MLP
from _op_tables import SAFE_BINARY, SAFE_UNARY

pytestmark = pytest.mark.compiled_only("compiled graph replay (fastgrad._replay)")

# ---------------------------------------------------------------------------
# random expression graphs
# ---------------------------------------------------------------------------
# Every op of the engine (tests/_op_tables.py).

UNARY = SAFE_UNARY
BINARY = SAFE_BINARY
OPS = sorted(UNARY) + sorted(BINARY)


@st.composite
def recipes(draw):
    n_in = draw(st.integers(1, 3))
    n_par = draw(st.integers(0, 3))
    n_const = draw(st.integers(0, 2))
    n_leaves = n_in + n_par + n_const
    steps = []
    for k in range(draw(st.integers(1, 14))):
        n_avail = n_leaves + k
        op = draw(st.sampled_from(OPS))
        # operands: any earlier node (shared subexpressions, a op a)
        i = draw(st.integers(0, n_avail - 1))
        j = draw(st.integers(0, n_avail - 1))
        steps.append((op, i, j))
    # the output combines the last node with one more earlier node
    last = draw(st.integers(0, n_leaves + len(steps) - 1))
    consts = draw(st.lists(st.sampled_from([-2.0, 0.0, 0.75, 3.0]),
                           min_size=n_const, max_size=n_const))
    return n_in, n_par, consts, steps, last


# input values: a few exact kink points (relu at 0, max/min ties) and floats
values = st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0]),
                   st.floats(-3.0, 3.0, allow_nan=False))


def run_recipe(recipe, inputs, params):
    n_in, n_par, consts, steps, last = recipe
    nodes = list(inputs) + list(params) + [Value(c) for c in consts]
    n_leaves = len(nodes)
    for op, i, j in steps:
        if op in UNARY:
            nodes.append(UNARY[op](nodes[i]))
        else:
            nodes.append(BINARY[op](nodes[i], nodes[j]))
    out = nodes[-1] + nodes[last] * 0.5
    used = {last, len(nodes) - 1}            # what the output reaches
    for k in range(len(steps) - 1, -1, -1):
        if n_leaves + k in used:
            op, i, j = steps[k]
            used.add(i)
            if op in BINARY:
                used.add(j)
    # every input and parameter must be in the graph: add the unused ones
    for k in range(n_in + n_par):
        if k not in used:
            out = out + nodes[k] * 0.125
    return out


def eager_value_and_grads(recipe, x, params):
    for p in params:
        p.grad = 0.0
    inputs = [Value(v) for v in x]
    out = run_recipe(recipe, inputs, params)
    out.backward()
    return out.data, [v.grad for v in inputs], [p.grad for p in params]


def close(a, b):
    """Equal to 1e-12 relative (scaled by the largest magnitude), nan == nan."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    finite = np.isfinite(a) & np.isfinite(b)
    scale = max(1.0, float(np.max(np.abs(a[finite]), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale)


@pytest.fixture(params=["layers", "fused", "unfused"])
def fusion(request):
    """Record with dense layers (the default), with fused mul-add
    instructions but no layers, and with neither."""
    from fastgrad import _replay
    old = _replay._set_fusion(request.param != "unfused")
    old_layers = _replay._set_layers(request.param == "layers")
    yield request.param
    _replay._set_fusion(old)
    _replay._set_layers(old_layers)


def penalty_of(params):
    # a parameter-only term sharing the parameters with the per-sample graph
    return 0.25 * sum(p * p for p in params) + params[0].tanh()


def maybe_compile(recipe, params, penalty=None):
    return fastgrad.compile(lambda xs: run_recipe(recipe, xs, params),
                            recipe[0], params=params, penalty=penalty)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
@given(recipe=recipes(), data=st.data())
def test_random_graph_replay_equals_eager(fusion, recipe, data):
    n_in, n_par = recipe[0], recipe[1]
    params = [Value(data.draw(values)) for _ in range(n_par)]
    prog = maybe_compile(recipe, params)
    for _ in range(3):
        x = [data.draw(values) for _ in range(n_in)]
        val, gin, gpar = eager_value_and_grads(recipe, x, params)
        # forward: the same operations in the same order -> identical
        got = prog.forward(x)
        assert got == val or (math.isnan(got) and math.isnan(val))
        for p in params:
            p.grad = 0.0
        pg = np.empty(n_par)
        v2, dx = prog.value_and_grad(x, param_grad=pg)
        assert v2 == val or (math.isnan(v2) and math.isnan(val))
        close(dx, gin)
        close(pg, gpar)
        close([p.grad for p in params], gpar)
        # parameter updates between replays are seen
        for p in params:
            p.data = data.draw(values)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
@given(recipe=recipes(), data=st.data(), reduce=st.sampled_from(["sum", "mean"]))
def test_random_graph_batch_equals_eager_batch(fusion, recipe, data, reduce):
    n_in, n_par = recipe[0], recipe[1]
    params = [Value(data.draw(values)) for _ in range(n_par)]
    with_pen = n_par > 0 and data.draw(st.booleans())
    prog = maybe_compile(recipe, params, penalty_of if with_pen else None)
    B = data.draw(st.integers(1, 9))
    X = np.array([[data.draw(values) for _ in range(n_in)] for _ in range(B)])
    # eager: one graph over the whole batch
    for p in params:
        p.grad = 0.0
    rows = [[Value(v) for v in X[r]] for r in range(B)]
    outs = [run_recipe(recipe, row, params) for row in rows]
    total = sum(outs)
    if reduce == "mean":
        total = total * (1.0 / B)
    if with_pen:
        total = total + penalty_of(params)
    total.backward()
    eager_pg = [p.grad for p in params]
    eager_gin = np.array([[v.grad for v in row] for row in rows])
    for p in params:
        p.grad = 0.0
    pg = np.empty(n_par)
    gin = np.empty((B, n_in))
    outv = np.empty((B, 1))
    loss = prog.batch(X, reduce=reduce, param_grad=pg, input_grad=gin, outputs=outv)
    # row-order sum, then * (1/B): the same float operations as eager
    assert loss == total.data or (math.isnan(loss) and math.isnan(total.data))
    np.testing.assert_array_equal(outv[:, 0], [o.data for o in outs])
    close(pg, eager_pg)
    close(gin, eager_gin)
    # forward-only scoring (its own tape) equals eager and the per-sample replay
    np.testing.assert_array_equal(prog.predict(X), [o.data for o in outs])
    np.testing.assert_array_equal(prog.predict(X), [prog.forward(r) for r in X])


# ---------------------------------------------------------------------------
# hand-derived cases
# ---------------------------------------------------------------------------

def test_lecture_gate_example_compiled():
    # f = 2(xy + max(z, w)); at [3, -4, 2, -1]: f = -20, grads [-8, 6, 2, 0]
    z, w = Value(2.0), Value(-1.0)
    prog = fastgrad.compile(lambda v: 2 * (v[0] * v[1] + maximum(z, w)), 2,
                            params=[z, w])
    val, dx = prog.value_and_grad([3.0, -4.0])
    assert val == -20.0
    assert dx.tolist() == [-8.0, 6.0]
    assert (z.grad, w.grad) == (2.0, 0.0)
    # a second replay accumulates into .grad, as backward() does
    prog.value_and_grad([1.0, 1.0])
    assert (z.grad, w.grad) == (4.0, 0.0)
    # relu/max branches are re-evaluated at every replay (not frozen)
    w.data = 5.0
    assert prog.forward([0.0, 0.0]) == 10.0
    prog.value_and_grad([0.0, 0.0], accumulate=False)
    assert (z.grad, w.grad) == (0.0, 2.0)


@pytest.mark.parametrize("order", ["consecutive", "reversed", "interleaved", "p*q"])
def test_penalty_gradients_hand_derived(order):
    # d/dp of alpha * sum(p * p) is (0 + alpha*p) + alpha*p = 2 * (alpha*p)
    # exactly (doubling is exact), whichever order the terms come in: the
    # consecutive slots take the replay's gather-free backward, the others
    # the general one
    alpha = 0.37
    rng = np.random.default_rng(12)
    ps = [Value(float(v)) for v in rng.normal(size=11)]
    terms = {"consecutive": ps, "reversed": ps[::-1],
             "interleaved": ps[::2] + ps[1::2], "p*q": ps}[order]

    def pen(_):
        if order == "p*q":          # not squares: p0*p1 + p1*p2 + ...
            return alpha * sum(a * b for a, b in zip(terms, terms[1:]))
        return alpha * sum(p * p for p in terms)

    prog = fastgrad.compile(lambda x: [x[0] * ps[0]], 1, params=ps, penalty=pen)
    pg = np.empty(len(ps))
    prog.batch(np.array([[0.0]]), param_grad=pg)
    if order == "p*q":
        v = [p.data for p in ps]
        expected = [(alpha * v[1] if i == 0 else
                     alpha * v[i - 1] + alpha * v[i + 1] if i < len(v) - 1 else
                     alpha * v[i - 1]) for i in range(len(v))]
        np.testing.assert_allclose(pg, expected, rtol=1e-15, atol=0)
    else:
        assert pg.tolist() == [2 * (alpha * p.data) for p in ps]


def test_batch_with_penalty_hand_derived():
    # loss = mean_i (w*x_i - y_i)^2 + 0.5*w^2 ; dL/dw = mean 2(w x - y) x + w
    w = Value(2.0)
    prog = fastgrad.compile(lambda v: (v[0] * w - v[1]) ** 2, 2, params=[w],
                            penalty=lambda ps: 0.5 * ps[0] * ps[0])
    X = np.array([1.0, 2.0, -1.0])
    y = np.array([1.0, 3.0, 0.0])
    loss = prog.batch((X, y), reduce="mean", accumulate=False)
    r = 2.0 * X - y                      # residuals 1, 1, -2
    assert loss == pytest.approx(np.mean(r ** 2) + 0.5 * 4.0, rel=1e-15)
    assert w.grad == pytest.approx(np.mean(2 * r * X) + 2.0, rel=1e-15)
    # sum reduction: the penalty is still added once
    loss = prog.batch((X, y), reduce="sum", accumulate=False)
    assert loss == pytest.approx(np.sum(r ** 2) + 2.0, rel=1e-15)
    assert w.grad == pytest.approx(np.sum(2 * r * X) + 2.0, rel=1e-15)
    # forward / value_and_grad / predict never include the penalty
    assert prog.forward([1.0, 1.0]) == 1.0
    assert prog.predict((X, y)).tolist() == (r ** 2).tolist()
    # sgd_step: grad set, then p.data -= lr * grad
    g = np.mean(2 * r * X) + 2.0
    prog.sgd_step((X, y), 0.1)
    assert w.grad == pytest.approx(g, rel=1e-15)
    assert w.data == pytest.approx(2.0 - 0.1 * g, rel=1e-15)


def test_multiple_outputs_and_unreached_input():
    a = Value(3.0)
    prog = fastgrad.compile(lambda v: [v[0] * a, v[1] + a], 2, params=[a])
    assert prog.n_outputs == 2
    assert prog.forward([2.0, 5.0]).tolist() == [6.0, 8.0]
    val, dx = prog.value_and_grad([2.0, 5.0], accumulate=False)
    # only output 0 is differentiated: input 1 does not reach it
    assert val == 6.0 and dx.tolist() == [3.0, 0.0] and a.grad == 2.0
    out = np.empty((2, 2))
    loss = prog.batch(np.array([[1.0, 1.0], [2.0, 2.0]]), reduce="sum",
                      outputs=out, accumulate=False)
    assert loss == 9.0 and a.grad == 3.0
    assert out.tolist() == [[3.0, 4.0], [6.0, 5.0]]


def test_output_without_inputs_and_input_as_output():
    p = Value(1.5)
    # an output that depends on parameters only is the same for every row
    prog = compile_graph([p * p, Value(7.0) * 1.0], inputs=[], params=[p])
    assert prog.forward([]).tolist() == [2.25, 7.0]
    v, dx = prog.value_and_grad([], accumulate=False)
    assert v == 2.25 and dx.shape == (0,) and p.grad == 3.0
    x = Value(0.0)
    prog = compile_graph([x, x * p], inputs=[x], params=[p])
    v, dx = prog.value_and_grad([4.0])
    assert v == 4.0 and dx.tolist() == [1.0]


def test_compile_existing_eager_graph():
    random.seed(3)
    model = MLP(2, [4, 1])
    xs = [Value(0.3), Value(-0.7)]
    out = (model(xs) * 2 - 1).tanh()
    prog = compile_graph(out, inputs=xs, params=model.parameters())
    model.zero_grad()
    out.backward()
    eager = [p.grad for p in model.parameters()]
    model.zero_grad()
    v, dx = prog.value_and_grad([0.3, -0.7])
    assert v == out.data
    assert dx.tolist() == [xs[0].grad, xs[1].grad]
    assert [p.grad for p in model.parameters()] == eager


def test_chunked_large_batch_matches_rows(fusion):
    random.seed(5)
    model = MLP(2, [8, 8, 1])
    prog = fastgrad.compile(lambda v: model(v), 2, params=model.parameters())
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(10_000, 2))
    scores = prog.predict(X)
    idx = rng.integers(0, len(X), 50)
    # the forward-only tape (dot chains, reused rows) gives eager's floats
    assert [scores[i] for i in idx] == [model(list(X[i])).data for i in idx]
    assert [scores[i] for i in idx] == [prog.forward(X[i]) for i in idx]
    out = np.empty(len(X))
    assert prog.predict(X, out=out) is out
    np.testing.assert_array_equal(out, scores)
    # batch over many chunks == sum over rows in order
    loss = prog.batch(X, reduce="sum", grad=True, accumulate=False)
    assert loss == math.fsum(scores) or loss == pytest.approx(math.fsum(scores),
                                                              rel=1e-12)
    s = 0.0
    for v in scores:
        s += v
    assert loss == s


@pytest.mark.parametrize("B", [1, 15, 16, 17, 33, 100])
def test_forward_only_dot_chains_match_eager(B):
    # neurons (scalar bias + w.x chains), a chain that starts from an input
    # (batched start), a chain shared by two readers, relu and a linear head
    random.seed(7)
    model = MLP(3, [5, 4, 1])
    w = [Value(random.uniform(-1, 1)) for _ in range(3)]

    def fn(v):
        chain = v[0] + w[0] * v[1] + w[1] * v[2] + w[2] * v[0]
        score = model(v)
        return [score, chain, chain * score, (chain + w[0] * score).relu()]

    prog = fastgrad.compile(fn, 3, params=model.parameters() + w)
    rng = np.random.default_rng(B)
    X = rng.uniform(-2, 2, size=(B, 3))
    X[0, 1] = 0.0                         # a kink-adjacent value
    got = prog.predict(X)
    want = [[o.data for o in fn([Value(a) for a in row])] for row in X]
    np.testing.assert_array_equal(got, want)
    # and the training tape agrees on the same rows
    out = np.empty((B, 4))
    prog.batch(X, grad=True, outputs=out)
    np.testing.assert_array_equal(out, want)


def test_non_finite_inputs_propagate():
    w = Value(2.0)
    prog = fastgrad.compile(lambda v: (v[0] * w).relu() + v[0] / v[1], 2,
                            params=[w])
    assert prog.forward([math.inf, 1.0]) == math.inf
    assert math.isnan(prog.forward([math.nan, 1.0]))
    # division by zero: IEEE, where eager mode raises
    assert prog.forward([1.0, 0.0]) == math.inf
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / Value(0.0)
    v, dx = prog.value_and_grad([math.nan, 1.0])
    # as eager: relu passes nan on but gives it no gradient (nan > 0 is False)
    xs = [Value(math.nan), Value(1.0)]
    e = (xs[0] * w).relu() + xs[0] / xs[1]
    e.backward()
    assert math.isnan(v) and math.isnan(e.data)
    assert dx[0] == xs[0].grad == 1.0 and math.isnan(dx[1]) and math.isnan(xs[1].grad)
    out = prog.predict(np.array([[1.0, 0.0], [-math.inf, 1.0], [1.0, 2.0]]))
    assert out[0] == math.inf and out[1] == -math.inf and out[2] == 2.5


def test_input_dtypes_and_layouts_are_converted():
    w = Value(3.0)
    prog = fastgrad.compile(lambda v: v[0] * w + v[1], 2, params=[w])
    Xf = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ref = prog.predict(Xf).tolist()
    assert ref == [5.0, 13.0, 21.0]
    assert prog.predict(Xf.astype(np.int64)).tolist() == ref
    assert prog.predict(np.asfortranarray(Xf)).tolist() == ref
    assert prog.predict(Xf.astype(np.float32)).tolist() == ref
    assert prog.predict(Xf.tolist()).tolist() == ref
    assert prog.predict((Xf[:, 0], Xf[:, 1])).tolist() == ref
    assert prog.predict((Xf[:, :1], Xf[:, 1])).tolist() == ref
    assert prog.forward(np.array([1, 2])) == 5.0
    # read-only arrays are fine (nothing is written to the input)
    ro = Xf.copy()
    ro.setflags(write=False)
    assert prog.predict(ro).tolist() == ref
    assert prog.batch(ro, reduce="sum") == sum(ref)
    assert prog.eval_params(ro[0, :1], ro[0]) == 3.0
    # the input is not modified
    assert Xf.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_eval_params_does_not_touch_values():
    w, b = Value(2.0), Value(1.0)
    prog = fastgrad.compile(lambda v: v[0] * w + b, 1, params=[w, b])
    assert prog.eval_params([5.0, -1.0], [3.0]) == 14.0
    assert (w.data, b.data, w.grad, b.grad) == (2.0, 1.0, 0.0, 0.0)
    assert prog.forward([3.0]) == 7.0
    assert prog.param_values().tolist() == [2.0, 1.0]


# ---------------------------------------------------------------------------
# micrograd's demo, 100 steps: compiled path == eager path
# ---------------------------------------------------------------------------

def _moons():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.make_moons(n_samples=100, noise=0.1, random_state=1)
    return X, y * 2 - 1


def test_demo_training_compiled_matches_eager():
    X, y = _moons()
    steps = 100

    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    eager = []
    for k in range(steps):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        acc = [(yi > 0) == (si.data > 0) for yi, si in zip(y, scores)]
        model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= lr * p.grad
        eager.append((total.data, sum(acc) / len(acc)))

    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    step = make_demo_step(model, alpha=1e-4)
    compiled = [step(X, y, 1.0 - 0.9 * k / 100) for k in range(steps)]

    el = np.array([e[0] for e in eager])
    cl = np.array([c[0] for c in compiled])
    np.testing.assert_allclose(cl, el, rtol=1e-9, atol=0)
    assert cl[0] == el[0]                  # same parameters, same float ops
    assert [c[1] for c in compiled] == [e[1] for e in eager]
    assert cl[-1] < 0.05                   # and it did learn


def _demo_pair(seed=5):
    random.seed(seed)
    model = MLP(2, [6, 5, 1])
    return model, make_demo_step(model, alpha=1e-3)


def _demo_data(B=23):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(B, 2))
    y = np.where(rng.random(B) < 0.5, -1.0, 1.0)
    return X, y


def test_demo_step_accuracy_against_the_scores():
    # oracle: the scores from predict() (the same program, forward only)
    # before the step, and NumPy's mean of the sign agreements
    model, step = _demo_pair()
    X, y = _demo_data()
    X[3] = 0.0                                # a score exactly at the bias
    scores = step.program.predict((X, y))[:, 1]
    expected = float(np.mean((y > 0) == (scores > 0)))
    loss, acc = step(X, y, 0.1)
    assert acc == expected
    assert 0.0 < acc < 1.0                    # both outcomes occur
    assert isinstance(loss, float) and isinstance(acc, float)


@pytest.mark.parametrize("variant", ["float32", "fortran", "lists", "y column",
                                     "X strided", "big-endian", "int labels"])
def test_demo_step_converts_other_inputs_like_float64_arrays(variant):
    X, y = _demo_data()
    if variant == "float32":
        X, y = X.astype(np.float32), y.astype(np.float32)
    Xc, yc = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if variant == "fortran":
        X = np.asfortranarray(X)
    elif variant == "lists":
        X, y = X.tolist(), y.tolist()
    elif variant == "y column":
        y = np.column_stack([X, y])[:, 2]     # not contiguous
    elif variant == "X strided":
        X = np.repeat(X, 2, axis=0)[::2]
    elif variant == "big-endian":
        X, y = X.astype(">f8"), y.astype(">f8")
    elif variant == "int labels":
        y = y.astype(np.int64)
    m1, s1 = _demo_pair()
    m2, s2 = _demo_pair()
    r1 = s1(Xc, yc, 0.25)
    r2 = s2(X, y, 0.25)
    assert r2 == r1
    assert [p.data for p in m2.parameters()] == [p.data for p in m1.parameters()]
    assert [p.grad for p in m2.parameters()] == [p.grad for p in m1.parameters()]


@pytest.mark.parametrize("X, y, exc, match", [
    (np.zeros((4, 3)), np.zeros(4), ValueError, "X of shape"),
    (np.zeros((4, 2)), np.zeros(5), ValueError, "X of shape"),
    (np.zeros((4, 2)), np.zeros((4, 1)), ValueError, "X of shape"),
    (np.zeros(8), np.zeros(4), ValueError, "X of shape"),
    (np.zeros((0, 2)), np.zeros(0), ValueError, "empty batch"),
    (np.zeros((4, 2), complex), np.zeros(4), TypeError, "real"),
    (np.zeros((4, 2)), np.array(["a"] * 4), TypeError, "real"),
])
def test_demo_step_rejects_bad_arrays(X, y, exc, match):
    model, step = _demo_pair()
    before = [p.data for p in model.parameters()]
    with pytest.raises(exc, match=match):
        step(X, y, 0.1)
    assert [p.data for p in model.parameters()] == before


@pytest.mark.parametrize("lr, exc", [(-0.1, ValueError), (float("nan"), ValueError),
                                     (float("inf"), ValueError), ("0.1", TypeError),
                                     (None, TypeError), (True, TypeError)])
def test_demo_step_rejects_bad_learning_rates(lr, exc):
    model, step = _demo_pair()
    X, y = _demo_data()
    with pytest.raises(exc, match="lr"):
        step(X, y, lr)


def test_demo_step_object_guards():
    from fastgrad._replay import _DemoStep
    model, step = _demo_pair()
    with pytest.raises(TypeError, match="pickled"):
        import pickle
        pickle.dumps(step)
    w = Value(1.0)
    with pytest.raises(ValueError, match="3 inputs"):
        _DemoStep(fastgrad.compile(lambda x: [x[0] * w], 1, params=[w]))
    with pytest.raises(TypeError):
        _DemoStep(None)
    with pytest.raises(TypeError):
        _DemoStep.__new__(_DemoStep)
    # the program is read-only and shared with the step
    with pytest.raises(AttributeError):
        step.program = None


def test_whole_eager_demo_graph_replays_bit_for_bit(fusion):
    # the demo's full-batch loss, recorded from the eager graph itself: the
    # tape follows eager's topological order, so values and gradients are
    # the same floats (fused or not); dense layers sum the gradients in
    # another order (tests/test_layers.py measures by how much)
    X, y = _moons()
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    total = (sum(losses) * (1.0 / len(losses))
             + 1e-4 * sum(p * p for p in model.parameters()))
    model.zero_grad()
    total.backward()
    eager = [p.grad for p in model.parameters()]
    flat = [v for row in inputs for v in row]
    prog = compile_graph(total, inputs=flat, params=model.parameters())
    model.zero_grad()
    val, dx = prog.value_and_grad(np.asarray(X).ravel())
    assert val == total.data
    if fusion == "layers":
        assert prog.n_layers == 3 * len(X)     # 3 per sample: 16x2, 16x16, 1x16
        close([p.grad for p in model.parameters()], eager)
        close(dx, [v.grad for v in flat])
        return
    assert [p.grad for p in model.parameters()] == eager
    assert dx.tolist() == [v.grad for v in flat]


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.fixture
def prog2():
    w = Value(2.0)
    return fastgrad.compile(lambda v: v[0] * w + v[1], 2, params=[w])


def test_bad_shapes_and_counts(prog2):
    with pytest.raises(ValueError,
                       match=r"expected one input vector of length 2, got shape \(3,\)"):
        prog2.forward([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="length 2"):
        prog2.value_and_grad([1.0])
    with pytest.raises(ValueError, match=r"expected 2 input columns .* got 3"):
        prog2.batch(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expected 2 input columns .* got 1"):
        prog2.predict(np.zeros(4))
    with pytest.raises(ValueError, match="different numbers of rows"):
        prog2.batch((np.zeros(4), np.zeros(5)))
    with pytest.raises(ValueError, match=r"2-D array .* got shape \(2, 2, 2\)"):
        prog2.predict(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="empty batch"):
        prog2.batch(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'sum', got 'max'"):
        prog2.batch(np.zeros((1, 2)), reduce="max")
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        prog2.batch(np.zeros((3, 2)), outputs=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        prog2.batch(np.zeros((3, 2)), param_grad=np.zeros(2))
    with pytest.raises(ValueError, match="eval_params: expected 1 parameter values, got 2"):
        prog2.eval_params([1.0, 2.0], [1.0, 1.0])


def test_bad_dtypes(prog2):
    with pytest.raises(TypeError, match="dtype complex128"):
        prog2.predict(np.zeros((2, 2), complex))
    with pytest.raises(TypeError, match="dtype <U"):
        prog2.batch([["a", "b"]])
    with pytest.raises(TypeError, match="dtype object"):
        prog2.forward([Value(1.0), 2.0])
    with pytest.raises(ValueError, match="param_grad must be .* float64"):
        prog2.batch(np.zeros((1, 2)), param_grad=np.zeros(1, np.float32))


def test_gradients_not_recorded(prog2):
    with pytest.raises(ValueError, match="param_grad given but grad=False"):
        prog2.batch(np.zeros((1, 2)), grad=False, param_grad=np.zeros(1))
    with pytest.raises(ValueError, match="input_grad given but grad=False"):
        prog2.batch(np.zeros((1, 2)), grad=False, input_grad=np.zeros((1, 2)))


def test_bad_graphs():
    x, w = Value(1.0), Value(2.0)
    y = x * w
    with pytest.raises(ValueError, match=r"parameter\(s\) \[1\] .* not in the graph"):
        compile_graph(y, inputs=[x], params=[w, Value(3.0)])
    with pytest.raises(ValueError, match=r"input\(s\) \[1\] are not in the graph"):
        compile_graph(y, inputs=[x, Value(0.0)], params=[w])
    # compile() of a fn that ignores an input accepts it (issue 20): see
    # test_micrograd_fidelity.py; compile_graph's explicit inputs must be used
    with pytest.raises(ValueError, match="input 0 .* is not a leaf"):
        compile_graph(y * 2, inputs=[y])
    with pytest.raises(ValueError, match="parameter 1 is the same Value as parameter 0"):
        compile_graph(y, inputs=[x], params=[w, w])
    with pytest.raises(ValueError, match="parameter 0 is also input 0"):
        compile_graph(y, inputs=[x], params=[x])
    with pytest.raises(TypeError, match="output 0 must be a fastgrad Value, got float"):
        compile_graph([1.0])
    with pytest.raises(TypeError, match="parameter 0 must be a fastgrad Value, got int"):
        compile_graph(y, inputs=[x], params=[3])
    with pytest.raises(ValueError, match="penalty depends on an input"):
        compile_graph(y, inputs=[x], params=[w], penalty=x * x)
    with pytest.raises(TypeError, match="must return a Value or a list of Values, got float"):
        fastgrad.compile(lambda v: 1.0, 1)
    with pytest.raises(ValueError, match="example has 1 values, expected n_inputs=2"):
        fastgrad.compile(lambda v: v[0] + v[1], 2, example=[1.0])
    with pytest.raises(TypeError, match="n_inputs must be an int, got float"):
        fastgrad.compile(lambda v: v[0], 1.0)


def test_tracing_under_no_grad_is_refused():
    w = Value(1.0)
    with fastgrad.no_grad():
        with pytest.raises(RuntimeError, match="recording is off"):
            fastgrad.compile(lambda v: v[0] * w, 1, params=[w])
    assert fastgrad.compile(lambda v: v[0] * w, 1, params=[w]).forward([2.0]) == 2.0


def test_hand_built_node_is_refused():
    a = Value(2.0)
    node = Value(4.0, (a,), "square")
    node._backward = lambda: None
    with pytest.raises(ValueError, match="hand-built node .* 'square'.* _backward"):
        compile_graph(node * 2, inputs=[], params=[a])
    # nothing half-built: the Values are untouched and usable
    assert (a.data, a.grad, node.data) == (2.0, 0.0, 4.0)


def test_program_is_not_constructible_or_picklable(prog2):
    import pickle
    with pytest.raises(TypeError, match="made by fastgrad.compile"):
        fastgrad.compiled.Program()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(prog2)


def test_node_with_user_backward_is_refused():
    # a user _backward replaces an operator node's rule in eager mode; the
    # replay only knows the rule, so compiling such a graph must be refused
    a, b = Value(1.0), Value(2.0)
    c = a * b
    c._backward = lambda: None
    with pytest.raises(ValueError, match="user _backward"):
        fastgrad.compiled.compile_graph(c + a, inputs=[a], params=[b])
