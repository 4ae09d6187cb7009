"""fastgrad.sweep, lr_sweep(executor=...) and DataParallel on real executors.

Oracles: direct serial calls of the same training function (bitwise), the
single-process compiled program on the whole batch (loss curves to 1e-12),
hand-derived values.  Engines: a ProcessPoolExecutor always, a Dask
LocalCluster of 2 worker processes on 127.0.0.1 when ``distributed`` is
installed.

Start method: forkserver with fastgrad preloaded.  Measured here (2-worker
pool up and 4 tasks done, machine shared): spawn 1.05-1.3 s per pool;
forkserver with preload 0.78 s for the first pool (server start), 0.01 s for
every later one; fork 0.02 s, but forking this process once it has threads
(Dask's client, tqdm) is unsafe and Python 3.12+ warns about it.
"""
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import fastgrad
from fastgrad import Value
from fastgrad.distributed import DataParallel, SweepError, sweep
from fastgrad.nn import MLP
from fastgrad.optim import SGD, Adam, lr_sweep

pytestmark = pytest.mark.compiled_only("sweeps and DataParallel are tested on compiled Programs")


def _context():
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # workers start with fastgrad imported: ~0.1 s each instead of ~0.5 s
        ctx.set_forkserver_preload(["fastgrad.distributed", "fastgrad.nn"])
    return ctx


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2, mp_context=_context()) as ex:
        yield ex


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except (FileNotFoundError, ProcessLookupError):
        # gone before the open (ENOENT) or between the open and the read (ESRCH)
        return False


def _wait_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


# -- a small training run, deterministic given (lr, seed) ----------------------

