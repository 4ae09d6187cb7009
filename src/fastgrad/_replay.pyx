# cython: language_level=3
"""Compiled graph replay: record a graph of Values once, replay it in C.

The compiler's stages, one file each (included below, in this order)
---------------------------------------------------------------------
1. ``_replay_record.pxi`` -- recording: ``build`` sorts the graph and writes
   the flat scalar and batched tapes, then runs the passes.
2. ``_replay_passes.pxi`` -- analysis passes over the batched tape: fused
   mul-adds, the forward-only tape (dot chains, row reuse) and dense layers
   (groups of dot chains over the same rows, see ``_replay_layers.pxi``);
   ``_replay_plan.pxi`` -- backward plans (which gradients a replay needs).
3. ``_replay_kernels.pxi`` -- the per-instruction loops over batch columns,
   and ``_replay_layers.pxi`` with ``_replay_gemm.h`` -- the layer kernels
   (register-tiled, one build per x86-64 ISA, chosen at import) --, and
   ``_replay_epilogue.pxi`` -- a layer's activation ops after its kernel.
   ``_replay_blocks.pxi`` runs a batch over column blocks (threads);
   ``_replay_row.pxi`` runs one row (B == 1) in scalar C, same bits.
4. ``_replay_program.pxi`` -- the Python-facing ``Program``, the
   finite-difference evaluators and ``_DemoStep`` (``make_demo_step``'s
   step in one C call); ``_replay_describe.pxi`` -- ``Program.graph()``, the
   recorded program as plain data (what ``fastgrad.export`` reads).

Design summary
--------------
* Recording (``build``) sorts the graph (``topo_order_many``, iterative) and turns
  every node into one instruction of a flat tape: op code (uint8), operand
  slots (int32, -1 for none), baked constant (double).  Recording and the
  passes are linear in the graph and keep no Python object per node.  Leaves become slots:
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
* Dense layers (``_replay_layers.pxi``): in the training tape, groups of dot
  chains over the same rows (a Layer of neurons, however its sums are
  written: bias first, last or absent, ``sum()``'s 0, a loop) become one
  OP_LAYER whose forward and backward are register-tiled matrix kernels
  (forward: the same floats; backward: reordered sums), with the activation
  ops that follow (relu, tanh, a hand-written sigmoid ...) in its epilogue.
  ``Program.summary()`` says what was found.  A chain of products summed on the
  scalar tape (an L2 penalty) becomes one OP_SDOT.
* Large batches are processed in column chunks sized to stay in cache (or,
  for a long tape without layers whose chunk cannot, by the rows live at
  once); a program is not re-entrant (a busy flag turns concurrent use into
  an error).  The training tape of a program without layers gives a
  gradient row only to the slots whose gradients are live at once (from
  the first contribution to the slot's own backward), reused once dead;
  the backward kernels reach them through the plan's map (``_grad_rows``).
* n-ary nodes (``fastgrad.sum``, ``logsumexp``) are one instruction each
  whose operands (batched rows and scalar slots, any number) are listed in a
  side array (b_nx / f_nx / s_nx); kernels fold over them in blocks of
  columns, in the order _rules.pxd defines.
* Division by zero, log of a negative number, overflow ... produce IEEE
  inf/nan as in C; the eager engine's domain errors are not re-checked.
"""
cimport cython
from cpython.object cimport PyObject
from libc.math cimport copysign, isfinite
from libc.stdlib cimport free, malloc
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release

from fastgrad._rules cimport *
from fastgrad._engine cimport (Value, topo_order_many, node_b, node_c, FLAG_TRACED,
                               data_epoch_ptr)
from fastgrad._numgrad cimport Evaluator

import numbers
import os
import sys
import time

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
    # a borrowed reference, no refcounting (for loops over the parameters)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t) noexcept
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
    # an n-ary op (OP_SUM, OP_LOGSUMEXP) with at least one batched operand:
    # b = offset of its operand run (count, operand...) in b_nx (f_nx), an
    # operand a batched row r >= 0 or a scalar slot s as -1 - s
    K_N = 4

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

