# Stage 3c: one row of a replay in scalar C (B == 1).
# (included by _replay.pyx; see the stage list in its docstring)
#
# A replay of one row (``value_and_grad``, ``forward``, ``batch``/``predict``
# of a one-row array, gradcheck's analytic part) used to run the batched
# kernels on a column block padded to 8 columns: per instruction a vector
# loop over mostly padding, a call into the row functions of _vmath_rows.h,
# and per call the chunk, block and worker set-up.  Here the same tape runs
# one instruction at a time on one column (ld = 1): the values of instruction
# k are op_forward/op_backward of _rules.pxd on doubles (their scalar builds
# op_forward_s/op_backward_s: the same bits, see there), as the batched
# kernels compute them column by column (their row functions give the bits of
# the scalar fg_vm_* by design), so a row gives the same bits either way:
#
# * forward: the training tape (with gradients) or the forward-only tape
#   (fused mul-adds, OP_DOT chains, reused rows) -- the same op_forward
#   sequence per column as forward_batched;
# * backward: the same backward plan, operand by operand in the kernels'
#   order (its stores as adds onto +0.0, see the tape below); a scalar
#   slot's batch-sum of one column is that column's contribution (the
#   kernels' partial sums add +0.0 to it, which changes no sum that starts
#   at +0.0), added straight into the totals;
# * the loss is 0.0 + output 0, as the blocks' combine adds it.
#
# The forward runs independent exp/log/softplus/sigmoid/tanh/log1p and
# softmax-output instructions, and a logsumexp's exps, in groups through one
# vector build of the same functions (_vmath.h: every width gives the scalar
# function's bits), see "groups" below; softplus's backward takes the sigmoid
# its forward computed from the same exp (fg_vm_softplus_sigmoid).
#
# Programs with dense layers keep the batched path for gradients (the layer
# kernels' packed weights and reordered weight-gradient sums); their
# forward-only tape has no layers and runs here.  Ctrl-C: the loops look for
# signals every SIGNAL_WORK element operations, as the batched loops do
# between chunks (a one-row call of a tape that large is rare).


# -- groups of elementary functions ----------------------------------------
# Up to ROW_GMAX independent exp/log/softplus/sigmoid/tanh/log1p operands of
# one function (a logsumexp's exps, a softmax's outputs, instructions
# scheduled together, see _row_groups) through one vector build of
# _vmath.h, which gives the scalar function's bits in every lane: 2 lanes
# or fewer on the SSE2 build, 4 on AVX2 (the AVX2 and AVX-512 levels),
# more on the AVX-512 build; the portable level (0) one lane at a time.
# Softplus goes through fg_vm_softplus_sigmoid: its sigmoid (the backward's
# factor) in sg, from the same exp.

