# Stage 2b: backward plans (which operand gradients a replay computes).
# (included by _replay.pyx; see the stage list in its docstring)

# ---------------------------------------------------------------------------
# backward plans
# ---------------------------------------------------------------------------

@cython.final
cdef class _Plan:
    """Which operand gradients a backward pass computes, and how (fields in
    _replay.pxd)."""


cdef _Plan make_plan(Program p, bint want_inputs, bint with_pen):
    cdef int ns = p.n_scalar, nb = p.n_batched, k, s
    cdef unsigned char[::1] dep_s = np.zeros(max(ns, 1), np.uint8)
    cdef unsigned char[::1] dep_b = np.zeros(max(nb, 1), np.uint8)
    cdef unsigned char[::1] live_s = np.zeros(max(ns, 1), np.uint8)
    cdef unsigned char[::1] live_b = np.zeros(max(nb, 1), np.uint8)
    cdef unsigned char[::1] first_b = np.ones(max(nb, 1), np.uint8)
    cdef _Plan plan = _Plan.__new__(_Plan)
    cdef int kind, a, b, o, q, r
    cdef unsigned char d
    plan.bma = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.bmb = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.bms = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.sma = np.zeros(max(p.n_sinstr, 1), np.uint8)
    plan.smb = np.zeros(max(p.n_sinstr, 1), np.uint8)
    plan.in_ng = np.zeros(max(p.n_inputs, 1), np.uint8)
    plan.par_ng = np.zeros(max(p.n_params, 1), np.uint8)
    plan.lrm = np.zeros(max(p.l_rows.shape[0], 1), np.uint8)
    plan.lw = np.zeros(max(p.nlayers, 1), np.uint8)
    plan.bmn = np.zeros(max(p.b_nx.shape[0], 1), np.uint8)
    # which slots depend on what we differentiate for
    for s in range(p.n_params):
        dep_s[s] = 1
    for k in range(p.n_sinstr):
        b = p.s_b[k]
        if op_is_nary(p.s_op[k]):
            dep_s[p.s_out[k]] = _snary_terms(p, p.s_a[k], dep_s, None)
            continue
        if p.s_op[k] == OP_SDOT:
            dep_s[p.s_out[k]] = dep_s[p.s_a[k]] | _sdot_terms(p, b, dep_s, None)
            continue
        dep_s[p.s_out[k]] = dep_s[p.s_a[k]] | (dep_s[b] if b >= 0 else 0)
    if want_inputs:
        for s in range(p.n_inputs):
            dep_b[s] = 1
    for k in range(p.n_binstr):
        if p.b_op[k] == OP_LAYER:
            _layer_dep(p, p.b_a[k], dep_s, dep_b)
            continue
        kind = p.b_kind[k]
        a = p.b_a[k]
        b = p.b_b[k]
        if kind == K_N:
            d = 0
            for q in range(b + 1, b + 1 + p.b_nx[b]):
                r = p.b_nx[q]
                d |= dep_b[r] if r >= 0 else dep_s[-1 - r]
            dep_b[p.b_out[k]] = d
            continue
        dep_b[p.b_out[k]] = (
            (dep_s[a] if kind == K_SB else dep_b[a])
            | (0 if kind == K_B else (dep_s[b] if kind == K_BS else dep_b[b]))
            | (dep_s[p.b_s[k]] if p.b_op[k] == OP_FMULADD else 0))
    # which slots the seeds depend on
    if p.o_bat[0]:
        live_b[p.o_slot[0]] = 1
        first_b[p.o_slot[0]] = 0         # the seed is stored first
    else:
        live_s[p.o_slot[0]] = 1
    if with_pen and p.pen_slot >= 0:
        live_s[p.pen_slot] = 1
    for k in range(p.n_binstr - 1, -1, -1):
        if p.b_op[k] == OP_LAYER:
            _layer_plan(p, plan, k, dep_s, dep_b, live_s, live_b, first_b)
            continue
        o = p.b_out[k]
        if not (live_b[o] and dep_b[o]):
            continue
        kind = p.b_kind[k]
        a = p.b_a[k]
        b = p.b_b[k]
        if kind == K_N:
            # operand order: an operand listed twice gets a store, then an add
            for q in range(b + 1, b + 1 + p.b_nx[b]):
                r = p.b_nx[q]
                if r >= 0:
                    live_b[r] = 1
                    if dep_b[r]:
                        plan.bmn[q] = M_STORE if first_b[r] else M_ADD
                        first_b[r] = 0
                        plan.bma[k] = M_ADD       # (run it)
                else:
                    live_s[-1 - r] = 1
                    if dep_s[-1 - r]:
                        plan.bmn[q] = M_ADD
                        plan.bma[k] = M_ADD
            continue
        if kind == K_SB:
            live_s[a] = 1
            if dep_s[a]:
                plan.bma[k] = M_ADD
        else:
            live_b[a] = 1
            if dep_b[a]:
                plan.bma[k] = M_STORE if first_b[a] else M_ADD
                first_b[a] = 0
        if kind == K_BS:
            live_s[b] = 1
            if dep_s[b]:
                plan.bmb[k] = M_ADD
        elif kind != K_B:
            live_b[b] = 1
            if dep_b[b]:
                plan.bmb[k] = M_STORE if first_b[b] else M_ADD
                first_b[b] = 0
        if p.b_op[k] == OP_FMULADD:
            live_s[p.b_s[k]] = 1
            if dep_s[p.b_s[k]]:
                plan.bms[k] = M_ADD
    for k in range(p.n_sinstr - 1, -1, -1):
        o = p.s_out[k]
        if not (live_s[o] and dep_s[o]):
            continue
        a = p.s_a[k]
        b = p.s_b[k]
        if op_is_nary(p.s_op[k]):
            if _snary_terms(p, a, dep_s, live_s):
                plan.sma[k] = M_ADD
            continue
        live_s[a] = 1
        if dep_s[a]:
            plan.sma[k] = M_ADD
        if p.s_op[k] == OP_SDOT:
            if _sdot_terms(p, b, dep_s, live_s):
                plan.smb[k] = M_ADD
        elif b >= 0:
            live_s[b] = 1
            if dep_s[b]:
                plan.smb[k] = M_ADD
    for s in range(p.n_inputs):
        plan.in_ng[s] = live_b[s] and dep_b[s] and not first_b[s]
    for s in range(p.n_params):
        plan.par_ng[s] = live_s[s]
    plan.bsl = _batched_scalar_slots(p, plan)
    plan.bsm = _softmax_rows(p)
    _grad_rows(p, plan)
    return plan


