/* fastgrad's elementary functions: exp, expm1, log, log1p, tanh, sigmoid,
 * softplus -- one implementation each (_vmath_body.h), compiled at every
 * vector width, giving the same bits at every width.
 *
 * Builds (the suffix names the build, as in _replay_gemm.h):
 *
 *   fg_vm_F_plain(double)          width 1, plain C: every compiler (MSVC too)
 *   fg_vm_F_base(fg_vm_vd_base)    2 doubles, GNU C vectors (SSE2 / NEON)
 *   fg_vm_F_avx2(fg_vm_vd_avx2)    4 doubles, target("avx2")      (x86-64)
 *   fg_vm_F_avx512(fg_vm_vd_avx512) 8 doubles, target("avx512f,...") (x86-64)
 *   fg_vm_F_w8(fg_vm_vd_w8)        8 doubles for target("avx2"): the AVX-512
 *                                  shape, lowered by gcc; tests run it on
 *                                  CPUs without AVX-512 (only where
 *                                  FG_VM_WANT_W8 is defined)
 *
 * for F in exp, expm1, log, log1p, tanh, sigmoid, softplus; and
 * fg_vm_F(double) = fg_vm_F_plain, the scalar functions the eager engine's
 * rules (_rules.pxd) call.  All are static inline.  Whole rows, with
 * run-time ISA choice (the layer epilogues' activation rows among them):
 * _vmath_rows.h.
 *
 * Accuracy against the correctly rounded result (mpmath at 256 bits), max
 * error in ulps of the exact value, measured by benchmarks/vmath_accuracy.py
 * (dense sweeps over each function's whole domain, the critical ranges and
 * random doubles; see that script and notes/issue-20-vmath.md):
 *
 *   function  normal results  subnormal results
 *   exp       0.5065          0.7450   (rounded twice there: 53 bits, then
 *   expm1     0.5006          -         the subnormal's precision)
 *   log       0.5067          -
 *   log1p     0.5068          exact (log1p(x) = x there)
 *   tanh      0.7547          exact (tanh(x) = x there)
 *   sigmoid   0.5104          0.7500
 *   softplus  0.5050          0.7427
 *
 * tanh: `benchmarks/vmath_accuracy.py --screen --n 850000 --only tanh`,
 * 10.2 million points over its three ranges, their boundaries and the
 * reduction's boundaries (0.7501 on the 2.4 million points of `--n
 * 200000` before; the worst, 0.7547 at x = 0.25587282783146587, just above
 * T1); sigmoid: `--screen --n 1450000 --only sigmoid`, 10.1 million points,
 * 0.5104 (subnormal results 0.7500; 0.5046 and 0.7492 on the development
 * sweep); every build gave the same bits on all of them (the screen: each
 * point graded in x87 long double, mpmath on the worst; see the script);
 * the others: the development sweeps of 100k-140k points per function in
 * notes/issue-20-vmath.md.
 * tests/test_vmath.py enforces 0.52 (tanh 0.76) and 0.76 for subnormal
 * results on its sweeps and on hypothesis-drawn doubles.
 *
 * IEEE edges as C99 Annex F: exp(-inf) = 0, exp(+inf) = inf, overflow to
 * inf and underflow through the subnormals to +0; log(+-0) = -inf, log(x<0)
 * = nan, log(inf) = inf; log1p(-1) = -inf; tanh(+-0) = +-0, tanh(+-inf) =
 * +-1; expm1/log1p/tanh keep the sign of a zero; nan in, nan out.  No
 * errno, no floating-point exception flags relied on.
 *
 * Requires FLT_EVAL_METHOD == 0 (doubles rounded to double after every
 * operation: SSE2 on x86, any 64-bit target): the double-double steps
 * depend on it.
 */
#ifndef FASTGRAD_VMATH_H
#define FASTGRAD_VMATH_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "fastgrad's _vmath.h needs FLT_EVAL_METHOD == 0 (x87 extended precision breaks it)"
#endif

#include "_vmath_tables.h"

#define FG_VM_INF HUGE_VAL
#define FG_VM_NAN ((double)NAN)

#if defined(__GNUC__) || defined(__clang__)
#define FG_VM_INLINE static inline __attribute__((always_inline, unused))
#define FG_VM_UNUSED __attribute__((unused))
#define FG_VM_VECTORS 1
#if defined(__x86_64__)
#define FG_VM_X86 1
#include <immintrin.h>
#endif
#else
#define FG_VM_INLINE static __inline
#define FG_VM_UNUSED
#endif

/* width 1: plain C */
#define FG_VM_W 1
#define FG_VM_SUF(f) f##_plain
#define FG_VM_TARGET
#include "_vmath_body.h"

#ifdef FG_VM_VECTORS
#define FG_VM_W 2
#define FG_VM_SUF(f) f##_base
#define FG_VM_TARGET
#include "_vmath_body.h"
#endif

#ifdef FG_VM_X86
#define FG_VM_W 4
#define FG_VM_SUF(f) f##_avx2
#define FG_VM_TARGET __attribute__((target("avx2")))
#include "_vmath_body.h"

#define FG_VM_W 8
#define FG_VM_SUF(f) f##_avx512
#define FG_VM_TARGET __attribute__((target("avx512f,avx512vl,avx512dq")))
#define FG_VM_AVX512 1
#include "_vmath_body.h"
#undef FG_VM_AVX512

#ifdef FG_VM_WANT_W8
/* The 8-wide body for AVX2 (tests only; a module defines FG_VM_WANT_W8
 * before including this header).  gcc notes once per file that passing
 * 64-byte vectors without AVX-512 has no settled ABI ("the ABI for passing
 * parameters with 64-byte alignment has changed in GCC 4.6"): these
 * functions are always inlined, nothing crosses an ABI boundary. */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define FG_VM_W 8
