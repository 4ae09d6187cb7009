/* Dense-layer kernels of fastgrad's compiled replay, one build per ISA, and
 * the run-time choice between them (see _replay_layers.pxi for how layers
 * are found and _replay_gemm_body.h for the kernels).
 *
 * x86-64 with gcc or clang: the body is compiled three times, for the
 * baseline (SSE2), AVX2 and AVX-512F, and fg_isa_select() picks the widest
 * one the CPU supports (__builtin_cpu_supports), unless told otherwise.
 * Elsewhere (aarch64, whose baseline NEON is what it gets; MSVC) only the
 * baseline build exists.  The three builds give bit-identical results: see
 * the body's header.
 */
#ifndef FASTGRAD_REPLAY_GEMM_H
#define FASTGRAD_REPLAY_GEMM_H

#include <stddef.h>
#include <string.h>

#define FG_SKIP 0
#define FG_STORE 1
#define FG_ADD 2
#define FG_MR 4       /* rows of a packed weight panel (every ISA) */
#define FG_LANES 8    /* partial sums of a batch reduction (every ISA) */
#define FG_JB 512     /* columns per block of the weight-gradient kernel */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FG_X86_DISPATCH 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FG_VECTORS 1
#endif

/* baseline build (SSE2 on x86-64, NEON on aarch64: 2 doubles a register) */
#define FG_NAME(f) f##_base
#define FG_TARGET
#define FG_NR 4
#define FG_WI 1
#define FG_WK 2
#ifdef FG_VECTORS
#define FG_VW 2
#endif
#include "_replay_gemm_body.h"
#undef FG_NAME
#undef FG_TARGET
#undef FG_NR
#undef FG_WI
#undef FG_WK
#undef FG_VW

#ifdef FG_X86_DISPATCH
#define FG_NAME(f) f##_avx2
#define FG_TARGET __attribute__((target("avx2")))
#define FG_NR 8
#define FG_WI 4
#define FG_WK 1
#define FG_VW 4
#include "_replay_gemm_body.h"
#undef FG_NAME
#undef FG_TARGET
#undef FG_NR
#undef FG_WI
#undef FG_WK
#undef FG_VW

#define FG_NAME(f) f##_avx512
#define FG_TARGET __attribute__((target("avx512f,avx512vl,avx512dq")))
#define FG_NR 32
#define FG_WI 4
#define FG_WK 4
#define FG_VW 8
#include "_replay_gemm_body.h"
#undef FG_NAME
#undef FG_TARGET
#undef FG_NR
#undef FG_WI
#undef FG_WK
#undef FG_VW
#endif

typedef void (*fg_gemm_rows_t)(int, int, const double *, const double *,
                               const unsigned char *, int, const double *,
                               const int *, double *, const int *, ptrdiff_t,
                               ptrdiff_t);
typedef void (*fg_gemm_lanes_t)(int, int, const double *, const int *,
                                const double *, const int *, ptrdiff_t,
                                ptrdiff_t, double *, double *, int);
typedef void (*fg_grad_in_t)(int, const unsigned char *, int, const double *,
                             double *, const int *, ptrdiff_t, ptrdiff_t);

static fg_gemm_rows_t fg_gemm_rows = fg_gemm_rows_base;
static fg_gemm_lanes_t fg_gemm_lanes = fg_gemm_lanes_base;
static fg_grad_in_t fg_grad_in = fg_grad_in_base;
static int fg_isa_current = 0;

/* ISA levels: 0 baseline, 1 AVX2, 2 AVX-512 */
static int fg_isa_supported(int level)
{
    if (level == 0) return 1;
#ifdef FG_X86_DISPATCH
    __builtin_cpu_init();
    if (level == 1) return __builtin_cpu_supports("avx2") != 0;
    if (level == 2)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

/* Use the kernels of ISA ``level`` (-1: the best supported); returns the
 * level now in use, or -1 (nothing changed) if the CPU lacks it. */
static int fg_isa_select(int level)
{
    if (level < 0) {
        level = 2;
        while (level > 0 && !fg_isa_supported(level)) level--;
    }
    if (level > 2 || !fg_isa_supported(level)) return -1;
    fg_gemm_rows = fg_gemm_rows_base;
    fg_gemm_lanes = fg_gemm_lanes_base;
    fg_grad_in = fg_grad_in_base;
#ifdef FG_X86_DISPATCH
    if (level == 1) {
        fg_gemm_rows = fg_gemm_rows_avx2;
        fg_gemm_lanes = fg_gemm_lanes_avx2;
        fg_grad_in = fg_grad_in_avx2;
    } else if (level == 2) {
        fg_gemm_rows = fg_gemm_rows_avx512;
        fg_gemm_lanes = fg_gemm_lanes_avx512;
        fg_grad_in = fg_grad_in_avx512;
    }
#endif
    fg_isa_current = level;
    return level;
}

static int fg_isa_get(void) { return fg_isa_current; }

#endif
