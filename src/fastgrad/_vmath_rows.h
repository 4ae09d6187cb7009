/* Whole rows of fastgrad's elementary functions (_vmath.h), one build per
 * ISA, and the run-time choice between them.
 *
 *   fg_vm_row(fn, x, out, n)   out[j] = F(x[j]), j < n, with the ISA chosen
 *                              by fg_vm_isa_select (out == x allowed)
 *   fn: FG_VM_EXP, FG_VM_EXPM1, FG_VM_LOG, FG_VM_LOG1P, FG_VM_TANH,
 *       FG_VM_SIGMOID, FG_VM_SOFTPLUS
 *   fg_vm_isa_select(level)    levels as fg_isa_select (_replay_gemm.h):
 *                              0 portable, 1 baseline vectors, 2 AVX2,
 *                              3 AVX-512, -1 the best supported; returns
 *                              the level in use or -1 (not supported)
 *   fg_vm_row_at(level, fn, x, out, n)   the build of ``level`` (4: the
 *                              8-wide body compiled for AVX2, tests only,
 *                              where FG_VM_WANT_W8 is defined);
 *                              -1 if this build or CPU has no such level
 *
 * Every build gives the same bits (see _vmath_body.h), so a row's tail
 * (n % width elements) simply goes through one more padded vector.
 */
#ifndef FASTGRAD_VMATH_ROWS_H
#define FASTGRAD_VMATH_ROWS_H

#include "_vmath.h"

enum {
    FG_VM_EXP = 0, FG_VM_EXPM1, FG_VM_LOG, FG_VM_LOG1P, FG_VM_TANH,
    FG_VM_SIGMOID, FG_VM_SOFTPLUS, FG_VM_NFUNCS
};

typedef void (*fg_vm_row_t)(const double *, double *, ptrdiff_t);

/* (the vector types are aligned(8): loads and stores through them may be
 * unaligned; memcpy here made gcc go through the stack, 2x slower) */
