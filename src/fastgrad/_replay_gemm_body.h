/* Dense-layer kernels of fastgrad's compiled replay: the body, compiled once
 * per instruction set by _replay_gemm.h, which defines before each include
 *
 *   FG_NAME(f)   the function name with the ISA's suffix (f##_avx2 ...)
 *   FG_TARGET    the ISA attribute (__attribute__((target("avx2"))) or empty)
 *   FG_VW        (gcc/clang) doubles per vector register; undefined: the
 *                portable build, plain C loops (MSVC's only build)
 *   FG_TR, FG_TV the register tile: FG_TR rows x FG_TV vectors (FG_TR
 *                divides FG_MR, the rows of a packed weight panel)
 *   FG_KC, FG_MC cache blocks of the rows product: FG_KC terms x FG_TV
 *                vectors of the packed B panel stay in L1, FG_MC x FG_KC
 *                weights in L2
 *   FG_MC_NARROW (optional) the row block instead of FG_MC when the
 *                product has at most 2 * FG_MC_NARROW rows
 *   FG_JC        batch columns per block of the weight-gradient product
 *
 * No include guard: included once per ISA; it undefines these parameters
 * at its end.
 *
 * The BLIS structure (Van Zee & van de Geijn 2015): loops that cut the
 * operands into cache-sized blocks around one register-tiled micro-kernel,
 * fg_tile: an FG_TR x (FG_TV vectors) block of results in registers, each
 * the sum over p of a(r, p) * b(p, column), a broadcast from the "A" operand
 * times a vector of the "B" operand, B packed into a contiguous panel first.
 * The three products of a layer are all that one kernel:
 *
 *   forward        Z = W X    A = W (packed panels), B = X rows, sum over k
 *   input grad     dX = W^T dZ  A = W^T (packed into panels of its own by
 *                             the replay; or the forward's panels read
 *                             across: trans), B = dZ rows, sum over the
 *                             layer's outputs
 *   weight grad    dW = dZ X^T  A = dZ rows, B = X^T (transposed into the
 *                             panel), sum over the batch columns
 *
 * Bit-identical results on every ISA and tile: each result is computed with
 * the same operations in the same order, whatever the ISA, tile and block
 * sizes (they only decide which results are computed together): a running
 * sum that starts at its start value and adds the rounded products a * b one
 * by one, p = 0, 1, 2, ... (a cache block stores the running sum in its
 * output and the next block reloads it: storing a double is exact).  Built
 * with -ffp-contract=off: a * b + c stays two roundings, as in the eager
 * engine.  Vectors are GNU C vector extensions; a broadcast is fg_splat_to
 * (never 0.0 + s, which turns -0.0 into +0.0).
 *
 * Data layout (the replay's): a batched value is a row of doubles, column j
 * = sample j; row r starts at base + r * ld, ld a multiple of 8 (the columns
 * from n up to ld are padding holding finite numbers: the rows products
 * compute and store whole vectors there, nothing reads them as results).
 * Row sets are arrays of row indices.  A weight matrix W (M x K) is packed
 * in panels of FG_MR rows: W[r][k] = P[(r / FG_MR) * K * FG_MR + k * FG_MR +
 * r % FG_MR] (rows past M zero).
 */

#ifdef FG_VW
/* FG_VW doubles; aligned(8): loads and stores through it may be unaligned */
typedef double FG_NAME(fg_vec) __attribute__((vector_size(FG_VW * 8), aligned(8)));
typedef long long FG_NAME(fg_veci) __attribute__((vector_size(FG_VW * 8)));
#define FG_V FG_NAME(fg_vec)
#define FG_VI FG_NAME(fg_veci)
#define FG_NR (FG_TV * FG_VW)        /* columns of a register tile */
#if FG_TV < 2 || FG_KC % FG_MR || FG_KC * FG_NR + 7 > FG_WORK || FG_JC * FG_NR + 7 > FG_WORK
#error "fastgrad: bad tile or block sizes for this ISA"
#endif

/* a vector of s (a macro, not a function returning a vector: gcc warns
 * about the ABI of 64-byte vector returns in the AVX2 build of AVX-512 tiles) */
#define fg_splat_to(v, s) do { \
        int fg_i_; \
        for (fg_i_ = 0; fg_i_ < FG_VW; fg_i_++) (v)[fg_i_] = (s); \
    } while (0)

