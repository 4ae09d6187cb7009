"""fastgrad.optim: SGD / Adam against independent oracles.

Oracles: a plain numpy implementation of the update formulas written here
(bitwise), torch.optim (float64, when installed; a few ulps, see
test_torch_parity_*), micrograd's hand-written update loop (bitwise), and
hand-derived values.
"""
import copy
import itertools
import math
import pickle
import random

import numpy as np
import pytest

from fastgrad import Value
from fastgrad.nn import MLP
from fastgrad.optim import SGD, Adam, lr_sweep

STEPS = 50
X0 = np.array([1.3, -0.7, 0.4, 2.1, -1.6, 0.05, -0.2])


def objective_grad(x):
    """Gradient of sum(log cosh x + x^4/40) + x0*x1/2 (non-quadratic, bounded below)."""
    g = np.tanh(x) + 0.1 * x ** 3
    g[0] += 0.5 * x[1]
    g[1] += 0.5 * x[0]
    return g


def grad_for(kw):
    # with maximize=True the optimizer ascends: feed it -grad so that the
    # trajectory still goes to the minimum of the objective (and stays bounded)
    sign = -1.0 if kw.get("maximize") else 1.0
    return lambda x: sign * objective_grad(x)


def lr_at(k, base):
    # a schedule, to exercise lr changes between steps
    return base * (1.0 - 0.5 * k / STEPS)


# ---------------------------------------------------------------------------
# plain numpy oracle (vectorised numpy: every operation rounded separately)
# ---------------------------------------------------------------------------

def numpy_sgd(x0, grad, steps, lr, momentum=0.0, dampening=0.0,
              weight_decay=0.0, nesterov=False, maximize=False):
    p = x0.copy()
    buf = None
    for k in range(steps):
        g = grad(p)
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            buf = g.copy() if buf is None else buf * momentum + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr_at(k, lr) * g
    return p


def numpy_adam(x0, grad, steps, lr, betas=(0.9, 0.999), eps=1e-8,
               weight_decay=0.0, amsgrad=False, maximize=False):
    b1, b2 = betas
    p = x0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for k in range(steps):
        t = k + 1
        g = grad(p)
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        w = 1 - b1                       # torch: exp_avg.lerp_(g, 1 - beta1)
        if abs(w) < 0.5:
            m = m + w * (g - m)
        else:
            m = g - (g - m) * (1 - w)
        v = v * b2 + (1 - b2) * g * g
        step_size = lr_at(k, lr) / (1 - b1 ** t)
        bc2_sqrt = (1 - b2 ** t) ** 0.5
        if amsgrad:
            vmax = np.maximum(vmax, v)
            denom = np.sqrt(vmax) / bc2_sqrt + eps
        else:
            denom = np.sqrt(v) / bc2_sqrt + eps
        p = p + -step_size * m / denom
    return p


# ---------------------------------------------------------------------------
# runners for the two fastgrad paths
# ---------------------------------------------------------------------------

def run_values(cls, kw, steps=STEPS, x0=X0, opt_out=None):
    kw = dict(kw)
    base = kw.pop("lr")
    grad = grad_for(kw)
    vals = [Value(float(a)) for a in x0]
    opt = cls(vals, lr=base, **kw)
    for k in range(steps):
        g = grad(np.array([v.data for v in vals]))
        for v, gi in zip(vals, g):
            v.grad = float(gi)
        opt.lr = lr_at(k, base)
        opt.step()
    if opt_out is not None:
        opt_out.append(opt)
    return np.array([v.data for v in vals])


def run_arrays(cls, kw, steps=STEPS, x0=X0, split=3):
    kw = dict(kw)
    base = kw.pop("lr")
    grad = grad_for(kw)
    # two arrays of different shapes, to exercise the offsets into the state
    a = x0[:split].copy()
    b = x0[split:].reshape(2, -1).copy()
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    opt = cls.from_arrays([a, b], [ga, gb], lr=base, **kw)
    for k in range(steps):
        g = grad(np.concatenate([a, b.ravel()]))
        ga[...] = g[:split]
        gb[...] = g[split:].reshape(b.shape)
        opt.lr = lr_at(k, base)
        opt.step()
    return np.concatenate([a, b.ravel()])


