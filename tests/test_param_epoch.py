"""SGD steps that skip reading the parameters (issue 21, the data write epoch).

A fused SGD store (the demo step, ``sgd_step``) writes each new ``.data``
into the program's own buffers too, and notes the data write epoch; the next
step of that program reads those buffers instead of the Values when no
Value's data was written since.  Every writer of ``Value.data`` must move
the epoch, and every other use of the buffers must drop them.

The oracle is a program compiled afresh for every step (its first step
always reads the Values, whatever the epoch), run on a twin model (same
seed) with the same edits: the losses, ``.data`` and ``.grad`` must be the
same bits (``tobytes()``).  Each test also checks that the reuse was taken
where it should be (``_param_reuses``), so it cannot pass by never reusing.
"""
import copy
import pickle
import random
import threading

import numpy as np
import pytest
from _steps import bits, moons

import fastgrad

pytestmark = pytest.mark.compiled_only("the compiled replay's parameter reuse")

if fastgrad.COMPILED:
    from fastgrad import _numgrad, _optim, _replay
    from fastgrad.compiled import make_demo_step
    from fastgrad.nn import MLP
    from fastgrad.optim import SGD, Adam


def state(m):
    ps = m.parameters()
    return bits([p.data for p in ps], [p.grad for p in ps])


def model(H=6, seed=1337):
    random.seed(seed)
    return MLP(2, [H, H, 1])


X, Y = moons(40)


def run(edits, H=6, threads=1):
    """Steps of one demo program with ``edits[k](m, prog)`` after step k,
    and the same on a twin whose every step is a fresh program: both
    traces of bits (with what each edit returns), and the reuses the first
    one took."""
    m = model(H)
    step = make_demo_step(m, num_threads=threads)
    r0 = _replay._param_reuses()
    got = []
    for ed in edits:
        got.append(bits(step(X, Y, 0.05)) + state(m))
        got.append(bits(ed(m, step.program)))
    got.append(bits(step(X, Y, 0.05)) + state(m))
    reused = _replay._param_reuses() - r0
    t = model(H)
    want = []
    for ed in edits:
        want.append(bits(make_demo_step(t, num_threads=threads)(X, Y, 0.05)) + state(t))
        want.append(bits(ed(t, None)))
    want.append(bits(make_demo_step(t, num_threads=threads)(X, Y, 0.05)) + state(t))
    return got, want, reused


def nothing(m, prog):
    pass


def test_reuse_is_taken_and_exact():
    got, want, reused = run([nothing] * 3)
    assert got == want
    assert reused == 3


def test_reuse_is_taken_with_threads():
    got, want, reused = run([nothing] * 2, H=16, threads=3)
    assert got == want
    assert reused == 2


def test_switch_off_reads_the_values():
    old = _replay._set_param_reuse(False)
    try:
        got, want, reused = run([nothing] * 2)
    finally:
        _replay._set_param_reuse(old)
    assert got == want
    assert reused == 0


# -- every writer of Value.data between two steps ------------------------------

