# Stage 1: recording a graph of Values into flat tapes.
# (included by _replay.pyx; see the stage list in its docstring)
#
# Linear in the graph, with no Python object per node: the node -> slot map
# is kept in the nodes' own visit-stamp fields (an open-addressing hash table
# of C arrays keyed by the node's address before; see "node -> slot"), the
# tapes are growable C arrays (PyMem_Raw*: tracemalloc sees them), and
# the passes of stage 2 work on typed arrays.  Measured with
# benchmarks/bench_compile.py (the demo step of MLP(2, [512, 512, 1]),
# 794,119 instructions; quiet machine): the whole compile 4.43 -> 0.98 us of
# CPU per instruction (3.5 -> 0.78 s), of which recording and the passes
# now 0.25 (dicts of tuples and lists of Python ints before); its peak of
# Python allocations 1,050 -> 166 MB, peak RSS 1,158 -> 215 MB.

from cpython.mem cimport PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree
from cpython.buffer cimport PyObject_GetBuffer
from time import perf_counter as _wall, process_time as _cpu

# The only two places that read a node's second operand / constant.
cdef inline PyObject* _operand_b(Value v) noexcept:
    return node_b(v)


cdef inline double _const_c(Value v) noexcept:
    return node_c(v)


def _describe(Value v):
    return f"Value(data={v.data!r})"


# ---------------------------------------------------------------------------
# node -> slot: a code kept in the node's visit-stamp fields
# ---------------------------------------------------------------------------
# A slot code: index * 4 + what, what = S_PARAM (a scalar slot: parameter or
# constant, final index), S_ROW (a batched row, final), S_RESULT (the k-th
# scalar instruction's result; its slot is known once every constant is).
#
# While ``build`` runs, a node's slot code is in its ``_mark`` field and its
# ``_mark_hi`` holds the build's tag (48th bit set: no topological sort's
# stamp has it, see _engine.pyx's _topo_order).  Every node of the graph is
# first stamped by one sort of all the roots (topo_order_many), which wipes
# a code a former build left on it; so a node of the graph with this build's
# tag got its code from this build.  The tag also differs between builds
# made close together: a code written by another build (if one ran inside
# this one: it cannot without releasing the GIL) is caught, not used.
#
# Speed trick: this replaced an open-addressing hash table of the nodes'
# addresses (12 bytes per entry, 24 MB for MLP(2, [512, 512, 1])'s 1.3 M
# nodes: the hash scattered neighbours, so each node's own probe and its
# operands' missed the cache).  Measured with benchmarks/bench_compile.py
# (see _replay_record's commit message and /work/notes/issue-21-c29.md).

cdef enum:
    S_PARAM = 0
    S_ROW = 1
    S_RESULT = 2

cdef unsigned short _tag_last = 0    # the last build's tag (low 15 bits)


cdef inline unsigned short _next_tag() noexcept:
    global _tag_last
    _tag_last = (_tag_last + 1) & 0x7FFF
    return 0x8000 | _tag_last


def _set_build_tag(unsigned int last):
    """Testing hook: the next build's tag is the one after ``last`` (mod
    2**15), e.g. one a former build used."""
    global _tag_last
    _tag_last = last & 0x7FFF


def _build_tag():
    """Testing hook: the last build's tag (low 15 bits)."""
    return _tag_last


cdef inline void _set_code(PyObject* v, unsigned short tag, int code) noexcept:
    (<Value>v)._mark = <unsigned int>code
    (<Value>v)._mark_hi = tag


cdef inline bint _has_code(PyObject* v, unsigned short tag) noexcept:
    return (<Value>v)._mark_hi == tag


