/* Dense-layer kernels of fastgrad's compiled replay: the body, compiled once
 * per instruction set by _replay_gemm.h, which defines before each include
 *
 *   FG_NAME(f)   the function name with the ISA's suffix (f##_avx512 ...)
 *   FG_TARGET    the ISA attribute (__attribute__((target("avx2"))) or empty)
 *   FG_NR        batch columns of a forward register tile
 *   FG_WI, FG_WK rows x columns of a weight-gradient register tile
 *   FG_VW        (gcc/clang) doubles per vector register: the register tiles
 *                are written with vector types (GNU C vector extensions);
 *                undefined (MSVC): plain loops, left to the auto-vectoriser
 *
 * No include guard: included once per ISA.  Every kernel computes each
 * output element with the same operations in the same order whatever the
 * ISA and tile sizes are (tiles only decide which elements are computed
 * together; reductions over the batch use FG_LANES fixed partial sums), so
 * the results are bit-identical across ISAs.  Built with -ffp-contract=off:
 * a * b + c stays two roundings, as in the eager engine.
 *
 * Data layout (the replay's): a batched value is a row of doubles, column j
 * = sample j; row r starts at base + r * ld.  Row sets are arrays of row
 * indices.
 */

#ifdef FG_VW
/* FG_VW doubles; aligned(8): loads and stores through it may be unaligned */
typedef double FG_NAME(fg_vec) __attribute__((vector_size(FG_VW * 8), aligned(8)));
#endif

/* out[r][j] (r < M, j < n) = init_r + sum_{k<K} P[r][k] * in[k][j], summed
 * in k order, then relu'd when relu != 0 (0.0 if v < 0 else v).
 *
 * P is packed in panels of FG_MR rows: P[(r / FG_MR) * K * FG_MR + k * FG_MR
 * + r % FG_MR], rows past M zero.  init_r: mode[r] == FG_ADD: the row's
 * current value; FG_STORE: init[r] (or 0.0 when init is NULL); FG_SKIP: the
 * row is not written.  mode NULL: every row FG_STORE. */
