# Stage 2: analysis passes over the recorded tape.
# (included by _replay.pyx; see the stage list in its docstring)

# ---------------------------------------------------------------------------
# fusion and forward-only dot chains
# ---------------------------------------------------------------------------

cdef int _fuse(list b_op, list b_kind, list b_out, list b_a, list b_b,
               list b_s, list b_c, int n_in, set o_rows, dict slot) except -1:
    """Fuse ``acc + s*x`` pairs into OP_FMULADD and renumber batched rows.

    Edits the batched tape lists in place; returns the new instruction count.
    ``slot`` (node -> (batched, index)) is updated for the renumbered rows.
    """
    cdef int n = len(b_op), k, m, row, kind
    cdef list uses = [0] * (n_in + n)
    cdef dict prod_at = {}
    cdef set removed = set()
    for k in range(n):
        kind = b_kind[k]
        if kind != K_SB:
            uses[b_a[k]] += 1
        if kind == K_BB or kind == K_SB:
            uses[b_b[k]] += 1
        if b_op[k] == OP_MUL and (kind == K_SB or kind == K_BS):
            prod_at[b_out[k]] = k
    for k in range(n):
        if b_op[k] != OP_ADD or b_kind[k] == K_B:
            continue
        kind = b_kind[k]
        # the product may be either operand of the sum (a + b == b + a)
        for which in (1, 0):
            if which == 1 and kind == K_BS or which == 0 and kind == K_SB:
                continue                  # that operand is a scalar
            row = b_b[k] if which == 1 else b_a[k]
            m = prod_at.get(row, -1)
            if m < 0 or uses[row] != 1 or row in o_rows or m in removed:
                continue
            if which == 1:
                acc = b_a[k]
                acc_bat = kind == K_BB
            else:
                acc = b_b[k]
                acc_bat = kind == K_BB
            if b_kind[m] == K_SB:
                sc, x = b_a[m], b_b[m]
            else:
                sc, x = b_b[m], b_a[m]
            b_op[k] = OP_FMULADD
            b_kind[k] = K_BB if acc_bat else K_SB
            b_a[k] = acc
            b_b[k] = x
            b_s[k] = sc
            b_c[k] = 0.0
            removed.add(m)
            break
    if not removed:
        return n
    # drop the fused products and renumber the remaining result rows
    cdef dict new_row = {}
    keep = [k for k in range(n) if k not in removed]
    for i, k in enumerate(keep):
        new_row[b_out[k]] = n_in + i

    def ren(int r):
        return r if r < n_in else new_row[r]

    for lst in (b_op, b_kind, b_out, b_a, b_b, b_s, b_c):
        lst[:] = [lst[k] for k in keep]
    for i in range(len(keep)):
        kind = b_kind[i]
        b_out[i] = n_in + i
        if kind != K_SB:
            b_a[i] = ren(b_a[i])
        if kind == K_BB or kind == K_SB:
            b_b[i] = ren(b_b[i])
    for key, sa in list(slot.items()):
        if sa[0] and sa[1] >= n_in and sa[1] in new_row:
            slot[key] = (True, new_row[sa[1]])
    return len(keep)


