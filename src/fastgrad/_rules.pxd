# cython: language_level=3
"""Op codes and derivative rules: the one place where fastgrad's math lives.

Every node of a graph carries one op code.  ``op_forward`` computes the node's
value from its operands, ``op_backward`` turns the node's gradient into the
local gradient contributions of its operands.  The eager engine (_engine.pyx)
and the compiled replay both call these two functions, so a rule is written
once.  Both are pure C on doubles: domain errors (log of a negative number,
division by zero, ...) are checked by the eager engine *before* it calls
``op_forward``; a replay lets IEEE values (inf, nan) propagate.

Operands: ``a`` (first child), ``b`` (second child, binary ops only) and the
baked constant ``c`` (ops ending in C: the Python number the user wrote).

Second and higher order: ``fastgrad.grad(..., create_graph=True)`` needs the
backward rules themselves as graphs of Values.  That table -- one entry per op
code, written with the same operations in the same order as ``op_backward``
below, so it gives the same floats -- is ``_diff_rule`` in ``_higher.pyx``.
The three *_GRAD ops are what it builds at kinks: a gradient masked by a
comparison (relu, abs, max/min), re-evaluated at every compiled replay, whose
own derivative with respect to the compared value is 0 (PyTorch's convention).
"""
from libc.math cimport sqrt, fabs, pow, isfinite

# The elementary functions: fastgrad's own (_vmath.h), one implementation
# each whose vector builds (the replay's rows, the layer epilogues) give the
# same bits as these scalar ones, <= 0.52 ulp (tanh 0.7547) from the
# correctly rounded result.  libm's would differ between platforms and from the vector builds.
cdef extern from "_vmath.h" nogil:
    double fg_vm_exp(double x)
    double fg_vm_expm1(double x)
    double fg_vm_log(double x)
    double fg_vm_log1p(double x)
    double fg_vm_tanh(double x)
    double fg_vm_sigmoid(double x)
    double fg_vm_softplus(double x)
    # a + b and a * b with a's nan where both are nans (the one choice on
    # every path and compiler: see _vmath.h); every + and * below whose two
    # operands can both be nans goes through them
    double fg_vm_add(double a, double b)
    double fg_vm_mul(double a, double b)
    # the same for scalar code only (one instruction on x86-64, but a loop
    # calling them is not vectorised): the rules' *_s builds below, and the
    # scalar gradient sums of the engine and the one-row replay
    double fg_vm_add_s(double a, double b)
    double fg_vm_mul_s(double a, double b)
    # -x, a nan kept as it is (gcc may fold a negation into the add after it)
    double fg_vm_neg(double x)

cdef enum:
    OP_LEAF = 0
    # binary: a (op) b, both Values
    OP_ADD = 1
    OP_SUB = 2
    OP_MUL = 3
    OP_DIV = 4
    OP_POW = 5
    OP_MAX = 6
    OP_MIN = 7
    # binary, made only by the differentiable backward rules (_higher.pyx):
    # a = a gradient, b = the value a kink's mask compares with 0.  Numbered
    # with the binary ops so that op_is_binary stays one range check (two
    # ranges cost backward() 2-4% more instructions, callgrind, 10 passes
    # over the demo graph)
    OP_RELU_GRAD = 8   # a if b > 0 else 0            (relu: b is relu's output)
    OP_SIGN_GRAD = 9   # a * sign(b), sign(0) = 0      (abs: b is its operand)
    OP_TIE_GRAD = 10   # a if b > 0, a/2 if b == 0, else 0  (max/min: b = x - y)
    # one Value and a baked constant c
    OP_ADDC = 11      # a + c   (also a - c, stored as a + (-c) as micrograd does)
    OP_MULC = 12      # a * c   (also -a, stored as a * -1 as micrograd does)
    OP_RSUBC = 13     # c - a
    OP_DIVC = 14      # a / c
    OP_RDIVC = 15     # c / a
    OP_POWC = 16      # a ** c
    OP_RPOWC = 17     # c ** a
    # unary
    OP_RELU = 18
    OP_TANH = 19
    OP_EXP = 20
    OP_LOG = 21
    OP_SIGMOID = 22
    OP_ABS = 23
    OP_SQRT = 24
    N_PURE_OPS = 25   # (the ops above; the layer pass takes epilogues from them)
    # a node built by hand, Value(x, (a, b), 'op'), whose backward is the
    # user's own ``_backward`` callable (micrograd's extension mechanism)
    OP_CUSTOM = 25
    # added after the others, so that earlier codes (and pickles) keep theirs
    OP_LOG1P = 26
    OP_SOFTPLUS = 27  # log(1 + e**a), stably
    OP_SOFTMAX = 28   # binary: e**(a - b), softmax's output: a = x_i, b = logsumexp(x)
    # n-ary: operands x_0..x_{n-1} (n >= 1) in a tuple, as OP_CUSTOM; rules
    # below.  They stay the last codes (backward() tests op >= OP_SUM).
    OP_SUM = 29       # (((0 + x_0) + x_1) + x_2) + ..., as Python's sum()
    OP_LOGSUMEXP = 30  # m + log(e**(x_0 - m) + e**(x_1 - m) + ...), m = max x_i
    N_OPS = 31        # op codes are below this


