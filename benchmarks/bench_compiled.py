"""Compiled graph replay (fastgrad.compiled) against its baselines, same run.

Run: ``PYTHONPATH=src python -m pytest benchmarks/bench_compiled.py
--benchmark-columns=min,median,mean,rounds -q``

Workloads (micrograd's demo: make_moons(100, noise=0.1, random_state=1),
labels y*2-1, MLP(2, [16, 16, 1]), svm loss + 1e-4 L2, SGD):

* ``demo_step``: one full-batch training step (forward over 100 points,
  backward, SGD update of the 337 parameters):
  - fastgrad compiled: ``Program.sgd_step`` (batch replay + update in C);
  - PyTorch: float64 ``torch.nn`` Sequential, vectorised over the batch,
    ``torch.set_num_threads(1)``, ``torch.optim.SGD`` (target ratio <= 1.0);
  - micrograd 0.1.0 (target: compiled >= 2000x faster);
  - fastgrad eager (to compute when compiling pays off).
* ``score_10k``: forward-only scores of 10,000 grid points (decision
  boundary): ``Program.predict`` vs ``model(X)`` under ``torch.no_grad()``.
* ``record``: the one-off cost of tracing + recording the demo program.

Every side starts from the same weights and is checked against the others
(loss to 1e-12) before it is timed.  Ratios are printed by the last test;
nothing here asserts a wall-clock figure.
"""
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value
from fastgrad.compiled import make_demo_step
from fastgrad.nn import MLP

pytest.importorskip("pytest_benchmark")

_MEDIANS = {}


def _moons():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.make_moons(n_samples=100, noise=0.1, random_state=1)
    return X, (y * 2 - 1).astype(np.float64)


def _fg_model():
    random.seed(1337)
    return MLP(2, [16, 16, 1])


def _eager_loss(model, X, y):
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in model.parameters())
    return data_loss + reg_loss


def _record(benchmark, key):
    # with --benchmark-disable (the smoke mode) each side runs once, untimed:
    # the checks above still ran, there is no median to report
    stats = getattr(benchmark, "stats", None)
    if getattr(benchmark, "disabled", False) or stats is None:
        return
    _MEDIANS[key] = stats.stats.median


def _torch_model(torch, fg_model):
    layers = []
    sizes = [2, 16, 16, 1]
    for i, layer in enumerate(fg_model.layers):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            for j, n in enumerate(layer.neurons):
                lin.weight[j] = torch.tensor([w.data for w in n.w], dtype=torch.float64)
                lin.bias[j] = n.b.data
        layers.append(lin)
        if i != len(fg_model.layers) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


# ---------------------------------------------------------------------------
# the demo training step
# ---------------------------------------------------------------------------

@pytest.mark.benchmark(group="demo step (100 points, full batch)")
def test_demo_step_compiled(benchmark):
    X, y = _moons()
    model = _fg_model()
    prog = make_demo_step(model).program
    Xy = (X, y)
    # oracle: the first compiled loss equals the eager engine's
    eager = _eager_loss(_fg_model(), X, y).data
    assert prog.batch(Xy, grad=False) == pytest.approx(eager, rel=1e-12)
    k = [0]

    def step():
        lr = 1.0 - 0.9 * (k[0] % 100) / 100
        k[0] += 1
        return prog.sgd_step(Xy, lr)

    benchmark.pedantic(step, rounds=2000, iterations=1, warmup_rounds=50)
    _record(benchmark, "compiled")


@pytest.mark.benchmark(group="demo step (100 points, full batch)")
def test_demo_step_torch_nn(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    X, y = _moons()
    fg = _fg_model()
    model = _torch_model(torch, fg)
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    plist = list(model.parameters())
    opt = torch.optim.SGD(plist, lr=1.0)
    k = [0]

    def loss_fn():
        scores = model(Xt).squeeze(1)
        data_loss = torch.relu(1 + -yt * scores).mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in plist)
        return data_loss + reg_loss

    with torch.no_grad():
        first = loss_fn().item()
    assert first == pytest.approx(_eager_loss(fg, X, y).data, rel=1e-12)

    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.param_groups[0]["lr"] = 1.0 - 0.9 * (k[0] % 100) / 100
        k[0] += 1
        opt.step()
        return loss.item()

    benchmark.pedantic(step, rounds=1000, iterations=1, warmup_rounds=50)
    _record(benchmark, "torch_nn")


@pytest.mark.benchmark(group="demo step (100 points, full batch)")
def test_demo_step_fastgrad_eager(benchmark):
    X, y = _moons()
    model = _fg_model()
    k = [0]

    def step():
        loss = _eager_loss(model, X, y)
        model.zero_grad()
        loss.backward()
        lr = 1.0 - 0.9 * (k[0] % 100) / 100
        k[0] += 1
        for p in model.parameters():
            p.data -= lr * p.grad
        return loss.data

    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=1)
    _record(benchmark, "eager")


