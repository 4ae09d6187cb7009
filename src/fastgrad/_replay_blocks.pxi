# Stage 3b: a batched replay over column blocks, on one thread or several.
# (included by _replay.pyx; see the stage list in its docstring)
#
# The batch's columns are cut into *blocks* of about BLOCK_COLS columns (at
# least one chunk, sized to stay in cache, see Program._chunk), all of the
# same number of 32-column tiles give or take one (see _block_start), and a
# block into chunks.  Both depend on the batch size and the program only,
# never on the number of threads.  A block is one worker's unit: it runs its
# chunks in order, adding its gradient contributions to its own partial sums
# (the layers' running weight-gradient sums, and the scalar slots the
# per-instruction backward adds to), started afresh for every block.  Blocks are then
# *combined in block order*: the loss gets the block's per-row outputs in row
# order (the same sum as eager's sum(losses)), the gradients the block's
# partial sums.  Each worker runs blocks as they come (a shared counter) and
# waits for its turn to combine, so the result is the same whatever the
# number of threads (1, 2, 3, 8 ... give the same bits).
#
# Threads (num_threads > 1): the caller's thread is worker 0 and the only
# one that looks at signals (every few ms of its own work, with the GIL; a
# Ctrl-C sets ``abort``, which the other workers read between chunks); the
# others are C threads started for this call and joined before it returns,
# running nogil code only.

cdef extern from "_replay_threads.h" nogil:
    ctypedef struct fg_thread_t:
        pass
    ctypedef struct fg_mutex_t:
        pass
    ctypedef struct fg_cond_t:
        pass
    ctypedef struct fg_thread_start_t:
        pass
    int fg_thread_start(fg_thread_t* t, fg_thread_start_t* s, void (*fn)(void*) noexcept nogil,
                        void* arg)
    void fg_thread_join(fg_thread_t t)
    int fg_mutex_init(fg_mutex_t* m)
    void fg_mutex_destroy(fg_mutex_t* m)
    void fg_mutex_lock(fg_mutex_t* m)
    void fg_mutex_unlock(fg_mutex_t* m)
    int fg_cond_init(fg_cond_t* c)
    void fg_cond_destroy(fg_cond_t* c)
    void fg_cond_wait(fg_cond_t* c, fg_mutex_t* m)
    void fg_cond_wait_ms(fg_cond_t* c, fg_mutex_t* m, int ms)
    void fg_cond_broadcast(fg_cond_t* c)
    int fg_atomic_get(volatile int* p)

# columns per block (at least; whole chunks): small enough that a 10,000-row
# batch gives two threads ~20 blocks to share evenly, large enough that the
# per-block work (starting and combining the partial sums: one pass over the
# weights) stays small beside the block's own (counted, not timed: per
# layer H * (K + 1) additions against 512 columns x ~6 H K FLOPs, ~0.03%)
cdef Py_ssize_t BLOCK_COLS = 512
# the most threads a call starts
cdef int MAX_THREADS = 256
# block boundaries fall on multiples of this many columns (the layer
# kernels' register tiles; a chunk is a multiple of it, see Program._chunk)
cdef Py_ssize_t BLOCK_TILE = 32


def _set_block_cols(Py_ssize_t cols):
    """Tuning/testing hook: columns per block (at least); returns the old."""
    global BLOCK_COLS
    old = BLOCK_COLS
    BLOCK_COLS = max(cols, 1)
    return old