def _make_train():
    # a closure (not importable by name): reaches the workers by cloudpickle
    rng = np.random.default_rng(3)
    X = rng.normal(size=(24, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)

    def train(lr, seed, steps=6):
        random.seed(seed)
        model = MLP(2, [6, 1])
        opt = SGD(model.parameters(), lr=lr, momentum=0.5)
        losses = []
        for _ in range(steps):
            scores = [model([Value(a), Value(b)]) for a, b in X.tolist()]
            loss = sum((1 + -yi * s).relu() for yi, s in zip(y.tolist(), scores)) / len(y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.data)
        return losses

    return train


# -- sweep ----------------------------------------------------------------------

def test_sweep_grid_order_serial():
    res = sweep(lambda a, b: 10 * a + b, {"a": [1, 2], "b": [3, 4, 5]}, progress=False)
    assert res.configs == [{"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 1, "b": 5},
                           {"a": 2, "b": 3}, {"a": 2, "b": 4}, {"a": 2, "b": 5}]
    assert res.results == [13, 14, 15, 23, 24, 25]
    assert res.ok and len(res) == 6
    res = sweep(lambda k, seed: (k, seed), [{"k": "x"}, {"k": "y"}], seeds=[7, 8],
                progress=False)
    assert res.results == [("x", 7), ("x", 8), ("y", 7), ("y", 8)]


def test_sweep_bad_arguments():
    with pytest.raises(TypeError, match="train_fn must be callable"):
        sweep(3, {"a": [1]})
    with pytest.raises(TypeError, match=r"grid\['a'\] must be a list"):
        sweep(lambda a: a, {"a": 1})
    with pytest.raises(ValueError, match="grid is empty"):
        sweep(lambda a: a, {"a": []})
    with pytest.raises(ValueError, match="already has a 'seed'"):
        sweep(lambda seed: seed, {"seed": [1]}, seeds=[2])
    with pytest.raises(TypeError, match="seeds must be ints"):
        sweep(lambda a, seed: a, {"a": [1]}, seeds=[1.5])
    with pytest.raises(TypeError, match="executor must be a concurrent.futures"):
        sweep(lambda a: a, {"a": [1]}, executor="pool")
    with pytest.raises(ValueError, match="retries must be"):
        sweep(lambda a: a, {"a": [1]}, retries=-1)
    with pytest.raises(ValueError, match="errors must be"):
        sweep(lambda a: a, {"a": [1]}, errors="ignore")


def test_sweep_process_pool_bitwise(pool):
    train = _make_train()
    lrs, seeds = [0.05, 0.3], [0, 1, 2]
    expected = [train(lr, s) for lr in lrs for s in seeds]      # plain serial calls
    res = sweep(train, {"lr": lrs}, seeds=seeds, executor=pool, progress=False)
    assert res.results == expected              # floats compared exactly
    assert [c["seed"] for c in res.configs] == seeds * 2


def test_sweep_progress_bar_counts_runs(pool, capsys):
    pytest.importorskip("tqdm")
    sweep(lambda a: a, {"a": [1, 2, 3]}, executor=pool, progress=True)
    assert "3/3" in capsys.readouterr().err


def _fails_for_three(a):
    if a == 3:
        raise ValueError(f"bad a={a}")
    return a * a


def test_sweep_failure_keeps_the_others(pool):
    with pytest.raises(SweepError) as info:
        sweep(_fails_for_three, {"a": [1, 2, 3, 4]}, executor=pool, progress=False)
    err = info.value
    assert [f.config for f in err.failures] == [{"a": 3}]
    f = err.failures[0]
    assert f.kind == "exception" and f.error == "ValueError: bad a=3"
    assert "_fails_for_three" in f.traceback and "bad a=3" in f.traceback
    assert err.result.results == [1, 4, None, 16]
    assert "{'a': 3}" in str(err)
    res = sweep(_fails_for_three, {"a": [3, 5]}, errors="keep", progress=False)
    assert res.results == [None, 25] and not res.ok


def _kill_self_if(a, kill):
    if a == kill:
        time.sleep(0.3)          # the driver has refilled its window by then
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
    return -a


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and SIGKILL")
def test_sweep_worker_killed_mid_sweep():
    before = {p.pid for p in mp.active_children()}
    ex = ProcessPoolExecutor(2, mp_context=_context())
    try:
        res = sweep(_kill_self_if, {"a": list(range(8)), "kill": [5]}, executor=ex,
                    progress=False, errors="keep")
    finally:
        pids = list(ex._processes)
        ex.shutdown(wait=True)
    assert [f.config["a"] for f in res.failures] == [5]
    assert res.failures[0].kind == "worker died"
    assert "BrokenProcessPool" in res.failures[0].error
    assert "alone" in res.failures[0].error
    assert res.results == [0, -1, -2, -3, -4, None, -6, -7]
    assert 5 in res.retried
    # the replacement pools were shut down: no stray worker processes
    assert _wait_gone(pids)
    assert not [p for p in mp.active_children() if p.pid not in before]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")
def test_sweep_worker_killed_without_retries():
    with ProcessPoolExecutor(1, mp_context=_context()) as ex, \
            pytest.raises(SweepError) as info:
        sweep(_kill_self_if, {"a": [0, 1, 2], "kill": [1]}, executor=ex,
                  progress=False, retries=0)
    # no re-run: every run in flight when the worker died is reported (the
    # culprit, and the one queued behind it: max_workers + 1 are in flight)
    fails = info.value.failures
    assert [f.config["a"] for f in fails] == [1, 2]
    assert all(f.kind == "worker died" and "1 other run(s) in flight" in f.error
               for f in fails)
    assert info.value.result.results == [0, None, None]


def test_docstring_examples():
    import doctest

    import fastgrad.distributed.data_parallel
    import fastgrad.distributed.sweeps
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for module in (fastgrad.distributed.sweeps, fastgrad.distributed.data_parallel):
        for t in doctest.DocTestFinder(exclude_empty=True).find(module):
            runner.run(t)
    assert runner.tries >= 6 and runner.failures == 0


def test_sweep_thread_pool():
    with ThreadPoolExecutor(2) as ex:
        res = sweep(lambda a: a + 1, {"a": [1, 2, 3]}, executor=ex, progress=False)
    assert res.results == [2, 3, 4]


# -- lr_sweep on an executor ------------------------------------------------------

def _lr_problem():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(16, 2)).tolist()
    y = rng.choice([-1.0, 1.0], size=16).tolist()

    def factory():
        return MLP(2, [5, 1])        # random weights: lr_sweep starts all from the first's

    def loss_fn(model):
        scores = [model([Value(a), Value(b)]) for a, b in X]
        return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) / len(y)

    return factory, loss_fn


