# Stage 3 of the replay compiler: the per-instruction kernels.
# (included by _replay.pyx; see the stage list in its docstring)

# ---------------------------------------------------------------------------
# elementary functions over whole rows (_vmath_rows.h)
# ---------------------------------------------------------------------------
# exp/log/tanh/sigmoid run over a row with the vector build of the ISA chosen
# at import (fg_vm_isa_select, switched with the layer kernels' by _set_isa).
# Every build gives op_forward's floats (the same functions at width 1).
# Measured (benchmarks/bench_vmath.py, AVX2): a tanh row costs ~2.5 ns per
# element, libm's tanh in the per-element loop ~17 ns.

cdef extern from "_vmath_rows.h" nogil:
    enum:
        FG_VM_EXP, FG_VM_EXPM1, FG_VM_LOG, FG_VM_LOG1P, FG_VM_TANH,
        FG_VM_SIGMOID, FG_VM_SOFTPLUS
    void fg_vm_row(int fn, const double* x, double* out, Py_ssize_t n)
    # (_vmath_nary.h: the softmax / logsumexp kernels below)
    void fg_vm_lse_fw(double* o, const int* refs, int cnt, const double* vs,
                      const double* vb, Py_ssize_t ld, Py_ssize_t n)
    void fg_vm_softmax_fw(double* o, const double* a, double sa, const double* b,
                          Py_ssize_t n)
    void fg_vm_softmax_bw(int ma, double* ga, int mb, double* gb, const double* o,
                          const double* g, Py_ssize_t n)
    void fg_vm_lse_bw_row(int mode, double* gr, const double* x, const double* e,
                          const double* o, const double* g, Py_ssize_t n)
    # (_vmath_nary.h: OP_MUL's and OP_SUM's rows at the ISA's width)
    void fg_vm_mul_fw(double* o, const double* a, const double* b, Py_ssize_t n)
    void fg_vm_mul_bw_row(int mode, double* gr, const double* x, const double* g,
                          Py_ssize_t n)
    void fg_vm_sum_fw(double* o, const int* refs, int cnt, const double* vs,
                      const double* vb, Py_ssize_t ld, Py_ssize_t n)
    void fg_vm_gput_row(int mode, double* gr, const double* g, Py_ssize_t n)
    void fg_vm_softplus_bw_row(int mode, double* gr, const double* a, const double* g,
                               Py_ssize_t n)
    int fg_vm_isa_select(int level)
    int fg_vm_isa_get()

fg_vm_isa_select(-1)


# ---------------------------------------------------------------------------
# forward kernels: one instruction over n batch columns
# ---------------------------------------------------------------------------
# Called with a literal op code for the common ops, so that after inlining
# op_forward folds to one arithmetic expression and the loop vectorises.

