# Stage 3 for dense layers: running them (finding them, stage 2, is
# _replay_layers.pxi; the C kernels are _replay_gemm.h / _replay_gemm_body.h).
# (included by _replay.pyx; see the stage list in its docstring)
#
# A layer's forward is one matrix kernel: each output z_r = act((init_r +
# sum_k w_rk x_k) + post_r), the sum from init_r adding the rounded products
# in the chain's order, as the recorded chain does (the same floats as eager
# mode, signs of zero included: init_r = -0.0 for a chain that starts at its
# first product, +0.0 for Python's sum() starting at 0, the bias for
# micrograd's; post_r = a bias added last, -0.0 for none); act = a relu
# alone, on the register tiles; any other activation chain is the epilogue's
# (_replay_epilogue.pxi), on the rows the kernel just wrote.  Its backward is
# one pass: the incoming gradient rows (masked by a fused relu, or through
# the epilogue's rules), the weight and bias gradients (sums over the batch
# columns, in column order, into running sums: H rows of K + 1 per layer,
# padded to fg_wgrad_ld(K), that a column block keeps over its chunks;
# blocks are combined in block order, see _replay_blocks.pxi) and the
# gradient rows of X (W^T @ dZ, summed over the layer's outputs in order,
# W^T packed into panels of its own once per replay, see _pack_wt).  Those sums are in another
# order than the per-instruction backward's, so gradients differ from it
# (and from eager mode) by rounding; tests/test_layers.py bounds the
# difference.  Every ISA and every thread count gives the same bits.

cdef extern from "_replay_gemm.h" nogil:
    int FG_SKIP, FG_STORE, FG_ADD, FG_MR, FG_WORK, FG_XT_BLOCK, FG_KC_ALL, FG_WIDE_W
    void fg_gemm_rows(int M, int K, const double* P, int trans, const double* init,
                      const double* post, const unsigned char* mode, int relu,
                      const double* inp, const int* in_rows, double* out,
                      const int* out_rows, Py_ssize_t ld, Py_ssize_t n, double* work)
    void fg_gemm_wgrad(int M, int K, const double* g, const int* g_rows,
                       const double* x, const int* x_rows, Py_ssize_t ld,
                       Py_ssize_t n, double* C, int fresh, double* work)
    void fg_grad_in(int M, const unsigned char* has, int relu, const double* v,
                    double* g, const int* rows, Py_ssize_t ld, Py_ssize_t n)
    Py_ssize_t fg_wgrad_ld(int K)
    double fg_peak(long iters, double s, double* flops)
    int fg_isa_select(int level)
    int fg_isa_get()
    int fg_isa_supported(int level)

fg_isa_select(-1)

# level -> name; the last one is the AVX-512 build's tiles compiled for AVX2
# (tests run the AVX-512 code paths with it on CPUs without AVX-512)
_ISA_NAMES = ("portable", "baseline", "avx2", "avx512", "avx512-on-avx2")
_N_REAL_ISAS = 4


def _isa():
    """Name of the instruction set the layer kernels run with."""
    return _ISA_NAMES[fg_isa_get()]


def _supported_isas(emulated=False):
    """The instruction sets this CPU (and build) can run the kernels with;
    ``emulated=True`` adds "avx512-on-avx2" (for tests) when it runs here."""
    n = len(_ISA_NAMES) if emulated else _N_REAL_ISAS
    return [name for i, name in enumerate(_ISA_NAMES[:n]) if fg_isa_supported(i)]


def _set_isa(name):
    """Testing hook: run the layer kernels and the rows of exp/log/tanh/
    sigmoid with ISA ``name`` ("portable", "baseline", "avx2", "avx512",
    "avx512-on-avx2" or "best"); returns the previous name."""
    old = _isa()
    if name == "best":
        fg_isa_select(-1)
    elif name not in _ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}; choose from {_ISA_NAMES + ('best',)}")
    elif fg_isa_select(_ISA_NAMES.index(name)) < 0:
        raise ValueError(f"this CPU or build cannot run the {name} kernels")
    # the elementary functions' rows too (the same bits at every width; the
    # AVX-512 tiles compiled for AVX2 run with the AVX2 rows)
    fg_vm_isa_select(2 if fg_isa_get() == 4 else fg_isa_get())
    return old


