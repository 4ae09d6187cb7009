# Stage 2 for dense layers: finding them in the batched tape (running them,
# stage 3, is _replay_layer_kernels.pxi with the C kernels of _replay_gemm.h
# and the activation epilogues of _replay_epilogue.pxi).
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
# In the training tape a layer is one OP_LAYER instruction (its forward and
# backward: _replay_layer_kernels.pxi).
# Forward-only replays (predict) keep the OP_DOT tape: bit-identical to eager.

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
                  # (then H post values when LM_BL >= 0), then W^T packed the
                  # same way for the backward's input gradient (_wt_off)
    LM_LN = 8     # offset of the layer's weight (and bias, column K) gradient
                  # sums in l_lanes / l_sums: H rows of fg_wgrad_ld(K)
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


cdef inline Py_ssize_t _wt_off(const int* m) noexcept nogil:
    """Offset of a layer's W^T panels from its LM_PW (after W's panels,
    the start values and the post values)."""
    return (<Py_ssize_t>_round_mr(m[LM_H]) * m[LM_K]
            + m[LM_H] * (2 if m[LM_BL] >= 0 else 1))


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


cdef inline unsigned long long _bits(double v) noexcept:
    """The bits of a double (constants compare by bits: -0.0 != 0.0)."""
    cdef unsigned long long u
    memcpy(&u, &v, sizeof(double))
    return u