#define FG_VM_SUF(f) f##_w8
#define FG_VM_TARGET __attribute__((target("avx2")))
#include "_vmath_body.h"
#endif
#endif

/* the scalar functions (the eager engine's) */
FG_VM_INLINE double fg_vm_exp(double x) { return fg_vm_exp_plain(x); }
FG_VM_INLINE double fg_vm_expm1(double x) { return fg_vm_expm1_plain(x); }
FG_VM_INLINE double fg_vm_log(double x) { return fg_vm_log_plain(x); }
FG_VM_INLINE double fg_vm_log1p(double x) { return fg_vm_log1p_plain(x); }
FG_VM_INLINE double fg_vm_tanh(double x) { return fg_vm_tanh_plain(x); }
FG_VM_INLINE double fg_vm_sigmoid(double x) { return fg_vm_sigmoid_plain(x); }
FG_VM_INLINE double fg_vm_softplus(double x) { return fg_vm_softplus_plain(x); }

/* + and * with one nan for two nan operands.  IEEE 754 and C leave open
 * which operand's nan a sum or product of two nans carries; x86 (and ARM)
 * give the first operand's, but + and * commute, and gcc swaps their
 * operands as it likes (a memory operand, a register already holding one,
 * -O0 against -O3, scalar code against vector loops), so the same a + b
 * gave a's nan on one path and b's on another.  These two pin it: where a
 * is a nan, a + 0.0 / a * 0.0, a's nan quieted (the functions above return
 * x + x for a nan x: the same bits), with no second nan whose order could
 * matter; else the plain a + b / a * b (at most b a nan: its nan, whichever
 * order the operation runs in).  Every rule of _rules.pxd, every gradient
 * sum (eager and replay) and the sum folds use them where both operands can
 * be nans.  Cost: gcc's vector loops compare and mask b (fg_vm_add: two
 * instructions) or select (fg_vm_mul, whose nan arm is a + 0.0: a's nan
 * quieted, as a * 0.0, but another operation, so that scalar code branches
 * there, off the one-row replay's dependency chain, where a mask measured
 * ~5% slower).
 *
 * fg_vm_neg: -x where x is a number, x itself where it is a nan.  gcc folds
 * a negation into the add or subtract it feeds (acc + -g becomes acc - g),
 * and x86's -x flips a nan's sign where acc - g keeps it: the derivative
 * rules' negations go through this one, whose nan has nothing to fold. */
#if defined(__GNUC__) || defined(__clang__)
#define FG_VM_RARE(c) __builtin_expect(!!(c), 0)
#else
#define FG_VM_RARE(c) (c)
#endif
FG_VM_INLINE double fg_vm_add(double a, double b)
{
    if (FG_VM_RARE(a != a)) b = 0.0;
    return a + b;
}
FG_VM_INLINE double fg_vm_mul(double a, double b)
{
    if (FG_VM_RARE(a != a)) return a + 0.0;
    return a * b;
}
FG_VM_INLINE double fg_vm_neg(double x)
{
    return FG_VM_RARE(x != x) ? x : -x;
}

/* fg_vm_add_s / fg_vm_mul_s: the same results as fg_vm_add / fg_vm_mul,
 * for scalar code only (the eager engine, the one-row interpreter, the
 * replay's scalar instructions).  On x86-64 with gcc or clang, one addsd /
 * mulsd (vaddsd / vmulsd where the file is compiled for AVX) in inline asm
 * with a fixed operand order: x86's scalar add and multiply return the first
 * source's nan quieted where it is a nan, else the second source's quieted
 * where that is one (checked bit for bit, signs, payloads and signalling
 * nans, on this CPU: notes/pin40/x86_nan_semantics.c; tests/test_nan_bits.py
 * compares them with the vector loops' fg_vm_add / fg_vm_mul on every path)
 * -- the pins' results, with no compare or branch.  The compiler cannot
 * swap an asm's operands, but it cannot vectorise a loop holding an asm
 * either: loops that gcc vectorises keep fg_vm_add / fg_vm_mul (the rules'
 * op_forward / op_backward; op_forward_s / op_backward_s are the scalar
 * builds, _rules.pxd).  Elsewhere (other compilers or CPUs; or
 * FG_VM_PIN_PORTABLE defined) they are fg_vm_add / fg_vm_mul. */
#if defined(FG_VM_X86) && !defined(FG_VM_PIN_PORTABLE)
#define FG_VM_PIN_ASM 1
#ifdef __AVX__
/* (AT&T order: "vaddsd src2, src1, dst", dst = src1 + src2) */
#define FG_VM_PIN_OP(insn, a, b, r) \
    __asm__("v" insn " %2, %1, %0" : "=x"(r) : "x"(a), "xm"(b))
#else
/* ("addsd src, dst": dst = dst + src, dst the first source) */
#define FG_VM_PIN_OP(insn, a, b, r) \
    do { r = (a); __asm__(insn " %1, %0" : "+x"(r) : "xm"(b)); } while (0)
#endif
FG_VM_INLINE double fg_vm_add_s(double a, double b)
{
    double r;
    FG_VM_PIN_OP("addsd", a, b, r);
    return r;
}
FG_VM_INLINE double fg_vm_mul_s(double a, double b)
{
    double r;
    FG_VM_PIN_OP("mulsd", a, b, r);
    return r;
}
#undef FG_VM_PIN_OP
#else
FG_VM_INLINE double fg_vm_add_s(double a, double b) { return fg_vm_add(a, b); }
FG_VM_INLINE double fg_vm_mul_s(double a, double b) { return fg_vm_mul(a, b); }
#endif

#endif
