# Stage 3 for dense layers: the activation epilogue (see _replay_layers.pxi).
# (included by _replay.pyx; see the stage list in its docstring)
#
# A layer's epilogue is the chain of unary / constant ops after its sums
# (relu, tanh, sigmoid, exp, log, the user's sigmoid 1/(1+(-z).exp()) =
# mulc(-1), exp, addc(1), rdivc(1) ...), recorded per layer as op codes of
# _rules.pxd and their constants.  Forward: op_forward of each op in order
# over the layer's rows, right after the forward kernel wrote them (still in
# cache): the same floats as eager.  Backward: op_backward of each op in
# reverse, turning the gradient rows of the outputs into those of the
# pre-activations in place; the inputs of the inner ops are recomputed from
# the stored pre-activation rows, EPI_BLOCK columns at a time.  Each
# operand's gradient is ``0.0 + contribution`` (a node's gradient starts at
# 0.0 in eager mode and receives this one contribution).
#
# Every op is dispatched once per row to a loop where its op code is a
# literal, so the inlined rule folds to one expression and the arithmetic
# ones vectorise.

cdef enum:
    EPI_BLOCK = 256      # columns of the backward's recomputed intermediates


cdef extern from "_vmath_rows.h" nogil:
    void fg_vm_usig_fw(const double* z, double* e, double* y, Py_ssize_t n, double c0,
                       double c2, double c3)
    void fg_vm_usig_bw(const double* e, const double* y, double* g, Py_ssize_t n,
                       double c0, double c2)
    void fg_vm_act_bw(int fn, const double* y, double* g, Py_ssize_t n)


# The user's sigmoid 1/(1+(-z).exp()) (mulc, exp, addc, rdivc) runs as one
# pass over a row, forward and backward (fg_vm_usig_fw/_bw, _vmath_rows.h:
# the same operations per element as the op-by-op loops, the same bits).
# The forward leaves e = exp(z c0) in the Z row in place of z (Z's only
# reader is the chain: _find_layers), so the backward reads e instead of
# recomputing it from z (the same e: the same bits).  The unpacked path of
# layer_forward does the same.  Measured (styles row sigmoid_hand, 2-64-64-1,
# Program.sgd_step, fused against op by op: `bench_vmath.py epilogue` and
# `bench_vmath.py nets --rows sigmoid_hand` against main, quiet, load ~1.1-2.7):
# AVX2 0.68-0.70x the step's CPU time at N = 1,000 and 0.61-0.69x at 10,000,
# baseline 0.73-0.80x, portable 0.94-1.0x.
#
# The backward of tanh and sigmoid (the rules read only the op's result)
# runs as fg_vm_act_bw (_vmath_rows.h): the rule's operations per element
# in the build of the replay's ISA, where the loop here is built for the
# baseline ISA only (SSE2, 2 doubles).  Measured (perf of Program.sgd_step,
# styles row tanh_hidden, 2-64-64-1, N = 1,000, AVX-512): this loop was
# 3% of the step (0.31 ns per element).
cdef bint EPI_FUSED = True


def _set_epi_fused(bint on):
    """Testing hook: the user's sigmoid chain as one fused pass and tanh's
    and sigmoid's backward in the ISA's row loop (True, default), or every
    op by the loops here (False); returns the old setting.  Not while a
    replay runs."""
    global EPI_FUSED
    old = EPI_FUSED
    EPI_FUSED = on
    return old


cdef inline bint epi_usig(int nep, const int* ops) noexcept nogil:
    """Whether the chain is mulc, exp, addc, rdivc (the user's sigmoid
    with any constants) and runs fused."""
    return (EPI_FUSED and nep == 4 and ops[0] == OP_MULC and ops[1] == OP_EXP
            and ops[2] == OP_ADDC and ops[3] == OP_RDIVC)


