"""The issue-20 primitives on the eager engine: ``Value.log1p``,
``Value.softplus``, ``fastgrad.sum``, ``logsumexp``, ``softmax``,
``log_softmax`` and ``cross_entropy``.

Oracles: hand-derived values, mpmath (correctly rounded references), a
fourth-order central difference of the value, PyTorch (float64) when
installed, and the pure-Python reference engine (``fastgrad.reference``),
which must give the same floats as the engine in use (it *is* the engine in
the pure-Python build, so there the comparison is with itself and the other
oracles carry the test).
"""
import math
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad
from fastgrad import Value
from fastgrad import reference as ref

INF, NAN = math.inf, math.nan
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-40.0, 40.0, allow_nan=False, allow_infinity=False)
vectors = st.lists(finite, min_size=1, max_size=6)


def bits(x):
    return struct.pack("<d", x)


def same_bits(xs, ys):
    return [bits(x) for x in xs] == [bits(y) for y in ys]


def leaves(xs, cls=Value):
    return [cls(x) for x in xs]


def close(x, y, rel=1e-12, abs_=1e-300):
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= abs_ + rel * max(abs(x), abs(y))


def d4(f, xs, i, h=1e-3):
    """Fourth-order central difference of f (floats -> float) in xs[i]."""
    def at(t):
        ys = list(xs)
        ys[i] += t
        return f(ys)
    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


# ---------------------------------------------------------------------------
# hand-derived values
# ---------------------------------------------------------------------------

def test_sum_is_pythons_sum_as_one_node():
    xs = leaves([1.5, -2.0, 4.25])
    s = fastgrad.sum(xs)
    assert s.data == 3.75 and s._op == "sum" and s._prev == set(xs)
    s.backward()
    assert [x.grad for x in xs] == [1.0, 1.0, 1.0]
    # the same floats as Python's sum(), sign of zero included
    for vals in ([0.1, 0.2, 0.3], [-0.0], [-0.0, -0.0], [1e16, 1.0, -1e16]):
        assert same_bits([fastgrad.sum(leaves(vals)).data],
                         [sum(leaves(vals)).data])


def test_sum_counts_repeated_operands_and_bakes_numbers():
    x = Value(3.0)
    s = fastgrad.sum([x, 2, x, 0.5, x])
    s.backward()
    assert s.data == 11.5 and x.grad == 3.0
    assert len(s._prev) == 3              # x and the two constant leaves


def test_logsumexp_hand_values():
    x = Value(0.0)
    y = fastgrad.logsumexp([x, x])
    y.backward()
    assert y.data == math.log(2.0)
    assert x.grad == 1.0                 # 1/2 + 1/2
    xs = leaves([1000.0, 1000.0])         # exp(1000) overflows; lse does not
    y = fastgrad.logsumexp(xs)
    assert y.data == 1000.0 + math.log(2.0)
    y.backward()
    assert all(abs(v.grad - 0.5) < 1e-13 for v in xs)
    assert fastgrad.logsumexp([Value(-2.5)]).data == -2.5


def test_softmax_hand_values():
    p = fastgrad.softmax(leaves([0.0, 0.0, 0.0, 0.0]))
    assert [q.data for q in p] == [0.25] * 4
    x = leaves([2.0, 1.0])
    p = fastgrad.softmax(x)
    e = math.exp(1.0)
    assert close(p[0].data, e / (e + 1), 1e-15)
    assert p[0]._op == "softmax" and len(p[0]._prev) == 2
    lse = (p[0]._prev - {x[0]}).pop()
    assert lse._op == "logsumexp" and lse._prev == set(x)
    p[0].backward()                      # d p0/d x = p0 (1 - p0, -p1)
    p0, p1 = p[0].data, p[1].data
    assert close(x[0].grad, p0 * (1 - p0), 1e-14)
    assert close(x[1].grad, -p0 * p1, 1e-14)
    one = fastgrad.softmax([Value(123.0)])
    assert [q.data for q in one] == [1.0]