cdef extern from *:
    """
    enum { FG_RG_EXP = 0, FG_RG_LOG, FG_RG_SOFTPLUS, FG_RG_SIGMOID, FG_RG_TANH,
           FG_RG_LOG1P };
    /* Lanes in and out of registers (a vector load of lanes just stored
     * one by one would wait for the stores: no store-to-load forwarding).
     * The index arrays are padded to 8 (a, b repeat their last index, o is
     * the trash slot there), so every lane of a vector has an operand and a
     * place to go. */
    #define FG_RG_A(i) V[a[j + (i)]]
    #define FG_RG_B(i) V[b[j + (i)]]
    #define FG_RG_SET_plain(L) L(0)
    #define FG_RG_SET_base(L) ((fg_vm_vd_base)_mm_set_pd(L(1), L(0)))
    #define FG_RG_SET_avx2(L) ((fg_vm_vd_avx2)_mm256_set_pd(L(3), L(2), L(1), L(0)))
    #define FG_RG_SET_avx512(L) ((fg_vm_vd_avx512)_mm512_set_pd( \\
        L(7), L(6), L(5), L(4), L(3), L(2), L(1), L(0)))
    #define FG_RG_PUT(l, E) { V[o[j + (l)]] = (E); G[o[j + (l)]] = 0.0; }
    #define FG_RG_ADD(l, E) if (j + (l) < n) acc = start && j + (l) == 0 ? (E) : acc + (E);
    #define FG_RG_OUT_plain(P) P(0, v)
    #define FG_RG_OUT_base(P) P(0, v[0]) P(1, v[1])
    #define FG_RG_OUT_avx2(P) FG_RG_OUT_base(P) P(2, v[2]) P(3, v[3])
    #define FG_RG_OUT_avx512(P) FG_RG_OUT_avx2(P) P(4, v[4]) P(5, v[5]) P(6, v[6]) P(7, v[7])
    /* the operands x_i = V[a[i]] (mode 0), V[a[i]] - V[b[i]] (1), V[a[i]] - m
     * (2; the same subtraction lane by lane) */
    #define FG_RG_SWITCH(SUF, VV) \\
            switch (fn) { \\
            case FG_RG_EXP: v = fg_vm_exp_##SUF(v); break; \\
            case FG_RG_LOG: v = fg_vm_log_##SUF(v); break; \\
            case FG_RG_SOFTPLUS: \\
                v = fg_vm_softplus_sigmoid_##SUF(v, &s); \\
                *(VV *)(sg + j) = s; \\
                break; \\
            case FG_RG_SIGMOID: v = fg_vm_sigmoid_##SUF(v); break; \\
            case FG_RG_TANH: v = fg_vm_tanh_##SUF(v); break; \\
            default: v = fg_vm_log1p_##SUF(v); break; \\
            }
    /* (exp only: the softmax outputs' and logsumexp's, most groups; a
     * function of its own compiles to fewer spills than the switch) */
    #define FG_RG_EXPONLY(SUF, VV) (void)s; (void)fn; v = fg_vm_exp_##SUF(v);
    #define FG_RG(SUF, W, TARGET) \\
        FG_RG_F(SUF, W, TARGET, fg_rg_##SUF, FG_RG_SWITCH) \\
        FG_RG_F(SUF, W, TARGET, fg_rg_exp_##SUF, FG_RG_EXPONLY)
    #define FG_RG_F(SUF, W, TARGET, NAME, BODY) \\
    static FG_VM_UNUSED TARGET double NAME(int fn, double *V, const int *a, \\
                                                  const int *b, double m, int mode, \\
                                                  const int *o, double *G, double *sg, \\
                                                  double acc, int start, int n) \\
    { \\
        typedef fg_vm_vd_##SUF VV; \\
        int j; \\
        VV v, s; \\
        for (j = 0; j < n; j += W) { \\
            v = FG_RG_SET_##SUF(FG_RG_A); \\
            if (mode == 1) v = v - FG_RG_SET_##SUF(FG_RG_B); \\
            else if (mode == 2) v = v - m; \\
            BODY(SUF, VV) \\
            if (o != NULL) { FG_RG_OUT_##SUF(FG_RG_PUT) } \\
            else { FG_RG_OUT_##SUF(FG_RG_ADD) } \\
        } \\
        return acc; \\
    }
    FG_RG(plain, 1, )
    #if defined(FG_VM_VECTORS) && defined(FG_VM_X86)
    FG_RG(base, 2, )
    FG_RG(avx2, 4, __attribute__((target("avx2"))))
    FG_RG(avx512, 8, __attribute__((target("avx512f,avx512vl,avx512dq"))))
    #define FG_RG_VECTORS 1
    #endif

    /* F(x_i), x_i as FG_RG_X, i < n <= 8: to V[o[i]] (G[o[i]] = +0.0), or
     * (o NULL) added to acc in order (start: x_0's starts the sum) and the
     * sum returned; sg[i] = sigmoid(x_i) for softplus (sg: an array of 8,
     * the lanes from n on written too) */
    #define FG_RG_ARGS fn, V, a, b, m, mode, o, G, sg, acc, start, n
    static double fg_rg_run(int fn, double *V, const int *a, const int *b, double m,
                            int mode, const int *o, double *G, double *sg, double acc,
                            int start, int n)
    {
    #ifdef FG_RG_VECTORS
        int level = fg_vm_isa_get();
        if (fn == FG_RG_EXP) {
            if (level >= 1 && n <= 2) return fg_rg_exp_base(FG_RG_ARGS);
            if (level >= 3 && n > 4) return fg_rg_exp_avx512(FG_RG_ARGS);
            if (level >= 2) return fg_rg_exp_avx2(FG_RG_ARGS);
            if (level >= 1) return fg_rg_exp_base(FG_RG_ARGS);
        }
        if (level >= 1 && n <= 2) return fg_rg_base(FG_RG_ARGS);
        if (level >= 3 && n > 4) return fg_rg_avx512(FG_RG_ARGS);
        if (level >= 2) return fg_rg_avx2(FG_RG_ARGS);
        if (level >= 1) return fg_rg_base(FG_RG_ARGS);
    #endif
        return fg_rg_plain(FG_RG_ARGS);
    }

    /* One group of _row_groups at t: count n, function, mode (1: softmax
     * outputs, x = V[a] - V[b]; else 0), the n instructions' indices, then
     * their a, b and o (8 each, padded): V[o] = F(x), G[o] = +0.0, aux[instruction] =
     * softplus's sigmoid.  Lanes read first, then written in order. */
    static void fg_rg_group(const int *t, double *V, double *G, double *aux)
    {
        int n = t[0], fn = t[1], i;
        const int *ins = t + 3, *a = ins + n, *b = a + 8, *o = b + 8;
        double s[8];
        fg_rg_run(fn, V, a, b, 0.0, t[2], o, G, s, 0.0, 0, n);
        if (fn == FG_RG_SOFTPLUS)
            for (i = 0; i < n; i++) aux[ins[i]] = s[i];
    }

    /* logsumexp's sum of e^(V[r[i]] - m), i < n, in order (lse_term's
     * exps, 8 at a time; r padded to a multiple of 8) */
    static double fg_rg_lse_sum(double *V, const int *r, int n, double m)
    {
        double s[8], acc = 0.0;
        int q, c;
        for (q = 0; q < n; q += c) {
            c = n - q < 8 ? n - q : 8;
            acc = fg_rg_run(FG_RG_EXP, V, r + q, NULL, m, 2, NULL, NULL, s, acc, q == 0, c);
        }
        return acc;
    }

    /* tests: the build of ``level`` (0 plain ... 3 AVX-512) on n <= 8
     * operands; -1 if this build or CPU has no such level */
    static int fg_rg_at(int level, int fn, const double *x, double *y, double *sg, int n)
    {
        static const int idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};  /* (lanes >= n: x's, unused) */
        static const int out[8] = {8, 9, 10, 11, 12, 13, 14, 15};
        double V[16], G[16];
        int i;
        if (n < 1 || n > 8 || !fg_vm_supported(level) || level > 3) return -1;
        for (i = 0; i < 8; i++) V[i] = x[i];
    #define FG_RG_AT(SUF) (fn == FG_RG_EXP ? fg_rg_exp_##SUF : fg_rg_##SUF)( \\
            fn, V, idx, NULL, 0.0, 0, out, G, sg, 0.0, 0, n)
        switch (level) {
        case 0: FG_RG_AT(plain); break;
    #ifdef FG_RG_VECTORS
        case 1: FG_RG_AT(base); break;
        case 2: FG_RG_AT(avx2); break;
        case 3: FG_RG_AT(avx512); break;
    #endif
        default: return -1;
        }
        for (i = 0; i < n; i++) y[i] = V[8 + i];
        return 0;
    }
    """
    enum:
        FG_RG_EXP, FG_RG_LOG, FG_RG_SOFTPLUS, FG_RG_SIGMOID, FG_RG_TANH, FG_RG_LOG1P
    void fg_rg_group(const int* t, double* V, double* G, double* aux) noexcept nogil
    double fg_rg_lse_sum(double* V, const int* r, int n, double m) noexcept nogil
    int fg_rg_at(int level, int fn, const double* x, double* y, double* sg,
                 int n) noexcept nogil


