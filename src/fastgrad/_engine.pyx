# cython: language_level=3
"""fastgrad's eager engine: the Value node, its operators and backward().

Design, in five lines:
  * A Value is a final, non-GC extension type with C fields: data, grad, an op
    code, up to two operand pointers and one baked constant.  No closure, no
    per-node dict unless the user sets attributes, no reference cycle.
  * Operators compute the value with the rules in _rules.pxd and link operands.
  * backward() sorts the graph iteratively (explicit stack, visit stamps instead
    of a set) and sweeps it in reverse, applying op_backward per op code.
  * Deallocation is iterative too: a dying node hands its operands to a
    module-level stack that the outermost dealloc drains (no C recursion).
"""
cimport cython
from cpython.object cimport PyObject, Py_TYPE
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_REFCNT
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_Check
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.exc cimport PyErr_CheckSignals
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
from libc.math cimport isfinite, floor, isinf

from fastgrad._rules cimport *

import numbers
import sys
import threading

cdef extern from "Python.h":
    double PyLong_AsDouble(object) except? -1.0
    ctypedef int (*visitproc)(PyObject*, void*) noexcept
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*) noexcept
    ctypedef int (*inquiry)(PyObject*) noexcept
    ctypedef Py_hash_t (*hashfunc)(PyObject*) except? -1
    ctypedef struct PyTypeObject:
        Py_ssize_t tp_dictoffset
        PyObject* tp_dict
        hashfunc tp_hash
        unsigned long tp_flags
        traverseproc tp_traverse
        inquiry tp_clear
    void PyType_Modified(PyTypeObject*)
    PyTypeObject PyBaseObject_Type
    ctypedef object (*getter)(object, void*)
    ctypedef int (*setter)(object, object, void*) except -1
    ctypedef struct PyGetSetDef:
        const char* name
        getter get
        setter set
        const char* doc
        void* closure
    object PyDescr_NewGetSet(PyTypeObject*, PyGetSetDef*)
    object PyObject_GenericGetDict(object, void*)

cdef extern from *:
    """
    #ifndef FASTGRAD_DEBUG
    #define FASTGRAD_DEBUG 0
    #endif
    #ifndef Py_TPFLAGS_IMMUTABLETYPE  /* Python < 3.10 */
    #define Py_TPFLAGS_IMMUTABLETYPE 0
    #endif

    /* Value(...) called from Python allocates the GC-tracked subtype (see
       _install_value_type); the engine's own nodes are allocated by calling
       Cython's tp_new function directly and stay untracked. */
    static newfunc fastgrad_value_new_orig = NULL;
    static PyTypeObject *fastgrad_value_type = NULL;
    static PyTypeObject *fastgrad_tracked_type = NULL;
    static PyObject *fastgrad_value_new(PyTypeObject *t, PyObject *a, PyObject *k) {
        if (t == fastgrad_value_type && fastgrad_tracked_type != NULL)
            t = fastgrad_tracked_type;
        return fastgrad_value_new_orig(t, a, k);
    }
    /* Python 3.9 refuses attribute assignment on any non-heap type (3.10+
       checks Py_TPFLAGS_IMMUTABLETYPE, which we clear instead).  On 3.9
       Value's metatype is a subclass of type whose setattr marks Value as
       a heap type for the duration of type's own setattr (which stores the
       attribute and updates the slots, as for a Python class).  The caller
       keeps the garbage collector off meanwhile (type_is_gc looks at that
       flag). */
    static int fastgrad_meta_setattro(PyObject *type, PyObject *name, PyObject *value) {
        PyTypeObject *t = (PyTypeObject *)type;
        int r;
        if (t->tp_flags & Py_TPFLAGS_HEAPTYPE)
            return PyType_Type.tp_setattro(type, name, value);
        t->tp_flags |= Py_TPFLAGS_HEAPTYPE;
        r = PyType_Type.tp_setattro(type, name, value);
        t->tp_flags &= ~Py_TPFLAGS_HEAPTYPE;
        return r;
    }
    static int fastgrad_meta_set(PyObject *type, PyObject *name, PyObject *value, int del) {
        return fastgrad_meta_setattro(type, name, del ? NULL : value);
    }
    static int fastgrad_install_meta(PyObject *value, PyObject *meta) {
        /* meta: a Python subclass of type (same layout as type) */
        PyTypeObject *old = Py_TYPE(value);
        Py_INCREF(meta);
        Py_SET_TYPE(value, (PyTypeObject *)meta);
        Py_DECREF(old);
        return 0;
    }
    static int fastgrad_install_new(PyObject *value, PyObject *tracked) {
        PyTypeObject *v = (PyTypeObject *)value;
        fastgrad_value_type = v;
        Py_INCREF(tracked);
        fastgrad_tracked_type = (PyTypeObject *)tracked;
        if (fastgrad_value_new_orig == NULL) {
            fastgrad_value_new_orig = v->tp_new;
            v->tp_new = fastgrad_value_new;
        }
    #if PY_VERSION_HEX >= 0x03090000
        /* Cython calls the type through a vectorcall that skips tp_new */
        v->tp_vectorcall = NULL;
    #endif
        /* the subtype was created before the patch and copied the slot */
        ((PyTypeObject *)tracked)->tp_new = fastgrad_value_new;
        return 0;
    }
    """
    int FASTGRAD_DEBUG
    unsigned long Py_TPFLAGS_IMMUTABLETYPE
    int fastgrad_install_new(object value, object tracked) except -1
    int fastgrad_install_meta(object value, object meta) except -1
    int fastgrad_meta_set(object type, object name, object value, int delete) except -1

# Speed trick (as in _replay.pyx and _higher.pyx): the _rules.pxd functions
# are always inlined.  Once op_forward had the issue-20 ops, gcc's size
# limits made it a call in the operators (+0.8% instructions per demo
# training step, callgrind, benchmarks/callgrind_engine.py step).
cdef extern from *:
    """
    #if defined(__GNUC__)
    #undef CYTHON_INLINE
    #define CYTHON_INLINE __inline__ __attribute__((always_inline, unused))
    #endif
    """

#: True in a FASTGRAD_CYTHON_DEBUG=1 build (bounds/initialisation checks on)
DEBUG_BUILD = bool(FASTGRAD_DEBUG)

# ---------------------------------------------------------------------------
# module state
# ---------------------------------------------------------------------------

# Grad mode is per thread (see set_grad_enabled): a C thread-local flag, read
# only when some thread has recording off (fg_grad_off_threads > 0), so the
# common case costs new_node one plain global load.
cdef extern from *:
    """
    #if defined(_MSC_VER)
    #define FG_THREAD_LOCAL __declspec(thread)
    #define FG_NOINLINE __declspec(noinline)
    #else
    #define FG_THREAD_LOCAL __thread
    #define FG_NOINLINE __attribute__((noinline))
    #endif
    static FG_THREAD_LOCAL int fg_grad_off = 0;   /* this thread: recording off */
    static Py_ssize_t fg_grad_off_threads = 0;    /* threads with it off (GIL) */
    /* out of line: the thread-local read is a __tls_get_addr call in a
       shared library; keep it off the inlined fast path */
    static FG_NOINLINE int fg_thread_recording(void) { return !fg_grad_off; }
    static CYTHON_INLINE int fg_grad_enabled(void) {
        return fg_grad_off_threads == 0 || fg_thread_recording();
    }
    /* compile() tracing, same pattern: depth per thread, count of threads */
    static FG_THREAD_LOCAL int fg_tracing = 0;
    static Py_ssize_t fg_tracing_threads = 0;
    static FG_NOINLINE int fg_thread_tracing(void) { return fg_tracing; }
    static CYTHON_INLINE int fg_is_tracing(void) {
        return fg_tracing_threads != 0 && fg_thread_tracing();
    }
    """
    int fg_grad_off
    Py_ssize_t fg_grad_off_threads
    bint fg_grad_enabled() noexcept nogil
    int fg_tracing
    Py_ssize_t fg_tracing_threads
    bint fg_is_tracing() noexcept nogil
cdef unsigned long long _data_epoch = 0  # see data_epoch_ptr (_engine.pxd)
cdef unsigned long long _epoch = 0  # visit stamp of the current sort (47 bits used:
                                    # the recorder keeps slot codes in the stamp
                                    # fields with the 48th bit set, see
                                    # _replay_record.pxi's build)
# First capacity of _topo_order's order buffer: the last sort's node count,
# so that sorting a graph the size of the last one (a training loop's)
# allocates the buffer once instead of growing it by doubling from 1024
# (realloc's copies: ~1% of the demo step's instructions, callgrind).  Only
# a hint: a small graph after a big one gets a big buffer once (malloc'ed,
# not touched beyond its nodes).
cdef size_t _order_cap_hint = 1024

# Iterative deallocation: an operand that a dying node holds the last
# reference to waits on this intrusive stack until the outermost
# Value.__dealloc__ releases it (no C recursion).  The stack is threaded
# through the waiting nodes themselves (see _grave_release): freeing needs no
# memory at all, so it works when memory is exhausted.
cdef PyObject* _grave = NULL     # top of the stack (owned reference)
cdef bint _draining = False


def _set_sort_epoch(unsigned long long epoch):
    """Testing hook: set the counter behind topological-sort visit stamps."""
    global _epoch
    _epoch = epoch & 0x7FFFFFFFFFFF


def is_grad_enabled():
    """Return True when operations on Values record a graph in the calling
    thread (the default in every thread)."""
    return fg_grad_enabled()


def set_grad_enabled(bint mode):
    """Turn graph recording on or off for the calling thread; return the
    previous setting of that thread.

    Grad mode is thread-local, as in PyTorch: each thread starts with
    recording on, and turning it off in one thread (``no_grad``) leaves every
    other thread recording.
    """
    global fg_grad_off
    cdef bint old = not fg_grad_off
    if mode and not old:
        fg_grad_off = 0
        del _thread_mode.off        # its __dealloc__ uncounts this thread
    elif old and not mode:
        _thread_mode.off = _GradOffThread()
        fg_grad_off = 1
    return old