def test_log1p_and_softplus_hand_values():
    x = Value(1e-20)
    y = x.log1p()
    y.backward()
    assert (y.data, x.grad, y._op) == (1e-20, 1.0, "log1p")
    x = Value(0.0)
    y = x.softplus()
    y.backward()
    assert (y.data, x.grad, y._op) == (math.log(2.0), 0.5, "softplus")
    assert Value(1000.0).softplus().data == 1000.0
    assert Value(-1000.0).softplus().data == 0.0
    assert Value(-700.0).softplus().data == math.exp(-700.0)   # no log(1 + tiny)
    x = Value(-800.0)
    x.softplus().backward()
    assert x.grad == 0.0                  # sigmoid(-800) underflows, no nan


def test_log_softmax_and_cross_entropy_hand_values():
    z = leaves([2.0, 0.5, -1.0])
    lse = math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
    ls = fastgrad.log_softmax(z)
    assert all(close(a.data, b - lse, 1e-15) for a, b in zip(ls, [2.0, 0.5, -1.0]))
    loss = fastgrad.cross_entropy(z, 0)
    assert close(loss.data, lse - 2.0, 1e-15)
    loss.backward()
    soft = [math.exp(v - lse) for v in (2.0, 0.5, -1.0)]
    want = [soft[0] - 1.0, soft[1], soft[2]]
    assert all(close(a.grad, b, 1e-14) for a, b in zip(z, want))
    # probabilities: a one-hot target gives the index form's value
    z2 = leaves([2.0, 0.5, -1.0])
    assert close(fastgrad.cross_entropy(z2, [0.0, 1.0, 0.0]).data, lse - 0.5, 1e-15)
    half = fastgrad.cross_entropy(leaves([2.0, 0.5, -1.0]), [0.5, 0.5, 0.0])
    assert close(half.data, lse - 1.25, 1e-15)


# ---------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [fastgrad.sum, fastgrad.logsumexp, fastgrad.softmax,
                                fastgrad.log_softmax])
def test_empty_sequence_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="empty sequence"):
        fn([])
    with pytest.raises(ValueError, match="empty sequence"):
        fn(iter(()))


@pytest.mark.parametrize("fn", [fastgrad.sum, fastgrad.logsumexp, fastgrad.softmax])
def test_bad_operands_are_clear_errors(fn):
    name = fn.__name__
    with pytest.raises(TypeError, match="single Value"):
        fn(Value(1.0))
    with pytest.raises(TypeError, match=f"{name}.*sequence"):
        fn(3.0)
    with pytest.raises(TypeError, match=r"item 1 must be a Value or a real number"):
        fn([Value(1.0), "x"])
    with pytest.raises(TypeError, match=r"item 0"):
        fn([None])
    with pytest.raises(TypeError, match=r"item 0"):
        fn([1j])


