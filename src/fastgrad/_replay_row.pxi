# Stage 3c: one row of a replay in scalar C (B == 1).
# (included by _replay.pyx; see the stage list in its docstring)
#
# A replay of one row (``value_and_grad``, ``forward``, ``batch``/``predict``
# of a one-row array, gradcheck's analytic part) used to run the batched
# kernels on a column block padded to 8 columns: per instruction a vector
# loop over mostly padding, a call into the row functions of _vmath_rows.h,
# and per call the chunk, block and worker set-up.  Here the same tape runs
# one instruction at a time on one column (ld = 1): the values of instruction
# k are op_forward/op_backward of _rules.pxd on doubles, as the batched
# kernels compute them column by column (their row functions give the bits of
# the scalar fg_vm_* by design), so a row gives the same bits either way:
#
# * forward: the training tape (with gradients) or the forward-only tape
#   (fused mul-adds, OP_DOT chains, reused rows) -- the same op_forward
#   sequence per column as forward_batched;
# * backward: the same backward plan (store/add modes), operand by operand in
#   the kernels' order; a scalar slot's batch-sum of one column is that
#   column's contribution (the kernels' partial sums add +0.0 to it, which
#   changes no sum that starts at +0.0), added straight into the totals;
# * the loss is 0.0 + output 0, as the blocks' combine adds it.
#
# Programs with dense layers keep the batched path for gradients (the layer
# kernels' packed weights and reordered weight-gradient sums); their
# forward-only tape has no layers and runs here.  Ctrl-C: the loops look for
# signals every SIGNAL_WORK element operations, as the batched loops do
# between chunks (a one-row call of a tape that large is rare).


# testing hook (_set_row_path): one-row replays here (default) or on the
# batched path
cdef bint ROW_PATH = True


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


cdef inline double _row_nary(int op, const int* refs, int cnt, const double* vs,
                             const double* v) noexcept nogil:
    """An n-ary op on one column: the fold of _rules.pxd (fw_nary_block's
    steps at width 1); an operand is row r >= 0 or scalar slot -1 - r."""
    cdef int q, r
    cdef double t, m, x
    r = refs[0]
    x = v[r] if r >= 0 else vs[-1 - r]
    if op == OP_SUM:
        t = x + 0.0
        for q in range(1, cnt):
            r = refs[q]
            t = t + (v[r] if r >= 0 else vs[-1 - r])
        return t
    m = x
    for q in range(1, cnt):
        r = refs[q]
        m = lse_max(m, v[r] if r >= 0 else vs[-1 - r])
    t = lse_term(x, m)
    for q in range(1, cnt):
        r = refs[q]
        t = t + lse_term(v[r] if r >= 0 else vs[-1 - r], m)
    return lse_finish(m, t)


cdef int row_forward(int n, const unsigned char* ops, const unsigned char* kinds,
                     const int* outs, const int* oa, const int* ob, const int* os,
                     const double* cs, const int* ds, const int* dx, const int* nx,
                     const double* vs, double* v, _RowCtx* R) noexcept nogil:
    """forward_batched on one column (ld = 1); no OP_LAYER.  0, or -1 when a
    signal stopped it (the exception is set)."""
    cdef int k, op, kind, q, off
    cdef double a, b, t
    for k in range(n):
        op = ops[k]
        kind = kinds[k]
        if kind == K_N:
            off = ob[k]
            v[outs[k]] = _row_nary(op, nx + off + 1, nx[off], vs, v)
            R.work += nx[off]
        elif op == OP_FMULADD:
            a = v[oa[k]] if kind == K_BB else vs[oa[k]]
            v[outs[k]] = op_forward(OP_ADD, a, op_forward(
                OP_MUL, vs[os[k]], v[ob[k]], 0.0), 0.0)
        elif op == OP_DOT:
            t = v[oa[k]] if kind == K_BB else vs[oa[k]]
            off = ob[k]
            for q in range(off, off + os[k]):
                t = op_forward(OP_ADD, t, op_forward(OP_MUL, vs[ds[q]], v[dx[q]],
                                                     0.0), 0.0)
            v[outs[k]] = t
            R.work += os[k]
        else:
            a = vs[oa[k]] if kind == K_SB else v[oa[k]]
            if kind == K_BB or kind == K_SB:
                b = v[ob[k]]
            elif kind == K_BS:
                b = vs[ob[k]]
            else:
                b = 0.0
            v[outs[k]] = op_forward(op, a, b, cs[k])
        R.work += 1
        if R.work >= R.sig_work and R.sig_work > 0 and k + 1 < n:
            if _row_signals(R) < 0:
                return -1
    return 0


