"""The backward of a layer epilogue's tanh / sigmoid in the ISA's row loop
(fg_vm_act_bw, _vmath_rows.h; issue 20): the same bits as the op-by-op loop
(``_set_epi_fused(False)``), on every ISA and thread count, and the
gradients of eager mode (hand-checked derivative rules) to rounding."""
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

_replay = pytest.importorskip("fastgrad._replay")

pytestmark = pytest.mark.compiled_only("the compiled replay")


def bits(*arrays):
    return [np.asarray(a, dtype=np.float64).tobytes() for a in arrays]


def _model(act, H, chain, seed):
    """2-H-H-1 with ``act`` hidden layers; chain "one": the op alone; "scaled":
    act then a mulc (two epilogue ops: the backward recomputes act's output
    into a buffer); "lone": the output layer's act too (a 1-row layer)."""
    rng = random.Random(seed)
    W = [[[Value(rng.uniform(-1.5, 1.5)) for _ in range(k)] for _ in range(h)]
         for k, h in ((2, H), (H, H), (H, 1))]
    b = [[Value(rng.uniform(-1, 1)) for _ in range(h)] for h in (H, H, 1)]
    params = [p for layer in W for row in layer for p in row] + [p for bl in b for p in bl]

    def f_act(z):
        y = z.tanh() if act == "tanh" else z.sigmoid()
        return y * 0.75 if chain == "scaled" else y

    def fn(v):
        h = v[:2]
        for li in range(3):
            z = [sum((w * x for w, x in zip(row, h)), bi) for row, bi in zip(W[li], b[li])]
            h = z if (li == 2 and chain != "lone") else [f_act(zi) for zi in z]
        return (h[0] - v[2]) ** 2
    return fn, params


def _data(B, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, 3)) * 1.5
    # a few special values through the activations' backward: +-0, big, tiny
    if B >= 6:
        X[0, :2] = [0.0, -0.0]
        X[1, :2] = [40.0, -40.0]
        X[2, :2] = [1e-300, -1e-300]
    return X


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
@pytest.mark.parametrize("chain", ["one", "scaled", "lone"])
@pytest.mark.parametrize("B", [1, 7, 64, 203])
def test_act_backward_rows_same_bits_as_op_by_op(act, chain, B):
    fn, params = _model(act, 11, chain, seed=B)
    prog = fastgrad.compile(fn, 3, params=params)
    assert prog.n_layers >= 2
    X = _data(B, B)
    old_isa = _replay._isa()
    old = _replay._set_epi_fused(True)
    try:
        ref = None
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            for fused in (True, False):
                _replay._set_epi_fused(fused)
                for t in (1, 2, 3, 8):
                    gp = np.empty(len(params))
                    gin = np.empty((B, 3))
                    outs = np.empty((B, 1))
                    loss = prog.batch(X, reduce="sum", outputs=outs, param_grad=gp,
                                      input_grad=gin, num_threads=t)
                    got = bits(outs, gp, gin, [loss])
                    if ref is None:
                        ref = got
                    assert got == ref, (isa, fused, t)
    finally:
        _replay._set_epi_fused(old)
        _replay._set_isa(old_isa)
    # the oracle: eager mode's gradients, per sample, summed
    want = np.zeros(len(params))
    win = np.zeros((B, 3))
    for r, row in enumerate(X.tolist()):
        xs = [Value(v) for v in row]
        for p in params:
            p.grad = 0.0
        out = fn(xs)
        out.backward()
        want += [p.grad for p in params]
        win[r] = [x.grad for x in xs]
    gp = np.frombuffer(ref[1])
    assert np.allclose(gp, want, rtol=1e-12, atol=1e-12)
    assert np.allclose(np.frombuffer(ref[2]).reshape(B, 3), win, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_act_backward_sgd_step_same_bits(act):
    # the SGD step (fused parameter passes) through the new backward: the
    # parameters after two steps equal the op-by-op loop's, every ISA and
    # thread count; and eager mode's forward floats at the end
    def run(isa, fused, t):
        fn, params = _model(act, 16, "one", seed=5)
        prog = fastgrad.compile(fn, 3, params=params)
        X = _data(50, 9)
        _replay._set_isa(isa)
        _replay._set_epi_fused(fused)
        losses = [prog.sgd_step(X, 0.1, num_threads=t) for _ in range(2)]
        outs = np.empty((50, 1))
        prog.batch(X, grad=False, outputs=outs)
        eager = [fn([Value(v) for v in row]).data for row in X.tolist()]
        assert bits(outs[:, 0]) == bits(eager), (isa, fused, t)
        return bits(losses, [p.data for p in params], [p.grad for p in params])
    old_isa = _replay._isa()
    old = _replay._set_epi_fused(True)
    try:
        ref = run("portable", False, 1)
        for isa in _replay._supported_isas():
            for fused in (True, False):
                for t in (1, 2, 3, 8):
                    assert run(isa, fused, t) == ref, (isa, fused, t)
    finally:
        _replay._set_epi_fused(old)
        _replay._set_isa(old_isa)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_act_backward_nan_and_signed_zero_gradients(act):
    # a NaN input row and inputs whose activation's derivative is 0 (|z|
    # huge: tanh' = 0, sigmoid' = 0 or tiny): gradients as the op-by-op loop
    # (a NaN compared as a NaN: its sign follows the compiler's operand
    # order), +0.0 where eager's 0.0 + (-0.0) gives +0.0
    fn, params = _model(act, 9, "one", seed=3)
    prog = fastgrad.compile(fn, 3, params=params)
    X = np.array([[np.nan, 1.0, 0.5], [1e6, -1e6, 2.0], [-1e6, 1e6, -2.0],
                  [0.0, -0.0, -0.0], [np.inf, 0.0, 1.0]])
    old_isa = _replay._isa()
    old = _replay._set_epi_fused(True)
    try:
        for isa in _replay._supported_isas():
            _replay._set_isa(isa)
            got = []
            for fused in (True, False):
                _replay._set_epi_fused(fused)
                gin = np.empty_like(X)
                prog.batch(X, reduce="sum", input_grad=gin)
                got.append(gin)
            nan = np.isnan(got[1])
            assert np.array_equal(np.isnan(got[0]), nan), isa
            assert bits(got[0][~nan]) == bits(got[1][~nan]), isa
    finally:
        _replay._set_epi_fused(old)
        _replay._set_isa(old_isa)