def _peak_gflops(double seconds=0.05, int repeats=5):
    """This core's measured mul+add peak in GFLOP/s with the current ISA's
    vectors: independent multiply-then-add chains in registers (no FMA, as
    the layer kernels compute), the best of ``repeats`` runs of about
    ``seconds`` of thread CPU time each.  The benchmarks' FLOP-bound ratios
    are against it."""
    cdef long iters = 1 << 12
    cdef double flops = 0.0, sink = 0.0, best = 0.0, t0, t
    cdef int k
    if not seconds > 0 or repeats < 1:
        raise ValueError("_peak_gflops: seconds > 0 and repeats >= 1")
    # iterations for about ``seconds`` (doubling from a short run)
    while True:
        t0 = time.thread_time()
        with nogil:
            sink += fg_peak(iters, 0.999, &flops)
        t = time.thread_time() - t0
        if t >= seconds / 4 or iters > (1 << 40):
            break
        iters *= 2
    iters = <long>max(iters * seconds / max(t, 1e-9), 1.0)
    for k in range(repeats):
        t0 = time.thread_time()
        with nogil:
            sink += fg_peak(iters, 0.999, &flops)
        t = time.thread_time() - t0
        if t > 0:
            best = max(best, flops / t * 1e-9)
    if sink != sink:                  # (never: keeps the sums alive)
        raise RuntimeError("_peak_gflops: NaN")
    return best


def _scratch(int shift):
    """FG_WORK doubles of kernel scratch starting ``shift`` (0..7) doubles
    into a fresh allocation that ends with it (tests: the kernels align it
    themselves; the sanitizer build sees a write past its end)."""
    if not 0 <= shift < 8:
        raise ValueError("work_shift: 0..7")
    return np.zeros(FG_WORK + shift, np.float64)[shift:]


def _kernel_rows(const double[:, ::1] P, int M, int K, bint trans, init, post,
                 mode, bint relu, const double[:, ::1] inp, const int[::1] in_rows,
                 double[:, ::1] out, const int[::1] out_rows, Py_ssize_t n,
                 int work_shift=0):
    """Testing hook: ``fg_gemm_rows`` of the current ISA on NumPy arrays
    (P: the packed weights as one row; inp/out: row matrices of equal
    width, the row stride is their width).  Checks the shapes only.
    ``work_shift``: the kernel's scratch starts that many doubles (0..7)
    into a fresh allocation (its alignment must not change any bit)."""
    cdef const double[::1] iv
    cdef const double[::1] pv
    cdef const unsigned char[::1] mv
    cdef double[::1] work = _scratch(work_shift)
    cdef Py_ssize_t ld = out.shape[1]
    cdef int need = (M + FG_MR - 1) // FG_MR * FG_MR * K if not trans else \
        (K + FG_MR - 1) // FG_MR * FG_MR * M
    if (inp.shape[1] != ld or n > ld or n < 0 or M < 0 or K < 0
            or P.shape[1] < max(need, 1) or in_rows.shape[0] < K
            or out_rows.shape[0] < M):
        raise ValueError("_kernel_rows: inconsistent shapes")
    for q in range(K):
        if not 0 <= in_rows[q] < inp.shape[0]:
            raise ValueError("_kernel_rows: bad in_rows")
    for q in range(M):
        if not 0 <= out_rows[q] < out.shape[0]:
            raise ValueError("_kernel_rows: bad out_rows")
    if init is not None:
        iv = np.ascontiguousarray(init, np.float64)
        if iv.shape[0] < M:
            raise ValueError("_kernel_rows: short init")
    if post is not None:
        pv = np.ascontiguousarray(post, np.float64)
        if pv.shape[0] < M:
            raise ValueError("_kernel_rows: short post")
    if mode is not None:
        mv = np.ascontiguousarray(mode, np.uint8)
        if mv.shape[0] < M:
            raise ValueError("_kernel_rows: short mode")
    with nogil:
        fg_gemm_rows(M, K, &P[0, 0], trans, &iv[0] if init is not None else NULL,
                     &pv[0] if post is not None else NULL,
                     &mv[0] if mode is not None else NULL, relu, &inp[0, 0],
                     &in_rows[0] if K > 0 else NULL, &out[0, 0],
                     &out_rows[0] if M > 0 else NULL, ld, n, &work[0])