#define FG_VM_ROW(SUF, W, TARGET, F) \
static FG_VM_UNUSED TARGET void fg_vm_##F##_row_##SUF(const double *x, double *out, ptrdiff_t n) \
{ \
    ptrdiff_t j = 0; \
    fg_vm_vd_##SUF v; \
    double buf[W]; \
    for (; j + W <= n; j += W) \
        *(fg_vm_vd_##SUF *)(out + j) = fg_vm_##F##_##SUF(*(const fg_vm_vd_##SUF *)(x + j)); \
    if (j < n) { \
        memset(buf, 0, sizeof buf); \
        memcpy(buf, x + j, (size_t)(n - j) * sizeof(double)); \
        memcpy(&v, buf, sizeof v); \
        v = fg_vm_##F##_##SUF(v); \
        memcpy(buf, &v, sizeof v); \
        memcpy(out + j, buf, (size_t)(n - j) * sizeof(double)); \
    } \
}

/* tanh's row runs the function's two halves (_vmath_body.h) over blocks of
 * FG_VM_TB vectors: the first half of every vector of the block, then the
 * second.  The same operations on the same numbers (the same bits); the
 * out-of-order core overlaps the block's independent chains, which one
 * whole tanh per vector is too long for.  Measured on AVX2 (Zen 3) with a
 * C loop over 10,000 doubles in [-5, 5] calling the row function, whole
 * tanh per vector against these blocks: 3.66 -> 3.44 ns per element, base
 * 9.0 -> 8.0, portable 11.5 -> 10.5 (the harness: notes/h28-data/
 * tanh_harness_bench.c of the project's working notes). */
#define FG_VM_TB 8
#define FG_VM_ROW_TANH(SUF, W, TARGET) \
static FG_VM_UNUSED TARGET void fg_vm_tanh_row_##SUF(const double *x, double *out, ptrdiff_t n) \
{ \
    ptrdiff_t j = 0; \
    int b; \
    fg_vm_vd_##SUF nb[FG_VM_TB], db[FG_VM_TB], zb[FG_VM_TB], hb[FG_VM_TB]; \
    for (; j + FG_VM_TB * W <= n; j += FG_VM_TB * W) { \
        for (b = 0; b < FG_VM_TB; b++) \
            fg_vm_tanh_a_##SUF(*(const fg_vm_vd_##SUF *)(x + j + b * W), \
                               &nb[b], &db[b], &zb[b], &hb[b]); \
        for (b = 0; b < FG_VM_TB; b++) \
            *(fg_vm_vd_##SUF *)(out + j + b * W) = fg_vm_tanh_b_##SUF( \
                *(const fg_vm_vd_##SUF *)(x + j + b * W), nb[b], db[b], zb[b], hb[b]); \
    } \
    fg_vm_tanh1_row_##SUF(x + j, out + j, n - j); \
}

/* sigmoid's row in blocks of its two halves likewise (the same bits).
 * Measured on Zen 4 (a C loop calling the row functions over 10,000
 * doubles in [-20, 20], whole sigmoid per vector against blocks of
 * FG_VM_TB, quiet machine): AVX2 3.29 -> 2.66 ns per element, AVX-512
 * 2.23 -> 2.16, baseline 6.90 -> 5.81, portable 10.6 -> 8.7 (the 8-wide
 * body for AVX2, tests only, 4.45 -> 5.12: it spills).  The harness:
 * bench.c in notes/th36/h of the working notes. */
#define FG_VM_ROW_SIGMOID(SUF, W, TARGET) \
static FG_VM_UNUSED TARGET void fg_vm_sigmoid_row_##SUF(const double *x, double *out, \
                                                        ptrdiff_t n) \
{ \
    ptrdiff_t j = 0; \
    int b; \
    fg_vm_vd_##SUF nh[FG_VM_TB], nl[FG_VM_TB], dh[FG_VM_TB], dl[FG_VM_TB]; \
    fg_vm_vd_##SUF f1[FG_VM_TB], f2[FG_VM_TB]; \
    for (; j + FG_VM_TB * W <= n; j += FG_VM_TB * W) { \
        for (b = 0; b < FG_VM_TB; b++) \
            fg_vm_sigmoid_a_##SUF(*(const fg_vm_vd_##SUF *)(x + j + b * W), \
                                  &nh[b], &nl[b], &dh[b], &dl[b], &f1[b], &f2[b]); \
        for (b = 0; b < FG_VM_TB; b++) \
            *(fg_vm_vd_##SUF *)(out + j + b * W) = fg_vm_sigmoid_b_##SUF( \
                nh[b], nl[b], dh[b], dl[b], f1[b], f2[b]); \
    } \
    fg_vm_sigmoid1_row_##SUF(x + j, out + j, n - j); \
}

/* softplus's row in blocks of its two halves likewise (the same bits).
 * Measured on Zen 4 (a C loop over 512 doubles in [-4, 4], whole softplus
 * per vector against blocks, one process, min of 9 rounds): AVX-512 5.6 ->
 * 4.7 ns per element, AVX2 7.6 -> 6.0, baseline 17.5 -> 13.6, portable
 * 26.4 -> 18.6 (notes/irr41/h/sp_bench.c of the working notes). */