cdef object _softmax_rows(Program p):
    """Per b_nx entry: for an operand x of a logsumexp (value row out), the
    row of an OP_SOFTMAX instruction of the training tape computing
    e**(x - out) -- fastgrad.softmax's outputs, op_forward(OP_SOFTMAX, x,
    out), which is nary_backward's factor: the logsumexp's backward reads it
    instead of computing the exponential again (bw_lse); -1 where there is
    none.  A softmax's a is a row (K_BB) or the scalar slot -1 - ref (K_SB)."""
    cdef int k, off, q, r, kind
    cdef int[::1] bsm = np.full(max(p.b_nx.shape[0], 1), -1, np.int32)
    rows = {}
    for k in range(p.n_binstr):
        if p.b_op[k] == OP_SOFTMAX:
            kind = p.b_kind[k]
            if kind == K_BB:
                rows[(p.b_a[k], p.b_b[k])] = p.b_out[k]
            elif kind == K_SB:
                rows[(-1 - p.b_a[k], p.b_b[k])] = p.b_out[k]
    if not rows:
        return bsm
    for k in range(p.n_binstr):
        if p.b_kind[k] != K_N or p.b_op[k] != OP_LOGSUMEXP:
            continue
        off = p.b_b[k]
        for q in range(p.b_nx[off]):
            r = p.b_nx[off + 1 + q]
            bsm[off + 1 + q] = rows.get((r, p.b_out[k]), -1)
    return bsm