@cython.final
cdef class _GradOffThread:
    """Alive (in a threading.local) while its thread has recording off.

    Counts such threads in fg_grad_off_threads; when a thread ends with
    recording off, its thread-local storage is cleared, this object dies and
    the count stays right.
    """
    def __cinit__(self):
        global fg_grad_off_threads
        fg_grad_off_threads += 1

    def __dealloc__(self):
        global fg_grad_off_threads
        fg_grad_off_threads -= 1


_thread_mode = threading.local()


# ---------------------------------------------------------------------------
# operand conversion
# ---------------------------------------------------------------------------

cdef object _np_bool = None

cdef int _as_number(object x, double* out) except -1:
    """Store float(x) in out[0] and return 1 if x is a real number, else 0.

    Accepted: int, float, bool, numpy integer/float/bool scalars and 0-d
    arrays, and other numbers.Real (Fraction, ...).  Rejected (returns 0):
    complex, str, None, other arrays, anything else, so operators can return
    NotImplemented.
    """
    global _np_bool
    if PyFloat_Check(x):
        out[0] = PyFloat_AS_DOUBLE(x)
        return 1
    if PyLong_Check(x):
        out[0] = PyLong_AsDouble(x)
        return 1
    if isinstance(x, Value):
        return 0
    if isinstance(x, numbers.Real):
        out[0] = float(x)
        return 1
    if _np_bool is None:
        import numpy
        _np_bool = numpy.bool_
    if isinstance(x, _np_bool):
        out[0] = 1.0 if x else 0.0
        return 1
    if _is_array(x) and x.ndim == 0 and x.dtype.kind in "biuf":
        # a 0-d array (np.sum's result on some paths, x[()]): micrograd keeps
        # it as data and prints the number; one float here
        out[0] = float(x)
        return 1
    return 0


cdef double _to_double(object x, str where) except? -1.0:
    cdef double d
    if not _as_number(x, &d):
        if isinstance(x, Value):
            raise TypeError(
                f"{where} expects a real number, got a Value ({x!r:.60}); a "
                "Value cannot hold another Value (micrograd would nest them): "
                "use the Value itself, or Value(v.data) for a new leaf")
        if _is_array(x):
            raise TypeError(
                f"{where} expects a real number, got a numpy.ndarray of shape "
                f"{x.shape}; a fastgrad Value holds one float (micrograd's would "
                "hold the whole array): make one Value per element, e.g. "
                "[Value(float(e)) for e in arr]")
        raise TypeError(f"{where} expects a real number, got "
                        f"{type(x).__name__} ({x!r:.60})")
    return d


cdef bint _is_array(object x):
    """x is a numpy array (without importing numpy: no array exists then)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


cdef str _class_name(object x):
    """The class of x by module, as a user would import it."""
    if isinstance(x, Value):
        return "fastgrad.Value"
    cls = type(x)
    mod = getattr(cls, "__module__", None)
    if mod in (None, "builtins"):
        return cls.__qualname__
    return f"{mod}.{cls.__qualname__}"


cdef object _unsupported(object self, object other, str op, bint reflected):
    """What an operator returns for an operand it cannot use.

    NotImplemented (Python then asks the other operand, and finally raises
    its own TypeError), except for the operands a learner meets by mistake,
    which get a TypeError that says what to do: a numpy array on the right
    (micrograd would put the whole array into one Value's data) and a Value
    of another engine (``fastgrad.reference.Value``, micrograd's, a
    notebook's own class), which Python would report as "'Value' and
    'Value'".
    """
    left, right = (other, self) if reflected else (self, other)
    names = f"'{_class_name(left)}' and '{_class_name(right)}'"
    if _is_array(other):
        raise TypeError(
            f"unsupported operand type(s) for {op}: {names}: a fastgrad Value "
            "holds one float, so it cannot take a whole array as micrograd's "
            f"Value(data=array) does; write array {op} value instead (numpy "
            "then gives an object array of Values, one per element) or loop "
            "over the elements")
    if _foreign_value(other):
        raise TypeError(
            f"unsupported operand type(s) for {op}: {names}: Values of two "
            "different engines cannot be combined; build both from one class "
            "(e.g. fastgrad.Value(x.data) makes a fastgrad leaf of x's value)")
    return NotImplemented


cdef object _no_order(object other, str op):
    cdef double c
    if isinstance(other, Value) or _as_number(other, &c):
        raise TypeError(
            f"'{op}' is not supported for fastgrad.Value: Values have no order "
            "(as in micrograd), so max(), min() and sorted() cannot compare "
            f"them either; compare the numbers (a.data {op} b.data, or "
            "key=lambda v: v.data) or use fastgrad.maximum(a, b) / "
            "fastgrad.minimum(a, b), which keep the graph (the max gate)")
    return NotImplemented


cdef bint _foreign_value(object x):
    """x looks like another autodiff engine's Value (micrograd's, the
    lecture's, fastgrad.reference's): data, grad and _prev."""
    try:
        return (not isinstance(x, Value) and type(x).__name__ == "Value"
                and hasattr(x, "_prev")
                and hasattr(x, "grad") and hasattr(x, "data"))
    except Exception:       # a hostile __getattr__: not ours to judge
        return False


# ---------------------------------------------------------------------------
# node construction
# ---------------------------------------------------------------------------

cdef Value new_node(double data, int op, Value a, Value b, double c):
    """A new Value with operands a (and b) linked, unless recording is off
    (for other compiled modules; the operators here inline _make_node)."""
    return _make_node(data, op, a, b, c)


cdef inline Value _make_node(double data, int op, Value a, Value b, double c):
    # inline: gcc stopped inlining new_node into dot_add/the operators once
    # it read the thread-local grad mode (+20 instructions per node,
    # callgrind on the demo step)
    cdef Value out = Value.__new__(Value)
    out.data = data
    if fg_is_tracing():
        out._flags = FLAG_TRACED
    if fg_grad_enabled():
        out._opcode = op
        Py_INCREF(a)
        out._a = <PyObject*>a
        if b is not None:
            Py_INCREF(b)
            out._u.b = <PyObject*>b
        else:
            out._u.c = c
    else:
        out._flags |= FLAG_NO_GRAD   # backward() from it is an error
    return out


cdef str _fmt(double x):
    return repr(x)


cdef inline Value _binary(int op, Value a, Value b):
    return _make_node(op_forward_s(op, a.data, b.data, 0.0), op, a, b, 0.0)


cdef inline Value _with_const(int op, Value a, double c):
    return _make_node(op_forward_s(op, a.data, 0.0, c), op, a, None, c)


cdef int _check_pow(double base, double exponent, bint const_base) except -1:
    """Raise what Python's float ** raises for these operands (the rule is
    stated once, in fastgrad.reference's _check_pow, which does the same steps
    for the pure-Python engine)."""
    cdef double r
    if not (isfinite(base) and isfinite(exponent)):
        # inf/nan operands: C99 pow (Annex F) gives what Python's float **
        # gives (0.0 ** -inf is inf, (-inf) ** 0.5 is inf), never an error
        return 0
    if base == 0.0 and exponent < 0.0:
        raise ZeroDivisionError(
            f"pow: 0.0 cannot be raised to a negative power ({_fmt(exponent)})")
    if base < 0.0 and floor(exponent) != exponent:
        if isinf(op_forward_s(OP_POWC, -base, 0.0, exponent)):
            # Python's float ** raises OverflowError here (its complex
            # result overflows) before anything else
            raise OverflowError(
                f"pow: {_fmt(base)} ** {_fmt(exponent)} overflows a double")
        raise ValueError(
            f"pow: negative base {_fmt(base)} raised to the non-integer power "
            f"{_fmt(exponent)} is complex; fastgrad Values are real")
    r = op_forward_s(OP_POWC, base, 0.0, exponent)
    if isinf(r):
        raise OverflowError(
            f"pow: {_fmt(base)} ** {_fmt(exponent)} overflows a double")
    return 0


cdef inline int _check_div(double num, double den) except -1:
    if den == 0.0:
        raise ZeroDivisionError(f"division by zero: {_fmt(num)} / {_fmt(den)}")
    return 0


cdef int _check_unary(int op, double a) except -1:
    if op == OP_LOG and a <= 0.0:
        raise ValueError(f"log: math domain error, log({_fmt(a)}) is undefined "
                         "for a non-positive number")
    if op == OP_SQRT and a < 0.0:
        raise ValueError(f"sqrt: math domain error, sqrt({_fmt(a)}) of a "
                         "negative number")
    if op == OP_LOG1P and a <= -1.0:
        raise ValueError(f"log1p: math domain error, log1p({_fmt(a)}) is "
                         "undefined for x <= -1")
    if op == OP_EXP and isfinite(a) and isinf(op_forward_s(OP_EXP, a, 0.0, 0.0)):
        raise OverflowError(f"exp: exp({_fmt(a)}) overflows a double")
    return 0


cdef Value _unary(int op, Value a):
    _check_unary(op, a.data)
    return _make_node(op_forward_s(op, a.data, 0.0, 0.0), op, a, None, 0.0)


cdef Value _unary_rare(int op, Value a):
    # _unary for the ops added after micrograd's (log1p, softplus): more
    # call sites of _unary made gcc stop inlining it into relu() and friends
    # (+0.13M instructions per demo backward, callgrind)
    return _unary(op, a)


# -- iterative deallocation (see _grave above) ---------------------------------
#
# A Value whose last reference is held by a dying node is not released at
# once (its own dealloc would recurse into its operands): it goes on the
# stack instead, linked through its ``grad`` field.  Nothing else can read
# that field: the node's only reference is the stack's.  Its operands stay in
# place and are handled when the drain loop releases it.

cdef inline void _grave_release(PyObject* obj) noexcept:
    """Drop one owned reference: at once, unless it is the last reference to
    a Value, which then waits on the stack (never recursion, never malloc)."""
    global _grave
    if Py_REFCNT(<object>obj) == 1 and isinstance(<object>obj, Value):
        memcpy(&(<Value>obj).grad, &_grave, sizeof(PyObject*))
        _grave = obj
    else:
        Py_DECREF(<object>obj)


cdef inline void _grave_drop_top() noexcept:
    """Pop the top waiting Value and release it (its dealloc parks its own
    operands on the stack)."""
    global _grave
    cdef PyObject* top = _grave
    memcpy(&_grave, &(<Value>top).grad, sizeof(PyObject*))
    (<Value>top).grad = 0.0
    Py_DECREF(<object>top)


cdef tuple _children_tuple(object children):
    """Value(x, _children=...) operands as a tuple, or a clear TypeError."""
    try:
        return tuple(children)
    except TypeError:
        raise TypeError("Value(): _children must be an iterable of Values, got "
                        f"{type(children).__name__}") from None


cdef int _refuse_cycle(Value node, tuple kids) except -1:
    """Raise if linking ``kids`` under ``node`` would make a cycle.

    Only a Value something else refers to can be reached from its new
    operands: a fresh ``Value(...)`` (reference count 1, held by the
    constructor call) skips the search.  Re-running ``__init__`` on a leaf
    already used in a graph searches the operands' graphs (rare path).
    """
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i
    if Py_REFCNT(node) <= 1:
        return 0
    if _user_subclass(node) and not (node._flags & FLAG_INITIALISED):
        # a user subclass's own __init__ holds extra references while it
        # calls super().__init__(...): its first call is on a fresh node
        # (searching there would make building a graph of n subclass nodes
        # O(n**2)); only re-running __init__ can link a used node
        return 0
    for k in kids:
        n = topo_order(<Value>k, &order)
        try:
            for i in range(n):
                if order[i] == <PyObject*>node:
                    raise ValueError(
                        "Value.__init__: this Value is an operand (directly or "
                        "not) of one of the given _children; linking them "
                        "would make a cycle")
        finally:
            free(order)
            order = NULL
    return 0


cdef PyObject* _tracked_type = NULL    # _TrackedValue, set at import


cdef inline bint _user_subclass(object x) noexcept:
    """x is an instance of a user's subclass of Value (not Value itself, nor
    the tracked variant that ``Value(...)`` returns)."""
    cdef PyObject* t = <PyObject*>Py_TYPE(x)
    return t != <PyObject*>Value and t != _tracked_type


cdef Value _alloc_plain():
    """A plain (untracked) Value, outside the operators' hot path.

    new_node() is the only other place that calls Cython's allocator
    directly: with more call sites gcc stops inlining it there (callgrind,
    5 demo steps: +4.2M instructions).
    """
    return Value.__new__(Value)


cdef Value _leaf(double x):
    """A plain (untracked) leaf, as the engine's own nodes are."""
    cdef Value v = _alloc_plain()
    v.data = x
    return v