# What each op code's node holds besides its first operand, one byte per op
# (a table, not ranges: the binary ops are no longer one range since
# OP_SOFTMAX).  OPK_TUPLE: operands in a tuple in ``_a`` (n-ary ops and
# OP_CUSTOM).  A lookup costs what the old range check did: see the commit.
cdef enum:
    OPK_BINARY = 1
    OPK_CONST = 2
    OPK_NARY = 4
    OPK_TUPLE = 8

cdef extern from *:
    """
    static const unsigned char fg_op_kind[256] = {
        0,              /* OP_LEAF */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1,   /* OP_ADD .. OP_TIE_GRAD: binary */
        2, 2, 2, 2, 2, 2, 2,            /* OP_ADDC .. OP_RPOWC: a constant */
        0, 0, 0, 0, 0, 0, 0,            /* OP_RELU .. OP_SQRT: unary */
        8,              /* OP_CUSTOM: a tuple of operands */
        0, 0,           /* OP_LOG1P, OP_SOFTPLUS */
        1,              /* OP_SOFTMAX */
        4 | 8, 4 | 8,   /* OP_SUM, OP_LOGSUMEXP */
    };
    """
    const unsigned char fg_op_kind[256]


cdef inline bint op_is_binary(int op) noexcept nogil:
    return fg_op_kind[<unsigned char>op] & OPK_BINARY


cdef inline bint op_has_const(int op) noexcept nogil:
    return fg_op_kind[<unsigned char>op] & OPK_CONST


cdef inline bint op_is_nary(int op) noexcept nogil:
    return fg_op_kind[<unsigned char>op] & OPK_NARY


cdef inline bint op_has_tuple(int op) noexcept nogil:
    """Operands in a tuple (``Value._a``): the n-ary ops and OP_CUSTOM."""
    return fg_op_kind[<unsigned char>op] & OPK_TUPLE


cdef inline double mask_grad(int op, double g, double x) noexcept nogil:
    """The *_GRAD ops: gradient ``g`` through a kink's mask at ``x``.

    Written as the branches of ``op_backward`` for relu, abs and max/min, so
    a masked gradient is the same float whichever order computed it; nan at
    ``x`` gives 0 (no comparison holds), as there.
    """
    if x > 0:
        return g
    if op == OP_SIGN_GRAD and x < 0:
        return fg_vm_neg(g)
    if op == OP_TIE_GRAD and x == 0:
        return 0.5 * g
    return 0.0


# op_forward / op_backward / nary_backward come in two builds of one rule
# each: the plain names, for loops over batch columns that gcc vectorises
# (their pins compare and mask), and the *_s names, for scalar code (the
# eager engine, the one-row replay, the replay's scalar instructions), whose
# pins are fg_vm_add_s / fg_vm_mul_s.  Same bits (_vmath.h).  The flag s is
# a literal at every call, folded once the rule is inlined.
cdef inline double _pin_add(double a, double b, bint s) noexcept nogil:
    return fg_vm_add_s(a, b) if s else fg_vm_add(a, b)


cdef inline double _pin_mul(double a, double b, bint s) noexcept nogil:
    return fg_vm_mul_s(a, b) if s else fg_vm_mul(a, b)


cdef inline double op_forward(int op, double a, double b, double c) noexcept nogil:
    """Value of a node with op code ``op`` (not OP_LEAF/OP_CUSTOM or an n-ary
    op: see the n-ary section below)."""
    return _op_forward(op, a, b, c, False)


cdef inline double op_forward_s(int op, double a, double b, double c) noexcept nogil:
    """op_forward, for scalar code."""
    return _op_forward(op, a, b, c, True)


cdef inline void op_backward(int op, double a, double b, double c, double out,
                             double g, double* ga, double* gb) noexcept nogil:
    """See _op_backward."""
    _op_backward(op, a, b, c, out, g, ga, gb, False)


