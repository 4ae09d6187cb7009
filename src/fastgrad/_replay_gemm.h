/* Dense-layer kernels of fastgrad's compiled replay, one build per ISA, and
 * the run-time choice between them (see _replay_layer_kernels.pxi for how
 * the replay calls them and _replay_gemm_body.h for the kernels).
 *
 * The body is compiled once as plain C ("portable", the only build with
 * MSVC) and, with gcc or clang, once with vector types of two doubles
 * ("baseline": SSE2 on x86-64, NEON on aarch64); on x86-64 also for AVX2 and
 * AVX-512F.  fg_isa_select(-1), run at import, picks the widest one the CPU
 * supports (__builtin_cpu_supports).  All builds give bit-identical
 * results: see the body's header.  A fifth build, "avx512-on-avx2" (the
 * AVX-512 build's tiles, vectors and blocks, compiled for AVX2), exists only
 * so that tests on a CPU without AVX-512 run the AVX-512 build's code
 * paths; it is never chosen by itself.
 */
#ifndef FASTGRAD_REPLAY_GEMM_H
#define FASTGRAD_REPLAY_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FG_SKIP 0
#define FG_STORE 1
#define FG_ADD 2
#define FG_MR 8       /* rows of a packed weight panel (every ISA) */
#define FG_WORK 4096  /* doubles of scratch a kernel call needs (per thread) */
/* doubles of X^T per column block of fg_gemm_wgrad (the scratch less 7 for
 * alignment) */
#define FG_XT_BLOCK (FG_WORK - 7)
#define FG_KC_ALL 256 /* FG_KC of every build (terms per block of the rows product) */
/* products with more weights (or weight-gradient sums) than this (512 KiB)
 * take the wide loop orders: see fg_gemm_rows and fg_gemm_wgrad */
#define FG_WIDE_W 65536

/* The kernels' scratch (the packed B panels), from a 64-byte boundary: the
 * micro-kernel reads every panel vector once per row tile, and a 32-byte
 * AVX2 vector at 16 mod 32 bytes crosses a cache line every other load.
 * The callers' scratch comes from np.zeros (16-byte aligned, so it sat at 0
 * or 16 mod 32 by chance, fixed per Program: the per-Program "slow mode").
 * Measured (Zen 3, AVX2, one thread, Program.batch of MLP(2, [H, H, 1])'s
 * demo step on 10,000 rows, CPU time, min of 3 interleaved rounds of 3
 * calls, 3 programs per placement, quiet, load ~1;
 * notes/a28-data/x1.py): scratch at 0 or 32 mod 64 bytes H = 64 / 128 /
 * 256: 8.9-9.2 / 30.5-31.5 / 117-120 ms, at 8, 16 or 48 mod 64: 11.1-11.2
 * / 38.8-39.5 / 149-150 ms.  The vector builds start their panels at the
 * first 64-byte boundary within ``work`` (up to 7 doubles in): FG_WORK
 * leaves room for that. */
