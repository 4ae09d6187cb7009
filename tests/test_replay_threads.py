"""num_threads in the compiled replay, and Ctrl-C in replays of layer programs.

A batch is cut into fixed column blocks (they depend on the batch size and
the program, never on the number of threads) whose partial sums are combined
in block order, so 1, 2, 3 or 8 threads give the same bits -- compared as
bytes, -0.0 included (``np.array_equal`` would call -0.0 and +0.0 equal).
Small chunk and block sizes (the tuning hooks) make even a short batch many
blocks, so that the threads really share the work.
"""
import gc
import math
import random
import threading
import time

import numpy as np
import pytest

import fastgrad
from fastgrad import Value
from _interrupt import interrupt_inside, needs_timer_signal

pytestmark = pytest.mark.compiled_only("the compiled replay's num_threads")

if fastgrad.COMPILED:
    from fastgrad import _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP

THREADS = (1, 2, 3, 8)


def same(a, b, msg=""):
    a = np.array(a, dtype=np.float64, copy=True)
    b = np.array(b, dtype=np.float64, copy=True)
    assert a.shape == b.shape, msg
    a[np.isnan(a)] = np.nan
    b[np.isnan(b)] = np.nan
    assert a.tobytes() == b.tobytes(), msg


@pytest.fixture
def many_blocks():
    """Chunks of ~32 columns, blocks of 2 chunks: a 1,000-row batch is ~16
    blocks."""
    old_c = _replay._set_chunk_bytes(16 * 200 * 32)
    old_b = _replay._set_block_cols(40)
    try:
        yield
    finally:
        _replay._set_chunk_bytes(old_c)
        _replay._set_block_cols(old_b)


def _mlp(width=20, seed=3):
    random.seed(seed)
    return MLP(2, [width, width, 1])


def _data(B, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, 2))
    X[::7] = 0.0                          # signed zeros in the sums
    X[1::11, 1] = -0.0
    y = np.where(rng.random(B) < 0.5, -1.0, 1.0)
    return X, y


def _batch_all(prog, inputs, B, n_threads, **kw):
    for p in prog.params:
        p.grad = 0.0
    pg = np.empty(prog.n_params)
    gin = np.empty((B, prog.n_inputs))
    outs = np.empty((B, prog.n_outputs))
    loss = prog.batch(inputs, outputs=outs, param_grad=pg, input_grad=gin,
                      num_threads=n_threads, **kw)
    return loss, pg, gin, outs, np.array([p.grad for p in prog.params])


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_batch_bits_do_not_depend_on_num_threads(many_blocks, reduce):
    model = _mlp()
    step = make_demo_step(model)
    prog = step.program
    X, y = _data(1000)
    base = _batch_all(prog, (X, y), 1000, 1, reduce=reduce)
    for n in THREADS[1:]:
        res = _batch_all(prog, (X, y), 1000, n, reduce=reduce)
        for a, b in zip(res, base):
            same(a, b, f"{n} threads")
    # and without gradients (the loss and outputs only)
    outs1 = np.empty((1000, 2))
    l1 = prog.batch((X, y), grad=False, outputs=outs1)
    for n in THREADS[1:]:
        outs = np.empty((1000, 2))
        same(prog.batch((X, y), grad=False, outputs=outs, num_threads=n), l1)
        same(outs, outs1)


def test_threads_agree_with_eager(many_blocks):
    # the forward values are still eager's floats; gradients to rounding
    model = _mlp(width=5)
    params = model.parameters()
    prog = fastgrad.compile(lambda x: model(x), 2, params=params)
    X, _ = _data(300, seed=4)
    for p in params:
        p.grad = 0.0
    outs = [model([Value(a), Value(b)]) for a, b in X]
    total = sum(outs)
    total.backward()
    eager = np.array([p.grad for p in params])
    for n in THREADS:
        loss, pg, _, o, _ = _batch_all(prog, X, 300, n, reduce="sum")
        same(loss, total.data)
        same(o[:, 0], [v.data for v in outs])
        np.testing.assert_allclose(pg, eager, rtol=1e-12, atol=1e-12 * np.abs(eager).max())


def test_sgd_step_predict_and_demo_step_across_threads(many_blocks):
    X, y = _data(777, seed=1)
    runs = {}
    for n in THREADS:
        model = _mlp(seed=5)
        step = make_demo_step(model, num_threads=n)
        assert step.num_threads == n
        hist = [step(X, y, 0.05) for _ in range(3)]
        prog = step.program
        loss = prog.sgd_step((X, y), 0.05, num_threads=n)
        pred = prog.predict((X, y), num_threads=n)
        runs[n] = (hist, loss, pred, np.array([p.data for p in model.parameters()]),
                   np.array([p.grad for p in model.parameters()]))
    for n in THREADS[1:]:
        assert runs[n][0] == runs[1][0]
        for a, b in zip(runs[n][1:], runs[1][1:]):
            same(a, b, f"{n} threads")


