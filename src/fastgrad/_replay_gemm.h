/* Dense-layer kernels of fastgrad's compiled replay, one build per ISA, and
 * the run-time choice between them (see _replay_layers.pxi for how layers
 * are found and _replay_gemm_body.h for the kernels).
 *
 * The body is compiled once as plain C ("portable", the only build with
 * MSVC) and, with gcc or clang, once with vector types of two doubles
 * ("baseline": SSE2 on x86-64, NEON on aarch64); on x86-64 also for AVX2 and
 * AVX-512F.  fg_isa_select(-1), run at import, picks the widest one the CPU
 * supports (__builtin_cpu_supports).  All builds give bit-identical
 * results: see the body's header.
 */
#ifndef FASTGRAD_REPLAY_GEMM_H
#define FASTGRAD_REPLAY_GEMM_H

#include <stddef.h>
#include <string.h>

#define FG_SKIP 0
#define FG_STORE 1
#define FG_ADD 2
#define FG_MR 8       /* rows of a packed weight panel (every ISA) */
#define FG_LANES 8    /* partial sums of a batch reduction (every ISA) */
#define FG_JB 512     /* columns per block of the weight-gradient kernel */
#define FG_XBLOCK 24576  /* bytes of x rows per block of that kernel (L1) */

/* The sum of FG_LANES partial sums, always in this order (a shallow tree,
 * the same in every build) */
static inline double fg_tree(const double *t)
{
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FG_X86_DISPATCH 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FG_VECTORS 1
#endif

/* portable build: plain C loops (the only one with MSVC), compiled
 * everywhere so that tests check it gives the same floats as the others */
#define FG_NAME(f) f##_plain
#define FG_TARGET
#define FG_TR 4
#define FG_NR 4
#define FG_WI 1
#define FG_WK 2
#include "_replay_gemm_body.h"   /* (undefines the parameters) */

#ifdef FG_VECTORS
/* baseline build, vector types of 2 doubles (SSE2 on x86-64, NEON on
 * aarch64) */
#define FG_NAME(f) f##_base
#define FG_TARGET
#define FG_TR 4
#define FG_NR 4
#define FG_WI 1
#define FG_WK 2
#define FG_VW 2
#include "_replay_gemm_body.h"   /* (undefines the parameters) */
#endif

#ifdef FG_X86_DISPATCH
#define FG_NAME(f) f##_avx2
#define FG_TARGET __attribute__((target("avx2")))
#define FG_TR 4
#define FG_NR 8
#define FG_WI 4
#define FG_WK 1
#define FG_VW 4
#include "_replay_gemm_body.h"   /* (undefines the parameters) */

#define FG_NAME(f) f##_avx512
#define FG_TARGET __attribute__((target("avx512f,avx512vl,avx512dq")))
#define FG_TR 8
#define FG_NR 16
#define FG_WI 4
#define FG_WK 4
#define FG_VW 8
#include "_replay_gemm_body.h"   /* (undefines the parameters) */
#endif

typedef void (*fg_gemm_rows_t)(int, int, const double *, int, const double *,
                               const unsigned char *, int, const double *,
                               const int *, double *, const int *, ptrdiff_t,
                               ptrdiff_t);
typedef void (*fg_gemm_lanes_t)(int, int, const double *, const int *,
                                const double *, const int *, ptrdiff_t,
                                ptrdiff_t, double *, double *, int, double *);
typedef void (*fg_grad_in_t)(int, const unsigned char *, int, const double *,
                             double *, const int *, ptrdiff_t, ptrdiff_t);

/* the builds, by level: 0 portable, 1 baseline vectors, 2 AVX2, 3 AVX-512
 * (NULL: not compiled in) */
#define FG_N_ISA 4
static const struct {
    fg_gemm_rows_t rows;
    fg_gemm_lanes_t lanes;
    fg_grad_in_t grad_in;
} fg_isa_table[FG_N_ISA] = {
    {fg_gemm_rows_plain, fg_gemm_lanes_plain, fg_grad_in_plain},
#ifdef FG_VECTORS
    {fg_gemm_rows_base, fg_gemm_lanes_base, fg_grad_in_base},
#else
    {NULL, NULL, NULL},
#endif
#ifdef FG_X86_DISPATCH
    {fg_gemm_rows_avx2, fg_gemm_lanes_avx2, fg_grad_in_avx2},
    {fg_gemm_rows_avx512, fg_gemm_lanes_avx512, fg_grad_in_avx512},
#else
    {NULL, NULL, NULL},
    {NULL, NULL, NULL},
#endif
};

static fg_gemm_rows_t fg_gemm_rows = fg_gemm_rows_plain;
static fg_gemm_lanes_t fg_gemm_lanes = fg_gemm_lanes_plain;
static fg_grad_in_t fg_grad_in = fg_grad_in_plain;
static int fg_isa_current = 0;

/* whether this build has ISA ``level`` and the CPU runs it */
static int fg_isa_supported(int level)
{
    if (level < 0 || level >= FG_N_ISA || fg_isa_table[level].rows == NULL) return 0;
#ifdef FG_X86_DISPATCH
    __builtin_cpu_init();
    if (level == 2) return __builtin_cpu_supports("avx2") != 0;
    if (level == 3)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq");
#endif
    return 1;
}

/* Use the kernels of ISA ``level`` (-1: the best supported); returns the
 * level now in use, or -1 (nothing changed) if it is not supported.  Not
 * meant to be called while a replay runs (tests do it in between). */
static int fg_isa_select(int level)
{
    if (level < 0) {
        level = FG_N_ISA - 1;
        while (level > 0 && !fg_isa_supported(level)) level--;
    }
    if (!fg_isa_supported(level)) return -1;
    fg_gemm_rows = fg_isa_table[level].rows;
    fg_gemm_lanes = fg_isa_table[level].lanes;
    fg_grad_in = fg_isa_table[level].grad_in;
    fg_isa_current = level;
    return level;
}

static int fg_isa_get(void) { return fg_isa_current; }

#endif