cdef int _code_of(PyObject* v, unsigned short tag) except -1:
    """The slot code of a node the loop has recorded (an operand, a root)."""
    if (<Value>v)._mark_hi != tag:
        raise RuntimeError(
            "compile: the graph changed while it was recorded (another thread "
            "sorted or compiled the same Values meanwhile?); compile it again")
    return <int>(<Value>v)._mark


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FG_PREFETCH(p) __builtin_prefetch((const void*)(p))
    #else
    #define FG_PREFETCH(p) ((void)(p))
    #endif
    """
    void FG_PREFETCH(const void* p) noexcept nogil


# ---------------------------------------------------------------------------
# growable tapes
# ---------------------------------------------------------------------------

cdef struct Tape:
    Py_ssize_t n, cap
    unsigned char* op
    unsigned char* kind
    int* a
    int* b
    double* c


cdef int tape_reserve(Tape* t, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = t.cap if t.cap > 0 else 1024
    cdef void* p
    if need <= t.cap:
        return 0
    while cap < need:
        cap *= 2
    p = PyMem_RawRealloc(t.op, cap)
    if p == NULL:
        raise MemoryError("compile: graph too large for memory (tape)")
    t.op = <unsigned char*>p
    p = PyMem_RawRealloc(t.kind, cap)
    if p == NULL:
        raise MemoryError("compile: graph too large for memory (tape)")
    t.kind = <unsigned char*>p
    p = PyMem_RawRealloc(t.a, cap * sizeof(int))
    if p == NULL:
        raise MemoryError("compile: graph too large for memory (tape)")
    t.a = <int*>p
    p = PyMem_RawRealloc(t.b, cap * sizeof(int))
    if p == NULL:
        raise MemoryError("compile: graph too large for memory (tape)")
    t.b = <int*>p
    p = PyMem_RawRealloc(t.c, cap * sizeof(double))
    if p == NULL:
        raise MemoryError("compile: graph too large for memory (tape)")
    t.c = <double*>p
    t.cap = cap
    return 0


cdef void tape_free(Tape* t) noexcept:
    PyMem_RawFree(t.op)
    PyMem_RawFree(t.kind)
    PyMem_RawFree(t.a)
    PyMem_RawFree(t.b)
    PyMem_RawFree(t.c)
    t.op = t.kind = NULL
    t.a = t.b = NULL
    t.c = NULL
    t.n = t.cap = 0


# operand lists of the n-ary instructions (K_N): (count, operand, ...) runs;
# while recording an operand is its slot code, resolved by _assemble to a
# batched row r >= 0 or a scalar slot s as -1 - s (the scalar tape's: s)
cdef struct IBuf:
    Py_ssize_t n, cap
    int* p


cdef int ibuf_push(IBuf* t, int x) except -1:
    cdef Py_ssize_t cap
    cdef void* p
    if t.n == t.cap:
        cap = 2 * t.cap if t.cap > 0 else 256
        p = PyMem_RawRealloc(t.p, cap * sizeof(int))
        if p == NULL:
            raise MemoryError("compile: graph too large for memory (operand lists)")
        t.p = <int*>p
        t.cap = cap
    t.p[t.n] = x
    t.n += 1
    return 0


# Arrays and scratch without typed memoryviews where a compile makes many:
# acquiring a typed memoryview of a NumPy array costs ~5k instructions
# (callgrind), a raw buffer a few hundred, np.append ~16k.  At H=16 (the demo
# step of MLP(2, [16, 16, 1]), 1,015 instructions) ~80 such arrays were a
# third of the compile's instructions; see _scratch and the passes.

cdef char* _data(arr) except? NULL:
    """The data of a C-contiguous NumPy array (which it keeps alive)."""
    cdef Py_buffer view
    cdef char* p
    PyObject_GetBuffer(arr, &view, PyBUF_C_CONTIGUOUS)
    p = <char*>view.buf
    PyBuffer_Release(&view)
    return p


cdef object _u8(const unsigned char* p, Py_ssize_t n):
    arr = _np_empty(n, _U8)
    if n > 0:
        memcpy(_data(arr), p, n)
    return arr


cdef object _f64(const double* p, Py_ssize_t n):
    arr = _np_empty(n, _F64)
    if n > 0:
        memcpy(_data(arr), p, n * sizeof(double))
    return arr


cdef object _padded(arr):
    """``arr`` (1-D, C-contiguous) with one more element, 0 (the tapes are
    read one past their end when empty)."""
    cdef Py_buffer src
    cdef char* d
    PyObject_GetBuffer(arr, &src, PyBUF_C_CONTIGUOUS)
    try:
        out = _np_empty(src.len // src.itemsize + 1, arr.dtype)
        d = _data(out)
        if src.len > 0:
            memcpy(d, src.buf, src.len)
        memset(d + src.len, 0, src.itemsize)
    finally:
        PyBuffer_Release(&src)
    return out


cdef enum:
    NOFILL = 1          # _carve: leave the entries as they are


cdef int[::1] _carve(int[::1] ws, Py_ssize_t* off, Py_ssize_t n, int fill):
    """The next ``n`` ints of the workspace ``ws`` (a pass's int scratch in
    one array), set to ``fill`` (0 or -1; NOFILL: not set)."""
    if n < 0 or off[0] + n > ws.shape[0]:
        raise SystemError("compile: internal error (scratch too small)")
    cdef int[::1] v = ws[off[0]:off[0] + n]
    off[0] += n
    if n > 0 and fill != NOFILL:
        memset(&v[0], 0 if fill == 0 else 0xFF, n * sizeof(int))   # 0xFF..: -1
    return v


cdef unsigned char[::1] _carve_u8(unsigned char[::1] ws, Py_ssize_t* off, Py_ssize_t n):
    """The next ``n`` bytes of ``ws`` (as they are): several fields in one
    array (one NumPy array and typed view instead of one per field)."""
    if n < 0 or off[0] + n > ws.shape[0]:
        raise SystemError("compile: internal error (array too small)")
    off[0] += n
    return ws[off[0] - n:off[0]]


cdef double[::1] _carve_f64(double[::1] ws, Py_ssize_t* off, Py_ssize_t n):
    """The next ``n`` doubles of ``ws`` (as they are): see _carve_u8."""
    if n < 0 or off[0] + n > ws.shape[0]:
        raise SystemError("compile: internal error (array too small)")
    off[0] += n
    return ws[off[0] - n:off[0]]


# ---------------------------------------------------------------------------
# profiling hook
# ---------------------------------------------------------------------------

_STAGE = []
# off unless asked for: 8 clock reads per build (process_time is a system
# call, ~0.7 us here) were ~1.5% of a compile of MLP(2, [16, 16, 1])
cdef bint _STAGES_ON = False


cdef inline int _stage(str name) except -1:
    if _STAGES_ON:
        _STAGE.append((name, _wall(), _cpu()))
    return 0


def _set_build_stages(bint on):
    """Switch the profiling hook on or off (off by default); returns the
    previous setting."""
    global _STAGES_ON
    was = _STAGES_ON
    _STAGES_ON = on
    return was


def _build_stages():
    """Profiling hook (benchmarks/bench_compile.py): (stage, wall seconds,
    CPU seconds) of the last ``build``; empty if the hook was off for it
    (``_set_build_stages``)."""
    return [(_STAGE[i][0], _STAGE[i][1] - _STAGE[i - 1][1],
             _STAGE[i][2] - _STAGE[i - 1][2]) for i in range(1, len(_STAGE))]


# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------

cdef enum:
    PF_AHEAD = 16       # nodes between a prefetch and its use


cdef inline int _operand(int code, int k_none) noexcept:
    """A tape operand from a slot code: the final index, or -2 - k for the
    k-th scalar instruction's result (fixed up once the constants are
    counted); ``k_none`` for no operand."""
    if code < 0:
        return k_none
    if (code & 3) == S_RESULT:
        return -2 - (code >> 2)
    return code >> 2


def build(outputs, inputs, params, penalty=None, bint allow_unused=False,
          list baked=None, list unused=None):
    """Record the graph under ``outputs`` (and ``penalty``) into a Program.

    Private: see fastgrad.compiled.compile_graph for the documented API.
    With ``allow_unused`` (compile() of a fn that ignores some of its
    inputs), inputs not in the graph are accepted: nothing reads their rows
    and their gradient is 0.

    For compile()'s TracerWarning, called right after its trace: ``baked``
    (a list) gets the constant leaves not flagged by the trace (leaves the
    caller held before it: baked in), in the order the graph is recorded;
    ``unused`` (a list) the indices of the inputs the graph does not use.
    Found during the record loop's own walk: a second topological sort of
    the graph for them was 23% of a compile's instructions at
    MLP(2, [16, 16, 1]) (callgrind, issue 21).
    """
    cdef list outs = list(outputs), ins = list(inputs), pars = list(params)
    cdef list roots
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i, k
    cdef Value v
    cdef int op, n_in, n_par, code, ca, cb, kd
    cdef bint bat_a, bat_b
    cdef PyObject* pb
    cdef PyObject* node
    cdef PyObject** root_ptrs = NULL
    cdef unsigned short tag
    cdef Tape bt, st
    cdef IBuf bnx, snx                 # n-ary operand lists (batched, scalar)
    cdef IBuf* nxb
    cdef Py_ssize_t q, cnt
    cdef tuple xs
    cdef double* cbuf = NULL           # constants
    cdef Py_ssize_t n_const = 0, ccap = 0
    cdef unsigned char* in_used = NULL     # (a C buffer: two typed views
    cdef unsigned char* par_used = NULL    # of NumPy arrays cost ~10k
                                           # instructions, callgrind)
    cdef void* p
    cdef Program prog

    _STAGE.clear()
    _stage("start")
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
    n_in = len(ins)
    n_par = len(pars)
    memset(&bt, 0, sizeof(Tape))
    memset(&st, 0, sizeof(Tape))
    memset(&bnx, 0, sizeof(IBuf))
    memset(&snx, 0, sizeof(IBuf))
    roots = outs + ([penalty] if penalty is not None else [])
    for i in range(n_in):
        if (<Value>ins[i])._opcode != OP_LEAF:
            raise ValueError(f"compile: input {i} ({_describe(ins[i])}) is not a leaf "
                             "Value; inputs must be leaves (Value(x))")
    for i in range(n_par):
        if (<Value>pars[i])._opcode != OP_LEAF:
            raise ValueError(f"compile: parameter {i} ({_describe(pars[i])}) is not a "
                             "leaf Value; parameters must be leaves")
    try:
        in_used = <unsigned char*>PyMem_RawCalloc(n_in + n_par + 2, 1)
        root_ptrs = <PyObject**>PyMem_RawMalloc(len(roots) * sizeof(PyObject*))
        if in_used == NULL or root_ptrs == NULL:
            raise MemoryError("compile: cannot allocate the node table")
        par_used = in_used + n_in + 1
        # one sort of all the roots: it stamps every node of the graph
        # (wiping the codes of former builds), then the inputs' and
        # parameters' codes go in (see "node -> slot" above)
        for i in range(len(roots)):
            root_ptrs[i] = <PyObject*>roots[i]
        n = topo_order_many(root_ptrs, len(roots), &order)
        tag = _next_tag()
        # inputs are batched rows 0..n_in-1, parameters scalar slots
        # 0..n_par-1, constants follow the parameters; first no code on
        # any (one not in the graph may hold a former build's)
        for i in range(n_in):
            (<Value>ins[i])._mark_hi = 0
        for i in range(n_par):
            (<Value>pars[i])._mark_hi = 0
        for i in range(n_in):
            node = <PyObject*>ins[i]
            if _has_code(node, tag):
                raise ValueError(f"compile: input {i} is the same Value as input "
                                 f"{(<Value>node)._mark >> 2}; each input must be a "
                                 "distinct Value")
            _set_code(node, tag, i * 4 + S_ROW)
        for i in range(n_par):
            node = <PyObject*>pars[i]
            if _has_code(node, tag):
                code = <int>(<Value>node)._mark
                if (code & 3) == S_ROW:
                    raise ValueError(f"compile: parameter {i} is also input "
                                     f"{code >> 2}; a Value is either an input or a "
                                     "parameter")
                raise ValueError(f"compile: parameter {i} is the same Value as "
                                 f"parameter {code >> 2}; list each parameter once")
            _set_code(node, tag, i * 4 + S_PARAM)
        for i in range(n):
            # the Value PF nodes ahead is asked for early (nodes come in
            # about the order they were made, but not always)
            if i + PF_AHEAD < n:
                FG_PREFETCH(order[i + PF_AHEAD])
            node = order[i]
            if _has_code(node, tag):      # an input or a parameter (a leaf)
                code = <int>(<Value>node)._mark
                if (code & 3) == S_ROW:
                    in_used[code >> 2] = 1
                else:
                    par_used[code >> 2] = 1
                continue
            v = <Value>node
            op = v._opcode
            if op == OP_LEAF:                 # a constant
                if n_const == ccap:
                    ccap = 2 * ccap if ccap else 256
                    p = PyMem_RawRealloc(cbuf, ccap * sizeof(double))
                    if p == NULL:
                        raise MemoryError("compile: graph too large for memory")
                    cbuf = <double*>p
                cbuf[n_const] = v.data
                if baked is not None and not (v._flags & FLAG_TRACED):
                    baked.append(v)
                _set_code(node, tag, <int>(n_par + n_const) * 4 + S_PARAM)
                n_const += 1
                continue
            if op == OP_CUSTOM:
                raise ValueError(
                    "compile: the graph contains a hand-built node "
                    f"({_describe(v)}, op {v._op!r}) whose gradient is a "
                    "user _backward callable; such nodes cannot be "
                    "compiled (build it from Value operators instead)")
            if v._dict != NULL and '_backward' in <dict><object>v._dict:
                raise ValueError(
                    f"compile: the {v._op!r} node {_describe(v)} has a "
                    "user _backward replacing its derivative rule; a "
                    "compiled program would ignore it, so it is refused")
            if op_is_nary(op):
                # one instruction; its operands in a (count, codes...) run
                xs = <tuple>v._a
                cnt = len(xs)
                bat_a = False
                for q in range(cnt):
                    code = _code_of(PyTuple_GET_ITEM(xs, q), tag)
                    bat_a = bat_a or (code & 3) == S_ROW
                nxb = &bnx if bat_a else &snx
                ca = <int>nxb.n
                ibuf_push(nxb, <int>cnt)
                for q in range(cnt):
                    ibuf_push(nxb, <int>(<Value>PyTuple_GET_ITEM(xs, q))._mark)
                if bat_a:
                    if bt.n == bt.cap:
                        tape_reserve(&bt, bt.n + 1)
                    k = bt.n
                    bt.op[k] = op
                    bt.kind[k] = K_N
                    bt.a[k] = -1
                    bt.b[k] = ca           # the run's offset
                    bt.c[k] = 0.0
                    bt.n += 1
                    _set_code(node, tag, <int>(n_in + k) * 4 + S_ROW)
                else:
                    if st.n == st.cap:
                        tape_reserve(&st, st.n + 1)
                    k = st.n
                    st.op[k] = op
                    st.a[k] = ca           # the run's offset
                    st.b[k] = -1
                    st.c[k] = 0.0
                    st.n += 1
                    _set_code(node, tag, <int>k * 4 + S_RESULT)
                continue
            ca = _code_of(v._a, tag)              # operands come first
            pb = _operand_b(v)
            cb = -1
            if pb != NULL:
                cb = _code_of(pb, tag)
            bat_a = (ca & 3) == S_ROW
            bat_b = cb >= 0 and (cb & 3) == S_ROW
            if bat_a or bat_b:
                if bt.n == bt.cap:
                    tape_reserve(&bt, bt.n + 1)
                k = bt.n
                bt.op[k] = op
                bt.a[k] = _operand(ca, -1)
                bt.b[k] = _operand(cb, -1)
                bt.c[k] = _const_c(v)
                if cb < 0:
                    kd = K_B
                elif bat_a and bat_b:
                    kd = K_BB
                elif bat_a:
                    kd = K_BS
                else:
                    kd = K_SB
                bt.kind[k] = kd
                bt.n += 1
                _set_code(node, tag, <int>(n_in + k) * 4 + S_ROW)
            else:
                if st.n == st.cap:
                    tape_reserve(&st, st.n + 1)
                k = st.n
                st.op[k] = op
                st.a[k] = _operand(ca, -1)
                st.b[k] = _operand(cb, -1)
                st.c[k] = _const_c(v)
                st.n += 1
                _set_code(node, tag, <int>k * 4 + S_RESULT)
        free(order)
        order = NULL
        _stage("record")
        missing = [i for i in range(n_in) if not in_used[i]]
        if missing and not allow_unused:
            raise ValueError(f"compile: input(s) {missing} are not in the graph of "
                             "the outputs: every input must be used")
        if unused is not None:
            unused.extend(missing)
        missing = [i for i in range(n_par) if not par_used[i]]
        if missing:
            raise ValueError(f"compile: parameter(s) {missing} (of {n_par}) are not "
                             "in the graph of the outputs or the penalty")
        o_code = []
        for r in outs:
            o_code.append(_code_of(<PyObject*>r, tag))
        pen_code = -1
        if penalty is not None:
            code = _code_of(<PyObject*>penalty, tag)
            if (code & 3) == S_ROW:
                raise ValueError("compile: the penalty depends on an input; it must "
                                 "be a function of the parameters (and constants) only")
            pen_code = code
        prog = _assemble(&bt, &st, &cbuf, n_const, n_in, pars, o_code, pen_code,
                         &bnx, &snx)
    finally:
        free(order)
        PyMem_RawFree(in_used)
        PyMem_RawFree(root_ptrs)
        tape_free(&bt)
        tape_free(&st)
        PyMem_RawFree(cbuf)
        PyMem_RawFree(bnx.p)
        PyMem_RawFree(snx.p)
    _stage("finish")
    return prog


cdef int _resolve_nx(int[::1] nx, int base, bint scalar) except -1:
    """Slot codes of the (count, codes...) runs -> a row r >= 0 or -1 - slot
    (``scalar``: the slot itself)."""
    cdef Py_ssize_t pos = 0, q, cnt
    cdef int code, slot
    while pos < nx.shape[0]:
        cnt = nx[pos]
        for q in range(pos + 1, pos + 1 + cnt):
            code = nx[q]
            if (code & 3) == S_ROW:
                nx[q] = code >> 2
                continue
            slot = code >> 2 if (code & 3) == S_PARAM else base + (code >> 2)
            nx[q] = slot if scalar else -1 - slot
        pos += cnt + 1
    return 0


cdef enum:
    COPY_KEPT = 1 << 16     # _assemble copies what fuse kept of a tape this long


cdef Program _assemble(Tape* bt, Tape* st, double** cbuf, Py_ssize_t n_const,
                       int n_in, list pars, list o_code, int pen_code, IBuf* bnx,
                       IBuf* snx):
    """The Program from the recorded tapes: fix-ups, then the passes.  Frees
    the tapes, the n-ary operand lists ``bnx``/``snx`` (as slot codes) and
    ``cbuf[0]`` (the constants) once copied into arrays."""
    cdef int n_par = len(pars), base = n_par + <int>n_const
    cdef Py_ssize_t k, nb = bt.n, ns = st.n, nb_taped = bt.n
    cdef Py_ssize_t nbx = bnx.n, nsx = snx.n
    cdef int x, q
    cdef Program prog = Program.__new__(Program, _TOKEN)
    # scalar instruction results go after parameters and constants
    for k in range(ns):
        x = st.a[k]
        if x <= -2:
            st.a[k] = base + (-2 - x)
        x = st.b[k]
        if x <= -2:
            st.b[k] = base + (-2 - x)
    for k in range(nb):
        x = bt.a[k]
        if x <= -2:
            bt.a[k] = base + (-2 - x)
        x = bt.b[k]
        if x <= -2:
            bt.b[k] = base + (-2 - x)
    o_slot = []
    o_bat = []
    for code in o_code:
        o_bat.append(1 if (code & 3) == S_ROW else 0)
        o_slot.append(code >> 2 if (code & 3) != S_RESULT else base + (code >> 2))
    prog.pen_slot = -1
    if pen_code >= 0:
        prog.pen_slot = (pen_code >> 2 if (pen_code & 3) != S_RESULT
                         else base + (pen_code >> 2))
    # the tapes as arrays, the fields of each tape and dtype slices of one
    # array (Program.tape() gives NumPy views of them; the passes typed
    # views: an array costs ~2.5k instructions, a typed view of it ~1.7k,
    # a slice of a typed view a few dozen).  Batched: u8 op | kind | is_out
    # (the outputs' rows), i32 a | b | s | nx, f64 c; scalar: u8 op,
    # i32 a | b | nx, f64 c.
    b_u8 = _np_empty(2 * nb + n_in + nb + 1, _U8)
    b_i32 = _np_empty(3 * nb + nbx, _I32)
    b_c = _f64(bt.c, nb)
    s_op = _u8(st.op, ns)
    s_i32 = _np_empty(2 * ns + nsx, _I32)
    s_c = _f64(st.c, ns)
    cdef unsigned char[::1] vb_u8 = b_u8
    cdef int[::1] vb_i32 = b_i32, vs_i32 = s_i32
    cdef unsigned char[::1] v_op = vb_u8[:nb], v_kind = vb_u8[nb:2 * nb]
    cdef unsigned char[::1] v_isout = vb_u8[2 * nb:]
    cdef int[::1] v_a = vb_i32[:nb], v_b = vb_i32[nb:2 * nb], v_s = vb_i32[2 * nb:3 * nb]
    cdef int[::1] v_nx = vb_i32[3 * nb:]
    cdef double[::1] v_c = b_c
    cdef int[::1] sv_a = vs_i32[:ns], sv_b = vs_i32[ns:2 * ns], sv_nx = vs_i32[2 * ns:]
    if nb > 0:
        memcpy(&v_op[0], bt.op, nb)
        memcpy(&v_kind[0], bt.kind, nb)
        memcpy(&v_a[0], bt.a, nb * sizeof(int))
        memcpy(&v_b[0], bt.b, nb * sizeof(int))
        memset(&v_s[0], 0xFF, nb * sizeof(int))          # -1: no fused scalar
    if nbx > 0:
        memcpy(&v_nx[0], bnx.p, nbx * sizeof(int))
    if ns > 0:
        memcpy(&sv_a[0], st.a, ns * sizeof(int))
        memcpy(&sv_b[0], st.b, ns * sizeof(int))
    if nsx > 0:
        memcpy(&sv_nx[0], snx.p, nsx * sizeof(int))
    tape_free(bt)                    # the arrays hold them now
    tape_free(st)
    PyMem_RawFree(bnx.p)
    PyMem_RawFree(snx.p)
    bnx.p = snx.p = NULL
    bnx.n = bnx.cap = snx.n = snx.cap = 0
    _resolve_nx(v_nx, base, False)
    _resolve_nx(sv_nx, base, True)
    # the constants, with their one entry of padding
    consts = _np_zeros(n_const + 1, _F64)
    if n_const > 0:
        memcpy(_data(consts), cbuf[0], n_const * sizeof(double))
    PyMem_RawFree(cbuf[0])
    cbuf[0] = NULL
    _stage("fixups")
    memset(&v_isout[0], 0, v_isout.shape[0])
    for q in range(len(o_slot)):
        if o_bat[q]:
            v_isout[o_slot[q]] = 1
    # what Program.tape() gives of the batched tape (views; "out" is made
    # there: n_in + k)
    b_nx = b_i32[3 * nb_taped:]
    if FUSE:
        nb = _fuse(v_op, v_kind, v_a, v_b, v_s, v_c, n_in, v_isout, v_nx, o_slot, o_bat)
        # the kept instructions (views: the arrays are not written again)
        v_op, v_kind, v_a, v_b, v_s, v_c = (v_op[:nb], v_kind[:nb], v_a[:nb], v_b[:nb],
                                            v_s[:nb], v_c[:nb])
        v_isout = v_isout[:n_in + nb + 1]
        v_isout[:] = 0
        for q in range(len(o_slot)):
            if o_bat[q]:
                v_isout[o_slot[q]] = 1
    b_op, b_kind = b_u8[:nb], b_u8[nb_taped:nb_taped + nb]
    b_a, b_b, b_s = (b_i32[:nb], b_i32[nb_taped:nb_taped + nb],
                     b_i32[2 * nb_taped:2 * nb_taped + nb])
    b_c = b_c[:nb]
    if nb_taped >= COPY_KEPT and nb < nb_taped - nb_taped // 4:
        # fuse kept under 3/4 of a large tape (the demo MLPs: about
        # half): copies let the whole tape go now, not when the Program
        # does (its _recorded holds these), which lowers both the peak
        # and what a Program keeps (tracemalloc at H=512: see
        # COPY_KEPT); small tapes keep their views (copies and typed
        # views cost a small compile ~1%)
        b_op, b_kind, b_a, b_b, b_s, b_c, b_nx = (b_op.copy(), b_kind.copy(), b_a.copy(),
                                                  b_b.copy(), b_s.copy(), b_c.copy(),
                                                  b_nx.copy())
        is_out = _np_zeros(n_in + nb + 1, _U8)
        v_op, v_kind, v_a, v_b, v_s, v_c, v_nx = b_op, b_kind, b_a, b_b, b_s, b_c, b_nx
        v_isout = is_out
        for q in range(len(o_slot)):
            if o_bat[q]:
                v_isout[o_slot[q]] = 1
        vb_u8 = None
        vb_i32 = None
        b_u8 = b_i32 = None
    _stage("fuse")
    prog.n_inputs = n_in
    prog.n_outputs = len(o_slot)
    prog.n_params = n_par
    prog.n_const = <int>n_const
    prog.n_scalar = base + <int>ns
    prog.n_batched = n_in + <int>nb
    prog.n_binstr = <int>nb
    prog._params = tuple(pars)
    prog.consts = consts
    _forward_tape(prog, v_op, v_kind, v_a, v_b, v_s, v_c, o_slot, o_bat, v_isout, v_nx)
    _stage("forward_tape")
    prog._recorded = {"op": b_op, "kind": b_kind, "a": b_a, "b": b_b, "s": b_s,
                      "c": b_c, "nary": b_nx}
    prog.n_recorded = <int>nb
    prog.n_srecorded = <int>ns
    prog.nlayers = 0
    prog._found = {"chains": 0, "in_layers": 0, "repeating": 0}
    prog._recognised = LAYERS and FUSE
    found = None
    if LAYERS and FUSE:
        # (sets the training tape, padded already, and renames o_slot's rows)
        found = _find_layers(prog, v_op, v_kind, v_a, v_b, v_s, v_c, n_in, v_isout, v_nx,
                             o_slot, o_bat)
    if found is None:
        prog.b_op = _padded(b_op)
        prog.b_kind = _padded(b_kind)
        prog.b_out = _padded(_np_arange(n_in, n_in + nb, dtype=_I32))
        prog.b_a = _padded(b_a)
        prog.b_b = _padded(b_b)
        prog.b_s = _padded(b_s)
        prog.b_c = _padded(b_c)
        prog.b_nx = _padded(b_nx)
        prog.l_meta = _np_zeros(1, _I32)
        prog.l_rows = _np_zeros(1, _I32)
        prog.l_slots = _np_zeros(1, _I32)
        prog.l_ep = _np_zeros(1, _I32)
        prog.l_pw = prog.l_lanes = prog.l_sums = _np_zeros(1, _F64)
        prog.l_init = prog.l_epc = _np_zeros(1, _F64)
    _stage("layers")
    # (np.array of a list: ~8k instructions; a typed fill ~5k)
    cdef int[::1] o_slot_v = _np_empty(len(o_slot), _I32)
    cdef unsigned char[::1] o_bat_v = _np_empty(len(o_slot), _U8)
    for q in range(len(o_slot)):
        o_slot_v[q] = <int>o_slot[q]
        o_bat_v[q] = <unsigned char>o_bat[q]
    prog.o_slot = o_slot_v
    prog.o_bat = o_bat_v
    # scalar reads from outside the scalar tape: the batched tape (before
    # the layer pass, which reads the same slots), scalar outputs, penalty
    cdef unsigned char[::1] external = _np_zeros(prog.n_scalar + 1, _U8)
    cdef const unsigned char[::1] kv = v_kind
    cdef const int[::1] av = v_a, bv = v_b, sv = v_s
    if prog.pen_slot >= 0:
        external[prog.pen_slot] = 1
    cdef const int[::1] nxv = v_nx
    for k in range(nb):
        if kv[k] == K_SB:
            external[av[k]] = 1
        elif kv[k] == K_BS:
            external[bv[k]] = 1
        elif kv[k] == K_N:
            for q in range(bv[k] + 1, bv[k] + 1 + nxv[bv[k]]):
                if nxv[q] < 0:
                    external[-1 - nxv[q]] = 1
            continue
        if sv[k] >= 0:
            external[sv[k]] = 1
    for q in range(len(o_slot)):
        if not o_bat[q]:
            external[o_slot[q]] = 1
    # what Program.tape() gives of the scalar tape ("out" is made there:
    # n_params + n_const + k)
    prog._srecorded = {"op": s_op, "a": s_i32[:ns], "b": s_i32[ns:2 * ns], "c": s_c,
                       "nary": s_i32[2 * ns:]}
    cdef const unsigned char[::1] sv_op = s_op
    cdef const double[::1] sv_c = s_c
    _scalar_dots(prog, sv_op, sv_a, sv_b, sv_c, sv_nx, base, external, FUSE)
    _stage("scalar_dots")
    # the work buffers: slices of one array (one allocation and one typed
    # view instead of four of each: ~0.03 M instructions per compile at
    # MLP(2, [16, 16, 1]), callgrind)
    cdef Py_ssize_t n_sc = prog.n_scalar + 1
    cdef double[::1] work = _np_zeros(3 * n_sc + prog.n_batched + 1, _F64)
    cdef const double[::1] cv
    prog.vs = work[:n_sc]
    prog.gs = work[n_sc:2 * n_sc]
    prog.vs1 = work[2 * n_sc:3 * n_sc]
    prog.vb1 = work[3 * n_sc:]
    if n_const > 0:
        cv = prog.consts
        memcpy(&work[n_par], &cv[0], n_const * sizeof(double))
        memcpy(&work[2 * n_sc + n_par], &cv[0], n_const * sizeof(double))
    prog.ld = 0
    prog.cap_cols = 0
    prog.cap_rows_g = 0
    prog._plans = [None] * 4      # by 2 * want_inputs + with_pen
    prog._busy = False
    prog.theta_in = NULL
    prog.c_load_params()
    return prog