cdef int _forward_tape(Program prog, list b_op, list b_kind, list b_out,
                       list b_a, list b_b, list b_s, list b_c, list o_slot,
                       list o_bat) except -1:
    """The forward-only tape: dot chains merged, rows reused once dead.

    1. A fused mul-add whose batched acc is the result of another fused
       mul-add (or chain) read by nothing else joins that chain; chains of two
       or more terms become one OP_DOT.
    2. Linear-scan row allocation: a result takes a free row (never one of
       its own operands' rows, which are released after it, so no loop reads
       and writes the same row); output rows are never freed.
    """
    cdef int n = len(b_out), n_in = prog.n_inputs, k, m, r, nrows
    cdef set keep = {o_slot[q] for q in range(len(o_slot)) if o_bat[q]}
    cdef dict uses = {}, fma_at = {}, last = {}, phys = {}
    cdef list chain = [None] * n, gone = [False] * n
    cdef list f_op = [], f_kind = [], f_out = [], f_a = [], f_b = [], f_s = []
    cdef list f_c = [], d_s = [], d_x = [], free_rows = [], rows_of = []
    # -- 1. chains
    for k in range(n):
        for rr in _rows_read(b_op[k], b_kind[k], b_a[k], b_b[k], None, None):
            uses[rr] = uses.get(rr, 0) + 1
    for k in range(n):
        if b_op[k] != OP_FMULADD:
            continue
        m = fma_at.get(b_a[k], -1) if b_kind[k] == K_BB else -1
        if (m >= 0 and uses.get(b_a[k], 0) == 1 and b_a[k] not in keep
                and not gone[m]):
            chain[k] = (chain[m][0], chain[m][1], chain[m][2] + [(b_s[k], b_b[k])])
            gone[m] = True
        else:
            chain[k] = (b_a[k], b_kind[k], [(b_s[k], b_b[k])])
        fma_at[b_out[k]] = k
    for k in range(n):
        if gone[k]:
            continue
        if b_op[k] == OP_FMULADD and len(chain[k][2]) > 1:
            f_op.append(OP_DOT)
            f_kind.append(chain[k][1])
            f_a.append(chain[k][0])
            f_b.append(len(d_s))
            f_s.append(len(chain[k][2]))
            for sc, x in chain[k][2]:
                d_s.append(sc)
                d_x.append(x)
        else:
            f_op.append(b_op[k])
            f_kind.append(b_kind[k])
            f_a.append(b_a[k])
            f_b.append(b_b[k])
            f_s.append(b_s[k])
        f_out.append(b_out[k])
        f_c.append(b_c[k])
    # -- 2. rows
    n = len(f_op)
    for k in range(n):
        rows_of.append(_rows_read(f_op[k], f_kind[k], f_a[k], f_b[k], f_s[k], d_x))
        for rr in rows_of[k]:
            last[rr] = k
    for r in range(n_in):
        phys[r] = r
    nrows = n_in
    for k in range(n):
        if free_rows:
            r = free_rows.pop()
        else:
            r = nrows
            nrows += 1
        reads = rows_of[k]
        if f_op[k] == OP_DOT:
            for i in range(f_s[k]):
                d_x[f_b[k] + i] = phys[d_x[f_b[k] + i]]
        else:
            if f_kind[k] == K_BB or f_kind[k] == K_SB:
                f_b[k] = phys[f_b[k]]
        if f_kind[k] != K_SB:
            f_a[k] = phys[f_a[k]]
        phys[f_out[k]] = r
        for rr in set(reads):
            if last[rr] == k and rr not in keep:
                free_rows.append(phys[rr])
        if f_out[k] not in last and f_out[k] not in keep:
            free_rows.append(r)            # a result nothing reads
        f_out[k] = r
    prog.n_finstr = n
    prog.f_op = np.array(f_op + [0], np.uint8)
    prog.f_kind = np.array(f_kind + [0], np.uint8)
    prog.f_out = np.array(f_out + [0], np.int32)
    prog.f_a = np.array(f_a + [0], np.int32)
    prog.f_b = np.array(f_b + [0], np.int32)
    prog.f_s = np.array(f_s + [0], np.int32)
    prog.f_c = np.array(f_c + [0.0], np.float64)
    prog.d_s = np.array(d_s + [0], np.int32)
    prog.d_x = np.array(d_x + [0], np.int32)
    prog.f_oslot = np.array([phys[o_slot[q]] if o_bat[q] else o_slot[q]
                             for q in range(len(o_slot))], np.int32)
    prog.n_frows = nrows
    return 0


cdef list _rows_read(int op, int kind, int a, int b, object s, list dx):
    """Batched rows an instruction reads."""
    cdef list rows = []
    if kind != K_SB:
        rows.append(a)
    if op == OP_DOT:
        rows.extend(dx[b:b + <int>s])
    elif kind == K_BB or kind == K_SB:
        rows.append(b)
    return rows


