# Stage 2: analysis passes over the recorded tape.
# (included by _replay.pyx; see the stage list in its docstring)
#
# Every pass works on typed arrays, one entry per instruction or row, and is
# linear in the tape (no Python object per instruction).  In the batched
# tape instruction k writes row n_inputs + k until _find_layers renumbers.
# An n-ary instruction (kind K_N) has b = the offset of its operand run in
# ``nx``: (count, operand...), an operand a row r >= 0 or a scalar -1 - slot.

# NumPy's array constructors and dtypes as C globals for the compile's ~40
# small arrays: ``np.empty(n, np.int32)`` looks up two attributes of the
# module and converts a type to a dtype at every call.  This and the forward
# tape's arrays grouped by dtype (_forward_tape): 0.50 -> 0.48 M
# instructions per compile of MLP(2, [1]), 2.55 -> 2.45 M of
# MLP(2, [16, 16, 1]) (callgrind, the demo step, issue 21)
cdef object _np_empty = np.empty
cdef object _np_zeros = np.zeros
cdef object _np_arange = np.arange
cdef object _np_array = np.array
cdef object _U8 = np.dtype(np.uint8)
cdef object _I32 = np.dtype(np.int32)
cdef object _F64 = np.dtype(np.float64)

# ---------------------------------------------------------------------------
# fusion and forward-only dot chains
# ---------------------------------------------------------------------------

cdef Py_ssize_t _fuse(unsigned char[::1] op, unsigned char[::1] kind, int[::1] a,
                      int[::1] b, int[::1] s, double[::1] c, int n_in,
                      const unsigned char[::1] is_out, int[::1] nx,
                      list o_slot, list o_bat) except -1:
    """Fuse ``acc + s*x`` pairs into OP_FMULADD and drop the products.

    Edits the arrays in place (the kept instructions first, renumbered, and
    the rows in the n-ary operand lists ``nx`` and of the batched outputs
    in ``o_slot``); returns the new instruction count.
    """
    cdef Py_ssize_t n = op.shape[0], k, m, i, off = 0
    cdef int[::1] ws = _np_empty(2 * n_in + 3 * n + 3, _I32)    # scratch
    cdef int[::1] uses = _carve(ws, &off, n_in + n + 1, 0)
    cdef int[::1] removed = _carve(ws, &off, n + 1, 0)
    cdef int[::1] new_row = _carve(ws, &off, n_in + n + 1, -1)   # old row -> new
    cdef Py_ssize_t q
    cdef int kd, row, which, acc, sc, x, nrem = 0
    cdef bint acc_bat
    for k in range(n):
        kd = kind[k]
        if kd == K_N:
            for i in range(b[k] + 1, b[k] + 1 + nx[b[k]]):
                if nx[i] >= 0:
                    uses[nx[i]] += 1
            continue
        if kd != K_SB:
            uses[a[k]] += 1
        if kd == K_BB or kd == K_SB:
            uses[b[k]] += 1
    for k in range(n):
        kd = kind[k]
        if op[k] != OP_ADD or kd == K_B or kd == K_N:
            continue
        # the product may be either operand of the sum (a + b == b + a)
        for which in range(1, -1, -1):
            if which == 1 and kd == K_BS or which == 0 and kd == K_SB:
                continue                  # that operand is a scalar
            row = b[k] if which == 1 else a[k]
            m = row - n_in
            if (m < 0 or op[m] != OP_MUL or not (kind[m] == K_SB or kind[m] == K_BS)
                    or uses[row] != 1 or is_out[row] or removed[m]):
                continue
            acc = a[k] if which == 1 else b[k]
            acc_bat = kd == K_BB
            if kind[m] == K_SB:
                sc, x = a[m], b[m]
            else:
                sc, x = b[m], a[m]
            op[k] = OP_FMULADD
            kind[k] = K_BB if acc_bat else K_SB
            a[k] = acc
            b[k] = x
            s[k] = sc
            c[k] = 0.0
            removed[m] = 1
            nrem += 1
            break
    for row in range(n_in):
        new_row[row] = row
    if nrem == 0:
        return n                          # (no row renamed)
    # drop the fused products and renumber the remaining result rows
    i = 0
    for k in range(n):
        if not removed[k]:
            new_row[n_in + k] = n_in + <int>i
            i += 1
    i = 0
    for k in range(n):
        if removed[k]:
            continue
        kd = kind[k]
        op[i] = op[k]
        kind[i] = kd
        a[i] = new_row[a[k]] if (kd != K_SB and kd != K_N) else a[k]
        b[i] = new_row[b[k]] if (kd == K_BB or kd == K_SB) else b[k]
        s[i] = s[k]
        c[i] = c[k]
        i += 1
    _nx_remap(nx, new_row)
    for q in range(len(o_slot)):
        if o_bat[q]:
            o_slot[q] = new_row[<int>o_slot[q]]
    return i