cdef int _materialize_const(Value v) except -1:
    """Turn a *C node (``x * 2``, ``2 - x`` ...) into the two-operand form of
    its op with the constant as a leaf child (``x * Value(2)``, ...).

    Forward value and every gradient rule are the same expressions (see
    op_forward/op_backward), so nothing the user sees changes except that
    the constant is now a Value that receives a gradient.  Only done when
    ``_prev`` is read: nodes whose operands are never inspected keep the
    compact form (no extra object, no extra work in backward).
    """
    cdef int op = v._opcode
    cdef Value k = _leaf(v._u.c)
    cdef PyObject* a = v._a
    cdef int new_op
    cdef bint const_first
    cdef double saved, saved_data
    cdef Value other
    global _data_epoch
    if op == OP_ADDC:               # x + c (also x - c, stored as x + -c)
        new_op, const_first = OP_ADD, False
    elif op == OP_MULC:             # x * c (also -x = x * -1)
        new_op, const_first = OP_MUL, False
    elif op == OP_DIVC:             # x / c
        new_op, const_first = OP_DIV, False
    elif op == OP_RSUBC:            # c - x
        new_op, const_first = OP_SUB, True
    elif op == OP_RDIVC:            # c / x
        new_op, const_first = OP_DIV, True
    elif op == OP_RPOWC:            # c ** x
        new_op, const_first = OP_POW, True
    else:
        return 0
    Py_INCREF(k)                    # owned by the node from now on
    v._opcode = new_op
    if const_first:
        v._a = <PyObject*>k
        v._u.b = a
    else:
        v._u.b = <PyObject*>k
    if v.grad != 0.0 and not (v._dict != NULL and '_backward' in <dict>v._dict):
        # read after backward(): give the leaf what backward() would have
        # given it (d node / d constant times the node's gradient).  Through
        # _apply_rule, not op_backward: a third inlined copy of op_backward
        # made gcc stop inlining it in the backward sweep (+16% instructions)
        other = <Value>(v._u.b if const_first else v._a)
        saved = other.grad
        saved_data = other.data
        if other._opcode == OP_LEAF and other._flags & FLAG_DATA_SAVED:
            # d(x * c)/dc = x, d(c / x)/dc = 1/x, d(c ** x)/dc depend on x:
            # use x as backward() saw it (an optimizer step may have changed
            # it since), which the sweep kept in the leaf's spare field
            other.data = other._u.c
        try:
            _apply_rule(v)
        finally:
            other.grad = saved
            other.data = saved_data
            _data_epoch += 1     # (restored, but count every write)
    return 0


cdef dict _OP_NAMES = {
    OP_LEAF: '', OP_ADD: '+', OP_SUB: '-', OP_MUL: '*', OP_DIV: '/',
    OP_POW: '**', OP_MAX: 'max', OP_MIN: 'min',
    OP_ADDC: '+', OP_MULC: '*', OP_RSUBC: '-', OP_DIVC: '/', OP_RDIVC: '/',
    OP_RPOWC: '**',
    OP_RELU: 'ReLU', OP_TANH: 'tanh', OP_EXP: 'exp', OP_LOG: 'log',
    OP_SIGMOID: 'sigmoid', OP_ABS: 'abs', OP_SQRT: 'sqrt',
    OP_RELU_GRAD: 'relu_grad', OP_SIGN_GRAD: 'sign_grad', OP_TIE_GRAD: 'tie_grad',
    OP_LOG1P: 'log1p', OP_SOFTPLUS: 'softplus', OP_SOFTMAX: 'softmax',
    OP_SUM: 'sum', OP_LOGSUMEXP: 'logsumexp',
}


# ---------------------------------------------------------------------------
# the Value type
# ---------------------------------------------------------------------------