def set_attr(m, prog):
    ps = m.parameters()
    ps[0].data = 0.75
    ps[-1].data = -0.0
    ps[len(ps) // 2].data += 0.5          # a weight of the second layer


def set_one_last(m, prog):
    # the last parameter only (the store's first write, the load's last read)
    m.parameters()[-1].data = 2.0


def setattr_builtin(m, prog):
    setattr(m.parameters()[4], "data", -1.25)


def reinit(m, prog):
    # Value.__init__ called again on a parameter
    m.parameters()[5].__init__(3.5)


def optim_sgd(m, prog):
    ps = m.parameters()
    for p in ps:
        p.grad = 0.125
    SGD(ps, lr=0.5).step()


def optim_adam(m, prog):
    ps = m.parameters()
    for p in ps:
        p.grad = -0.25
    Adam(ps, lr=0.01).step()


def optim_sgd_momentum(m, prog):
    ps = m.parameters()
    for p in ps:
        p.grad = 0.125
    SGD(ps, lr=0.5, momentum=0.9).step()


def slots_set_data(m, prog):
    ps = m.parameters()
    _optim.ValueSlots(ps).set_data(np.linspace(-1.0, 1.0, len(ps)))


def _numgrad_of_step(m, prog, method):
    # num_grad perturbs .data, calls f (here: a training step of this very
    # program, which stores), then puts the old bits back: each f call must
    # see the perturbed value, and the step after must read the restored
    # one, not what the inner step stored
    ps = m.parameters()
    inp = np.column_stack([X, Y])

    def f(xs):
        if prog is None:
            return make_demo_step(m)(X, Y, 0.0)[0]
        return prog.sgd_step(inp, 0.0)
    return fastgrad.num_grad(f, [ps[1], ps[-2]], method=method)


def numgrad_runs_step(m, prog):
    return _numgrad_of_step(m, prog, "central")


def numgrad_forward_runs_step(m, prog):
    return _numgrad_of_step(m, prog, "forward")


def other_program_step(m, prog):
    # another training program on the same parameters steps (and stores)
    make_demo_step(m, alpha=1e-2)(X[:7], Y[:7], 0.1)


def other_program_sgd_step(m, prog):
    ps = m.parameters()

    def f(x):
        return [(m([x[0], x[1]]) - x[2]) ** 2]
    other = fastgrad.compile(f, 3, params=ps)
    other.sgd_step(np.column_stack([X[:9], Y[:9]]), 0.05)


def other_program_one_row(m, prog):
    # a one-row step: the generic store
    make_demo_step(m)(X[:1], Y[:1], 0.3)


def subset_program_step(m, prog):
    # a program over some of the parameters steps
    ps = m.parameters()[::5]

    def f(x):
        return [(sum(p * x[k % 2] for k, p in enumerate(ps)) - x[2]) ** 2]
    fastgrad.compile(f, 3, params=ps).sgd_step(np.column_stack([X, Y]), 0.1)


def pickle_roundtrip(m, prog):
    # unpickling makes new Values: the parameters keep their data
    ps = m.parameters()
    pickle.loads(pickle.dumps(ps[0]))
    copy.deepcopy(ps[1])


def materialize_const(m, prog):
    # reading _prev of a constant node after backward() writes (and puts
    # back) the leaf's data
    p = m.parameters()[3]
    n = p * 3.0
    n.backward()
    n._prev


def thread_writes(m, prog):
    def w():
        m.parameters()[6].data = -2.5
    t = threading.Thread(target=w)
    t.start()
    t.join()


WRITERS = [set_attr, set_one_last, setattr_builtin, reinit, optim_sgd, optim_adam,
           optim_sgd_momentum, slots_set_data, numgrad_runs_step, numgrad_forward_runs_step,
           other_program_step, other_program_sgd_step, other_program_one_row,
           subset_program_step, pickle_roundtrip, materialize_const, thread_writes]


@pytest.mark.parametrize("edit", WRITERS, ids=lambda f: f.__name__)
def test_writer_between_steps(edit):
    got, want, reused = run([nothing, edit, nothing])
    assert got == want
    assert reused >= 2        # the steps around the edit still reuse


def test_every_writer_in_turn():
    got, want, reused = run(WRITERS)
    assert got == want


# -- every other use of the program's buffers between two steps ------------------

def forward_call(m, prog):
    x = np.array([0.3, -0.2, 1.0])
    if prog is not None:
        prog.forward(x)
        prog.forward([0.1, 0.2, 1.0])


def predict_call(m, prog):
    if prog is not None:
        prog.predict(np.column_stack([X, Y]))


def batch_call(m, prog):
    # a batch with gradients (sets .grad: the twin does the same)
    inp = np.column_stack([X[:11], Y[:11]])
    p = prog if prog is not None else make_demo_step(m).program
    p.batch(inp, accumulate=False)


def value_and_grad_call(m, prog):
    p = prog if prog is not None else make_demo_step(m).program
    p.value_and_grad(np.array([0.5, 0.5, -1.0]), accumulate=False)


def theta_num_grad(m, prog):
    # a finite-difference loop at other parameter values (its own scratch)
    if prog is not None:
        theta = np.linspace(-0.5, 0.5, prog.n_params)
        fastgrad.num_grad(prog.wrt_params([0.2, 0.4, 1.0]), theta)


def theta_value_and_grad(m, prog):
    # gradcheck's analytic part: a replay with gradients at theta, through
    # the Program's own buffers (theta_in)
    if prog is not None:
        theta = np.linspace(-0.5, 0.5, prog.n_params)
        ev = prog.wrt_params([0.2, 0.4, 1.0])._fd_evaluator(theta)
        _numgrad.evaluator_gradient(ev, theta)


def eval_params_call(m, prog):
    if prog is not None:
        prog.eval_params(np.zeros(prog.n_params), [0.1, 0.2, 1.0])


def plain_sgd_step(m, prog):
    # the same program's sgd_step (another entry to the fused store)
    p = prog if prog is not None else make_demo_step(m).program
    p.sgd_step(np.column_stack([X[:13], Y[:13]]), 0.2)


def same_program_one_row(m, prog):
    # this program's one-row step (the row path and the generic store)
    p = prog if prog is not None else make_demo_step(m).program
    p.sgd_step(np.column_stack([X[:1], Y[:1]]), 0.2)


BUFFER_USERS = [forward_call, predict_call, batch_call, value_and_grad_call,
                theta_num_grad, theta_value_and_grad, eval_params_call,
                plain_sgd_step, same_program_one_row]


@pytest.mark.parametrize("use", BUFFER_USERS, ids=lambda f: f.__name__)
def test_buffer_user_between_steps(use):
    got, want, reused = run([nothing, use, nothing])
    assert got == want
    assert reused >= 2


def test_two_programs_sharing_parameters_alternate():
    m = model()
    a, b = make_demo_step(m), make_demo_step(m, alpha=1e-3)
    got = []
    for k in range(6):
        got.append(bits((a if k % 3 else b)(X, Y, 0.05)) + state(m))
    t = model()
    want = []
    for k in range(6):
        want.append(bits(make_demo_step(t, alpha=1e-4 if k % 3 else 1e-3)(X, Y, 0.05))
                    + state(t))
    assert got == want


def test_epoch_moves_on_each_writer():
    # the unit view: each writer moves the counter
    m = model()
    for w in (set_attr, reinit, optim_sgd, optim_adam, slots_set_data,
              numgrad_runs_step, other_program_step):
        e = _replay._data_epoch()
        w(m, None)
        assert _replay._data_epoch() > e, w.__name__


def _other_stepper(m, kind):
    """A step of another program on m's parameters, compiled now."""
    ps = m.parameters()
    inp = np.column_stack([X, Y])
    if kind in ("demo", "demo_one_row"):
        step = make_demo_step(m, alpha=1e-2)
        rows = 1 if kind == "demo_one_row" else 9
        return lambda: step(X[:rows], Y[:rows], 0.1)

    def f(x):
        return [(m([x[0], x[1]]) - x[2]) ** 2]
    prog = fastgrad.compile(f, 3, params=ps, penalty=lambda q: 1e-3 * sum(p * p for p in q))
    if kind == "sgd_step":
        return lambda: prog.sgd_step(inp[:9], 0.05)
    if kind == "sgd_step_one_row":
        return lambda: prog.sgd_step(inp[:1], 0.05)

    def generic():                         # the generic store of a full batch
        old = _replay._set_fused_params(False)
        try:
            return prog.sgd_step(inp[:9], 0.05)
        finally:
            _replay._set_fused_params(old)
    return generic


@pytest.mark.parametrize("kind", ["demo", "demo_one_row", "sgd_step",
                                  "sgd_step_one_row", "generic"])
def test_precompiled_other_program_between_steps(kind):
    # both programs exist before the first step (compiling makes Values,
    # which moves the epoch by itself): only the other's store can tell
    m = model()
    step, other = make_demo_step(m), _other_stepper(m, kind)
    r0 = _replay._param_reuses()
    got = []
    for k in range(3):
        got.append(bits(step(X, Y, 0.05)) + state(m))
        got.append(bits(step(X, Y, 0.05)) + state(m))
        got.append(bits(other()) + state(m))
    assert _replay._param_reuses() - r0 == 3     # the second step of each pair
    t = model()
    want = []
    for k in range(3):
        want.append(bits(make_demo_step(t)(X, Y, 0.05)) + state(t))
        want.append(bits(make_demo_step(t)(X, Y, 0.05)) + state(t))
        want.append(bits(_other_stepper(t, kind)()) + state(t))
    assert got == want


@pytest.mark.parametrize("ahead", [0, 1, 7, 1000])
def test_store_prefetch_distance_changes_nothing(ahead):
    old = _replay._set_store_ahead(ahead)
    try:
        got, want, reused = run([nothing, set_attr, nothing])
    finally:
        _replay._set_store_ahead(old)
    assert got == want
    assert reused == 2


def test_isa_switch_between_steps():
    # the kernels change between steps, the stored panels stay valid
    isas = _replay._supported_isas()
    old = _replay._set_isa("best")
    try:
        m = model(16)
        step = make_demo_step(m)
        got = []
        for k in range(2 * len(isas)):
            _replay._set_isa(isas[k % len(isas)])
            got.append(bits(step(X, Y, 0.05)) + state(m))
        t = model(16)
        want = []
        for k in range(2 * len(isas)):
            _replay._set_isa(isas[k % len(isas)])
            want.append(bits(make_demo_step(t)(X, Y, 0.05)) + state(t))
    finally:
        _replay._set_isa(old)
    assert got == want
