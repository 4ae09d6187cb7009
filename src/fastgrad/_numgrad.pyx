# cython: language_level=3
"""Finite differences in C: the perturb-evaluate-restore loop behind num_grad.

Design:
  * The caller's own array is walked through the buffer protocol (base pointer,
    shape, strides of a Py_buffer), not a typed memoryview, because ``x`` may
    have any number of dimensions (0-d included) and any strides: no copy is
    ever made, so ``f`` sees the caller's object change.  Elements are visited
    in C order by an odometer that keeps a byte offset up to date (no division
    per element); each element is read and written with ``memcpy`` through a
    fused float/double type, so unaligned arrays are fine too.  The result is
    written to a ``double[::1]`` memoryview.
  * Per element: save the element's raw bytes, write x+h (and x-h), call f,
    and put the saved bytes back in a ``finally`` clause, so ``x`` is
    bit-for-bit what it was after a return or an exception (-0.0 and nan
    payloads included).
  * Only the call to ``f`` and the conversion of its result are Python.  A
    compiled program skips those: it hands out an ``Evaluator`` (declared in
    _numgrad.pxd) whose ``evaluate()`` is C, and the loop then runs with the
    GIL released.
  * Sequences of Values: fastgrad Values are perturbed through their C
    ``data`` field; other Value-like objects (micrograd's, fastgrad.reference's)
    through attribute access.
  * ``f`` may misbehave: while the loop runs it holds a weak reference to
    ``x``, which makes numpy refuse ``x.resize`` (even with
    ``refcheck=False``), and after every call of ``f`` it checks that x's
    data pointer and shape are unchanged before writing to that memory
    again (anything else that reallocates x -- ``x.__setstate__`` -- raises
    RuntimeError; x cannot be restored then).
  * Ctrl-C: the loops check for signals (every 256 calls of f; with a C
    evaluator every few milliseconds of work) and restore the element
    being perturbed before the KeyboardInterrupt propagates.
  * Rounding follows the lecture's numpy code: with numpy >= 2 (NEP 50), for
    a float32 ``x`` x+h is computed in float32, and for method "forward", when
    f returns numpy float32 scalars, (f(x+h) - f(x)) / h is computed in
    float32 too, exactly as the lecture's nditer loop does (numpy 1.x: in
    float64, then rounded to x's dtype).  Central differences divide
    by the step actually stored, (x+h) - (x-h), not by 2h.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_RECORDS
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from libc.math cimport isfinite, NAN
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.object cimport PyObject
from cpython.weakref cimport PyWeakref_NewRef

from fastgrad._engine cimport Value, topo_order, data_epoch_ptr

import numbers

import numpy as np

cdef unsigned long long* _DATA_EPOCH = data_epoch_ptr()   # bumped by each write

cdef extern from "Python.h":
    int PyErr_CheckSignals() noexcept

# The leading fields of numpy's array object (numpy/ndarraytypes.h,
# PyArrayObject_fields: PyObject_HEAD, data, nd, dimensions), an ABI numpy
# keeps stable: reading them costs a few ns per call of f, where a buffer
# request costs more than the call itself.
cdef extern from *:
    """
    typedef struct {
        PyObject_HEAD
        char *data;
        int nd;
        Py_ssize_t *dimensions;
    } fastgrad_ndarray_head;
    #define FASTGRAD_ND_DATA(o) (((fastgrad_ndarray_head *)(o))->data)
    #define FASTGRAD_ND_NDIM(o) (((fastgrad_ndarray_head *)(o))->nd)
    #define FASTGRAD_ND_DIMS(o) (((fastgrad_ndarray_head *)(o))->dimensions)
    """
    char* FASTGRAD_ND_DATA(object o)
    int FASTGRAD_ND_NDIM(object o)
    Py_ssize_t* FASTGRAD_ND_DIMS(object o)

# Only this module makes _ExampleEvaluator objects (an uninitialised one
# would be handed to the C loop); see also fastgrad._replay._TOKEN.
cdef object _TOKEN = object()

# Ctrl-C in the evaluator loop: element operations between two signal
# checks (Evaluator.work per evaluation); ~4e6 is a few ms.
cdef Py_ssize_t SIGNAL_WORK = 1 << 22
cdef Py_ssize_t PY_SIGNAL_EVERY = 256     # calls of a Python f between checks


def _set_signal_work(Py_ssize_t work):
    """Testing hook: element operations between signal checks of the C loop
    (0: never check); returns the old value."""
    global SIGNAL_WORK
    old = SIGNAL_WORK
    SIGNAL_WORK = max(work, 0)
    return old


ctypedef fused real_t:
    float
    double

# numpy >= 2 (NEP 50) computes float32 + Python float in float32; numpy 1.x
# promoted it to float64.  The lecture's loop gets whichever numpy is installed.
cdef bint _nep50 = type(np.float32(1.0) + 1.0) is np.float32


# ---------------------------------------------------------------------------
# the evaluator protocol (see _numgrad.pxd)
# ---------------------------------------------------------------------------

cdef class Evaluator:
    """Base class of the C evaluators that compiled programs hand to num_grad.

    A subclass is bound to one float64 array ``x`` (it keeps a memoryview of
    it) and overrides ``evaluate()`` (required) and ``gradient()`` (needed by
    gradcheck).  A program opts in by defining ``_fd_evaluator(self, x)``
    that validates ``x`` and returns such an evaluator.  ``work`` (set by
    the subclass) estimates the element operations of one evaluation; the
    loop checks for Ctrl-C every ~4e6 of them.
    """

    cdef double evaluate(self) noexcept nogil:
        return NAN

    cdef int gradient(self, double[::1] out) except -1:
        raise NotImplementedError(
            f"{type(self).__name__} provides no analytic gradient (gradcheck "
            "needs Evaluator.gradient)")


cdef class _ExampleEvaluator(Evaluator):
    # f(x) = sum_i w[i] * x[i]**2, evaluated in C
    cdef const double[::1] w
    cdef const double[::1] x
    cdef bint wrong

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError("_ExampleEvaluator objects are made by "
                            "_ExampleProgram._fd_evaluator")

    cdef double evaluate(self) noexcept nogil:
        cdef double s = 0.0
        cdef Py_ssize_t i
        for i in range(self.x.shape[0]):
            s += self.w[i] * self.x[i] * self.x[i]
        return s

    cdef int gradient(self, double[::1] out) except -1:
        cdef Py_ssize_t i
        for i in range(self.x.shape[0]):
            out[i] = 2.0 * self.w[i] * self.x[i]
        if self.wrong and self.x.shape[0] > 0:
            out[0] *= 1.5          # a deliberately wrong backward
        return 0


cdef class _ExampleProgram:
    """A stand-in for a compiled program: ``f(x) = sum(w * x**2)``.

    Shows (and lets the tests exercise) the protocol a compiled program
    implements so that ``num_grad(program, x)`` and ``gradcheck(program, x)``
    never call Python per evaluation.  ``wrong=True`` gives it a wrong
    analytic gradient (first component 1.5x too large).
    """
    cdef readonly object w
    cdef readonly bint wrong

    def __cinit__(self, *args, **kwargs):
        self.w = np.zeros(0)        # _ExampleProgram.__new__: a 0-input program

    def __init__(self, w, wrong=False):
        self.w = np.ascontiguousarray(w, dtype=np.float64).reshape(-1)
        self.wrong = wrong

    def _fd_evaluator(self, x):
        cdef _ExampleEvaluator ev = _ExampleEvaluator.__new__(_ExampleEvaluator, _TOKEN)
        if (not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.ndim != 1
                or not x.flags.c_contiguous):
            raise TypeError("_ExampleProgram: x must be a 1-d C-contiguous float64 "
                            f"array, got {type(x).__name__} "
                            f"{getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}")
        if x.shape[0] != self.w.shape[0]:
            raise ValueError(f"_ExampleProgram: x must have shape ({self.w.shape[0]},), "
                             f"got {x.shape}")
        ev.w = self.w
        ev.x = x
        ev.wrong = self.wrong
        ev.work = 3 * x.shape[0] + 1
        return ev

    def __call__(self, x):
        """f(x) through the same C code (entering Python once per call)."""
        return (<Evaluator>self._fd_evaluator(x)).evaluate()


# ---------------------------------------------------------------------------
# f's result -> double
# ---------------------------------------------------------------------------

cdef inline object _call(object f, object x, tuple args):
    if args is None:
        return f(x)
    return f(*args)


cdef inline double _scalar(object r, bint* is32, str where) except? -1.0:
    # the common cases inline: Python float / numpy float64, fastgrad Value.
    # Measured: 83 ns per element with f = itemgetter(0) on 10**5 elements,
    # 590 ns when every result goes through _scalar_slow's isinstance checks.
    if PyFloat_Check(r):
        return PyFloat_AS_DOUBLE(r)
    if isinstance(r, Value):
        return (<Value>r).data
    return _scalar_slow(r, is32, where)


cdef str _shape_of(object r):
    try:
        return str(np.shape(r))
    except Exception:
        return "(ragged)"


cdef double _scalar_slow(object r, bint* is32, str where) except? -1.0:
    cdef object data
    if isinstance(r, np.ndarray):
        if r.dtype.kind not in "fiub":
            raise TypeError(f"{where}: f must return a real scalar, got an array "
                            f"of dtype {r.dtype} and shape {r.shape}")
        if r.size != 1:
            raise ValueError(f"{where}: f must return a scalar, got an array of "
                             f"shape {r.shape}")
        if r.dtype == np.float32:
            is32[0] = True
        return float(r.reshape(-1)[0])
    if isinstance(r, np.float32):
        is32[0] = True
        return float(r)
    if isinstance(r, (numbers.Real, np.bool_)):
        return float(r)
    if isinstance(r, numbers.Complex):
        raise TypeError(f"{where}: f must return a real scalar, got complex {r!r}")
    if isinstance(r, (list, tuple)):
        raise ValueError(f"{where}: f must return a scalar, got a {type(r).__name__} "
                         f"of shape {_shape_of(r)}")
    data = getattr(r, "data", None)
    if (getattr(r, "backward", None) is not None
            and isinstance(data, (numbers.Real, np.bool_))):
        return float(data)         # a Value of another engine (micrograd, reference)
    shape = getattr(r, "shape", None)
    if shape is not None:
        try:
            size = int(np.prod(tuple(shape)))
        except Exception:
            size = 1
        if size != 1:
            raise ValueError(f"{where}: f must return a scalar, got a "
                             f"{type(r).__name__} of shape {tuple(shape)}")
        try:
            return float(r)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{where}: f must return a real scalar (a number, a size-1 "
                    f"array or a Value), got {type(r).__name__} ({r!r:.60})")


# ---------------------------------------------------------------------------
# the loop over an array
# ---------------------------------------------------------------------------

cdef inline void _advance(int ndim, const Py_ssize_t* shape, const Py_ssize_t* strides,
                          Py_ssize_t* idx, Py_ssize_t* off) noexcept nogil:
    """Step the C-order odometer idx and its byte offset to the next element."""
    cdef int d = ndim - 1
    while d >= 0:
        idx[d] += 1
        off[0] += strides[d]
        if idx[d] < shape[d]:
            return
        off[0] -= strides[d] * shape[d]
        idx[d] = 0
        d -= 1


cdef int raise_pending() except -1:
    """Propagate the exception a signal handler has set."""
    return -1


cdef tuple _index(int ndim, const Py_ssize_t* idx):
    return tuple([idx[d] for d in range(ndim)])


cdef object _step_error(str where, object x, int ndim, const Py_ssize_t* idx,
                        double old, double h):
    return ValueError(
        f"{where}: h={h!r} vanishes at x[{_index(ndim, idx)}] = {old!r} "
        f"({x.dtype}): x+h and x-h round to the same number; use a larger h")


cdef bint _intact(object x, char* base, int ndim, const Py_ssize_t* shape) noexcept:
    """x (an ndarray) still has the data pointer and shape the loop started with."""
    cdef int d
    cdef const Py_ssize_t* dims
    if FASTGRAD_ND_DATA(x) != base or FASTGRAD_ND_NDIM(x) != ndim:
        return False
    dims = FASTGRAD_ND_DIMS(x)
    for d in range(ndim):
        if dims[d] != shape[d]:
            return False
    return True


cdef int _check_same(object x, char* base, int ndim, const Py_ssize_t* shape,
                     str where) except -1:
    """RuntimeError if f moved x's data or changed its shape."""
    if not _intact(x, base, ndim, shape):
        raise RuntimeError(
            f"{where}: f reallocated or reshaped x while it was being perturbed "
            "(its data moved or its shape changed); x could not be restored. "
            "f must leave x's memory and shape alone")
    return 0