@cython.no_gc
@cython.freelist(256)
cdef class Value:
    """A scalar in a computational graph: its value, its gradient, its origin.

    Drop-in for ``micrograd.engine.Value``: same constructor, operators,
    ``relu()``, ``backward()``, ``_prev`` and ``_op``.  ``data`` and ``grad``
    are always Python floats (micrograd keeps ints as ints).

    Parameters
    ----------
    data : real number
        The value (int, float, bool or numpy scalar).
    _children : tuple of Value, optional
        Operands of a node built by hand, as in micrograd.  Its backward pass
        is whatever callable you assign to ``node._backward``.
    _op : str, optional
        Label of the operation that made a hand-built node.
    label : str, optional
        A name shown by ``draw_dot`` (as in the lecture version of micrograd).

    Examples
    --------
    >>> from fastgrad import Value
    >>> a, b = Value(-4.0), Value(2.0)
    >>> c = a * b + b ** 3
    >>> c.backward()
    >>> a.grad, b.grad
    (2.0, 8.0)
    """

    def __init__(self, data, _children=(), str _op='', label=''):
        cdef tuple kids
        global _data_epoch
        self.data = _to_double(data, "Value()")
        _data_epoch += 1                 # (__init__ again on a parameter)
        self._flags &= ~FLAG_NO_GRAD     # a Value you make is differentiable
        if fg_is_tracing():
            self._flags |= FLAG_TRACED   # made inside the traced fn
        if label:
            self.label = label    # stored in the instance dict
        # tuple() first: the truth value of e.g. an object ndarray is an error
        kids = _children if type(_children) is tuple else _children_tuple(_children)
        if kids or _op:
            if self._a != NULL:
                raise TypeError("Value.__init__: this Value is already linked "
                                "into a graph; build a new Value instead")
            # a hand-built node (micrograd style): keep its operands in a
            # tuple and its op label in the instance dict
            for k in kids:
                if not isinstance(k, Value):
                    raise TypeError("Value(): _children must be Values, got "
                                    f"{type(k).__name__}")
            _refuse_cycle(self, kids)
            self._opcode = OP_CUSTOM
            Py_INCREF(kids)
            self._a = <PyObject*>kids
            PyObject_GenericGetDict(self, NULL)['_custom_op'] = _op
        self._flags |= FLAG_INITIALISED

    def __dealloc__(self):
        global _draining
        cdef PyObject* a = self._a
        cdef PyObject* b = node_b(self)
        if self._dict != NULL:
            Py_DECREF(<object>self._dict)
            self._dict = NULL
        self._a = NULL
        self._u.b = NULL
        if a == NULL:
            return
        if _draining:
            # an outer dealloc is draining the stack: park the operands there
            _grave_release(a)
            if b != NULL:
                _grave_release(b)
            return
        _draining = True
        _grave_release(a)
        if b != NULL:
            _grave_release(b)
        while _grave != NULL:
            _grave_drop_top()
        _draining = False

    # -- attributes --------------------------------------------------------

    # A name shown by draw_dot.  Set on a node it lives in the node's own
    # dict (created then); unset nodes fall back to this class attribute.
    label = ''

    @property
    def _op(self):
        """The operation that produced this node, as micrograd spells it.

        Assignable, as in micrograd (``out._op = 'tanh'``): the new label is
        what drawings show; the node's op and gradient rule stay.
        """
        cdef int op = self._opcode
        if self._dict != NULL and '_custom_op' in <dict>self._dict:
            return (<dict>self._dict)['_custom_op']
        if op == OP_POWC:
            if self._flags & FLAG_FLOAT_EXPONENT:
                return '**' + repr(self._u.c)
            return '**' + _fmt_exponent(self._u.c)
        if op == OP_CUSTOM:
            return ''
        return _OP_NAMES[op]

    @_op.setter
    def _op(self, label):
        if not isinstance(label, str):
            raise TypeError(f"Value._op must be a str, got {type(label).__name__}")
        PyObject_GenericGetDict(self, NULL)['_custom_op'] = label

    @property
    def _prev(self):
        """The set of operand Values (micrograd's ``_prev``).

        A constant operand (``x * 2``) is stored inside the node, not as a
        Value, until ``_prev`` is first read: then it becomes a leaf Value
        child of the node for good (the node turns into the two-operand form
        of its op, same value and same gradients), so every later read gives
        the same objects and ``backward()`` gives that leaf its gradient, as
        micrograd does.  The exponent of ``x ** k`` stays a number (micrograd
        keeps it out of ``_prev`` too).
        """
        cdef int op = self._opcode
        if op == OP_LEAF:
            return set()
        if op_has_tuple(op):
            return set(<tuple>self._a)
        if op_has_const(op) and op != OP_POWC:
            _materialize_const(self)
            op = self._opcode
        prev = {<Value>self._a}
        if op_is_binary(op):
            prev.add(<Value>self._u.b)
        return prev

    @_prev.setter
    def _prev(self, children):
        # micrograd code may relink a node it built by hand (or a leaf); a
        # node made by an operator keeps its operands, which its op needs
        cdef tuple kids = _children_tuple(children)
        if self._opcode != OP_LEAF and self._opcode != OP_CUSTOM:
            if set(kids) == self._prev:
                return
            raise TypeError(
                f"cannot replace _prev of a node made by an operator (its "
                f"{self._op!r} op needs its operands); build a node by hand, "
                "Value(data, children, op) with your own _backward, or use "
                "Value(v.data) for a leaf cut from the graph")
        for k in kids:
            if not isinstance(k, Value):
                raise TypeError("Value._prev must hold Values, got "
                                f"{type(k).__name__}")
        _refuse_cycle(self, kids)
        old = <object>self._a if self._opcode == OP_CUSTOM else None
        Py_INCREF(kids)
        self._a = <PyObject*>kids
        self._opcode = OP_CUSTOM
        if old is not None:
            Py_DECREF(old)    # the reference self._a held

    def __dir__(self):
        # object.__dir__ skips __dict__ (not a dict here): add user attributes
        names = object.__dir__(self)
        if self._dict != NULL:
            names.extend([k for k in <dict>self._dict if k != '_custom_op'])
        return names

    def _backward(self):
        """Add this node's contribution to its operands' gradients.

        backward() calls the equivalent for every node; it is exposed so that
        code written against micrograd's per-node ``_backward`` keeps working.
        A hand-built node (``Value(x, (a, b), 'op')``) may be given its own
        ``_backward`` callable, which replaces this method for that node.
        """
        _apply_rule(self)

    def __repr__(self):
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    def __reduce__(self):
        # The graph under this node goes out as flat records in topological
        # order (no recursion, so any depth pickles).  Nodes shared with
        # another separately pickled root are copied, not shared; leaves
        # pickled on their own (model parameters) keep their identity.
        # Attributes (label, user data) travel as the state, which pickle and
        # deepcopy restore after the graph exists and the root is memoised:
        # an attribute that refers back to the Value (``v.me = v``, a
        # parameter's ``owner`` model) then finds it instead of recursing.
        cdef list dicts = []
        cdef list records = _graph_records(self, dicts)
        if dicts:
            return (_rebuild_graph, (records,), dicts)
        return (_rebuild_graph, (records,))

    def __setstate__(self, state):
        """Restore the attributes sent by __reduce__ ((index, dict) pairs,
        indices into the topological order of the graph under self)."""
        _restore_dicts(self, state)

    # -- operators ---------------------------------------------------------
    # On a user's subclass the derived operators (-, /, unary -, reflected
    # + and *) are micrograd's compositions of + * and **, so that a
    # subclass overriding those primitives sees them used, as in micrograd;
    # Value itself computes each in one node.

    def __add__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_ADD, self, <Value>other)
        if _as_number(other, &c):
            return _with_const(OP_ADDC, self, c)
        return _unsupported(self, other, "+", False)

    def __radd__(self, other):           # other + self
        cdef double c
        if _user_subclass(self):
            return self + other          # micrograd: through the subclass's +
        if _as_number(other, &c):
            return _with_const(OP_ADDC, self, c)
        return _unsupported(self, other, "+", True)

    def __sub__(self, other):
        cdef double c
        if _user_subclass(self):
            return self + (-other)       # micrograd's definition
        if isinstance(other, Value):
            return _binary(OP_SUB, self, <Value>other)
        if _as_number(other, &c):
            return _with_const(OP_ADDC, self, -c)
        return _unsupported(self, other, "-", False)

    def __rsub__(self, other):           # other - self
        cdef double c
        if _user_subclass(self):
            return other + (-self)
        if _as_number(other, &c):
            return _with_const(OP_RSUBC, self, c)
        return _unsupported(self, other, "-", True)

    def __mul__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_MUL, self, <Value>other)
        if _as_number(other, &c):
            return _with_const(OP_MULC, self, c)
        return _unsupported(self, other, "*", False)

    def __rmul__(self, other):           # other * self
        cdef double c
        if _user_subclass(self):
            return self * other
        if _as_number(other, &c):
            return _with_const(OP_MULC, self, c)
        return _unsupported(self, other, "*", True)

    def __truediv__(self, other):
        cdef double c
        if _user_subclass(self):
            return self * other ** -1
        if isinstance(other, Value):
            _check_div(self.data, (<Value>other).data)
            return _binary(OP_DIV, self, <Value>other)
        if _as_number(other, &c):
            _check_div(self.data, c)
            return _with_const(OP_DIVC, self, c)
        return _unsupported(self, other, "/", False)

    def __rtruediv__(self, other):       # other / self
        cdef double c
        if _user_subclass(self):
            return other * self ** -1
        if _as_number(other, &c):
            _check_div(c, self.data)
            return _with_const(OP_RDIVC, self, c)
        return _unsupported(self, other, "/", True)

    def __pow__(self, other, mod=None):
        cdef double c
        if mod is not None:
            return NotImplemented
        if isinstance(other, Value):
            _check_pow(self.data, (<Value>other).data, False)
            return _binary(OP_POW, self, <Value>other)
        if _as_number(other, &c):
            _check_pow(self.data, c, False)
            out = _with_const(OP_POWC, self, c)
            if PyFloat_Check(other):
                (<Value>out)._flags |= FLAG_FLOAT_EXPONENT
            return out
        return _unsupported(self, other, "**", False)

    def __rpow__(self, other, mod=None):  # other ** self
        cdef double c
        if mod is not None:
            return NotImplemented
        if _as_number(other, &c):
            _check_pow(c, self.data, True)
            return _with_const(OP_RPOWC, self, c)
        return _unsupported(self, other, "**", True)

    def __neg__(self):                   # self * -1, as micrograd
        if _user_subclass(self):
            return self * -1
        return _with_const(OP_MULC, self, -1.0)

    def __abs__(self):
        return _unary(OP_ABS, self)

    # -- comparisons ---------------------------------------------------------
    # micrograd's Value has no order, and neither has this one: an ``if a <
    # b`` on Values would look like part of the graph but is Python control
    # flow (frozen by compile).  The error says what to use instead.  ``==``
    # and ``hash`` stay identity, as in micrograd (Values key optimizer
    # state dicts).

    def __lt__(self, other):
        return _no_order(other, "<")

    def __le__(self, other):
        return _no_order(other, "<=")

    def __gt__(self, other):
        return _no_order(other, ">")

    def __ge__(self, other):
        return _no_order(other, ">=")

    # -- functions -----------------------------------------------------------

    def relu(self):
        """max(0, x); the gradient at 0 is 0 (micrograd's convention)."""
        return _unary(OP_RELU, self)

    def tanh(self):
        """Hyperbolic tangent; finite for every finite input."""
        return _unary(OP_TANH, self)

    def exp(self):
        """e**x; raises OverflowError when the result overflows a double."""
        return _unary(OP_EXP, self)

    def log(self):
        """Natural logarithm; raises ValueError for x <= 0."""
        return _unary(OP_LOG, self)

    def sigmoid(self):
        """1 / (1 + e**-x), computed without overflow for any input."""
        return _unary(OP_SIGMOID, self)

    def abs(self):
        """The absolute value ``|x|``; the gradient at 0 is 0 (as torch.abs)."""
        return _unary(OP_ABS, self)

    def sqrt(self):
        """Square root; raises ValueError for x < 0."""
        return _unary(OP_SQRT, self)

    def log1p(self):
        """log(1 + x), accurate for tiny x; raises ValueError for x <= -1.

        Examples
        --------
        >>> from fastgrad import Value
        >>> x = Value(1e-20)
        >>> y = x.log1p(); y.backward()
        >>> y.data, x.grad
        (1e-20, 1.0)
        """
        return _unary_rare(OP_LOG1P, self)

    def softplus(self):
        """log(1 + e**x), computed without overflow for any x.

        Evaluated as ``max(x, 0) + log1p(exp(-|x|))``; the gradient is
        ``sigmoid(x)``.  For large x the value is x itself, for very negative
        x it is e**x to full precision.

        Examples
        --------
        >>> from fastgrad import Value
        >>> x = Value(0.0)
        >>> y = x.softplus(); y.backward()
        >>> round(y.data, 12), x.grad
        (0.69314718056, 0.5)
        >>> Value(1000.0).softplus().data
        1000.0
        """
        return _unary_rare(OP_SOFTPLUS, self)

    # -- reverse mode --------------------------------------------------------

    def backward(self):
        """Backpropagate from this node: set its grad to 1 and add d(self)/d(node)
        to the ``grad`` of every node it depends on.

        Gradients accumulate: nothing is zeroed (call ``zero_grad()`` or set
        ``.grad = 0`` yourself), exactly as in micrograd.  Iterative, so graphs
        of any depth work.

        Ctrl-C (any signal whose handler raises) is checked every 65,536
        nodes and raises ``KeyboardInterrupt`` promptly.  Interrupted while
        sorting the graph, no ``.grad`` has changed; interrupted during the
        sweep, ``.grad`` values hold partial sums (some nodes' contributions
        added, others not): zero them before the next ``backward()``.  The
        graph itself is always intact.
        """
        _backward_from(self)


