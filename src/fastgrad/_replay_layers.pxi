# Stages 2 and 3 for dense layers: finding them in the batched tape, and
# running them (the C kernels are in _replay_gemm.h / _replay_gemm_body.h,
# the activation epilogues in _replay_epilogue.pxi).
# (included by _replay.pyx; see the stage list in its docstring)
#
# What is recognised is what the graph computes, not how the sum was spelled.
# A *dot chain* is a neuron's sum of products s_k * x_k (s_k a scalar slot:
# a parameter or a scalar result; x_k a batched row), each running sum read
# by nothing but the next link, starting
#   * at a scalar (its bias, micrograd's ``sum(..., self.b)``):  b + s0*x0
#     (a fused mul-add with a scalar accumulator);
#   * at a constant (Python's ``sum()`` starts at the int 0): 0 + s0*x0, an
#     add-constant node on the first product (0 + p turns p = -0.0 into
#     +0.0; the kernel's accumulator starts at that constant);
#   * at its first product (a hand-written ``act = w[0]*x[0]; act = act +
#     ...``): the accumulator starts at -0.0, which is exact (-0.0 + p == p
#     for every p, -0.0 included);
# in either operand order (``w*x``, ``x*w``).  A bias added after the sum
# (``sum(...) + b``, ``b + sum(...)``) is the row's *post* add (rows without
# one add -0.0: exact).  Then the *epilogue*: the chain of unary / constant
# ops (relu, tanh, sigmoid, exp, log, the user's ``1/(1+(-z).exp())`` ...)
# that each read only the previous result, as far as every neuron of the
# layer applies the same ops with the same constants.
#
# Chains that read the same batched rows x0..x(K-1), in the same order, each
# row once, form a *layer*: H chains over K rows, Z = init + W @ X (+ post),
# Y = epilogue(Z), with W the (H, K) scalars read at every replay.
#
# In the training tape a layer is one OP_LAYER instruction: forward is one
# matrix kernel (each output summed in the chain's order: the same floats as
# the chain), then the epilogue (_replay_epilogue.pxi: op_forward in order,
# the same floats as eager); backward one pass: the incoming gradient rows
# through the epilogue's op_backward in reverse (a relu alone: the kernel's
# mask), the weight and bias gradients as batch sums (FG_LANES partial sums
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
    LM_ACT = 2    # 1: the epilogue is exactly one relu (the kernels' fast path)
    LM_X = 3      # offset of the K input rows in l_rows
    LM_O = 4      # offset of the H output rows in l_rows
    LM_W = 5      # offset of the H*K weight slots in l_slots (row-major)
    LM_B = 6      # offset of the H start slots in l_slots (-1: the row starts
                  # at the constant l_init[LM_INIT + i])
    LM_PW = 7     # offset of the packed W panel in l_pw, then H start values
                  # (then H post values when LM_BL >= 0); the backward reads
                  # W^T from it too (fg_gemm_rows' trans)
    LM_LN = 8     # offset of the weight (H*K) then bias (H) lanes in l_lanes
                  # (l_sums: the same at LM_LN / FG_LANES, one sum each)
    LM_BL = 9     # offset of the H post-add slots in l_slots (-1 in a row
                  # without one), or -1: no row has one
    LM_Z = 10     # offset of H pre-activation rows in l_rows (the epilogue's
                  # backward recomputes from them), or -1: none stored
    LM_EP = 11    # offset of the epilogue's ops in l_ep (op codes) / l_epc
                  # (their constants)
    LM_NEP = 12   # number of epilogue ops
    LM_INIT = 13  # offset of the H start constants in l_init
    LM_SIZE = 14

# ops an epilogue may hold: the unary and constant ops of the rules table
# (op codes OP_ADDC .. N_PURE_OPS - 1), at most MAX_EPILOGUE of them
cdef enum:
    MAX_EPILOGUE = 8


cdef inline bint _epilogue_op(int op, int kind) noexcept nogil:
    return kind == K_B and OP_ADDC <= op < N_PURE_OPS


cdef inline bint _needs_operand(int op) noexcept nogil:
    """Whether op_backward of this unary/constant op reads its operand ``a``
    (not only its result): then a layer stores its pre-activation rows."""
    return not (op == OP_ADDC or op == OP_MULC or op == OP_RSUBC
                or op == OP_DIVC or op == OP_RELU or op == OP_TANH
                or op == OP_EXP or op == OP_SIGMOID or op == OP_SQRT)