def sgd_options():
    for m, d, wd, nest, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 0.01],
                                                [False, True], [False, True]):
        if nest and (m == 0 or d != 0):
            continue
        yield dict(lr=0.05, momentum=m, dampening=d, weight_decay=wd,
                   nesterov=nest, maximize=mx)


def adam_options():
    # betas[0] = 0.3 takes the other branch of torch's lerp (weight >= 0.5)
    for betas, wd, ams, mx in itertools.product([(0.9, 0.999), (0.3, 0.5)], [0.0, 0.01],
                                                [False, True], [False, True]):
        yield dict(lr=0.05, betas=betas, eps=1e-8, weight_decay=wd, amsgrad=ams,
                   maximize=mx)


SGD_OPTS = list(sgd_options())
ADAM_OPTS = list(adam_options())


def ids(opts):
    return ["-".join(f"{k}={v}" for k, v in o.items() if k != "lr") for o in opts]


# ---------------------------------------------------------------------------
# parity with the numpy formulas (bitwise), both paths
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw", SGD_OPTS, ids=ids(SGD_OPTS))
def test_sgd_matches_numpy_formula_bitwise(kw):
    expected = numpy_sgd(X0, grad_for(kw), STEPS, **kw)
    got_values = run_values(SGD, kw)
    got_arrays = run_arrays(SGD, kw)
    assert np.all(np.isfinite(expected))
    assert np.abs(expected - X0).max() > 0.1       # it moved
    np.testing.assert_array_equal(got_values, expected)
    np.testing.assert_array_equal(got_arrays, expected)


@pytest.mark.parametrize("kw", ADAM_OPTS, ids=ids(ADAM_OPTS))
def test_adam_matches_numpy_formula_bitwise(kw):
    expected = numpy_adam(X0, grad_for(kw), STEPS, **kw)
    got_values = run_values(Adam, kw)
    got_arrays = run_arrays(Adam, kw)
    assert np.all(np.isfinite(expected))
    assert np.abs(expected - X0).max() > 0.1
    np.testing.assert_array_equal(got_values, expected)
    np.testing.assert_array_equal(got_arrays, expected)


def test_value_path_equals_array_path_on_a_long_irregular_run():
    # many parameters, random gradients that depend on the parameters, every
    # option on: the two paths share one formula and must agree bitwise
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=257)
    scale = rng.uniform(0.1, 3.0, size=257)

    def grad(x):
        return scale * np.sin(3 * x) + 0.2 * x

    for cls, kw in [(SGD, dict(lr=0.03, momentum=0.8, dampening=0.1, weight_decay=0.02)),
                    (SGD, dict(lr=0.03, momentum=0.8, nesterov=True, maximize=True)),
                    (Adam, dict(lr=0.02, betas=(0.8, 0.9), weight_decay=0.02, amsgrad=True)),
                    (Adam, dict(lr=0.02, maximize=True))]:
        vals = [Value(float(a)) for a in x0]
        arr = x0.copy()
        garr = np.empty_like(arr)
        ov = cls(vals, **kw)
        oa = cls.from_arrays([arr], [garr], **kw)
        for _ in range(40):
            g = grad(arr)
            for v, gi in zip(vals, g):
                v.grad = float(gi)
            garr[...] = g
            ov.step()
            oa.step()
        np.testing.assert_array_equal(np.array([v.data for v in vals]), arr)
        for k, s in ov.state_dict()["state"].items():
            np.testing.assert_array_equal(s, oa.state_dict()["state"][k])


# ---------------------------------------------------------------------------
# hand-derived values
# ---------------------------------------------------------------------------

def test_sgd_momentum_by_hand():
    # f = x^2 / 2, g = x.  x0 = 1, lr = 0.1, mu = 0.5:
    # step 1: b = 1, x = 0.9;  step 2: b = 0.5 + 0.9 = 1.4, x = 0.9 - 0.14 = 0.76
    x = Value(1.0)
    opt = SGD([x], lr=0.1, momentum=0.5)
    for _ in range(2):
        x.grad = x.data
        opt.step()
    assert x.data == pytest.approx(0.76, abs=1e-15)
    assert opt.state_dict()["state"]["momentum_buffer"][0] == pytest.approx(1.4, abs=1e-15)