cdef object _node_kind(Value v):
    """How _rebuild_graph allocates v: 0 a plain Value (made by an operator),
    1 a Value made by calling Value(...) (GC-tracked), else v's own class."""
    cls = type(v)
    if cls is Value:
        return 0
    if cls is _TrackedValue:
        return 1
    return cls


cdef Value _new_of_kind(object kind):
    if kind is None or kind == 0:
        return _alloc_plain()
    if kind == 1:
        kind = _TrackedValue
    if isinstance(kind, type) and issubclass(kind, Value):
        return _value_new(kind)
    raise ValueError("cannot unpickle a Value: the node class must be a "
                     f"subclass of Value, got {kind!r:.60}")


cdef list _graph_records(Value root, list dicts=None):
    """[(data, grad, op, flags, a, b_or_c, dict, kind), ...] in topological
    order; operand fields are indices into the list, kind as _node_kind.

    With ``dicts`` given, instance dicts go there as (index, dict) pairs and
    the records carry None: Value.__reduce__ sends them as the root's state,
    restored once the graph exists (an attribute may refer back to a node).
    """
    cdef PyObject** order = NULL
    cdef Py_ssize_t n = topo_order(root, &order), i
    cdef Value v
    cdef dict index = {}
    cdef list records = []
    try:
        for i in range(n):
            v = <Value>order[i]
            index[<size_t>order[i]] = i
            d = <object>v._dict if v._dict != NULL else None
            if d is not None and dicts is not None:
                if d:
                    dicts.append((i, d))
                d = None
            flags = v._flags & _PICKLED_FLAGS
            kind = _node_kind(v)
            if v._opcode == OP_LEAF:
                records.append((v.data, v.grad, OP_LEAF, flags, None, None, d, kind))
            elif op_has_tuple(v._opcode):
                kids = tuple([index[<size_t><PyObject*>k] for k in <tuple>v._a])
                records.append((v.data, v.grad, v._opcode, flags, kids, None, d, kind))
            elif op_is_binary(v._opcode):
                records.append((v.data, v.grad, v._opcode, flags,
                                index[<size_t>v._a], index[<size_t>v._u.b], d, kind))
            else:
                records.append((v.data, v.grad, v._opcode, flags,
                                index[<size_t>v._a], v._u.c, d, kind))
    finally:
        free(order)
    return records


def _rebuild_graph(list records):
    """Inverse of Value.__reduce__: rebuild the nodes, return the root.

    Every field of every record is checked (type and range) before a node is
    linked: a malformed or crafted pickle raises ValueError/TypeError, it
    never links a freed or foreign object.  An operand index must point to
    an earlier record, so the result is always a DAG.
    """
    cdef list nodes = []
    cdef Value v
    cdef int op
    cdef Py_ssize_t a_i, b_i
    cdef tuple kids
    if not records:
        raise ValueError("cannot unpickle a Value from an empty record list")
    for rec in records:
        op = _check_record(rec, len(nodes))
        data, grad, _, flags, a, bc, d = (<tuple>rec)[:7]
        v = _new_of_kind((<tuple>rec)[7] if len(<tuple>rec) == 8 else 0)
        v.data = data
        v.grad = grad
        if op_has_tuple(op):
            kids = tuple([nodes[<Py_ssize_t>k] for k in a])
            v._opcode = op
            Py_INCREF(kids)
            v._a = <PyObject*>kids
        elif op != OP_LEAF:
            a_i = a
            v._opcode = op
            Py_INCREF(nodes[a_i])
            v._a = <PyObject*>nodes[a_i]
            if op_is_binary(op):
                b_i = bc
                Py_INCREF(nodes[b_i])
                v._u.b = <PyObject*>nodes[b_i]
            else:
                v._u.c = bc
        v._flags = flags | FLAG_INITIALISED
        if d:
            PyObject_GenericGetDict(v, NULL).update(d)
        nodes.append(v)
    return nodes[len(nodes) - 1]   # (wraparound is off: no [-1])


cdef int _restore_dicts(Value root, object state) except -1:
    """Value.__setstate__: put each (index, dict) of ``state`` into the node
    at that index of the topological order under root (the order
    _graph_records numbered them in: same graph, same depth-first walk)."""
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i
    cdef list todo = []
    if type(state) is not list:
        raise TypeError("cannot unpickle a Value: its state must be a list of "
                        f"(index, dict) pairs, got {type(state).__name__}")
    n = topo_order(root, &order)
    try:
        for item in <list>state:
            if not (type(item) is tuple and len(<tuple>item) == 2
                    and _is_index((<tuple>item)[0], n)
                    and type((<tuple>item)[1]) is dict):
                raise ValueError("cannot unpickle a Value: malformed attribute "
                                 f"entry {item!r:.80} (graph of {n} nodes)")
            i = (<tuple>item)[0]
            todo.append((<Value>order[i], (<tuple>item)[1]))
    finally:
        free(order)
    for node, d in todo:
        PyObject_GenericGetDict(node, NULL).update(d)
    return 0


cdef bint _is_index(object k, Py_ssize_t n):
    # exactly int (not bool, a slice, a float...) and 0 <= k < n
    return type(k) is int and 0 <= k < n


cdef bint _is_real(object x):
    return type(x) is float or type(x) is int


cdef int _check_record(object rec, Py_ssize_t n) except -1:
    """Validate one pickled node record; return its op code.

    ``n`` is the number of nodes rebuilt so far: operand indices must be
    below it.  Layout (see _graph_records): (data, grad, op, flags, a, b_or_c,
    dict-or-None, kind); the node class ``kind`` is checked by _new_of_kind.
    """
    cdef int op
    if type(rec) is not tuple or len(<tuple>rec) not in (7, 8):
        raise ValueError("cannot unpickle a Value: record "
                         f"{n} is not a 7- or 8-tuple ({rec!r:.80})")
    data, grad, op_o, flags, a, bc, d = (<tuple>rec)[:7]
    if len(<tuple>rec) == 7 and type(op_o) is int and 8 <= op_o <= 22:
        # fastgrad 0.1.0's records: 7 fields (no node class) and its op
        # numbering, from before the three *_GRAD ops took codes 8-10
        op_o = op_o + 3
    if not (_is_real(data) and _is_real(grad)):
        raise TypeError(f"cannot unpickle a Value: record {n} has a non-number "
                        f"data/grad ({data!r:.40}, {grad!r:.40})")
    if type(op_o) is not int or not 0 <= op_o < N_OPS:
        raise ValueError(f"cannot unpickle a Value: unknown op code {op_o!r:.40} "
                         f"in record {n}")
    op = op_o
    if type(flags) is not int or flags & ~_PICKLED_FLAGS:
        raise ValueError(f"cannot unpickle a Value: bad flags {flags!r:.40} in "
                         f"record {n}")
    if d is not None and type(d) is not dict:
        raise TypeError(f"cannot unpickle a Value: record {n} has a "
                        f"{type(d).__name__} where the attribute dict goes")
    if op == OP_LEAF:
        ok = a is None and bc is None
    elif op_has_tuple(op):
        # an n-ary node needs an operand (its rules read x_0); a hand-built
        # node may have none (Value(x, (), 'op'))
        ok = (type(a) is tuple and bc is None
              and (len(<tuple>a) > 0 or op == OP_CUSTOM)
              and all([_is_index(k, n) for k in <tuple>a]))
    elif op_is_binary(op):
        ok = _is_index(a, n) and _is_index(bc, n)
    else:   # one operand and a constant (0.0 for unary ops)
        ok = _is_index(a, n) and _is_real(bc)
    if not ok:
        raise ValueError(f"cannot unpickle a Value: record {n} (op code {op}) "
                         f"has malformed operands ({a!r:.60}, {bc!r:.60}); "
                         f"operands must be indices of earlier records")
    return op


# flags a pickle may carry (others are runtime-only state)
cdef int _PICKLED_FLAGS = FLAG_FLOAT_EXPONENT | FLAG_NO_GRAD


cdef int _enable_instance_dict() except -1:
    # Cython's ``cdef dict __dict__`` allocates a dict in every new Value (an
    # extra 64-byte GC-tracked object per node, which also triggers cyclic
    # collections).  Instead the type points tp_dictoffset at the _dict slot,
    # and CPython's generic getattr/setattr create the dict on first use.
    # Measured on the demo step: 10.3 ms -> see commit message.
    cdef Value probe = _alloc_plain()
    cdef Py_ssize_t off = <char*>&probe._dict - <char*><PyObject*>probe
    (<PyTypeObject*>Value).tp_dictoffset = off
    # and a __dict__ attribute, so vars(v) and v.__dict__ work: micrograd's
    # keys (data, grad, _backward, _prev, _op) and the user attributes, a
    # live view that writes through (fastgrad._vars); attribute access
    # itself goes through tp_dictoffset, never through this
    (<dict><object>(<PyTypeObject*>Value).tp_dict)["__dict__"] = property(
        _vars_get, _vars_set, None,
        "micrograd's attributes (data, grad, _backward, _prev, _op) and the "
        "node's own (label, user data), as a live mapping")
    PyType_Modified(<PyTypeObject*>Value)
    return 0