cdef inline void op_backward_s(int op, double a, double b, double c, double out,
                               double g, double* ga, double* gb) noexcept nogil:
    """op_backward, for scalar code."""
    _op_backward(op, a, b, c, out, g, ga, gb, True)


cdef inline double _op_forward(int op, double a, double b, double c,
                               bint s) noexcept nogil:
    """Value of a node with op code ``op`` (not OP_LEAF/OP_CUSTOM or an n-ary
    op: see the n-ary section below); s: the scalar pins."""
    if op == OP_ADD:
        return _pin_add(a, b, s)
    elif op == OP_SUB:
        return a - b
    elif op == OP_MUL:
        return _pin_mul(a, b, s)
    elif op == OP_DIV:
        return a / b
    elif op == OP_POW:
        return pow(a, b)
    elif op == OP_MAX:
        # nan in, nan out (as torch.maximum); a tie returns a
        if a != a or b != b:
            return _pin_add(a, b, s)
        return a if a >= b else b
    elif op == OP_MIN:
        if a != a or b != b:
            return _pin_add(a, b, s)
        return a if a <= b else b
    elif op == OP_ADDC:
        return _pin_add(a, c, s)
    elif op == OP_MULC:
        return _pin_mul(a, c, s)
    elif op == OP_RSUBC:
        return c - a
    elif op == OP_DIVC:
        return a / c
    elif op == OP_RDIVC:
        return c / a
    elif op == OP_POWC:
        return pow(a, c)
    elif op == OP_RPOWC:
        return pow(c, a)
    elif op == OP_RELU:
        # micrograd: 0 if x < 0 else x (so relu(-0.0) is -0.0 and nan stays nan)
        return 0.0 if a < 0 else a
    elif op == OP_TANH:
        return fg_vm_tanh(a)     # saturates to +-1: no exp overflow
    elif op == OP_EXP:
        return fg_vm_exp(a)
    elif op == OP_LOG:
        return fg_vm_log(a)
    elif op == OP_SIGMOID:
        # the stable two-branch form (exp of -|a| only): sigmoid(-1000) is
        # 0.0, not nan
        return fg_vm_sigmoid(a)
    elif op == OP_ABS:
        return fabs(a)
    elif op == OP_SQRT:
        return sqrt(a)
    elif op == OP_RELU_GRAD or op == OP_SIGN_GRAD or op == OP_TIE_GRAD:
        return mask_grad(op, a, b)
    elif op == OP_LOG1P:
        return fg_vm_log1p(a)
    elif op == OP_SOFTPLUS:
        return fg_vm_softplus(a)
    elif op == OP_SOFTMAX:
        # b = logsumexp(x) >= a, so this never overflows; its error relative
        # to the exact softmax is about |b| * 2**-53 plus an ulp or two (the
        # rounding of b, amplified by exp)
        return fg_vm_exp(a - b)
    return a  # OP_LEAF: the value itself