cdef enum:
    ROW_GMAX = 8                  # operands in a group


_RG_NAMES = ("exp", "log", "softplus", "sigmoid", "tanh", "log1p")


def _row_group_eval(name, x, int level):
    """Testing hook: the group function ``name`` (exp, log, softplus,
    sigmoid, tanh, log1p) of the build of ``level`` (0 portable, 1 SSE2,
    2 AVX2, 3 AVX-512) on the float64 array x, in groups of 8 operands and
    a shorter last one; returns (y, sg) (sg: softplus's sigmoid from the
    same exp; zeros for the others), or None if this build or CPU has no
    such level."""
    cdef int fn = _RG_NAMES.index(name)
    cdef const double[::1] xv = np.ascontiguousarray(x, dtype=np.float64).ravel()
    cdef Py_ssize_t n = xv.shape[0], j, ln, m
    cdef double xb[ROW_GMAX]
    cdef double yb[ROW_GMAX]
    cdef double sb[ROW_GMAX]
    y = _np_zeros(n, _F64)
    sg = _np_zeros(n, _F64)
    cdef double[::1] yv = y
    cdef double[::1] sv = sg
    for ln in range(ROW_GMAX):
        xb[ln] = yb[ln] = sb[ln] = 0.0
    j = 0
    while j < n:
        m = min(n - j, ROW_GMAX)
        for ln in range(m):
            xb[ln] = xv[j + ln]
        if fg_rg_at(level, fn, xb, yb, sb, <int>m) < 0:
            return None
        for ln in range(m):
            yv[j + ln] = yb[ln]
            sv[j + ln] = sb[ln]
        j += m
    return y, sg


# testing hook (_set_row_path): one-row replays here (default) or on the
# batched path
cdef bint ROW_PATH = True


# instructions between two looks at the signal work count
cdef enum:
    ROW_BLOCK = 64


cdef struct _RowCtx:
    Py_ssize_t work               # element operations since the last check
    Py_ssize_t sig_work           # SIGNAL_WORK at the call (0: no checks)


cdef int _row_signals(_RowCtx* R) noexcept nogil:
    """Look for a signal (with the GIL): -1 with the exception set, or 0."""
    cdef int bad
    R.work = 0
    with gil:
        bad = PyErr_CheckSignals() < 0
    return -1 if bad else 0


# -- the one-row tape -----------------------------------------------------
# A replay's tape (training or forward-only) decoded once per program and
# backward plan: one record per instruction whose operands index one array V
# of the row's values -- the scalar slots first (V[s] = vs[s]), then the
# rows (V[NS + r]), then a 0.0 for absent operands -- and G of their
# gradients, so that no instruction branches on its operand kinds.
#
# The backward needs no branch on the plan's store/add modes either: G is
# all +0.0 when the backward starts, and a row's first contribution (the
# plan's store, 0.0 + d) is then the same float as an add onto its +0.0; so
# every contribution is an add, to the operand's index in G, or to the last
# slot of G (after the 0.0 slot of V: nothing reads it) when the plan skips
# that operand.

cdef struct _RowIns:
    int op                        # op code (OP_FMULADD, OP_DOT, n-ary ...)
    int fop                       # the forward's: op, ROW_GROUP (the first
                                  # of a group) or ROW_DONE (run by a group)
    int g                         # ROW_GROUP: offset of its group in ix
    int o, a, b                   # indices in V / G
    int s                         # fused mul-add: its scalar; OP_DOT: terms
    int x                         # n-ary / OP_DOT: offset of its run in ix
    int ga, gb, gs                # where a's, b's and s's gradients go in G
                                  # (the trash slot when the plan skips them)
    unsigned char run             # backward: any operand to take a gradient
    unsigned char mul             # fused mul-add: b or s takes one
    unsigned char nary            # an n-ary op (its operands in ix at x)
    double c