static FG_TARGET void FG_NAME(fg_gemm_rows)(
        int M, int K, const double *P, const double *init,
        const unsigned char *mode, int relu,
        const double *in, const int *in_rows,
        double *out, const int *out_rows, ptrdiff_t ld, ptrdiff_t n)
{
    ptrdiff_t j0 = 0;
    int i0, r, k, u;
    for (; j0 < n; j0 += FG_NR) {
        int w = (n - j0 >= FG_NR) ? FG_NR : (int)(n - j0);
        for (i0 = 0; i0 < M; i0 += FG_MR) {
            const double *p = P + (ptrdiff_t)i0 * K;
            double acc[FG_MR][FG_NR];
            int any = 0;
            for (r = 0; r < FG_MR; r++) {
                int m = (i0 + r < M) ? (mode ? mode[i0 + r] : FG_STORE) : FG_SKIP;
                any |= m != FG_SKIP;
                if (m == FG_ADD && w == FG_NR) {
                    const double *o = out + out_rows[i0 + r] * ld + j0;
                    for (u = 0; u < FG_NR; u++) acc[r][u] = o[u];
                } else if (m == FG_ADD) {
                    const double *o = out + out_rows[i0 + r] * ld + j0;
                    for (u = 0; u < w; u++) acc[r][u] = o[u];
                    for (; u < FG_NR; u++) acc[r][u] = 0.0;
                } else {
                    double s = (init && m != FG_SKIP) ? init[i0 + r] : 0.0;
                    for (u = 0; u < FG_NR; u++) acc[r][u] = s;
                }
            }
            if (!any) continue;
            if (w == FG_NR) {
#ifdef FG_VW
                /* the same loop on explicit vectors: FG_MR x FG_NR / FG_VW
                 * accumulators stay in registers */
                FG_NAME(fg_vec) va[FG_MR][FG_NR / FG_VW];
                for (r = 0; r < FG_MR; r++)
                    for (u = 0; u < FG_NR / FG_VW; u++)
                        memcpy(&va[r][u], &acc[r][u * FG_VW], sizeof va[r][u]);
                for (k = 0; k < K; k++) {
                    const FG_NAME(fg_vec) *x =
                        (const FG_NAME(fg_vec) *)(in + in_rows[k] * ld + j0);
                    const double *pk = p + k * FG_MR;
                    for (r = 0; r < FG_MR; r++) {
                        double s = pk[r];
                        for (u = 0; u < FG_NR / FG_VW; u++) va[r][u] += s * x[u];
                    }
                }
                for (r = 0; r < FG_MR; r++)
                    for (u = 0; u < FG_NR / FG_VW; u++)
                        memcpy(&acc[r][u * FG_VW], &va[r][u], sizeof va[r][u]);
#else
                for (k = 0; k < K; k++) {
                    const double *x = in + in_rows[k] * ld + j0;
                    const double *pk = p + k * FG_MR;
                    for (r = 0; r < FG_MR; r++) {
                        double s = pk[r];
                        for (u = 0; u < FG_NR; u++) acc[r][u] += s * x[u];
                    }
                }
#endif
            } else {
                for (k = 0; k < K; k++) {
                    const double *x = in + in_rows[k] * ld + j0;
                    const double *pk = p + k * FG_MR;
                    for (r = 0; r < FG_MR; r++) {
                        double s = pk[r];
                        for (u = 0; u < w; u++) acc[r][u] += s * x[u];
                    }
                }
            }
            for (r = 0; r < FG_MR && i0 + r < M; r++) {
                double *o;
                if (mode && mode[i0 + r] == FG_SKIP) continue;
                o = out + out_rows[i0 + r] * ld + j0;
                if (relu) {
                    for (u = 0; u < w; u++) o[u] = acc[r][u] < 0.0 ? 0.0 : acc[r][u];
                } else {
                    for (u = 0; u < w; u++) o[u] = acc[r][u];
                }
            }
        }
    }
}

/* Batch reductions of a layer's backward, added to fixed partial sums:
 * lanes[(i * K + k) * FG_LANES + j % FG_LANES] += g[i][j] * x[k][j] and
 * blanes[i * FG_LANES + j % FG_LANES] += g[i][j] (blanes may be NULL).
 * g rows: g_rows (M of them), x rows: x_rows (K).  n: columns. */
