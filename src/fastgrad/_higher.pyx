# cython: language_level=3
"""Gradients as values: the sweep behind ``fastgrad.grad`` (any order).

Design, in five lines:
  * ``grad_sweep`` sorts the union of the outputs' graphs (``topo_order`` per
    output, concatenated, duplicates dropped: still topological), saves every
    node's ``grad`` and uses the slot as the node's adjoint during the sweep,
    restoring it at the end: no ``.grad`` changes, no hash table, no extra
    array (an extra numbering pass made the sweep 4x slower than backward()).
  * create_graph=False: backward()'s sweep, with ``op_backward``, same floats.
  * create_graph=True: the slot holds a pointer to the adjoint Value (NULL =
    zero so far, the bits of 0.0); ``_diff_rule``
    (the table below, one entry per op code of _rules.pxd) builds each
    operand's contribution from ordinary op nodes, in the order of operations
    of ``op_backward``, so the results are the same floats, can be
    differentiated again (any order) and compile like any graph.  Kinks use
    the *_GRAD mask ops, whose derivative at the compared value is 0.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from libc.stdlib cimport malloc, calloc, free
cimport cython

from fastgrad._rules cimport *
from fastgrad._engine cimport Value, new_node, topo_order, node_b, node_c

# Speed trick (as in _replay.pyx): always inline the _rules.pxd functions, so
# the sweep's op_backward is not a call per node.  Measured (perf, float sweep
# over the demo HVP graph): op_backward was a call, ~16% of the samples.
cdef extern from *:
    """
    #if defined(__GNUC__)
    #undef CYTHON_INLINE
    #define CYTHON_INLINE __inline__ __attribute__((always_inline, unused))
    #endif
    """


# Ctrl-C in the sweeps (issue 26 item 5): a signal check every
# _SIGNAL_MASK + 1 nodes, as in backward() (_engine.pyx), and every
# _SIGNAL_MASK_VALUES + 1 nodes where each node allocates Values
# (create_graph=True, ~0.2 us per node).  On an interrupt the finally blocks
# restore every grad slot.  Latency: benchmarks/bench_interrupt.py.
cdef enum:
    _SIGNAL_MASK = 0xFFFF
    _SIGNAL_MASK_VALUES = 0x0FFF


# An interrupted create_graph sweep has built part of the second-order graph
# (the adjoint Values in the grad slots).  Freeing it before raising was most
# of the Ctrl-C latency: ~44 ns per adjoint Value (the result graph of the
# 2M-node chain of benchmarks/bench_interrupt.py, 4.3M Values, takes ~187 ms
# to free).  Instead the finally's one pass over the nodes (which restores
# every grad slot anyway) moves the slots' references, without reference
# counting, into the sweep's own node array, which a _PartialGraph attached to
# the exception takes over: the graph is freed (Value's iterative dealloc)
# when the exception is released.  Not for a MemoryError (that memory is
# wanted back at once), nor when the exception refuses the attribute.
# The holder is a C array, not a list: a list of millions of items is
# GC-tracked, and the collections that the unwinding's allocations trigger
# walked it (+50-80 ms of latency, measured).  So the collector does not see
# through it; a cycle exception -> holder -> graph -> exception would need a
# user attribute on a graph node that refers to the exception.
cdef str _PARTIAL_ATTR = "_fastgrad_partial_graph"
cdef bint _handing_over = True


def _set_hand_over(bint on):
    """Benchmark hook: False frees the partial graph before raising (the
    unwinding before issue 26's fix), for benchmarks/bench_interrupt.py's
    comparison.  Returns the previous setting."""
    global _handing_over
    cdef bint was = _handing_over
    _handing_over = on
    return was


@cython.final
cdef class _PartialGraph:
    """The part of a second-order graph that an interrupted
    ``grad(create_graph=True)`` had built, attached to its exception as
    ``_fastgrad_partial_graph`` and freed with it."""
    cdef PyObject** _items          # owned references (malloc'd array)
    cdef Py_ssize_t _count

    def __len__(self):
        return self._count

    def __repr__(self):
        return f"<partial second-order graph: {self._count} adjoint Values>"

    def __reduce__(self):
        # the exception still pickles (a worker sending it back): as an
        # empty holder, the graph stays in this process
        return (_PartialGraph, ())

    def __dealloc__(self):
        cdef Py_ssize_t i
        cdef PyObject** items = self._items
        cdef Py_ssize_t count = self._count
        self._items = NULL
        self._count = 0
        for i in range(count):
            Py_DECREF(<object>items[i])     # Value's dealloc is iterative
        free(items)


cdef _PartialGraph _holder_for(object exc):
    """An empty _PartialGraph attached to ``exc``, or None (hand-over off, a
    MemoryError, an exception that refuses the attribute)."""
    cdef _PartialGraph holder
    if not _handing_over or isinstance(exc, MemoryError):
        return None
    try:
        holder = _PartialGraph.__new__(_PartialGraph)
        setattr(exc, _PARTIAL_ATTR, holder)
    except BaseException:
        return None
    return holder


# ---------------------------------------------------------------------------
# node builders (no domain checks: a derivative that is infinite at the point
# is inf, as in PyTorch; the eager operators' errors are for the user's graph)
# ---------------------------------------------------------------------------

cdef inline Value _bin(int op, Value a, Value b):
    return new_node(op_forward_s(op, a.data, b.data, 0.0), op, a, b, 0.0)


cdef inline Value _con(int op, Value a, double c):
    return new_node(op_forward_s(op, a.data, 0.0, c), op, a, None, c)


cdef inline Value _neg(Value g):                   # -g, stored as g * -1
    return _con(OP_MULC, g, -1.0)


cdef inline PyObject** _slot(PyObject* node) noexcept:
    """The grad slot of a node, holding its adjoint Value during a
    create_graph sweep (an owned reference, or NULL)."""
    return <PyObject**>&(<Value>node).grad


cdef class _Adjoints:
    """Adds contributions to the adjoint Values kept in the grad slots."""

    cdef int add(self, PyObject* node, Value contrib) except -1:
        """adjoint(node) += contrib (a new ADD node unless it was zero)."""
        cdef PyObject** slot = _slot(node)
        cdef PyObject* old = slot[0]
        cdef Value total
        if old == NULL:
            Py_INCREF(contrib)
            slot[0] = <PyObject*>contrib
        else:
            total = _bin(OP_ADD, <Value>old, contrib)
            Py_INCREF(total)
            slot[0] = <PyObject*>total
            Py_DECREF(<object>old)
        return 0


# ---------------------------------------------------------------------------
# the differentiable backward rules (second and higher order)
# ---------------------------------------------------------------------------
# For node n = op(a, b) or op(a; c) with adjoint g (a Value), add to the
# operands' adjoints what op_backward adds to their grads, built from Values.
# Same operations in the same order as op_backward (so create_graph=True
# gives bit-for-bit the floats of backward()); the same special cases, which
# are decided on the values at the time grad() runs (a compiled program keeps
# that decision, see compiled.py).  Kinks, as PyTorch: relu, abs and max/min
# pass the gradient through a mask (OP_*_GRAD) whose derivative is 0, so the
# second derivative is 0 away from the kink and 0 at it (relu'(0) = 0,
# abs'(0) = 0; max/min ties split the gradient 1/2-1/2 and the second
# derivative there is 0 too).

cdef int _diff_rule(_Adjoints s, Value n, Value g) except -1:
    cdef int op = n._opcode
    cdef PyObject* pa = n._a
    cdef PyObject* pb = node_b(n)
    cdef Value a
    cdef Value b = <Value>pb if pb != NULL else None
    cdef double c = node_c(n)
    cdef Value t
    cdef Py_ssize_t i
    if op_is_nary(op):
        # operand order, as nary_backward; pa is the operand tuple
        for i in range(PyTuple_GET_SIZE(<tuple>pa)):
            x = PyTuple_GET_ITEM(<tuple>pa, i)
            if op == OP_SUM:
                s.add(x, g)
            else:                       # OP_LOGSUMEXP: e**(x - out) * g
                s.add(x, _bin(OP_MUL, _bin(OP_SOFTMAX, <Value>x, n), g))
        return 0
    a = <Value>pa
    if op == OP_ADD:
        s.add(pa, g)
        s.add(pb, g)
    elif op == OP_SUB:
        s.add(pa, g)
        s.add(pb, _neg(g))
    elif op == OP_MUL:
        s.add(pa, _bin(OP_MUL, b, g))                       # b * g
        s.add(pb, _bin(OP_MUL, a, g))                       # a * g
    elif op == OP_DIV:
        s.add(pa, _bin(OP_DIV, g, b))                       # g / b
        s.add(pb, _bin(OP_MUL, _neg(g), _bin(OP_DIV, n, b)))   # -g * (out / b)
    elif op == OP_POW:
        # op_backward skips b == 0 (0 * inf at a == 0); elsewhere the term is
        # 0 there but its derivative with respect to b (a**-1) is not
        if b.data != 0.0 or a.data != 0.0:                  # (b * a**(b-1)) * g
            s.add(pa, _bin(OP_MUL, _bin(OP_MUL, b,
                                        _bin(OP_POW, a, _con(OP_ADDC, b, -1.0))), g))
        if not (a.data == 0.0 and b.data >= 0.0):           # out * log(a) * g
            s.add(pb, _bin(OP_MUL, _bin(OP_MUL, n, _con(OP_LOG, a, 0.0)), g))
    elif op == OP_MAX:
        s.add(pa, _bin(OP_TIE_GRAD, g, _bin(OP_SUB, a, b)))
        s.add(pb, _bin(OP_TIE_GRAD, g, _bin(OP_SUB, b, a)))
    elif op == OP_MIN:
        s.add(pa, _bin(OP_TIE_GRAD, g, _bin(OP_SUB, b, a)))
        s.add(pb, _bin(OP_TIE_GRAD, g, _bin(OP_SUB, a, b)))
    elif op == OP_ADDC:
        s.add(pa, g)
    elif op == OP_MULC:
        s.add(pa, _con(OP_MULC, g, c))                      # c * g
    elif op == OP_RSUBC:
        s.add(pa, _neg(g))
    elif op == OP_DIVC:
        s.add(pa, _con(OP_DIVC, g, c))                      # g / c
    elif op == OP_RDIVC:
        s.add(pa, _bin(OP_MUL, _neg(g), _bin(OP_DIV, n, a)))   # -g * (out / a)
    elif op == OP_POWC:                                     # (c * a**(c-1)) * g
        if c == 1.0:
            s.add(pa, g)                    # (1 * a**0) * g is g exactly
        elif c == 2.0:                      # a**1 is a exactly
            s.add(pa, _bin(OP_MUL, _con(OP_MULC, a, 2.0), g))
        elif c != 0.0:
            s.add(pa, _bin(OP_MUL, _con(OP_MULC, _con(OP_POWC, a, c - 1.0), c), g))
    elif op == OP_RPOWC:                                    # out * log(c) * g
        if c != 0.0:
            s.add(pa, _bin(OP_MUL, _con(OP_MULC, n, fg_vm_log(c)), g))
    elif op == OP_RELU:
        s.add(pa, _bin(OP_RELU_GRAD, g, n))                 # g where out > 0
    elif op == OP_TANH:                                     # (1 - out*out) * g
        s.add(pa, _bin(OP_MUL, _con(OP_RSUBC, _bin(OP_MUL, n, n), 1.0), g))
    elif op == OP_EXP:
        s.add(pa, _bin(OP_MUL, n, g))                       # out * g
    elif op == OP_LOG:
        s.add(pa, _bin(OP_DIV, g, a))                       # g / a
    elif op == OP_SIGMOID:                                  # out * (1 - out) * g
        s.add(pa, _bin(OP_MUL, _bin(OP_MUL, n, _con(OP_RSUBC, n, 1.0)), g))
    elif op == OP_ABS:
        s.add(pa, _bin(OP_SIGN_GRAD, g, a))                 # sign(a) * g
    elif op == OP_SQRT:
        s.add(pa, _bin(OP_DIV, g, _con(OP_MULC, n, 2.0)))   # g / (2 * out)
    elif op == OP_RELU_GRAD or op == OP_SIGN_GRAD or op == OP_TIE_GRAD:
        s.add(pa, _bin(op, g, b))           # linear in a; d/db = 0: nothing to b
    elif op == OP_LOG1P:
        s.add(pa, _bin(OP_DIV, g, _con(OP_ADDC, a, 1.0)))   # g / (1 + a)
    elif op == OP_SOFTPLUS:                                 # sigmoid(a) * g
        s.add(pa, _bin(OP_MUL, _con(OP_SIGMOID, a, 0.0), g))
    elif op == OP_SOFTMAX:                  # out * g, and -(out * g) to b
        t = _bin(OP_MUL, n, g)
        s.add(pa, t)
        s.add(pb, _neg(t))
    else:
        raise AssertionError(f"grad: no differentiable rule for op code {op}")
    return 0


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------

cdef inline bint _is_custom(Value v) except -1:
    """A hand-built node, or a node with a user ``_backward`` (backward()
    calls it instead of the op's rule)."""
    if v._opcode == OP_CUSTOM:
        return True
    return v._dict != NULL and '_backward' in <dict><object>v._dict


cdef str _describe(Value v):
    return f"Value(data={v.data!r}), op {v._op!r}"


def grad_sweep(list outputs, list seeds, list inputs, bint create_graph):
    """Gradients of ``sum(seed_k * outputs[k])`` with respect to ``inputs``.

    ``outputs``: Values; ``seeds``: floats, or (create_graph only) Values;
    ``inputs``: Values.  Returns a list with, per input, a float
    (create_graph=False) or a Value (create_graph=True), or None for an input
    that is not in the outputs' graph.  Validation is the caller's
    (fastgrad.autograd.grad).
    """
    cdef Py_ssize_t nout = len(outputs), nin = len(inputs)
    cdef PyObject*** orders = <PyObject***>calloc(nout + 1, sizeof(PyObject**))
    cdef Py_ssize_t* lens = <Py_ssize_t*>calloc(nout + 1, sizeof(Py_ssize_t))
    cdef unsigned long long* stamps = <unsigned long long*>calloc(
        nout + 1, sizeof(unsigned long long))
    cdef double* saved = NULL
    cdef PyObject** nodes = NULL
    cdef Py_ssize_t total = 0, n = 0, k, i, m
    cdef bint custom = False, slots_hold_values = False
    cdef _PartialGraph holder = None
    cdef PyObject* v
    cdef PyObject** slot
    cdef Value out
    cdef _Adjoints s
    cdef list result = [None] * nin
    cdef list member = [False] * nin
    if orders == NULL or lens == NULL or stamps == NULL:
        free(orders)
        free(lens)
        free(stamps)
        raise MemoryError("grad: out of memory")
    try:
        for k in range(nout):
            out = <Value?>outputs[k]
            lens[k] = topo_order(out, &orders[k])
            total += lens[k]
            stamps[k] = _stamp(out)       # every node of this sort has it
        for k in range(nin):
            member[k] = _in_graph(<Value?>inputs[k], stamps, nout)
        saved = <double*>malloc((total + 1) * sizeof(double))
        nodes = <PyObject**>malloc((total + 1) * sizeof(PyObject*))
        if saved == NULL or nodes == NULL:
            raise MemoryError("grad: graph too large for memory")
        # A node in several outputs' graphs carries the stamp of the last sort
        # that saw it; keep it there and concatenate the sorts last to first:
        # its operands are in that sort too, before it or in a later sort
        # (earlier in the list), so the list stays topological.  Save each
        # grad slot and zero it (0.0 is also a NULL adjoint pointer).
        for k in range(nout - 1, -1, -1):
            for i in range(lens[k]):
                v = orders[k][i]
                if _stamp(<Value>v) != stamps[k]:
                    continue
                nodes[n] = v
                saved[n] = (<Value>v).grad
                (<Value>v).grad = 0.0
                n += 1
                if _is_custom(<Value>v):
                    custom = True
                if (n & _SIGNAL_MASK) == 0:
                    PyErr_CheckSignals()
        if custom and create_graph:
            for i in range(n):
                if _is_custom(<Value>nodes[i]):
                    raise ValueError(
                        "grad(create_graph=True): the graph contains a hand-built "
                        f"node ({_describe(<Value>nodes[i])}) whose derivative "
                        "is a user _backward callable; it cannot be "
                        "differentiated twice (build it from Value operators "
                        "instead)")
        if custom:
            _custom_sweep(nodes, n, outputs, seeds)
        elif not create_graph:
            for k in range(nout):
                out = <Value>outputs[k]
                out.grad = out.grad + <double>seeds[k]
            for i in range(n - 1, -1, -1):
                if (<Value>nodes[i])._opcode != OP_LEAF:
                    _apply_pure_rule(nodes[i])
                if (i & _SIGNAL_MASK) == 0:
                    PyErr_CheckSignals()
        else:
            slots_hold_values = True
            s = _Adjoints.__new__(_Adjoints)
            for k in range(nout):
                seed = seeds[k]
                if not isinstance(seed, Value):
                    seed = Value(seed)
                s.add(<PyObject*>outputs[k], <Value>seed)
            for i in range(n - 1, -1, -1):
                v = nodes[i]
                if _slot(v)[0] != NULL and (<Value>v)._opcode != OP_LEAF:
                    _diff_rule(s, <Value>v, <Value>_slot(v)[0])
                if (i & _SIGNAL_MASK_VALUES) == 0:
                    PyErr_CheckSignals()
            for k in range(nin):
                if member[k]:
                    # in the graph but no path carried a gradient: a zero leaf
                    slot = _slot(<PyObject*>inputs[k])
                    result[k] = <Value>slot[0] if slot[0] != NULL else Value(0.0)
            return result
        for k in range(nin):
            if member[k]:
                result[k] = (<Value>inputs[k]).grad
        return result
    except BaseException as exc:
        if slots_hold_values:
            holder = _holder_for(exc)
        raise
    finally:
        if holder is not None:
            # one pass: move the adjoints into nodes[:m] (m <= i: entries
            # already read) and restore the slots; the holder takes the array
            m = 0
            for i in range(n):
                v = nodes[i]
                if _slot(v)[0] != NULL:
                    nodes[m] = _slot(v)[0]
                    m += 1
                (<Value>v).grad = saved[i]
            holder._items = nodes
            holder._count = m
            nodes = NULL
        else:
            for i in range(n):
                if slots_hold_values:
                    Py_XDECREF(_slot(nodes[i])[0])
                (<Value>nodes[i]).grad = saved[i]
        for k in range(nout):
            free(orders[k])
        free(orders)
        free(lens)
        free(stamps)
        free(saved)
        free(nodes)


cdef inline unsigned long long _stamp(Value v) noexcept:
    """The visit stamp topo_order left on v (48 bits)."""
    return (<unsigned long long>v._mark_hi << 32) | v._mark


cdef bint _in_graph(Value x, unsigned long long* stamps, Py_ssize_t nout) noexcept:
    """Was x visited by one of this call's sorts?  (A later sort's stamp is
    never an earlier one's, so a stale stamp cannot match.)"""
    cdef unsigned long long st = _stamp(x)
    cdef Py_ssize_t k
    for k in range(nout):
        if stamps[k] == st:
            return True
    return False


cdef inline void _apply_pure_rule(PyObject* node) noexcept:
    """backward()'s per-node step: add op_backward's contributions to the
    operands' grad slots (borrowed pointers, no reference counting)."""
    cdef PyObject* pa = (<Value>node)._a
    cdef PyObject* pb = node_b(<Value>node)
    cdef PyObject* x
    cdef double ga, gb, out, g
    cdef Py_ssize_t i
    cdef int op = (<Value>node)._opcode
    if op_is_nary(op):
        out = (<Value>node).data
        g = (<Value>node).grad
        for i in range(PyTuple_GET_SIZE(<tuple>pa)):
            x = PyTuple_GET_ITEM(<tuple>pa, i)
            (<Value>x).grad = fg_vm_add_s((<Value>x).grad,
                                          nary_backward_s(op, (<Value>x).data, out, g))
        return
    if pb != NULL:
        op_backward_s((<Value>node)._opcode, (<Value>pa).data, (<Value>pb).data, 0.0,
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)
        (<Value>pb).grad = fg_vm_add_s((<Value>pb).grad, gb)
    else:
        op_backward_s((<Value>node)._opcode, (<Value>pa).data, 0.0, node_c(<Value>node),
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)


cdef int _custom_sweep(PyObject** nodes, Py_ssize_t n, list outputs,
                       list seeds) except -1:
    """First order through hand-built nodes: backward()'s own sweep (user
    ``_backward`` callables write ``.grad``) on the zeroed slots."""
    cdef Py_ssize_t i, k
    cdef list keep = [<object>nodes[i] for i in range(n)]   # user code may drop nodes
    for k in range(len(outputs)):
        (<Value>outputs[k]).grad += <double>seeds[k]
    for i in range(n - 1, -1, -1):
        keep[i]._backward()
    return 0


# ---------------------------------------------------------------------------
# forward-over-reverse Hessian-vector products (fastgrad.functional)
# ---------------------------------------------------------------------------
# Reverse-over-reverse through create_graph=True allocates the backward graph
# as Values (about 2.5 nodes per forward node) and sweeps it again: 5.5x the
# cost of a gradient on the demo MLP loss.  This sweep carries, per node, a
# tangent (forward, direction v) and an adjoint with its tangent (reverse),
# in C arrays, using op_backward's first partials and op_second's second
# partials (_rules.pxd); no Value is allocated.

def hvp_sweep(Value y not None, list inputs, const double[::1] v):
    """``(grad, H v)`` of ``y`` with respect to leaf ``inputs`` along ``v``.

    Returns two lists of floats (None for an input not in y's graph).
    """
    cdef PyObject** order = NULL
    cdef Py_ssize_t n = 0, i, k, ia, ib, nin = len(inputs)
    cdef double* saved = NULL
    cdef double* buf = NULL
    cdef double* T          # tangent of each node's value
    cdef double* PA         # d out / d a
    cdef double* PB         # d out / d b
    cdef double* G          # adjoint
    cdef double* DG         # tangent of the adjoint
    cdef double gb, haa, hab, hbb, g, dg, ta, tb, p, out, tout
    cdef unsigned long long st
    cdef PyObject* node
    cdef PyObject* pb
    cdef PyObject* xs
    cdef PyObject* xk
    cdef Py_ssize_t q, ik
    cdef Value x
    cdef int op
    cdef bint numbered = False
    cdef list grads = [None] * nin, hv = [None] * nin
    if v.shape[0] != nin:
        raise ValueError(f"hvp: v has {v.shape[0]} entries, inputs {nin}")
    for k in range(nin):
        x = <Value?>inputs[k]
        if x._opcode != OP_LEAF:
            raise ValueError(f"hvp: inputs[{k}] is not a leaf Value")
    try:
        n = topo_order(y, &order)
        st = _stamp(y)
        saved = <double*>malloc((n + 1) * sizeof(double))
        buf = <double*>calloc(5 * (n + 1), sizeof(double))
        if saved == NULL or buf == NULL:
            raise MemoryError("hvp: graph too large for memory")
        T = buf
        PA = buf + (n + 1)
        PB = buf + 2 * (n + 1)
        G = buf + 3 * (n + 1)
        DG = buf + 4 * (n + 1)
        for i in range(n):
            node = order[i]
            if _is_custom(<Value>node):
                raise ValueError(
                    "hvp: the graph contains a hand-built node "
                    f"({_describe(<Value>node)}) whose derivative is a user "
                    "_backward callable; it cannot be differentiated twice")
        for i in range(n):          # number the nodes in their grad slots
            saved[i] = (<Value>order[i]).grad
        numbered = True             # (the finally restores from saved)
        for i in range(n):
            (<Value>order[i]).grad = <double>i
        for k in range(nin):
            x = <Value>inputs[k]
            if _stamp(x) == st:
                T[<Py_ssize_t>x.grad] += v[k]   # an input listed twice: both
        # forward: tangents, and the local partials for the reverse sweep
        for i in range(n):
            if (i & _SIGNAL_MASK) == 0:
                PyErr_CheckSignals()
            node = order[i]
            op = (<Value>node)._opcode
            if op == OP_LEAF:
                continue
            if op_is_nary(op):
                # T = sum_k d(out)/d(x_k) T_k (operands numbered in their slots)
                xs = (<Value>node)._a
                out = (<Value>node).data
                tout = 0.0
                for q in range(PyTuple_GET_SIZE(<tuple>xs)):
                    xk = PyTuple_GET_ITEM(<tuple>xs, q)
                    tout += nary_partial(op, (<Value>xk).data, out) * \
                        T[<Py_ssize_t>(<Value>xk).grad]
                T[i] = tout
                continue
            pb = node_b(<Value>node)
            ia = <Py_ssize_t>(<Value>(<Value>node)._a).grad
            if pb != NULL:
                ib = <Py_ssize_t>(<Value>pb).grad
                op_backward_s(op, (<Value>(<Value>node)._a).data, (<Value>pb).data, 0.0,
                              (<Value>node).data, 1.0, &PA[i], &PB[i])
                T[i] = PA[i] * T[ia] + PB[i] * T[ib]
            else:
                op_backward_s(op, (<Value>(<Value>node)._a).data, 0.0,
                              node_c(<Value>node), (<Value>node).data, 1.0,
                              &PA[i], &gb)
                T[i] = PA[i] * T[ia]
        # reverse: adjoints and their tangents
        G[n - 1] = 1.0
        for i in range(n - 1, -1, -1):
            if (i & _SIGNAL_MASK) == 0:
                PyErr_CheckSignals()
            node = order[i]
            op = (<Value>node)._opcode
            if op == OP_LEAF:
                continue
            g = G[i]
            dg = DG[i]
            if op_is_nary(op):
                # operand k: G += p_k g, DG += p_k dg + g (H T)_k, with
                # (H T)_k from the node's own tangent (nary_hess_t)
                xs = (<Value>node)._a
                out = (<Value>node).data
                for q in range(PyTuple_GET_SIZE(<tuple>xs)):
                    xk = PyTuple_GET_ITEM(<tuple>xs, q)
                    ik = <Py_ssize_t>(<Value>xk).grad
                    p = nary_partial(op, (<Value>xk).data, out)
                    G[ik] += p * g
                    DG[ik] += p * dg + g * nary_hess_t(op, (<Value>xk).data, out,
                                                       T[ik], T[i])
                continue
            pb = node_b(<Value>node)
            ia = <Py_ssize_t>(<Value>(<Value>node)._a).grad
            ta = T[ia]
            if pb != NULL:
                ib = <Py_ssize_t>(<Value>pb).grad
                tb = T[ib]
                op_second(op, (<Value>(<Value>node)._a).data, (<Value>pb).data, 0.0,
                          (<Value>node).data, &haa, &hab, &hbb)
                G[ia] += PA[i] * g
                G[ib] += PB[i] * g
                DG[ia] += PA[i] * dg + g * (haa * ta + hab * tb)
                DG[ib] += PB[i] * dg + g * (hab * ta + hbb * tb)
            else:
                op_second(op, (<Value>(<Value>node)._a).data, 0.0, node_c(<Value>node),
                          (<Value>node).data, &haa, &hab, &hbb)
                G[ia] += PA[i] * g
                DG[ia] += PA[i] * dg + g * haa * ta
        for k in range(nin):
            x = <Value>inputs[k]
            if _stamp(x) == st:
                grads[k] = G[<Py_ssize_t>x.grad]
                hv[k] = DG[<Py_ssize_t>x.grad]
        return grads, hv
    finally:
        if numbered:
            for i in range(n):
                (<Value>order[i]).grad = saved[i]
        free(order)
        free(saved)
        free(buf)
