# cython: language_level=3
"""Compiled graph replay: record a graph of Values once, replay it in C.

Design summary
--------------
* Recording (``build``) sorts the graph (``topo_order``, iterative) and turns
  every node into one instruction of a flat tape: op code (uint8), operand
  slots (int32, -1 for none), baked constant (double).  Leaves become slots:
  *inputs* (new values every replay), *parameters* (the user's Values, whose
  ``.data`` is read at the start of each replay and whose ``.grad`` receives
  the gradient) and *constants* (every other leaf, baked at record time).
  Hand-built OP_CUSTOM nodes (a user ``_backward``) are refused.
* Every slot is either *scalar* (depends on parameters/constants only: one
  value per replay) or *batched* (depends on an input: one value per sample).
  So the tape is split in two: the scalar tape runs once, the batched tape
  runs over a (n_batched, ld) matrix, structure-of-arrays: for each
  instruction a tight loop over the batch columns, which gcc -O3 vectorises.
  A parameter is a scalar broadcast across the batch; its gradient is the
  batch-sum of the per-sample contributions.
* The math is ``op_forward``/``op_backward`` from _rules.pxd, nothing else:
  the common ops get their own loop in which the op code is a compile-time
  constant, so the inlined rule folds to a single expression (``a + b``),
  and the rare ops share one loop that switches per element.
* Backward *plans* (which operand gradients to compute, and whether the first
  contribution to a batched gradient row is a store or an add) are computed
  once per (want input grads, with penalty) and cached: no zeroing pass over
  the gradient matrix, no work for constants or input-only subgraphs.
* Fusion: a product ``s * x`` read only by a sum becomes one OP_FMULADD
  instruction ``acc + s*x`` (same two roundings, no row for the product).
  Forward-only replays (forward, predict, batch(grad=False)) use a second
  tape where chains of those (a neuron's dot product) are one OP_DOT whose
  running sum stays in registers, and where rows are reused once dead.
* Large batches are processed in column chunks sized to stay in cache; a
  program is not re-entrant (a busy flag turns concurrent use into an error).
* Division by zero, log of a negative number, overflow ... produce IEEE
  inf/nan as in C; the eager engine's domain errors are not re-checked.
"""
cimport cython
from cpython.object cimport PyObject
from libc.math cimport isfinite
from libc.stdlib cimport free
from libc.string cimport memset

from fastgrad._rules cimport *
from fastgrad._engine cimport Value, topo_order, node_b, node_c
from fastgrad._numgrad cimport Evaluator

import numbers

import numpy as np

# Only ``build`` (and this module's evaluators) may create Programs: their
# ``__cinit__`` demands this private token, so ``Program.__new__(Program)``
# cannot hand out a Program whose tape buffers are uninitialised (every
# method used to read through NULL pointers then).
cdef object _TOKEN = object()

# Ctrl-C: the long loops (batch/predict chunks, the finite-difference loop)
# take the GIL and call PyErr_CheckSignals each time about SIGNAL_WORK
# element operations (columns x instructions) have been done since the last
# check: ~4e6 is 2-10 ms of work, so a SIGINT surfaces within that, and a
# small call (the demo step: ~7e4 operations) never pays for the GIL.
cdef extern from "Python.h":
    int PyErr_CheckSignals() noexcept
cdef Py_ssize_t SIGNAL_WORK = 1 << 22


def _set_signal_work(Py_ssize_t work):
    """Tuning/testing hook: element operations between signal checks
    (0 disables the checks); returns the old value."""
    global SIGNAL_WORK
    old = SIGNAL_WORK
    SIGNAL_WORK = max(work, 0)
    return old


# Speed trick: this module's ``cdef inline`` functions are *always* inlined.
# The kernels below rely on the inlined op_forward/op_backward folding to one
# expression once the op code is a literal; gcc's unit-growth limits (a Cython
# module is large) otherwise leave per-element calls in the hot loops.
# Measured (benchmarks/tune_replay.py, CPU time of the demo training step):
# 51 us -> 41 us with the fused mul-add, 321 us -> 57 us without it.
cdef extern from *:
    """
    #if defined(__GNUC__)
    #undef CYTHON_INLINE
    #define CYTHON_INLINE __inline__ __attribute__((always_inline, unused))
    #endif
    """

# operand kinds of a batched instruction
cdef enum:
    K_BB = 0      # a batched, b batched
    K_BS = 1      # a batched, b scalar
    K_SB = 2      # a scalar,  b batched
    K_B = 3       # unary or constant op on a batched a

# A fused pair of _rules ops, recorded when a product ``s * x`` (s scalar, x
# batched) is used only by a sum ``acc + (s * x)``: out = acc + s*x, rounded
# after the product and after the sum exactly as the two eager nodes are
# (op_forward(OP_ADD, acc, op_forward(OP_MUL, s, x))), gradients through
# op_backward of both.  Operands: a = acc (batched row for K_BB, scalar for
# K_SB), b = x (batched row), b_s = s (scalar slot).  The product never gets
# a row: one load/store pass instead of two per dot-product term.
cdef enum:
    OP_FMULADD = 100

# Forward-only tapes (predict, batch(grad=False)) go one step further: a chain
# of fused mul-adds acc0 + s1*x1 + s2*x2 + ... (a neuron's dot product) is one
# OP_DOT whose running sum stays in registers over a block of columns, with
# the same op_forward sequence (so the same floats).  Operands: a = acc0
# (row for K_BB, scalar for K_SB), b = offset of its terms in d_s/d_x, s =
# number of terms.
cdef enum:
    OP_DOT = 101
    DOT_BLOCK = 16

# backward modes of one operand
cdef enum:
    M_SKIP = 0
    M_STORE = 1   # first contribution to a batched gradient row
    M_ADD = 2

# Columns per chunk: the batched value (and gradient) matrices of a chunk are
# kept within about this many bytes so that a replay stays in L2/L3.
cdef Py_ssize_t CHUNK_BYTES = 2 * 1024 * 1024
cdef Py_ssize_t FWD_CHUNK_BYTES = 24 * 1024    # forward only: rows stay in L1d
cdef Py_ssize_t MIN_CHUNK = 16
cdef Py_ssize_t MAX_CHUNK = 4096


def _set_chunk_bytes(Py_ssize_t nbytes, bint forward_only=False):
    """Tuning hook (benchmarks): bytes of work rows per chunk; returns the old."""
    global CHUNK_BYTES, FWD_CHUNK_BYTES
    old = FWD_CHUNK_BYTES if forward_only else CHUNK_BYTES
    if forward_only:
        FWD_CHUNK_BYTES = max(nbytes, 1)
    else:
        CHUNK_BYTES = max(nbytes, 1)
    return old


cdef bint FUSE = True


def _set_fusion(bint on):
    """Testing/tuning hook: record OP_FMULADD pairs (default) or not."""
    global FUSE
    old = FUSE
    FUSE = on
    return old


_OP_NAMES = {
    OP_ADD: "add", OP_SUB: "sub", OP_MUL: "mul", OP_DIV: "div", OP_POW: "pow",
    OP_MAX: "max", OP_MIN: "min", OP_ADDC: "addc", OP_MULC: "mulc",
    OP_RSUBC: "rsubc", OP_DIVC: "divc", OP_RDIVC: "rdivc", OP_POWC: "powc",
    OP_RPOWC: "rpowc", OP_RELU: "relu", OP_TANH: "tanh", OP_EXP: "exp",
    OP_LOG: "log", OP_SIGMOID: "sigmoid", OP_ABS: "abs", OP_SQRT: "sqrt",
}


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