cdef object _ValueVars = None


def _own_dict(Value v, bint create):
    """The node's real instance dict; without ``create`` a node that has
    none gets none (a node with a dict makes backward() take its slower,
    user-code-aware path)."""
    if v._dict == NULL and not create:
        return {}
    return PyObject_GenericGetDict(v, NULL)


def _vars_get(Value v):
    global _ValueVars
    if _ValueVars is None:
        from fastgrad._vars import ValueVars
        _ValueVars = ValueVars
    return _ValueVars(v, _own_dict)


def _vars_set(Value v, mapping):
    _vars_get(v).replace_all(mapping)


_enable_instance_dict()


cdef int _identity_hash() except -1:
    # Defining __lt__ & co. gives the type a tp_richcompare, and CPython then
    # makes a type without its own __hash__ unhashable.  Values hash by
    # identity, exactly as object (and micrograd's Value) does: optimizer
    # state is keyed by Values, and a set of Values (``_prev``) iterates in
    # the same order as micrograd's.
    cdef PyTypeObject* t = <PyTypeObject*>Value
    t.tp_hash = PyBaseObject_Type.tp_hash
    d = <dict><object>t.tp_dict
    if "__hash__" in d and d["__hash__"] is None:
        del d["__hash__"]
    PyType_Modified(t)
    return 0

_identity_hash()


# ---------------------------------------------------------------------------
# Value as a Python class: extendable, subclassable, cycles collected
# ---------------------------------------------------------------------------
#
# micrograd code extends Value by assignment (``Value.tanh = tanh``),
# subclasses it, and builds nodes by hand whose ``_backward`` closure refers
# to the node itself (a reference cycle through the instance dict).
#
# * The type is made mutable (CPython marks static types immutable).
# * Value is not GC-tracked: a GC header would add 16 bytes to every node
#   (64 -> 80) and collections would walk whole graphs.  The nodes that can
#   sit in a cycle are the ones user code creates: ``Value(...)`` called from
#   Python (leaves, hand-built nodes) and instances of user subclasses.  So
#   ``Value(...)`` called from Python allocates ``_TrackedValue``, a
#   GC-tracked subclass with the same layout and name; operators, maximum()
#   and friends allocate plain Values by calling Cython's allocator directly.
#   tp_traverse/tp_clear below let the collector see and break cycles
#   through a tracked node's dict and operands.

cdef int _value_traverse(PyObject* o, visitproc visit, void* arg) noexcept:
    # operands that are plain Values are not GC objects: the collector
    # ignores them, which is right (they cannot hold a cycle's only edge
    # back to a tracked node except through a tracked dict or tuple)
    cdef PyObject* p = (<Value>o)._dict
    cdef int r
    if p != NULL:
        r = visit(p, arg)
        if r:
            return r
    p = (<Value>o)._a
    if p != NULL:
        r = visit(p, arg)
        if r:
            return r
    p = node_b(<Value>o)
    if p != NULL:
        return visit(p, arg)
    return 0


cdef int _value_clear(PyObject* o) noexcept:
    # break cycles: drop the instance dict (user attributes, a hand-built
    # node's ``_backward``) and a hand-built node's operand tuple; op nodes
    # keep their operands (plain Values cannot be in a cycle by themselves)
    cdef PyObject* p = (<Value>o)._dict
    if p != NULL:
        (<Value>o)._dict = NULL
        Py_DECREF(<object>p)
    if (<Value>o)._opcode == OP_CUSTOM:
        p = (<Value>o)._a
        (<Value>o)._a = NULL
        (<Value>o)._opcode = OP_LEAF
        if p != NULL:
            Py_DECREF(<object>p)
    return 0


class _ValueType(type):
    # Value's metatype on Python 3.9 only (see fastgrad_meta_setattro)
    def __setattr__(cls, name, value):
        _set_type_attr(cls, name, value, False)

    def __delattr__(cls, name):
        _set_type_attr(cls, name, None, True)


def _set_type_attr(cls, name, value, bint delete):
    import gc
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        fastgrad_meta_set(cls, name, value, delete)
    finally:
        if was_enabled:
            gc.enable()


class _TrackedValue(Value):
    # what ``Value(...)`` returns when called from Python: a Value whose
    # cycles the garbage collector can see (see above)
    __slots__ = ()


cdef int _install_value_type() except -1:
    cdef PyTypeObject* t = <PyTypeObject*>Value
    t.tp_traverse = _value_traverse
    t.tp_clear = _value_clear
    t.tp_flags &= ~Py_TPFLAGS_IMMUTABLETYPE
    _TrackedValue.__name__ = "Value"
    _TrackedValue.__qualname__ = "Value"
    _TrackedValue.__doc__ = Value.__doc__
    fastgrad_install_new(Value, _TrackedValue)
    global _tracked_type
    _tracked_type = <PyObject*>_TrackedValue    # kept alive by the module
    if sys.version_info < (3, 10):
        fastgrad_install_meta(Value, _ValueType)
    PyType_Modified(t)
    PyType_Modified(<PyTypeObject*>_TrackedValue)
    return 0


_install_value_type()
# Value.__new__ through Python (the subclass-aware path), kept out of the
# C call sites of Cython's allocator (see _alloc_plain)
_value_new = getattr(Value, "__new__")


# ---------------------------------------------------------------------------
# compile() tracing: TracerWarning hooks (see fastgrad/_tracing.py)
# ---------------------------------------------------------------------------

# set by the first _trace_begin (fastgrad._tracing.warn_data_read)
cdef object _warn_data_read = None


def _trace_begin(list values, object on_data_read=None):
    """Enter a trace in the calling thread; flag ``values`` (inputs and
    parameters) as traced.  Returns the ones flagged here, for _trace_end.

    ``on_data_read(value, data)`` is called when a traced Value's ``.data`` is
    read (fastgrad._tracing.warn_data_read): passed in, so that the engine
    does not import the module above it."""
    global fg_tracing, fg_tracing_threads, _warn_data_read
    if on_data_read is not None:
        _warn_data_read = on_data_read
    cdef list marked = []
    for v in values:
        if not ((<Value?>v)._flags & FLAG_TRACED):
            (<Value>v)._flags |= FLAG_TRACED
            marked.append(v)
    if fg_tracing == 0:
        fg_tracing_threads += 1
    fg_tracing += 1
    return marked


def _trace_end(list marked):
    """Leave the trace entered by _trace_begin; unflag what it flagged
    (a parameter is read afresh at every replay: later traces that miss it
    in ``params`` must see it as a baked-in leaf)."""
    global fg_tracing, fg_tracing_threads
    for v in marked:
        (<Value?>v)._flags &= ~FLAG_TRACED
    fg_tracing -= 1
    if fg_tracing == 0:
        fg_tracing_threads -= 1


def _is_tracing():
    """True while compile() traces fn in the calling thread."""
    return fg_is_tracing()


cdef object _data_get(object self, void* closure):
    cdef double d = (<Value>self).data
    if fg_tracing_threads != 0 and (<Value>self)._flags & FLAG_TRACED \
            and fg_is_tracing() and _warn_data_read is not None:
        _warn_data_read(self, d)
    return d


cdef unsigned long long* data_epoch_ptr() noexcept nogil:
    return &_data_epoch


cdef int _data_set(object self, PyObject* value, void* closure) except -1:
    global _data_epoch
    if value == NULL:
        raise AttributeError("cannot delete a Value's data")
    (<Value>self).data = _to_double(<object>value, "Value.data")
    _data_epoch += 1
    return 0


cdef PyGetSetDef _data_getset


cdef int _install_data_getter() except -1:
    # ``data`` stays a C field (``cdef public double data``); only its Python
    # descriptor is replaced, by one that also tells tracing about reads.
    # Outside compile() the getter pays one load of a global counter.
    _data_getset.name = "data"
    _data_getset.get = <getter>_data_get
    _data_getset.set = <setter>_data_set
    _data_getset.doc = "the value (a float)"
    _data_getset.closure = NULL
    descr = PyDescr_NewGetSet(<PyTypeObject*>Value, &_data_getset)
    (<dict><object>(<PyTypeObject*>Value).tp_dict)["data"] = descr
    PyType_Modified(<PyTypeObject*>Value)
    return 0

_install_data_getter()


def _check_op_table():
    # backward() finds the n-ary ops by ``op >= OP_SUM`` (one compare): they
    # must stay the last op codes
    for op in range(256):
        if bool(op_is_nary(op)) != (OP_SUM <= op < N_OPS):
            raise ImportError(f"fastgrad._engine: op code {op} breaks the rule "
                              "that the n-ary ops are the last op codes")


_check_op_table()


cdef str _fmt_exponent(double c):
    # micrograd writes f'**{other}': '**2' for x**2, '**-1' for x**-1
    if floor(c) == c and -1e15 < c < 1e15:
        return str(<long long>c)
    return repr(c)


# ---------------------------------------------------------------------------
# functions of two Values (the lecture's max gate)
# ---------------------------------------------------------------------------

cdef Value _as_value(object x, str where):
    if isinstance(x, Value):
        return <Value>x
    return _leaf(_to_double(x, where))


def maximum(a, b):
    """max(a, b) as a graph node: the lecture's max gate.

    The gradient flows to the larger input; on a tie it is split evenly
    between both (as ``torch.maximum``).  Either argument may be a number.

    >>> from fastgrad import Value, maximum
    >>> z, w = Value(2.0), Value(-1.0)
    >>> q = maximum(z, w); q.backward()
    >>> q.data, z.grad, w.grad
    (2.0, 1.0, 0.0)
    """
    cdef Value va = _as_value(a, "maximum()")
    cdef Value vb = _as_value(b, "maximum()")
    return _binary(OP_MAX, va, vb)