@pytest.mark.benchmark(group="demo step (100 points, full batch)")
def test_demo_step_micrograd(benchmark):
    mg_engine = pytest.importorskip("micrograd.engine")
    mg_nn = pytest.importorskip("micrograd.nn")
    X, y = _moons()
    random.seed(1337)
    model = mg_nn.MLP(2, [16, 16, 1])
    k = [0]

    def step():
        inputs = [list(map(mg_engine.Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * (k[0] % 100) / 100
        k[0] += 1
        for p in model.parameters():
            p.data -= lr * p.grad
        return total.data

    first = step()
    assert first == pytest.approx(_eager_loss(_fg_model(), X, y).data, rel=1e-12)
    benchmark.pedantic(step, rounds=3, iterations=1)
    _record(benchmark, "micrograd")


# ---------------------------------------------------------------------------
# forward-only scoring of a 10,000-point grid
# ---------------------------------------------------------------------------

def _grid():
    xx, yy = np.meshgrid(np.linspace(-2, 3, 100), np.linspace(-1.5, 2, 100))
    return np.c_[xx.ravel(), yy.ravel()]


@pytest.mark.benchmark(group="score 10,000 points (forward only)")
def test_score_compiled(benchmark):
    model = _fg_model()
    prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
    G = _grid()
    out = np.empty(len(G))
    benchmark.pedantic(prog.predict, args=(G,), kwargs={"out": out}, rounds=300,
                       iterations=1, warmup_rounds=10)
    idx = [0, 4321, 9999]
    assert [out[i] for i in idx] == [model(list(G[i])).data for i in idx]
    _record(benchmark, "score_compiled")


@pytest.mark.benchmark(group="score 10,000 points (forward only)")
def test_score_torch_nn(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    fg = _fg_model()
    model = _torch_model(torch, fg)
    Gt = torch.tensor(_grid(), dtype=torch.float64)

    def score():
        with torch.no_grad():
            return model(Gt)

    out = benchmark.pedantic(score, rounds=300, iterations=1, warmup_rounds=10)
    ref = fg(list(_grid()[4321])).data
    assert out[4321, 0].item() == pytest.approx(ref, rel=1e-12)
    _record(benchmark, "score_torch")


# ---------------------------------------------------------------------------
# record cost
# ---------------------------------------------------------------------------

@pytest.mark.benchmark(group="record (trace + compile the demo program)")
def test_record_demo_program(benchmark):
    model = _fg_model()
    benchmark.pedantic(make_demo_step, args=(model,), rounds=20, iterations=1,
                       warmup_rounds=1)
    _record(benchmark, "record")


def test_zz_report(capsys):
    """Print the ratios of the medians measured above (same run)."""
    m = _MEDIANS
    lines = ["", "compiled replay, ratios of medians (same run):"]
    if "compiled" in m and "torch_nn" in m:
        lines.append(f"  demo step: compiled {m['compiled'] * 1e6:.1f} us, torch.nn "
                     f"{m['torch_nn'] * 1e6:.1f} us -> compiled/torch = "
                     f"{m['compiled'] / m['torch_nn']:.3f} (target <= 1.0)")
    if "compiled" in m and "micrograd" in m:
        lines.append(f"  demo step: micrograd {m['micrograd'] * 1e3:.1f} ms -> "
                     f"{m['micrograd'] / m['compiled']:.0f}x faster (target >= 2000x)")
    if "compiled" in m and "eager" in m:
        lines.append(f"  demo step: fastgrad eager {m['eager'] * 1e3:.2f} ms -> "
                     f"compiled {m['eager'] / m['compiled']:.0f}x faster")
    if "score_compiled" in m:
        s = f"  score 10k: compiled {1e4 / m['score_compiled'] / 1e6:.2f} Mpoints/s"
        if "score_torch" in m:
            s += (f", torch.nn {1e4 / m['score_torch'] / 1e6:.2f} Mpoints/s "
                  f"(compiled/torch time {m['score_compiled'] / m['score_torch']:.3f})")
        lines.append(s)
    if "record" in m:
        s = f"  record: {m['record'] * 1e3:.2f} ms to trace + compile the demo program"
        if "eager" in m and "compiled" in m:
            saved = m["eager"] - m["compiled"]
            s += (f"; pays off after {m['record'] / saved:.2f} steps vs eager "
                  f"(saves {saved * 1e3:.2f} ms per step)")
        lines.append(s)
    with capsys.disabled():
        print("\n".join(lines))