#define FG_VM_ROW_SOFTPLUS(SUF, W, TARGET) \
static FG_VM_UNUSED TARGET void fg_vm_softplus_row_##SUF(const double *x, double *out, \
                                                         ptrdiff_t n) \
{ \
    ptrdiff_t j = 0; \
    int b; \
    fg_vm_vd_##SUF th[FG_VM_TB], tl[FG_VM_TB], uh[FG_VM_TB], ul[FG_VM_TB]; \
    fg_vm_vu_##SUF M[FG_VM_TB]; \
    for (; j + FG_VM_TB * W <= n; j += FG_VM_TB * W) { \
        for (b = 0; b < FG_VM_TB; b++) \
            fg_vm_softplus_a_##SUF(*(const fg_vm_vd_##SUF *)(x + j + b * W), \
                                   &th[b], &tl[b], &M[b], &uh[b], &ul[b]); \
        for (b = 0; b < FG_VM_TB; b++) \
            *(fg_vm_vd_##SUF *)(out + j + b * W) = fg_vm_softplus_b_##SUF( \
                *(const fg_vm_vd_##SUF *)(x + j + b * W), th[b], tl[b], M[b], uh[b], ul[b]); \
    } \
    fg_vm_softplus1_row_##SUF(x + j, out + j, n - j); \
}

#define FG_VM_ROWS(SUF, W, TARGET) \
    FG_VM_ROW(SUF, W, TARGET, exp) FG_VM_ROW(SUF, W, TARGET, expm1) \
    FG_VM_ROW(SUF, W, TARGET, log) FG_VM_ROW(SUF, W, TARGET, log1p) \
    FG_VM_ROW(SUF, W, TARGET, tanh1) FG_VM_ROW_TANH(SUF, W, TARGET) \
    FG_VM_ROW(SUF, W, TARGET, sigmoid1) FG_VM_ROW_SIGMOID(SUF, W, TARGET) \
    FG_VM_ROW(SUF, W, TARGET, softplus1) FG_VM_ROW_SOFTPLUS(SUF, W, TARGET)
/* 8 wide: one whole tanh per vector (the blocks of halves, measured with
 * the 8-wide body on AVX2, 5.0 -> 8.0 ns per element: the block spills;
 * on Zen 4's AVX-512, blocks of 2, 4, 8 vectors: 2.60, 2.54, 2.54 ns per
 * element against 2.38 for whole vectors) */
#define FG_VM_ROWS8(SUF, W, TARGET) \
    FG_VM_ROW(SUF, W, TARGET, exp) FG_VM_ROW(SUF, W, TARGET, expm1) \
    FG_VM_ROW(SUF, W, TARGET, log) FG_VM_ROW(SUF, W, TARGET, log1p) \
    FG_VM_ROW(SUF, W, TARGET, tanh) \
    FG_VM_ROW(SUF, W, TARGET, sigmoid1) FG_VM_ROW_SIGMOID(SUF, W, TARGET) \
    FG_VM_ROW(SUF, W, TARGET, softplus1) FG_VM_ROW_SOFTPLUS(SUF, W, TARGET)
#define FG_VM_ROWLIST(SUF) {fg_vm_exp_row_##SUF, fg_vm_expm1_row_##SUF, \
    fg_vm_log_row_##SUF, fg_vm_log1p_row_##SUF, fg_vm_tanh_row_##SUF, \
    fg_vm_sigmoid_row_##SUF, fg_vm_softplus_row_##SUF}
#define FG_VM_NOROWS {NULL, NULL, NULL, NULL, NULL, NULL, NULL}

FG_VM_ROWS(plain, 1, )
#ifdef FG_VM_VECTORS
FG_VM_ROWS(base, 2, )
#endif
#ifdef FG_VM_X86
FG_VM_ROWS(avx2, 4, __attribute__((target("avx2"))))
FG_VM_ROWS8(avx512, 8, __attribute__((target("avx512f,avx512vl,avx512dq"))))
#ifdef FG_VM_WANT_W8
FG_VM_ROWS8(w8, 8, __attribute__((target("avx2"))))
#endif
#endif

/* The user's sigmoid 1/(1+(-z).exp()) as a layer epilogue (the chain
 * mulc(c0), exp, addc(c2), rdivc(c3); _replay_epilogue.pxi) in one pass
 * over a row instead of one pass per op, and its backward without exp:
 *
 *   fg_vm_usig_fw(z, e, y, n, c0, c2, c3)  e = exp(z c0), y = c3 / (e + c2)
 *                                          (e: NULL, z itself, or a row)
 *   fg_vm_usig_bw(e, y, g, n, c0, c2)      g = the chain's rules in reverse
 *
 * Each element goes through exactly op_forward's / op_backward's
 * operations (_rules.pxd) in the same order: u = z * c0, e = exp(u),
 * d = e + c2, y = c3 / d; backward, from the forward's e (kept, so exp is
 * not recomputed: the same e, the same bits) and d = e + c2 recomputed,
 * g3 = 0.0 + (-g) * (y / d) (rdivc), g2 = 0.0 + g3 (addc),
 * g1 = 0.0 + e * g2 (exp), g = 0.0 + c0 * g1 (mulc); every ``0.0 +`` is
 * the operand's gradient starting at 0.0 in eager mode (it turns -0.0 into
 * +0.0).  So the bits are those of the op-by-op epilogue at every width.
 * The forward works in blocks of FG_VM_UB columns: the vector exp of the
 * block (into e, or a buffer in L1), then the cheap ops in a plain loop that
 * gcc vectorises for the function's target.  y may be z (in place). */
#define FG_VM_UB 256
#define FG_VM_USIG(SUF, W, TARGET) \
/* e[k] = exp(z[k] c0), k < m (e may be z; the tail: one zero-padded vector) */ \
static FG_VM_UNUSED TARGET void fg_vm_usig_exp_##SUF(const double *z, double *e, ptrdiff_t m, \
                                                     double c0) \
{ \
    typedef fg_vm_vd_##SUF V; \
    ptrdiff_t k = 0; \
    V v; \
    double buf[W]; \
    for (; k + W <= m; k += W) \
        *(V *)(e + k) = fg_vm_exp_##SUF(*(const V *)(z + k) * c0); \
    if (k < m) { \
        memset(buf, 0, sizeof buf); \
        memcpy(buf, z + k, (size_t)(m - k) * sizeof(double)); \
        memcpy(&v, buf, sizeof v); \
        v = fg_vm_exp_##SUF(v * c0); \
        memcpy(buf, &v, sizeof v); \
        memcpy(e + k, buf, (size_t)(m - k) * sizeof(double)); \
    } \
} \
static FG_VM_UNUSED TARGET void fg_vm_usig_fw_##SUF(const double *z, double *e, double *y, \
                                                    ptrdiff_t n, double c0, double c2, \
                                                    double c3) \
{ \
    double buf[FG_VM_UB]; \
    double *eb; \
    ptrdiff_t jb, k, m; \
    for (jb = 0; jb < n; jb += m) { \
        m = n - jb < FG_VM_UB ? n - jb : FG_VM_UB; \
        eb = e != NULL ? e + jb : buf; \
        fg_vm_usig_exp_##SUF(z + jb, eb, m, c0); \
        for (k = 0; k < m; k++) \
            y[jb + k] = c3 / (eb[k] + c2); \
    } \
} \
static FG_VM_UNUSED TARGET void fg_vm_usig_bw_##SUF(const double *e, const double *y, double *g, \
                                                    ptrdiff_t n, double c0, double c2) \
{ \
    double t; \
    ptrdiff_t j; \
    for (j = 0; j < n; j++) { \
        t = 0.0 + (-g[j]) * (y[j] / (e[j] + c2)); \
        t = 0.0 + t; \
        t = 0.0 + e[j] * t; \
        g[j] = 0.0 + c0 * t; \
    } \
}