static inline double *fg_align_work(double *work)
{
    return (double *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
}

/* row stride of fg_gemm_wgrad's sums for K inputs: K + 1 (the bias) rounded
 * up to 8 doubles (whole vectors at every ISA) */
static inline ptrdiff_t fg_wgrad_ld(int K) { return ((ptrdiff_t)K + 1 + 7) / 8 * 8; }

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FG_X86_DISPATCH 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FG_VECTORS 1
#endif

/* Tiles and blocks per ISA.  The register tile is FG_TR rows x FG_TV
 * vectors: FG_TR * FG_TV accumulators + FG_TV vectors of B + a broadcast +
 * a product must fit the vector registers (16 for SSE2 and AVX2: 12 + 3 + 1
 * + 1 is one too many, gcc takes one B vector as a memory operand; 32 for
 * AVX-512: 24 + 3 + 2).  Measured (AVX2, Zen 3, MLP layers H x H over 512
 * columns, best of 40 interleaved rounds): forward 4 x 3 38.9 GFLOP/s, 6 x 2
 * 37.6, 4 x 2 33.9, the old 4 x 2 without packing 30.4; weight gradient
 * (sums over the batch, X^T packed) 4 x 3 39-42, the old eight-lane kernel
 * 18-31; against a measured mul+add peak of 44 GFLOP/s. */

/* portable build: plain C loops (the only one with MSVC), compiled
 * everywhere so that tests check it gives the same floats as the others */
#define FG_NAME(f) f##_plain
#define FG_TARGET
#define FG_TR 4
#define FG_TV 3
#define FG_KC FG_KC_ALL
#define FG_MC 64
#define FG_JC 256
#include "_replay_gemm_body.h"   /* (undefines the parameters) */

#ifdef FG_VECTORS
/* baseline build, vector types of 2 doubles (SSE2 on x86-64, NEON on
 * aarch64) */
#define FG_NAME(f) f##_base
#define FG_TARGET
#define FG_TR 4
#define FG_TV 3
#define FG_KC FG_KC_ALL
#define FG_MC 64
#define FG_JC 256
#define FG_VW 2
#define FG_BMEM 2
#include "_replay_gemm_body.h"   /* (undefines the parameters) */
#endif

#ifdef FG_X86_DISPATCH
#define FG_NAME(f) f##_avx2
#define FG_TARGET __attribute__((target("avx2")))
#define FG_TR 4
#define FG_TV 3
#define FG_KC FG_KC_ALL
#define FG_MC 64
/* Row blocks of 128 for layers of at most 256 rows (their 128 x 256 weight
 * block, 256 KiB, still fits the 512 KiB L2): half the packings of the B
 * panel.  Measured (Zen 3, demo step of MLP(2, [H, H, 1]), min CPU ms per
 * step over 0.8-1 s, 5 alternating processes against main, quiet, load
 * 1.1-3.0; notes/k29-data/stepab.sh): with 128-row blocks for every M,
 * H = 512 N = 1,000 lost 1.8% (stepab1.txt), hence 64 above 256 rows; as
 * here (stepab2.txt, medians) H = 128 N = 100 / 1,000 -0.7% / -1.8%, H = 256
 * N = 100 / 1,000 -1.6% / -1.5% (faster in 5 of 5 pairs but H=128 N=100's
 * 4), H = 64 and 512 unchanged (the same blocks). */
#define FG_MC_NARROW 128
#define FG_JC 256
#define FG_VW 4
/* One B vector from memory (FG_BMEM 1), not two: gcc 12 then holds two B
 * vectors in ymm0/ymm1 and uses all 16 registers without a spill (12
 * accumulators + 2 + the broadcast + a product), and the 4 x 3 loop reads
 * 10 loads per term instead of 13 (FG_BMEM 3, all B from memory: 16 loads,
 * 15% slower: the loads bound this loop on Zen 4).  Measured (Zen 4, AVX2
 * kernels, the products of MLP(2, [H, H, 1])'s hidden layer over the
 * replay's chunk widths, both builds in one process through ctypes, CPU
 * time, median of 5 interleaved rounds, load 2.6-2.8;
 * notes/gx37/kbench.py, kb_variants2.txt), FG_BMEM 2 -> 1, GFLOP/s:
 * H = 128 n = 128 forward 45.9 -> 51.6, input grad 45.6 -> 50.7, weight
 * grad 42.7 -> 46.1; H = 64 n = 224 42.2 -> 46.4, 42.1 -> 46.4, 36.2 ->
 * 41.3; H = 256 n = 64 forward 39.6 -> 44.9, weight grad 38.0 -> 45.0
 * (this core's mul+add peak with 4-double vectors: 58.8).  The same
 * products in the same order: the same bits. */
#define FG_BMEM 1
#include "_replay_gemm_body.h"   /* (undefines the parameters) */

/* AVX-512: 4-double vectors (AVX-512VL), the AVX2 blocks, and 8 x 3 tiles
 * in the 32 vector registers (24 accumulators + 3 of B + a broadcast + a
 * product: no B vector read from memory).  Measured on AMD Zen 4 (EPYC
 * family 25 model 17: 512-bit ops split over 256-bit units), demo step of
 * MLP(2, [H, H, 1]) in one process, avx512 and avx2 kernels alternating
 * over 7 rounds, one CPU, quiet, load 0.9-1.0; avx512 / avx2 wall-time
 * ratios for H = 16, 32, 64, 128, 256, 512 at N = 1,000 / 10,000
 * (PYTHONPATH=src python notes/x30/isa_ab.py 16,32,64,128,256,512
 * 1000,10000 7):
 *   the former 8-double vectors, 8 x 3 tiles, KC 128, JC 128 (no narrow
 *   row blocks): 1.28/1.30 1.24/1.23 1.16/1.18 1.13/1.14 1.11/1.11
 *   0.96/0.98;
 *   8-double vectors, 8 x 2 tiles, KC 248, JC 248, narrow row blocks of
 *   128: 1.12/1.10 1.14/1.13 1.14/1.17 1.19/1.19 1.15/1.18 1.06/1.10;
 *   as here: 0.97/0.99 0.97/0.96 0.94/0.93 0.93/0.91 0.90/0.89 0.87/0.88.
 * (8-double vectors also leave twice as many columns to the narrower edge
 * tiles; FG_KC * FG_NR + 7 <= FG_WORK caps their KC at 170.) */
#define FG_NAME(f) f##_avx512
#define FG_TARGET __attribute__((target("avx512f,avx512vl,avx512dq")))
#define FG_TR 8
#define FG_TV 3
#define FG_KC FG_KC_ALL
#define FG_MC 64
#define FG_MC_NARROW 128
#define FG_JC 256
#define FG_VW 4
#include "_replay_gemm_body.h"   /* (undefines the parameters) */

/* the same, for AVX2 CPUs: tests only (16 registers: gcc spills) */
#define FG_NAME(f) f##_avx512e
#define FG_TARGET __attribute__((target("avx2")))
#define FG_TR 8
#define FG_TV 3
#define FG_KC FG_KC_ALL
#define FG_MC 64
#define FG_MC_NARROW 128
#define FG_JC 256
#define FG_VW 4
#include "_replay_gemm_body.h"   /* (undefines the parameters) */
#endif

typedef void (*fg_gemm_rows_t)(int, int, const double *, int, const double *,
                               const double *, const unsigned char *, int,
                               const double *, const int *, double *, const int *,
                               ptrdiff_t, ptrdiff_t, double *);
typedef void (*fg_gemm_wgrad_t)(int, int, const double *, const int *,
                                const double *, const int *, ptrdiff_t, ptrdiff_t,
                                double *, int, double *);
typedef void (*fg_grad_in_t)(int, const unsigned char *, int, const double *,
                             double *, const int *, ptrdiff_t, ptrdiff_t);
typedef double (*fg_peak_t)(long, double, double *);

/* the builds, by level: 0 portable, 1 baseline vectors, 2 AVX2, 3 AVX-512,
 * 4 AVX-512 tiles on AVX2 (tests) (NULL: not compiled in) */
#define FG_N_ISA 5
static const struct {
    fg_gemm_rows_t rows;
    fg_gemm_wgrad_t wgrad;
    fg_grad_in_t grad_in;
    fg_peak_t peak;
} fg_isa_table[FG_N_ISA] = {
    {fg_gemm_rows_plain, fg_gemm_wgrad_plain, fg_grad_in_plain, fg_peak_plain},
#ifdef FG_VECTORS
    {fg_gemm_rows_base, fg_gemm_wgrad_base, fg_grad_in_base, fg_peak_base},
#else
    {NULL, NULL, NULL, NULL},
#endif
#ifdef FG_X86_DISPATCH
    {fg_gemm_rows_avx2, fg_gemm_wgrad_avx2, fg_grad_in_avx2, fg_peak_avx2},
    {fg_gemm_rows_avx512, fg_gemm_wgrad_avx512, fg_grad_in_avx512, fg_peak_avx512},
    {fg_gemm_rows_avx512e, fg_gemm_wgrad_avx512e, fg_grad_in_avx512e,
     fg_peak_avx512e},
#else
    {NULL, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL},
#endif
};

static fg_gemm_rows_t fg_gemm_rows = fg_gemm_rows_plain;
static fg_gemm_wgrad_t fg_gemm_wgrad = fg_gemm_wgrad_plain;
static fg_grad_in_t fg_grad_in = fg_grad_in_plain;
static fg_peak_t fg_peak = fg_peak_plain;
static int fg_isa_current = 0;

/* whether this build has ISA ``level`` and the CPU runs it */
static int fg_isa_supported(int level)
{
    if (level < 0 || level >= FG_N_ISA || fg_isa_table[level].rows == NULL) return 0;
#ifdef FG_X86_DISPATCH
    __builtin_cpu_init();
    if (level == 2 || level == 4) return __builtin_cpu_supports("avx2") != 0;
    if (level == 3)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq");
#endif
    return 1;
}

/* Use the kernels of ISA ``level`` (-1: the best supported real ISA, 0..3);
 * returns the level now in use, or -1 (nothing changed) if it is not
 * supported.  Not meant to be called while a replay runs (tests do it in
 * between). */
static int fg_isa_select(int level)
{
    if (level < 0) {
        level = 3;
        while (level > 0 && !fg_isa_supported(level)) level--;
    }
    if (!fg_isa_supported(level)) return -1;
    fg_gemm_rows = fg_isa_table[level].rows;
    fg_gemm_wgrad = fg_isa_table[level].wgrad;
    fg_grad_in = fg_isa_table[level].grad_in;
    fg_peak = fg_isa_table[level].peak;
    fg_isa_current = level;
    return level;
}

static int fg_isa_get(void) { return fg_isa_current; }

#endif