def test_lr_sweep_executor_bitwise(pool):
    factory, loss_fn = _lr_problem()
    lrs = [1e-3, 0.1, 1.0, 1e6]             # the last one diverges
    random.seed(11)
    serial = lr_sweep(factory, loss_fn, lrs=lrs, steps=5, momentum=0.9)
    random.seed(11)
    par = lr_sweep(factory, loss_fn, lrs=lrs, steps=5, momentum=0.9,
                   executor=pool, progress=False)
    np.testing.assert_array_equal(par.losses, serial.losses)     # NaN == NaN here
    np.testing.assert_array_equal(par.final, serial.final)
    assert par.best_lr == serial.best_lr
    # the sweep really started every rate from the first model's weights
    assert len(set(par.losses[:, 0].tolist())) == 1


def test_lr_sweep_executor_eval_fn_and_adam(pool):
    factory, loss_fn = _lr_problem()
    random.seed(2)
    serial = lr_sweep(factory, loss_fn, lrs=[0.01, 0.1], steps=3, optimizer=Adam,
                      eval_fn=loss_fn)
    random.seed(2)
    par = lr_sweep(factory, loss_fn, lrs=[0.01, 0.1], steps=3, optimizer=Adam,
                   eval_fn=loss_fn, executor=pool, progress=False)
    np.testing.assert_array_equal(par.losses, serial.losses)
    np.testing.assert_array_equal(par.val_losses, serial.val_losses)


def test_lr_sweep_executor_failure(pool):
    def loss_fn(ps):
        if ps[0].data < 1.0:                  # reached only by the large rate
            raise RuntimeError("weight left the range")
        return ps[0] * ps[0]
    with pytest.raises(SweepError) as info:
        lr_sweep(lambda: [Value(2.0)], loss_fn, lrs=[0.01, 0.9], steps=2,
                 executor=pool, progress=False)
    err = info.value
    assert [f.config for f in err.failures] == [{"lr": 0.9}]
    assert "weight left the range" in err.failures[0].traceback
    assert err.result.lrs.tolist() == [0.01]
    # hand-derived: x = 2, 2 - 0.04 = 1.96, 1.96 - 0.0392 = 1.9208
    np.testing.assert_allclose(err.result.losses[0], [4.0, 1.96 ** 2, 1.9208 ** 2],
                               rtol=1e-15)


# -- DataParallel -------------------------------------------------------------------