# A dense layer (a group of dot chains, see _replay_layers.pxi); training tape
# only.  Operands: a = its index in the Program's layer tables.
cdef enum:
    OP_LAYER = 102

# A chain ((acc + a0*b0) + a1*b1) + ... of the scalar tape (an L2 penalty),
# see _scalar_dots.  Operands: a = acc, b = offset of the terms in sd, c =
# 1.0 if the terms are the squares of consecutive slots.
cdef enum:
    OP_SDOT = 103

# backward modes of one operand
cdef enum:
    M_SKIP = 0
    M_STORE = 1   # first contribution to a batched gradient row
    M_ADD = 2

# Columns per chunk: the batched value (and gradient) matrices of a chunk are
# kept within about this many bytes so that a replay stays in L2/L3.
# Measured on Zen 3 (512 KiB L2; demo step, GFLOP/s, best of 3 x 0.4 s,
# interleaved): MLP(2, [128, 128, 1]) over 10,000 rows 2 MiB 25.9, 1 MiB
# 30.8, 512 KiB 31.2, 384 KiB 31.9, 128 KiB 29.5; over 1,000 rows and at
# H = 64, 256 within 1 GFLOP/s from 384 KiB to 2 MiB.
cdef Py_ssize_t CHUNK_BYTES = 512 * 1024
cdef Py_ssize_t FWD_CHUNK_BYTES = 24 * 1024    # forward only: rows stay in L1d
cdef Py_ssize_t MIN_CHUNK = 16
cdef Py_ssize_t MAX_CHUNK = 4096
# A floor on the columns per chunk of a training replay of a program with a
# layer whose weights do not fit a core's L2 (more than LAYER_L2_BYTES), for
# the tuning hook _set_layer_min_cols; off (0) by default because it is not a
# win on every ISA.  With it, each chunk streams those weights from L3 once
# per 256 columns instead of per 32 (the byte budget's chunk at H = 512), but
# the activation rows of a chunk outgrow L2.  Measured (Zen 3, MLP(2, [512,
# 512, 1]) demo step, process CPU time per step, floor 256 / floor 0, medians
# of 9 interleaved rounds, `taskset -c 0 python
# benchmarks/bench_layer_min_cols.py` on an otherwise idle machine, load
# 1.8 -> 1.3), N = 100 / 1,000 / 10,000 rows: avx2 0.95 / 0.94 / 0.89,
# baseline 0.97 / 0.97 / 0.95, portable 1.25 / 1.19 / 1.29.  It cannot be
# chosen per ISA: the chunk size enters the batch sums of scalar-operand
# gradients (one sum per chunk), and every ISA gives the same bits.
# Measured again on Zen 4 (1 MiB L2; the same step, process CPU time, ratio
# to the byte budget's 32-column chunks, medians of per-round ratios over
# 5-11 interleaved rounds; notes/ch41 sweep.py), the gain depends on what
# else runs.  N = 1,000, floor 128 / 256: at load 1.7-3 avx2 0.80 / 0.81,
# avx512 0.94 / 0.90, baseline 0.90 / 0.88, portable 1.13 / 1.27; at load
# 1.0-1.8 avx2 1.00-1.04 / 1.00, avx512 0.99-1.07 / 0.97-1.13.  N = 10,000
# at load 1.2-1.8: 1.05 / 0.85-0.93, but the budget's minimum time is the
# lowest or equal.  Nor did one chunk for a small batch pay: by the budget,
# N = 100 runs as chunks of 32, 32, 32 and 4 columns, and the 4-column one
# costs 0.3-0.6 ms of the ~7 ms step (N = 100 against N = 96, minimum
# times), but one chunk of 100 (whose rows outgrow L2) gave 1.03 / 1.00
# (avx512 / avx2, 61 rounds, quartiles 0.9-1.1, load 1.3-3) and chunks of
# 64 and 36 1.00 / 1.04; H = 256 at N = 100 (64 and 36): one chunk
# 0.99-1.02.
cdef Py_ssize_t LAYER_MIN_COLS = 0
cdef Py_ssize_t LAYER_L2_BYTES = 512 * 1024
# the columns per chunk of the last training/forward replay (testing hook)
cdef Py_ssize_t LAST_CHUNK = 0
# Training replays of a program without layers (see Program._chunk): its
# chunk's values and gradient rows stay in cache from the forward to the
# backward when they fit in FIT_CHUNKS x CHUNK_BYTES (2 MiB: L2 and a share
# of L3); when even CHUNK_FIT_MIN columns do not (a long tape), they stream
# from memory whatever the width, and the chunk is sized by the rows live
# at once (the gradient rows, see _grad_rows, and as many value rows)
# against STREAM_CHUNKS x CHUNK_BYTES (1 MiB, a Zen 4 core's L2), at most
# CHUNK_STREAM_MAX columns: a wider chunk then spreads each instruction's
# fixed cost over more columns.  Measured (Zen 4, the irregular graph of
# issue 20 written with micrograd's ops, CPU us per row, gradient rows
# reused; notes/lt36 sweep2.py, _set_chunk_cols, interleaved, load ~1-2):
# 1,000 ops (6,495 instructions, 122 gradient rows), avx512, at 32 / 64 /
# 128 / 256 columns 13.5 / 12.9 / 13.4 / 15.3 (the rule: 40); 10,000 ops
# (64,995) at 128 / 256 / 512 columns avx512 187 / 154 / 151, avx2 171 /
# 168 / 147 (the rule: 512; before: 32 columns and a gradient row per slot,
# 263 avx512).
cdef Py_ssize_t FIT_CHUNKS = 4
cdef Py_ssize_t CHUNK_FIT_MIN = 32
cdef Py_ssize_t STREAM_CHUNKS = 2
cdef Py_ssize_t CHUNK_STREAM_MAX = 512
# a fixed number of columns per chunk of training replays (0: the rules
# above; tuning hook _set_chunk_cols)
cdef Py_ssize_t CHUNK_COLS = 0