cdef int _nx_remap(int[::1] nx, const int[::1] new_row) except -1:
    """Rows of the n-ary operand runs in ``nx``, renamed by ``new_row``."""
    cdef Py_ssize_t pos = 0, q
    while pos < nx.shape[0]:
        for q in range(pos + 1, pos + 1 + nx[pos]):
            if nx[q] >= 0:
                nx[q] = new_row[nx[q]]
        pos += nx[pos] + 1
    return 0


cdef inline int _nreads(int op, int kind, int ns) noexcept:
    """Number of batched rows a (forward-tape) instruction reads."""
    cdef int r = 0 if kind == K_SB else 1
    if op == OP_DOT:
        return r + ns
    if kind == K_BB or kind == K_SB:
        r += 1
    return r


cdef int _forward_tape(Program prog, const unsigned char[::1] op,
                       const unsigned char[::1] kind, const int[::1] a,
                       const int[::1] b, const int[::1] s, const double[::1] c,
                       list o_slot, list o_bat,
                       const unsigned char[::1] is_out, const int[::1] nx) except -1:
    """The forward-only tape: dot chains merged, rows reused once dead.

    1. A fused mul-add whose batched acc is the result of another fused
       mul-add (or chain) read by nothing else joins that chain; chains of two
       or more terms become one OP_DOT.
    2. Linear-scan row allocation: a result takes a free row (never one of
       its own operands' rows, which are released after it, so no loop reads
       and writes the same row); output rows are never freed.
    """
    cdef Py_ssize_t n = op.shape[0], k, m, i, t, nf = 0, nd = 0, off = 0
    cdef int n_in = prog.n_inputs, nr = n_in + <int>n, row, r, nrows, top = 0
    # the int scratch in one array (see _carve)
    cdef int[::1] ws = _np_empty(5 * (nr + 1) + 3 * (n + 1), _I32)
    cdef int[::1] uses = _carve(ws, &off, nr + 1, 0)
    cdef int[::1] prev = _carve(ws, &off, n + 1, -1)
    cdef int[::1] clen = _carve(ws, &off, n + 1, NOFILL)
    cdef int[::1] gone = _carve(ws, &off, n + 1, 0)
    cdef int kd, L, h, j, nread, q
    for k in range(n + 1):
        clen[k] = 1
    # -- 1. chains
    for k in range(n):
        kd = kind[k]
        if kd == K_N:
            for t in range(b[k] + 1, b[k] + 1 + nx[b[k]]):
                if nx[t] >= 0:
                    uses[nx[t]] += 1
            continue
        if kd != K_SB:
            uses[a[k]] += 1
        if kd == K_BB or kd == K_SB:
            uses[b[k]] += 1
    for k in range(n):
        if op[k] != OP_FMULADD or kind[k] != K_BB:
            continue
        m = a[k] - n_in
        if (m >= 0 and op[m] == OP_FMULADD and uses[a[k]] == 1 and not is_out[a[k]]
                and not gone[m]):
            prev[k] = <int>m
            clen[k] = clen[m] + 1
            gone[m] = 1
    # one array per dtype, the tape's fields slices of their typed views
    # (9 arrays and typed views before; measured effect: see _np_empty)
    # (and the n-ary operand runs, the outputs' slots)
    cdef Py_ssize_t n1 = n + 1, nnx = nx.shape[0], n_out = len(o_slot)
    cdef unsigned char[::1] f_u8 = _np_empty(2 * n1, _U8)
    cdef int[::1] f_i32 = _np_empty(6 * n1 + nnx + 1 + n_out, _I32)
    cdef unsigned char[::1] f_op = f_u8[:n1], f_kind = f_u8[n1:]
    cdef int[::1] f_out = f_i32[:n1], f_a = f_i32[n1:2 * n1], f_b = f_i32[2 * n1:3 * n1]
    cdef int[::1] f_s = f_i32[3 * n1:4 * n1], d_s = f_i32[4 * n1:5 * n1]
    cdef int[::1] d_x = f_i32[5 * n1:6 * n1]
    cdef int[::1] f_nx = f_i32[6 * n1:6 * n1 + nnx + 1]
    cdef int[::1] f_oslot = f_i32[6 * n1 + nnx + 1:]
    cdef double[::1] f_c = _np_empty(n1, _F64)
    for k in range(n):
        if gone[k]:
            continue
        if op[k] == OP_FMULADD and clen[k] > 1:
            L = clen[k]
            h = <int>k
            for t in range(L - 1, -1, -1):     # terms last to first
                d_s[nd + t] = s[h]
                d_x[nd + t] = b[h]
                if t > 0:
                    h = prev[h]
            f_op[nf] = OP_DOT
            f_kind[nf] = kind[h]
            f_a[nf] = a[h]
            f_b[nf] = <int>nd
            f_s[nf] = L
            nd += L
        else:
            f_op[nf] = op[k]
            f_kind[nf] = kind[k]
            f_a[nf] = a[k]
            f_b[nf] = b[k]
            f_s[nf] = s[k]
        f_out[nf] = n_in + <int>k
        f_c[nf] = c[k]
        nf += 1
    # -- 2. rows
    cdef int[::1] last = _carve(ws, &off, nr + 1, -1)
    cdef int[::1] phys = _carve(ws, &off, nr + 1, NOFILL)
    cdef int[::1] freed = _carve(ws, &off, nr + 1, NOFILL)    # a stack of free rows
    cdef int[::1] stamp = _carve(ws, &off, nr + 1, -1)
    # the n-ary operand runs, rows renamed as they are allocated (same
    # offsets), with the tape's one entry of padding
    if nnx > 0:
        memcpy(&f_nx[0], &nx[0], nnx * sizeof(int))
    f_nx[nnx] = 0
    for i in range(nf):
        if f_kind[i] == K_N:
            for t in range(f_b[i] + 1, f_b[i] + 1 + nx[f_b[i]]):
                if nx[t] >= 0:
                    last[nx[t]] = <int>i
            continue
        nread = _nreads(f_op[i], f_kind[i], f_s[i])
        for q in range(nread):
            last[_fread(f_op[i], f_kind[i], f_a[i], f_b[i], &d_x[0], q)] = <int>i
    for row in range(n_in):
        phys[row] = row
    nrows = n_in
    for i in range(nf):
        if top > 0:
            top -= 1
            r = freed[top]
        else:
            r = nrows
            nrows += 1
        # release the rows whose last reader this is (each once), then remap
        if f_kind[i] == K_N:
            for t in range(f_b[i] + 1, f_b[i] + 1 + nx[f_b[i]]):
                row = nx[t]
                if row < 0:
                    continue
                if last[row] == i and not is_out[row] and stamp[row] != i:
                    stamp[row] = <int>i
                    freed[top] = phys[row]
                    top += 1
                f_nx[t] = phys[row]
        nread = 0 if f_kind[i] == K_N else _nreads(f_op[i], f_kind[i], f_s[i])
        for q in range(nread):
            row = _fread(f_op[i], f_kind[i], f_a[i], f_b[i], &d_x[0], q)
            if last[row] == i and not is_out[row] and stamp[row] != i:
                stamp[row] = <int>i
                freed[top] = phys[row]
                top += 1
        if f_kind[i] == K_N:
            pass
        elif f_op[i] == OP_DOT:
            for t in range(f_b[i], f_b[i] + f_s[i]):
                d_x[t] = phys[d_x[t]]
        elif f_kind[i] == K_BB or f_kind[i] == K_SB:
            f_b[i] = phys[f_b[i]]
        if f_kind[i] != K_SB and f_kind[i] != K_N:
            f_a[i] = phys[f_a[i]]
        row = f_out[i]
        phys[row] = r
        if last[row] < 0 and not is_out[row]:
            freed[top] = r                 # a result nothing reads
            top += 1
        f_out[i] = r
    prog.n_finstr = <int>nf
    f_op[nf] = 0
    f_kind[nf] = 0
    f_out[nf] = 0
    f_a[nf] = 0
    f_b[nf] = 0
    f_s[nf] = 0
    f_c[nf] = 0.0
    d_s[nd] = 0
    d_x[nd] = 0
    # slices of the typed views, not of the arrays: a NumPy slice and the
    # field's typed view of it cost ~8k instructions per field, a view's
    # slice a few dozen (11 fields: 0.09 M of 2.60 M instructions per
    # compile at MLP(2, [16, 16, 1]), callgrind)
    prog.f_op = f_op[:nf + 1]
    prog.f_kind = f_kind[:nf + 1]
    prog.f_out = f_out[:nf + 1]
    prog.f_a = f_a[:nf + 1]
    prog.f_b = f_b[:nf + 1]
    prog.f_s = f_s[:nf + 1]
    prog.f_c = f_c[:nf + 1]
    prog.d_s = d_s[:nd + 1]
    prog.d_x = d_x[:nd + 1]
    prog.f_nx = f_nx
    for q in range(n_out):
        f_oslot[q] = phys[<int>o_slot[q]] if o_bat[q] else <int>o_slot[q]
    prog.f_oslot = f_oslot
    prog.n_frows = nrows
    return 0


