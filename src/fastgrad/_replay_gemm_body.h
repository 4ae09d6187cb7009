/* Dense-layer kernels of fastgrad's compiled replay: the body, compiled once
 * per instruction set by _replay_gemm.h, which defines before each include
 *
 *   FG_NAME(f)   the function name with the ISA's suffix (f##_avx512 ...)
 *   FG_TARGET    the ISA attribute (__attribute__((target("avx2"))) or empty)
 *   FG_TR, FG_NR rows x batch columns of a forward register tile (FG_TR
 *                divides FG_MR, the rows of a packed weight panel)
 *   FG_WI, FG_WK rows x columns of a weight-gradient register tile
 *   FG_VW        (gcc/clang) doubles per vector register: the register tiles
 *                are written with vector types (GNU C vector extensions);
 *                undefined (MSVC): plain loops, left to the auto-vectoriser
 *
 * No include guard: included once per ISA; it undefines these parameters
 * at its end.  Every kernel computes each
 * output element with the same operations in the same order whatever the
 * ISA and tile sizes are (tiles only decide which elements are computed
 * together; reductions over the batch use FG_LANES fixed partial sums), so
 * the results are bit-identical across ISAs.  Built with -ffp-contract=off:
 * a * b + c stays two roundings, as in the eager engine.
 *
 * Data layout (the replay's): a batched value is a row of doubles, column j
 * = sample j; row r starts at base + r * ld, ld a multiple of 8 (the
 * columns from n up to ld are padding: the row kernels may compute and
 * store whole vectors there, nothing reads them as results).  Row sets are
 * arrays of row indices.
 */

#ifdef FG_VW
/* FG_VW doubles; aligned(8): loads and stores through it may be unaligned */
typedef double FG_NAME(fg_vec) __attribute__((vector_size(FG_VW * 8), aligned(8)));
typedef long long FG_NAME(fg_veci) __attribute__((vector_size(FG_VW * 8)));
#define FG_V FG_NAME(fg_vec)
#define FG_VI FG_NAME(fg_veci)

/* One register tile of fg_gemm_rows: tr <= FG_TR rows from i0 x nv vectors
 * of columns from j0 (tr, nv and tp are literals at each call: the loops
 * unroll, the tile stays in registers); p: the tile's first weight, weight
 * (k, r) at p[k * FG_MR + r] (tp == 0) or, reading a panel of the transpose
 * (tp == 1), at p[(k / FG_MR) * M * FG_MR + k % FG_MR + r * FG_MR]. */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_rows_tile)(
        int tp, int tr, int nv, int i0, int M, int K, const double *p, const double *init,
        const unsigned char *mode, int relu, const double *in,
        const int *in_rows, double *out, const int *out_rows, ptrdiff_t ld,
        ptrdiff_t j0)
{
    FG_V acc[FG_TR][FG_NR / FG_VW];
    int r, k, u;
    for (r = 0; r < tr; r++) {
        int m = (i0 + r < M) ? (mode ? mode[i0 + r] : FG_STORE) : FG_SKIP;
        if (m == FG_ADD) {
            const FG_V *o = (const FG_V *)(out + out_rows[i0 + r] * ld + j0);
            for (u = 0; u < nv; u++) acc[r][u] = o[u];
        } else {
            double s = (init && m != FG_SKIP) ? init[i0 + r] : 0.0;
            /* -0.0 + s == s for every s: a start of -0.0 stays -0.0 (a
             * layer whose sums start at their first product) */
            for (u = 0; u < nv; u++) acc[r][u] = -(FG_V){0} + s;
        }
    }
    for (k = 0; k < K; k++) {
        const FG_V *x = (const FG_V *)(in + in_rows[k] * ld + j0);
        const double *pk = tp ? p + (ptrdiff_t)(k / FG_MR) * M * FG_MR + k % FG_MR
                              : p + k * FG_MR;
        for (r = 0; r < tr; r++) {
            double s = tp ? pk[r * FG_MR] : pk[r];
            for (u = 0; u < nv; u++) acc[r][u] += s * x[u];
        }
    }
    for (r = 0; r < tr && i0 + r < M; r++) {
        FG_V *o;
        if (mode && mode[i0 + r] == FG_SKIP) continue;
        o = (FG_V *)(out + out_rows[i0 + r] * ld + j0);
        if (relu) {
            for (u = 0; u < nv; u++) {
                /* 0.0 if v < 0 else v: clear the bits where v < 0 */
                FG_VI neg = acc[r][u] < 0.0;
                o[u] = (FG_V)((FG_VI)acc[r][u] & ~neg);
            }
        } else {
            for (u = 0; u < nv; u++) o[u] = acc[r][u];
        }
    }
}
#endif