cdef int _fd_python(real_t* tag, char* base, int ndim, const Py_ssize_t* shape,
                    const Py_ssize_t* strides, Py_ssize_t* idx, object f, object x,
                    double h, bint central, double[::1] out, str where) except -1:
    """num_grad over a strided buffer, calling the Python function f(x).

    After every call of f, _check_same runs before x's memory is written.
    """
    cdef Py_ssize_t n = out.shape[0], k, off = 0
    cdef real_t hh = <real_t>h, old, xp, xm
    cdef unsigned char saved[8]
    cdef char* p
    cdef double fx = 0.0, fp = 0.0, fm = 0.0
    cdef bint fx32 = False, fp32 = False, fm32 = False, moved
    cdef object r
    if not central:
        # the lecture's order: f(x) once, before any perturbation
        fx = _scalar(f(x), &fx32, where)
        _check_same(x, base, ndim, shape, where)
    for k in range(n):
        if k % PY_SIGNAL_EVERY == PY_SIGNAL_EVERY - 1 and PyErr_CheckSignals() < 0:
            return -1          # f may be a C callable: the eval loop never runs
        p = base + off
        memcpy(saved, p, sizeof(real_t))
        memcpy(&old, p, sizeof(real_t))
        if real_t is float and not _nep50:
            xp = <float>(<double>old + h)
            xm = <float>(<double>old - h)
        else:
            xp = old + hh        # in x's precision, as numpy computes it
            xm = old - hh
        if central and xp == xm and isfinite(old):
            raise _step_error(where, x, ndim, idx, old, h)
        memcpy(p, &xp, sizeof(real_t))
        fp32 = False
        moved = True
        try:
            r = f(x)
            _check_same(x, base, ndim, shape, where)
            moved = False
            fp = _scalar(r, &fp32, where)
            if central:
                memcpy(p, &xm, sizeof(real_t))
                moved = True
                r = f(x)
                _check_same(x, base, ndim, shape, where)
                moved = False
                fm = _scalar(r, &fm32, where)
        finally:
            # also when f raised, unless f reallocated x (nothing to restore)
            if not moved or _intact(x, base, ndim, shape):
                memcpy(p, saved, sizeof(real_t))
        if central:
            out[k] = (fp - fm) / (<double>xp - <double>xm)
        elif fx32 and fp32 and _nep50:
            # numpy: float32 - float32 is float32, float32 / Python float too
            out[k] = <double>(<float>(<float>fp - <float>fx) / <float>h)
        else:
            out[k] = (fp - fx) / h
        _advance(ndim, shape, strides, idx, &off)
    return 0