cdef struct _Job:
    # the tape (training or forward-only) and its operands
    int t_n
    bint grad
    const unsigned char* t_op
    const unsigned char* t_kind
    const int* t_out
    const int* t_a
    const int* t_b
    const int* t_s
    const double* t_c
    const int* d_s
    const int* d_x
    const int* t_nx               # operand runs of the n-ary instructions
    # backward plan (grad)
    const unsigned char* bma
    const unsigned char* bmb
    const unsigned char* bms
    const unsigned char* bmn
    const int* bsm                # per b_nx entry: a softmax row, or -1
    const unsigned char* lw
    const int* bsl
    int nbsl
    const unsigned char* in_ng
    const int* gm                 # slot -> gradient row (see _grad_rows)
    # program state
    const double* vs
    double* gs                    # gradient totals (scalar slots)
    double* lsum                  # the layers' combined weight-gradient sums
    const int* o_slot
    const unsigned char* o_bat
    int n_out, n_in, o0
    bint o_bat0
    # the call
    const Sources* S
    Py_ssize_t B, ch, bcols, ld   # bcols: the largest block's columns
    Py_ssize_t ntiles             # B in tiles of BLOCK_TILE columns (rounded up)
    int nblocks
    double* po                    # outputs (B, n_out) or NULL
    double* pgi                   # input gradients (B, n_in) or NULL
    double seed
    double total                  # output 0 summed in row order
    # signals (worker 0)
    Py_ssize_t per_col_work, sig_work, work
    # workers
    fg_mutex_t mu
    fg_cond_t cv
    int next_block, done, nthreads
    volatile int abort            # 1: stop (a signal); read with fg_atomic_get


cdef struct _Worker:
    _Job* J
    int index
    double* vb                    # work rows (values), n_rows x ld
    double* gb                    # work rows (gradients)
    double* gsp                   # partial sums of the scalar slots in J.bsl
    double* out0                  # this block's output 0, per row
    LayerCtx L                    # (its acc: this block's running sums)
    fg_thread_start_t start


cdef inline int _check_signals(_Job* J) noexcept nogil:
    """Worker 0: look for a signal (with the GIL); on one, tell the others
    to stop and return -1 (the exception is set)."""
    cdef int bad
    with gil:
        bad = PyErr_CheckSignals() < 0
    if bad:
        if J.nthreads > 1:
            fg_mutex_lock(&J.mu)
            J.abort = 1
            fg_cond_broadcast(&J.cv)
            fg_mutex_unlock(&J.mu)
        else:
            J.abort = 1
        return -1
    return 0


# blocks of equal tiles (see _block_start); False: full blocks and a short
# last one, as before (tuning hook _set_equal_blocks, for the A/B)
cdef bint EQUAL_BLOCKS = True


def _set_equal_blocks(bint on):
    """Tuning hook: blocks of equal tiles (default) or full blocks and a
    remainder; returns the old."""
    global EQUAL_BLOCKS
    old = EQUAL_BLOCKS
    EQUAL_BLOCKS = on
    return old