@cython.final
cdef class _RowTape:
    cdef object keep              # the arrays behind the pointers
    cdef _RowIns* ins
    cdef const int* ix            # runs: n-ary (refs, G targets, softmax
                                  # rows), OP_DOT (scalar, row) pairs, groups
    cdef double* aux              # per instruction: softplus's sigmoid
    cdef int n, ns, nv


cdef _RowTape _row_tape(Program p, bint grad, _Plan plan):
    """The one-row tape of ``p``'s training (grad) or forward-only tape.

    An n-ary run at x: count, then the operands, their gradients' indices in G
    (the trash slot where the plan skips them) and,
    for logsumexp, for each operand the index of an OP_SOFTMAX value
    e**(operand - this logsumexp) computed by the tape, or -1: logsumexp's
    backward (nary_backward) is that same op_forward(OP_SOFTMAX, ...) times
    the gradient, so the row reuses the value instead of another exp."""
    cdef _RowTape T = _RowTape.__new__(_RowTape)
    cdef int ns = p.n_scalar, k, kind, op, q, cnt, off, r
    # (the same V for either tape: the 0.0 slot after the larger one's rows)
    cdef int zero = ns + max(p.n_batched, p.n_frows, p.n_inputs, 1)
    cdef int trash = zero + 1
    cdef int n = p.n_binstr if grad else p.n_finstr
    cdef const unsigned char[::1] ops = p.b_op if grad else p.f_op
    cdef const unsigned char[::1] kinds = p.b_kind if grad else p.f_kind
    cdef const int[::1] outs = p.b_out if grad else p.f_out
    cdef const int[::1] oa = p.b_a if grad else p.f_a
    cdef const int[::1] ob = p.b_b if grad else p.f_b
    cdef const int[::1] os = p.b_s if grad else p.f_s
    cdef const double[::1] cs = p.b_c if grad else p.f_c
    cdef const int[::1] nx = p.b_nx if grad else p.f_nx
    cdef unsigned char[::1] buf = _np_zeros(max(n, 1) * sizeof(_RowIns), np.uint8)
    cdef _RowIns* ins = <_RowIns*>&buf[0]
    cdef _RowIns* ri
    cdef list ix = [0]
    cdef dict softmax = {}
    cdef int[::1] ixa
    for k in range(n):
        ri = &ins[k]
        op = ops[k]
        kind = kinds[k]
        ri.op = op
        ri.o = ns + outs[k]
        ri.b = zero
        ri.c = cs[k]
        ri.ga = ri.gb = ri.gs = trash
        ri.run = ri.mul = ri.nary = 0
        if grad:
            ri.run = (plan.bma[k] != M_SKIP or plan.bmb[k] != M_SKIP
                      or plan.bms[k] != M_SKIP)
            ri.mul = plan.bmb[k] != M_SKIP or plan.bms[k] != M_SKIP
        if kind == K_N:
            off = ob[k]
            cnt = nx[off]
            ri.x = len(ix)
            ri.nary = 1
            ix.append(cnt)
            for q in range(off + 1, off + 1 + cnt):
                r = nx[q]
                ix.append(ns + r if r >= 0 else -1 - r)
            for q in range(off + 1, off + 1 + cnt):
                r = nx[q]
                ix.append((ns + r if r >= 0 else -1 - r)
                          if grad and plan.bmn[q] != M_SKIP else trash)
            for q in range(off + 1, off + 1 + cnt):
                ix.append(-1)            # (filled below: softmax rows)
            continue
        ri.a = oa[k] if kind == K_SB else ns + oa[k]
        if kind == K_BB or kind == K_SB:
            ri.b = ns + ob[k]
        elif kind == K_BS:
            ri.b = ob[k]
        if grad:
            if plan.bma[k] != M_SKIP:
                ri.ga = ri.a
            if plan.bmb[k] != M_SKIP:
                ri.gb = ri.b
        if op == OP_FMULADD:
            ri.s = os[k]
            if grad and plan.bms[k] != M_SKIP:
                ri.gs = ri.s
        elif op == OP_DOT:
            ri.s = os[k]
            ri.x = len(ix)
            for q in range(ob[k], ob[k] + os[k]):
                ix.append(p.d_s[q])
                ix.append(ns + p.d_x[q])
        elif op == OP_SOFTMAX and grad:
            softmax[(ri.a, ri.b)] = ri.o
    if grad and softmax:
        for k in range(n):
            if kinds[k] == K_N and ops[k] == OP_LOGSUMEXP:
                off = ins[k].x
                cnt = ix[off]
                for q in range(cnt):
                    ix[off + 1 + 2 * cnt + q] = softmax.get((ix[off + 1 + q], ins[k].o), -1)
    ixa = np.array(ix, np.int32)
    groups = _row_groups(ins, n, &ixa[0], len(ix), trash)
    if len(groups):
        ixa = np.concatenate((ixa, groups))
    auxa = _np_zeros(max(n, 1), _F64)
    cdef double[::1] auxv = auxa
    T.keep = (buf, ixa, auxa)
    T.aux = &auxv[0]
    T.ins = ins
    T.ix = &ixa[0]
    T.n = n
    T.ns = ns
    T.nv = trash + 1
    return T