def _kernel_wgrad(int M, int K, const double[:, ::1] g, const int[::1] g_rows,
                  const double[:, ::1] x, const int[::1] x_rows, Py_ssize_t n,
                  double[:, ::1] C, bint fresh, int work_shift=0):
    """Testing hook: ``fg_gemm_wgrad`` of the current ISA on NumPy arrays
    (C of shape (M, ``_wgrad_ld(K)``); its first K + 1 columns are the
    results).  Checks the shapes only.  ``work_shift``: see _kernel_rows."""
    cdef double[::1] work = _scratch(work_shift)
    cdef Py_ssize_t ld = g.shape[1]
    if (x.shape[1] != ld or n > ld or n < 0 or M < 0 or K < 0
            or C.shape[0] != M or C.shape[1] != fg_wgrad_ld(K)
            or g_rows.shape[0] < M or x_rows.shape[0] < K):
        raise ValueError("_kernel_wgrad: inconsistent shapes")
    for q in range(M):
        if not 0 <= g_rows[q] < g.shape[0]:
            raise ValueError("_kernel_wgrad: bad g_rows")
    for q in range(K):
        if not 0 <= x_rows[q] < x.shape[0]:
            raise ValueError("_kernel_wgrad: bad x_rows")
    if M == 0:
        return
    with nogil:
        fg_gemm_wgrad(M, K, &g[0, 0], &g_rows[0], &x[0, 0],
                      &x_rows[0] if K > 0 else NULL, ld, n, &C[0, 0], fresh, &work[0])


def _kernel_blocks():
    """The kernels' block sizes (tests: shapes at their boundaries): the
    scratch in doubles (the rows product's column blocks of B panels fill
    it, less 7 for alignment, when M * K > wide_w), the doubles of X^T per
    column block of the weight gradient, and the rows product's terms per
    block (FG_KC, the same at every ISA)."""
    return {"work": FG_WORK, "xt_block": FG_XT_BLOCK, "kc": FG_KC_ALL,
            "wide_w": FG_WIDE_W}


def _wgrad_ld(int K):
    """Row stride of the weight-gradient sums for K inputs (tests)."""
    return fg_wgrad_ld(K)


# The input gradient dX = W^T dZ reads W^T from panels of its own (True),
# packed once per replay by layers_pack, the layout of the forward's panels:
# the same micro-kernel and loops as the forward.  False: the older path,
# reading the forward's panels transposed (fg_gemm_rows' trans; tile rows at
# a stride of FG_MR doubles and panels at a stride of H * FG_MR).  Both add
# the same products in the same order: the same bits.
# Measured (Zen 3, one core, quiet, load ~1-2; the product alone on H x H
# weights, H = 128/256/512, over 32/64/256 columns, CPU time, median of 9
# interleaved rounds: `taskset -c 0 env PYTHONPATH=src python
# benchmarks/bench_wt_panels.py --only kernel`), two runs: avx2 28.6-30.6
# -> 34.4-36.9 GFLOP/s (0.83-0.91x the time) and 23.4-26.1 -> 26.2-29.7
# (0.88-0.91x); baseline 0.81-0.85x and 0.88-0.92x; portable (plain loops)
# 0.80-1.09x.  The demo step of MLP(2, [H, H, 1]) (packing included;
# `--only step`): avx2 0.93-0.99x the CPU time, except H = 512 N = 100
# (0.985-1.11x over four runs); baseline 0.90-0.99x; portable 0.85-1.02x.
cdef bint WT_PANELS = True