typedef void (*fg_vm_usig_fw_t)(const double *, double *, double *, ptrdiff_t, double, double,
                                double);
typedef void (*fg_vm_usig_bw_t)(const double *, const double *, double *, ptrdiff_t, double,
                                double);
FG_VM_USIG(plain, 1, )
#ifdef FG_VM_VECTORS
FG_VM_USIG(base, 2, )
#endif
#ifdef FG_VM_X86
FG_VM_USIG(avx2, 4, __attribute__((target("avx2"))))
FG_VM_USIG(avx512, 8, __attribute__((target("avx512f,avx512vl,avx512dq"))))
#ifdef FG_VM_WANT_W8
FG_VM_USIG(w8, 8, __attribute__((target("avx2"))))
#endif
#endif

#define FG_VM_NLEVELS 5
static const fg_vm_usig_fw_t fg_vm_usig_fw_table[FG_VM_NLEVELS] = {
    fg_vm_usig_fw_plain,
#ifdef FG_VM_VECTORS
    fg_vm_usig_fw_base,
#else
    fg_vm_usig_fw_plain,
#endif
#ifdef FG_VM_X86
    fg_vm_usig_fw_avx2, fg_vm_usig_fw_avx512,
#ifdef FG_VM_WANT_W8
    fg_vm_usig_fw_w8,
#else
    fg_vm_usig_fw_plain,
#endif
#else
    fg_vm_usig_fw_plain, fg_vm_usig_fw_plain, fg_vm_usig_fw_plain,
#endif
};
static const fg_vm_usig_bw_t fg_vm_usig_bw_table[FG_VM_NLEVELS] = {
    fg_vm_usig_bw_plain,
#ifdef FG_VM_VECTORS
    fg_vm_usig_bw_base,
#else
    fg_vm_usig_bw_plain,
#endif
#ifdef FG_VM_X86
    fg_vm_usig_bw_avx2, fg_vm_usig_bw_avx512,
#ifdef FG_VM_WANT_W8
    fg_vm_usig_bw_w8,
#else
    fg_vm_usig_bw_plain,
#endif
#else
    fg_vm_usig_bw_plain, fg_vm_usig_bw_plain, fg_vm_usig_bw_plain,
#endif
};
static const fg_vm_row_t fg_vm_rows_table[FG_VM_NLEVELS][FG_VM_NFUNCS] = {
    FG_VM_ROWLIST(plain),
#ifdef FG_VM_VECTORS
    FG_VM_ROWLIST(base),
#else
    FG_VM_NOROWS,
#endif
#ifdef FG_VM_X86
    FG_VM_ROWLIST(avx2), FG_VM_ROWLIST(avx512),
#ifdef FG_VM_WANT_W8
    FG_VM_ROWLIST(w8),
#else
    FG_VM_NOROWS,
#endif
#else
    FG_VM_NOROWS, FG_VM_NOROWS, FG_VM_NOROWS,
#endif
};