cdef inline void _op_backward(int op, double a, double b, double c, double out,
                              double g, double* ga, double* gb, bint s) noexcept nogil:
    """Local gradient contributions of a node's operands (s: the scalar pins).

    ``out`` is the node's value, ``g`` its gradient.  Writes d(out)/da * g to
    ``ga[0]`` and, for binary ops, d(out)/db * g to ``gb[0]``; the caller adds
    them to the operands' gradients.  Formulas follow micrograd where it has
    the op (same order of floating-point operations) and PyTorch otherwise.
    """
    ga[0] = 0.0
    gb[0] = 0.0
    if op == OP_ADD:
        ga[0] = g
        gb[0] = g
    elif op == OP_SUB:
        ga[0] = g
        gb[0] = fg_vm_neg(g)
    elif op == OP_MUL:
        ga[0] = _pin_mul(b, g, s)
        gb[0] = _pin_mul(a, g, s)
    elif op == OP_DIV:
        ga[0] = g / b
        # -a/b**2 computed as -(a/b)/b: b*b underflows to 0 for tiny b,
        # which would give 0/0 = nan at a == 0
        gb[0] = fg_vm_neg(_pin_mul(g, out / b, s))
    elif op == OP_POW:
        # d(a**0)/da is 0 everywhere, also at a == 0 where the formula gives
        # 0 * inf (PyTorch's convention)
        if b != 0.0:
            ga[0] = _pin_mul(_pin_mul(b, pow(a, b - 1.0), s), g, s)
        # d/db a**b = a**b log(a); at a == 0 (b >= 0) torch defines it as 0
        if a == 0.0 and b >= 0.0:
            gb[0] = 0.0
        else:
            gb[0] = _pin_mul(_pin_mul(out, fg_vm_log(a), s), g, s)
    elif op == OP_MAX or op == OP_MIN:
        # gradient to the winner; a tie splits it evenly (torch.maximum);
        # nan operands get none
        if a == b:
            ga[0] = 0.5 * g
            gb[0] = 0.5 * g
        elif a > b:
            if op == OP_MAX:
                ga[0] = g
            else:
                gb[0] = g
        elif a < b:
            if op == OP_MAX:
                gb[0] = g
            else:
                ga[0] = g
    elif op == OP_ADDC:
        ga[0] = g
    elif op == OP_MULC:
        ga[0] = _pin_mul(c, g, s)
    elif op == OP_RSUBC:
        ga[0] = fg_vm_neg(g)
    elif op == OP_DIVC:
        ga[0] = g / c
    elif op == OP_RDIVC:
        ga[0] = fg_vm_neg(_pin_mul(g, out / a, s))       # -c/a**2, without a*a underflow
    elif op == OP_POWC:
        if c != 0.0:
            ga[0] = _pin_mul(_pin_mul(c, pow(a, c - 1.0), s), g, s)
    elif op == OP_RPOWC:
        if c == 0.0 and a >= 0.0:
            ga[0] = 0.0
        else:
            ga[0] = _pin_mul(_pin_mul(out, fg_vm_log(c), s), g, s)
    elif op == OP_RELU:
        # gradient 0 at 0 (micrograd: (out > 0) * grad)
        ga[0] = g if out > 0 else 0.0
    elif op == OP_TANH:
        # (out * out, out * (1.0 - out): one nan on both sides)
        ga[0] = _pin_mul(1.0 - out * out, g, s)
    elif op == OP_EXP:
        ga[0] = _pin_mul(out, g, s)
    elif op == OP_LOG:
        ga[0] = g / a
    elif op == OP_SIGMOID:
        ga[0] = _pin_mul(out * (1.0 - out), g, s)
    elif op == OP_ABS:
        # sign(a) * g with sign(0) = 0, as torch.abs
        if a > 0:
            ga[0] = g
        elif a < 0:
            ga[0] = fg_vm_neg(g)
    elif op == OP_SQRT:
        ga[0] = g / (2.0 * out)
    elif op == OP_RELU_GRAD or op == OP_SIGN_GRAD or op == OP_TIE_GRAD:
        # linear in the gradient a, piecewise constant in b: d/db = 0
        ga[0] = mask_grad(op, g, b)
    elif op == OP_LOG1P:
        ga[0] = g / (1.0 + a)
    elif op == OP_SOFTPLUS:
        ga[0] = _pin_mul(fg_vm_sigmoid(a), g, s)     # d/da log(1 + e**a) = sigmoid(a)
    elif op == OP_SOFTMAX:
        ga[0] = _pin_mul(out, g, s)
        gb[0] = fg_vm_neg(_pin_mul(out, g, s))


cdef inline void op_second(int op, double a, double b, double c, double out,
                           double* haa, double* hab, double* hbb) noexcept nogil:
    """Second partial derivatives of a node's value: d2out/da2, d2out/dadb
    and d2out/db2 (``b`` terms for binary ops only).

    Used by the forward-over-reverse Hessian-vector sweep (_higher.pyx, the
    fast path of ``fastgrad.functional``); it must agree with the
    differentiable rules ``_diff_rule`` there (tests check both against
    PyTorch).  Conventions as ``op_backward``: 0 at and away from kinks (relu,
    abs, max/min, the *_GRAD masks), 0 where op_backward pins a first
    derivative to 0 (exponent 0, base 0).
    """
    haa[0] = 0.0
    hab[0] = 0.0
    hbb[0] = 0.0
    if op == OP_MUL:
        hab[0] = 1.0
    elif op == OP_DIV:                       # out = a / b
        hab[0] = -1.0 / (b * b)
        hbb[0] = 2.0 * (out / b) / b
    elif op == OP_POW:                       # out = a ** b
        if b != 0.0 and b != 1.0:
            haa[0] = b * (b - 1.0) * pow(a, b - 2.0)
        if not (a == 0.0 and b >= 0.0):
            hab[0] = pow(a, b - 1.0) * (1.0 + b * fg_vm_log(a))
            hbb[0] = out * fg_vm_log(a) * fg_vm_log(a)
    elif op == OP_RDIVC:                     # out = c / a
        haa[0] = 2.0 * (out / a) / a
    elif op == OP_POWC:                      # out = a ** c
        if c != 0.0 and c != 1.0:
            haa[0] = c * (c - 1.0) * pow(a, c - 2.0)
    elif op == OP_RPOWC:                     # out = c ** a
        if c != 0.0:
            haa[0] = out * fg_vm_log(c) * fg_vm_log(c)
    elif op == OP_TANH:
        haa[0] = -2.0 * out * (1.0 - out * out)
    elif op == OP_EXP:
        haa[0] = out
    elif op == OP_LOG:
        haa[0] = -1.0 / (a * a)
    elif op == OP_SIGMOID:
        haa[0] = out * (1.0 - out) * (1.0 - 2.0 * out)
    elif op == OP_SQRT:
        haa[0] = -0.25 / (out * out * out)
    elif op == OP_LOG1P:
        haa[0] = -1.0 / ((1.0 + a) * (1.0 + a))
    elif op == OP_SOFTPLUS:                  # sigmoid'(a)
        haa[0] = fg_vm_sigmoid(a) * (1.0 - fg_vm_sigmoid(a))
    elif op == OP_SOFTMAX:                   # out = e**(a - b)
        haa[0] = out
        hab[0] = -out
        hbb[0] = out