def test_adam_first_step_is_lr_times_sign():
    # after one step m_hat = g, v_hat = g^2: the move is lr * g / (|g| + eps)
    xs = [Value(0.0), Value(0.0)]
    xs[0].grad, xs[1].grad = 3.0, -0.5
    Adam(xs, lr=0.01, eps=0.0).step()
    assert xs[0].data == pytest.approx(-0.01, rel=1e-14)
    assert xs[1].data == pytest.approx(0.01, rel=1e-14)


def test_step_leaves_gradients_and_zero_grad_clears_them():
    xs = [Value(1.0), Value(2.0)]
    xs[0].grad, xs[1].grad = 0.5, -1.0
    opt = SGD(xs, lr=0.1)
    opt.step()
    assert [x.grad for x in xs] == [0.5, -1.0]
    opt.zero_grad()
    assert [x.grad for x in xs] == [0.0, 0.0]
    w, g = np.ones(3), np.full(3, 2.0)
    opt = SGD.from_arrays([w], [g], lr=0.5)
    opt.step()
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.0])
    opt.zero_grad()
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_closure_is_called_and_its_loss_returned():
    x = Value(3.0)
    opt = SGD([x], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = x * x
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.data == 9.0 and x.data == 3.0 - 0.25 * 6.0


def test_lr_zero_does_not_move_and_lr_is_settable():
    x = Value(1.0)
    x.grad = 5.0
    opt = SGD([x], lr=0.0)
    opt.step()
    assert x.data == 1.0
    opt.lr = 0.1
    opt.step()
    assert x.data == 1.0 - 0.1 * 5.0
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="lr"):
            opt.lr = bad
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"
    assert opt.lr == 0.1


# ---------------------------------------------------------------------------
# PyTorch parity
# ---------------------------------------------------------------------------
# torch's CPU kernels are compiled for AVX2 with FMA contraction: on this kind
# of machine torch computes p + alpha*g, lerp and addcmul with a fused
# multiply-add (one rounding), where fastgrad (like numpy, micrograd's loop
# and plain Python) rounds the product and the sum separately.  Results differ
# by an ulp per step at most; over 50 steps of a contracting objective the
# trajectories agree to ~1e-15.  The tolerance below is 1000x tighter than
# any formula slip (a wrong order or a missing term shows up at >= 1e-6).

def torch_run(torch, tcls, kw, per_scalar=True):
    kw = dict(kw)
    base = kw.pop("lr")
    grad = grad_for(kw)
    if per_scalar:     # one 0-d tensor per parameter, like fastgrad's Values
        ts = [torch.tensor(float(a), dtype=torch.float64) for a in X0]
    else:
        ts = [torch.tensor(X0.copy(), dtype=torch.float64)]
    opt = tcls(ts, lr=base, foreach=False, **kw)
    for k in range(STEPS):
        x = np.concatenate([t.detach().numpy().reshape(-1) for t in ts])
        g = grad(x)
        if per_scalar:
            for t, gi in zip(ts, g):
                t.grad = torch.tensor(float(gi), dtype=torch.float64)
        else:
            ts[0].grad = torch.tensor(g, dtype=torch.float64)
        for group in opt.param_groups:
            group["lr"] = lr_at(k, base)
        opt.step()
    return np.concatenate([t.detach().numpy().reshape(-1) for t in ts])


