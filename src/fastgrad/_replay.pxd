# cython: language_level=3
"""C-level view of a compiled fastgrad program (see _replay.pyx).

Other compiled modules (the finite-difference loop) cimport ``Program`` and
call ``c_eval`` to evaluate output 0 for one input vector without entering
Python:

    from fastgrad._replay cimport Program
    prog.c_load_params()                # with the GIL: read the params' .data
    y = prog.c_eval(theta, x)           # nogil; theta NULL = loaded params
"""

cdef struct LayerCtx:
    # the dense layers of a replay, as one worker's kernels see them
    # (_replay_layer_kernels.pxi)
    int n                          # number of layers
    const int* meta                # Program.l_meta
    const int* rows
    const int* slots
    const double* init             # Program.l_init (start constants)
    const int* ep                  # Program.l_ep / l_epc: epilogue ops
    const double* epc
    double* pw                     # packed weights of this replay, or NULL:
                                   # unpacked (c_eval), weights from the slots
    double* acc                    # this worker's weight-gradient running sums
    double* work                   # this worker's kernel scratch (FG_WORK)
    const unsigned char* rmode     # the plan's lrm
    int fresh                      # 1: the running sums start at +0.0 (the
                                   # first chunk of a column block)


cdef struct Sources:
    # the input columns of a batched replay, side by side: n C-contiguous
    # (B, cols[q]) float64 blocks (at most 64; Program._run joins more)
    int n
    const double* ptr[64]
    Py_ssize_t cols[64]


cdef class _Plan:
    cdef unsigned char[::1] bma, bmb, bms, sma, smb
    cdef unsigned char[::1] bmn       # per b_nx entry: the mode of that operand
    cdef int[::1] bsm                 # per b_nx entry of a logsumexp: the row of
                                      # a softmax output e**(x - out) of that
                                      # operand (nary_backward's factor), or -1
    cdef unsigned char[::1] lrm       # per Program.l_rows entry: the mode of
                                      # an input row's gradient, or whether an
                                      # output row's gradient was written
    cdef unsigned char[::1] lw        # per layer: weight gradients wanted
    cdef unsigned char[::1] in_ng     # input i has a gradient
    cdef unsigned char[::1] par_ng    # param i has a gradient
    cdef int[::1] bsl                 # scalar slots the batched backward adds
                                      # to (outside layers), each once
    cdef int[::1] gm                  # batched slot -> its gradient row (see
                                      # _grad_rows); n_grows rows in all
    cdef int n_grows