cdef inline void fw_bb(int op, double* o, const double* a, const double* b,
                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(op, a[j], b[j], 0.0)


cdef inline void fw_bs(int op, double* o, const double* a, double b,
                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(op, a[j], b, 0.0)


cdef inline void fw_sb(int op, double* o, double a, const double* b,
                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(op, a, b[j], 0.0)


cdef inline void fw_b(int op, double* o, const double* a, double c,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(op, a[j], 0.0, c)


cdef inline void fw_fma_b(double* o, const double* acc, double s,
                          const double* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(OP_ADD, acc[j], op_forward(OP_MUL, s, x[j], 0.0), 0.0)


cdef inline void fw_fma_s(double* o, double acc, double s, const double* x,
                          Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(OP_ADD, acc, op_forward(OP_MUL, s, x[j], 0.0), 0.0)


# Blocks of DOT_BLOCK columns (dot chains, sums): their adds and multiplies
# are op_forward's without its nan pin (fg_vm_add / fg_vm_mul: a's nan where
# both operands are nans), whose compare gcc does not vectorise in these
# unrolled blocks (the sums' block ran 3x slower).  A nan anywhere in a
# column's chain leaves a nan at its end, and without one the plain + and *
# are the pinned ones' floats: so only the columns that end in a nan are
# computed again, one by one, through the pinned operations.

cdef inline double dot_col(double acc, const int* ds, const int* dx, int nterms,
                           const double* vs, const double* vb, Py_ssize_t ld,
                           Py_ssize_t j) noexcept nogil:
    """Column j of a dot chain from acc, through op_forward."""
    cdef int q
    for q in range(nterms):
        acc = op_forward(OP_ADD, acc, op_forward(OP_MUL, vs[ds[q]], vb[dx[q] * ld + j],
                                                 0.0), 0.0)
    return acc


cdef inline void fw_dot_block(double* t, const int* ds, const int* dx,
                              int nterms, const double* vs, const double* vb,
                              Py_ssize_t ld, Py_ssize_t jb) noexcept nogil:
    """Add the terms of a dot chain to the DOT_BLOCK partial results t."""
    cdef int q
    cdef Py_ssize_t u
    cdef double s
    cdef double t0[DOT_BLOCK]
    cdef const double* x
    for u in range(DOT_BLOCK):
        t0[u] = t[u]
    for q in range(nterms):
        s = vs[ds[q]]
        x = vb + dx[q] * ld + jb
        for u in range(DOT_BLOCK):
            t[u] = t[u] + s * x[u]          # (op_forward's, unpinned: see above)
    if fg_any_nan(t, DOT_BLOCK):
        for u in range(DOT_BLOCK):
            if t[u] != t[u]:
                t[u] = dot_col(t0[u], ds, dx, nterms, vs, vb, ld, jb + u)


cdef void fw_dot(double* o, const double* acc, double sacc, bint acc_row,
                 const int* ds, const int* dx, int nterms, const double* vs,
                 const double* vb, Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    """OP_DOT: o = (((acc + s0*x0) + s1*x1) + ...), DOT_BLOCK columns at a time."""
    cdef double t[DOT_BLOCK]
    cdef Py_ssize_t jb = 0, u, m
    cdef int q
    cdef double s
    cdef const double* x
    while jb + DOT_BLOCK <= n:
        if acc_row:
            for u in range(DOT_BLOCK):
                t[u] = acc[jb + u]
        else:
            for u in range(DOT_BLOCK):
                t[u] = sacc
        fw_dot_block(t, ds, dx, nterms, vs, vb, ld, jb)
        for u in range(DOT_BLOCK):
            o[jb + u] = t[u]
        jb += DOT_BLOCK
    m = n - jb
    if m > 0:
        for u in range(m):
            t[u] = acc[jb + u] if acc_row else sacc
        for u in range(m):
            t[u] = dot_col(t[u], ds, dx, nterms, vs, vb, ld, jb + u)
        for u in range(m):
            o[jb + u] = t[u]


# -- n-ary instructions (K_N) ----------------------------------------------
# The fold of _rules.pxd over the operands, DOT_BLOCK columns at a time (the
# running values stay in registers/L1); an operand is a row r >= 0 or the
# scalar slot -1 - r, broadcast.

cdef inline void nx_load(double* t, int r, const double* vs, const double* vb,
                         Py_ssize_t ld, Py_ssize_t jb, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t u
    cdef const double* x
    cdef double sx
    if r >= 0:
        x = vb + r * ld + jb
        for u in range(w):
            t[u] = x[u]
    else:
        sx = vs[-1 - r]
        for u in range(w):
            t[u] = sx


cdef extern from *:
    """
    /* whether any of t[0..w-1] is a nan: the compares or-ed as vectors
     * (GNU C; one at a time elsewhere) */
    static inline int fg_any_nan(const double *t, Py_ssize_t w)
    {
        Py_ssize_t i = 0;
        int bad = 0;
    #if defined(__GNUC__) || defined(__clang__)
        typedef double fg_an_v __attribute__((vector_size(16)));
        typedef long long fg_an_m __attribute__((vector_size(16)));
        fg_an_m acc = {0, 0};
        fg_an_v v;
        for (; i + 2 <= w; i += 2) {
            memcpy(&v, t + i, sizeof v);
            acc |= (v != v);
        }
        bad = (acc[0] | acc[1]) != 0;
    #endif
        for (; i < w; i++)
            bad |= t[i] != t[i];
        return bad;
    }
    """
    bint fg_any_nan(const double* t, Py_ssize_t w) noexcept nogil


cdef inline double sum_col(const int* refs, int cnt, const double* vs,
                           const double* vb, Py_ssize_t ld, Py_ssize_t j) noexcept nogil:
    """Column j of an OP_SUM: the fold of _rules.pxd, its adds pinned."""
    cdef int q, r = refs[0]
    cdef double acc = (vb[r * ld + j] if r >= 0 else vs[-1 - r]) + 0.0
    for q in range(1, cnt):
        r = refs[q]
        acc = fg_vm_add(acc, vb[r * ld + j] if r >= 0 else vs[-1 - r])
    return acc


cdef inline void fw_sum_block(double* o, const int* refs, int cnt,
                              const double* vs, const double* vb, Py_ssize_t ld,
                              Py_ssize_t jb, Py_ssize_t w) noexcept nogil:
    """Columns jb..jb+w-1 (w <= DOT_BLOCK) of an OP_SUM (plain adds, the
    columns that end in a nan again through sum_col: see fw_dot_block)."""
    cdef double t[DOT_BLOCK]
    cdef double x[DOT_BLOCK]
    cdef Py_ssize_t u
    cdef int q
    nx_load(x, refs[0], vs, vb, ld, jb, w)
    for u in range(w):
        t[u] = x[u] + 0.0
    for q in range(1, cnt):
        nx_load(x, refs[q], vs, vb, ld, jb, w)
        for u in range(w):
            t[u] = t[u] + x[u]
    if fg_any_nan(t, w):
        for u in range(w):
            if t[u] != t[u]:
                t[u] = sum_col(refs, cnt, vs, vb, ld, jb + u)
    for u in range(w):
        o[jb + u] = t[u]


# logsumexp on the vector maths.  AVX2 / AVX-512: fg_vm_lse_fw
# (_vmath_nary.h) runs the steps of _rules.pxd in their order (lse_max,
# lse_term = e**(x - m), the sum from the first term in operand order,
# lse_finish) per column, on vectors of the ISA's width, the exp and the log
# in registers.  Baseline / portable: fw_lse_block, VX_COLS columns at a
# time, the exponentials of VX_OPS operands' differences in one fg_vm_row
# call.  Both give the per-element fold's floats on every ISA.  Measured
# (Zen 4, bench_irregular.py batched, the primitives, us per row, the
# kernels of _vmath_nary.h against fw_lse_block's rows for every op of the
# softmax): avx512 1k ops 8.7 -> 7.7, 10k ops 93.2 -> 83.5; avx2 9.5 -> 9.4,
# 102.9 -> 100.1; but baseline 17.6 -> 19.0, portable 23.4 -> 26.6 (hence
# the rows there).  The per-element fold's scalar exp was ~40% of the
# replay before the rows.
cdef enum:
    VX_COLS = 64
    VX_OPS = 8


cdef inline void nx_diff(double* d, int r, const double* m, const double* vs,
                         const double* vb, Py_ssize_t ld, Py_ssize_t jb,
                         Py_ssize_t w) noexcept nogil:
    """d = operand r (a row or a broadcast scalar slot) - m, over w columns."""
    cdef Py_ssize_t u
    cdef const double* x
    cdef double sx
    if r >= 0:
        x = vb + r * ld + jb
        for u in range(w):
            d[u] = x[u] - m[u]
    else:
        sx = vs[-1 - r]
        for u in range(w):
            d[u] = sx - m[u]


cdef void fw_lse_block(double* o, const int* refs, int cnt, const double* vs,
                       const double* vb, Py_ssize_t ld, Py_ssize_t jb,
                       Py_ssize_t w) noexcept nogil:
    """Columns jb..jb+w-1 (w <= VX_COLS) of an OP_LOGSUMEXP."""
    cdef double m[VX_COLS]
    cdef double t[VX_COLS]
    cdef double d[VX_OPS * VX_COLS]
    cdef Py_ssize_t u
    cdef int q, q0, qn, first
    # the max: m = x_0, then lse_max over x_1..
    nx_load(m, refs[0], vs, vb, ld, jb, w)
    for q in range(1, cnt):
        nx_load(d, refs[q], vs, vb, ld, jb, w)
        for u in range(w):
            m[u] = lse_max(m[u], d[u])
    # t = e**(x_0 - m); t = t + e**(x_q - m), q = 1.. (lse_term's terms)
    q0 = 0
    while q0 < cnt:
        qn = min(<int>VX_OPS, cnt - q0)
        for q in range(qn):
            nx_diff(d + q * w, refs[q0 + q], m, vs, vb, ld, jb, w)
        fg_vm_row(FG_VM_EXP, d, d, qn * w)
        first = 0
        if q0 == 0:
            for u in range(w):
                t[u] = d[u]
            first = 1
        for q in range(first, qn):
            for u in range(w):
                t[u] = t[u] + d[q * w + u]
        q0 += qn
    # lse_finish: m + log(t) if m is finite, else m (t unused then)
    fg_vm_row(FG_VM_LOG, t, d, w)
    for u in range(w):
        o[jb + u] = m[u] + d[u] if isfinite(m[u]) else m[u]


cdef void fw_nary(int op, double* o, const int* refs, int cnt, const double* vs,
                  const double* vb, Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t jb = 0
    if op == OP_SUM and fg_vm_isa_get() >= 2:
        # AVX2 / AVX-512: the fold's pinned adds on the ISA's vectors, no
        # second pass for nans (_vmath_nary.h)
        fg_vm_sum_fw(o, refs, cnt, vs, vb, ld, n)
    elif op == OP_SUM:
        while jb + DOT_BLOCK <= n:
            fw_sum_block(o, refs, cnt, vs, vb, ld, jb, DOT_BLOCK)
            jb += DOT_BLOCK
        if jb < n:
            fw_sum_block(o, refs, cnt, vs, vb, ld, jb, n - jb)
    else:
        if fg_vm_isa_get() >= 2:
            # AVX2 / AVX-512: one pass over the columns, the exponentials and
            # the log on the vectors in registers (fw_lse_block's
            # operations, _vmath_nary.h)
            fg_vm_lse_fw(o, refs, cnt, vs, vb, ld, n)
        else:
            # narrower vectors: rows of exponentials (see VX_COLS)
            while jb < n:
                fw_lse_block(o, refs, cnt, vs, vb, ld, jb,
                             min(<Py_ssize_t>VX_COLS, n - jb))
                jb += VX_COLS


cdef void forward_batched(int ninstr, const unsigned char* ops,
                          const unsigned char* kinds, const int* outs,
                          const int* oa, const int* ob, const int* os,
                          const double* cs, const int* ds, const int* dx,
                          const int* nx, const LayerCtx* L, const double* vs,
                          double* vb, Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef int k, op, kind
    cdef double* o
    cdef const double* pa
    cdef const double* pb
    cdef double sa, sb, c
    # AVX2 / AVX-512: OP_MUL's rows on the ISA's vectors (_vmath_nary.h)
    cdef bint vec = fg_vm_isa_get() >= 2
    for k in range(ninstr):
        op = ops[k]
        kind = kinds[k]
        o = vb + outs[k] * ld
        if kind == K_N:
            # the operand run at ob[k]: (count, operands...)
            fw_nary(op, o, nx + ob[k] + 1, nx[ob[k]], vs, vb, ld, n)
        elif op == OP_LAYER:
            layer_forward(L, oa[k], vs, vb, ld, n)
        elif op == OP_DOT:
            if kind == K_BB:
                fw_dot(o, vb + oa[k] * ld, 0.0, True, ds + ob[k], dx + ob[k],
                       os[k], vs, vb, ld, n)
            else:
                fw_dot(o, o, vs[oa[k]], False, ds + ob[k], dx + ob[k], os[k],
                       vs, vb, ld, n)
        elif op == OP_FMULADD:
            if kind == K_BB:
                fw_fma_b(o, vb + oa[k] * ld, vs[os[k]], vb + ob[k] * ld, n)
            else:
                fw_fma_s(o, vs[oa[k]], vs[os[k]], vb + ob[k] * ld, n)
        elif kind == K_BB:
            pa = vb + oa[k] * ld
            pb = vb + ob[k] * ld
            if op == OP_ADD:
                fw_bb(OP_ADD, o, pa, pb, n)
            elif op == OP_MUL:
                if vec:
                    fg_vm_mul_fw(o, pa, pb, n)
                else:
                    fw_bb(OP_MUL, o, pa, pb, n)
            elif op == OP_SUB:
                fw_bb(OP_SUB, o, pa, pb, n)
            elif op == OP_DIV:
                fw_bb(OP_DIV, o, pa, pb, n)
            elif op == OP_SOFTMAX:
                # exp(a - b) (op_forward's floats) in one pass on the
                # vectors (_vmath_nary.h)
                if fg_vm_isa_get() >= 2:
                    fg_vm_softmax_fw(o, pa, 0.0, pb, n)
                else:
                    fw_bb(OP_SUB, o, pa, pb, n)
                    fg_vm_row(FG_VM_EXP, o, o, n)
            else:
                fw_bb(op, o, pa, pb, n)
        elif kind == K_SB:
            sa = vs[oa[k]]
            pb = vb + ob[k] * ld
            if op == OP_MUL:
                fw_sb(OP_MUL, o, sa, pb, n)
            elif op == OP_ADD:
                fw_sb(OP_ADD, o, sa, pb, n)
            elif op == OP_SUB:
                fw_sb(OP_SUB, o, sa, pb, n)
            elif op == OP_SOFTMAX:
                # a scalar operand of a softmax: exp(a - b) as for K_BB
                if fg_vm_isa_get() >= 2:
                    fg_vm_softmax_fw(o, NULL, sa, pb, n)
                else:
                    fw_sb(OP_SUB, o, sa, pb, n)
                    fg_vm_row(FG_VM_EXP, o, o, n)
            else:
                fw_sb(op, o, sa, pb, n)
        elif kind == K_BS:
            pa = vb + oa[k] * ld
            sb = vs[ob[k]]
            if op == OP_MUL:
                fw_bs(OP_MUL, o, pa, sb, n)
            elif op == OP_ADD:
                fw_bs(OP_ADD, o, pa, sb, n)
            elif op == OP_SUB:
                fw_bs(OP_SUB, o, pa, sb, n)
            elif op == OP_DIV:
                fw_bs(OP_DIV, o, pa, sb, n)
            else:
                fw_bs(op, o, pa, sb, n)
        else:
            pa = vb + oa[k] * ld
            c = cs[k]
            if op == OP_RELU:
                fw_b(OP_RELU, o, pa, c, n)
            elif op == OP_TANH:
                fg_vm_row(FG_VM_TANH, pa, o, n)
            elif op == OP_SIGMOID:
                fg_vm_row(FG_VM_SIGMOID, pa, o, n)
            elif op == OP_EXP:
                fg_vm_row(FG_VM_EXP, pa, o, n)
            elif op == OP_LOG:
                fg_vm_row(FG_VM_LOG, pa, o, n)
            elif op == OP_ADDC:
                fw_b(OP_ADDC, o, pa, c, n)
            elif op == OP_MULC:
                fw_b(OP_MULC, o, pa, c, n)
            elif op == OP_RSUBC:
                fw_b(OP_RSUBC, o, pa, c, n)
            elif op == OP_DIVC:
                fw_b(OP_DIVC, o, pa, c, n)
            elif op == OP_SOFTPLUS:
                fg_vm_row(FG_VM_SOFTPLUS, pa, o, n)
            elif op == OP_LOG1P:
                fg_vm_row(FG_VM_LOG1P, pa, o, n)
            else:
                fw_b(op, o, pa, c, n)


cdef inline double nary_scalar(int op, const int* slots, int cnt,
                               const double* vs) noexcept nogil:
    """An n-ary op over scalar slots: the fold of _rules.pxd."""
    cdef int q
    cdef double acc = vs[slots[0]], m
    if op == OP_SUM:
        acc = acc + 0.0
        for q in range(1, cnt):
            acc = fg_vm_add_s(acc, vs[slots[q]])
        return acc
    m = acc
    for q in range(1, cnt):
        m = lse_max(m, vs[slots[q]])
    acc = lse_term(vs[slots[0]], m)
    for q in range(1, cnt):
        acc = acc + lse_term(vs[slots[q]], m)
    return lse_finish(m, acc)


cdef void forward_scalar(int ninstr, const unsigned char* ops, const int* outs,
                         const int* oa, const int* ob, const double* cs,
                         const int* sd, const int* snx, double* vs) noexcept nogil:
    cdef int k, bi, q
    cdef const int* t
    cdef double acc
    for k in range(ninstr):
        bi = ob[k]
        if op_is_nary(ops[k]):
            # (count, slots...) at oa[k] in snx: scalar slot s is ref -1 - s
            t = snx + oa[k]
            vs[outs[k]] = nary_scalar(ops[k], t + 1, t[0], vs)
            continue
        if ops[k] == OP_SDOT:
            # a scalar dot chain (see _scalar_dots): its links in order
            t = sd + bi
            acc = vs[oa[k]]
            for q in range(t[0]):
                acc = op_forward_s(OP_ADD, acc, op_forward_s(
                    OP_MUL, vs[t[1 + 2 * q]], vs[t[2 + 2 * q]], 0.0), 0.0)
            vs[outs[k]] = acc
            continue
        vs[outs[k]] = op_forward_s(ops[k], vs[oa[k]], vs[bi] if bi >= 0 else 0.0,
                                   cs[k])


# ---------------------------------------------------------------------------
# backward kernels
# ---------------------------------------------------------------------------
# One loop per operand: op_backward computes both operand gradients, gcc drops
# the unused half once the op code is a constant.  ``0.0 + ga`` for a store
# keeps eager's sign of zero (eager grads start at 0.0 and add).

cdef inline void bwr_bb(int op, int which, int mode, double* gr,
                        const double* a, const double* b, const double* o,
                        const double* g, Py_ssize_t n) noexcept nogil:
    """Gradient row of operand ``which`` (0: a, 1: b) of a batched binary op."""
    cdef Py_ssize_t j
    cdef double ga, gb
    if mode == M_STORE:
        for j in range(n):
            op_backward(op, a[j], b[j], 0.0, o[j], g[j], &ga, &gb)
            gr[j] = 0.0 + (ga if which == 0 else gb)
    else:
        for j in range(n):
            op_backward(op, a[j], b[j], 0.0, o[j], g[j], &ga, &gb)
            gr[j] = fg_vm_add(gr[j], ga if which == 0 else gb)


cdef inline void bwr_bs(int op, int mode, double* gr, const double* a,
                        double sb, const double* o, const double* g,
                        Py_ssize_t n) noexcept nogil:
    """Gradient row of the batched a of ``a op scalar``."""
    cdef Py_ssize_t j
    cdef double ga, gb
    if mode == M_STORE:
        for j in range(n):
            op_backward(op, a[j], sb, 0.0, o[j], g[j], &ga, &gb)
            gr[j] = 0.0 + ga
    else:
        for j in range(n):
            op_backward(op, a[j], sb, 0.0, o[j], g[j], &ga, &gb)
            gr[j] = fg_vm_add(gr[j], ga)


cdef inline void bwr_sb(int op, int mode, double* gr, double sa,
                        const double* b, const double* o, const double* g,
                        Py_ssize_t n) noexcept nogil:
    """Gradient row of the batched b of ``scalar op b``."""
    cdef Py_ssize_t j
    cdef double ga, gb
    if mode == M_STORE:
        for j in range(n):
            op_backward(op, sa, b[j], 0.0, o[j], g[j], &ga, &gb)
            gr[j] = 0.0 + gb
    else:
        for j in range(n):
            op_backward(op, sa, b[j], 0.0, o[j], g[j], &ga, &gb)
            gr[j] = fg_vm_add(gr[j], gb)


cdef inline void bwr_b(int op, int mode, double* gr, const double* a, double c,
                       const double* o, const double* g,
                       Py_ssize_t n) noexcept nogil:
    """Gradient row of the operand of a unary / constant op."""
    cdef Py_ssize_t j, jb, u
    cdef double ga, gb
    cdef double tmp[DOT_BLOCK]
    if mode == M_STORE:
        # the rule writes straight into the row: gcc turns relu's "g if
        # out > 0 else 0.0" into a select only for a store to memory (into a
        # local it stays a branch, mispredicted on random signs)
        for j in range(n):
            op_backward(op, a[j], 0.0, c, o[j], g[j], &gr[j], &gb)
            gr[j] = 0.0 + gr[j]
    else:
        jb = 0
        while jb + DOT_BLOCK <= n:
            for u in range(DOT_BLOCK):
                op_backward(op, a[jb + u], 0.0, c, o[jb + u], g[jb + u],
                            &tmp[u], &gb)
            for u in range(DOT_BLOCK):
                gr[jb + u] = fg_vm_add(gr[jb + u], tmp[u])
            jb += DOT_BLOCK
        for j in range(jb, n):
            op_backward(op, a[j], 0.0, c, o[j], g[j], &ga, &gb)
            gr[j] = fg_vm_add(gr[j], ga)


# Batch-sums for a scalar operand: eight partial sums, i.e. independent add
# chains that gcc keeps in four SSE registers.  One running sum is bound by
# the add latency: measured on the demo step, 4 -> 8 partial sums in the fused
# mul-add's scalar gradient took the backward pass from ~31 to ~24 us.
cdef enum:
    NPART = 8


cdef inline double bws_sb(int op, double sa, const double* b, const double* o,
                          const double* g, Py_ssize_t n) noexcept nogil:
    """Sum over the batch of d/d(sa) of ``sa op b[j]``."""
    cdef double part[NPART]
    cdef double ga, gb, tot
    cdef Py_ssize_t j = 0, u
    for u in range(NPART):
        part[u] = 0.0
    while j + NPART <= n:
        for u in range(NPART):
            op_backward(op, sa, b[j + u], 0.0, o[j + u], g[j + u], &ga, &gb)
            part[u] += ga
        j += NPART
    while j < n:
        op_backward(op, sa, b[j], 0.0, o[j], g[j], &ga, &gb)
        part[0] += ga
        j += 1
    tot = 0.0
    for u in range(NPART):
        tot += part[u]
    return tot


cdef inline double bws_bs(int op, const double* a, double sb, const double* o,
                          const double* g, Py_ssize_t n) noexcept nogil:
    """Sum over the batch of d/d(sb) of ``a[j] op sb``."""
    cdef double part[NPART]
    cdef double ga, gb, tot
    cdef Py_ssize_t j = 0, u
    for u in range(NPART):
        part[u] = 0.0
    while j + NPART <= n:
        for u in range(NPART):
            op_backward(op, a[j + u], sb, 0.0, o[j + u], g[j + u], &ga, &gb)
            part[u] += gb
        j += NPART
    while j < n:
        op_backward(op, a[j], sb, 0.0, o[j], g[j], &ga, &gb)
        part[0] += gb
        j += 1
    tot = 0.0
    for u in range(NPART):
        tot += part[u]
    return tot


cdef inline void bwf_acc(int mode, double* gr, const double* acc, double sacc,
                         bint acc_row, double s, const double* x,
                         const double* o, const double* g,
                         Py_ssize_t n) noexcept nogil:
    """Fused mul-add: gradient row of the batched acc (ADD's first operand)."""
    cdef Py_ssize_t j
    cdef double ga, gp, a
    for j in range(n):
        a = acc[j] if acc_row else sacc
        op_backward(OP_ADD, a, op_forward(OP_MUL, s, x[j], 0.0), 0.0, o[j], g[j],
                    &ga, &gp)
        if mode == M_STORE:
            gr[j] = 0.0 + ga
        else:
            gr[j] = fg_vm_add(gr[j], ga)


cdef inline double bwf_acc_sum(const double* acc, double sacc, bint acc_row,
                               double s, const double* x, const double* o,
                               const double* g, Py_ssize_t n) noexcept nogil:
    """Fused mul-add: batch-sum of the gradient of a scalar acc."""
    cdef double part[NPART]
    cdef double ga, gp, a, tot
    cdef Py_ssize_t j = 0, u
    for u in range(NPART):
        part[u] = 0.0
    while j + NPART <= n:
        for u in range(NPART):
            a = acc[j + u] if acc_row else sacc
            op_backward(OP_ADD, a, op_forward(OP_MUL, s, x[j + u], 0.0), 0.0,
                        o[j + u], g[j + u], &ga, &gp)
            part[u] += ga
        j += NPART
    while j < n:
        a = acc[j] if acc_row else sacc
        op_backward(OP_ADD, a, op_forward(OP_MUL, s, x[j], 0.0), 0.0, o[j], g[j],
                    &ga, &gp)
        part[0] += ga
        j += 1
    tot = 0.0
    for u in range(NPART):
        tot += part[u]
    return tot


cdef inline void bwf_x(int mode, double* gr, const double* acc, double sacc,
                       bint acc_row, double s, const double* x,
                       const double* o, const double* g,
                       Py_ssize_t n) noexcept nogil:
    """Fused mul-add: gradient row of x (through ADD, then MUL)."""
    cdef Py_ssize_t j
    cdef double ga, gp, gs_, gx, a, prod
    for j in range(n):
        a = acc[j] if acc_row else sacc
        prod = op_forward(OP_MUL, s, x[j], 0.0)
        op_backward(OP_ADD, a, prod, 0.0, o[j], g[j], &ga, &gp)
        # the product node's gradient: its one contribution added to 0.0
        op_backward(OP_MUL, s, x[j], 0.0, prod, 0.0 + gp, &gs_, &gx)
        if mode == M_STORE:
            gr[j] = 0.0 + gx
        else:
            gr[j] = fg_vm_add(gr[j], gx)


cdef inline double bwf_s_sum(const double* acc, double sacc, bint acc_row,
                             double s, const double* x, const double* o,
                             const double* g, Py_ssize_t n) noexcept nogil:
    """Fused mul-add: batch-sum of the gradient of the scalar s."""
    cdef double part[NPART]
    cdef double ga, gp, gs_, gx, a, prod, tot
    cdef Py_ssize_t j = 0, u
    for u in range(NPART):
        part[u] = 0.0
    while j + NPART <= n:
        for u in range(NPART):
            a = acc[j + u] if acc_row else sacc
            prod = op_forward(OP_MUL, s, x[j + u], 0.0)
            op_backward(OP_ADD, a, prod, 0.0, o[j + u], g[j + u], &ga, &gp)
            op_backward(OP_MUL, s, x[j + u], 0.0, prod, 0.0 + gp, &gs_, &gx)
            part[u] += gs_
        j += NPART
    while j < n:
        a = acc[j] if acc_row else sacc
        prod = op_forward(OP_MUL, s, x[j], 0.0)
        op_backward(OP_ADD, a, prod, 0.0, o[j], g[j], &ga, &gp)
        op_backward(OP_MUL, s, x[j], 0.0, prod, 0.0 + gp, &gs_, &gx)
        part[0] += gs_
        j += 1
    tot = 0.0
    for u in range(NPART):
        tot += part[u]
    return tot


cdef void bw_fused(int kind, int ma, int mb, int ms, double* vb, double* gb,
                   const int* gm, const double* vs, double* gs, Py_ssize_t ld,
                   int ia, int ib, int isc, int io, Py_ssize_t n) noexcept nogil:
    cdef const double* o = vb + io * ld
    cdef const double* g = gb + gm[io] * ld
    cdef bint acc_row = kind == K_BB
    cdef const double* acc = <const double*>(vb + ia * ld) if acc_row else o
    cdef double sacc = 0.0 if acc_row else vs[ia]
    cdef double s = vs[isc]
    cdef const double* x = vb + ib * ld
    if ma != M_SKIP:
        if acc_row:
            if ma == M_STORE:
                bwf_acc(M_STORE, gb + gm[ia] * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_acc(M_ADD, gb + gm[ia] * ld, acc, sacc, True, s, x, o, g, n)
        else:
            gs[ia] = fg_vm_add(gs[ia], bwf_acc_sum(acc, sacc, False, s, x, o, g, n))
    if mb != M_SKIP:
        if mb == M_STORE:
            if acc_row:
                bwf_x(M_STORE, gb + gm[ib] * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_x(M_STORE, gb + gm[ib] * ld, acc, sacc, False, s, x, o, g, n)
        else:
            if acc_row:
                bwf_x(M_ADD, gb + gm[ib] * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_x(M_ADD, gb + gm[ib] * ld, acc, sacc, False, s, x, o, g, n)
    if ms != M_SKIP:
        if acc_row:
            gs[isc] = fg_vm_add(gs[isc], bwf_s_sum(acc, sacc, True, s, x, o, g, n))
        else:
            gs[isc] = fg_vm_add(gs[isc], bwf_s_sum(acc, sacc, False, s, x, o, g, n))


cdef inline void bw_instr(int op, int kind, int ma, int mb, double* vb,
                          double* gb, const int* gm, const double* vs, double* gs,
                          Py_ssize_t ld, int ia, int ib, int io, double c,
                          Py_ssize_t n) noexcept nogil:
    """Backward of one batched instruction (called with a literal op code);
    gm: the gradient row of each slot (see _grad_rows)."""
    cdef const double* o = vb + io * ld
    cdef const double* g = gb + gm[io] * ld
    if kind == K_BB:
        if ma != M_SKIP:
            bwr_bb(op, 0, ma, gb + gm[ia] * ld, vb + ia * ld, vb + ib * ld, o, g, n)
        if mb != M_SKIP:
            bwr_bb(op, 1, mb, gb + gm[ib] * ld, vb + ia * ld, vb + ib * ld, o, g, n)
    elif kind == K_SB:
        if ma != M_SKIP:
            gs[ia] = fg_vm_add(gs[ia], bws_sb(op, vs[ia], vb + ib * ld, o, g, n))
        if mb != M_SKIP:
            bwr_sb(op, mb, gb + gm[ib] * ld, vs[ia], vb + ib * ld, o, g, n)
    elif kind == K_BS:
        if ma != M_SKIP:
            bwr_bs(op, ma, gb + gm[ia] * ld, vb + ia * ld, vs[ib], o, g, n)
        if mb != M_SKIP:
            gs[ib] = fg_vm_add(gs[ib], bws_bs(op, vb + ia * ld, vs[ib], o, g, n))
    else:
        if ma != M_SKIP:
            bwr_b(op, ma, gb + gm[ia] * ld, vb + ia * ld, c, o, g, n)


cdef inline void bw_nary_ops(int op, const unsigned char* modes, const int* refs,
                             int cnt, const double* vb, double* gb, const int* gm,
                             const double* vs, double* gs, Py_ssize_t ld,
                             const double* o, const double* g,
                             Py_ssize_t n) noexcept nogil:
    """Backward of an n-ary op (a literal): operand by operand, in order,
    nary_backward's contribution stored/added to its row, or batch-summed
    into its scalar slot."""
    cdef int q, r, mode
    cdef Py_ssize_t j, u
    cdef const double* x
    cdef double* gr
    cdef double part[NPART]
    cdef double sx, tot
    # AVX2 / AVX-512: an OP_SUM's rows get g on the ISA's vectors
    # (_vmath_nary.h; nary_backward's g, the same bits)
    cdef bint vsum = op == OP_SUM and fg_vm_isa_get() >= 2
    for q in range(cnt):
        mode = modes[q]
        if mode == M_SKIP:
            continue
        r = refs[q]
        if r >= 0:
            x = vb + r * ld
            gr = gb + gm[r] * ld
            if op == OP_SUM and vsum:
                fg_vm_gput_row(mode, gr, g, n)
            elif mode == M_STORE:
                for j in range(n):
                    gr[j] = 0.0 + nary_backward(op, x[j], o[j], g[j])
            else:
                for j in range(n):
                    gr[j] = fg_vm_add(gr[j], nary_backward(op, x[j], o[j], g[j]))
            continue
        sx = vs[-1 - r]
        for u in range(NPART):
            part[u] = 0.0
        j = 0
        while j + NPART <= n:
            for u in range(NPART):
                part[u] += nary_backward(op, sx, o[j + u], g[j + u])
            j += NPART
        while j < n:
            part[0] += nary_backward(op, sx, o[j], g[j])
            j += 1
        tot = 0.0
        for u in range(NPART):
            tot += part[u]
        gs[-1 - r] = fg_vm_add(gs[-1 - r], tot)


cdef void bw_lse(const unsigned char* modes, const int* refs, const int* sms,
                 int cnt, const double* vb, double* gb, const int* gm, const double* vs,
                 double* gs, Py_ssize_t ld, const double* o, const double* g,
                 Py_ssize_t n) noexcept nogil:
    """Backward of an OP_LOGSUMEXP on the vector maths: bw_nary_ops's
    contributions nary_backward = e**(x - out) * g (OP_SOFTMAX's value times
    g), read from the value row sms[q] of a softmax output
    op_forward(OP_SOFTMAX, x_q, out) where the plan found one (_Plan.bsm:
    the same bits, computed by the forward pass), else computed.  Operand
    rows get theirs operand by operand in order (fg_vm_lse_bw_row, one pass
    each, _vmath_nary.h); a scalar slot its batch sum in bw_nary_ops's order
    (NPART partial sums over j, the columns past the last whole NPART in
    part[0]), the exponentials of VX_OPS such operands' differences x - out
    in one fg_vm_row call per VX_COLS columns."""
    cdef double d[VX_OPS * VX_COLS]
    cdef double part[VX_OPS * NPART]
    cdef int act[VX_OPS]
    cdef const double* e
    cdef int q, q0, i, na, r, mode
    cdef Py_ssize_t jb, w, u, nfull = n - n % NPART
    cdef double* pq
    cdef double c, sx, tot
    cdef bint scalars = False
    for q in range(cnt):
        mode = modes[q]
        if mode == M_SKIP:
            continue
        r = refs[q]
        if r < 0:
            scalars = True
            continue
        if sms != NULL and sms[q] >= 0:
            e = vb + sms[q] * ld
        else:
            e = NULL
        fg_vm_lse_bw_row(mode, gb + gm[r] * ld, vb + r * ld, e, o, g, n)
    if not scalars:
        return
    q0 = 0
    while q0 < cnt:
        # the scalar operands of this group that take a gradient
        na = 0
        q = q0
        while q < cnt and na < VX_OPS:
            if modes[q] != M_SKIP and refs[q] < 0:
                act[na] = q
                na += 1
            q += 1
        for i in range(na * NPART):
            part[i] = 0.0
        jb = 0
        while na > 0 and jb < n:
            w = min(<Py_ssize_t>VX_COLS, n - jb)
            for i in range(na):
                r = act[i]
                if sms != NULL and sms[r] >= 0:
                    e = vb + sms[r] * ld + jb
                    for u in range(w):
                        d[i * w + u] = e[u]
                else:
                    sx = vs[-1 - refs[r]]
                    for u in range(w):
                        d[i * w + u] = sx - o[jb + u]
                    fg_vm_row(FG_VM_EXP, d + i * w, d + i * w, w)
            for i in range(na):
                pq = part + i * NPART
                for u in range(w):
                    c = fg_vm_mul(d[i * w + u], g[jb + u])
                    if jb + u < nfull:
                        pq[u % NPART] += c      # (jb is a multiple of NPART)
                    else:
                        pq[0] += c
            jb += w
        for i in range(na):
            tot = 0.0
            for u in range(NPART):
                tot += part[i * NPART + u]
            gs[-1 - refs[act[i]]] = fg_vm_add(gs[-1 - refs[act[i]]], tot)
        q0 = q


cdef void bw_lse_rows(const unsigned char* modes, const int* refs, const int* sms,
                      int cnt, const double* vb, double* gb, const int* gm,
                      const double* vs, double* gs, Py_ssize_t ld, const double* o,
                      const double* g, Py_ssize_t n) noexcept nogil:
    """Backward of an OP_LOGSUMEXP on the vector rows (the baseline and
    portable ISAs; bw_lse on AVX2 / AVX-512): bw_nary_ops's
    contributions nary_backward = e**(x - out) * g (OP_SOFTMAX's value times
    g), read from the value row sms[q] of a softmax output
    op_forward(OP_SOFTMAX, x_q, out) where the plan found one (_Plan.bsm:
    the same bits, computed by the forward pass), else the exponentials of
    VX_OPS operands' differences x - out in one fg_vm_row call per VX_COLS
    columns;
    rows get them operand by operand in order, a scalar slot its batch sum
    in bw_nary_ops's order (NPART partial sums over j, the columns past the
    last whole NPART in part[0])."""
    cdef double d[VX_OPS * VX_COLS]
    cdef double part[VX_OPS * NPART]
    cdef int act[VX_OPS]
    cdef const double* sm[VX_OPS]
    cdef const double* e
    cdef int q, q0, i, na, ne, ie, r, mode
    cdef Py_ssize_t jb, w, u, nfull = n - n % NPART
    cdef const double* x
    cdef double* gr
    cdef double* pq
    cdef double c, sx, tot
    q0 = 0
    while q0 < cnt:
        # the operands of this group that take a gradient; ne of them have
        # no softmax row (their exponentials go to d, in order)
        na = 0
        ne = 0
        q = q0
        while q < cnt and na < VX_OPS:
            if modes[q] != M_SKIP:
                act[na] = q
                if sms != NULL and sms[q] >= 0:
                    sm[na] = vb + sms[q] * ld
                else:
                    sm[na] = NULL
                    ne += 1
                na += 1
            q += 1
        for i in range(na * NPART):
            part[i] = 0.0
        jb = 0
        while na > 0 and jb < n:
            w = min(<Py_ssize_t>VX_COLS, n - jb)
            if ne > 0:
                ie = 0
                for i in range(na):
                    if sm[i] != NULL:
                        continue
                    r = refs[act[i]]
                    if r >= 0:
                        x = vb + r * ld + jb
                        for u in range(w):
                            d[ie * w + u] = x[u] - o[jb + u]
                    else:
                        sx = vs[-1 - r]
                        for u in range(w):
                            d[ie * w + u] = sx - o[jb + u]
                    ie += 1
                fg_vm_row(FG_VM_EXP, d, d, ne * w)
            ie = 0
            for i in range(na):
                if sm[i] != NULL:
                    e = sm[i] + jb
                else:
                    e = d + ie * w
                    ie += 1
                r = refs[act[i]]
                mode = modes[act[i]]
                if r >= 0:
                    gr = gb + gm[r] * ld + jb
                    if mode == M_STORE:
                        for u in range(w):
                            gr[u] = 0.0 + fg_vm_mul(e[u], g[jb + u])
                    else:
                        for u in range(w):
                            gr[u] = fg_vm_add(gr[u], fg_vm_mul(e[u], g[jb + u]))
                else:
                    pq = part + i * NPART
                    for u in range(w):
                        c = fg_vm_mul(e[u], g[jb + u])
                        if jb + u < nfull:
                            pq[u % NPART] += c      # (jb is a multiple of NPART)
                        else:
                            pq[0] += c
            jb += w
        for i in range(na):
            r = refs[act[i]]
            if r < 0:
                tot = 0.0
                for u in range(NPART):
                    tot += part[i * NPART + u]
                gs[-1 - r] = fg_vm_add(gs[-1 - r], tot)
        q0 = q


cdef void bw_softplus(int mode, double* gr, const double* a, const double* g,
                      Py_ssize_t n) noexcept nogil:
    """Gradient row of softplus's operand: op_backward's sigmoid(a) * g, the
    sigmoid over VX_COLS columns at a time on the vector rows (the scalar
    fg_vm_sigmoid's bits)."""
    cdef double s[VX_COLS]
    cdef Py_ssize_t jb = 0, w, u
    while jb < n:
        w = min(<Py_ssize_t>VX_COLS, n - jb)
        fg_vm_row(FG_VM_SIGMOID, a + jb, s, w)
        if mode == M_STORE:
            for u in range(w):
                gr[jb + u] = 0.0 + fg_vm_mul(s[u], g[jb + u])
        else:
            for u in range(w):
                gr[jb + u] = fg_vm_add(gr[jb + u], fg_vm_mul(s[u], g[jb + u]))
        jb += w


cdef void backward_batched(int ninstr, const unsigned char* ops,
                           const unsigned char* kinds, const int* outs,
                           const int* oa, const int* ob, const int* os,
                           const double* cs, const int* nx,
                           const unsigned char* mas, const unsigned char* mbs,
                           const unsigned char* mss, const unsigned char* mns,
                           const int* bsm, const LayerCtx* L, const double* vs,
                           double* gs, double* vb, double* gb, const int* gm, Py_ssize_t ld,
                           Py_ssize_t n) noexcept nogil:
    cdef int k, op, kind, ma, mb
    # AVX2 / AVX-512: the softmax / logsumexp kernels of _vmath_nary.h
    cdef bint vec = fg_vm_isa_get() >= 2
    for k in range(ninstr - 1, -1, -1):
        ma = mas[k]
        mb = mbs[k]
        if ma == M_SKIP and mb == M_SKIP and mss[k] == M_SKIP:
            continue
        op = ops[k]
        kind = kinds[k]
        if kind == K_N:
            if op == OP_SUM:
                bw_nary_ops(OP_SUM, mns + ob[k] + 1, nx + ob[k] + 1, nx[ob[k]], vb, gb, gm,
                            vs, gs, ld, vb + outs[k] * ld, gb + gm[outs[k]] * ld, n)
            elif vec:
                bw_lse(mns + ob[k] + 1, nx + ob[k] + 1,
                       bsm + ob[k] + 1 if bsm != NULL else NULL, nx[ob[k]], vb,
                       gb, gm, vs, gs, ld, vb + outs[k] * ld, gb + gm[outs[k]] * ld, n)
            else:
                bw_lse_rows(mns + ob[k] + 1, nx + ob[k] + 1,
                            bsm + ob[k] + 1 if bsm != NULL else NULL, nx[ob[k]], vb,
                            gb, gm, vs, gs, ld, vb + outs[k] * ld,
                            gb + gm[outs[k]] * ld, n)
        elif op == OP_LAYER:
            layer_backward(L, oa[k], mss[k] != M_SKIP, mb != M_SKIP, vb, gb, ld, n)
        elif op == OP_FMULADD:
            bw_fused(kind, ma, mb, mss[k], vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     os[k], outs[k], n)
        elif op == OP_ADD:
            bw_instr(OP_ADD, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_MUL:
            if kind == K_BB and vec:
                # bwr_bb's two passes, operand a then b (op_backward's b g and
                # a g), on the ISA's vectors (_vmath_nary.h)
                if ma != M_SKIP:
                    fg_vm_mul_bw_row(ma, gb + gm[oa[k]] * ld, vb + ob[k] * ld,
                                     gb + gm[outs[k]] * ld, n)
                if mb != M_SKIP:
                    fg_vm_mul_bw_row(mb, gb + gm[ob[k]] * ld, vb + oa[k] * ld,
                                     gb + gm[outs[k]] * ld, n)
            else:
                bw_instr(OP_MUL, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                         outs[k], cs[k], n)
        elif op == OP_RELU:
            bw_instr(OP_RELU, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_ADDC:
            bw_instr(OP_ADDC, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_MULC:
            bw_instr(OP_MULC, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_SUB:
            bw_instr(OP_SUB, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_SOFTMAX:
            if kind == K_BB and vec and (ma == M_SKIP or mb == M_SKIP
                                         or gm[oa[k]] != gm[ob[k]]):
                # both operands' rows in one pass on the vectors (op_backward's
                # out * g and -(out * g), _vmath_nary.h)
                fg_vm_softmax_bw(ma, gb + gm[oa[k]] * ld if ma != M_SKIP else NULL,
                                 mb, gb + gm[ob[k]] * ld if mb != M_SKIP else NULL,
                                 vb + outs[k] * ld, gb + gm[outs[k]] * ld, n)
            else:
                bw_instr(OP_SOFTMAX, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                         outs[k], cs[k], n)
        elif op == OP_SOFTPLUS:
            if ma != M_SKIP and vec:
                # AVX2 / AVX-512: the sigmoid, the product and the store in
                # one pass on the vectors (_vmath_nary.h; bw_softplus's bits)
                fg_vm_softplus_bw_row(ma, gb + gm[oa[k]] * ld, vb + oa[k] * ld,
                                      gb + gm[outs[k]] * ld, n)
            elif ma != M_SKIP:
                bw_softplus(ma, gb + gm[oa[k]] * ld, vb + oa[k] * ld,
                            gb + gm[outs[k]] * ld, n)
        elif op == OP_TANH:
            # the smooth activations' rules are plain arithmetic on the
            # output (and log's on the operand): with a literal op code
            # their loops vectorise like the common ops'
            bw_instr(OP_TANH, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_SIGMOID:
            bw_instr(OP_SIGMOID, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_EXP:
            bw_instr(OP_EXP, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_LOG:
            bw_instr(OP_LOG, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        else:
            bw_instr(op, kind, ma, mb, vb, gb, gm, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)


cdef void backward_scalar(int ninstr, const unsigned char* ops, const int* outs,
                          const int* oa, const int* ob, const double* cs,
                          const int* sd, const int* snx, const unsigned char* mas,
                          const unsigned char* mbs, const double* vs,
                          double* gs) noexcept nogil:
    cdef int k, bi, q, ia, ib
    cdef double ga, gb, g, gp
    cdef const int* t
    for k in range(ninstr - 1, -1, -1):
        if mas[k] == M_SKIP and mbs[k] == M_SKIP:
            continue
        bi = ob[k]
        if op_is_nary(ops[k]):
            # every operand, in order (a slot nobody reads gets a harmless
            # contribution: gs is zeroed at every replay)
            t = snx + oa[k]
            g = gs[outs[k]]
            for q in range(t[0]):
                ia = t[1 + q]
                gs[ia] = fg_vm_add_s(gs[ia], nary_backward_s(ops[k], vs[ia], vs[outs[k]], g))
            continue
        if ops[k] == OP_SDOT:
            # every link passes the chain's gradient on unchanged (an add);
            # each product's gradient is that one contribution added to 0.0
            g = gs[outs[k]]
            if mas[k] != M_SKIP:
                gs[oa[k]] += g
            if mbs[k] != M_SKIP:
                t = sd + bi
                gp = 0.0 + g
                if cs[k] == 1.0:
                    # squares of slots t[1], t[1] + 1, ...: each slot's own
                    # two adds, as below, in a loop without gathers
                    ia = t[1]
                    for q in range(t[0]):
                        ga = vs[ia + q] * gp
                        gs[ia + q] = (gs[ia + q] + ga) + ga
                    continue
                for q in range(t[0] - 1, -1, -1):
                    ia = t[1 + 2 * q]
                    ib = t[2 + 2 * q]
                    op_backward_s(OP_MUL, vs[ia], vs[ib], 0.0, 0.0, gp, &ga, &gb)
                    if ia == ib:
                        # p * p (a penalty): both adds in registers, in order
                        gs[ia] = (gs[ia] + ga) + gb
                    else:
                        gs[ia] += ga
                        gs[ib] += gb
            continue
        op_backward_s(ops[k], vs[oa[k]], vs[bi] if bi >= 0 else 0.0, cs[k],
                      vs[outs[k]], gs[outs[k]], &ga, &gb)
        if mas[k] != M_SKIP:
            gs[oa[k]] = fg_vm_add_s(gs[oa[k]], ga)
        if mbs[k] != M_SKIP:
            gs[bi] = fg_vm_add_s(gs[bi], gb)