def test_cross_entropy_errors():
    z = leaves([1.0, 2.0])
    with pytest.raises(IndexError, match="out of range"):
        fastgrad.cross_entropy(z, 2)
    with pytest.raises(IndexError, match="out of range"):
        fastgrad.cross_entropy(z, -1)
    with pytest.raises(TypeError, match="bool"):
        fastgrad.cross_entropy(z, True)
    with pytest.raises(TypeError, match="float"):
        fastgrad.cross_entropy(z, 1.0)
    with pytest.raises(TypeError, match="str"):
        fastgrad.cross_entropy(z, "1")
    with pytest.raises(ValueError, match="2 logits but 3"):
        fastgrad.cross_entropy(z, [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="empty sequence"):
        fastgrad.cross_entropy([], 0)
    np = pytest.importorskip("numpy")
    assert fastgrad.cross_entropy(z, np.int64(1)).data == \
        fastgrad.cross_entropy(z, 1).data


def test_log1p_domain():
    with pytest.raises(ValueError, match=r"log1p: math domain error"):
        Value(-1.0).log1p()
    with pytest.raises(ValueError, match=r"log1p"):
        Value(-3.0).log1p()
    assert Value(-0.5).log1p().data == math.log1p(-0.5)
    assert math.isnan(Value(NAN).log1p().data)
    assert Value(INF).log1p().data == INF


# (inputs, logsumexp, its gradient, softmax) -- torch.logsumexp gives the
# same; torch.softmax gives nan everywhere when an item is +inf, fastgrad
# gives nan for the +inf items and 0 for the others (documented)
SPECIAL = [
    ([INF, 1.0], INF, [NAN, 0.0], [NAN, 0.0]),
    ([-INF, -INF], -INF, [NAN, NAN], [NAN, NAN]),
    ([NAN, 1.0], NAN, [NAN, NAN], [NAN, NAN]),
    ([1.0, NAN], NAN, [NAN, NAN], [NAN, NAN]),
    ([-INF, 0.0], 0.0, [0.0, 1.0], [0.0, 1.0]),
    ([1.0, INF, INF], INF, [0.0, NAN, NAN], [0.0, NAN, NAN]),
    ([710.0, 710.0], 710.0 + math.log(2.0), [0.5, 0.5], [0.5, 0.5]),
    ([-1e4, -1e4 - math.log(3.0)], -1e4 + math.log(4.0 / 3.0), [0.75, 0.25],
     [0.75, 0.25]),
    # beyond 2**53 the rounding of lse swallows log(2): exp(x - lse) is 1 for
    # both items (torch.logsumexp's gradient, the same formula, gives the
    # same 1s; torch.softmax gives 0.5s: the documented limit of exp(x - lse))
    ([1e308, 1e308], 1e308, [1.0, 1.0], [1.0, 1.0]),
    ([-1e308, -1e308], -1e308, [1.0, 1.0], [1.0, 1.0]),
]


@pytest.mark.parametrize("xs, lse, grad, soft", SPECIAL)
def test_special_values(xs, lse, grad, soft):
    v = leaves(xs)
    y = fastgrad.logsumexp(v)
    y.backward()
    assert close(y.data, lse, 1e-15)
    # (the softmax-based ones within the documented |lse| * 2**-53)
    tol = 2.3e-16 * (4 + abs(lse)) if math.isfinite(lse) and abs(lse) < 1e15 else 0.0
    assert all(close(a.grad, b, tol) for a, b in zip(v, grad))
    p = fastgrad.softmax(leaves(xs))
    assert all(close(a.data, b, tol) for a, b in zip(p, soft))


def test_softplus_and_log1p_special_values():
    assert Value(INF).softplus().data == INF
    assert Value(-INF).softplus().data == 0.0
    assert math.isnan(Value(NAN).softplus().data)
    x = Value(-INF)
    x.softplus().backward()
    assert x.grad == 0.0


def test_no_grad_makes_leaves():
    xs = leaves([1.0, 2.0])
    with fastgrad.no_grad():
        s = fastgrad.sum(xs)
        p = fastgrad.softmax(xs)
        y = xs[0].softplus()
    assert s._prev == set() and y._prev == set() and p[0]._prev == set()
    assert s.data == 3.0


# ---------------------------------------------------------------------------
# against mpmath, finite differences and PyTorch
# ---------------------------------------------------------------------------

def test_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    for a in (-745.0, -30.0, -1.0, -1e-10, 0.0, 1e-12, 0.3, 5.0, 36.0, 40.0, 700.0):
        want = float(mpmath.log(1 + mpmath.exp(mpmath.mpf(a))))
        assert close(Value(a).softplus().data, want, 4e-16), a
    for a in (-0.999, -0.5, -1e-17, 1e-300, 0.5, 1e10):
        assert close(Value(a).log1p().data, float(mpmath.log1p(mpmath.mpf(a))), 2.3e-16)
    for xs in ([1.0, 2.0, 3.0], [-50.0, 0.1, 49.0, 49.5], [700.0, 700.0, -700.0]):
        exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(x)) for x in xs))
        got = fastgrad.logsumexp(leaves(xs)).data
        assert close(got, float(exact), 4.5e-16), xs
        for q, x in zip(fastgrad.softmax(leaves(xs)), xs):
            w = float(mpmath.exp(mpmath.mpf(x) - exact))
            # the documented bound: about |lse| ulps of 2**-53, plus a few
            assert close(q.data, w, 2.3e-16 * (4 + abs(float(exact)))), (xs, x)