cdef inline int _fread(int op, int kind, int a, int b, const int* dx,
                       int q) noexcept:
    """The q-th batched row a forward-tape instruction reads (see _nreads)."""
    if kind != K_SB:
        if q == 0:
            return a
        q -= 1
    if op == OP_DOT:
        return dx[b + q]
    return b


# ---------------------------------------------------------------------------
# scalar dot chains
# ---------------------------------------------------------------------------

cdef int _scalar_dots(Program prog, const unsigned char[::1] op, const int[::1] a,
                      const int[::1] b, const double[::1] c, const int[::1] snx,
                      int base, const unsigned char[::1] external, bint merge) except -1:
    """The scalar tape the replay runs (Program.s_op, s_out, s_a, s_b, s_c,
    sd, s_nx, each with one entry of padding; n_sinstr): the recorded one
    (op, a, b, c, snx; instruction k writes slot base + k), with chains
    ((acc + a0*b0) + a1*b1) + ... merged into one OP_SDOT each (an L2
    penalty ``sum(p * p for p in params)`` is one) when ``merge``.

    Each product and running sum must be read only by the next link (not by
    the batched tape, an output or the penalty: ``external``).  The OP_SDOT
    instruction: a = the first running sum's other operand (acc), b = offset
    of its terms in ``sd`` (laid out as count, a0, b0, a1, b1, ...), c = 1.0
    when term q is slot a0 + q squared (else 0.0).  Forward
    is the chain's own additions in order (the same floats); backward adds
    b_i * g and a_i * g to the terms' gradients, g being the chain's
    gradient, which every link passes on unchanged (an add's rule), so no
    running sum needs its own gradient.  (An n-ary instruction's a is the
    offset of its (count, slots...) run in ``snx``: its slots count as
    uses.)  The new tape is written in place: its fields are slices of one
    array per dtype (3 NumPy arrays and typed views in all).
    """
    cdef Py_ssize_t n = op.shape[0], k, i, nsnx = snx.shape[0]
    cdef int j, m, x, other, acc, ch, nch = 0, jl, q, first, nsd = 0
    cdef int ns = base + <int>n
    cdef Py_ssize_t off = 0, ni = n, nsd_total = 0
    # the int scratch in one array (see _carve)
    cdef int[::1] ws = _np_empty(ns + 1 + 8 * (n + 1), _I32)
    cdef int[::1] uses = _carve(ws, &off, ns + 1, 0)
    cdef int[::1] chain_of = _carve(ws, &off, n + 1, -1)
    cdef int[::1] link_chain = _carve(ws, &off, n + 1, -1)
    cdef int[::1] ch_acc = _carve(ws, &off, n + 1, NOFILL)
    cdef int[::1] ch_first = _carve(ws, &off, n + 1, NOFILL)    # first term (product)
    cdef int[::1] ch_lastterm = _carve(ws, &off, n + 1, NOFILL)
    cdef int[::1] ch_nterms = _carve(ws, &off, n + 1, 0)
    cdef int[::1] ch_end = _carve(ws, &off, n + 1, -1)   # its last link
    cdef int[::1] term_next = _carve(ws, &off, n + 1, -1)
    for k in range(n if merge else 0):
        if op_is_nary(op[k]):
            for q in range(a[k] + 1, a[k] + 1 + snx[a[k]]):
                uses[snx[q]] += 1
            continue
        uses[a[k]] += 1
        if b[k] >= 0:
            uses[b[k]] += 1
    for k in range(n if merge else 0):
        if op[k] != OP_ADD:
            continue
        # which operand is a product read only here (a + b == b + a)
        acc = -1
        m = -1
        for q in range(2):
            x = b[k] if q == 0 else a[k]
            other = a[k] if q == 0 else b[k]
            j = x - base
            if (0 <= j < k and op[j] == OP_MUL and uses[x] == 1 and not external[x]
                    and chain_of[j] == -1):
                m = j
                acc = other
                break
        if m < 0:
            continue
        jl = acc - base
        ch = link_chain[jl] if jl >= 0 else -1
        if ch >= 0 and uses[acc] == 1 and not external[acc]:
            link_chain[jl] = -1                # the running sum continues
            term_next[ch_lastterm[ch]] = m
        else:
            ch = nch
            nch += 1
            ch_acc[ch] = acc
            ch_first[ch] = m
        ch_lastterm[ch] = m
        ch_nterms[ch] += 1
        chain_of[m] = ch
        chain_of[k] = ch
        link_chain[k] = ch
    # chains of at least two terms become one instruction at their last
    # link; the new tape's sizes
    for k in range(n if nch > 0 else 0):
        ch = link_chain[k]
        if ch >= 0 and ch_nterms[ch] > 1:
            ch_end[ch] = <int>k
    for ch in range(nch):
        if ch_nterms[ch] > 1:
            # its T products and T links become one OP_SDOT: (T, a0, b0, ...)
            ni -= 2 * ch_nterms[ch] - 1
            nsd_total += 1 + 2 * ch_nterms[ch]
    cdef Py_ssize_t n_s = ni + 1, n_sd = nsd_total + 1
    cdef unsigned char[::1] n_op = _np_zeros(n_s, _U8)
    cdef int[::1] s_i32 = _np_zeros(3 * n_s + n_sd + nsnx + 1, _I32)
    cdef double[::1] n_c = _np_zeros(n_s, _F64)
    cdef int[::1] n_out = s_i32[:n_s], n_a = s_i32[n_s:2 * n_s]
    cdef int[::1] n_b = s_i32[2 * n_s:3 * n_s], sd = s_i32[3 * n_s:3 * n_s + n_sd]
    cdef int[::1] n_nx = s_i32[3 * n_s + n_sd:]
    cdef bint squares
    i = 0
    for k in range(n):
        ch = chain_of[k]
        if ch >= 0 and ch_nterms[ch] > 1:
            if op[k] != OP_ADD or ch_end[ch] != k:
                continue                   # a product or an inner link
            n_op[i] = OP_SDOT
            n_out[i] = base + <int>k
            n_a[i] = ch_acc[ch]
            n_b[i] = nsd
            # c = 1.0: the terms are the squares of consecutive slots (an L2
            # penalty over the parameters): a backward without gathers
            sd[nsd] = ch_nterms[ch]
            nsd += 1
            m = ch_first[ch]
            first = a[m]
            squares = True
            q = 0
            while m >= 0:
                sd[nsd] = a[m]
                sd[nsd + 1] = b[m]
                nsd += 2
                if not (a[m] == b[m] == first + q):
                    squares = False
                q += 1
                m = term_next[m]
            n_c[i] = 1.0 if squares else 0.0
            i += 1
            continue
        n_op[i] = op[k]
        n_out[i] = base + <int>k
        n_a[i] = a[k]
        n_b[i] = b[k]
        n_c[i] = c[k]
        i += 1
    if i != ni or nsd != nsd_total:
        raise SystemError("compile: internal error (scalar tape size)")
    if nsnx > 0:
        memcpy(&n_nx[0], &snx[0], nsnx * sizeof(int))
    # the gradient slots a training replay zeroes: n_params up to n_scalar
    # but for the merged products and inner links, which nothing reads or
    # writes any more (an L2 penalty's 2 T - 1 slots: 1 MB of zeros per step
    # at 66k parameters)
    cdef int[::1] gz = _np_empty(2 * n + 4, _I32)
    cdef int ngz = 0, lo = prog.n_params
    cdef bint dead
    for k in range(n):
        ch = chain_of[k]
        dead = (ch >= 0 and ch_nterms[ch] > 1
                and not (op[k] == OP_ADD and ch_end[ch] == k))
        if dead:
            if base + <int>k > lo:
                gz[ngz] = lo
                gz[ngz + 1] = base + <int>k
                ngz += 2
            lo = base + <int>k + 1
    if prog.n_scalar > lo:
        gz[ngz] = lo
        gz[ngz + 1] = prog.n_scalar
        ngz += 2
    prog.s_gz = gz[:ngz]
    prog.n_sinstr = <int>ni
    prog.s_op = n_op
    prog.s_out = n_out
    prog.s_a = n_a
    prog.s_b = n_b
    prog.s_c = n_c
    prog.sd = sd
    prog.s_nx = n_nx
    return 0
