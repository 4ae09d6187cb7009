"""Grad mode is thread-local (issue #12, item 7): ``no_grad`` in one thread
never switches recording off in another, and overlapping blocks in two
threads each restore their own thread's setting."""
import random
import sys
import threading

import pytest

import fastgrad
import fastgrad.engine as fg_engine
import fastgrad.reference as ref_engine
from fastgrad import gradcheck


@pytest.fixture(autouse=True)
def fast_thread_switches():
    # switch threads every few microseconds so that the threads' steps
    # really interleave (the bug needed the evaluator to be inside no_grad
    # while the trainer built its graph)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)
    assert fg_engine.is_grad_enabled() and ref_engine.is_grad_enabled()


ENGINES = [pytest.param(fg_engine, fastgrad.nn.MLP, id="fastgrad"),
           pytest.param(ref_engine, ref_engine.MLP, id="reference")]

XS = [[0.3, -1.2], [1.5, 0.25], [-0.7, 0.9], [0.1, 0.4]]
YS = [1.0, -1.0, 1.0, -1.0]


def _train(MLP, steps):
    """Plain SGD on a fixed tiny data set; the gradients of every step."""
    random.seed(3)
    model = MLP(2, [6, 6, 1])
    history = []
    for _ in range(steps):
        loss = sum(((model(x) - y) ** 2 for x, y in zip(XS, YS)), 0.0)
        for p in model.parameters():
            p.grad = 0.0
        loss.backward()
        history.append([p.grad for p in model.parameters()])
        for p in model.parameters():
            p.data -= 0.05 * p.grad
    return history


def _run_while(worker, stop):
    def loop():
        while not stop.is_set():
            worker()
    t = threading.Thread(target=loop)
    t.start()
    return t


@pytest.mark.parametrize("engine, MLP", ENGINES)
def test_grad_mode_train_while_other_thread_evaluates_under_no_grad(engine, MLP):
    # was: while the evaluator was inside no_grad, backward() in the trainer
    # left every gradient at 0 (200 of 200 steps)
    expected = _train(MLP, 30)
    assert any(g != 0.0 for step in expected for g in step)
    random.seed(11)
    other = MLP(2, [6, 1])
    ng = engine.no_grad()

    def evaluate():
        with ng:
            assert not engine.is_grad_enabled()
            for x in XS:
                other(x)

    stop = threading.Event()
    t = _run_while(evaluate, stop)
    try:
        got = _train(MLP, 30)
    finally:
        stop.set()
        t.join()
    assert got == expected


def test_grad_mode_gradcheck_in_other_thread_keeps_training_grads():
    # was: gradcheck (recording off for its numerical evaluations) in one
    # thread zeroed other threads' training steps
    expected = _train(fastgrad.nn.MLP, 20)
    a, b = fastgrad.Value(0.5), fastgrad.Value(-1.5)

    def check():
        assert gradcheck(lambda x, y: (x * y).tanh() + x ** 2, [a, b])

    stop = threading.Event()
    t = _run_while(check, stop)
    try:
        got = _train(fastgrad.nn.MLP, 20)
    finally:
        stop.set()
        t.join()
    assert got == expected


@pytest.mark.parametrize("engine, MLP", ENGINES)
@pytest.mark.parametrize("shared", [True, False], ids=["one_instance", "two_instances"])
def test_grad_mode_overlapping_blocks_restore_per_thread(engine, MLP, shared):
    # A enters, B enters, A exits, B exits: was restored out of order, so
    # recording stayed off for the rest of the process
    ng_a = engine.no_grad()
    ng_b = ng_a if shared else engine.no_grad()
    steps = [threading.Event() for _ in range(4)]
    seen = {}
    errors = []

    def thread_a():
        try:
            with ng_a:
                steps[0].set()                   # A entered
                steps[1].wait(5)                 # B entered
                seen["a_inside"] = engine.is_grad_enabled()
            seen["a_after"] = engine.is_grad_enabled()
            x = engine.Value(2.0)
            seen["a_records"] = (x * x)._prev != set()
            steps[2].set()                       # A exited
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def thread_b():
        try:
            steps[0].wait(5)
            with ng_b:
                steps[1].set()
                steps[2].wait(5)
                seen["b_inside"] = engine.is_grad_enabled()
            seen["b_after"] = engine.is_grad_enabled()
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert seen == {"a_inside": False, "a_after": True, "a_records": True,
                    "b_inside": False, "b_after": True}
    x = engine.Value(2.0)
    assert engine.is_grad_enabled() and (x * x)._prev != set()


@pytest.mark.parametrize("engine, MLP", ENGINES)
def test_grad_mode_each_thread_starts_enabled(engine, MLP):
    seen = []

    def probe():
        x = engine.Value(1.0)
        seen.append((engine.is_grad_enabled(), (x + 1)._prev != set()))

    with engine.no_grad():
        t = threading.Thread(target=probe)
        t.start()
        t.join()
        assert not engine.is_grad_enabled()
    assert seen == [(True, True)]


@pytest.mark.parametrize("engine, MLP", ENGINES)
def test_grad_mode_thread_ending_with_recording_off(engine, MLP):
    # a thread that switches recording off and never back on affects
    # nobody, during its life or after it
    inside = threading.Event()
    release = threading.Event()

    def leaves_it_off():
        engine.set_grad_enabled(False)
        inside.set()
        release.wait(5)

    t = threading.Thread(target=leaves_it_off)
    t.start()
    inside.wait(5)
    x = engine.Value(3.0)
    assert engine.is_grad_enabled() and (x * 2)._prev != set()
    release.set()
    t.join()
    assert engine.is_grad_enabled() and (x * 2)._prev != set()


@pytest.mark.compiled_only("uses fastgrad.compile")
def test_grad_mode_compile_while_other_thread_is_in_no_grad():
    # compile() checks the calling thread's mode only (it used to refuse to
    # trace whenever any thread was inside no_grad)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with fastgrad.no_grad():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        inside.wait(5)
        w = fastgrad.Value(2.0)
        prog = fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
        assert prog.forward([3.0]) == 6.0
    finally:
        release.set()
        t.join()
    with fastgrad.no_grad():
        with pytest.raises(RuntimeError, match="recording is off"):
            fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