cdef class Program:
    # sizes
    cdef readonly int n_inputs, n_outputs, n_params
    cdef int n_const, n_scalar, n_batched, n_sinstr, n_binstr
    cdef int pen_slot                 # scalar slot of the penalty, -1 if none
    # scalar tape (runs once per replay): op, out, a, b, c
    cdef const unsigned char[::1] s_op
    cdef const int[::1] s_out, s_a, s_b
    cdef const double[::1] s_c
    cdef const int[::1] sd           # terms of OP_SDOT chains: count, (a, b)...
    cdef const int[::1] s_gz         # runs lo, hi, ... of the gradient slots >= n_params
                                     # a training replay zeroes (all but merged links)
    # batched tape (runs once per batch column): op, operand kinds, out, a, b, c
    cdef const unsigned char[::1] b_op, b_kind
    cdef const int[::1] b_out, b_a, b_b, b_s   # b_s: scalar of a fused mul-add
    cdef const double[::1] b_c
    # operands of the n-ary instructions (K_N): of the training tape, the
    # forward-only tape (rows renamed), and the scalar tape (count, slots...)
    cdef const int[::1] b_nx, f_nx, s_nx
    # forward-only copy of the batched operand rows, with rows reused once
    # dead (linear-scan allocation): a much smaller working set for predict
    # and with chains of fused mul-adds merged into one OP_DOT each (the
    # running sum stays in registers); d_s/d_x: the chains' (scalar, row) terms
    cdef const unsigned char[::1] f_op, f_kind
    cdef const int[::1] f_out, f_a, f_b, f_s, f_oslot, d_s, d_x
    cdef const double[::1] f_c
    cdef int n_frows, n_finstr
    # dense layers of the batched (training) tape: see _replay_layers.pxi
    cdef int nlayers, n_recorded, n_srecorded
    cdef const int[::1] l_meta, l_rows, l_slots, l_ep
    cdef const double[::1] l_init, l_epc
    cdef double[::1] l_pw, l_lanes, l_sums
    cdef dict _recorded               # the batched tape before the layer pass
    cdef dict _srecorded              # the scalar tape before _scalar_dots
    cdef dict _found                  # what the layer pass found (summary)
    cdef bint _recognised             # the layer pass ran (LAYERS and FUSE)
    # outputs: slot index and whether it is a batched row (1) or a scalar (0)
    cdef const int[::1] o_slot
    cdef const unsigned char[::1] o_bat
    # the parameter Values (owned) and baked constants
    cdef tuple _params
    cdef const double[::1] consts
    # work buffers
    cdef double[::1] vs, gs           # scalar values / gradients
    cdef double[::1] vs1, vb1         # private buffers of c_eval
    cdef double[::1] vb, gb           # batched values / gradients (n_batched x ld)
    cdef double[::1] gsp              # worker 0's scalar-gradient partial sums
    cdef double[::1] kwork            # worker 0's kernel scratch
    cdef list _wbufs                  # the other workers' buffers (threads)
    cdef Py_ssize_t _wf, _wg          # work per column (signal checks), -1: unknown
    cdef Py_ssize_t ld, cap_cols, cap_rows_g
    cdef list _plans
    cdef bint _busy
    cdef const double* theta_in       # parameter values for c_load_params, or NULL
    # one-row replays (_replay_row.pxi): their decoded tapes (per plan, and
    # forward only), values and gradients of one column (pointers into
    # _rowbuf, allocated at the first one)
    cdef list _rowtapes
    cdef object _rowbuf
    cdef double* rv
    cdef double* rg
    # SGD steps' fused parameter passes (_ParamMap, _replay_layer_kernels.pxi):
    # the maps by plan key; the caller's request (_sgd) and what the last
    # replay left for _store_sgd (_fmap: its map, or None; _gp: the penalty
    # chain's gradient, _pen_on: whether it has one)
    cdef list _pmaps
    cdef bint _sgd, _pen_on
    cdef object _fmap
    cdef double _gp
    # what the last fused store left (_store_sgd): vs[:n_params] and the
    # parameters' places in l_pw hold the .data it wrote, valid for the
    # next _load_fused of that map (_vs_map) while the data write epoch
    # (_engine.data_epoch_ptr) is still _vs_epoch; any other load clears it
    cdef bint _vs_ok
    cdef unsigned long long _vs_epoch
    cdef object _vs_map
    cdef object __weakref__

    cdef int c_load_params(self) except -1
    cdef int _load_params(self) except -1
    cdef double c_eval(self, const double* theta, const double* x) noexcept nogil
    # c_eval on caller-owned scratch (thread-safe; see _init_scratch)
    cdef double c_eval_in(self, const double* theta, const double* x, double* vs,
                          double* vb) noexcept nogil
    # internals
    cdef _Plan _plan(self, bint want_inputs, bint with_pen)
    cdef LayerCtx _layer_ctx(self, bint grad) noexcept nogil
    cdef Py_ssize_t _col_work(self, bint grad) noexcept
    cdef int _ensure(self, Py_ssize_t cols, bint grad, Py_ssize_t grows=*) except -1
    cdef Py_ssize_t _chunk(self, Py_ssize_t B, bint grad, _Plan plan=*) noexcept
    cdef object _sources(self, inputs, str where)
    cdef object _vector(self, x, str where)
    cdef double _run(self, list mats, Py_ssize_t B, int reduce_mode,
                     bint grad, bint want_inputs, bint with_pen,
                     double[:, ::1] outv, double[:, ::1] ging,
                     int nthreads=*) except? -1.0
    cdef double _run_src(self, const Sources* S, Py_ssize_t B, int reduce_mode,
                         bint grad, bint want_inputs, bint with_pen,
                         double[:, ::1] outv, double[:, ::1] ging,
                         int nthreads=*) except? -1.0
    cdef int _enter(self, str where) except -1
    cdef int _store_param_grads(self, bint accumulate, param_grad,
                                double lr=*, bint update=*) except -1
    cdef double _batch(self, inputs, reduce, bint grad, outputs, param_grad,
                       input_grad, bint accumulate, double lr,
                       bint update, int nthreads=*) except? -1.0
    cdef object _check_param_grad(self, param_grad, str where)
    cdef object _param_map(self, _Plan plan, int key)
    cdef int _load_fused(self, object pm) except -1
    cdef int _store_sgd(self, double lr) except -1
    cdef object _check_out(self, arr, Py_ssize_t B, int k, str name, str where)