@pytest.mark.parametrize("kw", SGD_OPTS, ids=ids(SGD_OPTS))
def test_torch_parity_sgd(kw):
    torch = pytest.importorskip("torch")
    ours = run_values(SGD, kw)
    np.testing.assert_allclose(ours, torch_run(torch, torch.optim.SGD, kw), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(run_arrays(SGD, kw),
                               torch_run(torch, torch.optim.SGD, kw, per_scalar=False),
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kw", ADAM_OPTS, ids=ids(ADAM_OPTS))
def test_torch_parity_adam(kw):
    torch = pytest.importorskip("torch")
    ours = run_values(Adam, kw)
    np.testing.assert_allclose(ours, torch_run(torch, torch.optim.Adam, kw), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(run_arrays(Adam, kw),
                               torch_run(torch, torch.optim.Adam, kw, per_scalar=False),
                               rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------
# save / resume
# ---------------------------------------------------------------------------

RESUME_CASES = [
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.01)),
    (Adam, dict(lr=0.05, betas=(0.3, 0.5), maximize=True)),
]


@pytest.mark.parametrize("cls,kw", RESUME_CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(RESUME_CASES)])
@pytest.mark.parametrize("path", ["values", "arrays"])
@pytest.mark.parametrize("via", ["dict", "pickle"])
def test_save_resume_is_bit_identical(cls, kw, path, via):
    grad = grad_for(kw)
    first, rest = 20, STEPS - 20

    def make(x0, **hyper):
        if path == "values":
            vals = [Value(float(a)) for a in x0]
            return vals, cls(vals, **hyper)
        arr = x0.copy()
        g = np.zeros_like(arr)
        return (arr, g), cls.from_arrays([arr], [g], **hyper)

    def data(p):
        return np.array([v.data for v in p]) if path == "values" else p[0].copy()

    def advance(p, opt, n):
        for _ in range(n):
            g = grad(data(p))
            if path == "values":
                for v, gi in zip(p, g):
                    v.grad = float(gi)
            else:
                p[1][...] = g
            opt.step()

    p_full, o_full = make(X0, **kw)
    advance(p_full, o_full, STEPS)

    p1, o1 = make(X0, **kw)
    advance(p1, o1, first)
    saved = o1.state_dict()
    if via == "pickle":
        saved = pickle.loads(pickle.dumps(saved))
    snapshot = data(p1)
    del p1, o1
    # a new optimizer, built with a *different* lr: load restores it
    p2, o2 = make(snapshot, **dict(kw, lr=123.0))
    o2.load_state_dict(saved)
    assert o2.lr == kw["lr"] and o2.steps_taken == first
    advance(p2, o2, rest)
    np.testing.assert_array_equal(data(p2), data(p_full))


def test_state_dict_is_a_copy():
    x = Value(1.0)
    x.grad = 1.0
    opt = SGD([x], lr=0.1, momentum=0.9)
    opt.step()
    sd = opt.state_dict()
    sd["state"]["momentum_buffer"][0] = 99.0
    assert opt.state_dict()["state"]["momentum_buffer"][0] == 1.0


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "state":
            assert a[k].keys() == b[k].keys()
            for n in a[k]:
                np.testing.assert_array_equal(a[k][n], b[k][n])
        else:
            assert a[k] == b[k]


def test_load_state_dict_refuses_other_layouts_and_changes_nothing():
    xs = [Value(0.5 * i) for i in range(4)]
    for x in xs:
        x.grad = 1.0
    opt = SGD(xs, lr=0.1, momentum=0.9)
    opt.step()
    before = opt.state_dict()

    other = SGD([Value(1.0) for _ in range(3)], lr=0.1, momentum=0.9)
    other.step()
    with pytest.raises(ValueError, match="layout"):
        opt.load_state_dict(other.state_dict())

    adam = Adam([Value(1.0) for _ in range(4)])
    with pytest.raises(ValueError, match="'Adam' optimizer"):
        opt.load_state_dict(adam.state_dict())

    arrays = SGD.from_arrays([np.zeros(4)], [np.zeros(4)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="layout"):
        opt.load_state_dict(arrays.state_dict())

    no_momentum = SGD([Value(1.0) for _ in range(4)], lr=0.5)
    bad = no_momentum.state_dict()
    bad["state"] = {}
    bad["hyperparameters"]["momentum"] = 0.9       # claims momentum, no buffer
    with pytest.raises(ValueError, match="state entries"):
        opt.load_state_dict(bad)

    bad = copy.deepcopy(before)
    bad["hyperparameters"]["lr"] = 7.0
    bad["state"]["momentum_buffer"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(ValueError, match="float64"):
        opt.load_state_dict(bad)

    bad = copy.deepcopy(before)
    bad["hyperparameters"]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad)

    bad = copy.deepcopy(before)
    del bad["step"]
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict(bad)
    with pytest.raises(TypeError):
        opt.load_state_dict([1, 2])

    _same_state(opt.state_dict(), before)        # nothing half-applied


def test_load_state_dict_refuses_other_array_shapes():
    opt = Adam.from_arrays([np.zeros((2, 3))], [np.zeros((2, 3))])
    other = Adam.from_arrays([np.zeros((3, 2))], [np.zeros((3, 2))])
    with pytest.raises(ValueError, match="layout"):
        opt.load_state_dict(other.state_dict())


# ---------------------------------------------------------------------------
# micrograd's demo: the optimizer reproduces the hand-written loop exactly
# ---------------------------------------------------------------------------

def test_micrograd_demo_with_sgd_reproduces_the_hand_written_loop():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.make_moons(n_samples=100, noise=0.1, random_state=1)
    y = y * 2 - 1

    def loss(model):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        return data_loss + reg_loss

    def train(use_optimizer, steps=3):
        random.seed(1337)
        model = MLP(2, [16, 16, 1])
        opt = SGD(model.parameters(), lr=1.0) if use_optimizer else None
        history = []
        for k in range(steps):
            total = loss(model)
            model.zero_grad()
            total.backward()
            history.append(total.data)
            lr = 1.0 - 0.9 * k / 100
            if use_optimizer:
                opt.lr = lr
                opt.step()
            else:
                for p in model.parameters():
                    p.data -= lr * p.grad
        return history, [p.data for p in model.parameters()]

    hand_losses, hand_params = train(False)
    opt_losses, opt_params = train(True)
    assert hand_losses[-1] < hand_losses[0]
    assert opt_losses == hand_losses
    assert opt_params == hand_params


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SGD, Adam])
def test_bad_params(cls):
    kw = {"lr": 0.1}
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([], **kw)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls(iter([]), **kw)
    with pytest.raises(TypeError, match="parameter 1 is a float"):
        cls([Value(1.0), 2.0], **kw)
    with pytest.raises(TypeError, match="from_arrays"):
        cls([np.zeros(3)], **kw)
    with pytest.raises(TypeError, match="model.parameters"):
        cls(MLP(2, [3, 1]), **kw)
    with pytest.raises(TypeError, match="iterable"):
        cls(Value(1.0), **kw)
    with pytest.raises(TypeError, match="iterable"):
        cls(5, **kw)
    with pytest.raises(TypeError, match="parameter groups are not supported"):
        cls([{"params": [Value(1.0)]}], **kw)
    v = Value(1.0)
    with pytest.raises(ValueError, match="parameter 2 appears more than once"):
        cls([v, Value(2.0), v], **kw)


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_bad_arrays(cls):
    f = cls.from_arrays
    ok = np.zeros(3)
    with pytest.raises(TypeError, match="float64, got float32"):
        f([np.zeros(3, dtype=np.float32)], [ok], lr=0.1)
    with pytest.raises(TypeError, match="gradient 0 must have dtype float64, got int64"):
        f([ok], [np.zeros(3, dtype=np.int64)], lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(3,\) but its gradient has shape \(4,\)"):
        f([ok], [np.zeros(4)], lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        f([np.zeros(6)[::2]], [ok], lr=0.1)
    with pytest.raises(ValueError, match="1 parameter arrays but 2 gradient"):
        f([ok], [ok.copy(), ok.copy()], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        f([], [], lr=0.1)
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        f([ro], [ok], lr=0.1)
    with pytest.raises(TypeError, match="numpy array, got list"):
        f([[1.0, 2.0]], [ok], lr=0.1)
    with pytest.raises(TypeError, match="single array"):
        f(ok, ok.copy(), lr=0.1)
    p = np.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        f([p, p[2:]], [np.zeros(4), np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="share memory"):
        f([p], [p], lr=0.1)
    # a read-only gradient is fine for step(), refused by zero_grad()
    g = np.ones(3)
    g.flags.writeable = False
    opt = f([np.zeros(3)], [g], lr=0.1)
    opt.step()
    with pytest.raises(ValueError, match="read-only"):
        opt.zero_grad()


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=math.nan), ValueError, "lr"),
    (dict(lr=math.inf), ValueError, "lr"),
    (dict(lr="0.1"), TypeError, "lr"),
    (dict(lr=True), TypeError, "lr"),
    (dict(lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (dict(lr=0.1, dampening=math.nan), ValueError, "dampening"),
    (dict(lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (dict(lr=0.1, nesterov=True, momentum=0.9, dampening=0.1), ValueError, "Nesterov"),
    (dict(lr=0.1, nesterov=1), TypeError, "nesterov"),
    (dict(lr=0.1, maximize="yes"), TypeError, "maximize"),
])
def test_bad_sgd_hyperparameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        SGD([Value(1.0)], **kw)
    with pytest.raises(exc, match=msg):
        SGD.from_arrays([np.zeros(2)], [np.zeros(2)], **kw)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\]"),
    (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (dict(betas=(0.9, math.nan)), ValueError, r"betas\[1\]"),
    (dict(betas=0.9), TypeError, "betas"),
    (dict(betas=(0.9, 0.99, 0.9)), TypeError, "betas"),
    (dict(eps=-1e-8), ValueError, "eps"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(amsgrad=None), TypeError, "amsgrad"),
])
def test_bad_adam_hyperparameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        Adam([Value(1.0)], **kw)


def test_missing_lr_for_sgd_is_a_type_error():
    with pytest.raises(TypeError):
        SGD([Value(1.0)])


# ---------------------------------------------------------------------------
# lr_sweep
# ---------------------------------------------------------------------------

def test_lr_sweep_picks_the_rate_theory_predicts():
    # f(x) = (x - 3)^2: gradient descent multiplies the error by (1 - 2 lr),
    # so among the grid the best rate is the one with |1 - 2 lr| smallest, and
    # rates above 1 diverge.  The factory is random: every rate must still
    # start from the first model's weights.
    rng = random.Random(0)

    def factory():
        return [Value(rng.uniform(-5, 5))]

    def loss(params):
        return (params[0] - 3) ** 2

    lrs = [1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0]
    res = lr_sweep(factory, loss, lrs=lrs, steps=8)
    assert res.best_lr == min(lrs, key=lambda lr: abs(1 - 2 * lr)) == 0.3
    assert np.all(res.losses[:, 0] == res.losses[0, 0])
    e0 = math.sqrt(res.losses[0, 0])
    for r, lr in enumerate(lrs):
        np.testing.assert_allclose(res.losses[r, -1], (e0 * abs(1 - 2 * lr) ** 8) ** 2,
                                   rtol=1e-9)
    assert res.losses.shape == (len(lrs), 9)
    assert "best_lr=0.3" in repr(res)


def test_lr_sweep_on_a_small_network_default_grid():
    # a tiny regression MLP: the default log grid (1e-4 ... 10) must contain
    # rates that barely move, one that learns, and rates that blow up; the
    # pick is the one that learnt most, and a diverged run is marked inf
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(16, 2))
    y = X[:, 0] - 0.5 * X[:, 1]

    def factory():
        random.seed(3)
        return MLP(2, [4, 1])

    def loss(model):
        errs = [(model(list(map(Value, row))) - float(t)) ** 2 for row, t in zip(X, y)]
        return sum(errs) * (1.0 / len(errs))

    res = lr_sweep(factory, loss, steps=15)
    assert len(res.lrs) == 11
    assert res.lrs[0] == pytest.approx(1e-4) and res.lrs[-1] == pytest.approx(10.0)
    start = res.losses[0, 0]
    assert 1e-2 <= res.best_lr <= 1.0
    best = res.final[list(res.lrs).index(res.best_lr)]
    assert best < 0.5 * start
    assert res.final[0] > 0.95 * start                # 1e-4: barely moved
    assert np.isinf(res.final[-1]) or res.final[-1] > start   # 10: blew up


def test_lr_sweep_with_adam_and_bad_arguments():
    res = lr_sweep(lambda: [Value(2.0)], lambda ps: ps[0] * ps[0], lrs=[0.01, 0.5],
                   steps=5, optimizer=Adam, betas=(0.5, 0.9))
    assert res.best_lr == 0.5
    with pytest.raises(ValueError, match="steps"):
        lr_sweep(lambda: [Value(2.0)], lambda ps: ps[0], steps=0)
    with pytest.raises(TypeError, match="optimizer"):
        lr_sweep(lambda: [Value(2.0)], lambda ps: ps[0], optimizer=object)
    with pytest.raises(ValueError, match="lr"):
        lr_sweep(lambda: [Value(2.0)], lambda ps: ps[0], lrs=[0.1, -1.0])
    with pytest.raises(TypeError, match="must return a Value"):
        lr_sweep(lambda: [Value(2.0)], lambda ps: 1.0, lrs=[0.1])
    sizes = iter([1, 2])
    with pytest.raises(ValueError, match="2 parameters, but 1"):
        lr_sweep(lambda: [Value(1.0)] * 1 if next(sizes) == 1 else [Value(1.0), Value(2.0)],
                 lambda ps: ps[0] * ps[0], lrs=[0.1, 0.2])
    # every run diverging gives no best rate
    # (the 1e200 step makes x**2 overflow: the engine raises OverflowError)
    res = lr_sweep(lambda: [Value(1.0)], lambda ps: ps[0] ** 2, lrs=[1e200, 1e300], steps=3)
    assert res.best_lr is None and np.all(np.isinf(res.final))
    assert res.losses[0, 0] == 1.0 and np.isinf(res.losses[0, 1])


# ---------------------------------------------------------------------------
# the low-level kernels (fastgrad._optim), used by the compiled replay
# ---------------------------------------------------------------------------

@pytest.mark.compiled_only("argument checks of the C kernels (typed memoryviews)")
def test_array_kernels_match_the_formula_and_check_their_arguments():
    from fastgrad import _optim
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, 0.1, -0.7])
    buf = np.zeros(3)
    _optim.sgd_array(p, g, buf, 0.1, momentum=0.9, first=True)
    np.testing.assert_array_equal(p, np.array([1.0, -2.0, 0.5]) - 0.1 * g)
    np.testing.assert_array_equal(buf, g)
    with pytest.raises(ValueError, match="3 elements but its gradient has 2"):
        _optim.sgd_array(p, g[:2], None, 0.1)
    with pytest.raises(ValueError, match="momentum buffer must have length 3"):
        _optim.sgd_array(p, g, np.zeros(2), 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum buffer must have length 3"):
        _optim.sgd_array(p, g, None, 0.1, momentum=0.9)
    with pytest.raises(ValueError):
        _optim.sgd_array(p.astype(np.float32), g, None, 0.1)      # buffer dtype
    with pytest.raises(ValueError):
        _optim.sgd_array(np.zeros(6)[::2], g, None, 0.1)           # not contiguous
    with pytest.raises(ValueError, match="exp_avg must have length 3"):
        _optim.adam_array(p, g, np.zeros(2), np.zeros(3), None, 0.9, 0.999, 1e-8,
                          0.0, False, False, 0.01, 1.0)
    with pytest.raises(ValueError, match="max_exp_avg_sq must have length 3"):
        _optim.adam_array(p, g, np.zeros(3), np.zeros(3), None, 0.9, 0.999, 1e-8,
                          0.0, True, False, 0.01, 1.0)
    with pytest.raises(ValueError, match="1 parameter arrays but 2"):
        _optim.sgd_arrays([p], [g, g], None, 0.1, 0.0, 0.0, 0.0, False, False, True)
    # empty arrays are fine
    _optim.sgd_array(np.zeros(0), np.zeros(0), None, 0.1)
    _optim.adam_array(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), None,
                      0.9, 0.999, 1e-8, 0.0, False, False, 0.01, 1.0)