cdef Py_ssize_t _fd_compiled(real_t* tag, char* base, int ndim, const Py_ssize_t* shape,
                             const Py_ssize_t* strides, Py_ssize_t* idx, Evaluator ev,
                             double h, bint central, double[::1] out) except -2:
    """num_grad over a strided buffer with a C evaluator, without the GIL.

    Returns -1 on success, or the flat index of an element where the central
    step vanished (nothing perturbed then); -2 with KeyboardInterrupt set
    (x restored) on Ctrl-C.
    """
    cdef Py_ssize_t n = out.shape[0], k, off = 0, bad = -1
    cdef Py_ssize_t work = 0, sig_work = SIGNAL_WORK
    cdef Py_ssize_t per_eval = (2 if central else 1) * min(max(ev.work, 1), 1 << 40)
    cdef bint interrupted = False
    cdef real_t hh = <real_t>h, old, xp, xm
    cdef unsigned char saved[8]
    cdef char* p
    cdef double fx = 0.0, fp, fm = 0.0
    with nogil:
        if not central:
            fx = ev.evaluate()
        for k in range(n):
            p = base + off
            memcpy(saved, p, sizeof(real_t))
            memcpy(&old, p, sizeof(real_t))
            xp = old + hh
            xm = old - hh
            if central and xp == xm and isfinite(old):
                bad = k
                break
            memcpy(p, &xp, sizeof(real_t))
            fp = ev.evaluate()
            if central:
                memcpy(p, &xm, sizeof(real_t))
                fm = ev.evaluate()
            memcpy(p, saved, sizeof(real_t))
            if central:
                out[k] = (fp - fm) / (<double>xp - <double>xm)
            else:
                out[k] = (fp - fx) / h
            _advance(ndim, shape, strides, idx, &off)
            work += per_eval
            if work >= sig_work and sig_work > 0:
                work = 0
                with gil:
                    interrupted = PyErr_CheckSignals() < 0
                if interrupted:
                    break
    if interrupted:
        return -2
    return bad