/* Vectors per register tile for ``left`` vectors still to do: FG_TV, 2 or
 * 1 (the values FG_BY_TV has literal copies for). */
static inline FG_TARGET int FG_NAME(fg_tv)(ptrdiff_t left)
{
    return left >= FG_TV ? FG_TV : left >= 2 ? 2 : 1;
}

/* BODY(tv) with tv a literal (the tiles' loops unroll) */
#if FG_TV > 2
#define FG_BY_TV(tv, BODY) do { \
        if ((tv) == FG_TV) BODY(FG_TV); else if ((tv) == 2) BODY(2); else BODY(1); \
    } while (0)
#else
#define FG_BY_TV(tv, BODY) do { if ((tv) == 2) BODY(2); else BODY(1); } while (0)
#endif

/* The micro-kernel: acc[r][u] += sum over p < np of a_r(p) * b(p)[u] for
 * r < tr, u < tv (literals at every call: the loops unroll and acc stays in
 * registers), p in order; b(p) = the tv vectors at bp + p * tv * FG_VW (the
 * packed panel).  fg_tile: a_r(p) = a[r * sr + p * sp]; fg_tile_t (the
 * transposed weight panels): a_r(p) = a[r * FG_MR + (p / FG_MR) * sj + p %
 * FG_MR].  One pointer for the tile's rows: on AVX2 the loop needs all but
 * two of the 16 general registers otherwise.
 *
 * FG_BMEM (SSE2, AVX2): the last FG_BMEM vectors of b(p) are read from
 * memory by every row's product instead of being held in registers (the
 * empty asm with a memory clobber keeps gcc from loading them once).  With
 * all FG_TV in registers, 4 x 3 accumulators + 3 + a broadcast + a product
 * are 17 of the 16 registers and gcc spilled an accumulator: forward at H =
 * 128 over 480 columns, best of 30 interleaved rounds on Zen 3: 23.0
 * GFLOP/s with FG_BMEM 0 or 1 (gcc still spilled one: its allocator), 40.1
 * with FG_BMEM 2 (the loads are cheap: three per cycle).  gcc 12 holds the
 * 4 x 3 tile with FG_BMEM 1 in the 16 registers without a spill, and on Zen
 * 4 the loads bound the loop: the AVX2 build now uses 1 (see its block). */
#ifdef FG_BMEM
#define FG_PROD_ROW(accr, s, x, b, tv) do { \
        for (u = 0; u < (tv) - FG_BMEM; u++) (accr)[u] += (s) * (x)[u]; \
        for (; u < (tv); u++) (accr)[u] += (s) * (b)[u]; \
        __asm__ volatile("" ::: "memory"); \
    } while (0)
#define FG_LOAD_X(x, b, tv) do { \
        for (u = 0; u < (tv) - FG_BMEM; u++) (x)[u] = (b)[u]; \
    } while (0)
#else
#define FG_PROD_ROW(accr, s, x, b, tv) do { \
        for (u = 0; u < (tv); u++) (accr)[u] += (s) * (x)[u]; \
    } while (0)
#define FG_LOAD_X(x, b, tv) do { for (u = 0; u < (tv); u++) (x)[u] = (b)[u]; } while (0)
#endif

static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_tile)(
        int tr, int tv, FG_V acc[FG_TR][FG_TV], const double *a, ptrdiff_t sr,
        ptrdiff_t sp, const double *bp, int np)
{
    int p, r, u;
    for (p = 0; p < np; p++) {
        const FG_V *b = (const FG_V *)(bp + (ptrdiff_t)p * tv * FG_VW);
        FG_V x[FG_TV];
        FG_LOAD_X(x, b, tv);
        for (r = 0; r < tr; r++) {
            double s = a[r * sr + p * sp];
            FG_PROD_ROW(acc[r], s, x, b, tv);
        }
    }
}