static FG_TARGET void FG_NAME(fg_gemm_lanes)(
        int M, int K, const double *g, const int *g_rows,
        const double *x, const int *x_rows, ptrdiff_t ld, ptrdiff_t n,
        double *lanes, double *blanes)
{
    ptrdiff_t nb = n - n % FG_LANES, j;
    int i0, k0, a, b, u;
    for (i0 = 0; i0 < M; i0 += FG_WI) {
        int mi = (M - i0 < FG_WI) ? M - i0 : FG_WI;
        for (k0 = 0; k0 < K; k0 += FG_WK) {
            int mk = (K - k0 < FG_WK) ? K - k0 : FG_WK;
            if (mi == FG_WI && mk == FG_WK) {
                double acc[FG_WI][FG_WK][FG_LANES];
                const double *gp[FG_WI];
                const double *xp[FG_WK];
                for (a = 0; a < FG_WI; a++) gp[a] = g + g_rows[i0 + a] * ld;
                for (b = 0; b < FG_WK; b++) xp[b] = x + x_rows[k0 + b] * ld;
                for (a = 0; a < FG_WI; a++)
                    for (b = 0; b < FG_WK; b++)
                        for (u = 0; u < FG_LANES; u++)
                            acc[a][b][u] = lanes[((ptrdiff_t)(i0 + a) * K + k0 + b)
                                                 * FG_LANES + u];
#ifdef FG_VW
                {
                    FG_NAME(fg_vec) va[FG_WI][FG_WK][FG_LANES / FG_VW];
                    memcpy(va, acc, sizeof va);
                    for (j = 0; j < nb; j += FG_LANES) {
                        FG_NAME(fg_vec) gv[FG_WI][FG_LANES / FG_VW];
                        FG_NAME(fg_vec) xv[FG_WK][FG_LANES / FG_VW];
                        for (a = 0; a < FG_WI; a++)
                            for (u = 0; u < FG_LANES / FG_VW; u++)
                                gv[a][u] = ((const FG_NAME(fg_vec) *)(gp[a] + j))[u];
                        for (b = 0; b < FG_WK; b++)
                            for (u = 0; u < FG_LANES / FG_VW; u++)
                                xv[b][u] = ((const FG_NAME(fg_vec) *)(xp[b] + j))[u];
                        for (a = 0; a < FG_WI; a++)
                            for (b = 0; b < FG_WK; b++)
                                for (u = 0; u < FG_LANES / FG_VW; u++)
                                    va[a][b][u] += gv[a][u] * xv[b][u];
                    }
                    memcpy(acc, va, sizeof va);
                }
#else
                for (j = 0; j < nb; j += FG_LANES)
                    for (a = 0; a < FG_WI; a++)
                        for (b = 0; b < FG_WK; b++)
                            for (u = 0; u < FG_LANES; u++)
                                acc[a][b][u] += gp[a][j + u] * xp[b][j + u];
#endif
                for (a = 0; a < FG_WI; a++)
                    for (b = 0; b < FG_WK; b++) {
                        for (j = nb; j < n; j++)
                            acc[a][b][j - nb] += gp[a][j] * xp[b][j];
                        for (u = 0; u < FG_LANES; u++)
                            lanes[((ptrdiff_t)(i0 + a) * K + k0 + b) * FG_LANES + u]
                                = acc[a][b][u];
                    }
            } else {
                for (a = 0; a < mi; a++)
                    for (b = 0; b < mk; b++) {
                        const double *gr = g + g_rows[i0 + a] * ld;
                        const double *xr = x + x_rows[k0 + b] * ld;
                        double *l = lanes + ((ptrdiff_t)(i0 + a) * K + k0 + b) * FG_LANES;
                        for (j = 0; j < nb; j += FG_LANES)
                            for (u = 0; u < FG_LANES; u++)
                                l[u] += gr[j + u] * xr[j + u];
                        for (j = nb; j < n; j++)
                            l[j - nb] += gr[j] * xr[j];
                    }
            }
        }
    }
    if (blanes) {
        for (a = 0; a < M; a++) {
            const double *gr = g + g_rows[a] * ld;
            double *l = blanes + (ptrdiff_t)a * FG_LANES;
            for (j = 0; j < nb; j += FG_LANES)
                for (u = 0; u < FG_LANES; u++)
                    l[u] += gr[j + u];
            for (j = nb; j < n; j++)
                l[j - nb] += gr[j];
        }
    }
}

/* The gradient rows entering a layer's backward, in place: rows whose
 * gradient nothing wrote (has[i] == 0) become 0.0; through a fused relu,
 * g = g if out > 0 else 0.0 (out: the relu's output row). */
static FG_TARGET void FG_NAME(fg_grad_in)(
        int M, const unsigned char *has, int relu,
        const double *v, double *g, const int *rows, ptrdiff_t ld, ptrdiff_t n)
{
    int i;
    ptrdiff_t j;
    for (i = 0; i < M; i++) {
        double *gr = g + rows[i] * ld;
        const double *o = v + rows[i] * ld;
        if (!has[i]) {
            for (j = 0; j < n; j++) gr[j] = 0.0;
        } else if (relu) {
            for (j = 0; j < n; j++) gr[j] = o[j] > 0.0 ? gr[j] : 0.0;
        }
    }
}