def fd_array(object f, object x, double h, bint central, Evaluator ev=None,
             str where="num_grad"):
    """Finite-difference gradient of f at the float array x (validated by the caller).

    Returns a float64 array of x's shape.  With ``ev`` the evaluations go
    through ``ev.evaluate()`` instead of ``f(x)``.
    """
    cdef Py_buffer view
    cdef Py_ssize_t* idx = NULL
    cdef Py_ssize_t* shape = NULL
    cdef Py_ssize_t* strides = NULL
    cdef Py_ssize_t bad = -1, d
    cdef int ndim
    cdef double old = 0.0
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: x must be a numpy array, got {type(x).__name__}")
    result = np.empty(x.size, dtype=np.float64)
    cdef double[::1] out = result
    # A weak reference to x makes numpy refuse x.resize() (also with
    # refcheck=False: "referenced by another object"), which would free the
    # memory the loop writes to; a buffer export alone does not stop it.
    # Other reallocations (x.__setstate__) are caught by _check_same.
    pin = PyWeakref_NewRef(x, None)
    # a writable, strided view of the caller's memory
    PyObject_GetBuffer(x, &view, PyBUF_RECORDS)
    try:
        if view.itemsize != 4 and view.itemsize != 8:
            raise TypeError(f"{where}: x must be float32 or float64, got "
                            f"itemsize {view.itemsize}")
        ndim = view.ndim
        shape_of_x = tuple([view.shape[d] for d in range(ndim)])
        # private copies: f may rebind x.shape while we iterate
        idx = <Py_ssize_t*>malloc((3 * ndim + 1) * sizeof(Py_ssize_t))
        if idx == NULL:
            raise MemoryError()
        shape = idx + ndim
        strides = shape + ndim
        for d in range(ndim):
            idx[d] = 0
            shape[d] = view.shape[d]
            strides[d] = view.strides[d]
        if ev is None:
            if view.itemsize == 4:
                _fd_python(<float*>NULL, <char*>view.buf, ndim, shape, strides, idx,
                           f, x, h, central, out, where)
            else:
                _fd_python(<double*>NULL, <char*>view.buf, ndim, shape, strides, idx,
                           f, x, h, central, out, where)
        else:
            if view.itemsize == 4:
                bad = _fd_compiled(<float*>NULL, <char*>view.buf, ndim, shape, strides,
                                   idx, ev, h, central, out)
            else:
                bad = _fd_compiled(<double*>NULL, <char*>view.buf, ndim, shape, strides,
                                   idx, ev, h, central, out)
            if bad >= 0:
                old = float(x.reshape(-1)[bad]) if x.ndim else float(x)
                raise _step_error(where, x, ndim, idx, old, h)
    finally:
        free(idx)
        PyBuffer_Release(&view)
        del pin
    return result.reshape(shape_of_x)