cdef inline int _round_mr(int m) noexcept nogil:
    return (m + FG_MR - 1) // FG_MR * FG_MR


# -- stage 2: the pass --------------------------------------------------------

cdef inline int _term_x(int op, int kind, int a, int b) noexcept:
    """The batched row of a chain term's product (-1: the instruction adds no
    term: a start constant)."""
    if op == OP_FMULADD:
        return b
    if op == OP_MUL:
        return b if kind == K_SB else a
    return -1


cdef inline int _term_s(int op, int kind, int a, int b, int s) noexcept:
    """The scalar slot of a chain term's product."""
    if op == OP_FMULADD:
        return s
    return a if kind == K_SB else b


cdef object _find_layers(Program prog, list b_op, list b_kind, list b_out,
                         list b_a, list b_b, list b_s, list b_c, int n_in,
                         set o_rows):
    """Rewrite the (fused) batched tape with OP_LAYER instructions.

    Edits the lists in place and sets the Program's layer tables; returns a
    tuple (dict old row -> new row, number of batched rows) -- rows are
    renumbered, a layer's stored pre-activations get rows of their own --
    or None when the tape has no layer (nothing changed).  Linear in the tape's size: typed arrays per
    instruction, Python objects only per chain and per layer.
    """
    cdef int n = len(b_op), nr = n_in + len(b_op)
    prog._found = {"chains": 0, "in_layers": 0, "repeating": 0}
    if n == 0:
        return None
    cdef const unsigned char[::1] op = np.array(b_op, np.uint8)
    cdef const unsigned char[::1] kind = np.array(b_kind, np.uint8)
    cdef const int[::1] a = np.array(b_a, np.int32)
    cdef const int[::1] b = np.array(b_b, np.int32)
    cdef const int[::1] s = np.array(b_s, np.int32)
    cdef const double[::1] c = np.array(b_c, np.float64)
    cdef int[::1] uses = np.zeros(nr, np.int32)
    cdef int[::1] reader = np.full(nr, -1, np.int32)
    cdef unsigned char[::1] is_out = np.zeros(nr, np.uint8)
    # chains: the chain whose current last instruction is k, each
    # instruction's predecessor in its chain; per chain (at most n of them):
    # first and last instruction, term count, start slot (-1: constant)
    cdef int[::1] chain_at = np.full(n, -1, np.int32)
    cdef int[::1] prev = np.full(n, -1, np.int32)
    cdef int[::1] ch_end = np.empty(n, np.int32)
    cdef int[::1] ch_K = np.empty(n, np.int32)
    cdef int[::1] ch_slot = np.empty(n, np.int32)
    cdef double[::1] ch_init = np.empty(n, np.float64)
    # after the chains: post-add slot, last absorbed instruction, epilogue
    cdef int[::1] ch_post, ch_last, ch_nep, ch_ep0
    cdef int[::1] seen = np.full(nr, -1, np.int32)
    cdef int nch = 0, k, m, ch, row, x, t, q, g0, nep, kk, i
    cdef unsigned long long h
    cdef int o, kd
    for row in o_rows:
        is_out[row] = 1
    for k in range(n):
        if kind[k] != K_SB:
            uses[a[k]] += 1
            reader[a[k]] = k
        if kind[k] == K_BB or kind[k] == K_SB:
            uses[b[k]] += 1
            reader[b[k]] = k
    # -- dot chains, in tape order (a link comes after the one it extends)
    for k in range(n):
        o = op[k]
        kd = kind[k]
        if (o == OP_FMULADD and kd == K_SB) or (o == OP_MUL and (kd == K_SB or kd == K_BS)):
            # a new chain: a scalar start b + s*x, or a lone product s*x
            # (starting at -0.0: exact)
            chain_at[k] = nch
            ch_end[nch] = k
            ch_K[nch] = 1
            ch_slot[nch] = a[k] if o == OP_FMULADD else -1
            ch_init[nch] = 0.0 if o == OP_FMULADD else -0.0
            nch += 1
            continue
        if o == OP_FMULADD or (o == OP_ADDC and kd == K_B):
            row = a[k]
            m = row - n_in
            if m < 0 or chain_at[m] < 0 or uses[row] != 1 or is_out[row]:
                continue
            ch = chain_at[m]
            if o == OP_ADDC:
                # c + (first product): the sum starts at the constant c (the
                # int 0 of Python's sum(): 0 + p0); only right after a lone
                # product -- later it is an epilogue op
                if ch_K[ch] != 1 or ch_slot[ch] >= 0 or op[m] != OP_MUL:
                    continue
                ch_init[ch] = c[k]
            else:
                ch_K[ch] += 1
            chain_at[m] = -1
            chain_at[k] = ch
            prev[k] = m
            ch_end[ch] = k
    prog._found["chains"] = nch
    if nch == 0:
        return None
    # -- each chain's post add and epilogue ops
    ch_post = np.full(nch, -1, np.int32)
    ch_last = np.empty(nch, np.int32)
    ch_nep = np.zeros(nch, np.int32)
    ch_ep0 = np.empty(nch, np.int32)
    cdef int[::1] ep_instr = np.empty(nch * MAX_EPILOGUE + 1, np.int32)
    for ch in range(nch):
        k = ch_end[ch]
        row = n_in + k
        if uses[row] == 1 and not is_out[row]:
            m = reader[row]
            if op[m] == OP_ADD and kind[m] == K_BS:
                ch_post[ch] = b[m]
                k = m
            elif op[m] == OP_ADD and kind[m] == K_SB:
                ch_post[ch] = a[m]
                k = m
        ch_ep0[ch] = ch * MAX_EPILOGUE
        nep = 0
        row = n_in + k
        while nep < MAX_EPILOGUE and uses[row] == 1 and not is_out[row]:
            m = reader[row]
            if not _epilogue_op(op[m], kind[m]):
                break
            ep_instr[ch * MAX_EPILOGUE + nep] = m
            nep += 1
            k = m
            row = n_in + k
        ch_nep[ch] = nep
        ch_last[ch] = k
    # -- layers: chains over the same rows, each row once (grouped by a hash
    # of the row sequence, then compared)
    cdef int[::1] xs_of = np.empty(n, np.int32)     # each chain's rows, in order
    cdef int[::1] xs_off = np.empty(nch + 1, np.int32)
    cdef int[::1] wslot = np.empty(n, np.int32)     # and its weights' slots
    cdef dict groups = {}
    cdef list members
    cdef bint same
    xs_off[0] = 0
    for ch in range(nch):
        t = xs_off[ch] + ch_K[ch]
        xs_off[ch + 1] = t
        k = ch_end[ch]
        while k >= 0:                       # walk back: terms last to first
            x = _term_x(op[k], kind[k], a[k], b[k])
            if x >= 0:
                t -= 1
                xs_of[t] = x
                wslot[t] = _term_s(op[k], kind[k], a[k], b[k], s[k])
            k = prev[k]
    for ch in range(nch):
        h = 1469598103934665603ULL
        same = True                          # the rows are distinct
        for t in range(xs_off[ch], xs_off[ch + 1]):
            x = xs_of[t]
            if seen[x] == ch:
                same = False
            seen[x] = ch
            h = (h ^ <unsigned long long>x) * 1099511628211ULL
        if not same:
            prog._found["repeating"] += 1
            continue
        key = (ch_K[ch], h)
        members = groups.get(key)
        if members is None:
            groups[key] = [[ch]]
            continue
        for g in members:                   # a hash collision: compare
            g0 = g[0]
            same = True
            for t in range(ch_K[ch]):
                if xs_of[xs_off[ch] + t] != xs_of[xs_off[g0] + t]:
                    same = False
                    break
            if same:
                g.append(ch)
                break
        else:
            members.append([ch])
    layers = [g for members in groups.values() for g in members
              if len(g) > 1 or ch_K[g[0]] > 1]
    if not layers:
        return None
    layers.sort(key=lambda g: g[0])
    prog._found["in_layers"] = sum(len(g) for g in layers)
    # -- per layer: the epilogue every chain shares (the longest common
    # prefix of op codes and constant bits); the absorbed instructions
    absorbed = bytearray(n)
    anchor = {}                       # first instruction of a layer -> layer
    l_nep = []
    l_z = []                          # per layer: stores its pre-activations
    l_outs = []                       # per layer: the (old) rows it produces
    for nl in range(len(layers)):
        g = layers[nl]
        nep = MAX_EPILOGUE
        g0 = g[0]
        for ch in g:
            nep = min(nep, ch_nep[ch])
        for ch in g:
            for q in range(nep):
                k = ep_instr[ch_ep0[ch] + q]
                kk = ep_instr[ch_ep0[g0] + q]
                if op[k] != op[kk] or _bits(c[k]) != _bits(c[kk]):
                    nep = q
                    break
        l_nep.append(nep)
        l_z.append(nep >= 2 or (nep == 1 and _needs_operand(op[ep_instr[ch_ep0[g0]]])))
        outs = []
        first = n
        for ch in g:
            # the last instruction kept in the layer: epilogue op nep - 1,
            # else the post add, else the chain's end
            if nep > 0:
                k = ep_instr[ch_ep0[ch] + nep - 1]
            elif ch_post[ch] >= 0:
                k = reader[n_in + ch_end[ch]]
            else:
                k = ch_end[ch]
            outs.append(n_in + k)
            for q in range(nep):
                absorbed[ep_instr[ch_ep0[ch] + q]] = 1
            if ch_post[ch] >= 0:
                absorbed[reader[n_in + ch_end[ch]]] = 1
            k = ch_end[ch]
            while k >= 0:
                absorbed[k] = 1
                if k < first:
                    first = k
                k = prev[k]
        l_outs.append(outs)
        anchor[first] = nl
    # -- schedule: original order, an item waits until the rows it reads exist
    ready = bytearray(nr)
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
                g0 = layers[-1 - it][0]
                reads = list(xs_of[xs_off[g0]:xs_off[g0 + 1]])
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
    # -- renumber rows and write the new tape; a layer's stored
    # pre-activation rows (if any) follow its output rows
    new_row = {}
    for row in range(n_in):
        new_row[row] = row
    nxt = n_in
    zbase = {}
    for it in order:
        for row in ([n_in + it] if it >= 0 else l_outs[-1 - it]):
            new_row[row] = nxt
            nxt += 1
        if it < 0 and l_z[-1 - it]:
            zbase[-1 - it] = nxt
            nxt += len(layers[-1 - it])
    ops, kinds, outs_, oas, obs, oss, ocs = [], [], [], [], [], [], []
    meta, lrows, lslots, linit, lep, lepc = [], [], [], [], [], []
    pw_size = ln_size = 0
    for it in order:
        if it >= 0:
            k = it
            ops.append(b_op[k])
            kinds.append(b_kind[k])
            outs_.append(new_row[n_in + k])
            oas.append(b_a[k] if b_kind[k] == K_SB else new_row[b_a[k]])
            obs.append(new_row[b_b[k]] if b_kind[k] in (K_BB, K_SB) else b_b[k])
            oss.append(b_s[k])
            ocs.append(b_c[k])
            continue
        nl = -1 - it
        g = layers[nl]
        g0 = g[0]
        H = len(g)
        K = ch_K[g0]
        nep = l_nep[nl]
        has_post = any(ch_post[ch] >= 0 for ch in g)
        act = 1 if (nep == 1 and op[ep_instr[ch_ep0[g0]]] == OP_RELU) else 0
        ops.append(OP_LAYER)
        kinds.append(K_B)
        outs_.append(new_row[l_outs[nl][0]])
        oas.append(len(meta) // LM_SIZE)
        obs.append(-1)
        oss.append(-1)
        ocs.append(0.0)
        x_off = len(lrows)
        lrows += [new_row[xs_of[t]] for t in range(xs_off[g0], xs_off[g0 + 1])]
        lrows += [new_row[row] for row in l_outs[nl]]
        z_off = -1
        if nl in zbase:
            z_off = len(lrows)
            lrows += list(range(zbase[nl], zbase[nl] + H))
        w_off = len(lslots)
        for ch in g:
            lslots += list(wslot[xs_off[ch]:xs_off[ch + 1]])
        b_off = len(lslots)
        lslots += [ch_slot[ch] for ch in g]
        bl_off = -1
        if has_post:
            bl_off = len(lslots)
            lslots += [ch_post[ch] for ch in g]
        init_off = len(linit)
        linit += [ch_init[ch] for ch in g]
        ep_off = len(lep)
        for q in range(nep):
            k = ep_instr[ch_ep0[g0] + q]
            lep.append(op[k])
            lepc.append(c[k])
        meta += [H, K, act, x_off, x_off + K, w_off, b_off, pw_size, ln_size,
                 bl_off, z_off, ep_off, nep, init_off]
        pw_size += _round_mr(H) * K + H * (2 if has_post else 1)
        ln_size += (H * K + H) * FG_LANES
    b_op[:] = ops
    b_kind[:] = kinds
    b_out[:] = outs_
    b_a[:] = oas
    b_b[:] = obs
    b_s[:] = oss
    b_c[:] = ocs
    prog.nlayers = len(meta) // LM_SIZE
    prog.l_meta = np.array(meta, np.int32)
    prog.l_rows = np.array(lrows, np.int32)
    prog.l_slots = np.array(lslots, np.int32)
    prog.l_init = np.array(linit + [0.0], np.float64)
    prog.l_ep = np.array(lep + [0], np.int32)
    prog.l_epc = np.array(lepc + [0.0], np.float64)
    prog.l_pw = np.zeros(pw_size + 1, np.float64)
    prog.l_lanes = np.zeros(ln_size + 1, np.float64)
    prog.l_sums = np.zeros(ln_size // FG_LANES + 1, np.float64)
    return new_row, nxt


cdef inline unsigned long long _bits(double v) noexcept:
    """The bits of a double (constants compare by bits: -0.0 != 0.0)."""
    cdef unsigned long long u
    memcpy(&u, &v, sizeof(double))
    return u


# -- stage 3: running layers --------------------------------------------------

cdef void layers_pack(LayerCtx* L, const double* vs) noexcept nogil:
    """Gather this replay's weights, start values (and post adds) into the
    packed panels."""
    cdef int li, H, K, i, k, r, sl
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
            sl = L.slots[m[LM_B] + i]
            p[i] = vs[sl] if sl >= 0 else L.init[m[LM_INIT] + i]
        if m[LM_BL] >= 0:
            p += H
            for i in range(H):
                sl = L.slots[m[LM_BL] + i]
                # -0.0: x + -0.0 == x for every x (a row without a post add)
                p[i] = vs[sl] if sl >= 0 else -0.0


cdef void layer_forward(const LayerCtx* L, int li, const double* vs, double* vb,
                        Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K], act = m[LM_ACT], i, k, sl, q
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    cdef const int* zrow = L.rows + m[LM_Z] if m[LM_Z] >= 0 else orow
    cdef const int* w = L.slots + m[LM_W]
    cdef const double* post
    cdef Py_ssize_t j
    cdef double z
    if L.pw != NULL:
        post = (L.pw + m[LM_PW] + _round_mr(H) * K + H) if m[LM_BL] >= 0 else NULL
        # the kernel applies a relu alone (no post add); anything else is the
        # epilogue's: the post add, then the ops (on the rows in cache)
        fg_gemm_rows(H, K, L.pw + m[LM_PW], 0, L.pw + m[LM_PW] + _round_mr(H) * K,
                     NULL, act and post == NULL, vb, xr, vb, zrow, ld, n)
        if post != NULL or (m[LM_NEP] > 0 and not act):
            epilogue_forward(H, m[LM_NEP], L.ep + m[LM_EP], L.epc + m[LM_EP],
                             post, vb, zrow, orow, ld, n)
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
            vb[orow[i] * ld + j] = z


cdef void layer_backward(const LayerCtx* L, int li, bint want_w, bint want_x,
                         const double* vb, double* gb, Py_ssize_t ld,
                         Py_ssize_t n) noexcept nogil:
    cdef const int* m = L.meta + li * LM_SIZE
    cdef int H = m[LM_H], K = m[LM_K]
    cdef const int* xr = L.rows + m[LM_X]
    cdef const int* orow = L.rows + m[LM_O]
    cdef double* ln = L.lanes + m[LM_LN]
    fg_grad_in(H, L.rmode + m[LM_O], m[LM_ACT], vb, gb, orow, ld, n)
    if m[LM_NEP] > 0 and not m[LM_ACT]:
        # dY -> dZ in place, through the epilogue's rules in reverse
        epilogue_backward(H, m[LM_NEP], L.ep + m[LM_EP], L.epc + m[LM_EP],
                          L.rmode + m[LM_O], vb,
                          L.rows + m[LM_Z] if m[LM_Z] >= 0 else NULL, orow, gb,
                          ld, n)
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
    cdef int li, q, H, HK, sl
    cdef const int* m
    cdef const int* w
    cdef const double* sm
    for li in range(L.n):
        if run[li]:
            m = L.meta + li * LM_SIZE
            H = m[LM_H]
            HK = H * m[LM_K]
            w = L.slots + m[LM_W]
            sm = L.sums + m[LM_LN] // FG_LANES
            for q in range(HK):
                gs[w[q]] += sm[q]
            # a bias's gradient is the batch sum of dZ wherever it is added
            for q in range(H):
                sl = L.slots[m[LM_B] + q]
                if sl >= 0:
                    gs[sl] += sm[HK + q]
            if m[LM_BL] >= 0:
                for q in range(H):
                    sl = L.slots[m[LM_BL] + q]
                    if sl >= 0:
                        gs[sl] += sm[HK + q]
