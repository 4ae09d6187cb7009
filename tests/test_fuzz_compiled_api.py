"""Fuzz the public compiled API with malformed arguments (issue #12).

Every call gets arguments drawn from a zoo of wrong and borderline values:
arrays of every dtype (float32/64, ints, bool, complex, object, strings,
non-native byte order), of wrong and 0-size shapes, non-contiguous and
zero-stride (broadcast, "huge") views, read-only arrays, scalars, None,
lists, NaN/inf learning rates.  The property: a clean exception of a
documented kind, or the correct result -- checked against the same function
written in numpy (for replays) or the eager engine's backward (gradients).
Also run under the sanitizer build (.ci/sanitize.sh), where any out-of-bounds
access aborts.
"""
import math
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastgrad  # noqa: E402
from fastgrad import Value, compile, num_grad  # noqa: E402

pytestmark = pytest.mark.compiled_only("fuzzes the compiled replay's API")

CLEAN = (TypeError, ValueError, RuntimeError, MemoryError, OverflowError, IndexError)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

W = (0.5, -1.25)


def _program():
    w = [Value(W[0]), Value(W[1])]
    prog = compile(lambda v: [(v[0] * w[0] + v[1] * w[1]).tanh() + v[2] * w[0],
                              v[1] * v[2] - w[1]], 3, params=w)
    return prog, w


def _oracle(X):
    """The program's two outputs in numpy, rows of X (float64, (B, 3))."""
    w0, w1 = W
    with np.errstate(all="ignore"):
        return np.stack([np.tanh(X[:, 0] * w0 + X[:, 1] * w1) + X[:, 2] * w0,
                         X[:, 1] * X[:, 2] - w1], axis=1)


DTYPES = [np.float64, np.float32, np.int64, np.int8, np.uint16, np.bool_,
          np.complex128, object, "U3", ">f8", np.float16]


@st.composite
def arrays(draw, width=3):
    """An array that may be anything: wrong dtype, shape, layout, flags."""
    kind = draw(st.sampled_from(["good", "shape", "empty", "dtype", "strided",
                                 "broadcast", "huge", "readonly", "fortran", "0d"]))
    rows = draw(st.integers(0, 5))
    vals = st.one_of(st.floats(-3, 3), st.sampled_from([np.nan, np.inf, -np.inf]))
    if kind == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    elif kind == "empty":
        shape = draw(st.sampled_from([(0, width), (rows, 0), (0,), (0, 0)]))
    elif kind == "0d":
        shape = ()
    else:
        shape = (max(rows, 1), width)
    size = int(np.prod(shape)) if shape else 1
    data = np.array(draw(st.lists(vals, min_size=size, max_size=size)),
                    dtype=np.float64).reshape(shape)
    if kind == "dtype":
        dt = draw(st.sampled_from(DTYPES))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                data = data.astype(dt)
            except (ValueError, OverflowError):
                data = data.astype(np.float32)
    elif kind == "strided":
        data = np.repeat(data, 2, axis=-1)[..., ::2] if data.ndim else data
    elif kind == "broadcast":
        data = np.broadcast_to(data[:1], (draw(st.integers(1, 6)),) + data.shape[1:])
    elif kind == "huge":
        data = np.broadcast_to(np.zeros(width), (2 ** 40, width))
    elif kind == "readonly":
        data = data.copy()
        data.flags.writeable = False
    elif kind == "fortran":
        data = np.asfortranarray(data)
    return data


anything = st.one_of(
    arrays(),
    st.none(),
    st.floats(allow_nan=True),
    st.integers(-(2 ** 70), 2 ** 70),
    st.text(max_size=3),
    st.lists(st.floats(-2, 2), max_size=4),
    st.tuples(arrays(width=2), arrays(width=1)),
    st.just(()),
)

learning_rates = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([True, None, "0.1", 1j, np.float32(0.1),
                                            np.nan, -0.0, 10 ** 400]),
                           st.integers(-5, 5))


def _as_rows(inputs):
    """What the Program reads: rows of float64 (tuple columns side by side)."""
    if isinstance(inputs, tuple):
        mats = [np.asarray(a, dtype=np.float64) for a in inputs]
        mats = [m.reshape(-1, 1) if m.ndim == 1 else m for m in mats]
        return np.hstack(mats)
    X = np.asarray(inputs, dtype=np.float64)
    return X.reshape(-1, 1) if X.ndim == 1 else X


def _same(a, b):
    return np.allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@SETTINGS
@given(inputs=anything)
def test_fuzz_predict(inputs):
    prog, _ = _program()
    try:
        out = prog.predict(inputs)
    except CLEAN:
        return
    assert _same(out, _oracle(_as_rows(inputs)))