def _fn_all(lib, xs):
    """A scalar function of every primitive (lib: fastgrad or fastgrad.reference)."""
    p = lib.softmax(xs)
    lse = lib.logsumexp(xs)
    t = lib.sum([q * x for q, x in zip(p, xs)])
    u = xs[0].softplus() * lse + (xs[-1] * xs[-1]).log1p()
    return t + u + lib.cross_entropy(xs, len(xs) - 1) + lib.sum(lib.log_softmax(xs))


@SETTINGS
@given(vectors)
def test_gradient_against_finite_differences(xs):
    v = leaves(xs)
    y = _fn_all(fastgrad, v)
    y.backward()
    f = lambda ys: _fn_all(fastgrad, leaves(ys)).data   # noqa: E731
    for i in range(len(xs)):
        num = d4(f, xs, i)
        assert abs(v[i].grad - num) <= 1e-6 * (1 + abs(num)), (i, v[i].grad, num)


@SETTINGS
@given(vectors)
def test_reference_engine_gives_the_same_floats(xs):
    # values and gradients bit for bit: the same float operations in the
    # same order (the reference is the fallback build's engine)
    v = leaves(xs)
    r = leaves(xs, ref.Value)
    y = _fn_all(fastgrad, v)
    z = _fn_all(ref, r)
    y.backward()
    z.backward()
    assert same_bits([y.data], [z.data])
    assert same_bits([a.grad for a in v], [b.grad for b in r])


def _torch():
    return pytest.importorskip("torch")


def _t(torch, xs):
    return torch.tensor(xs, dtype=torch.float64, requires_grad=True)


@SETTINGS
@given(vectors, st.integers(0, 5))
def test_values_and_gradients_against_torch(xs, k):
    torch = _torch()
    F = torch.nn.functional
    k = k % len(xs)
    cases = [
        (lambda v: fastgrad.logsumexp(v), lambda t: torch.logsumexp(t, 0), 1e-14),
        (lambda v: fastgrad.softmax(v)[k], lambda t: torch.softmax(t, 0)[k], None),
        (lambda v: fastgrad.log_softmax(v)[k], lambda t: torch.log_softmax(t, 0)[k], None),
        (lambda v: fastgrad.cross_entropy(v, k),
         lambda t: F.cross_entropy(t[None], torch.tensor([k])), None),
        (lambda v: fastgrad.cross_entropy(v, [1.0 / len(v)] * len(v)),
         lambda t: F.cross_entropy(t[None], torch.full((1, len(xs)), 1.0 / len(xs),
                                                      dtype=torch.float64)), None),
        (lambda v: fastgrad.sum(v), lambda t: t.sum(), 1e-14),
        (lambda v: fastgrad.sum([x.softplus() for x in v]),
         lambda t: F.softplus(t, threshold=50).sum(), 1e-14),
        (lambda v: fastgrad.sum([(x * x).log1p() for x in v]),
         lambda t: torch.log1p(t * t).sum(), 1e-14),
    ]
    lse = abs(float(torch.logsumexp(torch.tensor(xs, dtype=torch.float64), 0)))
    # x - lse and exp(x - lse) carry the rounding of lse: an absolute error of
    # about |lse| * 2**-53 in the exponent (documented)
    err = 2.3e-16 * (8 + 2 * lse + max(abs(x) for x in xs))
    for fg, th, rel in cases:
        rel = rel or err
        v = leaves(xs)
        y = fg(v)
        y.backward()
        t = _t(torch, xs)
        z = th(t)
        z.backward()
        assert close(y.data, z.item(), rel, err), (y.data, z.item())
        scale = max(1.0, max(abs(g) for g in t.grad.tolist()))
        for a, b in zip(v, t.grad.tolist()):
            assert abs(a.grad - b) <= rel * scale, (a.grad, b)