/* out[r][j] (r < M, j < n) = init_r + sum_{k<K} W[r][k] * in[k][j], summed
 * in k order, then relu'd when relu != 0 (0.0 if v < 0 else v).
 *
 * trans == 0: W is P packed in panels of FG_MR rows: W[r][k] = P[(r / FG_MR)
 * * K * FG_MR + k * FG_MR + r % FG_MR] (rows past M zero).  trans == 1: W is
 * the transpose of such a packing of a (K, M) matrix A (a layer's backward
 * reads its forward panels): W[r][k] = A[k][r] = P[(k / FG_MR) * M * FG_MR +
 * r * FG_MR + k % FG_MR].  init_r: mode[r] == FG_ADD: the row's current
 * value; FG_STORE: init[r] (or 0.0 when init is NULL); FG_SKIP: the row is
 * not written.  mode NULL: every row FG_STORE. */
static FG_TARGET void FG_NAME(fg_gemm_rows)(
        int M, int K, const double *P, int trans, const double *init,
        const unsigned char *mode, int relu,
        const double *in, const int *in_rows,
        double *out, const int *out_rows, ptrdiff_t ld, ptrdiff_t n)
{
    int i0;
#ifdef FG_VW
    /* whole vectors up to n rounded up (within the padding of ld) */
    ptrdiff_t nv = (n + FG_VW - 1) / FG_VW * FG_VW, j0;
    /* rows in tiles of FG_TR, then the last M % FG_TR in tiles of 4, 2, 1
     * (a layer with one output does not pay for FG_TR) */
    int mt = M - M % FG_TR;
#define FG_PANEL(tp, i0) ((tp) ? P + (ptrdiff_t)(i0) * FG_MR \
        : P + (ptrdiff_t)((i0) / FG_MR) * K * FG_MR + (i0) % FG_MR)
#define FG_TILE(tp, tr, nvec) FG_NAME(fg_rows_tile)(tp, tr, nvec, i0, M, K, \
        FG_PANEL(tp, i0), init, mode, relu, in, in_rows, out, out_rows, ld, j0)
#define FG_ROWS(tp, nvec) do { \
        for (i0 = 0; i0 < mt; i0 += FG_TR) FG_TILE(tp, FG_TR, nvec); \
        if (FG_TR > 4 && M - i0 >= 4) { FG_TILE(tp, 4, nvec); i0 += 4; } \
        if (FG_TR > 2 && M - i0 >= 2) { FG_TILE(tp, 2, nvec); i0 += 2; } \
        if (M - i0 >= 1) FG_TILE(tp, 1, nvec); \
    } while (0)
    if (trans) {
        for (j0 = 0; j0 + FG_NR <= nv; j0 += FG_NR)
            FG_ROWS(1, FG_NR / FG_VW);
        for (; j0 < nv; j0 += FG_VW)
            FG_ROWS(1, 1);
    } else {
        for (j0 = 0; j0 + FG_NR <= nv; j0 += FG_NR)
            FG_ROWS(0, FG_NR / FG_VW);
        for (; j0 < nv; j0 += FG_VW)
            FG_ROWS(0, 1);
    }
#undef FG_ROWS
#undef FG_TILE
#undef FG_PANEL
#else
    ptrdiff_t j;
    int r, k;
    for (i0 = 0; i0 < M; i0++) {
        const double *p = P + (ptrdiff_t)(i0 / FG_MR) * K * FG_MR + i0 % FG_MR;
        int m = mode ? mode[i0] : FG_STORE;
        double *o;
        if (m == FG_SKIP) continue;
        o = out + out_rows[i0] * ld;
        for (j = 0; j < n; j++) {
            double acc = (m == FG_ADD) ? o[j] : (init ? init[i0] : 0.0);
            for (k = 0; k < K; k++) {
                double w = trans ? P[(ptrdiff_t)(k / FG_MR) * M * FG_MR + i0 * FG_MR
                                     + k % FG_MR]
                                 : p[k * FG_MR];
                acc += w * in[in_rows[k] * ld + j];
            }
            o[j] = (relu && acc < 0.0) ? 0.0 : acc;
        }
    }
    (void)r;
