"""The dense-layer kernels themselves (fastgrad/_replay_gemm_body.h), bit for bit.

``_replay._kernel_rows`` / ``_replay._kernel_wgrad`` run one kernel call of
the current ISA on NumPy arrays.  The oracle is NumPy doing the documented
operations one at a time: a running sum that starts at its start value and
adds ``w * x`` (a separately rounded product, then the sum: NumPy's multiply
and add ufuncs never fuse) term after term.  Every ISA this machine runs,
including the AVX-512 build's tiles compiled for AVX2 ("avx512-on-avx2"),
must give exactly those bits (-0.0 included) on shapes that are not
multiples of any tile or cache block.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgrad

pytestmark = pytest.mark.compiled_only("the compiled replay's layer kernels")

if fastgrad.COMPILED:
    from fastgrad import _replay

SKIP, STORE, ADD = 0, 1, 2
MR = 8                                   # rows of a packed weight panel


def isas():
    return _replay._supported_isas(emulated=True)


def bits(a):
    """uint64 view for identity checks (-0.0 != +0.0; all NaNs alike, since a
    NaN's payload may depend on operand order, which no result here relies
    on)."""
    a = np.array(a, dtype=np.float64, copy=True)
    a[np.isnan(a)] = np.nan
    return a.view(np.uint64)


def assert_bits(a, b, msg=""):
    ba, bb = bits(a), bits(b)
    if not np.array_equal(ba, bb):
        bad = np.argwhere(ba != bb)[:5]
        raise AssertionError(f"{msg}: bits differ at {bad.tolist()}: "
                             f"{[np.asarray(a)[tuple(i)] for i in bad]} vs "
                             f"{[np.asarray(b)[tuple(i)] for i in bad]}")


def pack(W):
    """W (M, K) in panels of MR rows, as one row (the kernels' layout)."""
    M, K = W.shape
    Mp = -(-M // MR) * MR
    P = np.zeros(Mp * K)
    for r in range(M):
        for k in range(K):
            P[(r // MR) * K * MR + k * MR + r % MR] = W[r, k]
    return P.reshape(1, -1)


def ref_rows(W, init, post, mode, relu, X, out0):
    """out[r] for every row of W (M, K) over the columns of X (K, n):
    start (init[r], +0.0 if init is None, or the row's value for ADD), add
    W[r, p] * X[p] for p in order, then post[r], then relu."""
    M, K = W.shape
    out = out0.copy()
    n = X.shape[1]
    for r in range(M):
        m = STORE if mode is None else mode[r]
        if m == SKIP:
            continue
        if m == ADD:
            acc = out0[r, :n].copy()
        else:
            acc = np.full(n, 0.0 if init is None else init[r])
        for p in range(K):
            acc = acc + W[r, p] * X[p]
        if post is not None:
            acc = acc + post[r]
        if relu:
            acc = np.where(acc < 0.0, 0.0, acc)
        out[r, :n] = acc
    return out


def special(rng, shape, frac=0.1):
    """Normal numbers with some signed zeros mixed in."""
    a = rng.normal(size=shape)
    z = rng.random(shape) < frac
    a[z] = np.where(rng.random(int(z.sum())) < 0.5, -0.0, 0.0)
    return a


def run_rows(isa, trans, M, K, n, ld, seed, with_init=True, with_post=False,
             with_mode=False, relu=False, alias=False):
    rng = np.random.default_rng(seed)
    A = special(rng, (K, M) if trans else (M, K))
    W = A.T if trans else A               # the product's (M, K) weights
    P = pack(A)
    n_in = K + 3
    inp = special(rng, (n_in, ld))
    in_rows = rng.permutation(n_in)[:K].astype(np.int32)
    n_out = M + 2
    out = special(rng, (n_out, ld))
    out_rows = rng.permutation(n_out)[:M].astype(np.int32)
    if alias:                             # in and out rows in one matrix (as gb)
        big = special(rng, (n_in + n_out, ld))
        inp = out = big
        in_rows = np.arange(K, dtype=np.int32)
        out_rows = (K + rng.permutation(n_out)[:M]).astype(np.int32)
    init = special(rng, M) if with_init else None
    if init is not None:
        init[::3] = -0.0                  # the "first product" start
    post = special(rng, M) if with_post else None
    mode = rng.integers(0, 3, M).astype(np.uint8) if with_mode else None
    before = out.copy()
    X = inp[in_rows, :n].copy()
    expect = ref_rows(W, init, post, mode, relu, X, before[out_rows])
    old = _replay._set_isa(isa)
    try:
        _replay._kernel_rows(P, M, K, trans, init, post, mode, relu, inp, in_rows,
                             out, out_rows, n)
    finally:
        _replay._set_isa(old)
    got = out[out_rows]
    assert_bits(got[:, :n], expect[:, :n], f"{isa} trans={trans} M={M} K={K} n={n}")
    # nothing else written: other rows, and columns past n rounded up to 8
    others = np.setdiff1d(np.arange(out.shape[0]), out_rows)
    if not alias:
        assert_bits(out[others], before[others], "rows outside out_rows")
    n8 = -(-n // 8) * 8
    assert_bits(out[:, n8:], before[:, n8:], "columns past the padding")
    if mode is not None:
        skipped = out_rows[mode == SKIP]
        assert_bits(out[skipped], before[skipped], "FG_SKIP rows")


SHAPES = [(1, 1, 1), (1, 7, 5), (7, 1, 3), (4, 12, 12), (5, 13, 13), (9, 3, 25),
          (13, 24, 100), (17, 33, 7), (8, 8, 8), (65, 40, 37), (3, 300, 29),
          (70, 130, 50), (130, 260, 9),
          # row counts around the AVX2 build's 128-row blocks (M <= 256) and its
          # 64-row blocks above: 128 + 72, 2 x 128, 4 x 64 + 1
          (200, 20, 30), (256, 9, 13), (257, 5, 11)]


@pytest.mark.parametrize("M, K, n", SHAPES)
@pytest.mark.parametrize("trans", [False, True])
def test_rows_kernel_bits_on_every_isa(M, K, n, trans):
    ld = -(-n // 8) * 8 + 8
    for isa in isas():
        run_rows(isa, trans, M, K, n, ld, seed=M * 1000 + K * 10 + n, relu=not trans,
                 with_init=not trans, with_mode=trans)


def _rows_block_shapes():
    # fg_gemm_rows blocks columns widely when M * K > wide_w: as many whole
    # register tiles' B panels (FG_KC terms deep) as the scratch holds (FG_WORK
    # doubles less 7 for alignment); 12-column tiles (AVX2, AVX-512) and
    # 6-column ones (baseline) give the same 60 columns.  n = block - 1,
    # block, block + 1, a second block begun; K: term blocks of FG_KC and a
    # ragged last one; 9 rows: a tile of 8 (AVX-512) or 2 of 4, and one more.
    # And one product just at wide_w (one tile per column block).
    if not fastgrad.COMPILED:
        return []                        # (the module is skipped)
    b = _replay._kernel_blocks()
    M = 9
    K = b["wide_w"] // M + 1
    shapes = [(M, b["wide_w"] // M, 61)]
    ncs = {(b["work"] - 7) // (b["kc"] * nr) * nr for nr in (12, 6)}
    for nc in sorted(ncs):
        for n in (nc - 1, nc, nc + 1, 2 * nc + 1):
            shapes.append((M, K, n))
    return shapes


@pytest.mark.parametrize("M, K, n", _rows_block_shapes())
@pytest.mark.parametrize("trans", [False, True])
def test_rows_kernel_column_blocks(M, K, n, trans):
    ld = -(-n // 8) * 8
    for isa in isas():
        run_rows(isa, trans, M, K, n, ld, seed=K + n, relu=not trans,
                 with_init=not trans, with_mode=trans)


@pytest.mark.parametrize("isa_post", [True, False])
def test_rows_kernel_post_relu_and_modes(isa_post):
    for isa in isas():
        for M, K, n in [(6, 5, 11), (21, 19, 30), (4, 2, 4)]:
            run_rows(isa, False, M, K, n, 40, seed=n, with_post=isa_post, relu=True,
                     with_mode=True)
            run_rows(isa, True, M, K, n, 40, seed=n + 1, with_post=isa_post,
                     with_mode=True, with_init=False)


def test_rows_kernel_huge_ld_and_aliasing():
    # rows 64 KiB apart (a page each), and the backward's in-place use
    for isa in isas():
        run_rows(isa, False, 9, 11, 13, 8200, seed=1, relu=True)
        run_rows(isa, True, 9, 11, 13, 8200, seed=2, with_mode=True, with_init=False)
        run_rows(isa, True, 10, 7, 21, 32, seed=3, with_mode=True, with_init=False,
                 alias=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.integers(1, 40), K=st.integers(1, 40), n=st.integers(1, 60),
       trans=st.booleans(), relu=st.booleans(), post=st.booleans(),
       seed=st.integers(0, 2**31))
def test_rows_kernel_random_shapes(M, K, n, trans, relu, post, seed):
    ld = -(-n // 8) * 8 + 8 * (seed % 3)
    ld = max(ld, 8)
    for isa in isas():
        run_rows(isa, trans, M, K, n, ld, seed, with_init=not trans, with_post=post,
                 with_mode=trans, relu=relu and not trans)


def test_start_values_are_kept_exactly():
    # init -0.0 plus products of -0.0 stays -0.0 (a chain starting at its
    # first product); +0.0 turns a -0.0 product into +0.0 (Python's sum())
    W = np.array([[-1.0, -2.0], [-1.0, -2.0], [3.0, 1.0]])
    P = pack(W)
    inp = np.zeros((2, 8))
    inp[:, 1] = [1.0, 2.0]
    for isa in isas():
        out = np.full((3, 8), 7.0)
        old = _replay._set_isa(isa)
        try:
            _replay._kernel_rows(P, 3, 2, False, np.array([-0.0, 0.0, -0.0]), None, None,
                                 False, inp, np.arange(2, dtype=np.int32), out,
                                 np.arange(3, dtype=np.int32), 2)
            # relu keeps -0.0 (0.0 if v < 0 else v)
            out_r = np.full((3, 8), 7.0)
            _replay._kernel_rows(P, 3, 2, False, np.array([-0.0, 0.0, -0.0]), None, None,
                                 True, inp, np.arange(2, dtype=np.int32), out_r,
                                 np.arange(3, dtype=np.int32), 2)
        finally:
            _replay._set_isa(old)
        assert_bits(out[:, 0], [-0.0, 0.0, 0.0], isa)
        assert_bits(out[:, 1], [-5.0, -5.0, 5.0], isa)
        assert_bits(out_r[:, 0], [-0.0, 0.0, 0.0], isa)
        assert_bits(out_r[:, 1], [0.0, 0.0, 5.0], isa)


# ---------------------------------------------------------------------------
# weight gradients
# ---------------------------------------------------------------------------

def ref_wgrad(G, X, C0, fresh):
    """C[i, k] (k < K) = running sum over the columns j of G[i, j] * X[k, j];
    C[i, K] the same with X = 1.0 (the bias)."""
    M, n = G.shape
    XX = np.vstack([X, np.ones((1, n))])
    acc = np.zeros((M, XX.shape[0])) if fresh else C0.copy()
    for j in range(n):
        acc = acc + np.outer(G[:, j], XX[:, j])
    return acc


def run_wgrad(isa, M, K, n, ld, seed, fresh, consecutive=True):
    rng = np.random.default_rng(seed)
    R = M + K + 4
    mat = special(rng, (R, ld))
    g_rows = ((np.arange(M) + 2) if consecutive
              else rng.permutation(R)[:M]).astype(np.int32)
    x_rows = rng.permutation(R)[:K].astype(np.int32)
    ldc = _replay._wgrad_ld(K)
    C = special(rng, (M, ldc))
    expect = ref_wgrad(mat[g_rows, :n], mat[x_rows, :n], C[:, :K + 1], fresh)
    before = mat.copy()
    old = _replay._set_isa(isa)
    try:
        _replay._kernel_wgrad(M, K, mat, g_rows, mat, x_rows, n, C, fresh)
    finally:
        _replay._set_isa(old)
    assert_bits(C[:, :K + 1], expect, f"{isa} M={M} K={K} n={n} fresh={fresh}")
    assert_bits(mat, before, "inputs untouched")


@pytest.mark.parametrize("M, K, n", [(1, 1, 1), (1, 1, 0), (3, 2, 5), (4, 11, 12),
                                     (5, 12, 13), (9, 23, 100), (13, 7, 300),
                                     (17, 47, 257), (1, 130, 9), (40, 3, 70)])
@pytest.mark.parametrize("fresh", [True, False])
def test_wgrad_kernel_bits_on_every_isa(M, K, n, fresh):
    ld = max(8, -(-n // 8) * 8)
    for isa in isas():
        run_wgrad(isa, M, K, n, ld, seed=M * 100 + K + n, fresh=fresh)


def _wgrad_block_shapes():
    # Sums of more than wide_w doubles (M * ldc) take C columns in blocks
    # of as many register tiles as xt_block doubles of X^T hold: around the
    # blocks of the 12-column tiles (AVX2, AVX-512) and the 6-column ones
    # (baseline), K + 1 = block - 1, block, block + 1, and a second block
    # just begun; batch widths: the replay's chunks at H = 512 (32) and H =
    # 128 N = 100 (100), one column (the widest block), and two batch blocks
    # (256 + 44, each its own blocks).  M: just past wide_w, 5 more than a
    # multiple of 8 (register tiles of 8 or 4 and a ragged rest).  And one
    # sum of wide_w doubles exactly (one tile per block).
    if not fastgrad.COMPILED:
        return []                        # (the module is skipped)
    b = _replay._kernel_blocks()
    shapes = {(32, b["wide_w"] // 128, 127)}        # ldc 128
    for n, nj in [(32, 32), (100, 100), (1, 1), (300, 44)]:
        for nr in (12, 6):
            kc = b["xt_block"] // (nj * nr) * nr
            for k1 in (kc - 1, kc, kc + 1, 2 * kc + 1):
                ldc = _replay._wgrad_ld(k1 - 1)
                M = (b["wide_w"] // ldc + 1) // 8 * 8 + 5
                shapes.add((n, M, k1 - 1))
    return sorted(shapes)


@pytest.mark.parametrize("n, M, K", _wgrad_block_shapes())
def test_wgrad_kernel_column_blocks(n, M, K):
    # and scattered g rows (one-row tiles only)
    ld = -(-n // 8) * 8
    for isa in isas():
        run_wgrad(isa, M, K, n, ld, seed=K * 7 + n, fresh=False)
        if K % 2:
            run_wgrad(isa, M, K, n, ld, seed=K + n, fresh=True, consecutive=False)


def test_wgrad_kernel_scattered_rows_and_huge_ld():
    for isa in isas():
        run_wgrad(isa, 11, 9, 20, 8200, seed=5, fresh=False, consecutive=False)
        run_wgrad(isa, 6, 14, 33, 40, seed=6, fresh=True, consecutive=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.integers(1, 30), K=st.integers(1, 30), n=st.integers(0, 50),
       fresh=st.booleans(), seed=st.integers(0, 2**31))
def test_wgrad_kernel_random_shapes(M, K, n, fresh, seed):
    ld = max(8, -(-n // 8) * 8)
    for isa in isas():
        run_wgrad(isa, M, K, n, ld, seed, fresh)


def test_kernel_hooks_reject_bad_shapes():
    P = np.zeros((1, 8))
    a = np.zeros((2, 8))
    r = np.zeros(1, np.int32)
    with pytest.raises(ValueError, match="inconsistent"):
        _replay._kernel_rows(P, 1, 1, False, None, None, None, False, a, r, a, r, 9)
    with pytest.raises(ValueError, match="bad out_rows"):
        _replay._kernel_rows(P, 1, 1, False, None, None, None, False, a, r, a,
                             np.array([5], np.int32), 8)
    with pytest.raises(ValueError, match="inconsistent"):
        _replay._kernel_wgrad(1, 1, a, r, a, r, 8, np.zeros((1, 3)), True)


def test_emulated_avx512_is_not_chosen_by_itself():
    assert "avx512-on-avx2" not in _replay._supported_isas()
    assert _replay._isa() != "avx512-on-avx2"
    old = _replay._set_isa("best")
    try:
        assert _replay._isa() != "avx512-on-avx2"
    finally:
        _replay._set_isa(old)


@pytest.mark.parametrize("H, B", [(1, 50), (7, 600), (13, 37), (300, 23)])
@pytest.mark.parametrize("want_inputs", [False, True])
def test_input_gradient_wt_panels_give_the_transposed_reads_bits(H, B, want_inputs):
    """The backward's input gradient W^T dZ reads W^T from panels of its own
    (packed each replay from the forward's panels); the older path reads the
    forward's panels transposed.  Both add the same products in the same
    order: the same bits for every ISA and thread count, on layers whose
    sizes are no multiple of the panel (8) or tile, with K=3 inputs into the
    first layer, and (H=300) a sum over more terms than one K block (256 on
    AVX2, 128 with the AVX-512 tiles).  Without input gradients the first
    layer packs no W^T at all (its input rows want none).  (The gradients
    against independent oracles: tests/test_layers.py, on the default path.)"""
    import random
    from fastgrad import Value
    from fastgrad.compiled import compile_graph
    from fastgrad.nn import MLP
    random.seed(H)
    model = MLP(3, [H, H, 1])
    xs = [Value(0.0) for _ in range(3)]
    prog = compile_graph(model(xs), inputs=xs, params=model.parameters())
    rng = np.random.default_rng(H)
    X = special(rng, (B, 3), frac=0.2)
    runs = {}
    old_isa = _replay._set_isa("best")
    old_wt = _replay._set_wt_panels(True)
    try:
        for isa in isas():
            _replay._set_isa(isa)
            for wt in (False, True):
                _replay._set_wt_panels(wt)
                for threads in (1, 3):
                    pg = np.empty(prog.n_params)
                    gin = np.full((B, 3), np.nan)
                    loss = prog.batch(X, param_grad=pg,
                                      input_grad=gin if want_inputs else None,
                                      num_threads=threads)
                    runs[isa, wt, threads] = (np.float64(loss).tobytes() + pg.tobytes()
                                              + (gin.tobytes() if want_inputs else b""))
    finally:
        _replay._set_isa(old_isa)
        _replay._set_wt_panels(old_wt)
    first = runs["portable", False, 1]
    for key, got in runs.items():
        assert got == first, f"{key} differs from the portable transposed read"