cdef object _find_layers(Program prog, const unsigned char[::1] op,
                         const unsigned char[::1] kind, const int[::1] a,
                         const int[::1] b, const int[::1] s, const double[::1] c,
                         int n_in, const unsigned char[::1] is_out,
                         const int[::1] nx, list o_slot, list o_bat):
    """The training tape with OP_LAYER instructions.

    Reads the fused tape (instruction k writes row n_in + k) and sets the
    Program's layer tables and its training tape (b_op, b_kind, b_out, b_a,
    b_b, b_s, b_c, b_nx, each with one entry of padding; n_batched,
    n_binstr) -- rows are renumbered (also in the n-ary operand runs ``nx``
    and the batched outputs' rows in ``o_slot``), a layer's stored
    pre-activations get rows of their own; returns True, or None (nothing
    set) when the tape has no layer.  Linear in the tape: typed arrays per
    instruction, Python objects per chain and layer; the int scratch in
    three arrays (see _carve), one per phase.
    """
    cdef Py_ssize_t n = op.shape[0], off = 0
    cdef int nr = n_in + <int>n
    prog._found = {"chains": 0, "in_layers": 0, "repeating": 0}
    if n == 0:
        return None
    cdef int[::1] ws = _np_empty(7 * (nr + 1) + 10 * (n + 1), _I32)
    cdef int[::1] uses = _carve(ws, &off, nr + 1, 0)
    cdef int[::1] reader = _carve(ws, &off, nr + 1, -1)
    # chains: the chain whose current last instruction is k, each
    # instruction's predecessor in its chain; per chain (at most n of them):
    # last instruction, term count, start slot (-1: constant), start value
    cdef int[::1] chain_at = _carve(ws, &off, n + 1, -1)
    cdef int[::1] prev = _carve(ws, &off, n + 1, -1)
    cdef int[::1] ch_end = _carve(ws, &off, n + 1, NOFILL)
    cdef int[::1] ch_K = _carve(ws, &off, n + 1, NOFILL)
    cdef int[::1] ch_slot = _carve(ws, &off, n + 1, NOFILL)
    cdef double[::1] ch_init = _np_empty(n + 1, _F64)
    cdef int[::1] seen = _carve(ws, &off, nr + 1, -1)
    cdef int nch = 0, k, m, ch, row, x, t, q, g0 = 0, nep, kk, i, o, kd, H, K
    cdef unsigned long long h
    for k in range(n):
        if kind[k] == K_N:
            for t in range(b[k] + 1, b[k] + 1 + nx[b[k]]):
                if nx[t] >= 0:
                    uses[nx[t]] += 1
                    reader[nx[t]] = k
            continue
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
    cdef Py_ssize_t off2 = 0
    cdef int[::1] ws2 = _np_empty(nch * (MAX_EPILOGUE + 3) + 2, _I32)
    cdef int[::1] ch_post = _carve(ws2, &off2, nch, -1)
    cdef int[::1] ch_nep = _carve(ws2, &off2, nch, 0)
    cdef int[::1] ep_instr = _carve(ws2, &off2, nch * MAX_EPILOGUE + 1, NOFILL)
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
        nep = 0
        row = n_in + k
        while nep < MAX_EPILOGUE and uses[row] == 1 and not is_out[row]:
            m = reader[row]
            if not _epilogue_op(op[m], kind[m]):
                break
            ep_instr[ch * MAX_EPILOGUE + nep] = m
            nep += 1
            row = n_in + m
        ch_nep[ch] = nep
    # -- layers: chains over the same rows, each row once (grouped by a hash
    # of the row sequence, then compared)
    cdef int[::1] xs_of = _carve(ws, &off, n + 1, NOFILL)    # each chain's rows, in order
    cdef int[::1] wslot = _carve(ws, &off, n + 1, NOFILL)    # and its weights' slots
    cdef int[::1] xs_off = _carve(ws2, &off2, nch + 1, NOFILL)
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
    cdef int nl_total = len(layers), nl, li
    # -- per layer: the epilogue every chain shares (the longest common
    # prefix of op codes and constant bits); the absorbed instructions; the
    # rows the layer produces (per chain: its last absorbed instruction's)
    cdef int[::1] absorbed = _carve(ws, &off, n + 1, 0)
    cdef int[::1] anchor = _carve(ws, &off, n + 1, -1)  # first instruction -> layer
    cdef Py_ssize_t n_items = n + nl_total, off3 = 0, n_lout = prog._found["in_layers"]
    cdef int[::1] ws3 = _np_empty(4 * nl_total + n_lout + 2 + 4 * n_items + nr + 1, _I32)
    cdef int[::1] l_nep = _carve(ws3, &off3, nl_total, NOFILL)
    cdef int[::1] l_z = _carve(ws3, &off3, nl_total, 0)
    cdef int[::1] l_out0 = _carve(ws3, &off3, nl_total + 1, NOFILL)  # offsets in l_outs
    cdef int[::1] l_outs = _carve(ws3, &off3, n_lout + 1, NOFILL)
    cdef int first, nout = 0
    for nl in range(nl_total):
        g = layers[nl]
        g0 = g[0]
        nep = MAX_EPILOGUE
        for ch in g:
            nep = min(nep, ch_nep[ch])
        for ch in g:
            for q in range(nep):
                k = ep_instr[ch * MAX_EPILOGUE + q]
                kk = ep_instr[g0 * MAX_EPILOGUE + q]
                if op[k] != op[kk] or _bits(c[k]) != _bits(c[kk]):
                    nep = q
                    break
        l_nep[nl] = nep
        l_z[nl] = nep >= 2 or (nep == 1 and _needs_operand(op[ep_instr[g0 * MAX_EPILOGUE]]))
        l_out0[nl] = nout
        first = <int>n
        for ch in g:
            # the last instruction kept in the layer: epilogue op nep - 1,
            # else the post add, else the chain's end
            if nep > 0:
                k = ep_instr[ch * MAX_EPILOGUE + nep - 1]
            elif ch_post[ch] >= 0:
                k = reader[n_in + ch_end[ch]]
            else:
                k = ch_end[ch]
            l_outs[nout] = n_in + k
            nout += 1
            for q in range(nep):
                absorbed[ep_instr[ch * MAX_EPILOGUE + q]] = 1
            if ch_post[ch] >= 0:
                absorbed[reader[n_in + ch_end[ch]]] = 1
            k = ch_end[ch]
            while k >= 0:
                absorbed[k] = 1
                if k < first:
                    first = k
                k = prev[k]
        anchor[first] = nl
    l_out0[nl_total] = nout
    # -- schedule: original order, an item waits until the rows it reads
    # exist.  Items: instruction k, or layer nl as n + nl; a waiting item is
    # on its row's FIFO list (wait_head / wait_tail / wait_next)
    cdef int[::1] ready = _carve(ws, &off, nr + 1, 0)
    cdef int[::1] pos = _carve(ws3, &off3, n_items, 0)
    cdef int[::1] wait_head = _carve(ws, &off, nr + 1, -1)
    cdef int[::1] wait_tail = _carve(ws, &off, nr + 1, -1)
    cdef int[::1] wait_next = _carve(ws3, &off3, n_items, -1)
    cdef int[::1] stack = _carve(ws3, &off3, n_items, NOFILL)
    cdef int[::1] order = _carve(ws3, &off3, n_items, NOFILL)
    cdef int sp, it, nreads, no = 0, w, rr
    for row in range(n_in):
        ready[row] = 1
    for k in range(n):
        if anchor[k] >= 0:
            it = <int>n + anchor[k]
        elif absorbed[k]:
            continue
        else:
            it = k
        stack[0] = it
        sp = 1
        while sp > 0:
            sp -= 1
            it = stack[sp]
            if it < n and kind[it] == K_N:
                nreads = nx[b[it]]            # (scalar operands are always ready)
            elif it < n:
                nreads = (kind[it] != K_SB) + (kind[it] == K_BB or kind[it] == K_SB)
            else:
                g0 = layers[it - n][0]
                nreads = ch_K[g0]
            t = pos[it]
            while t < nreads:
                if it < n and kind[it] == K_N:
                    rr = nx[b[it] + 1 + t]
                    if rr < 0:
                        t += 1
                        continue
                elif it < n:
                    rr = a[it] if (t == 0 and kind[it] != K_SB) else b[it]
                else:
                    rr = xs_of[xs_off[g0] + t]
                if not ready[rr]:
                    break
                t += 1
            if t < nreads:
                pos[it] = t
                wait_next[it] = -1
                if wait_head[rr] < 0:
                    wait_head[rr] = it
                else:
                    wait_next[wait_tail[rr]] = it
                wait_tail[rr] = it
                continue
            order[no] = it
            no += 1
            if it < n:
                q = n_in + it
                ready[q] = 1
                w = wait_head[q]
                wait_head[q] = -1
                while w >= 0:
                    stack[sp] = w
                    sp += 1
                    w = wait_next[w]
            else:
                for i in range(l_out0[it - n], l_out0[it - n + 1]):
                    q = l_outs[i]
                    ready[q] = 1
                    w = wait_head[q]
                    wait_head[q] = -1
                    while w >= 0:
                        stack[sp] = w
                        sp += 1
                        w = wait_next[w]
    for row in range(nr):
        if wait_head[row] >= 0:       # cannot happen for a valid tape
            return None
    # -- sizes of the new tape and the layer tables, all known now: each
    # dtype's arrays are slices of one zeroed array (3 NumPy arrays and
    # typed views instead of 18 and 24: a typed view of a NumPy array costs
    # ~1.7k instructions, an array ~2.5k, np.array of a list ~8k)
    cdef Py_ssize_t tot_rows = 0, tot_slots = 0, n_ep = 0
    cdef Py_ssize_t n1 = no + 1, nnx = nx.shape[0], off4 = 0, off5 = 0
    for nl in range(nl_total):
        g = layers[nl]
        H = len(g)
        K = ch_K[g[0]]
        tot_rows += K + H + (H if l_z[nl] else 0)
        tot_slots += H * K + H
        for ch in g:
            if ch_post[ch] >= 0:
                tot_slots += H
                break
        n_ep += l_nep[nl]
    cdef int[::1] t_i32 = _np_zeros(4 * n1 + (nnx + 1) + tot_rows + tot_slots
                                    + nl_total * LM_SIZE + n_ep + 1, _I32)
    cdef unsigned char[::1] t_u8 = _np_zeros(2 * n1, _U8)
    cdef double[::1] t_f64 = _np_zeros(n1 + n_lout + 1 + n_ep + 1, _F64)
    # the new tape, each field with its one entry of padding (0)
    cdef unsigned char[::1] t_op = _carve_u8(t_u8, &off5, n1)
    cdef unsigned char[::1] t_kind = _carve_u8(t_u8, &off5, n1)
    cdef int[::1] t_out = _carve(t_i32, &off4, n1, NOFILL)
    cdef int[::1] t_a = _carve(t_i32, &off4, n1, NOFILL)
    cdef int[::1] t_b = _carve(t_i32, &off4, n1, NOFILL)
    cdef int[::1] t_s = _carve(t_i32, &off4, n1, NOFILL)
    cdef int[::1] t_nx = _carve(t_i32, &off4, nnx + 1, NOFILL)
    # the layer tables (l_init, l_ep and l_epc with one entry of padding)
    cdef int[::1] lrows = _carve(t_i32, &off4, tot_rows, NOFILL)
    cdef int[::1] lslots = _carve(t_i32, &off4, tot_slots, NOFILL)
    cdef int[::1] lmeta = _carve(t_i32, &off4, nl_total * LM_SIZE, NOFILL)
    cdef int[::1] lep = _carve(t_i32, &off4, n_ep + 1, NOFILL)
    off5 = 0
    cdef double[::1] t_c = _carve_f64(t_f64, &off5, n1)
    cdef double[::1] linit = _carve_f64(t_f64, &off5, n_lout + 1)
    cdef double[::1] lepc = _carve_f64(t_f64, &off5, n_ep + 1)
    # -- renumber rows and write the new tape; a layer's stored
    # pre-activation rows (if any) follow its output rows
    cdef int[::1] new_row = _carve(ws3, &off3, nr + 1, -1)
    cdef int[::1] zbase = _carve(ws3, &off3, nl_total, -1)
    cdef int nxt = n_in
    for row in range(n_in):
        new_row[row] = row
    for i in range(no):
        it = order[i]
        if it < n:
            new_row[n_in + it] = nxt
            nxt += 1
        else:
            nl = it - <int>n
            for q in range(l_out0[nl], l_out0[nl + 1]):
                new_row[l_outs[q]] = nxt
                nxt += 1
            if l_z[nl]:
                zbase[nl] = nxt
                nxt += l_out0[nl + 1] - l_out0[nl]
    cdef int n_lrows = 0, n_lslots = 0, pw_size = 0, ln_size = 0, x_off, z_off
    cdef int w_off, b_off, bl_off, init_off, ep_off, act, n_init = 0, n_lep = 0
    cdef bint has_post
    nl = 0
    for i in range(no):
        it = order[i]
        if it < n:
            k = it
            kd = kind[k]
            t_op[i] = op[k]
            t_kind[i] = kd
            t_out[i] = new_row[n_in + k]
            t_a[i] = a[k] if (kd == K_SB or kd == K_N) else new_row[a[k]]
            t_b[i] = new_row[b[k]] if (kd == K_BB or kd == K_SB) else b[k]
            t_s[i] = s[k]
            t_c[i] = c[k]
            continue
        li = it - <int>n                 # the layer; its entry in l_meta: nl
        g = layers[li]
        g0 = g[0]
        H = len(g)
        K = ch_K[g0]
        nep = l_nep[li]
        has_post = False
        for ch in g:
            if ch_post[ch] >= 0:
                has_post = True
        act = 1 if (nep == 1 and op[ep_instr[g0 * MAX_EPILOGUE]] == OP_RELU) else 0
        t_op[i] = OP_LAYER
        t_kind[i] = K_B
        t_out[i] = new_row[l_outs[l_out0[li]]]
        t_a[i] = nl
        t_b[i] = -1
        t_s[i] = -1
        t_c[i] = 0.0
        x_off = n_lrows
        for t in range(K):
            lrows[n_lrows + t] = new_row[xs_of[xs_off[g0] + t]]
        for q in range(H):
            lrows[n_lrows + K + q] = new_row[l_outs[l_out0[li] + q]]
        n_lrows += K + H
        z_off = -1
        if l_z[li]:
            z_off = n_lrows
            for q in range(H):
                lrows[n_lrows + q] = zbase[li] + q
            n_lrows += H
        w_off = n_lslots
        b_off = w_off + H * K
        q = 0
        for ch in g:
            for t in range(xs_off[ch], xs_off[ch + 1]):
                lslots[n_lslots] = wslot[t]
                n_lslots += 1
            lslots[b_off + q] = ch_slot[ch]
            q += 1
        n_lslots += H
        bl_off = -1
        if has_post:
            bl_off = n_lslots
            q = 0
            for ch in g:
                lslots[bl_off + q] = ch_post[ch]
                q += 1
            n_lslots += H
        init_off = n_init
        for ch in g:
            linit[n_init] = ch_init[ch]
            n_init += 1
        ep_off = n_lep
        for q in range(nep):
            k = ep_instr[g0 * MAX_EPILOGUE + q]
            lep[n_lep] = op[k]
            lepc[n_lep] = c[k]
            n_lep += 1
        m = nl * LM_SIZE
        lmeta[m + LM_H] = H
        lmeta[m + LM_K] = K
        lmeta[m + LM_ACT] = act
        lmeta[m + LM_X] = x_off
        lmeta[m + LM_O] = x_off + K
        lmeta[m + LM_W] = w_off
        lmeta[m + LM_B] = b_off
        lmeta[m + LM_PW] = pw_size
        lmeta[m + LM_LN] = ln_size
        lmeta[m + LM_BL] = bl_off
        lmeta[m + LM_Z] = z_off
        lmeta[m + LM_EP] = ep_off
        lmeta[m + LM_NEP] = nep
        lmeta[m + LM_INIT] = init_off
        nl += 1
        pw_size += _round_mr(H) * K + H * (2 if has_post else 1) + _round_mr(K) * H
        ln_size += H * fg_wgrad_ld(K)
    if (nl != nl_total or n_lrows != tot_rows or n_lslots != tot_slots
            or n_init != n_lout or n_lep != n_ep):
        raise SystemError("compile: internal error (layer table sizes)")
    prog.nlayers = nl
    prog.l_meta = lmeta
    prog.l_rows = lrows
    prog.l_slots = lslots
    prog.l_init = linit
    prog.l_ep = lep
    prog.l_epc = lepc
    prog.l_pw = _np_zeros(pw_size + 1, _F64)
    prog.l_lanes = _np_zeros(ln_size + 1, _F64)
    prog.l_sums = _np_zeros(ln_size + 1, _F64)
    if nnx > 0:
        memcpy(&t_nx[0], &nx[0], nnx * sizeof(int))
    _nx_remap(t_nx[:nnx], new_row)
    # the training tape (typed views: no NumPy array or view per field)
    prog.b_op = t_op
    prog.b_kind = t_kind
    prog.b_out = t_out
    prog.b_a = t_a
    prog.b_b = t_b
    prog.b_s = t_s
    prog.b_c = t_c
    prog.b_nx = t_nx
    prog.n_batched = nxt
    prog.n_binstr = no
    # the outputs' rows, renumbered
    for q in range(len(o_slot)):
        if o_bat[q]:
            o_slot[q] = new_row[<int>o_slot[q]]
    return True