@pytest.mark.compiled_only("fastgrad._optim.ValueSlots holds C pointers")
def test_value_slots_checks():
    from fastgrad import _optim
    xs = [Value(1.0), Value(2.0)]
    s = _optim.ValueSlots(xs)
    out = np.empty(2)
    s.get_data(out)
    np.testing.assert_array_equal(out, [1.0, 2.0])
    s.set_data(np.array([5.0, 6.0]))
    assert [x.data for x in xs] == [5.0, 6.0]
    with pytest.raises(ValueError, match="length 2, got 3"):
        s.get_grad(np.empty(3))
    with pytest.raises(ValueError, match="momentum buffer must have length 2"):
        s.sgd(np.zeros(1), 0.1, 0.9, 0.0, 0.0, False, False, True)
    del xs
    s.zero_grad()          # the slots keep the Values alive
    assert len(s) == 2 and all(v.grad == 0.0 for v in s.values)


def test_empty_and_zero_d_arrays_in_from_arrays():
    scalar, gs = np.array(2.0), np.array(4.0)
    empty, ge = np.zeros((0, 3)), np.zeros((0, 3))
    opt = Adam.from_arrays([scalar, empty], [gs, ge], lr=0.5)
    opt.step()
    assert scalar == pytest.approx(1.5) and empty.shape == (0, 3)