def _hess_fn(lib):
    def f(v):
        p = lib.softmax(v)
        return (lib.sum([q * q for q in p]) + lib.logsumexp(v) * v[0].softplus()
                + (v[-1] * v[-1]).log1p() + lib.cross_entropy(v, 0))
    return f


def _torch_hess_fn(torch):
    F = torch.nn.functional

    def f(t):
        p = torch.softmax(t, 0)
        return ((p * p).sum() + torch.logsumexp(t, 0) * F.softplus(t[0], threshold=50)
                + torch.log1p(t[-1] * t[-1]) + torch.logsumexp(t, 0) - t[0])
    return f


@pytest.mark.compiled_only("fastgrad.grad and fastgrad.functional need the compiled build")
@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.floats(-8.0, 8.0, allow_nan=False), min_size=1, max_size=5))
def test_second_derivatives(xs):
    import numpy as np
    from fastgrad import functional
    f = _hess_fn(fastgrad)
    n = len(xs)
    # forward-over-reverse (op_second / nary_hess_t) ...
    H1 = functional.hessian(f, xs)
    # ... and reverse-over-reverse (the differentiable rules of _higher.pyx)
    v = leaves(xs)
    g = fastgrad.grad(f(v), v, create_graph=True)
    H2 = np.zeros((n, n))
    for i in range(n):
        row = fastgrad.grad(g[i], v, allow_unused=True)
        H2[i] = [0.0 if h is None else h.data for h in row]
    # ... against finite differences of the gradient
    def grad_at(ys):
        w = leaves(ys)
        return [d.data for d in fastgrad.grad(f(w), w)]
    H3 = np.array([[d4(lambda ys: grad_at(ys)[i], xs, j) for j in range(n)]
                   for i in range(n)])
    assert np.allclose(H1, H2, rtol=1e-11, atol=1e-13)
    assert np.allclose(H1, H3, rtol=1e-6, atol=1e-6)
    torch = pytest.importorskip("torch")
    Ht = torch.autograd.functional.hessian(_torch_hess_fn(torch),
                                           torch.tensor(xs, dtype=torch.float64))
    assert np.allclose(H1, Ht.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.compiled_only("fastgrad.grad needs the compiled build")
def test_create_graph_gives_the_floats_of_backward():
    xs = [0.3, -1.2, 2.5, 0.0]
    v = leaves(xs)
    y = _fn_all(fastgrad, v)
    g = fastgrad.grad(y, v, create_graph=True)
    y.backward()
    assert same_bits([a.data for a in g], [a.grad for a in v])


# ---------------------------------------------------------------------------
# graphs: pickling, depth, drawing
# ---------------------------------------------------------------------------

def test_pickle_round_trip_keeps_values_and_gradients():
    xs = leaves([0.5, -1.0, 2.0])
    y = _fn_all(fastgrad, xs)
    z = pickle.loads(pickle.dumps(y))
    assert same_bits([z.data], [y.data]) and z._op == y._op
    y.backward()
    z.backward()
    copies = {n.data: n.grad for n in _graph_leaves(z)}
    assert sorted(copies) == [-1.0, 0.5, 2.0]
    assert same_bits([copies[x.data] for x in xs], [x.grad for x in xs])


def _graph_leaves(root):
    seen, out, stack = set(), [], [root]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            if not n._prev:
                out.append(n)
            stack.extend(n._prev)
    return out


@pytest.mark.compiled_only("crafted records of the compiled engine's pickles")
@pytest.mark.parametrize("record, match", [
    ((1.0, 0.0, 29, 0, (), None, None), "malformed operands"),          # empty sum
    ((1.0, 0.0, 30, 0, (0, 5), None, None), "malformed operands"),      # bad index
    ((1.0, 0.0, 29, 0, (0,), 0.0, None), "malformed operands"),         # a constant
    ((1.0, 0.0, 29, 0, 0, None, None), "malformed operands"),           # not a tuple
    ((1.0, 0.0, 28, 0, (0,), None, None), "malformed operands"),        # softmax: binary
    ((1.0, 0.0, 26, 0, 0, None, None), "malformed operands"),           # log1p: unary
    ((1.0, 0.0, 31, 0, (0,), None, None), "op code"),
    ((1.0, 0.0, 255, 0, (0,), None, None), "op code"),
])
def test_crafted_pickles_of_nary_nodes_raise(record, match):
    from fastgrad._engine import _rebuild_graph
    leaf = (2.0, 0.0, 0, 0, None, None, None)
    with pytest.raises(ValueError, match=match):
        _rebuild_graph([leaf, record])


@pytest.mark.compiled_only("records of the compiled engine's pickles")
def test_rebuilt_nary_records_work():
    from fastgrad._engine import _rebuild_graph
    leaf = (2.0, 0.0, 0, 0, None, None, None)
    s = _rebuild_graph([leaf, (4.0, 0.0, 29, 0, (0, 0), None, None)])
    assert s._op == "sum" and len(s._prev) == 1
    s.backward()
    assert next(iter(s._prev)).grad == 2.0


def _deep_nary_chain(depth):
    y = Value(0.0)
    c = Value(1e-6)
    for i in range(depth):
        y = fastgrad.sum([y, c]) if i % 2 else fastgrad.logsumexp([y, c, -50.0])
    return y, c


def test_deep_chain_of_nary_nodes_is_not_recursive():
    # backward and deallocation of a 200,000-deep chain of sums and
    # logsumexps, under the default recursion limit
    y, c = _deep_nary_chain(200_000)
    y.backward()
    assert c.grad > 0
    del y


@pytest.mark.compiled_only("the reference engine pickles with Python's default "
                           "(recursive) protocol")
def test_deep_chain_of_nary_nodes_pickles():
    y, c = _deep_nary_chain(200_000)
    z = pickle.loads(pickle.dumps(y))
    assert z.data == y.data
    del z


def test_draw_dot_shows_the_nary_nodes():
    xs = leaves([1.0, 2.0, 3.0])
    p = fastgrad.softmax(xs)
    loss = fastgrad.sum([q * q for q in p])
    dot = fastgrad.to_dot(loss)
    for op in ("sum", "softmax", "logsumexp"):
        assert f'label="{op}"' in dot, op
    # the logsumexp oval has the three inputs as operands: 3 edges into it
    lse_name = [line.split()[0] for line in dot.splitlines()
                if 'label="logsumexp"' in line][0]
    assert sum(1 for line in dot.splitlines() if f"-> {lse_name}" in line) == 3


def test_reference_module_has_the_primitives():
    xs = leaves([1.0, 2.0, 3.0], ref.Value)
    assert ref.sum(xs).data == 6.0
    assert [round(p.data, 12) for p in ref.softmax(xs)] == [
        round(math.exp(x - math.log(sum(math.exp(y) for y in (1, 2, 3)))), 12)
        for x in (1, 2, 3)]
    with pytest.raises(ValueError, match="empty"):
        ref.logsumexp([])
    with pytest.raises(IndexError):
        ref.cross_entropy(xs, 3)
    assert xs[0].softplus().data == Value(1.0).softplus().data
    assert xs[0].log1p().data == math.log1p(1.0)