cdef inline int _grow_take(int[::1] gm, int[::1] free, int* top, int* nrows,
                           int r) noexcept:
    """A gradient row for slot r (the first contribution to its gradient):
    its own if r is an input, else a freed one or a new one."""
    if gm[r] >= 0:
        return 0
    if top[0] > 0:
        top[0] -= 1
        gm[r] = free[top[0]]
    else:
        gm[r] = nrows[0]
        nrows[0] += 1
    return 0


cdef void _grad_rows(Program p, _Plan plan):
    """plan.gm: the gradient row of every batched slot, reused once dead.

    A slot's gradient lives from its first contribution (the M_STORE of the
    consumer latest in the tape) to its own instruction's backward, which
    reads it last: walking the tape backwards as the replay does, an
    operand's row is taken at its store, and the output's row freed once
    its instruction is done (after its operands took theirs, so no row is
    both read and written by one instruction).  Inputs keep rows 0 ..
    n_inputs - 1 (their gradients are read after the backward).  A program
    with layers (whose kernels address gradient rows by slot), or with
    REUSE_GRAD_ROWS off, gets gm = identity.  A slot no contribution
    reaches keeps gm = -1 (no instruction reads it).
    """
    cdef int nb = max(p.n_batched, 1), n_in = p.n_inputs, k, q, r, o, off
    cdef int top = 0, nrows = n_in, kind
    cdef int[::1] gm = np.full(nb, -1, np.int32)
    cdef int[::1] free = np.empty(nb, np.int32)
    plan.gm = gm
    if p.nlayers > 0 or not REUSE_GRAD_ROWS:
        for r in range(nb):
            gm[r] = r
        plan.n_grows = nb
        return
    for r in range(n_in):
        gm[r] = r
    if p.o_bat[0]:
        _grow_take(gm, free, &top, &nrows, p.o_slot[0])   # the seed
    for k in range(p.n_binstr - 1, -1, -1):
        if (plan.bma[k] == M_SKIP and plan.bmb[k] == M_SKIP
                and plan.bms[k] == M_SKIP):
            continue
        kind = p.b_kind[k]
        if kind == K_N:
            off = p.b_b[k]
            for q in range(off + 1, off + 1 + p.b_nx[off]):
                r = p.b_nx[q]
                if r >= 0 and plan.bmn[q] == M_STORE:
                    _grow_take(gm, free, &top, &nrows, r)
        else:
            if kind != K_SB and plan.bma[k] == M_STORE:
                _grow_take(gm, free, &top, &nrows, p.b_a[k])
            if (kind == K_BB or kind == K_SB) and plan.bmb[k] == M_STORE:
                _grow_take(gm, free, &top, &nrows, p.b_b[k])
        o = p.b_out[k]
        if o >= n_in and gm[o] >= 0:
            free[top] = gm[o]
            top += 1
    plan.n_grows = max(nrows, 1)


cdef object _batched_scalar_slots(Program p, _Plan plan):
    """The scalar slots the batched backward adds to outside layers (each
    once, then a sentinel): a column block keeps its own partial sums of
    them (see _replay_blocks.pxi)."""
    cdef int k, kind, off, q
    found = {}
    if not p.o_bat[0]:
        found[p.o_slot[0]] = None     # the seeds of a scalar output 0
    for k in range(p.n_binstr):
        if p.b_op[k] == OP_LAYER:
            continue
        kind = p.b_kind[k]
        if kind == K_SB and plan.bma[k] != M_SKIP:
            found[p.b_a[k]] = None
        if kind == K_BS and plan.bmb[k] != M_SKIP:
            found[p.b_b[k]] = None
        if p.b_op[k] == OP_FMULADD and plan.bms[k] != M_SKIP:
            found[p.b_s[k]] = None
        if kind == K_N:
            # scalar operands of an n-ary instruction: -1 - slot in b_nx
            off = p.b_b[k]
            for q in range(p.b_nx[off]):
                if p.b_nx[off + 1 + q] < 0 and plan.bmn[off + 1 + q] != M_SKIP:
                    found[-1 - p.b_nx[off + 1 + q]] = None
    return np.array(list(found) + [0], np.int32)


