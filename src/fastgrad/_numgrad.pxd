# cython: language_level=3
"""C-level interface of the finite-difference loop, for compiled modules.

A compiled program (``fastgrad._replay``) lets ``num_grad``/``gradcheck``
finite-difference it without entering Python per evaluation by handing out an
``Evaluator``: a subclass bound to the caller's float64 array ``x`` whose
``evaluate()`` computes the program's scalar output from the current contents
of ``x`` in pure C.  The loop in _numgrad.pyx perturbs ``x`` in place, calls
``evaluate()`` with the GIL released and restores ``x``.  See
``_ExampleProgram`` in _numgrad.pyx for a complete implementation.
"""

cdef class Evaluator:
    # element operations of one evaluate() (for the Ctrl-C check interval)
    cdef Py_ssize_t work
    # f at the current contents of the bound array; pure C, no Python objects,
    # must not fail (non-finite values propagate as IEEE values)
    cdef double evaluate(self) noexcept nogil
    # df/dx at the current contents, written in C order of x (for gradcheck)
    cdef int gradient(self, double[::1] out) except -1