def test_docstring_examples_run():
    import doctest

    import fastgrad.optim
    res = doctest.testmod(fastgrad.optim)
    assert res.attempted >= 5 and res.failed == 0


def test_lr_sweep_eval_fn_ranks_by_validation():
    # training loss (x - 3)^2 prefers lr = 0.5 (lands on 3 in one step);
    # the "validation" loss (x - 2)^2 is best for the run that stops nearest
    # to 2: with 1 step from x0 = 0, x = 6 lr, so lr = 1/3 lands exactly on 2
    lrs = [0.1, 1 / 3, 0.5]
    res = lr_sweep(lambda: [Value(0.0)], lambda ps: (ps[0] - 3) ** 2, lrs=lrs, steps=1,
                   eval_fn=lambda ps: (ps[0] - 2) ** 2)
    assert res.final.tolist() == [(3 - 0.6) ** 2, 1.0, 0.0]
    np.testing.assert_allclose(res.val_losses, [(2 - 0.6) ** 2, 0.0, 1.0], atol=1e-15)
    assert res.best_lr == 1 / 3
    assert "validation=" in repr(res)
    # a diverged run gets inf, a plain float is accepted
    res = lr_sweep(lambda: [Value(0.0)], lambda ps: (ps[0] - 3) ** 2, lrs=[0.5, 1e200],
                   steps=2, eval_fn=lambda ps: float(ps[0].data))
    assert res.val_losses[0] == pytest.approx(3.0) and np.isinf(res.val_losses[1])
    with pytest.raises(TypeError, match="eval_fn must return"):
        lr_sweep(lambda: [Value(0.0)], lambda ps: ps[0] * ps[0], lrs=[0.1],
                 eval_fn=lambda ps: "good")
    with pytest.raises(TypeError, match="eval_fn must be callable"):
        lr_sweep(lambda: [Value(0.0)], lambda ps: ps[0] * ps[0], lrs=[0.1], eval_fn=3)