cdef inline void _epi_fw(int op, const double* a, double* o, double c,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = op_forward(op, a[j], 0.0, c)


cdef void epi_apply(int op, const double* a, double* o, double c,
                    Py_ssize_t n) noexcept nogil:
    """o[j] = op(a[j]) for j < n (``o`` may be ``a``)."""
    if op == OP_RELU:
        _epi_fw(OP_RELU, a, o, c, n)
    elif op == OP_TANH:
        # the vector builds of op_forward's functions (_vmath_rows.h)
        fg_vm_row(FG_VM_TANH, a, o, n)
    elif op == OP_SIGMOID:
        fg_vm_row(FG_VM_SIGMOID, a, o, n)
    elif op == OP_EXP:
        fg_vm_row(FG_VM_EXP, a, o, n)
    elif op == OP_LOG:
        fg_vm_row(FG_VM_LOG, a, o, n)
    elif op == OP_ADDC:
        _epi_fw(OP_ADDC, a, o, c, n)
    elif op == OP_MULC:
        _epi_fw(OP_MULC, a, o, c, n)
    elif op == OP_RSUBC:
        _epi_fw(OP_RSUBC, a, o, c, n)
    elif op == OP_DIVC:
        _epi_fw(OP_DIVC, a, o, c, n)
    elif op == OP_RDIVC:
        _epi_fw(OP_RDIVC, a, o, c, n)
    else:
        _epi_fw(op, a, o, c, n)


cdef inline void _epi_bw(int op, const double* a, const double* o, double* g,
                         double c, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double ga, gb
    for j in range(n):
        op_backward(op, a[j], 0.0, c, o[j], g[j], &ga, &gb)
        g[j] = 0.0 + ga


cdef void epi_back(int op, const double* a, const double* o, double* g, double c,
                   Py_ssize_t n) noexcept nogil:
    """g[j] = d op(a[j]) / da * g[j] (``o``: the op's results; ``a`` is only
    read by the rules that need it)."""
    if op == OP_RELU:
        _epi_bw(OP_RELU, a, o, g, c, n)
    elif op == OP_TANH:
        if EPI_FUSED and o != g:
            fg_vm_act_bw(FG_VM_TANH, o, g, n)
        else:
            _epi_bw(OP_TANH, a, o, g, c, n)
    elif op == OP_SIGMOID:
        if EPI_FUSED and o != g:
            fg_vm_act_bw(FG_VM_SIGMOID, o, g, n)
        else:
            _epi_bw(OP_SIGMOID, a, o, g, c, n)
    elif op == OP_EXP:
        _epi_bw(OP_EXP, a, o, g, c, n)
    elif op == OP_LOG:
        _epi_bw(OP_LOG, a, o, g, c, n)
    elif op == OP_ADDC:
        _epi_bw(OP_ADDC, a, o, g, c, n)
    elif op == OP_MULC:
        _epi_bw(OP_MULC, a, o, g, c, n)
    elif op == OP_RSUBC:
        _epi_bw(OP_RSUBC, a, o, g, c, n)
    elif op == OP_DIVC:
        _epi_bw(OP_DIVC, a, o, g, c, n)
    elif op == OP_RDIVC:
        _epi_bw(OP_RDIVC, a, o, g, c, n)
    else:
        _epi_bw(op, a, o, g, c, n)


cdef void epilogue_forward(int H, int nep, const int* ops, const double* cs,
                           const double* post, double* vb, const int* zrows,
                           const int* orows, Py_ssize_t ld,
                           Py_ssize_t n) noexcept nogil:
    """Rows Z (the kernel's sums) -> the layer's outputs Y.

    ``post`` (H values, or NULL): added to Z first (in place: Z is what the
    backward recomputes from).  Then the ``nep`` ops from Z into Y (``zrows``
    may be ``orows``: in place).
    """
    cdef int i, q
    cdef Py_ssize_t j
    cdef double p
    cdef double* z
    cdef double* y
    cdef bint usig = epi_usig(nep, ops)
    for i in range(H):
        z = vb + zrows[i] * ld
        y = vb + orows[i] * ld
        if post != NULL:
            p = post[i]
            for j in range(n):
                z[j] = op_forward(OP_ADD, z[j], p, 0.0)
        if nep == 0:
            continue
        if usig:
            # e into the Z row (none when Z is Y: a forward without backward)
            fg_vm_usig_fw(z, z if z != y else NULL, y, n, cs[0], cs[2], cs[3])
            continue
        epi_apply(ops[0], z, y, cs[0], n)
        for q in range(1, nep):
            epi_apply(ops[q], y, y, cs[q], n)


cdef void epilogue_backward(int H, int nep, const int* ops, const double* cs,
                            const unsigned char* has, const double* vb,
                            const int* zrows, const int* orows, double* gb,
                            Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    """Gradient rows of the outputs -> those of the pre-activations, in place.

    Rows whose gradient was not written (``has[i] == 0``) stay as they are
    (the kernels' fg_grad_in zeroed them).  ``zrows`` NULL: one op whose rule
    reads only its result (the outputs).
    """
    cdef double buf[MAX_EPILOGUE * EPI_BLOCK]
    cdef int i, q
    cdef Py_ssize_t jb, m
    cdef const double* z
    cdef const double* y
    cdef const double* a
    cdef const double* o
    cdef double* g
    cdef bint usig = epi_usig(nep, ops)
    for i in range(H):
        if not has[i]:
            continue
        g = gb + orows[i] * ld
        y = vb + orows[i] * ld
        if zrows == NULL:
            epi_back(ops[0], y, y, g, cs[0], n)
            continue
        z = vb + zrows[i] * ld
        if usig:
            # z holds e here (epilogue_forward)
            fg_vm_usig_bw(z, y, g, n, cs[0], cs[2])
            continue
        jb = 0
        while jb < n:
            m = n - jb
            if m > EPI_BLOCK:
                m = EPI_BLOCK
            # buf[q]: the input of op q + 1 (op q's result), recomputed
            if nep > 1:
                epi_apply(ops[0], z + jb, buf, cs[0], m)
            for q in range(1, nep - 1):
                epi_apply(ops[q], buf + (q - 1) * EPI_BLOCK, buf + q * EPI_BLOCK,
                          cs[q], m)
            for q in range(nep - 1, -1, -1):
                a = z + jb if q == 0 else <const double*>(buf + (q - 1) * EPI_BLOCK)
                o = y + jb if q == nep - 1 else <const double*>(buf + q * EPI_BLOCK)
                epi_back(ops[q], a, o, g + jb, cs[q], m)
            jb += m