static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_tile_t)(
        int tr, int tv, FG_V acc[FG_TR][FG_TV], const double *a, ptrdiff_t sj,
        const double *bp, int np)
{
    int p, q, r, u, nq;
    for (p = 0; p < np; p += FG_MR) {
        const double *ap = a + (ptrdiff_t)(p / FG_MR) * sj;
        const double *bq = bp + (ptrdiff_t)p * tv * FG_VW;
        nq = np - p < FG_MR ? np - p : FG_MR;
        for (q = 0; q < nq; q++) {
            const FG_V *b = (const FG_V *)(bq + (ptrdiff_t)q * tv * FG_VW);
            FG_V x[FG_TV];
            FG_LOAD_X(x, b, tv);
            for (r = 0; r < tr; r++) {
                double s = ap[r * FG_MR + q];
                FG_PROD_ROW(acc[r], s, x, b, tv);
            }
        }
    }
}

/* One register tile of fg_gemm_rows: rows i0 .. i0+tr-1 (tr <= M - i0), tv
 * vectors of columns from j0, terms p0 .. p0+np-1 of the sum (first: p0 ==
 * 0, last: p0 + np == K). */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_rows_tile)(
        int tr, int tv, int i0, int trans, int M, int K, const double *P, int p0, int np,
        int first, int last, const double *init, const double *post,
        const unsigned char *mode, int relu, const double *bp, double *out,
        const int *out_rows, ptrdiff_t ld, ptrdiff_t j0)
{
    FG_V acc[FG_TR][FG_TV];
    int r, u;
    for (r = 0; r < tr; r++) {
        int m = mode ? mode[i0 + r] : FG_STORE;
        if (!first || m == FG_ADD) {
            const FG_V *o = (const FG_V *)(out + out_rows[i0 + r] * ld + j0);
            for (u = 0; u < tv; u++) acc[r][u] = o[u];
        } else {
            FG_V s;
            fg_splat_to(s, init ? init[i0 + r] : 0.0);
            for (u = 0; u < tv; u++) acc[r][u] = s;
        }
    }
    /* the tile's rows are in one panel: i0 is a multiple of tr, which
     * divides FG_MR */
    if (trans)          /* W^T[i][p] = W[p][i]; p0 is a multiple of FG_MR */
        FG_NAME(fg_tile_t)(tr, tv, acc, P + (ptrdiff_t)(p0 / FG_MR) * M * FG_MR
                           + (ptrdiff_t)i0 * FG_MR, (ptrdiff_t)M * FG_MR, bp, np);
    else
        FG_NAME(fg_tile)(tr, tv, acc, P + (ptrdiff_t)(i0 / FG_MR) * K * FG_MR
                         + (ptrdiff_t)p0 * FG_MR + i0 % FG_MR, 1, FG_MR, bp, np);
    for (r = 0; r < tr; r++) {
        FG_V *o;
        if (mode && mode[i0 + r] == FG_SKIP) continue;
        o = (FG_V *)(out + out_rows[i0 + r] * ld + j0);
        if (last && post) {
            FG_V s;
            fg_splat_to(s, post[i0 + r]);
            for (u = 0; u < tv; u++) acc[r][u] += s;
        }
        if (last && relu) {
            for (u = 0; u < tv; u++) {
                /* 0.0 if v < 0 else v: clear the bits where v < 0 */
                FG_VI neg = acc[r][u] < 0.0;
                acc[r][u] = (FG_V)((FG_VI)acc[r][u] & ~neg);
            }
        }
        for (u = 0; u < tv; u++) o[u] = acc[r][u];
    }
}

/* the B panel of fg_gemm_rows: np rows from p0 of the tv vectors at j0 */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_pack_rows)(
        int tv, const double *in, const int *in_rows, int p0, int np, ptrdiff_t ld,
        ptrdiff_t j0, double *bp)
{
    int p, u;
    for (p = 0; p < np; p++) {
        const FG_V *x = (const FG_V *)(in + in_rows[p0 + p] * ld + j0);
        FG_V *d = (FG_V *)(bp + (ptrdiff_t)p * tv * FG_VW);
        for (u = 0; u < tv; u++) d[u] = x[u];
    }
}
#endif

#ifdef FG_VW
/* fg_gemm_rows for wide products (M * K > FG_WIDE_W weights, 512 KiB: more
 * than stay in L2).  Terms in blocks of FG_KC; then one block of columns
 * outermost (ncv vectors: as many register tiles as the scratch holds their
 * panels, one at FG_WORK 4096), its panels packed once, over all the row
 * blocks of mc, the rows in register tiles, and the block's tiles.  Narrow
 * products take the row blocks outermost and pack each panel once per row
 * block: 8 times at M = 512.  Here the weights stream once per column block
 * instead (at H = 512 the replay's chunks are 32 columns, 3 tiles: W, 2
 * MiB, comes from L3 three times per chunk instead of once and from L2
 * twice).  Each sum adds the same terms in the same order: the same bits.
 * Measured with fg_gemm_wgrad_wide: see there.  A function of its own, not
 * inlined: the narrow products' loops stay the code they were.  work:
 * aligned; mc: the row block. */
