# Stages 2 and 3 for dense layers: finding them in the batched tape, and
# running them (the C kernels are in _replay_gemm.h / _replay_gemm_body.h).
# (included by _replay.pyx; see the stage list in its docstring)
#
# A *dot chain* is what a micrograd Neuron records: a scalar start (its bias)
# and fused mul-adds ((b + w0*x0) + w1*x1) + ... whose running sums are read
# by nothing else.  Chains that read the same batched rows x0..x(K-1), in the
# same order, form a *layer*: H chains over K rows, Z = b + W @ X with W the
# (H, K) scalars (parameters or scalar results, read at every replay).  When
# every chain's result is read only by a relu, the relu is part of the layer.
#
# In the training tape a layer is one OP_LAYER instruction: forward is one
# matrix kernel (each output summed in the chain's order: the same floats as
# the chain), backward one pass: the incoming gradient rows (masked by the
# relu), the weight and bias gradients as batch sums (FG_LANES partial sums
# per weight, kept across the column chunks, summed in the last one and
# added to the scalar gradients once at the end), and the gradient rows of X
# (W^T @ dZ, summed over the layer's outputs in order, W^T read from the
# forward's packed panels).  Those sums are in a different order
# than the per-instruction backward's, so gradients differ from it (and from
# eager mode) by rounding; tests/test_layers.py bounds the difference.
# Forward-only replays (predict) keep the OP_DOT tape: bit-identical to eager.

cdef extern from "_replay_gemm.h" nogil:
    int FG_SKIP, FG_STORE, FG_ADD, FG_MR, FG_LANES
    void fg_gemm_rows(int M, int K, const double* P, int trans, const double* init,
                      const unsigned char* mode, int relu, const double* inp,
                      const int* in_rows, double* out, const int* out_rows,
                      Py_ssize_t ld, Py_ssize_t n)
    void fg_gemm_lanes(int M, int K, const double* g, const int* g_rows,
                       const double* x, const int* x_rows, Py_ssize_t ld,
                       Py_ssize_t n, double* lanes, double* blanes, int fresh,
                       double* sums)
    void fg_grad_in(int M, const unsigned char* has, int relu, const double* v,
                    double* g, const int* rows, Py_ssize_t ld, Py_ssize_t n)
    int fg_isa_select(int level)
    int fg_isa_get()
    int fg_isa_supported(int level)

fg_isa_select(-1)

_ISA_NAMES = ("portable", "baseline", "avx2", "avx512")


def _isa():
    """Name of the instruction set the layer kernels run with."""
    return _ISA_NAMES[fg_isa_get()]


def _supported_isas():
    """The instruction sets this CPU (and build) can run the kernels with."""
    return [name for i, name in enumerate(_ISA_NAMES) if fg_isa_supported(i)]


def _set_isa(name):
    """Testing hook: run the layer kernels with ISA ``name`` ("portable",
    "baseline", "avx2", "avx512" or "best"); returns the previous name."""
    old = _isa()
    if name == "best":
        fg_isa_select(-1)
    elif name not in _ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}; choose from {_ISA_NAMES + ('best',)}")
    elif fg_isa_select(_ISA_NAMES.index(name)) < 0:
        raise ValueError(f"this CPU or build cannot run the {name} kernels")
    return old


cdef bint LAYERS = True


def _set_layers(bint on):
    """Testing/tuning hook: find dense layers when recording (default) or
    not; returns the old setting.  Affects programs recorded afterwards."""
    global LAYERS
    old = LAYERS
    LAYERS = on
    return old


# one layer's entry in Program.l_meta
cdef enum:
    LM_H = 0      # outputs (chains)
    LM_K = 1      # inputs (terms per chain)
    LM_ACT = 2    # 1: relu fused
    LM_X = 3      # offset of the K input rows in l_rows
    LM_O = 4      # offset of the H output rows in l_rows
    LM_W = 5      # offset of the H*K weight slots in l_slots (row-major)
    LM_B = 6      # offset of the H bias slots in l_slots
    LM_PW = 7     # offset of the packed W panel (then H biases) in l_pw; the
                  # backward reads W^T from it too (fg_gemm_rows' trans)
    LM_LN = 8     # offset of the weight (H*K) then bias (H) lanes in l_lanes
                  # (l_sums: the same at LM_LN / FG_LANES, one sum each)
    LM_SIZE = 9


cdef inline int _round_mr(int m) noexcept nogil:
    return (m + FG_MR - 1) // FG_MR * FG_MR


# -- stage 2: the pass --------------------------------------------------------