def minimum(a, b):
    """min(a, b) as a graph node; the gradient rule mirrors :func:`maximum`."""
    cdef Value va = _as_value(a, "minimum()")
    cdef Value vb = _as_value(b, "minimum()")
    return _binary(OP_MIN, va, vb)


# ---------------------------------------------------------------------------
# n-ary functions: one node over a sequence of Values
# ---------------------------------------------------------------------------
# The operands go in a tuple in the node's ``_a`` (as a hand-built node's);
# the floating-point order of each op is defined once, in _rules.pxd.

cdef tuple _nary_operands(object values, str where):
    """``values`` as a non-empty tuple of Values (numbers become constant
    leaves), or a clear TypeError/ValueError."""
    cdef list items
    cdef Py_ssize_t i
    cdef double c
    cdef Value leaf
    if isinstance(values, Value):
        raise TypeError(f"{where} expects a sequence of Values, got a single "
                        "Value (wrap it in a list)")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{where} expects a sequence of Values or numbers, got "
                        f"{type(values).__name__}") from None
    if not items:
        raise ValueError(f"{where} of an empty sequence: it needs at least one "
                         "Value")
    for i in range(len(items)):
        x = items[i]
        if isinstance(x, Value):
            continue
        if not _as_number(x, &c):
            raise TypeError(f"{where}: item {i} must be a Value or a real "
                            f"number, got {type(x).__name__} ({x!r:.60})")
        leaf = _leaf(c)
        if fg_is_tracing():
            leaf._flags |= FLAG_TRACED    # a constant made inside the trace
        items[i] = leaf
    return tuple(items)


cdef double _nary_forward(int op, tuple xs) noexcept:
    """The value of an n-ary node: the fold of _rules.pxd over ``xs``."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(xs)
    cdef double x0 = (<Value>PyTuple_GET_ITEM(xs, 0)).data, acc, m
    if op == OP_SUM:
        acc = x0 + 0.0
        for i in range(1, n):
            acc = fg_vm_add_s(acc, (<Value>PyTuple_GET_ITEM(xs, i)).data)
        return acc
    m = x0                                            # OP_LOGSUMEXP
    for i in range(1, n):
        m = lse_max(m, (<Value>PyTuple_GET_ITEM(xs, i)).data)
    if not isfinite(m):
        return lse_finish(m, 0.0)
    acc = lse_term(x0, m)
    for i in range(1, n):
        acc = acc + lse_term((<Value>PyTuple_GET_ITEM(xs, i)).data, m)
    return lse_finish(m, acc)


cdef void _nary_backward(PyObject* node) noexcept:
    """backward() of an n-ary node: each operand's contribution, in order."""
    cdef PyObject* xs = (<Value>node)._a
    cdef PyObject* x
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(<tuple>xs)
    cdef int op = (<Value>node)._opcode
    cdef double out = (<Value>node).data, g = (<Value>node).grad
    for i in range(n):
        x = PyTuple_GET_ITEM(<tuple>xs, i)
        (<Value>x).grad = fg_vm_add_s((<Value>x).grad, nary_backward_s(op, (<Value>x).data, out, g))


cdef Value _nary(int op, tuple xs):
    cdef Value out = _alloc_plain()
    out.data = _nary_forward(op, xs)
    if fg_is_tracing():
        out._flags = FLAG_TRACED
    if fg_grad_enabled():
        out._opcode = op
        Py_INCREF(xs)
        out._a = <PyObject*>xs
    else:
        out._flags |= FLAG_NO_GRAD   # backward() from it is an error
    return out


def sum(values):
    """The sum of a sequence of Values, as one graph node.

    ``fastgrad.sum([a, b, c])`` gives exactly the floats of Python's
    ``sum([a, b, c])`` (``((0 + a) + b) + c``) but is one node instead of one
    per ``+``: backward passes the gradient to every operand, and a compiled
    program runs it as one instruction.  Numbers in the sequence are
    constants.

    Parameters
    ----------
    values : iterable of Value or real numbers
        At least one item.

    Returns
    -------
    Value

    Raises
    ------
    ValueError
        An empty sequence.
    TypeError
        An item that is neither a Value nor a real number.

    Examples
    --------
    >>> import fastgrad
    >>> from fastgrad import Value
    >>> xs = [Value(1.0), Value(2.0), Value(3.5)]
    >>> s = fastgrad.sum(xs); s.backward()
    >>> s.data, [x.grad for x in xs]
    (6.5, [1.0, 1.0, 1.0])
    """
    return _nary(OP_SUM, _nary_operands(values, "sum()"))


def logsumexp(values):
    """log(e**x_0 + e**x_1 + ...) of a sequence of Values, as one graph node.

    Computed stably as ``m + log(sum(exp(x_i - m)))`` with ``m`` the largest
    item (summed in order), so large items do not overflow; all ``-inf``
    gives ``-inf``, any ``+inf`` gives ``+inf``, any nan gives nan (as
    ``torch.logsumexp``).  The gradient with respect to ``x_i`` is
    ``softmax(x)_i``.  Numbers in the sequence are constants.

    Parameters
    ----------
    values : iterable of Value or real numbers
        At least one item.

    Returns
    -------
    Value

    Examples
    --------
    >>> import fastgrad
    >>> from fastgrad import Value
    >>> xs = [Value(1000.0), Value(1000.0)]
    >>> y = fastgrad.logsumexp(xs); y.backward()
    >>> round(y.data - 1000.0, 12), [round(x.grad, 12) for x in xs]
    (0.69314718056, [0.5, 0.5])
    """
    return _nary(OP_LOGSUMEXP, _nary_operands(values, "logsumexp()"))


def softmax(values):
    """softmax of a sequence of Values: a list of Values ``e**x_i / sum_j e**x_j``.

    Built as one :func:`logsumexp` node ``L`` and, per item, one node
    ``exp(x_i - L)``: stable for any input (nothing overflows), and each
    output is one instruction in a compiled program.  Each output's relative
    error is about ``|L| * 2**-53`` (the rounding of ``L``, which ``exp``
    turns into a relative error) plus an ulp or two -- so ``softmax([1, 1])``
    is 0.49999999999999994, not 0.5 -- and ``+inf`` items give nan outputs.

    Parameters
    ----------
    values : iterable of Value or real numbers
        At least one item.

    Returns
    -------
    list of Value

    Examples
    --------
    >>> import fastgrad
    >>> from fastgrad import Value
    >>> p = fastgrad.softmax([Value(0.0), Value(0.0), Value(0.0), Value(0.0)])
    >>> [q.data for q in p]
    [0.25, 0.25, 0.25, 0.25]
    >>> [round(q.data, 12) for q in fastgrad.softmax([Value(2.0), Value(1.0)])]
    [0.73105857863, 0.26894142137]
    """
    cdef tuple xs = _nary_operands(values, "softmax()")
    cdef Value lse = _nary(OP_LOGSUMEXP, xs)
    return [_binary(OP_SOFTMAX, <Value>x, lse) for x in xs]


def dot_add(list w, x, Value start not None, bint relu=False):
    """start + w[0]*x[0] + w[1]*x[1] + ... (then relu), built in C.

    Builds exactly the graph of micrograd's ``sum((wi*xi for wi, xi in
    zip(w, x)), start)`` (and ``.relu()``), node for node, without a Python
    operator call per term.  ``x`` items may be Values or numbers.
    """
    cdef Py_ssize_t n = len(w), i
    cdef Value acc = start, wi, prod
    cdef double c
    cdef object xi
    if not isinstance(x, (list, tuple)):
        x = list(x)
    if len(x) != n:
        raise ValueError(f"dot_add: {n} weights but {len(x)} inputs (w and x "
                         "must have the same length)")
    for i in range(n):
        wi = <Value?>w[i]
        xi = x[i]
        if isinstance(xi, Value):
            prod = _binary(OP_MUL, wi, <Value>xi)
        elif _as_number(xi, &c):
            prod = _with_const(OP_MULC, wi, c)
        else:
            raise TypeError("dot_add: inputs must be Values or real numbers, "
                            f"got {type(xi).__name__}")
        acc = _binary(OP_ADD, acc, prod)
    if relu:
        acc = _unary(OP_RELU, acc)
    return acc


def zero_grad(params):
    """Set ``.grad = 0.0`` on every Value in ``params`` (an iterable)."""
    for p in params:
        (<Value?>p).grad = 0.0


# ---------------------------------------------------------------------------
# reverse mode
# ---------------------------------------------------------------------------

cdef inline bint _apply_pure_rule(PyObject* node) noexcept:
    """Propagate a node's grad to its operands (any op but LEAF); False,
    doing nothing, for OP_CUSTOM (no rule: the user's ``_backward``).

    Works on borrowed pointers through casts, never through a ``cdef Value``
    local or an augmented assignment, both of which make Cython count
    references: 10% fewer instructions per backward (callgrind, 10 backward
    passes over the demo graph: 78.2M -> 70.6M).
    """
    cdef PyObject* pa = (<Value>node)._a
    cdef PyObject* pb
    cdef int op = (<Value>node)._opcode
    cdef double ga, gb
    if op == OP_MUL:
        pb = (<Value>node)._u.b
        op_backward_s(OP_MUL, (<Value>pa).data, (<Value>pb).data, 0.0,
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)
        (<Value>pb).grad = fg_vm_add_s((<Value>pb).grad, gb)
    elif op == OP_ADD:
        pb = (<Value>node)._u.b
        op_backward_s(OP_ADD, (<Value>pa).data, (<Value>pb).data, 0.0,
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)
        (<Value>pb).grad = fg_vm_add_s((<Value>pb).grad, gb)
    elif op_is_binary(op):
        pb = (<Value>node)._u.b
        op_backward_s(op, (<Value>pa).data, (<Value>pb).data, 0.0,
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)
        (<Value>pb).grad = fg_vm_add_s((<Value>pb).grad, gb)
    elif op >= OP_SUM:        # the n-ary ops: the last codes
        _nary_backward(node)
    elif op == OP_CUSTOM:
        return False
    else:
        op_backward_s(op, (<Value>pa).data, 0.0, (<Value>node)._u.c,
                      (<Value>node).data, (<Value>node).grad, &ga, &gb)
        (<Value>pa).grad = fg_vm_add_s((<Value>pa).grad, ga)
    return True