static int fg_vm_level = 0;

/* whether this build has level ``level`` and the CPU runs it */
static FG_VM_UNUSED int fg_vm_supported(int level)
{
    if (level < 0 || level >= FG_VM_NLEVELS || fg_vm_rows_table[level][0] == NULL)
        return 0;
#ifdef FG_VM_X86
    __builtin_cpu_init();
    if (level == 2 || level == 4) return __builtin_cpu_supports("avx2") != 0;
    if (level == 3)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq");
#endif
    return 1;
}

/* Use the build of ``level`` for fg_vm_row (-1: the best of levels 0-3);
 * returns the level in use, or -1 (nothing changed).  Not meant to be
 * called while rows are computed (tests switch in between). */
static FG_VM_UNUSED int fg_vm_isa_select(int level)
{
    if (level < 0) {
        level = 3;
        while (level > 0 && !fg_vm_supported(level)) level--;
    }
    if (!fg_vm_supported(level)) return -1;
    fg_vm_level = level;
    return level;
}

static FG_VM_UNUSED int fg_vm_isa_get(void) { return fg_vm_level; }

static FG_VM_UNUSED void fg_vm_row(int fn, const double *x, double *out, ptrdiff_t n)
{
    fg_vm_rows_table[fg_vm_level][fn](x, out, n);
}

static FG_VM_UNUSED void fg_vm_usig_fw(const double *z, double *e, double *y, ptrdiff_t n,
                                       double c0, double c2, double c3)
{
    fg_vm_usig_fw_table[fg_vm_level](z, e, y, n, c0, c2, c3);
}