def _set_wt_panels(bint on):
    """Testing/tuning hook: the input-gradient product reads W^T from its
    own packed panels (True, default) or the forward's panels transposed
    (False); returns the old setting.  Not while a replay runs."""
    global WT_PANELS
    old = WT_PANELS
    WT_PANELS = on
    return old


cdef void _pack_wt(const double* P, double* T, int H, int K) noexcept nogil:
    """W^T (K x H) packed in panels of FG_MR rows (rows past K zero) from
    W's panels P (H x K, see _replay_gemm_body.h): T[(k / FG_MR) * H * FG_MR
    + i * FG_MR + k % FG_MR] = P[(i / FG_MR) * K * FG_MR + k * FG_MR + i %
    FG_MR].  Block by block of FG_MR x FG_MR, each 64 contiguous doubles in
    both layouts."""
    cdef int kb = 0, ib, i, k, nk, ni
    cdef const double* s
    cdef double* d
    while kb < K:
        nk = K - kb if K - kb < FG_MR else FG_MR
        ib = 0
        while ib < H:
            ni = H - ib if H - ib < FG_MR else FG_MR
            s = P + <Py_ssize_t>ib * K + <Py_ssize_t>kb * FG_MR
            d = T + <Py_ssize_t>kb * H + <Py_ssize_t>ib * FG_MR
            for i in range(ni):
                for k in range(nk):
                    d[i * FG_MR + k] = s[k * FG_MR + i]
                for k in range(nk, FG_MR):
                    d[i * FG_MR + k] = 0.0
            ib += FG_MR
        kb += FG_MR