def _moons(n, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    X = np.where(upper[:, None], np.c_[np.cos(t), np.sin(t)],
                 np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    X = X + rng.normal(scale=0.1, size=X.shape)
    return X, np.where(upper, -1.0, 1.0)


def _demo_recipe(seed=1337, hidden=(8, 8)):
    random.seed(seed)
    model = MLP(2, [*hidden, 1])

    def per_sample(v):
        score = model(v[:2])
        return [(1 + -v[2] * score).relu(), score]

    return model, per_sample, (lambda ps: 1e-4 * sum(p * p for p in ps))


def _single_process_curve(X, y, steps):
    model, per_sample, pen = _demo_recipe()
    prog = fastgrad.compile(per_sample, 3, params=model.parameters(), penalty=pen)
    return [prog.sgd_step((X, y), lr=1.0 - 0.9 * k / steps) for k in range(steps)]


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_data_parallel_matches_single_process(pool, n_shards):
    X, y = _moons(403)
    expected = _single_process_curve(X, y, 50)
    model, per_sample, pen = _demo_recipe()
    with DataParallel(per_sample, 3, model.parameters(), (X, y), pool,
                      n_shards=n_shards, penalty=pen) as dp:
        got = [dp.sgd_step(1.0 - 0.9 * k / 50) for k in range(50)]
        assert sum(dp.shard_sizes) == 403 and len(dp.shard_sizes) == n_shards
    rel = np.abs(np.array(got) - expected) / np.abs(expected)
    assert rel.max() <= 1e-12, rel.max()
    assert expected[-1] < 0.5 * expected[0]         # it did train


def test_data_parallel_batch_matches_program_batch(pool):
    X, y = _moons(100, seed=4)
    model, per_sample, pen = _demo_recipe(hidden=(4,))
    prog = fastgrad.compile(per_sample, 3, params=model.parameters(), penalty=pen)
    n = len(model.parameters())
    for reduce in ("mean", "sum"):
        want = np.empty(n)
        model.zero_grad()
        loss = prog.batch((X, y), reduce=reduce, param_grad=want)
        with DataParallel(per_sample, 3, model.parameters(), (X, y), pool,
                          penalty=pen) as dp:
            got = np.empty(n)
            for p in model.parameters():
                p.grad = 1.0
            val = dp.batch(reduce=reduce, param_grad=got)        # accumulates
            assert [p.grad for p in model.parameters()] == (got + 1.0).tolist()
            assert dp.batch(reduce=reduce, accumulate=False) == val
            assert [p.grad for p in model.parameters()] == got.tolist()
        assert val == pytest.approx(loss, rel=1e-13)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_data_parallel_with_driver_optimizer(pool):
    # Adam on the driver over the data-parallel gradient == Adam over prog.batch
    X, y = _moons(200, seed=9)
    curves = []
    for parallel in (False, True):
        model, per_sample, pen = _demo_recipe(seed=3, hidden=(6,))
        opt = Adam(model.parameters(), lr=0.05)
        prog = fastgrad.compile(per_sample, 3, params=model.parameters(), penalty=pen)
        dp = (DataParallel(per_sample, 3, model.parameters(), (X, y), pool, penalty=pen)
              if parallel else None)
        curve = []
        for _ in range(20):
            opt.zero_grad()
            curve.append(dp.batch() if dp else prog.batch((X, y)))
            opt.step()
        if dp:
            dp.close()
        curves.append(curve)
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-12)


def test_data_parallel_thread_pool_hand_derived():
    w = Value(1.5)
    X = np.arange(1.0, 8.0)                           # 1..7: sum 28
    with ThreadPoolExecutor(2) as ex, DataParallel(
            lambda v: v[0] * w * w, 1, [w], X, ex, n_shards=3,
            penalty=lambda ps: 2 * ps[0]) as dp:
        assert dp.batch(reduce="sum") == 28 * 2.25 + 3.0
        assert w.grad == 2 * 28 * 1.5 + 2
        w.grad = 0.0
        assert dp.batch() == pytest.approx(4 * 2.25 + 3.0, rel=1e-15)
        assert w.grad == pytest.approx(2 * 4 * 1.5 + 2, rel=1e-15)


def test_data_parallel_bad_arguments(pool):
    w = Value(1.0)
    X = np.ones((4, 1))
    def fn(v):
        return v[0] * w
    with pytest.raises(TypeError, match="executor must be"):
        DataParallel(fn, 1, [w], X, None, n_shards=2)
    with pytest.raises(ValueError, match="n_shards must be an int between 1 and the 4"):
        DataParallel(fn, 1, [w], X, pool, n_shards=5)
    with pytest.raises(ValueError, match="different numbers of rows"):
        DataParallel(lambda v: v[0] * v[1] * w, 2, [w], (X, np.ones(3)), pool)
    with pytest.raises(ValueError, match="0 rows"):
        DataParallel(fn, 1, [w], np.ones((0, 1)), pool)
    dp = DataParallel(fn, 1, [w], X, pool)
    with pytest.raises(ValueError, match="reduce must be"):
        dp.batch(reduce="max")
    with pytest.raises(ValueError, match="param_grad must be"):
        dp.batch(param_grad=np.empty(2))
    with pytest.raises(ValueError, match="lr must be"):
        dp.sgd_step(float("nan"))
    with dp._lock, pytest.raises(RuntimeError, match="already running in another thread"):
        dp.batch()
    dp.close()
    with pytest.raises(RuntimeError, match="after close"):
        dp.batch()


_GLOBAL_MODEL = MLP(2, [3, 1])


def _per_sample_via_global(v):
    # finds its model through a module global: a worker that imports this
    # module by name gets a different model than the parameters it was sent
    return _GLOBAL_MODEL(v[:2]) * v[2]


def test_data_parallel_fn_through_module_global_is_refused(pool):
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="fn must reach the parameters"), DataParallel(
            _per_sample_via_global, 3, _GLOBAL_MODEL.parameters(), X, pool) as dp:
        dp.batch()