static FG_VM_UNUSED void fg_vm_usig_bw(const double *e, const double *y, double *g, ptrdiff_t n,
                                       double c0, double c2)
{
    fg_vm_usig_bw_table[fg_vm_level](e, y, g, n, c0, c2);
}

/* the chain's rows at ``level`` (tests): the forward (e may be NULL or z)
 * and then, if g is not NULL, the backward from its e; -1 if unsupported */
static FG_VM_UNUSED int fg_vm_usig_at(int level, const double *z, double *e, double *y,
                                      double *g, ptrdiff_t n, double c0, double c2, double c3)
{
    if (!fg_vm_supported(level)) return -1;
    fg_vm_usig_fw_table[level](z, e, y, n, c0, c2, c3);
    if (g != NULL) fg_vm_usig_bw_table[level](e, y, g, n, c0, c2);
    return 0;
}

/* The backward of tanh and sigmoid from their output row y, in place on the
 * gradient row g (a layer epilogue's op, _replay_epilogue.pxi): exactly
 * op_backward's operations (_rules.pxd) and the operand's gradient starting
 * at 0.0 in eager mode (``0.0 +``, which turns -0.0 into +0.0):
 *
 *   fg_vm_act_bw(fn, y, g, n)   fn FG_VM_TANH:    g = 0.0 + (1.0 - y y) g
 *                               fn FG_VM_SIGMOID: g = 0.0 + (y (1.0 - y)) g
 *
 * Plain loops that gcc vectorises for each build's target (no FMA:
 * -ffp-contract=off), so every level gives the same bits; the replay's own
 * loop is built for the baseline ISA only.  (Level 4, the 8-wide body for
 * AVX2, has no other loop to test here: it runs the AVX2 one.) */
#define FG_VM_ACTBW(SUF, TARGET) \
static FG_VM_UNUSED TARGET void fg_vm_act_bw_##SUF(int fn, const double *y, double *g, \
                                                   ptrdiff_t n) \
{ \
    ptrdiff_t j; \
    if (fn == FG_VM_TANH) { \
        for (j = 0; j < n; j++) \
            g[j] = 0.0 + (1.0 - y[j] * y[j]) * g[j]; \
    } else { \
        for (j = 0; j < n; j++) \
            g[j] = 0.0 + (y[j] * (1.0 - y[j])) * g[j]; \
    } \
}
typedef void (*fg_vm_act_bw_t)(int, const double *, double *, ptrdiff_t);
FG_VM_ACTBW(plain, )
#ifdef FG_VM_VECTORS
FG_VM_ACTBW(base, )
#endif
#ifdef FG_VM_X86
FG_VM_ACTBW(avx2, __attribute__((target("avx2"))))
FG_VM_ACTBW(avx512, __attribute__((target("avx512f,avx512vl,avx512dq"))))
#endif
static const fg_vm_act_bw_t fg_vm_act_bw_table[FG_VM_NLEVELS] = {
    fg_vm_act_bw_plain,
#ifdef FG_VM_VECTORS
    fg_vm_act_bw_base,
#else
    fg_vm_act_bw_plain,
#endif
#ifdef FG_VM_X86
    fg_vm_act_bw_avx2, fg_vm_act_bw_avx512, fg_vm_act_bw_avx2,
#else
    fg_vm_act_bw_plain, fg_vm_act_bw_plain, fg_vm_act_bw_plain,
#endif
};

/* fn: FG_VM_TANH or FG_VM_SIGMOID; y and g do not overlap */
static FG_VM_UNUSED void fg_vm_act_bw(int fn, const double *y, double *g, ptrdiff_t n)
{
    fg_vm_act_bw_table[fg_vm_level](fn, y, g, n);
}