static __attribute__((noinline)) FG_TARGET void FG_NAME(fg_gemm_rows_wide)(
        int M, int K, const double *P, int trans, const double *init,
        const double *post, const unsigned char *mode, int relu,
        const double *in, const int *in_rows,
        double *out, const int *out_rows, ptrdiff_t ld, ptrdiff_t n, double *work,
        int mc)
{
    ptrdiff_t nv = (n + FG_VW - 1) / FG_VW, jv, jc, je;
    /* vectors per column block: whole register tiles whose panels fill the
     * scratch (at least one: FG_KC * FG_NR + 7 <= FG_WORK) */
    ptrdiff_t ncv = (FG_WORK - 7) / ((ptrdiff_t)FG_KC * FG_NR) * FG_TV;
    int p0, np, m0, m1, i0, first, last, tv;
    for (p0 = 0; p0 == 0 || p0 < K; p0 += FG_KC) {
        np = (K - p0 < FG_KC) ? K - p0 : FG_KC;
        first = p0 == 0;
        last = p0 + np >= K;
        for (jc = 0; jc < nv; jc += ncv) {
            je = (nv - jc < ncv) ? nv : jc + ncv;
            for (jv = jc; jv < je; jv += tv) {
                tv = FG_NAME(fg_tv)(je - jv);
                FG_NAME(fg_pack_rows)(tv, in, in_rows, p0, np, ld, jv * FG_VW,
                                      work + (jv - jc) * FG_VW * np);
            }
            for (m0 = 0; m0 < M; m0 += mc) {
                m1 = (M - m0 < mc) ? M : m0 + mc;
#define FG_TILE(tr, tvl) FG_NAME(fg_rows_tile)(tr, tvl, i0, trans, M, K, P, p0, np, \
    first, last, init, post, mode, relu, work + (jv - jc) * FG_VW * np, out, \
    out_rows, ld, jv * FG_VW)
#define FG_TILE_TR(tvl) FG_TILE(FG_TR, tvl)
#define FG_TILE_1(tvl) FG_TILE(1, tvl)
#define FG_COLS(BODY) do { \
    for (jv = jc; jv < je; jv += tv) { \
        tv = FG_NAME(fg_tv)(je - jv); \
        FG_BY_TV(tv, BODY); \
    } \
} while (0)
                for (i0 = m0; i0 + FG_TR <= m1; i0 += FG_TR) FG_COLS(FG_TILE_TR);
                for (; i0 < m1; i0++) FG_COLS(FG_TILE_1);
#undef FG_COLS
#undef FG_TILE_1
#undef FG_TILE_TR
#undef FG_TILE
            }
        }
    }
}
#endif

/* out[r][j] (r < M, j < n) = act((init_r + sum_{p<K} W[r][p] * in[p][j])
 * + post_r): the sum from init_r, adding the products in p order; post_r
 * added after it (post NULL: nothing added); act = relu (0.0 if v < 0 else
 * v) when relu != 0.  A running sum that starts at -0.0 equals one that
 * starts at its first product (-0.0 + x == x for every x).
 *
 * trans == 0: W is P, packed (see the header).  trans == 1: W is the
 * transpose of such a packing of a (K, M) matrix (a layer's backward reads
 * its forward panels: W[r][p] = P[(p / FG_MR) * M * FG_MR + r * FG_MR + p %
 * FG_MR]).  init_r: mode[r] == FG_ADD: the row's current value; FG_STORE:
 * init[r], or +0.0 when init is NULL; FG_SKIP: the row is not written.
 * mode NULL: every row FG_STORE.  work: FG_WORK doubles of scratch (the
 * caller's own: one per thread; any 8-byte alignment, see fg_align_work). */