# -- groups: the forward's schedule ---------------------------------------------
# An exp/log/softplus/sigmoid/tanh/log1p/softmax-output instruction k takes
# with it, as one group (fg_rg_run), up to ROW_GMAX - 1 later instructions of
# the same op within ROW_LOOK instructions whose run at k's place changes
# nothing: no instruction between (not already run by an earlier group)
# writes their operands or output or reads their output.  Lanes read first,
# written in order: as the instructions one after the other.  The backward
# keeps the tape's order.  Softplus always runs as a group (of one or more),
# so its backward takes the sigmoid the group left in aux.

cdef enum:
    ROW_GROUP = 1000              # _RowIns.fop of a group's first instruction
    ROW_DONE = 1001               # of one a group ran
    ROW_LOOK = 16                  # instructions a group looks ahead


cdef inline int _rg_fn(int op) noexcept nogil:
    """The group function of op, or -1 (no groups)."""
    if op == OP_EXP or op == OP_SOFTMAX:
        return FG_RG_EXP
    elif op == OP_LOG:
        return FG_RG_LOG
    elif op == OP_SOFTPLUS:
        return FG_RG_SOFTPLUS
    elif op == OP_SIGMOID:
        return FG_RG_SIGMOID
    elif op == OP_TANH:
        return FG_RG_TANH
    elif op == OP_LOG1P:
        return FG_RG_LOG1P
    return -1


cdef bint _row_reads(const _RowIns* ri, const int* ix, int v) noexcept nogil:
    """Whether instruction ri reads V[v]."""
    cdef int q, cnt
    cdef const int* t
    if ri.nary:
        t = ix + ri.x
        cnt = t[0]
        for q in range(1, cnt + 1):
            if t[q] == v:
                return True
        return False
    if ri.a == v or ri.b == v:
        return True
    if ri.op == OP_FMULADD:
        return ri.s == v
    if ri.op == OP_DOT:
        t = ix + ri.x
        for q in range(2 * ri.s):
            if t[q] == v:
                return True
    return False


cdef bint _row_hoistable(const _RowIns* ins, const int* ix, const unsigned char* done,
                         int k, int j) noexcept nogil:
    """Whether instruction j (unary, or a softmax output) may run at k."""
    cdef const _RowIns* rj = &ins[j]
    cdef const _RowIns* ri
    cdef int i
    for i in range(k, j):
        if done[i]:
            continue
        ri = &ins[i]
        if ri.o == rj.a or ri.o == rj.b or ri.o == rj.o:
            return False
        if _row_reads(ri, ix, rj.o):
            return False
    return True