cdef inline void _row_put(int mode, double* g, int r, double d) noexcept nogil:
    """A contribution to row r's gradient: the first one stored (0.0 + d
    keeps eager's sign of zero), the others added."""
    if mode == M_STORE:
        g[r] = 0.0 + d
    else:
        g[r] += d


cdef int row_backward(int n, const unsigned char* ops, const unsigned char* kinds,
                      const int* outs, const int* oa, const int* ob, const int* os,
                      const double* cs, const int* nx, const unsigned char* mas,
                      const unsigned char* mbs, const unsigned char* mss,
                      const unsigned char* mns, const double* vs, double* gs,
                      const double* v, double* g, _RowCtx* R) noexcept nogil:
    """backward_batched on one column (ld = 1), scalar slots' contributions
    straight into ``gs``; no OP_LAYER.  0, or -1 when a signal stopped it."""
    cdef int k, op, kind, ma, mb, ms, q, r, off, mode
    cdef double a, b, o, go, ga, gb, gp, gsv, gx, prod, d
    for k in range(n - 1, -1, -1):
        ma = mas[k]
        mb = mbs[k]
        ms = mss[k]
        if ma == M_SKIP and mb == M_SKIP and ms == M_SKIP:
            continue
        op = ops[k]
        kind = kinds[k]
        o = v[outs[k]]
        go = g[outs[k]]
        if kind == K_N:
            # operand by operand, in order (bw_nary_ops)
            off = ob[k]
            for q in range(off + 1, off + 1 + nx[off]):
                mode = mns[q]
                if mode == M_SKIP:
                    continue
                r = nx[q]
                if r >= 0:
                    _row_put(mode, g, r, nary_backward(op, v[r], o, go))
                else:
                    gs[-1 - r] += nary_backward(op, vs[-1 - r], o, go)
            R.work += 2 * nx[off]
        elif op == OP_FMULADD:
            # bw_fused: acc (through ADD), then x and s (through MUL)
            a = v[oa[k]] if kind == K_BB else vs[oa[k]]
            b = vs[os[k]]
            d = v[ob[k]]
            prod = op_forward(OP_MUL, b, d, 0.0)
            op_backward(OP_ADD, a, prod, 0.0, o, go, &ga, &gp)
            if ma != M_SKIP:
                if kind == K_BB:
                    _row_put(ma, g, oa[k], ga)
                else:
                    gs[oa[k]] += ga
            if mb != M_SKIP or ms != M_SKIP:
                # the product node's gradient: its one contribution added to 0.0
                op_backward(OP_MUL, b, d, 0.0, prod, 0.0 + gp, &gsv, &gx)
                if mb != M_SKIP:
                    _row_put(mb, g, ob[k], gx)
                if ms != M_SKIP:
                    gs[os[k]] += gsv
        else:
            a = vs[oa[k]] if kind == K_SB else v[oa[k]]
            if kind == K_BB or kind == K_SB:
                b = v[ob[k]]
            elif kind == K_BS:
                b = vs[ob[k]]
            else:
                b = 0.0
            op_backward(op, a, b, cs[k], o, go, &ga, &gb)
            if ma != M_SKIP:
                if kind == K_SB:
                    gs[oa[k]] += ga
                else:
                    _row_put(ma, g, oa[k], ga)
            if mb != M_SKIP:
                if kind == K_BS:
                    gs[ob[k]] += gb
                else:
                    _row_put(mb, g, ob[k], gb)
        R.work += 2
        if R.work >= R.sig_work and R.sig_work > 0 and k > 0:
            if _row_signals(R) < 0:
                return -1
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
    cdef _RowCtx R
    cdef int res = 0, q, r = 0
    cdef Py_ssize_t cc, nv
    cdef double total, out0 = 0.0
    cdef double* v
    cdef double* g
    cdef double* gs = &p.gs[0]
    cdef const double* vs
    cdef const double* src
    cdef const int* oslot = &p.o_slot[0] if grad else &p.f_oslot[0]
    cdef const unsigned char* obat = &p.o_bat[0]
    cdef const unsigned char* sma = NULL
    cdef const unsigned char* smb = NULL
    cdef const unsigned char* in_ng = NULL
    cdef const unsigned char* bma = NULL
    cdef const unsigned char* bmb = NULL
    cdef const unsigned char* bms = NULL
    cdef const unsigned char* bmn = NULL
    if p._rowbuf is None:
        # values (either tape's rows) and gradients of one column; zeros:
        # every read is of a slot written before (the plans), but a reader
        # of memory tools should find no uninitialised double
        nv = max(p.n_batched, p.n_frows, p.n_inputs) + 1
        p._rowbuf = _np_zeros(nv + p.n_batched + 1, _F64)
        _row_bind(p, nv)
    v = p.rv
    g = p.rg
    if grad:
        plan = p._plan(want_inputs, with_pen)
        sma = &plan.sma[0]
        smb = &plan.smb[0]
        in_ng = &plan.in_ng[0]
        bma = &plan.bma[0]
        bmb = &plan.bmb[0]
        bms = &plan.bms[0]
        bmn = &plan.bmn[0]
    R.work = 0
    R.sig_work = SIGNAL_WORK
    p._load_params()
    vs = &p.vs[0]
    with nogil:
        forward_scalar(p.n_sinstr, &p.s_op[0], &p.s_out[0], &p.s_a[0], &p.s_b[0],
                       &p.s_c[0], &p.sd[0], &p.s_nx[0], &p.vs[0])
        # the input columns into rows 0..n_inputs-1
        for q in range(S.n):
            src = S.ptr[q]
            for cc in range(S.cols[q]):
                v[r] = src[cc]
                r += 1
        if grad:
            memset(gs, 0, p.n_scalar * sizeof(double))
            res = row_forward(p.n_binstr, &p.b_op[0], &p.b_kind[0], &p.b_out[0],
                              &p.b_a[0], &p.b_b[0], &p.b_s[0], &p.b_c[0], &p.d_s[0],
                              &p.d_x[0], &p.b_nx[0], vs, v, &R)
        else:
            res = row_forward(p.n_finstr, &p.f_op[0], &p.f_kind[0], &p.f_out[0],
                              &p.f_a[0], &p.f_b[0], &p.f_s[0], &p.f_c[0], &p.d_s[0],
                              &p.d_x[0], &p.f_nx[0], vs, v, &R)
        if res == 0:
            out0 = v[oslot[0]] if obat[0] else vs[oslot[0]]
            if po != NULL:
                for q in range(p.n_outputs):
                    po[q] = v[oslot[q]] if obat[q] else vs[oslot[q]]
        if grad and res == 0:
            # the seed: d(loss)/d(output 0) = 1.0 / B = 1.0 either way
            if obat[0]:
                g[oslot[0]] = 1.0
            else:
                gs[oslot[0]] += 1.0
            res = row_backward(p.n_binstr, &p.b_op[0], &p.b_kind[0], &p.b_out[0],
                               &p.b_a[0], &p.b_b[0], &p.b_s[0], &p.b_c[0],
                               &p.b_nx[0], bma, bmb, bms, bmn, vs, gs, v, g, &R)
        if grad and res == 0:
            if pgi != NULL:
                for q in range(p.n_inputs):
                    pgi[q] = g[q] if in_ng[q] else 0.0
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
    """Point rv/rg into the Program's one-row buffer (kept by _rowbuf)."""
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