static FG_TARGET void FG_NAME(fg_gemm_rows)(
        int M, int K, const double *P, int trans, const double *init,
        const double *post, const unsigned char *mode, int relu,
        const double *in, const int *in_rows,
        double *out, const int *out_rows, ptrdiff_t ld, ptrdiff_t n, double *work)
{
#ifdef FG_VW
    /* whole vectors up to n rounded up (within the padding of ld) */
    ptrdiff_t nv = (n + FG_VW - 1) / FG_VW, j0, jv;
    int p0, np, m0, m1, i0, first, last, tv;
#ifdef FG_MC_NARROW
    int mc = M <= 2 * FG_MC_NARROW ? FG_MC_NARROW : FG_MC;  /* see the ISA's block */
#else
    int mc = FG_MC;
#endif
    if (M <= 0) return;
    work = fg_align_work(work);      /* whole-line panel vectors: see FG_WORK */
    if ((ptrdiff_t)M * K > FG_WIDE_W) {
        FG_NAME(fg_gemm_rows_wide)(M, K, P, trans, init, post, mode, relu, in, in_rows,
                                   out, out_rows, ld, n, work, mc);
        return;
    }
    /* BLIS loops: terms in blocks of FG_KC (the B panel's depth), rows in
     * blocks of FG_MC (their weights stay in L2 over the columns), columns
     * in register tiles (the panel of B packed once per tile column and
     * used by every row tile of the block), rows in register tiles.  K == 0:
     * one pass that writes init (+ post, relu).  Wide products (more than
     * FG_WIDE_W weights): fg_gemm_rows_wide. */
    for (p0 = 0; p0 == 0 || p0 < K; p0 += FG_KC) {
        np = (K - p0 < FG_KC) ? K - p0 : FG_KC;
        first = p0 == 0;
        last = p0 + np >= K;
        for (m0 = 0; m0 < M; m0 += mc) {
            m1 = (M - m0 < mc) ? M : m0 + mc;
            for (jv = 0; jv < nv; jv += tv) {
                tv = FG_NAME(fg_tv)(nv - jv);
                j0 = jv * FG_VW;
                FG_NAME(fg_pack_rows)(tv, in, in_rows, p0, np, ld, j0, work);
#define FG_TILE(tr, tvl) FG_NAME(fg_rows_tile)(tr, tvl, i0, trans, M, K, P, p0, np, \
        first, last, init, post, mode, relu, work, out, out_rows, ld, j0)
#define FG_ROWS(tvl) do { \
        for (i0 = m0; i0 + FG_TR <= m1; i0 += FG_TR) FG_TILE(FG_TR, tvl); \
        for (; i0 < m1; i0++) FG_TILE(1, tvl); \
    } while (0)
                FG_BY_TV(tv, FG_ROWS);
#undef FG_ROWS
#undef FG_TILE
            }
        }
    }
#else
    ptrdiff_t j;
    int r, p;
    (void)work;
    for (r = 0; r < M; r++) {
        int m = mode ? mode[r] : FG_STORE;
        double *o;
        if (m == FG_SKIP) continue;
        o = out + out_rows[r] * ld;
        for (j = 0; j < n; j++) {
            double acc = (m == FG_ADD) ? o[j] : (init ? init[r] : 0.0);
            for (p = 0; p < K; p++) {
                double w = trans ? P[(ptrdiff_t)(p / FG_MR) * M * FG_MR + (ptrdiff_t)r * FG_MR
                                     + p % FG_MR]
                                 : P[(ptrdiff_t)(r / FG_MR) * K * FG_MR + (ptrdiff_t)p * FG_MR
                                     + r % FG_MR];
                acc += w * in[in_rows[p] * ld + j];
            }
            if (post) acc += post[r];
            o[j] = (relu && acc < 0.0) ? 0.0 : acc;
        }
    }
#endif
}

#ifdef FG_VW
/* The B panel of fg_gemm_wgrad: X^T, nj batch columns from jb of the x
 * rows k0 .. k0 + tv*FG_VW - 1 side by side; the virtual row K is all 1.0
 * (the bias gradient), rows past it 0.0. */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_pack_xt)(
        int tv, int K, const double *x, const int *x_rows, int k0, ptrdiff_t ld,
        ptrdiff_t jb, ptrdiff_t nj, double *bp)
{
    int c, w = tv * FG_VW;
    ptrdiff_t j;
    for (c = 0; c < w; c++) {
        double *d = bp + c;
        if (k0 + c < K) {
            const double *xr = x + x_rows[k0 + c] * ld + jb;
            for (j = 0; j < nj; j++) d[j * w] = xr[j];
        } else {
            double v = (k0 + c == K) ? 1.0 : 0.0;
            for (j = 0; j < nj; j++) d[j * w] = v;
        }
    }
}