def _set_chunk_cols(Py_ssize_t cols):
    """Tuning hook (benchmarks): columns per chunk of training replays (0:
    sized by the rules of Program._chunk); returns the old."""
    global CHUNK_COLS
    old = CHUNK_COLS
    CHUNK_COLS = max(cols, 0)
    return old


# Training replays of programs without layers give a gradient row only to
# the slots whose gradients are live (see _grad_rows), instead of one per
# batched slot; the tuning/testing hook _set_grad_row_reuse turns it off.
cdef bint REUSE_GRAD_ROWS = True


def _set_grad_row_reuse(bint on):
    """Testing/tuning hook: reuse gradient rows once dead (default) or give
    every batched slot its own; returns the old.  Takes effect for plans
    made after it (a Program caches its plans)."""
    global REUSE_GRAD_ROWS
    old = REUSE_GRAD_ROWS
    REUSE_GRAD_ROWS = on
    return old


def _last_chunk():
    """Testing hook: the columns per chunk of the last replay over a batch."""
    return LAST_CHUNK


def _set_layer_min_cols(Py_ssize_t cols):
    """Tuning hook (benchmarks): the least columns per chunk of a program
    with a layer larger than L2 (0: the byte budget only); returns the old."""
    global LAYER_MIN_COLS
    old = LAYER_MIN_COLS
    LAYER_MIN_COLS = max(cols, 0)
    return old


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
    OP_RELU_GRAD: "relu_grad", OP_SIGN_GRAD: "sign_grad", OP_TIE_GRAD: "tie_grad",
    OP_LOG1P: "log1p", OP_SOFTPLUS: "softplus", OP_SOFTMAX: "softmax",
    OP_SUM: "sum", OP_LOGSUMEXP: "logsumexp",
}


# The compiler's stages, one file each (Cython ``include``: one extension
# module, so the kernels still inline into the loops that call them).
include "_replay_layers.pxi"
include "_replay_layer_kernels.pxi"
include "_replay_epilogue.pxi"
include "_replay_kernels.pxi"
include "_replay_blocks.pxi"
include "_replay_row.pxi"
include "_replay_plan.pxi"
include "_replay_passes.pxi"
include "_replay_record.pxi"
include "_replay_describe.pxi"
include "_replay_program.pxi"