# ---------------------------------------------------------------------------
# scalar dot chains
# ---------------------------------------------------------------------------

cdef int _scalar_dots(list s_op, list s_out, list s_a, list s_b, list s_c,
                      set external, list sd) except -1:
    """Merge chains ((acc + a0*b0) + a1*b1) + ... of the scalar tape into one
    OP_SDOT each (an L2 penalty ``sum(p * p for p in params)`` is one).

    Each product and running sum must be read only by the next link (not by
    the batched tape, an output or the penalty: ``external``).  The OP_SDOT
    instruction: a = the first running sum's other operand (acc), b = offset
    of its terms in ``sd`` (laid out as count, a0, b0, a1, b1, ...), c = 1.0
    when term q is slot a0 + q squared (else 0.0).  Forward
    is the chain's own additions in order (the same floats); backward adds
    b_i * g and a_i * g to the terms' gradients, g being the chain's
    gradient, which every link passes on unchanged (an add's rule), so no
    running sum needs its own gradient.  Edits the lists in place.
    """
    cdef int n = len(s_op), k, m, c, x
    cdef dict uses = {}, prod_at = {}, link_at = {}
    cdef list chains = [], chain_of = [-1] * n
    if n == 0:
        return 0
    for k in range(n):
        uses[s_a[k]] = uses.get(s_a[k], 0) + 1
        if s_b[k] >= 0:
            uses[s_b[k]] = uses.get(s_b[k], 0) + 1
        if s_op[k] == OP_MUL:
            prod_at[s_out[k]] = k

    def single(int slot):
        return uses.get(slot, 0) == 1 and slot not in external

    for k in range(n):
        if s_op[k] != OP_ADD:
            continue
        # which operand is a product read only here (a + b == b + a)
        acc = -1
        m = -1
        for x, other in ((s_b[k], s_a[k]), (s_a[k], s_b[k])):
            m = prod_at.get(x, -1)
            if m >= 0 and m < k and single(x) and chain_of[m] == -1:
                acc = other
                break
        if acc < 0:
            continue
        c = link_at.get(acc, -1)
        if c >= 0 and single(acc):
            link_at.pop(acc)               # the running sum continues
        else:
            c = len(chains)
            chains.append([acc, []])
        chains[c][1].append(m)
        chain_of[m] = c
        chain_of[k] = c
        link_at[s_out[k]] = c
    # chains of at least two terms become one instruction at their last link
    last = {}
    for out, c in link_at.items():
        if len(chains[c][1]) > 1:
            last[c] = out
    if not last:
        return 0
    keep_op, keep_out, keep_a, keep_b, keep_c = [], [], [], [], []
    for k in range(n):
        c = chain_of[k]
        if c >= 0 and c in last:
            if s_op[k] != OP_ADD or s_out[k] != last[c]:
                continue                   # a product or an inner link
            keep_op.append(OP_SDOT)
            keep_out.append(s_out[k])
            keep_a.append(chains[c][0])
            keep_b.append(len(sd))
            terms = chains[c][1]
            first = s_a[terms[0]]
            # c = 1.0: the terms are the squares of consecutive slots (an L2
            # penalty over the parameters): a backward without gathers
            keep_c.append(1.0 if all(s_a[m] == s_b[m] == first + x
                                     for x, m in enumerate(terms)) else 0.0)
            sd.append(len(terms))
            for m in terms:
                sd.append(s_a[m])
                sd.append(s_b[m])
            continue
        keep_op.append(s_op[k])
        keep_out.append(s_out[k])
        keep_a.append(s_a[k])
        keep_b.append(s_b[k])
        keep_c.append(s_c[k])
    s_op[:] = keep_op
    s_out[:] = keep_out
    s_a[:] = keep_a
    s_b[:] = keep_b
    s_c[:] = keep_c
    return 0