/* One register tile of fg_gemm_wgrad: rows i0 .. i0+tr-1 of C, columns k0
 * .. k0 + tv*FG_VW - 1 (within the row's padding: see fg_gemm_wgrad). */
static inline __attribute__((always_inline)) FG_TARGET void FG_NAME(fg_wgrad_tile)(
        int tr, int tv, int i0, int k0, ptrdiff_t ldc, const double *g,
        const int *g_rows, ptrdiff_t ld, ptrdiff_t jb, ptrdiff_t nj, const double *bp,
        double *C, int fresh)
{
    FG_V acc[FG_TR][FG_TV];
    int r, u;
    for (r = 0; r < tr; r++) {
        const FG_V *c = (const FG_V *)(C + (ptrdiff_t)(i0 + r) * ldc + k0);
        if (fresh) {
            FG_V z;
            fg_splat_to(z, 0.0);
            for (u = 0; u < tv; u++) acc[r][u] = z;
        } else {
            for (u = 0; u < tv; u++) acc[r][u] = c[u];
        }
    }
    /* the tile's g rows are consecutive (see fg_gemm_wgrad) */
    FG_NAME(fg_tile)(tr, tv, acc, g + g_rows[i0] * ld + jb, ld, 1, bp, (int)nj);
    for (r = 0; r < tr; r++) {
        FG_V *c = (FG_V *)(C + (ptrdiff_t)(i0 + r) * ldc + k0);
        for (u = 0; u < tv; u++) c[u] = acc[r][u];
    }
}
/* fg_gemm_wgrad for wide sums (M * ldc > FG_WIDE_W doubles, 512 KiB: more
 * than stay in L2; H = 256 and 512).  Batch columns in blocks of FG_JC; C
 * columns in blocks of kc (whole register tiles: their block of X^T, packed
 * once as consecutive tile panels, fits FG_XT_BLOCK doubles of the
 * scratch); C rows in register tiles; and within a row tile the block's
 * columns, tile by tile: the row tile's g rows stay in L1 over the block,
 * and C is read and written along its rows.  Narrow sums take C columns
 * outermost and read C down its columns, a row stride apart: for wide ones
 * C comes from L3 at every chunk of the replay (32 columns at H = 512), and
 * perf put ~30% of the kernel's samples on the C tile's loads.  Each sum
 * adds its products in column order as before: the same bits.
 * Measured (Zen 4, demo step of MLP(2, [H, H, 1]), CPU ms per step, min of
 * 7 rounds per process, main's build and this one alternating, quiet, load
 * 1.0-1.7; notes/k40/ab_v6.txt, 2 pairs, both wide orders in the main
 * functions; ab_v7.txt, 1 pair, as here), this / main, with
 * fg_gemm_rows_wide: avx512 H = 512 N = 100 0.91 / 0.91, N = 1,000 0.89 /
 * 0.90, H = 256 N = 100 / 1,000 1.05 / 1.00 (v6); avx2 H = 512 N = 100 0.92
 * / 0.82, N = 1,000 0.98 / 0.93, H = 256 0.97 / 0.97 (v6).  A function of its
 * own, not inlined: the narrow sums' loops stay the code they were.  work:
 * aligned; n > 0; mc: rows in register tiles. */