def test_without_cloudpickle_lambdas_are_refused_clearly(monkeypatch):
    import fastgrad._tasks as d
    real = d._optional
    monkeypatch.setattr(d, "_optional",
                        lambda name: None if name == "cloudpickle" else real(name))
    with ThreadPoolExecutor(1) as ex, pytest.raises(
            TypeError, match="cannot send train_fn to the workers.*need cloudpickle"):
        sweep(lambda a: a, {"a": [1]}, executor=ex, progress=False)
    # module-level functions still work with the standard pickle
    with ThreadPoolExecutor(1) as ex:
        assert sweep(_fails_for_three, {"a": [2]}, executor=ex,
                     progress=False).results == [4]


# -- Dask --------------------------------------------------------------------------

# Under the sanitizer build (.ci/sanitize.sh preloads libasan) Dask's nannies
# kill their workers: ASan's shadow memory counts against the worker memory
# limit.  The Dask integration is not what that job checks; the process-pool
# tests above still run there.
_UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
_skip_under_asan = pytest.mark.skipif(
    _UNDER_ASAN, reason="Dask's nannies kill workers under AddressSanitizer")


# A Dask cluster that binds no fixed port: the scheduler on port 0, its HTTP
# server (health, metrics) on a free port -- with dashboard_address=None it
# still takes Dask's default 8787, and a warning (an error here) follows when
# that is in use -- and no dashboard.
DASK_QUIET = {"host": "127.0.0.1", "scheduler_port": 0, "dashboard_address": ":0",
              "worker_dashboard_address": None, "scheduler_kwargs": {"dashboard": False}}


@pytest.fixture(scope="module")
def dask_client():
    if _UNDER_ASAN:
        pytest.skip("Dask's nannies kill workers under AddressSanitizer")
    distributed = pytest.importorskip("distributed")
    import dask
    # a task whose worker dies is reported at once (KilledWorker) instead of
    # being retried on up to 3 more workers (Dask's default): sweep's own
    # retries then run the suspects again one at a time
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        # free ports, no dashboards: runs beside anything holding 8786/8787
        # (dashboard_address=None would still serve /health on 8787)
        cluster = distributed.LocalCluster(**DASK_QUIET, n_workers=2, threads_per_worker=1,
                                           processes=True)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_sweep_bitwise(dask_client):
    train = _make_train()
    lrs, seeds = [0.05, 0.3], [0, 1]
    expected = [train(lr, s) for lr in lrs for s in seeds]
    res = sweep(train, {"lr": lrs}, seeds=seeds, executor=dask_client.get_executor(),
                progress=False)
    assert res.results == expected
    # the Client itself works too
    res = sweep(train, {"lr": lrs[:1]}, seeds=seeds, executor=dask_client,
                progress=False)
    assert res.results == expected[:2]
    with pytest.raises(SweepError) as info:
        sweep(_fails_for_three, {"a": [2, 3]}, executor=dask_client.get_executor(),
              progress=False)
    assert info.value.result.results == [4, None]
    assert "bad a=3" in info.value.failures[0].traceback


