"""The one-row replay's groups of elementary functions (_replay_row.pxi):
every build's group function against the separate vector-maths functions
(_vmath_ext.evaluate, the portable build, which the eager engine's rules
call), bit for bit, softplus's sigmoid from the same exp included
(fg_vm_softplus_sigmoid of _vmath_body.h)."""
import numpy as np
import pytest

from fastgrad import _replay

_vmath_ext = pytest.importorskip("fastgrad._vmath_ext")

LEVELS = ("portable", "baseline", "avx2", "avx512")
NAMES = ("exp", "log", "softplus", "sigmoid", "tanh", "log1p")

TINY = np.nextafter(0.0, 1.0)
EDGES = np.array([
    0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, TINY, -TINY,
    2.2250738585072014e-308, -2.2250738585072014e-308, 1e-300, -1e-300,
    1e-17, -1e-17, 2.0 ** -30, -(2.0 ** -30), 0.5, -0.5,
    20.0, -20.0, 20.9, -20.9, 21.0, -21.0, 21.5, -21.5, 36.0, -36.0, 37.0, -37.0,
    708.0, -708.0, 709.7, -709.7, 710.0, -710.0, 711.0, -711.0,
    744.0, -744.0, 745.1, -745.1, 746.0, -746.0, 747.0, -747.0,
    1e10, -1e10, 1.7976931348623157e308, -1.7976931348623157e308,
    np.log(2.0), -np.log(2.0), 0.2555, -0.2555, 0.5494, -0.5494,
])


def _points():
    rng = np.random.default_rng(20)
    # x < -21 switches softplus to its small-t branch: points around it
    # and across the ranges of every function; the edges repeated at every
    # lane position (the groups run 8, then the rest)
    parts = [EDGES, np.roll(EDGES, 3), np.roll(EDGES, 5)]
    parts.append(rng.standard_normal(3000) * 5)
    parts.append(rng.uniform(-750, 750, 3000))
    parts.append(-21.0 + rng.uniform(-0.5, 0.5, 1000))
    parts.append(np.exp(rng.uniform(-700, 700, 2000)) * rng.choice([-1.0, 1.0], 2000))
    bits = rng.integers(0, 2 ** 63, 3000, dtype=np.uint64) | (
        rng.integers(0, 2, 3000, dtype=np.uint64) << np.uint64(63))
    parts.append(bits.view(np.float64))
    return np.concatenate(parts)


def _same(a, b):
    return np.asarray(a, np.float64).tobytes() == np.asarray(b, np.float64).tobytes()


@pytest.mark.parametrize("level", range(4), ids=LEVELS)
@pytest.mark.parametrize("name", NAMES)
def test_group_function_equals_separate_functions(name, level):
    x = _points()
    for n in (len(x), 1, 2, 3, 5, 7):          # a short last group too
        got = _replay._row_group_eval(name, x[:n], level)
        if got is None:
            pytest.skip(f"no {LEVELS[level]} build on this CPU")
        y, sg = got
        want = _vmath_ext.evaluate(name, x[:n], "portable")
        assert _same(y, want), (name, LEVELS[level], n)
        if name == "softplus":
            assert _same(sg, _vmath_ext.evaluate("sigmoid", x[:n], "portable")), (
                LEVELS[level], n)


def test_fused_softplus_sigmoid_edge_values_by_hand():
    # independent of the vector-maths functions: values known exactly
    y, sg = _replay._row_group_eval("softplus", np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, -1000.0]), 0)
    assert y[0] == np.log(2.0) and y[1] == np.log(2.0)
    assert sg[0] == 0.5 and sg[1] == 0.5
    assert y[2] == np.inf and sg[2] == 1.0
    assert y[3] == 0.0 and sg[3] == 0.0
    assert np.isnan(y[4]) and np.isnan(sg[4])
    assert y[5] == 0.0 and sg[5] == 0.0