static __attribute__((noinline)) FG_TARGET void FG_NAME(fg_gemm_wgrad_wide)(
        int M, int K, const double *g, const int *g_rows,
        const double *x, const int *x_rows, ptrdiff_t ld, ptrdiff_t n,
        double *C, int fresh, double *work, int mc)
{
    ptrdiff_t ldc = fg_wgrad_ld(K), jb, nj;
    int K1 = K + 1, k0, i0, nk, f, kb, ke, kc;
    for (jb = 0; jb < n; jb += FG_JC) {
        nj = (n - jb < FG_JC) ? n - jb : FG_JC;
        f = fresh && jb == 0;
        kc = (int)(FG_XT_BLOCK / (nj * FG_NR)) * FG_NR;
        for (kb = 0; kb < K1; kb += kc) {
            ke = (K1 - kb < kc) ? K1 : kb + kc;
            for (k0 = kb; k0 < ke; k0 += nk) {
                int tv = FG_NAME(fg_tv)((ke - k0 + FG_VW - 1) / FG_VW);
                nk = (ke - k0 < tv * FG_VW) ? ke - k0 : tv * FG_VW;
                FG_NAME(fg_pack_xt)(tv, K, x, x_rows, k0, ld, jb, nj,
                                    work + (ptrdiff_t)(k0 - kb) * nj);
            }
#define FG_TILE(tr, tvl) FG_NAME(fg_wgrad_tile)(tr, tvl, i0, k0, ldc, g, g_rows, \
        ld, jb, nj, work + (ptrdiff_t)(k0 - kb) * nj, C, f)
#define FG_TILE_TR(tvl) FG_TILE(FG_TR, tvl)
#define FG_TILE_1(tvl) FG_TILE(1, tvl)
#define FG_COLS(BODY) do { \
        for (k0 = kb; k0 < ke; k0 += nk) { \
            int tv = FG_NAME(fg_tv)((ke - k0 + FG_VW - 1) / FG_VW); \
            nk = (ke - k0 < tv * FG_VW) ? ke - k0 : tv * FG_VW; \
            FG_BY_TV(tv, BODY); \
        } \
    } while (0)
            for (i0 = 0; i0 + FG_TR <= mc; i0 += FG_TR) FG_COLS(FG_TILE_TR);
            for (; i0 < M; i0++) FG_COLS(FG_TILE_1);
#undef FG_COLS
#undef FG_TILE_1
#undef FG_TILE_TR
#undef FG_TILE
        }
    }
}
#endif

/* Weight and bias gradients of a layer over n batch columns, added in
 * column order to running sums: C[i * ldc + k] (k < K) += sum_j g[i][j] *
 * x[k][j] and C[i * ldc + K] += sum_j g[i][j] (i < M; g rows g_rows, x rows
 * x_rows), each a running sum adding the rounded products one column after
 * the other (the bias: g * 1.0).  ldc = fg_wgrad_ld(K) >= K + 1, a multiple
 * of 8: the vector builds compute and store whole vectors into the columns
 * from K + 1 up to it (0.0, nothing reads them as results).  fresh: the sums
 * start at +0.0 instead of C's current values.  work: FG_WORK doubles of
 * scratch. */
static FG_TARGET void FG_NAME(fg_gemm_wgrad)(
        int M, int K, const double *g, const int *g_rows,
        const double *x, const int *x_rows, ptrdiff_t ld, ptrdiff_t n,
        double *C, int fresh, double *work)
{
    ptrdiff_t ldc = fg_wgrad_ld(K);
#ifdef FG_VW
    int K1 = K + 1;
    ptrdiff_t jb, nj;
    int k0, i0, nk, f, mc;
    /* register tiles of FG_TR rows need consecutive g rows (a layer's
     * output rows are; otherwise one-row tiles, slower, same sums) */
    for (mc = 1; mc < M && g_rows[mc] == g_rows[0] + mc; mc++) ;
    if (mc < M) mc = 0;
    work = fg_align_work(work);      /* whole-line panel vectors: see FG_WORK */
    if (n <= 0) {
        if (fresh) memset(C, 0, sizeof(double) * (size_t)M * ldc);
        return;
    }
    if ((ptrdiff_t)M * ldc > FG_WIDE_W) {
        FG_NAME(fg_gemm_wgrad_wide)(M, K, g, g_rows, x, x_rows, ld, n, C, fresh, work, mc);
        return;
    }
    /* batch columns in blocks of FG_JC (a block of X^T is the B panel, in
     * L1), C columns in register tiles (the panel packed once for every row
     * tile), C rows in register tiles.  Wide sums (more than FG_WIDE_W
     * doubles): fg_gemm_wgrad_wide. */
    for (jb = 0; jb < n; jb += FG_JC) {
        nj = (n - jb < FG_JC) ? n - jb : FG_JC;
        f = fresh && jb == 0;
        for (k0 = 0; k0 < K1; k0 += nk) {
            int tv = FG_NAME(fg_tv)((K1 - k0 + FG_VW - 1) / FG_VW);
            nk = (K1 - k0 < tv * FG_VW) ? K1 - k0 : tv * FG_VW;
            FG_NAME(fg_pack_xt)(tv, K, x, x_rows, k0, ld, jb, nj, work);
#define FG_TILE(tr, tvl) FG_NAME(fg_wgrad_tile)(tr, tvl, i0, k0, ldc, g, g_rows, \
        ld, jb, nj, work, C, f)
#define FG_ROWS(tvl) do { \
        for (i0 = 0; i0 + FG_TR <= mc; i0 += FG_TR) FG_TILE(FG_TR, tvl); \
        for (; i0 < M; i0++) FG_TILE(1, tvl); \
    } while (0)
            FG_BY_TV(tv, FG_ROWS);
#undef FG_ROWS
#undef FG_TILE
        }
    }
