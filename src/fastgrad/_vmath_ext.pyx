# cython: language_level=3
"""fastgrad's vector maths (``_vmath.h``) from Python: tests and benchmarks.

The functions themselves are C (``_vmath_body.h``, one implementation
compiled at every vector width); the eager engine calls their width-1 build
through ``_rules.pxd`` and the replay their row builds through
``_vmath_rows.h``.  This private module only lets Python run them:

* ``evaluate(name, x, isa)`` -- one function over an array with the build of
  one ISA (tests compare the builds bit for bit, benchmarks time them);
* ``user_sigmoid(z, isa, g)`` -- the replay's fused rows of the user's
  sigmoid chain 1/(1+(-z).exp()) and its backward (tests);
* ``scalar(name, x)`` -- the width-1 build on one float (what eager uses);
* ``libm(name, x)`` -- the C library's functions in a scalar loop (the
  benchmark's baseline; sigmoid and softplus in their usual stable forms);
* ``tables()`` -- the C tables and constants, which tests compare with the
  pure-Python port's copy (``_vmath_tables.py``).
"""
from libc.math cimport exp, expm1, log, log1p, tanh, fabs

import numpy as np

# this module also builds the 8-wide body for AVX2 (tests of the AVX-512
# build's code on CPUs without AVX-512; see _vmath.h)
cdef extern from *:
    """
    #define FG_VM_WANT_W8 1
    """

cdef extern from "_vmath_rows.h" nogil:
    double fg_vm_exp(double x)
    double fg_vm_expm1(double x)
    double fg_vm_log(double x)
    double fg_vm_log1p(double x)
    double fg_vm_tanh(double x)
    double fg_vm_sigmoid(double x)
    double fg_vm_softplus(double x)
    int fg_vm_supported(int level)
    int fg_vm_row_at(int level, int fn, const double* x, double* out, Py_ssize_t n)
    int fg_vm_usig_at(int level, const double* z, double* e, double* y, double* g,
                      Py_ssize_t n, double c0, double c2, double c3)
    const double* fg_vm_exp_tab
    const double* fg_vm_log_tab
    double FG_VM_INVLN2N, FG_VM_SHIFT, FG_VM_C_HI, FG_VM_C_LO, FG_VM_LN2_HI
    double FG_VM_LN2_LO, FG_VM_P2, FG_VM_P3, FG_VM_P4, FG_VM_P5, FG_VM_P6
    double FG_VM_L2, FG_VM_L3, FG_VM_L4, FG_VM_L5, FG_VM_L6, FG_VM_L7, FG_VM_L8

#: the functions, in the order of their FG_VM_* codes (_vmath_rows.h)
FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus")
#: the builds, by level: fg_vm_isa_select's 0-3, then the 8-wide body
#: compiled for AVX2 (the AVX-512 build's shape, testable without AVX-512)
ISAS = ("portable", "baseline", "avx2", "avx512", "avx512-shape-on-avx2")


def supported():
    """The builds this CPU (and build) runs, by name."""
    return [name for level, name in enumerate(ISAS) if fg_vm_supported(level)]


cdef int _code(str name) except -1:
    try:
        return FUNCTIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown function {name!r}; choose from {FUNCTIONS}") from None


def _arrays(x, out):
    xa = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if out is None:
        out = np.empty_like(xa)
    elif (not isinstance(out, np.ndarray) or out.dtype != np.float64
          or not out.flags.c_contiguous or not out.flags.writeable
          or out.size != xa.size):
        raise ValueError("out must be a writeable C-contiguous float64 array "
                         f"of {xa.size} elements")
    return xa, out.reshape(-1)


def evaluate(str name, x, str isa="portable", out=None):
    """``name`` (one of FUNCTIONS) of every element of ``x`` with the build of
    ``isa`` (one of ISAS); returns a flat float64 array (``out`` if given)."""
    cdef int fn = _code(name)
    if isa not in ISAS:
        raise ValueError(f"unknown ISA {isa!r}; choose from {ISAS}")
    cdef int level = ISAS.index(isa)
    if not fg_vm_supported(level):
        raise ValueError(f"this CPU or build cannot run the {isa} build")
    xa, out = _arrays(x, out)
    cdef const double[::1] xv = xa
    cdef double[::1] ov = out
    cdef Py_ssize_t n = xv.shape[0]
    if n:
        with nogil:
            fg_vm_row_at(level, fn, &xv[0], &ov[0], n)
    return out