def test_pickling_a_model_with_its_value_optimizer_resumes_identically():
    # pickled together, the model's parameters and the optimizer's stay the
    # same objects, and training resumes exactly as the uninterrupted run
    def loss(ps):
        return (ps[0] * ps[1] - 3) ** 2 + ps[1].tanh()
    ps = [Value(1.0), Value(-0.5)]
    opt = SGD(ps, lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(3):
        opt.zero_grad()
        loss(ps).backward()
        opt.step()
    clones = [pickle.loads(pickle.dumps((ps, opt))), copy.deepcopy((ps, opt))]
    for _ in range(4):
        opt.zero_grad()
        loss(ps).backward()
        opt.step()
    for clone_ps, clone_opt in clones:
        assert all(a is b for a, b in zip(clone_opt.params, clone_ps))
        assert all(a is not b for a, b in zip(clone_ps, ps))
        for _ in range(4):
            clone_opt.zero_grad()
            loss(clone_ps).backward()
            clone_opt.step()
        assert [p.data for p in clone_ps] == [p.data for p in ps]
    # the array path pickles (with copies of its arrays), like a torch optimizer
    w, g = np.array([1.0, 2.0]), np.array([0.5, 0.5])
    opt = SGD.from_arrays([w], [g], lr=0.1)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        clone.step()
        np.testing.assert_array_equal(w, [1.0, 2.0])
        np.testing.assert_array_equal(clone.params[0], [0.95, 1.95])
        clone.grads[0][...] = 1.0        # the clone reads its own gradient arrays
        clone.step()
        np.testing.assert_array_equal(clone.params[0], [0.95 - 0.1, 1.95 - 0.1])