def test_dask_lr_sweep_bitwise(dask_client):
    factory, loss_fn = _lr_problem()
    random.seed(11)
    serial = lr_sweep(factory, loss_fn, lrs=[0.01, 0.5], steps=4)
    random.seed(11)
    par = lr_sweep(factory, loss_fn, lrs=[0.01, 0.5], steps=4,
                   executor=dask_client.get_executor(), progress=False)
    np.testing.assert_array_equal(par.losses, serial.losses)


@pytest.mark.parametrize("use_executor", [False, True])
def test_dask_data_parallel(dask_client, use_executor):
    X, y = _moons(301)
    expected = _single_process_curve(X, y, 50)
    model, per_sample, pen = _demo_recipe()
    ex = dask_client.get_executor() if use_executor else dask_client
    with DataParallel(per_sample, 3, model.parameters(), (X, y), ex, penalty=pen) as dp:
        assert dp.n_shards == 2
        got = [dp.sgd_step(1.0 - 0.9 * k / 50) for k in range(50)]
    rel = np.abs(np.array(got) - expected) / np.abs(expected)
    assert rel.max() <= 1e-12, rel.max()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")
def test_dask_worker_killed_mid_sweep(dask_client):
    # last of the Dask tests: it costs a worker restart (by its nanny)
    with pytest.raises(SweepError) as info:
        sweep(_kill_self_if, {"a": list(range(6)), "kill": [2]},
              executor=dask_client.get_executor(), progress=False)
    err = info.value
    assert [f.config["a"] for f in err.failures] == [2]
    assert err.failures[0].kind == "worker died"
    assert "KilledWorker" in err.failures[0].error
    assert "alone" in err.failures[0].error         # the retry ran it alone
    assert err.result.results == [0, -1, None, -3, -4, -5]
    dask_client.wait_for_workers(2, timeout=60)


def _start(args, log):
    # this interpreter, not a `dask` on PATH: the suite also runs from a venv
    # that is not activated (venv/bin/python -m pytest)
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)


@_skip_under_asan
def test_dask_separate_scheduler_and_worker_processes(tmp_path):
    # the cluster recipe of the README (`dask scheduler`, `dask worker`): a
    # scheduler and 2 workers as separate processes on the loopback
    # interface, on free ports (port 0) and without dashboards, so that the
    # suite runs beside anything else holding Dask's default ports
    pytest.importorskip("distributed")
    from distributed import Client
    sched = tmp_path / "scheduler.json"
    procs = []
    with open(tmp_path / "dask.log", "w") as log:
        try:
            procs.append(_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard", "--dashboard-address",
                                 ":0",
                                 "--scheduler-file", str(sched)], log))
            deadline = time.monotonic() + 120
            while not sched.exists() and time.monotonic() < deadline:
                assert procs[0].poll() is None, (tmp_path / "dask.log").read_text()
                time.sleep(0.05)
            for _ in range(2):
                procs.append(_start(["distributed.cli.dask_worker", "--scheduler-file",
                                     str(sched), "--host", "127.0.0.1", "--nthreads", "1",
                                     "--no-dashboard", "--nanny-port", "0",
                                     "--worker-port", "0"], log))
            with Client(scheduler_file=str(sched)) as client:
                client.wait_for_workers(2, timeout=120)
                pids = [client.run_on_scheduler(os.getpid), *client.run(os.getpid).values()]
                assert len(set(pids)) == 3 and os.getpid() not in pids
                train = _make_train()
                res = sweep(train, {"lr": [0.1]}, seeds=[0, 1],
                            executor=client.get_executor(), progress=False)
                assert res.results == [train(0.1, 0), train(0.1, 1)]
                X, y = _moons(200)
                expected = _single_process_curve(X, y, 50)
                model, per_sample, pen = _demo_recipe()
                with DataParallel(per_sample, 3, model.parameters(), (X, y), client,
                                  penalty=pen) as dp:
                    got = [dp.sgd_step(1.0 - 0.9 * k / 50) for k in range(50)]
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    rel = np.abs(np.array(got) - expected) / np.abs(expected)
    assert rel.max() <= 1e-12, rel.max()
    assert _wait_gone(pids)
