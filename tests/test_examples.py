"""The lecture's examples in examples/ run and print the right numbers.

Each script runs in a fresh interpreter (the same one running the tests) with
this checkout's fastgrad on PYTHONPATH.  Expected numbers are derived by hand
in the comments, not taken from the scripts.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastgrad

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, timeout=120):
    src = str(Path(fastgrad.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_every_example_is_tested():
    tested = {"01_numerical_gradient.py", "02_backprop_gate.py",
              "03_gradient_descent.py", "04_minibatch_sgd.py",
              "05_newton.py", "06_curvature_step_size.py", "07_export_to_torch.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_numerical_gradient():
    pytest.importorskip("fastgrad.numgrad")
    out = run_example("01_numerical_gradient.py")
    # f = a*b + c**2 at (3, -4, 2) = -12 + 4; grad = [b, a, 2c] = [-4, 3, 4]
    assert "f(3, -4, 2) = -8.0\n" in out
    assert "analytic (backward):        [-4.000000  3.000000  4.000000]\n" in out
    # forward difference of c**2: ((c+h)^2 - c^2)/h = 2c + h = 4.00001
    assert "lecture's loop (forward):   [-4.000000  3.000000  4.000010]\n" in out
    assert "num_grad, forward:          [-4.000000  3.000000  4.000010]\n" in out
    assert "num_grad, central:          [-4.000000  3.000000  4.000000]\n" in out
    fwd = float(re.search(r"max relative error, forward: (\S+)", out).group(1))
    cen = float(re.search(r"max relative error, central: (\S+)", out).group(1))
    assert fwd == pytest.approx(1e-5 / 4.00001, rel=0.05)   # h / (2c + h)
    assert cen < 1e-8


def test_backprop_gate():
    out = run_example("02_backprop_gate.py")
    # the slide: f = -20, grad f = [-8, 6, 2, 0]
    assert "forward:  p = -12.0, q = 2.0, v = -10.0, f = -20.0\n" in out
    assert "backward by hand (chain rule): [df/dx, df/dy, df/dz, df/dw] = " \
           "[-8.0, 6.0, 2.0, 0.0]\n" in out
    assert "forward by fastgrad: f = -20.0\n" in out
    assert "backward by fastgrad:          [df/dx, df/dy, df/dz, df/dw] = " \
           "[-8.0, 6.0, 2.0, 0.0]\n" in out
    assert "digraph" not in out
    dot = run_example("02_backprop_gate.py", "--dot")
    assert dot.startswith(out) and "digraph {" in dot and "grad -8.0000" in dot


def test_gradient_descent_matches_closed_form():
    out = run_example("03_gradient_descent.py")
    assert "initial loss 19.0\n" in out     # 2*(0-3)^2 + (0-1)^2
    losses = {float(lr): float(loss) for lr, loss in re.findall(
        r"lr (\S+)\s+loss after 50 steps (\S+)", out)}
    assert sorted(losses) == [0.001, 0.01, 0.1, 0.3, 0.6]
    for lr in (0.001, 0.01, 0.1, 0.6):
        # loss = 2(w-3)^2 + (b-1)^2, w-3 = -3(1-4lr)^k, b-1 = -(1-2lr)^k
        exact = 18 * (1 - 4 * lr) ** 100 + (1 - 2 * lr) ** 100
        assert losses[lr] == pytest.approx(exact, rel=1e-5), lr
    assert losses[0.3] < 1e-20             # converged to rounding level
    assert "lr 0.6    loss after" in out and out.rstrip().endswith("best step size: 0.3")
    assert re.search(r"lr 0\.6 .*diverged", out)


def test_minibatch_sgd_learns():
    pytest.importorskip("fastgrad.optim")
    out = run_example("04_minibatch_sgd.py")
    start = float(re.search(r"start: accuracy on all 1000 points (\S+)", out).group(1))
    end = float(re.search(r"end: accuracy on all 1000 points (\S+)", out).group(1))
    first = float(re.search(r"step   0  batch loss (\S+)", out).group(1))
    last = float(re.search(r"step  99  batch loss (\S+)", out).group(1))
    assert start < 0.8 < 0.95 <= end
    assert last < first / 5


def _rosenbrock_counts(tol=1e-10, lr=1e-3):
    """Gradient descent and Newton on Rosenbrock with hand-derived derivatives."""
    import numpy as np

    def f(p):
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    def g(p):
        x, y = p
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    def h(p):
        x, y = p
        return np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])

    counts = []
    for step in (lambda p: p - lr * g(p), lambda p: p - np.linalg.solve(h(p), g(p))):
        p, k = np.array([-1.2, 1.0]), 0
        while f(p) >= tol:
            p, k = step(p), k + 1
        counts.append(k)
    return counts


@pytest.mark.compiled_only("second order needs the compiled build")
def test_newton_vs_gradient_descent():
    out = run_example("05_newton.py")
    rows = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"^(quadratic|Rosenbrock)\s+\(.*?\)\s+\S+\s+(\d+)\s+(\d+)$", out, re.MULTILINE)}
    # (x^2 + 10 y^2)/2 from (1, 1), step 0.1: f = 0.9^(2k)/2 < 1e-10 -> k = 106;
    # Newton solves a quadratic in one step
    assert rows["quadratic"] == (106, 1)
    gd, nt = _rosenbrock_counts()
    assert rows["Rosenbrock"][1] == nt
    assert abs(rows["Rosenbrock"][0] - gd) <= 5     # rounding differs over ~26k steps
    assert rows["Rosenbrock"][0] > 1000 * rows["Rosenbrock"][1]


@pytest.mark.compiled_only("second order needs the compiled build")
def test_curvature_step_size(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bound.png"
    out = run_example("06_curvature_step_size.py", "--plot", str(png), timeout=600)
    assert png.stat().st_size > 10_000
    # line fit loss 2 (w-3)^2 + (b-1)^2: Hessian diag(4, 2)
    assert "lambda_max by power iteration on hvp: 4.000000   bound 2/lambda_max = 0.500000" in out
    finals = {float(lr): (float(loss), verdict) for lr, loss, verdict in re.findall(
        r"= (\S+)\s+final loss (\S+)\s+(decreased|diverged)", out)}
    for lr in (0.25, 0.4, 0.475, 0.525, 0.6, 0.75):
        exact = 18 * (1 - 4 * lr) ** 100 + (1 - 2 * lr) ** 100    # 50 steps (example 03)
        assert finals[lr][0] == pytest.approx(exact, rel=1e-4, abs=1e-25), lr
        assert finals[lr][1] == ("decreased" if lr < 0.5 else "diverged")
    err = float(re.search(r"max \|H - H_fd\| / max \|H\| = (\S+);", out).group(1))
    assert err < 1e-6
    lam = float(re.search(r"initial weights\)\n  lambda_max by power iteration on hvp: (\S+)",
                          out).group(1))
    lam_np = float(re.search(r"largest eigenvalue of H by numpy: (\S+)", out).group(1))
    assert lam == pytest.approx(lam_np, rel=1e-3)
    assert "The bound is local" in out


@pytest.mark.compiled_only("export reads a compiled Program")
def test_export_to_torch():
    for module in ("torch", "onnx", "onnxruntime", "sklearn"):
        pytest.importorskip(module)
    out = run_example("07_export_to_torch.py", timeout=600)
    assert "exported: Linear(2->16), Linear(16->16), Linear(16->1)\n" in out
    steps = re.findall(r"step (\d+): fastgrad (\S+)  torch (\S+)", out)
    assert [int(k) for k, _, _ in steps] == [30, 31, 32, 33, 34]
    for _, f, t in steps:                  # printed to 15 decimals
        assert abs(float(f) - float(t)) <= 2e-15
    rel = float(re.search(r"5 steps: max relative loss difference (\S+)", out).group(1))
    assert rel <= 1e-12
    w = float(re.search(r"weights after the steps: max \|fastgrad - torch\| (\S+)", out).group(1))
    assert w <= 1e-12
    assert "load_torch_state: max |Value.data - torch| = 0.0\n" in out
    m = re.search(r"DDP \(2 processes, gloo\) vs fastgrad \(1 process\), 20 steps: "
                  r"losses (\S+) -> (\S+), max relative difference (\S+)", out)
    assert float(m.group(2)) < float(m.group(1))       # it trained
    assert float(m.group(3)) <= 1e-12
    m = re.search(r"onnxruntime: max \|score - fastgrad's\| (\S+), accuracy (\S+)", out)
    assert float(m.group(1)) <= 1e-12 and float(m.group(2)) >= 0.9
