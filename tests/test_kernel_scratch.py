"""The layer kernels' scratch may sit at any 8-byte offset: same bits.

The vector builds start their packed panels at the first 64-byte boundary
inside the caller's scratch (``fg_align_work`` in fastgrad/_replay_gemm.h: an
AVX2 vector at 16 mod 32 bytes splits a cache line every other load, which
made some Program objects 25-30% slower than others).  ``work_shift`` makes
the testing hooks hand the kernel scratch that starts 0..7 doubles into a
fresh allocation; every shift must give the bits of a running sum computed
term by term with NumPy, on shapes that cross the cache blocks (more terms
than FG_KC, more columns than FG_JC), on every ISA this machine runs.  Under
the sanitizer build this also checks that the aligned panels stay inside
FG_WORK.
"""
import itertools

import numpy as np
import pytest

import fastgrad

pytestmark = pytest.mark.compiled_only("the compiled replay's layer kernels")

if fastgrad.COMPILED:
    from fastgrad import _replay

MR = 8


def isas():
    return _replay._supported_isas(emulated=True)


def u64(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def pack(W):
    M, K = W.shape
    P = np.zeros(-(-M // MR) * MR * K)
    for r in range(M):
        P[(r // MR) * K * MR + np.arange(K) * MR + r % MR] = W[r]
    return P.reshape(1, -1)


def test_rows_same_bits_at_every_scratch_offset():
    rng = np.random.default_rng(7)
    M, K, n, ld = 13, 300, 45, 48          # K > FG_KC (256 / 128): two term blocks
    W = rng.normal(size=(M, K))
    P = pack(W)
    inp = rng.normal(size=(K, ld))
    rows_in = np.arange(K, dtype=np.int32)
    rows_out = np.arange(M, dtype=np.int32)
    init = rng.normal(size=M)
    # the oracle: start at init, add the rounded products term by term
    expect = np.repeat(init[:, None], n, axis=1)
    for p in range(K):
        expect = expect + W[:, p:p + 1] * inp[p, :n]
    for isa, shift in itertools.product(isas(), range(8)):
        old = _replay._set_isa(isa)
        try:
            out = np.zeros((M, ld))
            _replay._kernel_rows(P, M, K, False, init, None, None, False, inp, rows_in,
                                 out, rows_out, n, work_shift=shift)
        finally:
            _replay._set_isa(old)
        assert np.array_equal(u64(out[:, :n]), u64(expect)), (isa, shift)


def test_wgrad_same_bits_at_every_scratch_offset():
    rng = np.random.default_rng(8)
    M, K, n, ld = 9, 14, 300, 304          # n > FG_JC (256 / 128): two column blocks
    mat = rng.normal(size=(M + K, ld))
    g_rows = np.arange(M, dtype=np.int32)
    x_rows = np.arange(M, M + K, dtype=np.int32)
    ldc = _replay._wgrad_ld(K)
    XX = np.vstack([mat[M:, :n], np.ones((1, n))])
    expect = np.zeros((M, K + 1))
    for j in range(n):
        expect = expect + np.outer(mat[:M, j], XX[:, j])
    for isa, shift in itertools.product(isas(), range(8)):
        old = _replay._set_isa(isa)
        try:
            C = np.full((M, ldc), np.nan)
            _replay._kernel_wgrad(M, K, mat, g_rows, mat, x_rows, n, C, True,
                                  work_shift=shift)
        finally:
            _replay._set_isa(old)
        assert np.array_equal(u64(C[:, :K + 1]), u64(expect)), (isa, shift)


def test_work_shift_is_checked():
    P = np.zeros((1, 8))
    a = np.zeros((1, 8))
    r = np.zeros(1, np.int32)
    with pytest.raises(ValueError, match="work_shift"):
        _replay._kernel_rows(P, 1, 1, False, None, None, None, False, a, r, a, r, 1,
                             work_shift=8)
    with pytest.raises(ValueError, match="work_shift"):
        _replay._kernel_wgrad(1, 1, a, r, a, r, 1, np.zeros((1, 8)), True, work_shift=-1)