/* the same at ``level`` (tests); -1 if unsupported or fn is neither */
static FG_VM_UNUSED int fg_vm_act_bw_at(int level, int fn, const double *y, double *g,
                                        ptrdiff_t n)
{
    if ((fn != FG_VM_TANH && fn != FG_VM_SIGMOID) || !fg_vm_supported(level)) return -1;
    fg_vm_act_bw_table[level](fn, y, g, n);
    return 0;
}

static FG_VM_UNUSED int fg_vm_row_at(int level, int fn, const double *x, double *out, ptrdiff_t n)
{
    if (fn < 0 || fn >= FG_VM_NFUNCS || !fg_vm_supported(level)) return -1;
    fg_vm_rows_table[level][fn](x, out, n);
    return 0;
}

/* The batched replay's softmax / logsumexp kernels on these functions
 * (_vmath_nary.h; the same bits at every level), chosen like the rows:
 * fg_vm_lse_fw(...), fg_vm_softmax_fw(...), fg_vm_softmax_bw(...),
 * fg_vm_lse_bw_row(...), fg_vm_mul_fw(...), fg_vm_mul_bw_row(...),
 * fg_vm_sum_fw(...), fg_vm_gput_row(...), fg_vm_softplus_bw_row(...) with
 * _vmath_nary.h's
 * arguments run the level of fg_vm_isa_select. */
#define FG_VN_W 1
#define FG_VN_SUF(f) f##_plain
#define FG_VN_TARGET
#include "_vmath_nary.h"
#ifdef FG_VM_VECTORS
#define FG_VN_W 2
#define FG_VN_SUF(f) f##_base
#define FG_VN_TARGET
#include "_vmath_nary.h"
#endif
#ifdef FG_VM_X86
#define FG_VN_W 4
#define FG_VN_SUF(f) f##_avx2
#define FG_VN_TARGET __attribute__((target("avx2")))
#include "_vmath_nary.h"
#define FG_VN_W 8
#define FG_VN_SUF(f) f##_avx512
#define FG_VN_TARGET __attribute__((target("avx512f,avx512vl,avx512dq")))
#define FG_VN_IS_AVX512 1
#include "_vmath_nary.h"
#undef FG_VN_IS_AVX512
#ifdef FG_VM_WANT_W8
#define FG_VN_W 8
#define FG_VN_SUF(f) f##_w8
#define FG_VN_TARGET __attribute__((target("avx2")))
#include "_vmath_nary.h"
#endif
#endif

typedef void (*fg_vm_lse_fw_t)(double *, const int *, int, const double *, const double *,
                               ptrdiff_t, ptrdiff_t);
typedef void (*fg_vm_softmax_fw_t)(double *, const double *, double, const double *,
                                   ptrdiff_t);
typedef void (*fg_vm_softmax_bw_t)(int, double *, int, double *, const double *,
                                   const double *, ptrdiff_t);
typedef void (*fg_vm_lse_bw_row_t)(int, double *, const double *, const double *,
                                   const double *, const double *, ptrdiff_t);
typedef void (*fg_vm_mul_fw_t)(double *, const double *, const double *, ptrdiff_t);
typedef void (*fg_vm_mul_bw_row_t)(int, double *, const double *, const double *, ptrdiff_t);
typedef void (*fg_vm_gput_row_t)(int, double *, const double *, ptrdiff_t);
typedef void (*fg_vm_softplus_bw_row_t)(int, double *, const double *, const double *,
                                        ptrdiff_t);

/* one table per kernel, indexed by level (a level this build lacks: the
 * plain one, never chosen: fg_vm_supported refuses it) */
