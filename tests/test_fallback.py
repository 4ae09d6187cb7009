"""The pure-Python build (fastgrad._backend): switch, flag, and the kernels it
swaps in.

Oracles: the compiled kernels (an independent implementation of the same
formulas, in C) when they are importable, hand-derived values, and the
behaviour of a subprocess started with FASTGRAD_NO_EXTENSIONS=1.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad import _backend, _numgrad_py, _optim_py
from fastgrad import reference as ref

HAVE_C = importlib.util.find_spec("fastgrad._engine") is not None


def run_pure(code, env_value="1"):
    """Run code in a fresh interpreter with FASTGRAD_NO_EXTENSIONS set."""
    env = dict(os.environ, FASTGRAD_NO_EXTENSIONS=env_value)
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_flag_matches_the_engine_in_use():
    assert fastgrad.COMPILED is _backend.COMPILED
    assert isinstance(fastgrad.COMPILED, bool)
    if fastgrad.COMPILED:
        assert type(fastgrad.Value(1.0)).__module__ == "fastgrad._engine"
        assert _backend.REASON is None
    else:
        assert fastgrad.Value is ref.Value
        assert _backend.REASON


def test_environment_switch_selects_the_pure_build():
    out = run_pure(
        "import fastgrad, fastgrad.reference as r, fastgrad.nn as nn\n"
        "import fastgrad.optim, fastgrad.numgrad\n"
        "print(fastgrad.COMPILED, fastgrad.Value is r.Value,\n"
        "      type(nn.MLP(2, [3, 1]).parameters()[0]) is r.Value,\n"
        "      fastgrad.optim._optim.__name__, fastgrad.numgrad._numgrad.__name__)\n")
    assert out.split() == ["False", "True", "True", "fastgrad._optim_py",
                           "fastgrad._numgrad_py"]


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_does_not_disable_the_extension(value):
    out = run_pure("import fastgrad; print(fastgrad.COMPILED)", value)
    assert out.strip() == str(HAVE_C)


def test_version_names_the_build():
    out = run_pure("from fastgrad.__main__ import main; main(['--version'])")
    assert out.startswith(f"fastgrad {fastgrad.__version__} (pure-Python build")
    assert "FASTGRAD_NO_EXTENSIONS=1" in out
    proc = subprocess.run([sys.executable, "-m", "fastgrad", "--version"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items()
                               if k != "FASTGRAD_NO_EXTENSIONS"})
    assert proc.returncode == 0
    build = "(compiled" if HAVE_C else "(pure-Python build"
    assert proc.stdout.startswith(f"fastgrad {fastgrad.__version__} {build}")


def test_compile_names_the_compiled_build_in_the_pure_build():
    out = run_pure(
        "import fastgrad\n"
        "w = fastgrad.Value(2.0)\n"
        "try:\n"
        "    fastgrad.compile(lambda x: x[0] * w, 1, params=[w])\n"
        "except RuntimeError as e:\n"
        "    print(e)\n")
    assert "needs fastgrad's compiled build" in out
    assert "FASTGRAD_NO_EXTENSIONS=1 is set" in out


def test_pure_build_trains_the_lecture_example():
    # f(w) = (w*3 - 6)**2 by SGD(lr=0.01): w -> 2; one step by hand:
    # grad = 2*(3*1 - 6)*3 = -18, w = 1 - 0.01*(-18) = 1.18
    out = run_pure(
        "from fastgrad import Value, optim, gradcheck, num_grad\n"
        "w = Value(1.0)\n"
        "opt = optim.SGD([w], lr=0.01)\n"
        "for i in range(200):\n"
        "    opt.zero_grad(); loss = (w * 3 - 6) ** 2; loss.backward(); opt.step()\n"
        "    if i == 0: print(repr(w.data))\n"
        "print(round(w.data, 9))\n"
        "print(gradcheck(lambda a: (a * a).tanh(), [Value(0.3)]))\n"
        "print(num_grad(lambda v: v[0].data ** 2, [Value(3.0)]).round(6).tolist())\n")
    assert out.split() == [repr(1.18), "2.0", "True", "[6.0]"]


# ---------------------------------------------------------------------------
# the pure kernels against the C kernels: the same bits
# ---------------------------------------------------------------------------

def _bits(a):
    """The bytes of a, every NaN as one canonical NaN (its sign and payload are
    not part of the formulas' contract: C and NumPy may differ there)."""
    return np.where(np.isnan(a), np.nan, a).tobytes()


def _rng_arrays(n, seed):
    rng = np.random.default_rng(seed)
    p, g = rng.normal(size=n), rng.normal(size=n)
    g[3] = np.nan
    g[5] = 0.0
    p[7] = -0.0
    return p, g


@pytest.mark.skipif(not HAVE_C, reason="needs the compiled kernels as the oracle")
@pytest.mark.parametrize("momentum, dampening, wd, nesterov, maximize", [
    (0.0, 0.0, 0.0, False, False), (0.9, 0.1, 0.01, False, True),
    (0.9, 0.0, 0.0, True, False)])
def test_sgd_kernel_bits_equal_c(momentum, dampening, wd, nesterov, maximize):
    from fastgrad import _optim
    results = []
    for mod in (_optim, _optim_py):
        p, g = _rng_arrays(40, 1)
        parts = [p[:15].copy(), p[15:].copy()]
        grads = [g[:15].copy(), g[15:].copy()]
        buf = np.zeros(40) if momentum else None
        for step in range(3):
            mod.sgd_arrays(parts, grads, buf, 0.1, momentum, dampening, wd,
                           nesterov, maximize, step == 0)
        results.append(_bits(np.concatenate(parts)))
    assert results[0] == results[1]


@pytest.mark.skipif(not HAVE_C, reason="needs the compiled kernels as the oracle")
@pytest.mark.parametrize("beta1, amsgrad, maximize, wd", [
    (0.9, False, False, 0.0), (0.9, True, True, 0.01), (0.2, True, False, 0.0)])
def test_adam_kernel_bits_equal_c(beta1, amsgrad, maximize, wd):
    from fastgrad import _optim
    results = []
    for mod in (_optim, _optim_py):
        p, g = _rng_arrays(30, 2)
        m, v = np.zeros(30), np.zeros(30)
        vmax = np.zeros(30) if amsgrad else None
        for t in range(1, 4):
            mod.adam_arrays([p], [g], m, v, vmax, beta1, 0.999, 1e-8, wd, amsgrad,
                            maximize, 1e-3 / (1 - beta1 ** t), (1 - 0.999 ** t) ** 0.5)
        results.append((_bits(p), _bits(m), _bits(v)))
    assert results[0] == results[1]


def test_value_slots_update_values_like_arrays():
    vals = [fastgrad.Value(x) for x in (1.0, -2.0, 0.5)]
    for v, gr in zip(vals, (0.3, 0.1, -0.7)):
        v.grad = gr
    slots = _optim_py.ValueSlots(vals)
    buf = np.zeros(3)
    slots.sgd(buf, 0.1, 0.9, 0.0, 0.0, False, False, True)
    # first momentum step: buf = g, p = p - lr*g
    assert [v.data for v in vals] == [1.0 - 0.1 * 0.3, -2.0 - 0.1 * 0.1, 0.5 + 0.1 * 0.7]
    assert buf.tolist() == [0.3, 0.1, -0.7]
    with pytest.raises(ValueError, match="more than once"):
        _optim_py.ValueSlots([vals[0], vals[0]])
    with pytest.raises(ValueError, match="momentum buffer must have length 3"):
        slots.sgd(None, 0.1, 0.9, 0.0, 0.0, False, False, True)


@pytest.mark.skipif(not HAVE_C, reason="needs the compiled loop as the oracle")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("central", [True, False])
def test_finite_difference_loop_bits_equal_c(dtype, central):
    from fastgrad import _numgrad
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(dtype)[:, ::2]

    def f(a):
        return (a * a).sum() + np.sin(a).prod()

    c = _numgrad.fd_array(f, x, 1e-3, central)
    py = _numgrad_py.fd_array(f, x, 1e-3, central)
    assert c.tobytes() == py.tobytes()
    vals = [ref.Value(float(v)) for v in x.ravel()]
    fv = lambda vs: sum(v * v for v in vs).tanh()  # noqa: E731
    c = _numgrad.fd_values(fv, vals, None, tuple(vals), 1e-5, central)
    py = _numgrad_py.fd_values(fv, vals, None, tuple(vals), 1e-5, central)
    assert c.tobytes() == py.tobytes()


def test_finite_difference_loop_restores_x_on_error():
    x = np.array([1.0, np.inf, -0.0])
    before = x.tobytes()

    def f(a):
        if a[2] != 0:
            raise KeyError("boom")
        return float(a.sum())

    with pytest.raises(KeyError):
        _numgrad_py.fd_array(f, x, 1e-3, True)
    assert x.tobytes() == before
    with pytest.raises(ValueError, match=r"vanishes at x\[\(0,\)\]"):
        _numgrad_py.fd_array(f, np.array([1e300]), 1e-3, True)


def test_missing_extension_warns_unless_requested():
    # sys.modules[name] = None makes the import fail as a missing module does
    code = ("import sys, warnings\n"
            "sys.modules['fastgrad._engine'] = None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import fastgrad\n"
            "print(fastgrad.COMPILED, [type(x.message).__name__ for x in w])\n"
            "print(w[0].message if w else '')\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTGRAD_NO_EXTENSIONS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, message = proc.stdout.splitlines()[:2]
    assert first == "False ['FallbackWarning']"
    assert "fastgrad._engine is not installed" in message
    assert "FASTGRAD_NO_EXTENSIONS=1" in message
    out = run_pure(code)            # asked for: no warning
    assert out.splitlines()[0] == "False []"


def test_broken_extension_is_not_hidden():
    # a compiled module that exists but cannot load raises, it does not fall back
    code = ("import sys, importlib.abc, importlib.machinery\n"
            "class Broken(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'fastgrad._engine':\n"
            "            raise ImportError('undefined symbol: PyFoo', name=name)\n"
            "sys.meta_path.insert(0, Broken())\n"
            "try:\n"
            "    import fastgrad\n"
            "except ImportError as e:\n"
            "    print('ImportError', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTGRAD_NO_EXTENSIONS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("ImportError undefined symbol"), proc.stderr[-2000:]