#else
    ptrdiff_t j;
    int i, k;
    (void)work;
    for (i = 0; i < M; i++) {
        const double *gr = g + g_rows[i] * ld;
        for (k = 0; k <= K; k++) {
            double *c = C + (ptrdiff_t)i * ldc + k;
            double acc = fresh ? 0.0 : *c;
            if (k < K) {
                const double *xr = x + x_rows[k] * ld;
                for (j = 0; j < n; j++) acc += gr[j] * xr[j];
            } else {
                for (j = 0; j < n; j++) acc += gr[j] * 1.0;
            }
            *c = acc;
        }
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

/* The mul+add peak of this core with this build's vectors, for the
 * benchmarks' FLOP-bound ratios (a measured figure, not an assumed one):
 * FG_TR x FG_TV independent chains (as many as the register tile's
 * accumulators) of acc = acc * m + c, a multiply then a separate add (no
 * FMA, as every kernel here computes), ``iters`` steps, all in registers:
 * bound by the multiply and add pipes only.  m < 1: the chains converge,
 * nothing overflows or goes subnormal.  Returns the sum of the chains (so
 * nothing is optimised away); *flops = the FLOPs done. */
static FG_TARGET double FG_NAME(fg_peak)(long iters, double m, double *flops)
{
    long it;
    int r, u;
    double sum = 0.0, c = 1.0 - m;
#ifdef FG_VW
    FG_V acc[FG_TR][FG_TV], mv, cv, tot;
    double out[FG_VW];
    fg_splat_to(mv, m);
    fg_splat_to(cv, c);
    for (r = 0; r < FG_TR; r++)
        for (u = 0; u < FG_TV; u++) fg_splat_to(acc[r][u], r + 0.5 * u);
    for (it = 0; it < iters; it++)
        for (r = 0; r < FG_TR; r++)
            for (u = 0; u < FG_TV; u++) acc[r][u] = acc[r][u] * mv + cv;
    tot = acc[0][0];
    for (r = 0; r < FG_TR; r++)
        for (u = 0; u < FG_TV; u++)
            if (r || u) tot += acc[r][u];
    memcpy(out, &tot, sizeof(out));
    for (u = 0; u < FG_VW; u++) sum += out[u];
    *flops = 2.0 * iters * FG_TR * FG_TV * FG_VW;
#else
    double acc[FG_TR][FG_TV];
    for (r = 0; r < FG_TR; r++)
        for (u = 0; u < FG_TV; u++) acc[r][u] = r + 0.5 * u;
    for (it = 0; it < iters; it++)
        for (r = 0; r < FG_TR; r++)
            for (u = 0; u < FG_TV; u++) acc[r][u] = acc[r][u] * m + c;
    for (r = 0; r < FG_TR; r++)
        for (u = 0; u < FG_TV; u++) sum += acc[r][u];
    *flops = 2.0 * iters * FG_TR * FG_TV;
#endif
    return sum;
}

#ifdef FG_VW
#undef FG_V
#undef FG_VI
#undef FG_NR
#undef FG_BY_TV
#undef FG_PROD_ROW
#undef FG_LOAD_X
#undef fg_splat_to
#endif
/* this build's parameters, ready for the next one */
#undef FG_NAME
#undef FG_TARGET
#undef FG_TR
#undef FG_TV
#undef FG_KC
#undef FG_MC
#undef FG_MC_NARROW
#undef FG_JC
#undef FG_VW
#undef FG_BMEM