cdef inline void fw_dot_block(double* t, const int* ds, const int* dx,
                              int nterms, const double* vs, const double* vb,
                              Py_ssize_t ld, Py_ssize_t jb) noexcept nogil:
    """Add the terms of a dot chain to the DOT_BLOCK partial results t."""
    cdef int q
    cdef Py_ssize_t u
    cdef double s
    cdef const double* x
    for q in range(nterms):
        s = vs[ds[q]]
        x = vb + dx[q] * ld + jb
        for u in range(DOT_BLOCK):
            t[u] = op_forward(OP_ADD, t[u], op_forward(OP_MUL, s, x[u], 0.0), 0.0)


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
        for q in range(nterms):
            s = vs[ds[q]]
            x = vb + dx[q] * ld + jb
            for u in range(m):
                t[u] = op_forward(OP_ADD, t[u],
                                  op_forward(OP_MUL, s, x[u], 0.0), 0.0)
        for u in range(m):
            o[jb + u] = t[u]


cdef void forward_batched(int ninstr, const unsigned char* ops,
                          const unsigned char* kinds, const int* outs,
                          const int* oa, const int* ob, const int* os,
                          const double* cs, const int* ds, const int* dx,
                          const double* vs, double* vb,
                          Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    cdef int k, op, kind
    cdef double* o
    cdef const double* pa
    cdef const double* pb
    cdef double sa, sb, c
    for k in range(ninstr):
        op = ops[k]
        kind = kinds[k]
        o = vb + outs[k] * ld
        if op == OP_DOT:
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
                fw_bb(OP_MUL, o, pa, pb, n)
            elif op == OP_SUB:
                fw_bb(OP_SUB, o, pa, pb, n)
            elif op == OP_DIV:
                fw_bb(OP_DIV, o, pa, pb, n)
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
            elif op == OP_ADDC:
                fw_b(OP_ADDC, o, pa, c, n)
            elif op == OP_MULC:
                fw_b(OP_MULC, o, pa, c, n)
            elif op == OP_RSUBC:
                fw_b(OP_RSUBC, o, pa, c, n)
            elif op == OP_DIVC:
                fw_b(OP_DIVC, o, pa, c, n)
            else:
                fw_b(op, o, pa, c, n)


cdef void forward_scalar(int ninstr, const unsigned char* ops, const int* outs,
                         const int* oa, const int* ob, const double* cs,
                         double* vs) noexcept nogil:
    cdef int k, bi
    for k in range(ninstr):
        bi = ob[k]
        vs[outs[k]] = op_forward(ops[k], vs[oa[k]], vs[bi] if bi >= 0 else 0.0,
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
            gr[j] += (ga if which == 0 else gb)


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
            gr[j] += ga


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
            gr[j] += gb


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
                gr[jb + u] += tmp[u]
            jb += DOT_BLOCK
        for j in range(jb, n):
            op_backward(op, a[j], 0.0, c, o[j], g[j], &ga, &gb)
            gr[j] += ga


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
            gr[j] += ga


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
            gr[j] += gx


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
                   const double* vs, double* gs, Py_ssize_t ld, int ia, int ib,
                   int isc, int io, Py_ssize_t n) noexcept nogil:
    cdef const double* o = vb + io * ld
    cdef const double* g = gb + io * ld
    cdef bint acc_row = kind == K_BB
    cdef const double* acc = <const double*>(vb + ia * ld) if acc_row else o
    cdef double sacc = 0.0 if acc_row else vs[ia]
    cdef double s = vs[isc]
    cdef const double* x = vb + ib * ld
    if ma != M_SKIP:
        if acc_row:
            if ma == M_STORE:
                bwf_acc(M_STORE, gb + ia * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_acc(M_ADD, gb + ia * ld, acc, sacc, True, s, x, o, g, n)
        else:
            gs[ia] += bwf_acc_sum(acc, sacc, False, s, x, o, g, n)
    if mb != M_SKIP:
        if mb == M_STORE:
            if acc_row:
                bwf_x(M_STORE, gb + ib * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_x(M_STORE, gb + ib * ld, acc, sacc, False, s, x, o, g, n)
        else:
            if acc_row:
                bwf_x(M_ADD, gb + ib * ld, acc, sacc, True, s, x, o, g, n)
            else:
                bwf_x(M_ADD, gb + ib * ld, acc, sacc, False, s, x, o, g, n)
    if ms != M_SKIP:
        if acc_row:
            gs[isc] += bwf_s_sum(acc, sacc, True, s, x, o, g, n)
        else:
            gs[isc] += bwf_s_sum(acc, sacc, False, s, x, o, g, n)


cdef inline void bw_instr(int op, int kind, int ma, int mb, double* vb,
                          double* gb, const double* vs, double* gs,
                          Py_ssize_t ld, int ia, int ib, int io, double c,
                          Py_ssize_t n) noexcept nogil:
    """Backward of one batched instruction (called with a literal op code)."""
    cdef const double* o = vb + io * ld
    cdef const double* g = gb + io * ld
    if kind == K_BB:
        if ma != M_SKIP:
            bwr_bb(op, 0, ma, gb + ia * ld, vb + ia * ld, vb + ib * ld, o, g, n)
        if mb != M_SKIP:
            bwr_bb(op, 1, mb, gb + ib * ld, vb + ia * ld, vb + ib * ld, o, g, n)
    elif kind == K_SB:
        if ma != M_SKIP:
            gs[ia] += bws_sb(op, vs[ia], vb + ib * ld, o, g, n)
        if mb != M_SKIP:
            bwr_sb(op, mb, gb + ib * ld, vs[ia], vb + ib * ld, o, g, n)
    elif kind == K_BS:
        if ma != M_SKIP:
            bwr_bs(op, ma, gb + ia * ld, vb + ia * ld, vs[ib], o, g, n)
        if mb != M_SKIP:
            gs[ib] += bws_bs(op, vb + ia * ld, vs[ib], o, g, n)
    else:
        if ma != M_SKIP:
            bwr_b(op, ma, gb + ia * ld, vb + ia * ld, c, o, g, n)


cdef void backward_batched(int ninstr, const unsigned char* ops,
                           const unsigned char* kinds, const int* outs,
                           const int* oa, const int* ob, const int* os,
                           const double* cs, const unsigned char* mas,
                           const unsigned char* mbs, const unsigned char* mss,
                           const double* vs, double* gs, double* vb,
                           double* gb, Py_ssize_t ld,
                           Py_ssize_t n) noexcept nogil:
    cdef int k, op, kind, ma, mb
    for k in range(ninstr - 1, -1, -1):
        ma = mas[k]
        mb = mbs[k]
        if ma == M_SKIP and mb == M_SKIP and mss[k] == M_SKIP:
            continue
        op = ops[k]
        kind = kinds[k]
        if op == OP_FMULADD:
            bw_fused(kind, ma, mb, mss[k], vb, gb, vs, gs, ld, oa[k], ob[k],
                     os[k], outs[k], n)
        elif op == OP_ADD:
            bw_instr(OP_ADD, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_MUL:
            bw_instr(OP_MUL, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_RELU:
            bw_instr(OP_RELU, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_ADDC:
            bw_instr(OP_ADDC, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_MULC:
            bw_instr(OP_MULC, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        elif op == OP_SUB:
            bw_instr(OP_SUB, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)
        else:
            bw_instr(op, kind, ma, mb, vb, gb, vs, gs, ld, oa[k], ob[k],
                     outs[k], cs[k], n)


cdef void backward_scalar(int ninstr, const unsigned char* ops, const int* outs,
                          const int* oa, const int* ob, const double* cs,
                          const unsigned char* mas, const unsigned char* mbs,
                          const double* vs, double* gs) noexcept nogil:
    cdef int k, bi
    cdef double ga, gb
    for k in range(ninstr - 1, -1, -1):
        if mas[k] == M_SKIP and mbs[k] == M_SKIP:
            continue
        bi = ob[k]
        op_backward(ops[k], vs[oa[k]], vs[bi] if bi >= 0 else 0.0, cs[k],
                    vs[outs[k]], gs[outs[k]], &ga, &gb)
        if mas[k] != M_SKIP:
            gs[oa[k]] += ga
        if mbs[k] != M_SKIP:
            gs[bi] += gb


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
    cdef int kind, a, b, o
    plan.bma = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.bmb = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.bms = np.zeros(max(p.n_binstr, 1), np.uint8)
    plan.sma = np.zeros(max(p.n_sinstr, 1), np.uint8)
    plan.smb = np.zeros(max(p.n_sinstr, 1), np.uint8)
    plan.in_ng = np.zeros(max(p.n_inputs, 1), np.uint8)
    plan.par_ng = np.zeros(max(p.n_params, 1), np.uint8)
    # which slots depend on what we differentiate for
    for s in range(p.n_params):
        dep_s[s] = 1
    for k in range(p.n_sinstr):
        b = p.s_b[k]
        dep_s[p.s_out[k]] = dep_s[p.s_a[k]] | (dep_s[b] if b >= 0 else 0)
    if want_inputs:
        for s in range(p.n_inputs):
            dep_b[s] = 1
    for k in range(p.n_binstr):
        kind = p.b_kind[k]
        a = p.b_a[k]
        b = p.b_b[k]
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
        o = p.b_out[k]
        if not (live_b[o] and dep_b[o]):
            continue
        kind = p.b_kind[k]
        a = p.b_a[k]
        b = p.b_b[k]
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
        live_s[a] = 1
        if dep_s[a]:
            plan.sma[k] = M_ADD
        if b >= 0:
            live_s[b] = 1
            if dep_s[b]:
                plan.smb[k] = M_ADD
    for s in range(p.n_inputs):
        plan.in_ng[s] = live_b[s] and dep_b[s] and not first_b[s]
    for s in range(p.n_params):
        plan.par_ng[s] = live_s[s]
    return plan


# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------

# The only two places that read a node's second operand / constant.
cdef inline PyObject* _operand_b(Value v) noexcept:
    return node_b(v)


cdef inline double _const_c(Value v) noexcept:
    return node_c(v)


def _describe(Value v):
    return f"Value(data={v.data!r})"


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


def build(outputs, inputs, params, penalty=None):
    """Record the graph under ``outputs`` (and ``penalty``) into a Program.

    Private: see fastgrad.compiled.compile_graph for the documented API.
    """
    cdef list outs = list(outputs), ins = list(inputs), pars = list(params)
    cdef dict in_idx = {}, par_idx = {}, slot = {}
    cdef list roots
    cdef list consts = []
    cdef list s_op = [], s_out = [], s_a = [], s_b = [], s_c = []
    cdef list b_op = [], b_kind = [], b_out = [], b_a = [], b_b = [], b_c = []
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i
    cdef Value v
    cdef size_t key
    cdef int op, nb_ops = 0, ns_ops = 0, n_in, n_par
    cdef object sa, sb
    cdef bint bat_a, bat_b
    cdef Program prog
    cdef int n_const

    if not outs:
        raise ValueError("compile: at least one output Value is required, got 0")
    for where, seq in (("output", outs), ("input", ins), ("parameter", pars)):
        for i in range(len(seq)):
            if not isinstance(seq[i], Value):
                raise TypeError(f"compile: {where} {i} must be a fastgrad Value, "
                                f"got {type(seq[i]).__name__}")
    if penalty is not None and not isinstance(penalty, Value):
        raise TypeError("compile: penalty must be a fastgrad Value (a function "
                        f"of the parameters only), got {type(penalty).__name__}")
    for i in range(len(ins)):
        v = <Value>ins[i]
        if v._opcode != OP_LEAF:
            raise ValueError(f"compile: input {i} ({_describe(v)}) is not a leaf "
                             "Value; inputs must be leaves (Value(x))")
        key = <size_t><PyObject*>v
        if key in in_idx:
            raise ValueError(f"compile: input {i} is the same Value as input "
                             f"{in_idx[key]}; each input must be a distinct Value")
        in_idx[key] = i
    for i in range(len(pars)):
        v = <Value>pars[i]
        if v._opcode != OP_LEAF:
            raise ValueError(f"compile: parameter {i} ({_describe(v)}) is not a "
                             "leaf Value; parameters must be leaves")
        key = <size_t><PyObject*>v
        if key in in_idx:
            raise ValueError(f"compile: parameter {i} is also input "
                             f"{in_idx[key]}; a Value is either an input or a "
                             "parameter")
        if key in par_idx:
            raise ValueError(f"compile: parameter {i} is the same Value as "
                             f"parameter {par_idx[key]}; list each parameter once")
        par_idx[key] = i
    n_in = len(ins)
    n_par = len(pars)
    # slot of a node: (is_batched, index).  Inputs are batched rows 0..n_in-1,
    # parameters scalar slots 0..n_par-1, constants follow the parameters;
    # instruction results are numbered after those (fixed up below).
    roots = outs + ([penalty] if penalty is not None else [])
    for r in roots:
        n = topo_order(<Value>r, &order)
        try:
            for i in range(n):
                key = <size_t>order[i]
                if key in slot:
                    continue
                v = <Value>order[i]
                op = v._opcode
                if op == OP_CUSTOM:
                    raise ValueError(
                        "compile: the graph contains a hand-built node "
                        f"({_describe(v)}, op {v._op!r}) whose gradient is a "
                        "user _backward callable; such nodes cannot be "
                        "compiled (build it from Value operators instead)")
                if (op != OP_LEAF and v._dict != NULL
                        and '_backward' in <dict><object>v._dict):
                    raise ValueError(
                        f"compile: the {v._op!r} node {_describe(v)} has a "
                        "user _backward replacing its derivative rule; a "
                        "compiled program would ignore it, so it is refused")
                if op == OP_LEAF:
                    if key in in_idx:
                        slot[key] = (True, in_idx[key])
                    elif key in par_idx:
                        slot[key] = (False, par_idx[key])
                    else:
                        slot[key] = (False, n_par + len(consts))
                        consts.append(v.data)
                    continue
                sa = slot[<size_t>v._a]
                bat_a = sa[0]
                if _operand_b(v) != NULL:
                    sb = slot[<size_t>_operand_b(v)]
                    bat_b = sb[0]
                else:
                    sb = None
                    bat_b = False
                if bat_a or bat_b:
                    b_op.append(op)
                    b_out.append(nb_ops)        # offset by n_in below
                    b_c.append(_const_c(v))
                    b_a.append(sa[1])
                    b_b.append(-1 if sb is None else sb[1])
                    if sb is None:
                        b_kind.append(K_B)
                    elif bat_a and bat_b:
                        b_kind.append(K_BB)
                    elif bat_a:
                        b_kind.append(K_BS)
                    else:
                        b_kind.append(K_SB)
                    slot[key] = (True, n_in + nb_ops)
                    nb_ops += 1
                else:
                    s_op.append(op)
                    s_out.append(ns_ops)        # offset below
                    s_c.append(_const_c(v))
                    s_a.append(sa[1])
                    s_b.append(-1 if sb is None else sb[1])
                    slot[key] = (False, -1 - ns_ops)   # placeholder, fixed below
                    ns_ops += 1
        finally:
            free(order)
            order = NULL
    missing = [i for i in range(n_in) if <size_t><PyObject*>ins[i] not in slot]
    if missing:
        raise ValueError(f"compile: input(s) {missing} are not in the graph of "
                         "the outputs: every input must be used")
    missing = [i for i in range(n_par) if <size_t><PyObject*>pars[i] not in slot]
    if missing:
        raise ValueError(f"compile: parameter(s) {missing} (of {n_par}) are not "
                         "in the graph of the outputs or the penalty")
    # scalar instruction results go after parameters and constants; scalar
    # operand indices recorded as -1-k (results) are remapped now
    n_const = len(consts)
    base = n_par + n_const

    def fix(int s):
        return s if s >= 0 else base + (-1 - s)

    s_out = [base + k for k in s_out]
    s_a = [fix(x) for x in s_a]
    # s_b uses -1 for "none"; a real reference to scalar result 0 is also -1:
    # disambiguate by the op's arity
    s_b = [fix(s_b[k]) if op_is_binary(s_op[k]) else -1 for k in range(ns_ops)]
    for k in range(nb_ops):
        if b_kind[k] == K_SB:
            b_a[k] = fix(b_a[k])
        if b_kind[k] == K_BS:
            b_b[k] = fix(b_b[k])
    b_out = [n_in + k for k in b_out]
    b_s = [-1] * nb_ops
    o_rows = set()
    for r in outs:
        sa = slot[<size_t><PyObject*>r]
        if sa[0]:
            o_rows.add(sa[1])
    if FUSE:
        nb_ops = _fuse(b_op, b_kind, b_out, b_a, b_b, b_s, b_c, n_in, o_rows, slot)

    prog = Program.__new__(Program, _TOKEN)
    prog.n_inputs = n_in
    prog.n_outputs = len(outs)
    prog.n_params = n_par
    prog.n_const = n_const
    prog.n_scalar = base + ns_ops
    prog.n_batched = n_in + nb_ops
    prog.n_sinstr = ns_ops
    prog.n_binstr = nb_ops
    prog._params = tuple(pars)
    prog.consts = np.array(consts + [0.0], np.float64)
    prog.s_op = np.array(s_op + [0], np.uint8)
    prog.s_out = np.array(s_out + [0], np.int32)
    prog.s_a = np.array(s_a + [0], np.int32)
    prog.s_b = np.array(s_b + [0], np.int32)
    prog.s_c = np.array(s_c + [0.0], np.float64)
    prog.b_op = np.array(b_op + [0], np.uint8)
    prog.b_kind = np.array(b_kind + [0], np.uint8)
    prog.b_out = np.array(b_out + [0], np.int32)
    prog.b_a = np.array(b_a + [0], np.int32)
    prog.b_b = np.array(b_b + [0], np.int32)
    prog.b_s = np.array(b_s + [0], np.int32)
    prog.b_c = np.array(b_c + [0.0], np.float64)
    o_slot = []
    o_bat = []
    for r in outs:
        sa = slot[<size_t><PyObject*>r]
        o_bat.append(1 if sa[0] else 0)
        o_slot.append(sa[1] if sa[0] else fix(sa[1]))
    prog.o_slot = np.array(o_slot, np.int32)
    prog.o_bat = np.array(o_bat, np.uint8)
    _forward_tape(prog, b_op, b_kind, b_out, b_a, b_b, b_s, b_c, o_slot, o_bat)
    prog.pen_slot = -1
    if penalty is not None:
        sa = slot[<size_t><PyObject*>penalty]
        if sa[0]:
            raise ValueError("compile: the penalty depends on an input; it must "
                             "be a function of the parameters (and constants) only")
        prog.pen_slot = fix(sa[1])
    prog.vs = np.zeros(prog.n_scalar + 1, np.float64)
    prog.gs = np.zeros(prog.n_scalar + 1, np.float64)
    prog.vs1 = np.zeros(prog.n_scalar + 1, np.float64)
    prog.vb1 = np.zeros(prog.n_batched + 1, np.float64)
    for k in range(n_const):
        prog.vs[n_par + k] = consts[k]
        prog.vs1[n_par + k] = consts[k]
    prog.ld = 0
    prog.cap_cols = 0
    prog.cap_rows_g = 0
    prog._plans = {}
    prog._busy = False
    prog.theta_in = NULL
    prog.c_load_params()
    return prog


# ---------------------------------------------------------------------------
# num_grad / gradcheck of a Program (the protocol of fastgrad._numgrad)
# ---------------------------------------------------------------------------

cdef object _fd_vector(x, Py_ssize_t n, str what):
    if (not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.ndim != 1
            or not x.flags.c_contiguous):
        raise TypeError(f"num_grad: a compiled Program is differentiated with "
                        f"respect to a 1-d C-contiguous float64 array of its {what}, "
                        f"got {type(x).__name__} {getattr(x, 'dtype', '')} "
                        f"{getattr(x, 'shape', '')}")
    if x.shape[0] != n:
        raise ValueError(f"num_grad: expected {what} of shape ({n},), got {x.shape}")
    return x


cdef tuple _init_scratch(Evaluator ev, Program p):
    """Private value buffers for one evaluator: finite differences of one
    Program in several threads never share scratch space (the Program's own
    buffers belong to its methods, guarded by the busy flag)."""
    cdef Py_ssize_t i
    cdef double[::1] vs = np.array(p.vs1, dtype=np.float64)   # holds the constants
    for i in range(p.n_params):
        vs[i] = (<Value>p._params[i]).data
    ev.work = p.n_sinstr + p.n_binstr + p.n_inputs + 1
    return vs, np.zeros(p.n_batched + 1, np.float64)


@cython.final
cdef class _FDInputs(Evaluator):
    """Output 0 as a function of the input vector (parameters fixed)."""
    cdef Program prog
    cdef const double[::1] x
    cdef double[::1] vs, vb            # private scratch (see _init_scratch)

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError("_FDInputs objects are made by Program._fd_evaluator")

    cdef double evaluate(self) noexcept nogil:
        return self.prog.c_eval_in(NULL, &self.x[0] if self.x.shape[0] > 0 else NULL,
                                   &self.vs[0], &self.vb[0])

    cdef int gradient(self, double[::1] out) except -1:
        # value_and_grad's replay without storing anything in the parameters
        cdef Program p = self.prog
        gin = np.zeros((1, p.n_inputs), np.float64)
        mats = p._vector(np.asarray(self.x), "gradcheck")
        p._enter("gradcheck")
        try:
            p._run(mats, 1, 0, True, True, False, None,
                   gin if p.n_inputs > 0 else None)
        finally:
            p._busy = False
        np.asarray(out)[:] = gin[0]
        return 0


@cython.final
cdef class _FDParams(Evaluator):
    """Output 0 as a function of the parameter vector (input fixed)."""
    cdef Program prog
    cdef const double[::1] theta
    cdef double[::1] x
    cdef double[::1] vs, vb            # private scratch (see _init_scratch)

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError("_FDParams objects are made by Program.wrt_params")

    cdef double evaluate(self) noexcept nogil:
        return self.prog.c_eval_in(
            &self.theta[0] if self.theta.shape[0] > 0 else NULL, &self.x[0],
            &self.vs[0], &self.vb[0])

    cdef int gradient(self, double[::1] out) except -1:
        # value_and_grad's replay at parameters theta, without touching the
        # parameters' .data/.grad (another thread may be reading them)
        cdef Program p = self.prog
        cdef Py_ssize_t i
        mats = p._vector(np.asarray(self.x)[:p.n_inputs], "gradcheck")
        p._enter("gradcheck")
        try:
            if p.n_params > 0:
                p.theta_in = &self.theta[0]
            p._run(mats, 1, 0, True, False, False, None, None)
            for i in range(p.n_params):
                out[i] = p.gs[i]
        finally:
            p.theta_in = NULL
            p._busy = False
        return 0


@cython.final
cdef class _WrtParams:
    """``num_grad``/``gradcheck`` target: a Program's output 0 as a function of
    its parameter vector at a fixed input (see Program.wrt_params).

    ``program`` and ``x`` are read-only, and ``x`` is a private read-only
    copy: the evaluator handed to the finite-difference loop always reads
    exactly ``program.n_inputs`` values (a replaced ``x`` of another length
    used to make the C loop read past its end).
    """
    cdef readonly Program program
    cdef readonly object x

    def __cinit__(self, token=None, Program prog=None, x=None):
        if token is not _TOKEN or prog is None:
            raise TypeError("_WrtParams objects are made by Program.wrt_params")
        x = np.array(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != prog.n_inputs:
            raise ValueError(f"wrt_params: expected {prog.n_inputs} inputs, got "
                             f"{x.shape[0]}")
        x.flags.writeable = False
        self.program = prog
        self.x = x

    def __reduce__(self):
        raise TypeError("a compiled Program (and its wrt_params view) cannot be "
                        "pickled; compile it again")

    def _fd_evaluator(self, theta):
        cdef Program p = self.program
        cdef _FDParams ev = _FDParams.__new__(_FDParams, _TOKEN)
        ev.theta = _fd_vector(theta, p.n_params, "parameters")
        ev.x = np.append(self.x, 0.0)     # never empty (a pointer to pass)
        ev.prog = p
        ev.vs, ev.vb = _init_scratch(ev, p)
        return ev

    def __call__(self, theta):
        return self.program.eval_params(theta, self.x)


# ---------------------------------------------------------------------------
# input conversion
# ---------------------------------------------------------------------------

cdef object _real_vector(v, str what):
    """eval_params' arguments: real numbers (a complex array used to be cast
    with only a ComplexWarning), flattened to float64."""
    arr = np.asarray(v)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"eval_params: {what} must be real numbers, got dtype "
                        f"{arr.dtype}")
    return np.ascontiguousarray(arr, np.float64).reshape(-1)


def _as_matrix(x, str where):
    """x as a 2-D C-contiguous float64 array (a copy only when needed)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"{where}: inputs must be a real (float or int) array, "
                        f"got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array of shape (batch, "
                         f"n_inputs) (or 1-D columns), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


# ---------------------------------------------------------------------------
# the program
# ---------------------------------------------------------------------------

@cython.final
cdef class Program:
    """A recorded graph, replayed in C.  Built by fastgrad.compiled.compile.

    Threads: the replay methods (``forward``, ``value_and_grad``, ``batch``,
    ``predict``, ``sgd_step``, ``eval_params``) share the Program's work
    buffers, so a Program is not re-entrant: a call while another thread is
    inside one of them raises ``RuntimeError`` ("not re-entrant").
    ``num_grad``/``gradcheck`` of a Program (or of ``wrt_params(x)``) give
    every call its own scratch space: they run concurrently and correctly
    (gradcheck's analytic part is a ``value_and_grad`` and may raise that
    RuntimeError).

    Ctrl-C: the batch loops check for signals every few milliseconds of work
    and raise ``KeyboardInterrupt``; the parameters (``.data`` and ``.grad``)
    are then unchanged, while ``outputs``/``input_grad``/``out`` arrays may be
    partly written.
    """

    def __cinit__(self, *args, **kwargs):
        if len(args) != 1 or args[0] is not _TOKEN or kwargs:
            raise TypeError("Program objects are made by fastgrad.compile / "
                            "fastgrad.compiled.compile_graph")

    def __init__(self, *args, **kwargs):
        raise TypeError("Program objects are made by fastgrad.compile / "
                        "fastgrad.compiled.compile_graph")

    # -- introspection ---------------------------------------------------------

    @property
    def params(self):
        """The parameter Values, in the order their gradients are reported."""
        return self._params

    @property
    def n_instructions(self):
        """Number of recorded operation nodes (scalar + batched tape)."""
        return self.n_sinstr + self.n_binstr

    @property
    def has_penalty(self):
        """True when a parameter-only penalty term was recorded."""
        return self.pen_slot >= 0

    def tape(self):
        """The recorded tape as a dict of numpy arrays (copies), for inspection."""
        return {
            "scalar": {"op": np.asarray(self.s_op)[:self.n_sinstr].copy(),
                       "out": np.asarray(self.s_out)[:self.n_sinstr].copy(),
                       "a": np.asarray(self.s_a)[:self.n_sinstr].copy(),
                       "b": np.asarray(self.s_b)[:self.n_sinstr].copy(),
                       "c": np.asarray(self.s_c)[:self.n_sinstr].copy()},
            "batched": {"op": np.asarray(self.b_op)[:self.n_binstr].copy(),
                        "kind": np.asarray(self.b_kind)[:self.n_binstr].copy(),
                        "out": np.asarray(self.b_out)[:self.n_binstr].copy(),
                        "a": np.asarray(self.b_a)[:self.n_binstr].copy(),
                        "b": np.asarray(self.b_b)[:self.n_binstr].copy(),
                        "s": np.asarray(self.b_s)[:self.n_binstr].copy(),
                        "c": np.asarray(self.b_c)[:self.n_binstr].copy()},
            "constants": np.asarray(self.consts)[:self.n_const].copy(),
        }

    def __repr__(self):
        return (f"<fastgrad compiled Program: {self.n_inputs} inputs, "
                f"{self.n_params} params, {self.n_outputs} outputs, "
                f"{self.n_binstr} per-sample + {self.n_sinstr} shared "
                f"instructions{', penalty' if self.pen_slot >= 0 else ''}>")

    def __reduce__(self):
        raise TypeError("a compiled Program cannot be pickled; compile it again")

    # -- C entry points ----------------------------------------------------

    cdef int c_load_params(self) except -1:
        """Read the parameters' current .data into the program."""
        cdef Py_ssize_t i
        cdef double d
        cdef tuple ps = self._params
        for i in range(self.n_params):
            d = self.theta_in[i] if self.theta_in != NULL else (<Value>ps[i]).data
            self.vs[i] = d
            self.vs1[i] = d
        return 0

    cdef double c_eval(self, const double* theta, const double* x) noexcept nogil:
        """Output 0 for one input vector ``x`` (n_inputs doubles).

        ``theta`` (n_params doubles) replaces the parameter values, or NULL to
        use those read by the last ``c_load_params``.  Uses private buffers:
        safe to interleave with the other methods (not with another thread).
        """
        return self.c_eval_in(theta, x, &self.vs1[0], &self.vb1[0])

    cdef double c_eval_in(self, const double* theta, const double* x, double* vs,
                          double* vb) noexcept nogil:
        """``c_eval`` on the caller's scratch: ``vs`` (n_scalar + 1 doubles,
        holding the constants and, if theta is NULL, the parameters) and
        ``vb`` (n_batched + 1 doubles)."""
        cdef int i
        if theta != NULL:
            for i in range(self.n_params):
                vs[i] = theta[i]
        forward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                       &self.s_a[0], &self.s_b[0], &self.s_c[0], vs)
        for i in range(self.n_inputs):
            vb[i] = x[i]
        forward_batched(self.n_binstr, &self.b_op[0], &self.b_kind[0],
                        &self.b_out[0], &self.b_a[0], &self.b_b[0],
                        &self.b_s[0], &self.b_c[0], NULL, NULL, vs, vb, 1, 1)
        if self.o_bat[0]:
            return vb[self.o_slot[0]]
        return vs[self.o_slot[0]]

    # -- internals -------------------------------------------------------------

    cdef _Plan _plan(self, bint want_inputs, bint with_pen):
        key = (want_inputs, with_pen)
        plan = self._plans.get(key)
        if plan is None:
            plan = make_plan(self, want_inputs, with_pen)
            self._plans[key] = plan
        return <_Plan>plan

    cdef int _ensure(self, Py_ssize_t cols, bint grad) except -1:
        """Size the work buffers for ``cols`` columns; sets ``self.ld``.

        With gradients: values and gradients of every batched slot.  Forward
        only: the reused rows of the forward-only allocation.
        """
        cdef Py_ssize_t ld = (cols + 7) & ~(<Py_ssize_t>7)   # 64-byte rows
        cdef Py_ssize_t rows = max(self.n_batched if grad else self.n_frows, 1)
        if rows * ld > self.cap_cols:
            self.vb = np.empty(rows * ld, np.float64)
            self.cap_cols = rows * ld
        if grad and rows * ld > self.cap_rows_g:
            self.gb = np.empty(rows * ld, np.float64)
            self.cap_rows_g = rows * ld
        self.ld = ld
        return 0

    cdef Py_ssize_t _chunk(self, Py_ssize_t B, bint grad) noexcept:
        cdef Py_ssize_t per_col, ch, nch
        if grad:
            per_col = 16 * max(self.n_batched, 1)
            ch = CHUNK_BYTES // per_col
        else:
            # forward only: a multiple of the dot block (no scalar tails but
            # in the last chunk)
            per_col = 8 * max(self.n_frows, 1)
            ch = FWD_CHUNK_BYTES // per_col
            ch = max(ch - ch % DOT_BLOCK, DOT_BLOCK)
            return B if ch >= B else min(ch, MAX_CHUNK - MAX_CHUNK % DOT_BLOCK)
        if ch < MIN_CHUNK:
            ch = MIN_CHUNK
        if ch > MAX_CHUNK:
            ch = MAX_CHUNK
        if ch >= B:
            return B
        # equal chunks rather than a full run and a small remainder
        nch = (B + ch - 1) // ch
        return (B + nch - 1) // nch

    cdef object _sources(self, inputs, str where):
        """Inputs as a list of 2-D float64 arrays whose columns add up.

        ``inputs`` is one (B, n_inputs) array-like, or a tuple of arrays
        ((B,) or (B, k)) whose columns are concatenated (``(X, y)``).
        """
        if isinstance(inputs, tuple):
            if not inputs:
                raise ValueError(f"{where}: empty tuple of input arrays")
            mats = [_as_matrix(a, where) for a in inputs]
        else:
            mats = [_as_matrix(inputs, where)]
        B = mats[0].shape[0]
        cols = 0
        for m in mats:
            if m.shape[0] != B:
                raise ValueError(f"{where}: input arrays have different numbers of "
                                 f"rows: {[m.shape[0] for m in mats]}")
            cols += m.shape[1]
        if cols != self.n_inputs:
            shapes = [m.shape for m in mats]
            raise ValueError(f"{where}: expected {self.n_inputs} input columns "
                             f"(shape (batch, {self.n_inputs})), got {cols} "
                             f"(shape{'s' if len(mats) > 1 else ''} "
                             f"{shapes if len(mats) > 1 else shapes[0]})")
        if B == 0:
            raise ValueError(f"{where}: empty batch (0 rows)")
        return mats

    cdef object _vector(self, x, str where):
        arr = np.asarray(x)
        if arr.ndim != 1 or arr.shape[0] != self.n_inputs:
            raise ValueError(f"{where}: expected one input vector of length "
                             f"{self.n_inputs}, got shape {arr.shape}"
                             + ("; use predict()/batch() for a batch of rows"
                                if arr.ndim == 2 else ""))
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{where}: inputs must be real numbers, got dtype "
                            f"{arr.dtype}")
        return [np.ascontiguousarray(arr, dtype=np.float64).reshape(1, -1)]

    cdef double _run(self, list mats, Py_ssize_t B, int reduce_mode,
                     bint grad, bint want_inputs, bint with_pen,
                     double[:, ::1] outv, double[:, ::1] ging) except? -1.0:
        """Forward (and backward) over B >= 1 rows; returns reduced output 0.

        reduce_mode: 0 sum, 1 mean.  Parameter gradients are left in self.gs
        (slots 0..n_params-1); input gradients go to ``ging`` (B, n_inputs)
        when given.  ``outv`` (B, n_outputs) receives per-row outputs.
        """
        cdef Py_ssize_t ch = self._chunk(B, grad), j0, n, j, r, ncol, cc
        cdef Py_ssize_t ld
        cdef int q, nsrc = len(mats), o0, n_out = self.n_outputs
        cdef int n_in = self.n_inputs
        cdef double total = 0.0, seed
        cdef double* vs
        cdef double* gs
        cdef double* vb
        cdef double* gb = NULL
        cdef double* row
        cdef double* po = NULL
        cdef double* pgi = NULL
        cdef const double* src
        cdef _Plan plan = None
        cdef bint o_bat0 = self.o_bat[0]
        cdef bint has_out = outv is not None, has_gin = ging is not None
        cdef const double* srcs[64]
        cdef Py_ssize_t src_cols[64]
        cdef const double[:, ::1] mv
        cdef list keep = []
        cdef const unsigned char* bma = NULL
        cdef const unsigned char* bmb = NULL
        cdef const unsigned char* bms = NULL
        cdef const unsigned char* sma = NULL
        cdef const unsigned char* smb = NULL
        cdef const unsigned char* in_ng = NULL
        cdef const unsigned char* o_bat = &self.o_bat[0]
        # forward only: the tape on reused rows (see _alloc_rows)
        cdef const int* o_slot = &self.o_slot[0] if grad else &self.f_oslot[0]
        cdef int t_n = self.n_binstr if grad else self.n_finstr
        cdef const unsigned char* t_op = &self.b_op[0] if grad else &self.f_op[0]
        cdef const unsigned char* t_kind = &self.b_kind[0] if grad else &self.f_kind[0]
        cdef const int* t_out = &self.b_out[0] if grad else &self.f_out[0]
        cdef const int* t_a = &self.b_a[0] if grad else &self.f_a[0]
        cdef const int* t_b = &self.b_b[0] if grad else &self.f_b[0]
        cdef const int* t_s = &self.b_s[0] if grad else &self.f_s[0]
        cdef const double* t_c = &self.b_c[0] if grad else &self.f_c[0]
        cdef Py_ssize_t work = 0, sig_work = SIGNAL_WORK
        cdef Py_ssize_t per_col_work = (3 if grad else 1) * t_n + n_in + 1
        cdef bint interrupted = False
        if nsrc > 64:
            mats = [np.ascontiguousarray(np.hstack(mats))]
            nsrc = 1
        for q in range(nsrc):
            mv = mats[q]
            keep.append(mv)
            src_cols[q] = mv.shape[1]
            srcs[q] = &mv[0, 0] if mv.shape[1] > 0 else NULL
        self._ensure(ch, grad)
        ld = self.ld
        if grad:
            plan = self._plan(want_inputs, with_pen)
            bma = &plan.bma[0]
            bmb = &plan.bmb[0]
            bms = &plan.bms[0]
            sma = &plan.sma[0]
            smb = &plan.smb[0]
            in_ng = &plan.in_ng[0]
            gb = &self.gb[0]
        if has_out:
            po = &outv[0, 0]
        if has_gin and n_in > 0:          # (B, 0): nothing to write
            pgi = &ging[0, 0]
        self.c_load_params()
        vs = &self.vs[0]
        gs = &self.gs[0]
        vb = &self.vb[0]
        seed = (1.0 / B) if reduce_mode == 1 else 1.0
        o0 = o_slot[0]
        with nogil:
            forward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                           &self.s_a[0], &self.s_b[0], &self.s_c[0], vs)
            if grad:
                memset(gs, 0, self.n_scalar * sizeof(double))
            j0 = 0
            while j0 < B:
                n = B - j0
                if n > ch:
                    n = ch
                # scatter the input columns into rows 0..n_inputs-1
                r = 0
                for q in range(nsrc):
                    ncol = src_cols[q]
                    src = srcs[q]
                    for cc in range(ncol):
                        row = vb + r * ld
                        for j in range(n):
                            row[j] = src[(j0 + j) * ncol + cc]
                        r += 1
                forward_batched(t_n, t_op, t_kind, t_out, t_a, t_b, t_s, t_c,
                                &self.d_s[0], &self.d_x[0], vs, vb, ld, n)
                # reduce output 0 in row order (as eager's sum(losses))
                if o_bat0:
                    row = vb + o0 * ld
                    for j in range(n):
                        total += row[j]
                else:
                    # n additions, not n * vs[o0]: the same rounding as the
                    # batched branch above
                    for j in range(n):  # no-cython-lint
                        total += vs[o0]
                if has_out:
                    for q in range(n_out):
                        if o_bat[q]:
                            row = vb + o_slot[q] * ld
                            for j in range(n):
                                po[(j0 + j) * n_out + q] = row[j]
                        else:
                            for j in range(n):
                                po[(j0 + j) * n_out + q] = vs[o_slot[q]]
                if grad:
                    if o_bat0:
                        row = gb + o0 * ld
                        for j in range(n):
                            row[j] = seed
                    else:
                        for j in range(n):  # no-cython-lint (n additions, as above)
                            gs[o0] += seed
                    backward_batched(self.n_binstr, &self.b_op[0],
                                     &self.b_kind[0], &self.b_out[0],
                                     &self.b_a[0], &self.b_b[0], &self.b_s[0],
                                     &self.b_c[0], bma, bmb, bms, vs, gs, vb,
                                     gb, ld, n)
                    if pgi != NULL:
                        for q in range(n_in):
                            row = gb + q * ld
                            if in_ng[q]:
                                for j in range(n):
                                    pgi[(j0 + j) * n_in + q] = row[j]
                            else:
                                for j in range(n):
                                    pgi[(j0 + j) * n_in + q] = 0.0
                j0 += n
                # Ctrl-C: see SIGNAL_WORK
                work += n * per_col_work
                if work >= sig_work and sig_work > 0 and j0 < B:
                    work = 0
                    with gil:
                        interrupted = PyErr_CheckSignals() < 0
                    if interrupted:
                        break
            if grad and not interrupted:
                if with_pen and self.pen_slot >= 0:
                    gs[self.pen_slot] += 1.0
                backward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                                &self.s_a[0], &self.s_b[0], &self.s_c[0],
                                sma, smb, vs, gs)
        if interrupted:
            return -1.0         # the KeyboardInterrupt (or handler's error) is set
        if reduce_mode == 1:
            total = total * (1.0 / B)
        if with_pen and self.pen_slot >= 0:
            total = total + vs[self.pen_slot]
        return total

    cdef int _enter(self, str where) except -1:
        if self._busy:
            raise RuntimeError(f"{where}: this Program is already running (in "
                               "another thread); a Program is not re-entrant")
        self._busy = True
        return 0

    cdef int _store_param_grads(self, bint accumulate, param_grad) except -1:
        cdef Py_ssize_t i
        cdef tuple ps = self._params
        cdef double[::1] pg
        cdef Value p
        if param_grad is not None:
            pg = param_grad
        for i in range(self.n_params):
            p = <Value>ps[i]
            if accumulate:
                p.grad += self.gs[i]
            else:
                p.grad = self.gs[i]
            if param_grad is not None:
                pg[i] = self.gs[i]
        return 0

    cdef object _check_param_grad(self, param_grad, str where):
        if param_grad is None:
            return None
        if not isinstance(param_grad, np.ndarray) or param_grad.dtype != np.float64 \
                or param_grad.shape != (self.n_params,) \
                or not param_grad.flags.c_contiguous or not param_grad.flags.writeable:
            raise ValueError(f"{where}: param_grad must be a writeable contiguous "
                             f"float64 array of shape ({self.n_params},), got "
                             f"{type(param_grad).__name__} "
                             f"{getattr(param_grad, 'dtype', '')} "
                             f"{getattr(param_grad, 'shape', '')}")
        return param_grad

    # -- public replay -------------------------------------------------------

    def forward(self, x):
        """Outputs of the program for one input vector.

        Parameters
        ----------
        x : sequence of float, length ``n_inputs``

        Returns
        -------
        float (one output) or ndarray of shape (n_outputs,)

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: x[0] * w, 1, params=[w]).forward([4.0])
        8.0
        """
        mats = self._vector(x, "forward")
        out = np.empty((1, self.n_outputs), np.float64)
        self._enter("forward")
        try:
            self._run(mats, 1, 0, False, False, False, out, None)
        finally:
            self._busy = False
        if self.n_outputs == 1:
            return float(out[0, 0])
        return out[0]

    def __call__(self, x):
        """``prog(x)`` is ``prog.forward(x)``."""
        return self.forward(x)

    def value_and_grad(self, x, bint accumulate=True, param_grad=None):
        """Output 0 for one input vector and its gradient.

        Parameters
        ----------
        x : sequence of float, length ``n_inputs``
        accumulate : bool, default True
            Add the parameter gradients to each parameter's ``.grad`` (as
            ``backward()``); False sets ``.grad`` instead.
        param_grad : ndarray of float64, shape (n_params,), optional
            Also receives the parameter gradients (set, not added).

        Returns
        -------
        value : float
        input_grad : ndarray of shape (n_inputs,)

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> val, dx = prog.value_and_grad([4.0])
        >>> val, float(dx[0]), w.grad
        (8.0, 2.0, 4.0)
        """
        mats = self._vector(x, "value_and_grad")
        pg = self._check_param_grad(param_grad, "value_and_grad")
        gin = np.zeros((1, self.n_inputs), np.float64)
        self._enter("value_and_grad")
        try:
            val = self._run(mats, 1, 0, True, True, False, None,
                            gin if self.n_inputs > 0 else None)
            self._store_param_grads(accumulate, pg)
        finally:
            self._busy = False
        return val, gin[0]

    def batch(self, inputs, reduce="mean", bint grad=True, outputs=None,
              param_grad=None, input_grad=None, bint accumulate=True):
        """Replay over the rows of a batch: reduced output 0, plus the penalty.

        The loss is ``reduce_i out0(row_i) + penalty`` where ``reduce`` is the
        sum (in row order) or the mean (that sum times ``1.0 / B``, as
        micrograd's demo writes it).  With ``grad=True`` its gradient with
        respect to every parameter is computed (the batch-sum of per-row
        contributions) and lands in the parameters' ``.grad``.

        Parameters
        ----------
        inputs : array_like (B, n_inputs), or tuple of arrays
            One row per sample.  A tuple such as ``(X, y)`` of (B,) / (B, k)
            arrays is read as their columns side by side (no copy).  Other
            dtypes/layouts than C-contiguous float64 are converted (a copy
            of the input only).
        reduce : {"mean", "sum"}
        grad : bool, default True
        outputs : ndarray (B, n_outputs) float64, optional
            Receives every output for every row.
        param_grad : ndarray (n_params,) float64, optional
            Receives the parameter gradients (set).
        input_grad : ndarray (B, n_inputs) float64, optional
            Receives d(loss)/d(input) for every row.
        accumulate : bool, default True
            Add to ``.grad`` (True, as ``backward()``) or set it (False).

        Returns
        -------
        float
            The loss.

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> prog.batch(np.array([[1.0], [3.0]]), reduce="sum"), w.grad
        (8.0, 4.0)
        """
        cdef int mode
        if reduce == "mean":
            mode = 1
        elif reduce == "sum":
            mode = 0
        else:
            raise ValueError(f"batch: reduce must be 'mean' or 'sum', got {reduce!r}")
        mats = self._sources(inputs, "batch")
        B = mats[0].shape[0]
        outv = self._check_out(outputs, B, self.n_outputs, "outputs", "batch")
        ging = None
        if input_grad is not None:
            if not grad:
                raise ValueError("batch: input_grad given but grad=False")
            ging = self._check_out(input_grad, B, self.n_inputs, "input_grad",
                                   "batch")
        pg = self._check_param_grad(param_grad, "batch")
        if not grad and pg is not None:
            raise ValueError("batch: param_grad given but grad=False")
        self._enter("batch")
        try:
            val = self._run(mats, B, mode, grad, ging is not None, True, outv, ging)
            if grad:
                self._store_param_grads(accumulate, pg)
        finally:
            self._busy = False
        return val

    cdef object _check_out(self, arr, Py_ssize_t B, int k, str name, str where):
        if arr is None:
            return None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 \
                or arr.shape != (B, k) or not arr.flags.c_contiguous \
                or not arr.flags.writeable:
            raise ValueError(f"{where}: {name} must be a writeable C-contiguous "
                             f"float64 array of shape ({B}, {k}), got "
                             f"{type(arr).__name__} {getattr(arr, 'dtype', '')} "
                             f"{getattr(arr, 'shape', '')}")
        return arr

    def predict(self, inputs, out=None):
        """Outputs for every row, forward only (no gradient buffers).

        Parameters
        ----------
        inputs : array_like (B, n_inputs), or tuple of arrays (see ``batch``)
        out : ndarray, optional
            (B,) (one output) or (B, n_outputs) float64 array to fill.

        Returns
        -------
        ndarray of shape (B,) (one output) or (B, n_outputs)

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: (x[0] * w).relu(), 1, params=[w]).predict(
        ...     np.array([[1.0], [-3.0]])).tolist()
        [2.0, 0.0]
        """
        mats = self._sources(inputs, "predict")
        B = mats[0].shape[0]
        if out is None:
            res = np.empty((B, self.n_outputs), np.float64)
        else:
            res = out
            if (self.n_outputs == 1 and isinstance(out, np.ndarray)
                    and out.shape == (B,) and out.dtype == np.float64
                    and out.flags.c_contiguous):
                res = out.reshape(B, 1)       # a view
            self._check_out(res, B, self.n_outputs, "out", "predict")
        self._enter("predict")
        try:
            self._run(mats, B, 0, False, False, False, res, None)
        finally:
            self._busy = False
        if out is not None:
            return out
        return res[:, 0] if self.n_outputs == 1 else res

    def sgd_step(self, inputs, lr, reduce="mean", outputs=None):
        """One plain SGD step: ``batch`` then ``p.data -= lr * grad``.

        Each parameter's ``.grad`` is *set* to this batch's gradient (as
        ``zero_grad(); loss.backward()`` would leave it) before the update.

        Parameters
        ----------
        inputs : see ``batch``
        lr : float
            Finite and >= 0 (as ``fastgrad.optim.SGD`` requires).
        reduce : {"mean", "sum"}
        outputs : ndarray (B, n_outputs) float64, optional

        Returns
        -------
        float
            The loss before the update.

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> prog.sgd_step(np.array([[1.0]]), 0.5), w.data
        (2.0, 1.5)
        """
        cdef Py_ssize_t i
        cdef Value p
        cdef tuple ps = self._params
        cdef double g, step
        if type(lr) is not float and (isinstance(lr, (bool, np.bool_))
                                      or not isinstance(lr, numbers.Real)):
            raise TypeError(f"sgd_step: lr must be a real number, got "
                            f"{type(lr).__name__} {lr!r:.40}")
        step = float(lr)
        if not isfinite(step) or step < 0.0:
            raise ValueError(f"sgd_step: invalid lr {lr!r} (must be finite and >= 0)")
        loss = self.batch(inputs, reduce=reduce, grad=True, outputs=outputs,
                          accumulate=False)
        for i in range(self.n_params):
            p = <Value>ps[i]
            g = self.gs[i]
            p.data -= step * g
        return loss

    def eval_params(self, theta, x):
        """Output 0 for parameter values ``theta`` and one input ``x``.

        Nothing is stored: neither the parameters' ``.data`` nor any
        gradient changes.  The C twin ``Program.c_eval`` (see _replay.pxd)
        is what finite-difference loops call.

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: x[0] * w, 1, params=[w]).eval_params([5.0], [3.0])
        15.0
        """
        cdef const double[::1] th = _real_vector(theta, "parameter values")
        cdef const double[::1] xv = _real_vector(x, "inputs")
        if th.shape[0] != self.n_params:
            raise ValueError(f"eval_params: expected {self.n_params} parameter "
                             f"values, got {th.shape[0]}")
        if xv.shape[0] != self.n_inputs:
            raise ValueError(f"eval_params: expected {self.n_inputs} inputs, got "
                             f"{xv.shape[0]}")
        self._enter("eval_params")
        try:
            return self.c_eval(&th[0] if self.n_params else NULL,
                               &xv[0] if self.n_inputs else NULL)
        finally:
            self._busy = False

    def _fd_evaluator(self, x):
        """num_grad/gradcheck protocol (fastgrad._numgrad): output 0 as a
        function of the input vector ``x``, evaluated in C."""
        cdef _FDInputs ev = _FDInputs.__new__(_FDInputs, _TOKEN)
        ev.x = _fd_vector(x, self.n_inputs, "inputs")
        ev.prog = self
        ev.vs, ev.vb = _init_scratch(ev, self)
        return ev

    def wrt_params(self, x):
        """Output 0 at the fixed input ``x`` as a function of the parameters.

        For ``fastgrad.num_grad(prog.wrt_params(x), theta)`` and
        ``gradcheck``: the finite-difference loop runs in C.

        Examples
        --------
        >>> import numpy as np, fastgrad
        >>> w = fastgrad.Value(3.0)
        >>> prog = fastgrad.compile(lambda v: v[0] * w * w, 1, params=[w])
        >>> round(float(fastgrad.num_grad(prog.wrt_params([2.0]), np.array([3.0]))[0]), 6)
        12.0
        """
        return _WrtParams(_TOKEN, self, self._vector(x, "wrt_params")[0].reshape(-1))

    def param_values(self):
        """The parameters' current .data as a float64 array."""
        return np.array([(<Value>p).data for p in self._params], np.float64)