# ---------------------------------------------------------------------------
# n-ary ops: the one definition of their floating-point order
# ---------------------------------------------------------------------------
# An n-ary node's value is a left fold over its operands x_0..x_{n-1} in
# order, written here as steps that the eager engine runs over a tuple and the
# replay runs over batch columns (each column the same steps): so every
# engine gives the same floats.
#
#   OP_SUM        s = x_0 + 0.0; s = s + x_i for i = 1..n-1 (Python's sum():
#                 its start 0 turns a -0.0 first item into +0.0, as here)
#   OP_LOGSUMEXP  m = x_0; m = lse_max(m, x_i) for i = 1..n-1   (nan sticks)
#                 then, if m is finite: t = e**(x_0 - m); t = t + e**(x_i - m)
#                 for i = 1..n-1; value m + log(t); else (nan, +-inf) m
#
# Gradients (``nary_backward``): operand i gets d(out)/d(x_i) * g, in
# operand order i = 0..n-1 (an operand listed twice gets both, in order).
# logsumexp's is e**(x_i - out) * g, which is OP_SOFTMAX's value times g: the
# differentiable rule (_higher.pyx) builds exactly that.

cdef inline double lse_max(double m, double x) noexcept nogil:
    """One step of logsumexp's max: x if x > m or x is nan, else m."""
    return x if (x > m or x != x) else m


cdef inline double lse_term(double x, double m) noexcept nogil:
    return fg_vm_exp(x - m)


cdef inline double lse_finish(double m, double t) noexcept nogil:
    """logsumexp from its max m and the sum t of e**(x_i - m).

    All -inf (m = -inf) gives -inf, any +inf gives +inf, any nan nan
    (as torch.logsumexp); then t is not used (it is nan there).
    """
    return m + fg_vm_log(t) if isfinite(m) else m


cdef inline double nary_backward(int op, double x, double out,
                                 double g) noexcept nogil:
    """Gradient contribution of one operand x of an n-ary node (value out,
    gradient g)."""
    if op == OP_LOGSUMEXP:
        return fg_vm_mul(op_forward(OP_SOFTMAX, x, out, 0.0), g)
    return g                                     # OP_SUM


cdef inline double nary_backward_s(int op, double x, double out,
                                   double g) noexcept nogil:
    """nary_backward, for scalar code."""
    if op == OP_LOGSUMEXP:
        return fg_vm_mul_s(op_forward(OP_SOFTMAX, x, out, 0.0), g)
    return g


cdef inline double nary_partial(int op, double x, double out) noexcept nogil:
    """d(out)/d(x) for one operand x (the forward tangent's weights)."""
    if op == OP_LOGSUMEXP:
        return op_forward(OP_SOFTMAX, x, out, 0.0)
    return 1.0


cdef inline double nary_hess_t(int op, double x, double out, double tx,
                               double tout) noexcept nogil:
    """Row x of the node's Hessian times the operands' tangents T:
    sum_j d2(out)/dx dx_j T_j, given T_x = tx and the node's own tangent
    tout = sum_j d(out)/dx_j T_j.  logsumexp: p (T_x - tout) with
    p = e**(x - out) (its Hessian is diag(p) - p p^T); a sum is linear: 0."""
    if op == OP_LOGSUMEXP:
        return op_forward(OP_SOFTMAX, x, out, 0.0) * (tx - tout)
    return 0.0