cdef inline Py_ssize_t _block_start(Py_ssize_t B, Py_ssize_t ntiles, Py_ssize_t nblocks,
                                    Py_ssize_t b) noexcept nogil:
    """First column of block b (B for b = nblocks): the blocks share the
    batch's tiles evenly (their sizes differ by one tile at most), instead of
    full blocks and a short last one that leaves a thread idle at the end
    (10,000 rows at H = 128: 19 x 512 + 272 columns, now 480 or 512).
    ntiles < 0: full blocks of -ntiles columns (_set_equal_blocks(False)).

    Measured (demo step of MLP(2, [H, H, 1]) on 10,000 rows, 2 threads,
    medians of 9 interleaved rounds, idle machine, no steal ticks, load
    1.9; notes/t27-data/ab.py under /work/bin/quiet): H = 128 20.66 ->
    20.12 ms (1.94x -> 1.99x one thread's 40.0 ms), H = 256 66.1 -> 64.7
    ms, H = 64 5.97 -> 6.06 ms (within the rounds' spread); one thread
    unchanged (40.0 / 9.1 / 155 ms)."""
    if b >= nblocks:
        return B
    if ntiles < 0:
        return min(B, b * -ntiles)
    return min(B, (b * ntiles // nblocks) * BLOCK_TILE)


def _block_starts(Py_ssize_t B, Py_ssize_t nblocks):
    """Testing hook: the first column of each of nblocks blocks of a B-column
    batch, and B."""
    cdef Py_ssize_t ntiles = (B + BLOCK_TILE - 1) // BLOCK_TILE
    return [_block_start(B, ntiles, nblocks, b) for b in range(nblocks + 1)]


cdef int _run_block(_Job* J, _Worker* W, int b) noexcept nogil:
    """Forward (and backward) of block b's chunks; 0, or -1 when stopped."""
    cdef Py_ssize_t c0 = _block_start(J.B, J.ntiles, J.nblocks, b)
    cdef Py_ssize_t c1 = _block_start(J.B, J.ntiles, J.nblocks, b + 1)
    cdef Py_ssize_t j0, n, j, cc, ncol, ld = J.ld
    cdef int q, r, n_in = J.n_in, n_out = J.n_out
    cdef double* vb = W.vb
    cdef double* gb = W.gb
    cdef double* row
    cdef const double* src
    cdef const Sources* S = J.S
    if J.grad:
        for q in range(J.nbsl):
            W.gsp[J.bsl[q]] = 0.0
    j0 = c0
    while j0 < c1:
        n = min(J.ch, c1 - j0)
        # scatter the input columns into rows 0..n_inputs-1
        r = 0
        for q in range(S.n):
            ncol = S.cols[q]
            src = S.ptr[q]
            for cc in range(ncol):
                row = vb + r * ld
                for j in range(n):
                    row[j] = src[(j0 + j) * ncol + cc]
                r += 1
        forward_batched(J.t_n, J.t_op, J.t_kind, J.t_out, J.t_a, J.t_b, J.t_s,
                        J.t_c, J.d_s, J.d_x, J.t_nx, &W.L, J.vs, vb, ld, n)
        if J.o_bat0:
            row = vb + J.o0 * ld
            memcpy(W.out0 + (j0 - c0), row, n * sizeof(double))
        if J.po != NULL:
            for q in range(n_out):
                if J.o_bat[q]:
                    row = vb + J.o_slot[q] * ld
                    for j in range(n):
                        J.po[(j0 + j) * n_out + q] = row[j]
                else:
                    for j in range(n):
                        J.po[(j0 + j) * n_out + q] = J.vs[J.o_slot[q]]
        if J.grad:
            if J.o_bat0:
                row = gb + J.gm[J.o0] * ld
                for j in range(n):
                    row[j] = J.seed
            else:
                for j in range(n):  # no-cython-lint (n additions, as the loss)
                    W.gsp[J.o0] += J.seed
            W.L.fresh = j0 == c0
            backward_batched(J.t_n, J.t_op, J.t_kind, J.t_out, J.t_a, J.t_b, J.t_s,
                             J.t_c, J.t_nx, J.bma, J.bmb, J.bms, J.bmn, J.bsm, &W.L, J.vs,
                             W.gsp, vb, gb, J.gm, ld, n)
            if J.pgi != NULL:
                for q in range(n_in):
                    row = gb + q * ld    # (an input's gradient row is its own)
                    if J.in_ng[q]:
                        for j in range(n):
                            J.pgi[(j0 + j) * n_in + q] = row[j]
                    else:
                        for j in range(n):
                            J.pgi[(j0 + j) * n_in + q] = 0.0
        j0 += n
        # Ctrl-C: see SIGNAL_WORK (worker 0 only; the others follow abort)
        if W.index == 0:
            J.work += n * J.per_col_work
            if J.work >= J.sig_work and J.sig_work > 0 and (
                    j0 < c1 or b + 1 < J.nblocks):
                J.work = 0
                if _check_signals(J) < 0:
                    return -1
        elif fg_atomic_get(&J.abort):
            return -1
    return 0


cdef void _combine(_Job* J, _Worker* W, int b) noexcept nogil:
    """Block b's results into the totals (in block order: the caller holds
    block b's turn)."""
    cdef Py_ssize_t c0 = _block_start(J.B, J.ntiles, J.nblocks, b)
    cdef Py_ssize_t c1 = _block_start(J.B, J.ntiles, J.nblocks, b + 1), j
    cdef int q, s
    if J.o_bat0:
        for j in range(c1 - c0):
            J.total += W.out0[j]
    else:
        # c1 - c0 additions, not a product: the same rounding as above
        for j in range(c1 - c0):  # no-cython-lint
            J.total += J.vs[J.o0]
    if J.grad:
        for q in range(J.nbsl):
            s = J.bsl[q]
            J.gs[s] += W.gsp[s]
        if W.L.acc != J.lsum:     # (one block: the worker summed into lsum)
            layers_combine(&W.L, J.lw, W.L.acc, J.lsum, b == 0)


cdef void _worker_loop(void* arg) noexcept nogil:
    """A worker: blocks as they come, each combined in its turn."""
    cdef _Worker* W = <_Worker*>arg
    cdef _Job* J = W.J
    cdef int b
    cdef bint main = W.index == 0
    while True:
        fg_mutex_lock(&J.mu)
        if J.abort or J.next_block >= J.nblocks:
            fg_mutex_unlock(&J.mu)
            break
        b = J.next_block
        J.next_block += 1
        fg_mutex_unlock(&J.mu)
        if _run_block(J, W, b) < 0:
            break
        fg_mutex_lock(&J.mu)
        while J.done != b and not J.abort:
            if main:
                # look at signals every 10 ms while waiting
                fg_cond_wait_ms(&J.cv, &J.mu, 10)
                if J.done != b and not J.abort:
                    fg_mutex_unlock(&J.mu)
                    if _check_signals(J) < 0:
                        return
                    fg_mutex_lock(&J.mu)
            else:
                fg_cond_wait(&J.cv, &J.mu)
        if J.abort:
            fg_mutex_unlock(&J.mu)
            break
        fg_mutex_unlock(&J.mu)
        _combine(J, W, b)
        fg_mutex_lock(&J.mu)
        J.done = b + 1
        fg_cond_broadcast(&J.cv)
        fg_mutex_unlock(&J.mu)


cdef int _run_job(_Job* J, _Worker* W, int nthreads) noexcept nogil:
    """All blocks of J with ``nthreads`` workers (W[0] runs in this thread);
    0, or -1 when a signal stopped it (the exception is set)."""
    cdef int b, t, started = 1, failed = 0
    cdef fg_thread_t* th = NULL
    J.next_block = 0
    J.done = 0
    J.abort = 0
    J.nthreads = 1
    if nthreads <= 1:
        for b in range(J.nblocks):
            if _run_block(J, &W[0], b) < 0:
                return -1
            _combine(J, &W[0], b)
        return 0
    th = <fg_thread_t*>malloc(nthreads * sizeof(fg_thread_t))
    if th == NULL or fg_mutex_init(&J.mu) != 0:
        free(th)
        nthreads = 1
        for b in range(J.nblocks):
            if _run_block(J, &W[0], b) < 0:
                return -1
            _combine(J, &W[0], b)
        return 0
    fg_cond_init(&J.cv)
    J.nthreads = nthreads
    for t in range(1, nthreads):
        # a thread that does not start takes no block: the others do its share
        if fg_thread_start(&th[started], &W[t].start, _worker_loop, &W[t]) == 0:
            started += 1
    _worker_loop(&W[0])
    # the others' last blocks: wait for them, still looking at signals
    fg_mutex_lock(&J.mu)
    while J.done < J.nblocks and not J.abort:
        fg_cond_wait_ms(&J.cv, &J.mu, 10)
        if J.done < J.nblocks and not J.abort:
            fg_mutex_unlock(&J.mu)
            _check_signals(J)
            fg_mutex_lock(&J.mu)
    failed = J.abort
    fg_mutex_unlock(&J.mu)
    for t in range(1, started):
        fg_thread_join(th[t])
    fg_cond_destroy(&J.cv)
    fg_mutex_destroy(&J.mu)
    free(th)
    return -1 if failed else 0
