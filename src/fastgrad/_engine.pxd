# cython: language_level=3
"""C-level view of fastgrad's Value, for other compiled modules to cimport.

Fields are read and written directly by the optimizers, the finite-difference
loop and the graph recorder; Python code goes through the properties in
_engine.pyx.
"""
from cpython.object cimport PyObject

cdef class Value:
    cdef public double data
    cdef public double grad
    cdef double _c            # baked constant of the *C op codes (see _rules.pxd)
    cdef PyObject* _a         # first operand (owned), or NULL for a leaf
    cdef PyObject* _b         # second operand (owned), or NULL
    cdef unsigned int _mark   # visit stamp of the last topological sort
    cdef unsigned char _opcode
    cdef object _label
    cdef dict __dict__        # users may set their own attributes

cdef Value new_node(double data, int op, Value a, Value b, double c)
cdef Py_ssize_t topo_order(Value root, PyObject*** out) except -1
