# cython: language_level=3
"""C-level view of fastgrad's Value, for other compiled modules to cimport.

Fields are read and written directly by the optimizers, the finite-difference
loop and the graph recorder; Python code goes through the properties in
_engine.pyx.
"""
from cpython.object cimport PyObject
from fastgrad._rules cimport op_is_binary, op_has_const

# A node has a second operand (binary ops) or a baked constant (the *C ops),
# never both: they share 8 bytes, which keeps a Value at 64 bytes.
cdef union Operand2:
    PyObject* b               # binary ops: the second operand (owned)
    double c                  # *C ops: the constant the user wrote

cdef class Value:
    cdef public double data
    cdef public double grad
    cdef PyObject* _a         # first operand (owned), NULL for a leaf; for
                              # OP_CUSTOM a tuple of operands
    cdef Operand2 _u          # read through node_b() / node_c(); a leaf keeps
                              # its data at the last backward() here
    cdef PyObject* _dict      # instance dict (label, user attributes), lazy
    cdef unsigned int _mark   # visit stamp of the last topological sort:
    cdef unsigned char _opcode
    cdef unsigned char _flags  # FLAG_* below
    cdef unsigned short _mark_hi  # its high 16 bits (47 used by the sorts,
                                  # in what would otherwise be padding; the
                                  # recorder's slot codes set the 48th)

cdef enum:
    FLAG_FLOAT_EXPONENT = 1   # x ** 2.0 (not x ** 2): _op is '**2.0' as micrograd
    FLAG_TRACED = 2           # made/used while compile() traced fn (not pickled)
    FLAG_INITIALISED = 4      # Value.__init__ has run (or unpickled): not pickled
    FLAG_DATA_SAVED = 8       # a leaf whose _u.c holds its data as the last
                              # backward() saw it (see _materialize_const)
    FLAG_NO_GRAD = 16         # made by an operator with recording off: a leaf
                              # that backward() refuses to start from

cdef Value new_node(double data, int op, Value a, Value b, double c)
# The data write epoch: every write of an existing Value's ``data`` field
# adds 1 to the counter this points to (one counter per process, in
# _engine; other modules keep the pointer).  A compiled program's SGD
# store notes it and skips reading the Values on its next step when
# nothing else wrote since (see Program._load_fused).  Written with the GIL.
cdef unsigned long long* data_epoch_ptr() noexcept nogil
cdef Py_ssize_t topo_order(Value root, PyObject*** out) except -1
cdef Py_ssize_t topo_order_many(PyObject** roots, Py_ssize_t n_roots,
                                PyObject*** out) except -1


cdef inline PyObject* node_b(Value v) noexcept:
    """Second operand of a binary node, else NULL (borrowed)."""
    return v._u.b if op_is_binary(v._opcode) else NULL


cdef inline double node_c(Value v) noexcept:
    """Baked constant of a *C node, else 0.0."""
    return v._u.c if op_has_const(v._opcode) else 0.0