@SETTINGS
@given(inputs=anything, out=anything)
def test_fuzz_predict_out(inputs, out):
    prog, _ = _program()
    if isinstance(out, np.ndarray) and out.flags.writeable:
        out = out.copy()              # predict may write into it
    try:
        res = prog.predict(inputs, out=out)
    except CLEAN:
        return
    assert res is out or out is None
    assert _same(np.asarray(res).reshape(-1, 2), _oracle(_as_rows(inputs)))


@SETTINGS
@given(inputs=anything, reduce=st.sampled_from(["mean", "sum", "max", None, 1]),
       grad=st.booleans(), outputs=st.one_of(st.none(), arrays(width=2)),
       input_grad=st.one_of(st.none(), arrays()),
       param_grad=st.one_of(st.none(), arrays(width=2)))
def test_fuzz_batch(inputs, reduce, grad, outputs, input_grad, param_grad):
    prog, _w = _program()
    try:
        loss = prog.batch(inputs, reduce=reduce, grad=grad, outputs=outputs,
                          input_grad=input_grad, param_grad=param_grad)
    except CLEAN:
        return
    X = _as_rows(inputs)
    per_row = _oracle(X)[:, 0]
    expected = per_row.sum() if reduce == "sum" else per_row.sum() * (1.0 / len(X))
    assert _same(loss, expected)
    if outputs is not None:
        assert _same(outputs, _oracle(X))


@SETTINGS
@given(inputs=anything, lr=learning_rates)
def test_fuzz_sgd_step(inputs, lr):
    prog, w = _program()
    before = [p.data for p in w]
    try:
        prog.sgd_step(inputs, lr)
    except CLEAN:
        assert [p.data for p in w] == before      # nothing applied
        return
    assert isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr >= 0


@SETTINGS
@given(x=anything, accumulate=st.booleans(),
       param_grad=st.one_of(st.none(), arrays(width=2)))
def test_fuzz_forward_and_value_and_grad(x, accumulate, param_grad):
    prog, _w = _program()
    try:
        y = prog.forward(x)
    except CLEAN:
        y = None
    if y is not None:
        assert _same(np.asarray(y), _oracle(_as_rows(x).reshape(1, 3))[0])
    try:
        val, gin = prog.value_and_grad(x, accumulate=accumulate, param_grad=param_grad)
    except CLEAN:
        return
    # oracle: the eager engine
    v = [Value(float(t)) for t in np.asarray(x, dtype=np.float64).reshape(-1)]
    a, b = Value(W[0]), Value(W[1])
    out = (v[0] * a + v[1] * b).tanh() + v[2] * a
    out.backward()
    assert _same(val, out.data)
    assert _same(gin, [t.grad for t in v])


@SETTINGS
@given(theta=anything, x=anything)
def test_fuzz_eval_params(theta, x):
    prog, _ = _program()
    try:
        y = prog.eval_params(theta, x)
    except CLEAN:
        return
    th = np.asarray(theta, dtype=np.float64).reshape(-1)
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    expected = math.tanh(xv[0] * th[0] + xv[1] * th[1]) + xv[2] * th[0]
    assert _same(y, expected)


@SETTINGS
@given(x=anything, theta=anything, h=st.one_of(st.floats(allow_nan=True),
                                                 st.sampled_from([1e-5, 0, -1, None, "h"])))
def test_fuzz_num_grad_of_program(x, theta, h):
    prog, _ = _program()
    for target, arg in ((prog, x), (None, theta)):
        try:
            if target is None:
                target = prog.wrt_params(x)
            if isinstance(arg, np.ndarray) and arg.flags.writeable:
                arg = arg.copy()
            g = num_grad(target, arg, h=h)
        except CLEAN:
            continue
        assert isinstance(g, np.ndarray) and g.shape == np.shape(arg)


@SETTINGS
@given(x=anything)
def test_fuzz_gradcheck_of_program(x):
    prog, _ = _program()
    if isinstance(x, np.ndarray) and x.flags.writeable:
        x = x.copy()
    try:
        ok = fastgrad.gradcheck(prog, x, raise_exception=False)
    except CLEAN:
        return
    assert ok in (True, False)


@SETTINGS
@given(n_inputs=st.one_of(st.integers(-3, 5), st.none(), st.floats(), st.text(max_size=2)),
       params=st.one_of(st.none(), st.lists(st.sampled_from([0, "w", None]), max_size=3)))
def test_fuzz_compile_arguments(n_inputs, params):
    w = Value(2.0)
    ps = [w] if params is None else [w if p == 0 else p for p in params]
    try:
        with warnings.catch_warnings():
            # w left out of params is baked in, and compile says so
            warnings.simplefilter("ignore", fastgrad.TracerWarning)
            prog = compile(lambda v: sum(v, w * w), n_inputs, params=ps)
    except CLEAN:
        return
    X = np.ones((2, prog.n_inputs))
    assert _same(prog.predict(X), np.full(2, prog.n_inputs + 4.0))