cdef void _layer_dep(Program p, int li, unsigned char[::1] dep_s,
                     unsigned char[::1] dep_b):
    """Forward dependency of a layer's outputs: on any input row, weight or
    bias that depends on what is differentiated."""
    cdef const int* m = &p.l_meta[li * LM_SIZE]
    cdef int H = m[LM_H], K = m[LM_K], t, sl
    cdef unsigned char d = 0
    for t in range(K):
        d |= dep_b[p.l_rows[m[LM_X] + t]]
    for t in range(_layer_nslots(m)):
        sl = p.l_slots[m[LM_W] + t]
        if sl >= 0:
            d |= dep_s[sl]
    for t in range(H):
        dep_b[p.l_rows[m[LM_O] + t]] = d
        if m[LM_Z] >= 0:
            dep_b[p.l_rows[m[LM_Z] + t]] = d


cdef inline int _layer_nslots(const int* m) noexcept:
    """Scalar slots of a layer in l_slots from LM_W on: its weights, start
    slots and post-add slots (-1 entries: none)."""
    return m[LM_H] * m[LM_K] + m[LM_H] * (2 if m[LM_BL] >= 0 else 1)


cdef void _layer_plan(Program p, _Plan plan, int k, unsigned char[::1] dep_s,
                      unsigned char[::1] dep_b, unsigned char[::1] live_s,
                      unsigned char[::1] live_b, unsigned char[::1] first_b):
    """Backward plan of the layer instruction k: bma = run it, bmb = input row
    gradients wanted (plan.lrm: each one's store/add mode), bms = weight and
    bias gradients wanted; plan.lrm of an output row: its gradient was
    written by a consumer (else the layer reads it as 0)."""
    cdef int li = p.b_a[k]
    cdef const int* m = &p.l_meta[li * LM_SIZE]
    cdef int H = m[LM_H], K = m[LM_K], t, row
    cdef bint live = False, want_w = False
    for t in range(H):
        row = p.l_rows[m[LM_O] + t]
        if live_b[row] and dep_b[row]:
            live = True
    if not live:
        return
    plan.bma[k] = M_ADD
    for t in range(H):
        row = p.l_rows[m[LM_O] + t]
        plan.lrm[m[LM_O] + t] = 1 if (live_b[row] and not first_b[row]) else 0
    for t in range(K):
        row = p.l_rows[m[LM_X] + t]
        live_b[row] = 1
        if dep_b[row]:
            plan.lrm[m[LM_X] + t] = M_STORE if first_b[row] else M_ADD
            first_b[row] = 0
            plan.bmb[k] = M_ADD
    for t in range(_layer_nslots(m)):
        row = p.l_slots[m[LM_W] + t]
        if row >= 0:
            live_s[row] = 1
            want_w = want_w or dep_s[row]
    if want_w:
        plan.bms[k] = M_ADD
        plan.lw[li] = 1


cdef unsigned char _snary_terms(Program p, int off, unsigned char[::1] dep_s,
                                unsigned char[::1] live_s):
    """Whether any operand of the scalar n-ary instruction whose (count,
    slots...) are at ``off`` in s_nx depends on what is differentiated;
    marks them live when ``live_s`` is given."""
    cdef int q, t
    cdef unsigned char d = 0
    for q in range(p.s_nx[off]):
        t = p.s_nx[off + 1 + q]
        d |= dep_s[t]
        if live_s is not None:
            live_s[t] = 1
    return d


cdef unsigned char _sdot_terms(Program p, int off, unsigned char[::1] dep_s,
                               unsigned char[::1] live_s):
    """Whether any operand of the OP_SDOT terms at ``off`` depends on what is
    differentiated; marks them live when ``live_s`` is given."""
    cdef int q, t
    cdef unsigned char d = 0
    for q in range(2 * p.sd[off]):
        t = p.sd[off + 1 + q]
        d |= dep_s[t]
        if live_s is not None:
            live_s[t] = 1
    return d