# ---------------------------------------------------------------------------
# the loop over a sequence of Values
# ---------------------------------------------------------------------------

def fd_values(object f, object x, tuple args, tuple items, double h, bint central,
              str where="num_grad"):
    """Finite-difference gradient of f with respect to the ``.data`` of items.

    Calls ``f(x)`` (or ``f(*args)`` when args is not None) with one item's
    data perturbed at a time.  Returns a 1-d float64 array.
    """
    cdef Py_ssize_t n = len(items), k
    result = np.empty(n, dtype=np.float64)
    cdef double[::1] out = result
    cdef Value v
    cdef double old, xp, xm, fx = 0.0, fp = 0.0, fm = 0.0
    cdef unsigned char saved[8]
    cdef bint fx32 = False, fp32 = False, fm32 = False
    cdef object item, old_obj, xp_obj, xm_obj
    if not central:
        fx = _scalar(_call(f, x, args), &fx32, where)
    for k in range(n):
        if k % PY_SIGNAL_EVERY == PY_SIGNAL_EVERY - 1 and PyErr_CheckSignals() < 0:
            raise_pending()
        item = items[k]
        fp32 = False
        if isinstance(item, Value):
            v = <Value>item
            memcpy(saved, &v.data, sizeof(double))
            old = v.data
            xp = old + h
            xm = old - h
            if central and xp == xm and isfinite(old):
                raise ValueError(f"{where}: h={h!r} vanishes at x[{k}].data = {old!r}: "
                                 "x+h and x-h round to the same number; use a larger h")
            v.data = xp
            _DATA_EPOCH[0] += 1
            try:
                fp = _scalar(_call(f, x, args), &fp32, where)
                if central:
                    v.data = xm
                    _DATA_EPOCH[0] += 1
                    fm = _scalar(_call(f, x, args), &fm32, where)
            finally:
                memcpy(&v.data, saved, sizeof(double))
                _DATA_EPOCH[0] += 1
        else:
            # a Value of another engine: perturb the attribute, restore the
            # original object (an int stays an int)
            old_obj = item.data
            xp_obj = old_obj + h
            xm_obj = old_obj - h
            xp = float(xp_obj)
            xm = float(xm_obj)
            if central and xp == xm and isfinite(float(old_obj)):
                raise ValueError(f"{where}: h={h!r} vanishes at x[{k}].data = "
                                 f"{old_obj!r}: x+h and x-h round to the same number")
            item.data = xp_obj
            try:
                fp = _scalar(_call(f, x, args), &fp32, where)
                if central:
                    item.data = xm_obj
                    fm = _scalar(_call(f, x, args), &fm32, where)
            finally:
                item.data = old_obj
        if central:
            out[k] = (fp - fm) / (xp - xm)
        elif fx32 and fp32 and _nep50:
            out[k] = <double>(<float>(<float>fp - <float>fx) / <float>h)
        else:
            out[k] = (fp - fx) / h
    return result


# ---------------------------------------------------------------------------
# helpers for gradcheck
# ---------------------------------------------------------------------------

def evaluator_gradient(Evaluator ev, object x):
    """The analytic gradient an evaluator reports at x, shaped like x."""
    result = np.zeros(x.size, dtype=np.float64)
    ev.gradient(result)
    return result.reshape(x.shape)


def graph_nodes(Value root):
    """Every node of root's graph (operands first), as a list."""
    cdef PyObject** order = NULL
    cdef Py_ssize_t n = topo_order(root, &order), i
    try:
        return [<Value>order[i] for i in range(n)]
    finally:
        free(order)