cdef void layers_pack(LayerCtx* L, const double* vs) noexcept nogil:
    """Gather this replay's weights into the packed panels (rows past H
    zero), then the H start values of the sums (and the H post adds), then
    W^T's panels for the input gradient (when some input row wants one)."""
    cdef int li, H, K, i, k, sl, hp
    cdef bint want_x
    cdef const int* m
    cdef const int* w
    cdef double* p
    cdef double* q
    for li in range(L.n):
        m = L.meta + li * LM_SIZE
        H = m[LM_H]
        K = m[LM_K]
        w = L.slots + m[LM_W]
        p = L.pw + m[LM_PW]
        # row by row, in the slots' order (a panel's 8 rows x K doubles are
        # written 8 times over, while they are in L1)
        for i in range(H):
            q = p + (i // FG_MR) * K * FG_MR + i % FG_MR
            for k in range(K):
                q[k * FG_MR] = vs[w[i * K + k]]
        hp = _round_mr(H)
        for i in range(H, hp):
            q = p + (i // FG_MR) * K * FG_MR + i % FG_MR
            for k in range(K):
                q[k * FG_MR] = 0.0
        p += hp * K
        for i in range(H):
            sl = L.slots[m[LM_B] + i]
            p[i] = vs[sl] if sl >= 0 else L.init[m[LM_INIT] + i]
        if m[LM_BL] >= 0:
            p += H
            for i in range(H):
                sl = L.slots[m[LM_BL] + i]
                # -0.0: x + -0.0 == x for every x (a row without a post add)
                p[i] = vs[sl] if sl >= 0 else -0.0
        if WT_PANELS:
            want_x = L.rmode == NULL
            for k in range(K):
                if not want_x and L.rmode[m[LM_X] + k] != FG_SKIP:
                    want_x = True
            if want_x:
                p = L.pw + m[LM_PW]
                _pack_wt(p, p + _wt_off(m), H, K)


cdef void layer_forward(const LayerCtx* L, int li, const double* vs, double* vb,
                        Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K], act = m[LM_ACT], i, k, sl, q
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    cdef const int* zrow = L.rows + m[LM_Z] if m[LM_Z] >= 0 else orow
    cdef const int* w = L.slots + m[LM_W]
    cdef const double* post
    cdef const double* pw
    cdef bint epi
    cdef bint usig = epi_usig(m[LM_NEP], L.ep + m[LM_EP])
    cdef Py_ssize_t j
    cdef double z
    if L.pw != NULL:
        pw = L.pw + m[LM_PW]
        post = (pw + _round_mr(H) * K + H) if m[LM_BL] >= 0 else NULL
        # the kernel adds the post values and applies a relu alone, on the
        # register tiles; any other epilogue runs on the rows it wrote (Z),
        # while they are in cache
        epi = m[LM_NEP] > 0 and not act
        fg_gemm_rows(H, K, pw, 0, pw + _round_mr(H) * K, post, NULL, act, vb, xr,
                     vb, zrow if epi else orow, ld, n, L.work)
        if epi:
            epilogue_forward(H, m[LM_NEP], L.ep + m[LM_EP], L.epc + m[LM_EP],
                             NULL, vb, zrow, orow, ld, n)
        return
    # unpacked (c_eval on caller scratch): the chain's operations, in order
    for i in range(H):
        for j in range(n):
            sl = L.slots[m[LM_B] + i]
            z = vs[sl] if sl >= 0 else L.init[m[LM_INIT] + i]
            for k in range(K):
                z = op_forward(OP_ADD, z, op_forward(OP_MUL, vs[w[i * K + k]],
                                                     vb[xr[k] * ld + j], 0.0), 0.0)
            if m[LM_BL] >= 0 and L.slots[m[LM_BL] + i] >= 0:
                z = op_forward(OP_ADD, z, vs[L.slots[m[LM_BL] + i]], 0.0)
            vb[zrow[i] * ld + j] = z
            for q in range(m[LM_NEP]):
                z = op_forward(L.ep[m[LM_EP] + q], z, 0.0, L.epc[m[LM_EP] + q])
                if q == 1 and usig:
                    vb[zrow[i] * ld + j] = z     # Z holds e (as epilogue_forward)
            vb[orow[i] * ld + j] = z


cdef void layer_backward(const LayerCtx* L, int li, bint want_w, bint want_x,
                         const double* vb, double* gb, Py_ssize_t ld,
                         Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K]
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    fg_grad_in(H, L.rmode + m[LM_O], m[LM_ACT], vb, gb, orow, ld, n)
    if m[LM_NEP] > 0 and not m[LM_ACT]:
        # dY -> dZ in place, through the epilogue's rules in reverse
        epilogue_backward(H, m[LM_NEP], L.ep + m[LM_EP], L.epc + m[LM_EP],
                          L.rmode + m[LM_O], vb,
                          L.rows + m[LM_Z] if m[LM_Z] >= 0 else NULL, orow, gb,
                          ld, n)
    if want_w:
        fg_gemm_wgrad(H, K, gb, orow, vb, xr, ld, n, L.acc + m[LM_LN], L.fresh,
                      L.work)
    if want_x and WT_PANELS:
        fg_gemm_rows(K, H, L.pw + m[LM_PW] + _wt_off(m), 0, NULL, NULL,
                     L.rmode + m[LM_X], 0, gb, orow, gb, xr, ld, n, L.work)
    elif want_x:
        fg_gemm_rows(K, H, L.pw + m[LM_PW], 1, NULL, NULL, L.rmode + m[LM_X], 0, gb,
                     orow, gb, xr, ld, n, L.work)


cdef Py_ssize_t layers_acc_size(const LayerCtx* L) noexcept nogil:
    """Doubles of the weight-gradient running sums of all layers."""
    cdef int li
    cdef Py_ssize_t size = 0
    cdef const int* m
    for li in range(L.n):
        m = L.meta + li * LM_SIZE
        size = max(size, m[LM_LN] + m[LM_H] * fg_wgrad_ld(m[LM_K]))
    return size


cdef void layers_combine(const LayerCtx* L, const unsigned char* run,
                         const double* acc, double* total, bint first) noexcept nogil:
    """A column block's weight-gradient sums into the totals: copied for the
    first block, added (in block order) for the others."""
    cdef int li
    cdef Py_ssize_t q, off, size
    cdef const int* m
    for li in range(L.n):
        if run[li]:
            m = L.meta + li * LM_SIZE
            off = m[LM_LN]
            size = m[LM_H] * fg_wgrad_ld(m[LM_K])
            if first:
                memcpy(total + off, acc + off, size * sizeof(double))
            else:
                for q in range(off, off + size):
                    total[q] += acc[q]


cdef void layers_reduce(const LayerCtx* L, const unsigned char* run,
                        const double* total, double* gs) noexcept nogil:
    """Add each layer's weight and bias gradients (the combined sums) to the
    scalar gradients: weight (i, k) to its slot, bias i (column K) to its
    start slot (slot -1: a constant, no gradient)."""
    cdef int li, i, k, H, K, s
    cdef Py_ssize_t ldc
    cdef const int* m
    cdef const int* w
    cdef const int* bs
    cdef const double* sm
    for li in range(L.n):
        if run[li]:
            m = L.meta + li * LM_SIZE
            H = m[LM_H]
            K = m[LM_K]
            w = L.slots + m[LM_W]
            bs = L.slots + m[LM_B]
            sm = total + m[LM_LN]
            ldc = fg_wgrad_ld(K)
            for i in range(H):
                for k in range(K):
                    gs[w[i * K + k]] += sm[i * ldc + k]
                # a bias's gradient is the batch sum of dZ wherever it is
                # added (the start, or a post add)
                s = bs[i]
                if s >= 0:
                    gs[s] += sm[i * ldc + K]
                if m[LM_BL] >= 0:
                    s = L.slots[m[LM_BL] + i]
                    if s >= 0:
                        gs[s] += sm[i * ldc + K]


# -- the parameters' own passes of a training step (issue 21) -----------------
# A step reads every parameter's .data (into vs), packs the layers' weights
# from vs, runs the scalar tape (an L2 penalty: one OP_SDOT over the
# squares), zeroes the scalar gradients, adds the layers' weight-gradient
# sums to them, runs the scalar tape's backward and writes .grad and .data:
# eight passes over the parameters, which at small batches cost as much as a
# third of the step (MLP(2, [256, 256, 1]), 100 rows).  Where each
# parameter is one layer weight, start or post value at most (and the
# penalty's squares are read by nothing else), _ParamMap says where each
# parameter goes, and an SGD step (sgd_step, the demo step) makes two
# passes: the load writes vs, the packed panels (W and W^T) and runs the
# penalty's chain (the same additions in the same order); the store computes
# each gradient as the generic path does (0.0 + the layer's sum, then the
# penalty's two adds) and applies the update.  The same floats, in the same
# order: the same bits.

cdef bint FUSED_PARAMS = True


def _set_fused_params(bint on):
    """Testing/tuning hook: SGD steps use the fused parameter passes where
    they apply (default) or the generic ones; returns the old setting."""
    global FUSED_PARAMS
    old = FUSED_PARAMS
    FUSED_PARAMS = on
    return old


@cython.final
cdef class _ParamMap:
    cdef bint ok                 # the fused passes apply to this plan
    cdef int[::1] pw_pos         # per parameter: its place in l_pw (a W
                                 # panel entry, a start or post value), -1
    cdef int[::1] wt_pos         # its place in W^T's panels, -1: none
    cdef int[::1] ls_pos         # its gradient sum in l_sums, -1: none
    cdef unsigned char[::1] slow  # the generic path's gradient (gs)
    cdef int[::1] slow_list      # those parameters
    cdef unsigned char[::1] smb  # the plan's smb, the fused chain's terms skipped
    cdef int sdot                # the fused square chain (scalar tape index), -1
    cdef int a0, T               # its squares: parameters a0 .. a0 + T - 1
    cdef bint fwd                # its forward runs inside the load


cdef inline bint _pm_set(int[::1] pos, int s, int v, int n_par) noexcept:
    """Record place v of parameter slot s; False if s is no parameter or
    already placed."""
    if s < 0 or s >= n_par or pos[s] >= 0:
        return False
    pos[s] = v
    return True


cdef _ParamMap make_param_map(Program p, _Plan plan):
    """The fused passes' map for a training replay with ``plan`` (see above)."""
    cdef _ParamMap pm = _ParamMap.__new__(_ParamMap)
    cdef int n_par = p.n_params, li, H, K, i, k, s, base, hp, ln, j, q, cnt
    cdef int wt, a, b
    cdef Py_ssize_t ldc
    cdef const int* m
    cdef const int* t
    pm.ok = False
    pm.sdot = -1
    pm.fwd = False
    pm.pw_pos = np.full(max(n_par, 1), -1, np.int32)
    pm.wt_pos = np.full(max(n_par, 1), -1, np.int32)
    pm.ls_pos = np.full(max(n_par, 1), -1, np.int32)
    pm.slow = _np_zeros(max(n_par, 1), _U8)
    if p.nlayers == 0 or n_par == 0:
        return pm
    for li in range(p.nlayers):
        if not plan.lw[li]:
            return pm
        m = &p.l_meta[li * LM_SIZE]
        H = m[LM_H]
        K = m[LM_K]
        base = m[LM_PW]
        hp = _round_mr(H)
        wt = base + <int>_wt_off(m)
        ln = m[LM_LN]
        ldc = fg_wgrad_ld(K)
        for i in range(H):
            for k in range(K):
                s = p.l_slots[m[LM_W] + i * K + k]
                if not _pm_set(pm.pw_pos, s, base + (i // FG_MR) * K * FG_MR
                               + k * FG_MR + i % FG_MR, n_par):
                    return pm
                pm.wt_pos[s] = wt + (k // FG_MR) * H * FG_MR + i * FG_MR + k % FG_MR
                pm.ls_pos[s] = ln + <int>(i * ldc) + k
            s = p.l_slots[m[LM_B] + i]
            if s >= 0:
                if not _pm_set(pm.pw_pos, s, base + hp * K + i, n_par):
                    return pm
                pm.ls_pos[s] = ln + <int>(i * ldc) + K
            if m[LM_BL] >= 0:
                s = p.l_slots[m[LM_BL] + i]
                if s >= 0:
                    if not _pm_set(pm.pw_pos, s, base + hp * K + H + i, n_par):
                        return pm
                    pm.ls_pos[s] = ln + <int>(i * ldc) + K
    # slow: parameters the batched backward adds to outside layers, or that a
    # scalar instruction reads (but the squares of the one chain fused)
    for q in range(plan.bsl.shape[0] - 1):
        s = plan.bsl[q]
        if 0 <= s < n_par:
            pm.slow[s] = 1
    for k in range(p.n_sinstr):
        if p.s_op[k] == OP_SDOT and p.s_c[k] == 1.0 and pm.sdot < 0:
            t = &p.sd[p.s_b[k]]
            if t[0] > 0 and 0 <= t[1] and t[1] + t[0] <= n_par:
                pm.sdot = k
                pm.a0 = t[1]
                pm.T = t[0]
    for k in range(p.n_sinstr):
        _pm_reads(p, pm, k, n_par, pm.slow)
    if pm.sdot >= 0:
        for s in range(pm.a0, pm.a0 + pm.T):
            if pm.slow[s]:
                # read elsewhere: the chain stays the scalar tape's
                pm.sdot = -1
                pm.slow = _np_zeros(max(n_par, 1), _U8)
                for q in range(plan.bsl.shape[0] - 1):
                    s = plan.bsl[q]
                    if 0 <= s < n_par:
                        pm.slow[s] = 1
                for j in range(p.n_sinstr):
                    _pm_reads(p, pm, j, n_par, pm.slow)
                break
    cnt = 0
    for s in range(n_par):
        cnt += pm.slow[s]
    pm.slow_list = _np_zeros(cnt + 1, _I32)
    cnt = 0
    for s in range(n_par):
        if pm.slow[s]:
            pm.slow_list[cnt] = s
            cnt += 1
    pm.smb = np.array(plan.smb, dtype=np.uint8)
    if pm.sdot >= 0:
        pm.smb[pm.sdot] = M_SKIP
        # the chain inside the load: what the scalar tape computes before it
        # reads only parameters below a0 (loaded first) and results
        pm.fwd = True
        for k in range(pm.sdot):
            if not _pm_reads_below(p, k, pm.a0, n_par):
                pm.fwd = False
                break
        a = p.s_a[pm.sdot]
        if a >= pm.a0 and a < n_par:
            pm.fwd = False
    pm.ok = True
    return pm


cdef void _pm_reads(Program p, _ParamMap pm, int k, int n_par,
                    unsigned char[::1] out) noexcept:
    """Mark in ``out`` the parameters scalar instruction k reads (the fused
    chain's squares excepted)."""
    cdef int q, s, b = p.s_b[k]
    cdef const int* t
    if op_is_nary(p.s_op[k]):
        t = &p.s_nx[p.s_a[k]]
        for q in range(t[0]):
            s = t[1 + q]
            if 0 <= s < n_par:
                out[s] = 1
        return
    s = p.s_a[k]
    if 0 <= s < n_par:
        out[s] = 1
    if p.s_op[k] == OP_SDOT:
        if k == pm.sdot:
            return
        t = &p.sd[b]
        for q in range(2 * t[0]):
            s = t[1 + q]
            if 0 <= s < n_par:
                out[s] = 1
        return
    if 0 <= b < n_par:
        out[b] = 1


cdef bint _pm_reads_below(Program p, int k, int a0, int n_par) noexcept:
    """Whether scalar instruction k reads no parameter at or above a0."""
    cdef int q, s, b = p.s_b[k]
    cdef const int* t
    if op_is_nary(p.s_op[k]):
        t = &p.s_nx[p.s_a[k]]
        for q in range(t[0]):
            s = t[1 + q]
            if a0 <= s < n_par:
                return False
        return True
    s = p.s_a[k]
    if a0 <= s < n_par:
        return False
    if p.s_op[k] == OP_SDOT:
        t = &p.sd[b]
        for q in range(2 * t[0]):
            s = t[1 + q]
            if a0 <= s < n_par:
                return False
        return True
    return not (a0 <= b < n_par)


cdef void layers_pack_consts(LayerCtx* L) noexcept nogil:
    """What layers_pack writes that is no parameter: the start constants of
    rows without a start slot, -0.0 for rows without a post slot (the fused
    load writes the rest; padding stays zero from allocation)."""
    cdef int li, H, K, i
    cdef const int* m
    cdef double* p
    for li in range(L.n):
        m = L.meta + li * LM_SIZE
        H = m[LM_H]
        K = m[LM_K]
        p = L.pw + m[LM_PW] + _round_mr(H) * K
        for i in range(H):
            if L.slots[m[LM_B] + i] < 0:
                p[i] = L.init[m[LM_INIT] + i]
        if m[LM_BL] >= 0:
            p += H
            for i in range(H):
                if L.slots[m[LM_BL] + i] < 0:
                    p[i] = -0.0