def test_programs_without_layers_across_threads(many_blocks):
    # per-instruction gradients into scalars (w * x, x / w, a shared bias),
    # each block keeps its own partial sums
    w, c = Value(0.7), Value(-0.3)

    def fn(x):
        # fastgrad.sum / logsumexp with scalar operands: n-ary instructions
        # whose backward sums into scalar slots too
        y = (x[0] * w + c).tanh() + (x[1] / w) * c + (x[0] - c).relu()
        return [y + fastgrad.sum([x[0], w, x[1] * c]) + fastgrad.logsumexp([x[1], c]),
                x[0] * c]

    old = _replay._set_layers(False)
    try:
        prog = fastgrad.compile(fn, 2, params=[w, c])
    finally:
        _replay._set_layers(old)
    assert prog.n_layers == 0
    X, _ = _data(900, seed=2)
    base = _batch_all(prog, X, 900, 1)
    # every block's scalar partial sums reach the totals: the same gradients
    # (to rounding: other sums) as one block, and as eager mode's
    old = _replay._set_block_cols(10**9)
    try:
        one = _batch_all(prog, X, 900, 1)
    finally:
        _replay._set_block_cols(old)
    ws = [w, c]
    for p in ws:
        p.grad = 0.0
    total = None
    for row in X:
        y = fn([Value(float(v)) for v in row])[0]
        total = y if total is None else total + y
    total.backward()
    eager = np.array([p.grad for p in ws]) / 900   # (batch: reduce="mean")
    np.testing.assert_allclose(base[1], one[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(base[1], eager, rtol=1e-11, atol=1e-11)
    for n in THREADS[1:]:
        for a, b in zip(_batch_all(prog, X, 900, n), base):
            same(a, b, f"{n} threads")


def test_one_row_and_few_blocks(many_blocks):
    # fewer blocks than threads: the extra threads are never started
    model = _mlp(width=9)
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    for B in (1, 2, 41, 79):
        X, _ = _data(B, seed=B)
        base = _batch_all(prog, X, B, 1)
        for n in (2, 8):
            for a, b in zip(_batch_all(prog, X, B, n), base):
                same(a, b, f"B={B} {n} threads")


def test_blocks_share_the_tiles_evenly():
    # block starts on 32-column tiles, sizes within one tile of each other
    # (not full blocks and a short remainder), first 0 and last B
    for B, nb in [(10_000, 20), (1000, 16), (777, 13), (1024, 2), (100, 1), (33, 2),
                  (4096 * 3 + 5, 7)]:
        s = _replay._block_starts(B, nb)
        assert len(s) == nb + 1 and s[0] == 0 and s[-1] == B, (B, nb, s)
        sizes = np.diff(s)
        assert (sizes > 0).all(), (B, nb, s)
        assert all(v % 32 == 0 for v in s[:-1]), (B, nb, s)
        tiles = -(-sizes // 32)
        assert tiles.max() - tiles.min() <= 1, (B, nb, s)
    assert _replay._block_starts(10_000, 20)[:3] == [0, 480, 992]
    assert _replay._block_starts(1024, 2) == [0, 512, 1024]


@pytest.mark.parametrize("B", [1337, 2500])
def test_default_blocks_batch_not_a_multiple_of_the_block(B):
    # the default chunk and block sizes: several blocks of 480 or 512
    # columns and no short last one; the same bits for every thread count,
    # forward = eager's floats, gradients = eager's to rounding
    model = _mlp(width=6, seed=11)
    params = model.parameters()
    prog = fastgrad.compile(lambda x: model(x), 2, params=params)
    old = _replay._set_chunk_bytes(16 * 30 * 96)      # chunks of < 512 columns
    try:
        X, _ = _data(B, seed=12)
        base = _batch_all(prog, X, B, 1, reduce="sum")
        ch = _replay._last_chunk()
        full = ch * -(-512 // ch)                       # a full block's columns
        assert ch < 512 and B > full and B % full != 0, ch
        for n in THREADS[1:]:
            for a, b in zip(_batch_all(prog, X, B, n, reduce="sum"), base):
                same(a, b, f"B={B} {n} threads")
    finally:
        _replay._set_chunk_bytes(old)
    for p in params:
        p.grad = 0.0
    outs = [model([Value(a), Value(b)]) for a, b in X]
    total = sum(outs)
    total.backward()
    eager = np.array([p.grad for p in params])
    same(base[0], total.data)
    same(base[3][:, 0], [v.data for v in outs])
    np.testing.assert_allclose(base[1], eager, rtol=1e-12, atol=1e-12 * np.abs(eager).max())


def test_num_threads_none_and_errors():
    model = _mlp(width=4)
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    X, _ = _data(50)
    ref = prog.batch(X, grad=False)
    same(prog.batch(X, grad=False, num_threads=None), ref)
    same(prog.predict(X, num_threads=None), prog.predict(X))
    for bad, exc in [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                     ("2", TypeError), (True, TypeError), (np.float64(2), TypeError)]:
        with pytest.raises(exc, match="num_threads"):
            prog.batch(X, num_threads=bad)
        with pytest.raises(exc, match="num_threads"):
            prog.predict(X, num_threads=bad)
        with pytest.raises(exc, match="num_threads"):
            prog.sgd_step(X, 0.1, num_threads=bad)
    # the demo step says so before compiling the model
    with pytest.raises(ValueError, match="make_demo_step: num_threads"):
        make_demo_step(model, num_threads=0)
    same(prog.batch(X, grad=False, num_threads=np.int64(2)), ref)


def test_threaded_call_is_still_not_reentrant():
    model = _mlp(width=32)
    prog = make_demo_step(model, num_threads=2).program
    X, y = _data(20000, seed=6)
    ref = prog.batch((X, y), grad=False)
    outcomes = []

    def call():
        try:
            outcomes.append(prog.batch((X, y), grad=False, num_threads=2))
        except RuntimeError as exc:
            outcomes.append(exc)

    for _ in range(20):
        t = threading.Thread(target=call)
        t.start()
        call()
        t.join()
    # every call either ran (correctly: alone) or refused clearly
    assert len(outcomes) == 40
    for o in outcomes:
        if isinstance(o, RuntimeError):
            assert "not re-entrant" in str(o)
        else:
            same(o, ref)


def test_gil_is_released_by_a_threaded_batch():
    model = _mlp(width=64)
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    X, _ = _data(60000, seed=7)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.0005)

    t = threading.Thread(target=count)
    t.start()
    try:
        n0 = len(ticks)
        prog.batch(X, num_threads=2)
        n1 = len(ticks)
    finally:
        stop.set()
        t.join()
    assert n1 > n0


# ---------------------------------------------------------------------------
# Ctrl-C (issue 26 item 1): a layer counts H * K per column in the signal
# checks, so replays of layer programs stop soon after a SIGINT.  These
# tests assert "interrupted, state consistent"; the latency is measured in
# benchmarks/bench_interrupt.py.
# ---------------------------------------------------------------------------

_WIDE = {}


def _wide_program():
    """MLP(2, [256, 256, 1]): 196,608 multiply-adds per row in its layers,
    which the signal checks used to count as ~10 operations (a 30,000-row
    batch was never checked)."""
    if not _WIDE:
        model = _mlp(width=256, seed=8)
        _WIDE["model"] = model
        _WIDE["prog"] = make_demo_step(model).program
    return _WIDE["model"], _WIDE["prog"]


@needs_timer_signal
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("what", ["batch", "sgd_step"])
def test_ctrl_c_stops_a_layer_replay(n_threads, what):
    model, prog = _wide_program()
    assert prog.n_layers == 3
    B = 30_000
    X, y = _data(B, seed=9)
    outputs = np.full((B, 2), np.nan)
    state = {"finished": True}

    def call():
        # no garbage collection while the timer runs: an interrupt landing in
        # a gc callback (hypothesis registers one) would be "unraisable"
        gc.disable()
        try:
            state["finished"] = True
            state["before"] = [(p.data, p.grad) for p in model.parameters()]
            state["finished"] = False
            outputs[:] = np.nan
            if what == "batch":
                prog.batch((X, y), outputs=outputs, num_threads=n_threads)
            else:
                prog.sgd_step((X, y), 0.1, outputs=outputs, num_threads=n_threads)
            state["finished"] = True
        finally:
            gc.enable()

    def check():
        # interrupted: the parameters (.data and .grad) untouched, the replay
        # stopped before the last rows
        if not state["finished"]:
            assert [(p.data, p.grad) for p in model.parameters()] == state["before"]
            assert np.isnan(outputs[-1]).all()

    # raised inside the replay's loop (not after it ran to its end)
    gc.collect()
    interrupt_inside(call, "_replay", check=check, delay=0.05)
    # and the Program works again, with the same results as before
    small = (X[:100], y[:100])
    same(prog.batch(small, num_threads=n_threads), prog.batch(small))


@needs_timer_signal
def test_ctrl_c_stops_num_grad_of_a_layer_program():
    # num_grad(prog.wrt_params(x)): two evaluations per parameter, each
    # H * K multiply-adds in a layer that used to count as one operation
    # (uninterrupted: 4e9 multiply-adds, seconds)
    model = _mlp(width=200, seed=10)
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    theta = prog.param_values()
    original = theta.copy()

    def check():
        same(theta, original)          # the perturbed entry restored

    f = prog.wrt_params([0.3, -0.2])

    def call():
        gc.disable()                   # (see test_ctrl_c_stops_a_layer_replay)
        try:
            fastgrad.num_grad(f, theta)
        finally:
            gc.enable()

    gc.collect()
    interrupt_inside(call, "_numgrad", check=check, delay=0.05)
    assert math.isfinite(prog.eval_params(theta, [0.3, -0.2]))