cdef object _row_groups(_RowIns* ins, int n, const int* ix, int base, int trash):
    """Set every instruction's fop; returns the groups' entries (an int32
    array to go after the base entries of ix): a group at g: the count, the
    group function, the mode, the members' instruction indices (the first
    is the group's own), then their a, b, o padded to ROW_GMAX; a
    logsumexp's operands again at g, padded to a multiple of ROW_GMAX."""
    cdef unsigned char[::1] donea = _np_zeros(max(n, 1), np.uint8)
    cdef unsigned char* done = &donea[0]
    cdef int k, j, fn, cnt, w = 0
    cdef Py_ssize_t cap = 0
    cdef _RowIns* ri
    cdef int mem[ROW_GMAX]
    for k in range(n):
        if ins[k].op == OP_LOGSUMEXP and ins[k].nary:
            cap += ix[ins[k].x] + ROW_GMAX
        elif _rg_fn(ins[k].op) >= 0:
            cap += 3 + 4 * ROW_GMAX
    outa = _np_zeros(max(cap, 1), np.int32)
    cdef int[::1] out = outa
    for k in range(n):
        ri = &ins[k]
        ri.fop = ri.op
        if ri.op == OP_LOGSUMEXP and ri.nary:
            # its operands again, padded to a multiple of ROW_GMAX (fg_rg_lse_sum)
            cnt = ix[ri.x]
            ri.g = base + w
            for j in range((cnt + ROW_GMAX - 1) // ROW_GMAX * ROW_GMAX):
                out[w] = ix[ri.x + 1 + min(j, cnt - 1)]
                w += 1
        if done[k]:
            ri.fop = ROW_DONE
            continue
        fn = _rg_fn(ri.op)
        if fn < 0:
            continue
        mem[0] = k
        cnt = 1
        for j in range(k + 1, min(n, k + 1 + ROW_LOOK)):
            if cnt == ROW_GMAX:
                break
            if done[j] or ins[j].op != ri.op:
                continue
            if _row_hoistable(ins, ix, done, k, j):
                mem[cnt] = j
                cnt += 1
        if cnt == 1 and fn != FG_RG_SOFTPLUS:
            continue
        ri.fop = ROW_GROUP
        ri.g = base + w
        out[w] = cnt
        out[w + 1] = fn
        out[w + 2] = 1 if ri.op == OP_SOFTMAX else 0
        w += 3
        for j in range(cnt):
            out[w] = mem[j]
            w += 1
            if j > 0:
                done[mem[j]] = 1
        # a, b, o padded to ROW_GMAX (fg_rg_group)
        for j in range(ROW_GMAX):
            out[w + j] = ins[mem[min(j, cnt - 1)]].a
            out[w + ROW_GMAX + j] = ins[mem[min(j, cnt - 1)]].b
            out[w + 2 * ROW_GMAX + j] = ins[mem[j]].o if j < cnt else trash
        w += 3 * ROW_GMAX
    return outa[:w]


cdef inline void _fw(const _RowIns* ri, double* V, int op) noexcept nogil:
    """V[o] of a unary or binary instruction (with a literal op code,
    op_forward folds to its one expression)."""
    V[ri.o] = op_forward_s(op, V[ri.a], V[ri.b], ri.c)


cdef inline void _bw2(const _RowIns* ri, const double* V, double* G, double go,
                      int op) noexcept nogil:
    """A binary instruction's backward: a's, then b's contribution."""
    cdef double ga, gb
    op_backward_s(op, V[ri.a], V[ri.b], ri.c, V[ri.o], go, &ga, &gb)
    G[ri.ga] = fg_vm_add_s(G[ri.ga], ga)
    G[ri.gb] = fg_vm_add_s(G[ri.gb], gb)


cdef inline void _bw1(const _RowIns* ri, const double* V, double* G, double go,
                      int op) noexcept nogil:
    """A unary instruction's backward (or one with a constant): a's
    contribution (b is the 0.0 slot, skipped by the plan)."""
    cdef double ga, gb
    op_backward_s(op, V[ri.a], V[ri.b], ri.c, V[ri.o], go, &ga, &gb)
    G[ri.ga] = fg_vm_add_s(G[ri.ga], ga)


cdef int row_forward(const _RowIns* ins, int n, const int* ix, double* V,
                     double* G, double* aux, _RowCtx* R) noexcept nogil:
    """forward_batched on one column; 0, or -1 when a signal stopped it (the
    exception is set).  The common ops with a literal op code (op_forward
    folds to one expression), the others through op_forward.  Each output's
    gradient G[o] set to +0.0 for the backward."""
    cdef int k, k0, k1, op, q, cnt
    cdef const _RowIns* ri
    cdef const int* t
    cdef double a, m, acc
    cdef Py_ssize_t work = R.work
    cdef Py_ssize_t sig = R.sig_work if R.sig_work > 0 else (<Py_ssize_t>1) << 62
    k1 = 0
    while k1 < n:
        k0 = k1
        k1 = min(k0 + ROW_BLOCK, n)
        for k in range(k0, k1):
            ri = &ins[k]
            op = ri.fop
            if op == ROW_DONE:
                continue
            elif op == OP_MUL:
                _fw(ri, V, OP_MUL)
            elif op == OP_ADD:
                _fw(ri, V, OP_ADD)
            elif op == OP_SUB:
                _fw(ri, V, OP_SUB)
            elif op == OP_DIV:
                _fw(ri, V, OP_DIV)
            elif op == OP_MAX:
                _fw(ri, V, OP_MAX)
            elif op == OP_ADDC:
                _fw(ri, V, OP_ADDC)
            elif op == OP_MULC:
                _fw(ri, V, OP_MULC)
            elif op == ROW_GROUP:
                fg_rg_group(ix + ri.g, V, G, aux)
            elif op == OP_FMULADD:
                V[ri.o] = op_forward_s(OP_ADD, V[ri.a], op_forward_s(
                    OP_MUL, V[ri.s], V[ri.b], 0.0), 0.0)
            elif op == OP_SUM:
                # the folds of _rules.pxd (fw_nary_block's steps at width 1)
                t = ix + ri.x
                cnt = t[0]
                t = t + 1
                acc = V[t[0]] + 0.0
                for q in range(1, cnt):
                    acc = fg_vm_add_s(acc, V[t[q]])
                V[ri.o] = acc
                work += cnt
            elif op == OP_LOGSUMEXP:
                t = ix + ri.x
                cnt = t[0]
                t = t + 1
                a = V[t[0]]
                m = a
                for q in range(1, cnt):
                    m = lse_max(m, V[t[q]])
                # the sum of lse_term(x, m) = exp(x - m), in order
                V[ri.o] = lse_finish(m, fg_rg_lse_sum(V, ix + ri.g, cnt, m))
                work += cnt
            elif op == OP_DOT:
                t = ix + ri.x
                acc = V[ri.a]
                for q in range(ri.s):
                    acc = op_forward_s(OP_ADD, acc, op_forward_s(
                        OP_MUL, V[t[2 * q]], V[t[2 * q + 1]], 0.0), 0.0)
                V[ri.o] = acc
                work += ri.s
            else:
                _fw(ri, V, op)
            G[ri.o] = 0.0
        work += k1 - k0
        if work >= sig and k1 < n:
            if _row_signals(R) < 0:
                return -1
            work = 0
    R.work = work
    return 0


cdef int row_backward(const _RowIns* ins, int n, const int* ix, const double* V,
                      double* G, const double* aux, _RowCtx* R) noexcept nogil:
    """backward_batched on one column, in the kernels' order (G all +0.0 but
    for the seed at the start, see the tape above: the scalar slots zeroed
    by _row_run, the rows by row_forward and the input copy); 0, or -1 when
    a signal stopped it."""
    cdef int k, k0, k1, op, q, cnt, sm
    cdef const _RowIns* ri
    cdef const int* t
    cdef double go, ga, gp, gsv, gx, prod
    cdef Py_ssize_t work = R.work
    cdef Py_ssize_t sig = R.sig_work if R.sig_work > 0 else (<Py_ssize_t>1) << 62
    k0 = n
    while k0 > 0:
        k1 = k0
        k0 = max(k1 - ROW_BLOCK, 0)
        for k in range(k1 - 1, k0 - 1, -1):
            ri = &ins[k]
            if not ri.run:
                continue
            op = ri.op
            go = G[ri.o]
            if op == OP_MUL:
                _bw2(ri, V, G, go, OP_MUL)
            elif op == OP_ADD:
                _bw2(ri, V, G, go, OP_ADD)
            elif op == OP_SUB:
                _bw2(ri, V, G, go, OP_SUB)
            elif op == OP_DIV:
                _bw2(ri, V, G, go, OP_DIV)
            elif op == OP_MAX:
                _bw2(ri, V, G, go, OP_MAX)
            elif op == OP_SOFTMAX:
                _bw2(ri, V, G, go, OP_SOFTMAX)
            elif op == OP_ADDC:
                _bw1(ri, V, G, go, OP_ADDC)
            elif op == OP_MULC:
                _bw1(ri, V, G, go, OP_MULC)
            elif op == OP_EXP:
                _bw1(ri, V, G, go, OP_EXP)
            elif op == OP_LOG:
                _bw1(ri, V, G, go, OP_LOG)
            elif op == OP_SOFTPLUS:
                # sigmoid(a) * g (op_backward), its sigmoid from the forward
                G[ri.ga] = fg_vm_add_s(G[ri.ga], fg_vm_mul_s(aux[k], go))
            elif op == OP_FMULADD:
                # bw_fused: acc (through ADD), then x and s (through MUL)
                prod = op_forward_s(OP_MUL, V[ri.s], V[ri.b], 0.0)
                op_backward_s(OP_ADD, V[ri.a], prod, 0.0, V[ri.o], go, &ga, &gp)
                G[ri.ga] = fg_vm_add_s(G[ri.ga], ga)
                if ri.mul:
                    # the product node's gradient: its one contribution added to 0.0
                    op_backward_s(OP_MUL, V[ri.s], V[ri.b], 0.0, prod, 0.0 + gp, &gsv, &gx)
                    G[ri.gb] = fg_vm_add_s(G[ri.gb], gx)
                    G[ri.gs] = fg_vm_add_s(G[ri.gs], gsv)
            elif op == OP_SUM:
                # operand by operand, in order (bw_nary_ops)
                t = ix + ri.x
                cnt = t[0]
                t = t + 1
                for q in range(cnt):
                    G[t[q + cnt]] = fg_vm_add_s(G[t[q + cnt]], nary_backward_s(
                        OP_SUM, V[t[q]], V[ri.o], go))
                work += 2 * cnt
            elif op == OP_LOGSUMEXP:
                t = ix + ri.x
                cnt = t[0]
                t = t + 1
                for q in range(cnt):
                    sm = t[q + 2 * cnt]
                    # e**(x - out) as the tape's OP_SOFTMAX computed it
                    G[t[q + cnt]] = fg_vm_add_s(G[t[q + cnt]], (
                        fg_vm_mul_s(V[sm], go) if sm >= 0 else
                        nary_backward_s(OP_LOGSUMEXP, V[t[q]], V[ri.o], go)))
                work += 2 * cnt
            else:
                _bw2(ri, V, G, go, op)
        work += 2 * (k1 - k0)
        if work >= sig and k0 > 0:
            if _row_signals(R) < 0:
                return -1
            work = 0
    R.work = work
    return 0


cdef inline void _one_source(Sources* S, const double* x, Py_ssize_t n) noexcept:
    """S as the one row x of n inputs."""
    S.n = 1
    S.ptr[0] = x if n > 0 else NULL
    S.cols[0] = n


cdef inline bint _row_ok(Program p, bint grad) noexcept:
    """Whether a one-row replay runs here (else: the batched path)."""
    return ROW_PATH and (not grad or p.nlayers == 0)


cdef double _row_run(Program p, const Sources* S, int reduce_mode, bint grad,
                     bint want_inputs, bint with_pen, double* po,
                     double* pgi) except? -1.0:
    """``Program._run_src`` for B == 1 (``_row_ok``): the same arguments,
    outputs ``po`` (n_outputs) and input gradients ``pgi`` (n_inputs) as
    pointers or NULL.  The same results, bit for bit."""
    cdef _Plan plan = None
    cdef _RowTape T
    cdef _RowCtx R
    cdef int res = 0, q, r, ns = p.n_scalar, key
    cdef Py_ssize_t cc
    cdef double total, out0 = 0.0
    cdef double* V
    cdef double* G
    cdef double* gs = &p.gs[0]
    cdef double* vs
    cdef const double* src
    cdef const int* oslot = &p.o_slot[0] if grad else &p.f_oslot[0]
    cdef const unsigned char* obat = &p.o_bat[0]
    cdef const unsigned char* sma = NULL
    cdef const unsigned char* smb = NULL
    cdef const unsigned char* in_ng = NULL
    if grad:
        plan = p._plan(want_inputs, with_pen)
        sma = &plan.sma[0]
        smb = &plan.smb[0]
        in_ng = &plan.in_ng[0]
    key = 2 * want_inputs + with_pen if grad else 4
    if p._rowtapes is None:
        p._rowtapes = [None] * 5
    T = p._rowtapes[key]
    if T is None:
        T = _row_tape(p, grad, plan)
        p._rowtapes[key] = T
    if p._rowbuf is None:
        # V and G (the same size for both tapes); zeros: every read is of a
        # slot written before (the plans), and the 0.0 slot stays 0.0
        p._rowbuf = _np_zeros(2 * T.nv, _F64)
        _row_bind(p, T.nv)
    V = p.rv
    G = p.rg
    R.work = 0
    R.sig_work = SIGNAL_WORK
    p._load_params()
    vs = &p.vs[0]
    with nogil:
        forward_scalar(p.n_sinstr, &p.s_op[0], &p.s_out[0], &p.s_a[0], &p.s_b[0],
                       &p.s_c[0], &p.sd[0], &p.s_nx[0], vs)
        memcpy(V, vs, ns * sizeof(double))
        # the input columns into rows 0..n_inputs-1
        r = ns
        for q in range(S.n):
            src = S.ptr[q]
            for cc in range(S.cols[q]):
                V[r] = src[cc]
                G[r] = 0.0
                r += 1
        res = row_forward(T.ins, T.n, T.ix, V, G, T.aux, &R)
        if res == 0:
            out0 = V[ns + oslot[0]] if obat[0] else vs[oslot[0]]
            if po != NULL:
                for q in range(p.n_outputs):
                    po[q] = V[ns + oslot[q]] if obat[q] else vs[oslot[q]]
        if grad and res == 0:
            # G all +0.0 (the rows' by row_forward and the input copy)
            memset(G, 0, ns * sizeof(double))
            # the seed: d(loss)/d(output 0) = 1.0 / B = 1.0 either way
            if obat[0]:
                G[ns + oslot[0]] = 1.0
            else:
                G[oslot[0]] += 1.0
            res = row_backward(T.ins, T.n, T.ix, V, G, T.aux, &R)
        if grad and res == 0:
            if pgi != NULL:
                for q in range(p.n_inputs):
                    pgi[q] = G[ns + q] if in_ng[q] else 0.0
            memcpy(gs, G, ns * sizeof(double))
            if with_pen and p.pen_slot >= 0:
                gs[p.pen_slot] += 1.0
            backward_scalar(p.n_sinstr, &p.s_op[0], &p.s_out[0], &p.s_a[0],
                            &p.s_b[0], &p.s_c[0], &p.sd[0], &p.s_nx[0], sma, smb,
                            vs, gs)
    if res < 0:
        return -1.0         # the KeyboardInterrupt (or handler's error) is set
    total = 0.0 + out0      # (the blocks' combine: a sum from 0.0)
    # (reduce_mode 1, the mean: times 1.0 / B = 1.0, no change)
    if with_pen and p.pen_slot >= 0:
        total = total + vs[p.pen_slot]
    return total


cdef int _row_bind(Program p, Py_ssize_t nv) except -1:
    """Point rv (V) and rg (G) into the Program's one-row buffer."""
    cdef double[::1] buf = p._rowbuf
    p.rv = &buf[0]
    p.rg = &buf[nv]
    return 0


# -- the calls of one row (Program.forward / value_and_grad, their usual
# arguments: a 1-D float64 array, already in ``S``) ---------------------------

cdef object _row_forward_call(Program p, const Sources* S):
    """``p.forward`` of the one row in ``S``."""
    cdef double o0
    cdef double* po = &o0
    cdef Py_buffer bo
    out = None
    if p.n_outputs > 1:
        out = _np_empty(p.n_outputs, _F64)
        _try_buffer(out, &bo)
        PyBuffer_Release(&bo)     # (our own array: the pointer stays valid)
        po = <double*>bo.buf
    p._enter("forward")
    try:
        _row_run(p, S, 0, False, False, False, po, NULL)
    finally:
        p._busy = False
    return o0 if out is None else out


cdef object _row_value_and_grad_call(Program p, const Sources* S, bint accumulate,
                                     param_grad):
    """``p.value_and_grad`` of the one row in ``S``."""
    cdef Py_buffer bg
    cdef double val
    pg = p._check_param_grad(param_grad, "value_and_grad")
    gin = _np_empty(p.n_inputs, _F64)
    _try_buffer(gin, &bg)
    PyBuffer_Release(&bg)          # (our own array: the pointer stays valid)
    p._enter("value_and_grad")
    try:
        if _row_ok(p, True):
            val = _row_run(p, S, 0, True, True, False, NULL,
                           <double*>bg.buf if p.n_inputs > 0 else NULL)
        else:
            val = p._run_src(S, 1, 0, True, True, False, None,
                             gin.reshape(1, -1) if p.n_inputs > 0 else None)
        p._store_param_grads(accumulate, pg)
    finally:
        p._busy = False
    return val, gin


def _set_row_path(bint on):
    """Testing/benchmark hook: run one-row replays in scalar C (True, the
    default) or on the batched kernels (False); returns the old setting."""
    global ROW_PATH
    old = ROW_PATH
    ROW_PATH = on
    return old