def user_sigmoid(z, str isa="portable", g=None, str keep="row", double c0=-1.0,
                 double c2=1.0, double c3=1.0):
    """The replay's fused rows of the chain mulc(c0), exp, addc(c2),
    rdivc(c3) (the user's sigmoid ``1/(1+(-z).exp())``) with the build of
    ``isa``.  Returns (y, e): the chain's values c3 / (exp(z c0) + c2) and
    the exp row the forward keeps; with ``g`` (the gradient of the outputs),
    (y, e, dz): also the gradient of the chain's input, computed from e.
    ``keep``: where the forward keeps e: "row" (its own row), "inplace" (over
    z, as the replay does) or "none" (not kept; e returned as NaNs; no
    backward).  Flat float64 arrays."""
    if isa not in ISAS:
        raise ValueError(f"unknown ISA {isa!r}; choose from {ISAS}")
    if keep not in ("row", "inplace", "none"):
        raise ValueError(f"keep must be 'row', 'inplace' or 'none', not {keep!r}")
    cdef int level = ISAS.index(isa)
    if not fg_vm_supported(level):
        raise ValueError(f"this CPU or build cannot run the {isa} build")
    if g is not None and keep == "none":
        raise ValueError("the backward (g given) needs the kept e")
    za = np.array(z, dtype=np.float64).reshape(-1)
    cdef Py_ssize_t n = za.shape[0]
    ya = np.empty_like(za)
    ea = za if keep == "inplace" else np.full_like(za, np.nan)
    ga = np.array(g, dtype=np.float64).reshape(-1) if g is not None else None
    if ga is not None and ga.shape[0] != n:
        raise ValueError("z and g must have the same number of elements")
    cdef double[::1] zv = za
    cdef double[::1] yv = ya
    cdef double[::1] ev = ea
    cdef double[::1] gv
    cdef double* ep = NULL if keep == "none" else &ev[0] if n else NULL
    cdef double* gp = NULL
    if ga is not None:
        gv = ga
        if n:
            gp = &gv[0]
    if n:
        with nogil:
            fg_vm_usig_at(level, &zv[0], ep, &yv[0], gp, n, c0, c2, c3)
    if ga is not None:
        return ya, ea, ga
    return ya, ea


def scalar(str name, double x):
    """The width-1 build (the eager engine's) of ``name`` at ``x``."""
    cdef int fn = _code(name)
    if fn == 0:
        return fg_vm_exp(x)
    if fn == 1:
        return fg_vm_expm1(x)
    if fn == 2:
        return fg_vm_log(x)
    if fn == 3:
        return fg_vm_log1p(x)
    if fn == 4:
        return fg_vm_tanh(x)
    if fn == 5:
        return fg_vm_sigmoid(x)
    return fg_vm_softplus(x)


cdef inline double _libm_sigmoid(double a) noexcept nogil:
    # the engine's form before _vmath.h (two branches, exp of x <= 0 only)
    cdef double e
    if a >= 0:
        return 1.0 / (1.0 + exp(-a))
    e = exp(a)
    return e / (1.0 + e)


cdef inline double _libm_softplus(double a) noexcept nogil:
    return (a if a > 0 else 0.0) + log1p(exp(-fabs(a)))


def libm(str name, x, out=None):
    """The C library's ``name`` over ``x`` in a scalar loop (benchmarks'
    baseline): exp, expm1, log, log1p, tanh; sigmoid as 1/(1+exp(-x)) or
    exp(x)/(1+exp(x)); softplus as max(x, 0) + log1p(exp(-|x|))."""
    cdef int fn = _code(name)
    xa, out = _arrays(x, out)
    cdef const double[::1] xv = xa
    cdef double[::1] ov = out
    cdef Py_ssize_t j, n = xv.shape[0]
    with nogil:
        if fn == 0:
            for j in range(n):
                ov[j] = exp(xv[j])
        elif fn == 1:
            for j in range(n):
                ov[j] = expm1(xv[j])
        elif fn == 2:
            for j in range(n):
                ov[j] = log(xv[j])
        elif fn == 3:
            for j in range(n):
                ov[j] = log1p(xv[j])
        elif fn == 4:
            for j in range(n):
                ov[j] = tanh(xv[j])
        elif fn == 5:
            for j in range(n):
                ov[j] = _libm_sigmoid(xv[j])
        else:
            for j in range(n):
                ov[j] = _libm_softplus(xv[j])
    return out


def tables():
    """The C build's tables and constants: (exp table, log table, dict)."""
    exp_tab = [fg_vm_exp_tab[i] for i in range(256)]
    log_tab = [fg_vm_log_tab[i] for i in range(512)]
    consts = {
        "INVLN2N": FG_VM_INVLN2N, "SHIFT": FG_VM_SHIFT, "C_HI": FG_VM_C_HI,
        "C_LO": FG_VM_C_LO, "P2": FG_VM_P2, "P3": FG_VM_P3, "P4": FG_VM_P4,
        "P5": FG_VM_P5, "P6": FG_VM_P6, "LN2_HI": FG_VM_LN2_HI,
        "LN2_LO": FG_VM_LN2_LO, "L2": FG_VM_L2, "L3": FG_VM_L3, "L4": FG_VM_L4,
        "L5": FG_VM_L5, "L6": FG_VM_L6, "L7": FG_VM_L7, "L8": FG_VM_L8,
    }
    return exp_tab, log_tab, consts