#endif
}

#if defined(FG_VW) && FG_VW == 8
#if defined(__clang__)
#define FG_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FG_SHUF(a, b, ...) __builtin_shuffle(a, b, (FG_VI){__VA_ARGS__})
#endif
/* o[i] = fg_tree(v[i]) for 8 rows of partial sums v[0..7] (one vector
 * each: FG_VW == FG_LANES).  A transposing reduction: rows are added half
 * to half and regrouped by shuffles, the same tree for each row in 14
 * shuffles and 7 adds instead of 8 x 7 scalar adds. */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_sum8)(
        const FG_V *v, double *o)
{
    FG_V a[4], b[2], out;
    int i;
    for (i = 0; i < 4; i++)   /* (t0+t4, t1+t5, t2+t6, t3+t7) of rows 2i, 2i+1 */
        a[i] = FG_SHUF(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11)
             + FG_SHUF(v[2 * i], v[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    for (i = 0; i < 2; i++)   /* (s0, s1) of rows 4i .. 4i+3 */
        b[i] = FG_SHUF(a[2 * i], a[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13)
             + FG_SHUF(a[2 * i], a[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15);
    out = FG_SHUF(b[0], b[1], 0, 2, 4, 6, 8, 10, 12, 14)   /* s0 + s1 of rows 0..7 */
        + FG_SHUF(b[0], b[1], 1, 3, 5, 7, 9, 11, 13, 15);
    memcpy(o, &out, sizeof out);
}
#undef FG_SHUF
#endif

#ifdef FG_VW
/* One register tile of fg_gemm_lanes: wi x wk (row, column) pairs, each with
 * FG_LANES partial sums (FG_LANES / FG_VW vectors), over the nb columns (a
 * multiple of FG_LANES); wi, wk are literals at each call. */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_lanes_tile)(
        int wi, int wk, int i0, int k0, int K, const double *g,
        const int *g_rows, const double *x, const int *x_rows, ptrdiff_t ld,
        ptrdiff_t nb, double *lanes, int fresh, double *sums)
{
    FG_V acc[FG_WI][FG_WK][FG_LANES / FG_VW];
    const double *gp[FG_WI];
    const double *xp[FG_WK];
    ptrdiff_t j;
    int a, b, u;
    for (a = 0; a < wi; a++) gp[a] = g + g_rows[i0 + a] * ld;
    for (b = 0; b < wk; b++) xp[b] = x + x_rows[k0 + b] * ld;
    for (a = 0; a < wi; a++)
        for (b = 0; b < wk; b++) {
            if (fresh)
                for (u = 0; u < FG_LANES / FG_VW; u++) acc[a][b][u] = (FG_V){0};
            else
                memcpy(acc[a][b],
                       lanes + ((ptrdiff_t)(i0 + a) * K + k0 + b) * FG_LANES,
                       sizeof acc[a][b]);
        }
    for (j = 0; j < nb; j += FG_LANES) {
        FG_V gv[FG_WI][FG_LANES / FG_VW];
        FG_V xv[FG_WK][FG_LANES / FG_VW];
        for (a = 0; a < wi; a++)
            for (u = 0; u < FG_LANES / FG_VW; u++)
                gv[a][u] = ((const FG_V *)(gp[a] + j))[u];
        for (b = 0; b < wk; b++)
            for (u = 0; u < FG_LANES / FG_VW; u++)
                xv[b][u] = ((const FG_V *)(xp[b] + j))[u];
        for (a = 0; a < wi; a++)
            for (b = 0; b < wk; b++)
                for (u = 0; u < FG_LANES / FG_VW; u++)
                    acc[a][b][u] += gv[a][u] * xv[b][u];
    }
    if (sums) {
        /* the last columns: the pairs' sums, not their partial sums */
        FG_V rows[FG_WI * FG_WK][FG_LANES / FG_VW];
        double o[FG_WI * FG_WK + 8];
        int np = wi * wk, q = 0;
        for (a = 0; a < wi; a++)
            for (b = 0; b < wk; b++) memcpy(rows[a * wk + b], acc[a][b], sizeof acc[a][b]);
#if FG_VW == 8
        for (; q + 8 <= np; q += 8) FG_NAME(fg_sum8)(rows[q], o + q);
#endif
        for (; q < np; q++) {
            double t[FG_LANES];
            memcpy(t, rows[q], sizeof t);
            o[q] = fg_tree(t);
        }
        for (a = 0; a < wi; a++)
            for (b = 0; b < wk; b++) sums[(ptrdiff_t)(i0 + a) * K + k0 + b] = o[a * wk + b];
        return;
    }
    for (a = 0; a < wi; a++)
        for (b = 0; b < wk; b++)
            memcpy(lanes + ((ptrdiff_t)(i0 + a) * K + k0 + b) * FG_LANES, acc[a][b],
                   sizeof acc[a][b]);
}
#endif

/* Batch reductions of a layer's backward, added to fixed partial sums:
 * lanes[(i * K + k) * FG_LANES + j % FG_LANES] += g[i][j] * x[k][j] and
 * blanes[i * FG_LANES + j % FG_LANES] += g[i][j] (blanes may be NULL), each
 * partial sum in column order.  g rows: g_rows (M of them), x rows: x_rows
 * (K).  n: columns; the vector build zeroes the rows' padding up to the
 * next multiple of FG_LANES (so g and x are written to, there only).
 * fresh: the partial sums start at 0.0 (the first column chunk of a
 * replay) instead of their current values.  sums (the last column chunk of
 * a replay) or NULL: the final sums, fg_tree of each pair's partial sums,
 * go to sums[i * K + k] (and blanes' to sums[M * K + i]) instead of the
 * partial sums (which are left stale). */
static FG_TARGET void FG_NAME(fg_gemm_lanes)(
        int M, int K, const double *g, const int *g_rows,
        const double *x, const int *x_rows, ptrdiff_t ld, ptrdiff_t n,
        double *lanes, double *blanes, int fresh, double *sums)
{
    ptrdiff_t nb = n - n % FG_LANES, j;
    int i0, k0, a, b, u;
    if (fresh && blanes) memset(blanes, 0, sizeof(double) * FG_LANES * M);
#ifdef FG_VW
    if (nb < n) {
        /* the last partial group of FG_LANES columns: zero the padding of
         * every row read, then it is whole (0.0 * 0.0 adds +0.0 to a partial
         * sum: the sums are unchanged) */
        ptrdiff_t n8 = nb + FG_LANES;
        for (a = 0; a < M; a++)
            for (j = n; j < n8; j++) ((double *)g)[g_rows[a] * ld + j] = 0.0;
        for (b = 0; b < K; b++)
            for (j = n; j < n8; j++) ((double *)x)[x_rows[b] * ld + j] = 0.0;
        nb = n = n8;
    }
    /* column blocks of FG_JB, and blocks of x rows that fit FG_XBLOCK
     * bytes: a tile's g rows stay in L1 across the x rows of the block, the
     * block's x rows across the tiles of g rows (measured, MLP(2, [128, 128,
     * 1]) at N = 100: 77 -> 90 GFLOP/s).  Blocks of fewer than 8 rows (long
     * columns) re-read the g rows too often: then one block. */
    int mi = M - M % FG_WI;
    ptrdiff_t jb, nj;
    for (jb = 0; jb < nb; jb += FG_JB) {
        const double *gb = g + jb, *xb = x + jb;
        double *sb = (jb + FG_JB >= nb) ? sums : NULL;   /* the last block */
        int f = fresh && jb == 0, kb0, kb1, mk;
        nj = (nb - jb < FG_JB) ? nb - jb : FG_JB;
        int kbs = (int)(FG_XBLOCK / (nj * (ptrdiff_t)sizeof(double)));
        kbs = kbs < 8 ? K : kbs - kbs % FG_WK;
        for (kb0 = 0; kb0 < K; kb0 = kb1) {
            kb1 = (K - kb0 > kbs) ? kb0 + kbs : K;
            mk = kb1 - (kb1 - kb0) % FG_WK;
            for (i0 = 0; i0 < mi; i0 += FG_WI) {
                for (k0 = kb0; k0 < mk; k0 += FG_WK)
                    FG_NAME(fg_lanes_tile)(FG_WI, FG_WK, i0, k0, K, gb, g_rows, xb,
                                           x_rows, ld, nj, lanes, f, sb);
                for (k0 = mk; k0 < kb1; k0++)
                    FG_NAME(fg_lanes_tile)(FG_WI, 1, i0, k0, K, gb, g_rows, xb,
                                           x_rows, ld, nj, lanes, f, sb);
            }
            for (i0 = mi; i0 < M; i0++)
                for (k0 = kb0; k0 < kb1; k0++)
                    FG_NAME(fg_lanes_tile)(1, 1, i0, k0, K, gb, g_rows, xb, x_rows,
                                           ld, nj, lanes, f, sb);
        }
    }
#else
    if (fresh) memset(lanes, 0, sizeof(double) * FG_LANES * M * K);
    for (i0 = 0; i0 < M; i0++)
        for (k0 = 0; k0 < K; k0++) {
            const double *gr = g + g_rows[i0] * ld;
            const double *xr = x + x_rows[k0] * ld;
            double *l = lanes + ((ptrdiff_t)i0 * K + k0) * FG_LANES;
            for (j = 0; j < nb; j += FG_LANES)
                for (u = 0; u < FG_LANES; u++)
                    l[u] += gr[j + u] * xr[j + u];
        }
#endif
    /* the last n % FG_LANES columns, into lanes 0.. */
    if (nb < n)
        for (a = 0; a < M; a++)
            for (b = 0; b < K; b++) {
                const double *gr = g + g_rows[a] * ld;
                const double *xr = x + x_rows[b] * ld;
                double *l = lanes + ((ptrdiff_t)a * K + b) * FG_LANES;
                for (j = nb; j < n; j++)
                    l[j - nb] += gr[j] * xr[j];
            }
    if (blanes) {
        for (a = 0; a < M; a++) {
            const double *gr = g + g_rows[a] * ld;
            double *l = blanes + (ptrdiff_t)a * FG_LANES;
#ifdef FG_VW
            /* the same sums, in registers (l may alias nothing, but the
             * compiler cannot know) */
            FG_V s[FG_LANES / FG_VW];
            memcpy(s, l, sizeof s);
            for (j = 0; j < nb; j += FG_LANES)
                for (u = 0; u < FG_LANES / FG_VW; u++)
                    s[u] += ((const FG_V *)(gr + j))[u];
            if (sums) {
                double t[FG_LANES];
                memcpy(t, s, sizeof t);
                sums[(ptrdiff_t)M * K + a] = fg_tree(t);
            } else {
                memcpy(l, s, sizeof s);
            }
#else
            for (j = 0; j < nb; j += FG_LANES)
                for (u = 0; u < FG_LANES; u++)
                    l[u] += gr[j + u];
#endif
            for (j = nb; j < n; j++)
                l[j - nb] += gr[j];
        }
    }
#ifndef FG_VW
    if (sums) {
        for (a = 0; a < M * K; a++) sums[a] = fg_tree(lanes + (ptrdiff_t)a * FG_LANES);
        if (blanes)
            for (a = 0; a < M; a++)
                sums[(ptrdiff_t)M * K + a] = fg_tree(blanes + (ptrdiff_t)a * FG_LANES);
    }
#endif
}

/* The gradient rows entering a layer's backward, in place: rows whose
 * gradient nothing wrote (has[i] == 0) become 0.0; through a fused relu,
 * g = g if out > 0 else 0.0 (out: the relu's output row; a NaN out gives
 * 0.0).  The vector builds do whole vectors, into the rows' padding. */
static FG_TARGET void FG_NAME(fg_grad_in)(
        int M, const unsigned char *has, int relu,
        const double *v, double *g, const int *rows, ptrdiff_t ld, ptrdiff_t n)
{
    int i;
    ptrdiff_t j;
#ifdef FG_VW
    ptrdiff_t nv = (n + FG_VW - 1) / FG_VW;
#endif
    for (i = 0; i < M; i++) {
        double *gr = g + rows[i] * ld;
        const double *o = v + rows[i] * ld;
        if (!has[i]) {
            for (j = 0; j < n; j++) gr[j] = 0.0;
        } else if (relu) {
#ifdef FG_VW
            FG_V *gv = (FG_V *)gr;
            const FG_V *ov = (const FG_V *)o;
            for (j = 0; j < nv; j++) {
                /* clear the bits where !(out > 0) */
                FG_VI keep = ov[j] > 0.0;
                gv[j] = (FG_V)((FG_VI)gv[j] & keep);
            }
#else
            for (j = 0; j < n; j++) gr[j] = o[j] > 0.0 ? gr[j] : 0.0;
#endif
        }
    }
}

#ifdef FG_VW
#undef FG_V
#undef FG_VI
#endif
/* this build's parameters, ready for the next one */
#undef FG_NAME
#undef FG_TARGET
#undef FG_TR
#undef FG_NR
#undef FG_WI
#undef FG_WK
#undef FG_VW
