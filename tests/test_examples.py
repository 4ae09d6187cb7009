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


def run_example(name, *args):
    src = str(Path(fastgrad.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_every_example_is_tested():
    tested = {"01_numerical_gradient.py", "02_backprop_gate.py",
              "03_gradient_descent.py", "04_minibatch_sgd.py"}
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