#ifdef FG_VM_VECTORS
#define FG_VN_BASE(f) f##_base
#else
#define FG_VN_BASE(f) f##_plain
#endif
#ifdef FG_VM_X86
#define FG_VN_AVX2(f) f##_avx2
#define FG_VN_AVX512(f) f##_avx512
#ifdef FG_VM_WANT_W8
#define FG_VN_W8(f) f##_w8
#else
#define FG_VN_W8(f) f##_plain
#endif
#else
#define FG_VN_AVX2(f) f##_plain
#define FG_VN_AVX512(f) f##_plain
#define FG_VN_W8(f) f##_plain
#endif
#define FG_VN_TABLE(T, f) static const T f##_table[FG_VM_NLEVELS] = { \
    f##_plain, FG_VN_BASE(f), FG_VN_AVX2(f), FG_VN_AVX512(f), FG_VN_W8(f)};
FG_VN_TABLE(fg_vm_lse_fw_t, fg_vm_lse_fw)
FG_VN_TABLE(fg_vm_softmax_fw_t, fg_vm_softmax_fw)
FG_VN_TABLE(fg_vm_softmax_bw_t, fg_vm_softmax_bw)
FG_VN_TABLE(fg_vm_lse_bw_row_t, fg_vm_lse_bw_row)
FG_VN_TABLE(fg_vm_mul_fw_t, fg_vm_mul_fw)
FG_VN_TABLE(fg_vm_mul_bw_row_t, fg_vm_mul_bw_row)
FG_VN_TABLE(fg_vm_lse_fw_t, fg_vm_sum_fw)
FG_VN_TABLE(fg_vm_gput_row_t, fg_vm_gput_row)
FG_VN_TABLE(fg_vm_softplus_bw_row_t, fg_vm_softplus_bw_row)
#undef FG_VN_TABLE

static FG_VM_UNUSED void fg_vm_lse_fw(double *o, const int *refs, int cnt, const double *vs,
                                      const double *vb, ptrdiff_t ld, ptrdiff_t n)
{
    fg_vm_lse_fw_table[fg_vm_level](o, refs, cnt, vs, vb, ld, n);
}

static FG_VM_UNUSED void fg_vm_softmax_fw(double *o, const double *a, double sa,
                                          const double *b, ptrdiff_t n)
{
    fg_vm_softmax_fw_table[fg_vm_level](o, a, sa, b, n);
}

static FG_VM_UNUSED void fg_vm_softmax_bw(int ma, double *ga, int mb, double *gb,
                                          const double *o, const double *g, ptrdiff_t n)
{
    fg_vm_softmax_bw_table[fg_vm_level](ma, ga, mb, gb, o, g, n);
}

static FG_VM_UNUSED void fg_vm_lse_bw_row(int mode, double *gr, const double *x,
                                          const double *e, const double *o, const double *g,
                                          ptrdiff_t n)
{
    fg_vm_lse_bw_row_table[fg_vm_level](mode, gr, x, e, o, g, n);
}

static FG_VM_UNUSED void fg_vm_mul_fw(double *o, const double *a, const double *b, ptrdiff_t n)
{
    fg_vm_mul_fw_table[fg_vm_level](o, a, b, n);
}

static FG_VM_UNUSED void fg_vm_mul_bw_row(int mode, double *gr, const double *x,
                                          const double *g, ptrdiff_t n)
{
    fg_vm_mul_bw_row_table[fg_vm_level](mode, gr, x, g, n);
}

static FG_VM_UNUSED void fg_vm_sum_fw(double *o, const int *refs, int cnt, const double *vs,
                                      const double *vb, ptrdiff_t ld, ptrdiff_t n)
{
    fg_vm_sum_fw_table[fg_vm_level](o, refs, cnt, vs, vb, ld, n);
}

static FG_VM_UNUSED void fg_vm_gput_row(int mode, double *gr, const double *g, ptrdiff_t n)
{
    fg_vm_gput_row_table[fg_vm_level](mode, gr, g, n);
}

static FG_VM_UNUSED void fg_vm_softplus_bw_row(int mode, double *gr, const double *a,
                                               const double *g, ptrdiff_t n)
{
    fg_vm_softplus_bw_row_table[fg_vm_level](mode, gr, a, g, n);
}

#endif