cdef int _apply_rule(Value n) except -1:
    """Propagate n.grad to n's operands: the user's own ``_backward`` if the
    node has one (micrograd lets you replace it), else the op's rule."""
    cdef int op = n._opcode
    if n._dict != NULL:
        fn = (<dict>n._dict).get('_backward')
        if fn is not None:
            fn()
            return 0
    if op == OP_LEAF or op == OP_CUSTOM:
        return 0
    _apply_pure_rule(<PyObject*>n)
    return 0


# Ctrl-C in backward(): the sort and the sweep check for signals every
# _SIGNAL_MASK + 1 nodes (65536: a few ms of work on a 1e7 chain, see
# test_backward_keyboard_interrupt_is_prompt; a mask test per node costs
# nothing measurable on the demo step).
cdef enum:
    _SIGNAL_MASK = 0xFFFF


cdef int _grow(void** buf, size_t* cap, size_t need, size_t item) noexcept:
    """Grow a malloc'ed buffer to hold ``need`` items (doubling); -1 if out of
    memory, in which case *buf is untouched and still owned by the caller."""
    cdef size_t new_cap = cap[0]
    cdef void* grown
    while new_cap < need:
        new_cap = 2 * new_cap + 64
    grown = realloc(buf[0], new_cap * item)
    if grown == NULL:
        return -1
    buf[0] = grown
    cap[0] = new_cap
    return 0


cdef Py_ssize_t topo_order(Value root, PyObject*** out) except -1:
    """Topological order of the graph under root (operands before users).

    Writes a malloc'ed array of borrowed pointers to out[0] (the caller frees
    it) and returns its length.  Depth-first with an explicit stack; a node is
    visited once per sort thanks to its ``_mark`` stamp (no hash set).  The
    low bit of a stack entry says "operands done, emit me".
    """
    cdef PyObject* r = <PyObject*>root
    return _topo_order(&r, 1, out)


cdef Py_ssize_t topo_order_many(PyObject** roots, Py_ssize_t n_roots,
                                PyObject*** out) except -1:
    """Topological order of the graphs under ``roots[0..n_roots-1]`` in one
    sort (one visit stamp): root 0's order, then the nodes of root 1's
    graph not in it, and so on (each node once).  For the recorder, which
    needs every node of all its roots stamped by the same sort."""
    return _topo_order(roots, n_roots, out)


cdef inline Py_ssize_t _topo_order(PyObject** roots, Py_ssize_t n_roots,
                                   PyObject*** out) except -1:
    global _epoch, _order_cap_hint
    cdef unsigned int stamp
    cdef unsigned short stamp_hi
    cdef size_t cap = _order_cap_hint, scap = 1024, check_at = 1024
    cdef Py_ssize_t n = 0, sp = 0, j, nkids
    cdef PyObject** order = <PyObject**>malloc(cap * sizeof(PyObject*))
    cdef size_t* stack = <size_t*>malloc(scap * sizeof(size_t))
    cdef size_t entry
    cdef PyObject* v
    cdef PyObject* kid
    cdef PyObject* kids[2]
    cdef bint in_tuple
    if order == NULL and cap > 1024:    # the hint too big now: grow from 1024
        cap = 1024
        order = <PyObject**>malloc(cap * sizeof(PyObject*))
    if order == NULL or stack == NULL:
        free(order)
        free(stack)
        raise MemoryError("backward: cannot allocate the topological sort")
    # 47-bit stamps: a node last sorted 2**47 sorts ago (4 years at a sort
    # per microsecond) is the only one that could be taken as visited.  The
    # 48th bit is the recorder's (slot codes, _replay_record.pxi): no stamp
    # has it, so no code is ever taken for a visit.
    _epoch = (_epoch + 1) & 0x7FFFFFFFFFFF
    if _epoch == 0:      # 0 is every new node's stamp
        _epoch = 1
    stamp = <unsigned int>(_epoch & 0xFFFFFFFF)
    stamp_hi = <unsigned short>(_epoch >> 32)
    if <size_t>n_roots > scap and _grow(<void**>&stack, &scap, <size_t>n_roots,
                                        sizeof(size_t)) < 0:
        free(order)
        free(stack)
        raise MemoryError("backward: graph too large for memory")
    # the roots in reverse: root 0 on top is sorted first
    for j in range(n_roots):
        stack[j] = <size_t>roots[n_roots - 1 - j]
    sp = n_roots
    while sp > 0:
        sp -= 1
        entry = stack[sp]
        if entry & 1:
            if <size_t>n == check_at:
                # one compare per node covers both the capacity and the
                # every-_SIGNAL_MASK+1-nodes signal check (callgrind: a
                # separate mask test cost ~5 instructions per node)
                if <size_t>n == cap and _grow(<void**>&order, &cap, cap + 1,
                                              sizeof(PyObject*)) < 0:
                    free(order)
                    free(stack)
                    raise MemoryError("backward: graph too large for memory")
                if (n & _SIGNAL_MASK) == 0 and PyErr_CheckSignals() < 0:
                    free(order)         # Ctrl-C: nothing was changed yet
                    free(stack)
                    return -1
                check_at = (<size_t>n | _SIGNAL_MASK) + 1
                if check_at > cap:
                    check_at = cap
            order[n] = <PyObject*>(entry - 1)
            n += 1
            continue
        v = <PyObject*>entry
        if (<Value>v)._mark == stamp and (<Value>v)._mark_hi == stamp_hi:
            continue
        (<Value>v)._mark = stamp
        (<Value>v)._mark_hi = stamp_hi
        in_tuple = op_has_tuple((<Value>v)._opcode)
        if in_tuple:
            nkids = PyTuple_GET_SIZE(<tuple>(<Value>v)._a)
        else:
            kids[0] = (<Value>v)._a
            kids[1] = node_b(<Value>v)
            nkids = (kids[0] != NULL) + (kids[1] != NULL)
        if <size_t>(sp + nkids + 1) > scap and _grow(
                <void**>&stack, &scap, <size_t>(sp + nkids + 1), sizeof(size_t)) < 0:
            free(order)
            free(stack)
            raise MemoryError("backward: graph too large for memory")
        if ((<size_t>sp + nkids + 1) ^ <size_t>sp) > _SIGNAL_MASK and \
                PyErr_CheckSignals() < 0:
            # the stack deepened past a multiple of _SIGNAL_MASK + 1: the
            # descent of a chain emits nothing for a long time (a counter
            # per visit cost ~8 instructions per node, callgrind)
            free(order)                 # Ctrl-C: nothing was changed yet
            free(stack)
            return -1
        stack[sp] = entry | 1
        sp += 1
        for j in range(nkids):
            if in_tuple:
                kid = PyTuple_GET_ITEM(<tuple>(<Value>v)._a, j)
            else:
                kid = kids[j]
            if (<Value>kid)._mark != stamp or (<Value>kid)._mark_hi != stamp_hi:
                stack[sp] = <size_t>kid
                sp += 1
    free(stack)
    out[0] = order
    _order_cap_hint = <size_t>n if n > 1024 else 1024
    return n


cdef inline void _save_leaf_data(PyObject* leaf) noexcept:
    """Keep a leaf's data as this backward() sees it in the leaf's spare
    operand field: the gradient of a constant multiplied with it (``w * 3``,
    materialised later by ``_prev``) is then micrograd's, computed from these
    values, even after an optimizer step changed ``w.data``.  Two stores per
    leaf (callgrind: see the commit message)."""
    (<Value>leaf)._u.c = (<Value>leaf).data
    (<Value>leaf)._flags |= FLAG_DATA_SAVED


cdef int _backward_from(Value root) except -1:
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i, m
    if root._flags & FLAG_NO_GRAD:
        raise RuntimeError(
            "backward(): this Value was computed with graph recording off "
            "(inside no_grad() or set_grad_enabled(False)), so it has no graph "
            "and nothing would receive a gradient; compute it with recording "
            "on to differentiate it")
    cdef PyObject* node
    n = topo_order(root, &order)
    root.grad = 1.0
    # The common case: no Python code runs, nodes stay alive (root owns
    # them), so borrowed pointers are safe.  The first node that may run
    # user code -- one with an instance dict (a possible ``_backward``) or
    # an OP_CUSTOM node -- ends this loop before its step, and the owned
    # sweep below takes over from it (checked here, ~2 instructions a node,
    # not in a pass over the order before the sweep: ~10, callgrind).
    i = n - 1
    while i >= 0:
        node = order[i]
        if (<Value>node)._dict != NULL:
            break
        if (<Value>node)._opcode == OP_LEAF:
            _save_leaf_data(node)
        elif not _apply_pure_rule(node):
            break                       # OP_CUSTOM
        if (i & _SIGNAL_MASK) == 0 and PyErr_CheckSignals() < 0:
            free(order)                 # Ctrl-C: grads are partial sums
            return -1
        i -= 1
    if i < 0:
        free(order)
        return 0
    # user code may run mid-sweep, and could drop the last reference to
    # nodes still in ``order``: own the rest of them for the sweep
    m = i + 1
    for i in range(m):
        Py_INCREF(<object>order[i])
    try:
        for i in range(m - 1, -1, -1):
            if (<Value>order[i])._opcode == OP_LEAF:
                _save_leaf_data(order[i])
            _apply_rule(<Value>order[i])
            if (i & _SIGNAL_MASK) == 0 and PyErr_CheckSignals() < 0:
                return -1               # Ctrl-C: grads are partial sums
    finally:
        for i in range(m):
            Py_DECREF(<object>order[i])
        free(order)
    return 0