cdef object _find_layers(Program prog, list b_op, list b_kind, list b_out,
                         list b_a, list b_b, list b_s, list b_c, int n_in,
                         set o_rows):
    """Rewrite the (fused) batched tape with OP_LAYER instructions.

    Edits the lists in place and sets the Program's layer tables; returns a
    dict old row -> new row (rows are renumbered), or None when the tape has
    no layer (nothing changed).  Linear in the tape's size.
    """
    cdef int n = len(b_op), k, m, c, r, i, t, nl, H, K, row, nxt
    cdef list uses = [0] * (n_in + n), reader = [-1] * (n_in + n)
    cdef list chain_at = [-1] * n, chains = []
    cdef dict groups = {}
    # -- dot chains
    for k in range(n):
        for row in _rows_read(b_op[k], b_kind[k], b_a[k], b_b[k], None, None):
            uses[row] += 1
            reader[row] = k
    for k in range(n):
        if b_op[k] != OP_FMULADD:
            continue
        if b_kind[k] == K_SB:             # a scalar start: a new chain
            chain_at[k] = len(chains)
            chains.append((b_a[k], [b_s[k]], [b_b[k]], [k]))
            continue
        row = b_a[k]
        m = row - n_in
        if m >= 0 and chain_at[m] >= 0 and uses[row] == 1 and row not in o_rows:
            c = chain_at[m]
            chain_at[m] = -1
            chain_at[k] = c
            chains[c][1].append(b_s[k])
            chains[c][2].append(b_b[k])
            chains[c][3].append(k)
    # -- layers: chains over the same rows (each row once)
    for c in range(len(chains)):
        xs = tuple(chains[c][2])
        if len(set(xs)) == len(xs):
            groups.setdefault(xs, []).append(c)
    layers = [g for xs, g in groups.items() if len(g) > 1 or len(xs) > 1]
    if not layers:
        return None
    absorbed = bytearray(n)
    anchor = {}                       # first instruction of a layer -> layer
    l_acts = []
    l_outs = []                       # per layer: the (old) rows it produces
    for nl in range(len(layers)):
        g = layers[nl]
        ends = [chains[c][3][len(chains[c][3]) - 1] for c in g]
        relus = []
        for k in ends:
            row = n_in + k
            m = reader[row]
            if (uses[row] == 1 and row not in o_rows and b_op[m] == OP_RELU
                    and b_kind[m] == K_B):
                relus.append(m)
        act = len(relus) == len(ends)
        l_acts.append(1 if act else 0)
        l_outs.append([n_in + k for k in (relus if act else ends)])
        first = n
        for c in g:
            for k in chains[c][3]:
                absorbed[k] = 1
                first = min(first, k)
        if act:
            for k in relus:
                absorbed[k] = 1
        anchor[first] = nl
    # -- schedule: original order, an item waits until the rows it reads exist
    ready = bytearray(n_in + n)
    for row in range(n_in):
        ready[row] = 1
    order = []                        # items: k >= 0 instruction, -1-li layer
    waiting = {}
    pos = {}
    for k in range(n):
        if k in anchor:
            item = -1 - anchor[k]
        elif absorbed[k]:
            continue
        else:
            item = k
        stack = [item]
        while stack:
            it = stack.pop()
            if it >= 0:
                reads = _rows_read(b_op[it], b_kind[it], b_a[it], b_b[it], None, None)
            else:
                reads = chains[layers[-1 - it][0]][2]
            t = pos.get(it, 0)
            while t < len(reads) and ready[reads[t]]:
                t += 1
            if t < len(reads):
                pos[it] = t
                waiting.setdefault(reads[t], []).append(it)
                continue
            order.append(it)
            for row in ([n_in + it] if it >= 0 else l_outs[-1 - it]):
                ready[row] = 1
                stack.extend(waiting.pop(row, ()))
    if waiting:                       # cannot happen for a valid tape
        return None
    # -- renumber rows and write the new tape
    new_row = {}
    for row in range(n_in):
        new_row[row] = row
    nxt = n_in
    for it in order:
        for row in ([n_in + it] if it >= 0 else l_outs[-1 - it]):
            new_row[row] = nxt
            nxt += 1
    ops, kinds, outs, oas, obs, oss, ocs = [], [], [], [], [], [], []
    meta, lrows, lslots = [], [], []
    pw_size = ln_size = 0
    for it in order:
        if it >= 0:
            k = it
            ops.append(b_op[k])
            kinds.append(b_kind[k])
            outs.append(new_row[n_in + k])
            oas.append(b_a[k] if b_kind[k] == K_SB else new_row[b_a[k]])
            obs.append(new_row[b_b[k]] if b_kind[k] in (K_BB, K_SB) else b_b[k])
            oss.append(b_s[k])
            ocs.append(b_c[k])
            continue
        nl = -1 - it
        g = layers[nl]
        H = len(g)
        K = len(chains[g[0]][2])
        ops.append(OP_LAYER)
        kinds.append(K_B)
        outs.append(new_row[l_outs[nl][0]])
        oas.append(len(meta) // LM_SIZE)
        obs.append(-1)
        oss.append(-1)
        ocs.append(0.0)
        meta += [H, K, l_acts[nl], len(lrows), len(lrows) + K, len(lslots),
                 len(lslots) + H * K, pw_size, ln_size]
        lrows += [new_row[row] for row in chains[g[0]][2]]
        lrows += [new_row[row] for row in l_outs[nl]]
        for c in g:
            lslots += chains[c][1]
        lslots += [chains[c][0] for c in g]
        pw_size += _round_mr(H) * K + H
        ln_size += (H * K + H) * FG_LANES
    b_op[:] = ops
    b_kind[:] = kinds
    b_out[:] = outs
    b_a[:] = oas
    b_b[:] = obs
    b_s[:] = oss
    b_c[:] = ocs
    prog.nlayers = len(meta) // LM_SIZE
    prog.l_meta = np.array(meta, np.int32)
    prog.l_rows = np.array(lrows, np.int32)
    prog.l_slots = np.array(lslots, np.int32)
    prog.l_pw = np.zeros(pw_size + 1, np.float64)
    prog.l_lanes = np.zeros(ln_size + 1, np.float64)
    prog.l_sums = np.zeros(ln_size // FG_LANES + 1, np.float64)
    return new_row


# -- stage 3: running layers --------------------------------------------------

cdef void layers_pack(LayerCtx* L, const double* vs) noexcept nogil:
    """Gather this replay's weights and biases into the packed panels."""
    cdef int li, H, K, i, k, r
    cdef const int* m
    cdef const int* w
    cdef double* p
    for li in range(L.n):
        m = L.meta + li * LM_SIZE
        H = m[LM_H]
        K = m[LM_K]
        w = L.slots + m[LM_W]
        p = L.pw + m[LM_PW]
        i = 0
        while i < H:
            for k in range(K):
                for r in range(FG_MR):
                    p[i * K + k * FG_MR + r] = (vs[w[(i + r) * K + k]]
                                                if i + r < H else 0.0)
            i += FG_MR
        p += _round_mr(H) * K
        for i in range(H):
            p[i] = vs[L.slots[m[LM_B] + i]]


cdef void layer_forward(const LayerCtx* L, int li, const double* vs, double* vb,
                        Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K], act = m[LM_ACT], i, k
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    cdef const int* w = L.slots + m[LM_W]
    cdef Py_ssize_t j
    cdef double z
    if L.pw != NULL:
        fg_gemm_rows(H, K, L.pw + m[LM_PW], 0, L.pw + m[LM_PW] + _round_mr(H) * K,
                     NULL, act, vb, xr, vb, orow, ld, n)
        return
    # unpacked (c_eval on caller scratch): the chain's operations, in order
    for i in range(H):
        for j in range(n):
            z = vs[L.slots[m[LM_B] + i]]
            for k in range(K):
                z = op_forward(OP_ADD, z, op_forward(OP_MUL, vs[w[i * K + k]],
                                                     vb[xr[k] * ld + j], 0.0), 0.0)
            vb[orow[i] * ld + j] = op_forward(OP_RELU, z, 0.0, 0.0) if act else z


cdef void layer_backward(const LayerCtx* L, int li, bint want_w, bint want_x,
                         const double* vb, double* gb, Py_ssize_t ld,
                         Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K]
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    cdef double* ln = L.lanes + m[LM_LN]
    fg_grad_in(H, L.rmode + m[LM_O], m[LM_ACT], vb, gb, orow, ld, n)
    if want_w:
        fg_gemm_lanes(H, K, gb, orow, vb, xr, ld, n, ln, ln + H * K * FG_LANES,
                      L.fresh, L.sums + m[LM_LN] // FG_LANES if L.last else NULL)
    if want_x:
        fg_gemm_rows(K, H, L.pw + m[LM_PW], 1, NULL, L.rmode + m[LM_X], 0, gb,
                     orow, gb, xr, ld, n)


cdef void layers_reduce(const LayerCtx* L, const unsigned char* run,
                        double* gs) noexcept nogil:
    """Add each layer's weight and bias gradients (the sums its backward
    left in the last column chunk) to the scalar gradients."""
    cdef int li, q
    cdef const int* m
    cdef const int* w
    cdef const double* sm
    for li in range(L.n):
        if run[li]:
            m = L.meta + li * LM_SIZE
            # the weights then the biases, as the slots W then B
            w = L.slots + m[LM_W]
            sm = L.sums + m[LM_LN] // FG_LANES
            for q in range(m[LM_H] * m[LM_K] + m[LM_H]):
                gs[w[q]] += sm[q]
