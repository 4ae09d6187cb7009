/* The batched replay's softmax/logsumexp rows on fastgrad's
 * vector maths, one build per width: _vmath_rows.h includes this file once
 * per ISA after defining
 *
 *   FG_VN_W        doubles per vector (1, 2, 4, 8)
 *   FG_VN_SUF(f)   f with the build's suffix (f##_plain, f##_avx2 ...)
 *   FG_VN_TARGET   the ISA attribute (or empty)
 *
 * and it undefines them at its end (no include guard).
 *
 * Each kernel is the per-element loop of _replay_kernels.pxi that it
 * replaces, with the elementary function (_vmath_body.h) called on the
 * vector in registers instead of over a row buffer in a second pass: the
 * same IEEE operations on the same numbers in the same order per column,
 * so the same bits at every width (lane-wise adds, multiplies, compares,
 * selects; no FMA: the build has -ffp-contract=off).  Being C with the
 * ISA's target attribute, their loops also run at the ISA's width where
 * Cython's run at the module's baseline (SSE2 on x86-64).
 *
 *   lse_fw(o, refs, cnt, vs, vb, ld, n)
 *       OP_LOGSUMEXP over n columns (_rules.pxd: m = x_0, m = lse_max(m,
 *       x_q); t = e**(x_0 - m), t = t + e**(x_q - m); lse_finish(m, t) =
 *       m + log(t) if m is finite, else m).  Operand q is the row
 *       vb + refs[q] ld if refs[q] >= 0, else the scalar vs[-1 - refs[q]]
 *       on every column.
 *   softmax_fw(o, a, sa, b, n)   OP_SOFTMAX: o = e**(a - b), a a row, or
 *                                the scalar sa where a is NULL
 *   softmax_bw(ma, ga, mb, gb, o, g, n)   OP_SOFTMAX's op_backward on the
 *       operands' rows (mode 0 skip, 1 store 0.0 + c, 2 add c): operand a
 *       gets o g, operand b -(o g) (ga != gb: the caller checks)
 *   lse_bw_row(mode, gr, x, e, o, g, n)   an operand row's part of
 *       logsumexp's backward: nary_backward's e**(x - o) g, from the
 *       softmax row e where the plan found one (the same bits, computed by
 *       the forward), else the exponential of x - o
 *
 *   mul_fw, mul_bw_row, sum_fw, gput_row: OP_MUL's and OP_SUM's rows (below)
 *   softplus_bw_row(mode, gr, a, g, n)   OP_SOFTPLUS's operand row (below)
 *
 * The last vector of a row may be partial (n % W columns): its operands
 * are copied into zero-padded buffers and only its n % W results stored,
 * so nothing past column n is read or written.
 */

/* column vectors per block of lse_fw (below; FG_VM_LSE_BLOCK: measuring) */
#ifdef FG_VM_LSE_BLOCK
#define FG_VN_LSEB FG_VM_LSE_BLOCK
#elif FG_VN_W == 8
#define FG_VN_LSEB 2
#else
#define FG_VN_LSEB 4
#endif
#define VN FG_VN_SUF(fg_vm_vd)
#define VNU FG_VN_SUF(fg_vm_vu)
#define NFN(f) static FG_VM_UNUSED FG_VN_TARGET void FG_VN_SUF(f)
#define NIN(f) FG_VM_INLINE FG_VN_TARGET VN FG_VN_SUF(f)

#if FG_VN_W == 1
#define NSEL(c, a, b) ((c) ? (a) : (b))
#define NMASK(c) (c)
#else
/* the lanes of a where c (a comparison's all-ones lanes), else b's */
#define NSEL(c, a, b) ((VN)((((VNU)(a)) & (VNU)(c)) | (((VNU)(b)) & ~(VNU)(c))))
#define NMASK(c) (c)
#endif

/* _vmath.h's fg_vm_add, fg_vm_mul and fg_vm_neg lane by lane (the rules'
 * and the one-row path's bits): b masked to +0.0 where a is a nan; or, at
 * the SSE2, AVX2 and AVX-512 widths on x86-64 (FG_VM_PIN_ASM), one
 * addpd / mulpd in asm with a fixed operand order (lane by lane the first
 * source's nan quieted, else the second's: the scalar pins' rule, see
 * fg_vm_add_s).  These are explicit vector code, nothing for gcc to
 * vectorise. */
#if defined(FG_VM_PIN_ASM) && (FG_VN_W == 2 || FG_VN_W == 4 \
                               || (FG_VN_W == 8 && defined(FG_VN_IS_AVX512)))
#if FG_VN_W == 2
#define FG_VN_PIN(insn, a, b) \
    VN r = (a); __asm__(insn " %1, %0" : "+x"(r) : "x"(b)); return r
#elif FG_VN_W == 4
#define FG_VN_PIN(insn, a, b) \
    VN r; __asm__("v" insn " %2, %1, %0" : "=x"(r) : "x"(a), "x"(b)); return r
#else
#define FG_VN_PIN(insn, a, b) \
    VN r; __asm__("v" insn " %2, %1, %0" : "=v"(r) : "v"(a), "v"(b)); return r
#endif
NIN(fg_vn_add)(VN a, VN b) { FG_VN_PIN("addpd", a, b); }
NIN(fg_vn_mul)(VN a, VN b) { FG_VN_PIN("mulpd", a, b); }
NIN(fg_vn_neg)(VN x) { return NSEL(NMASK(x == x), -x, x); }
#undef FG_VN_PIN
#elif FG_VN_W == 1
NIN(fg_vn_add)(VN a, VN b) { return fg_vm_add(a, b); }
NIN(fg_vn_mul)(VN a, VN b) { return fg_vm_mul(a, b); }
NIN(fg_vn_neg)(VN x) { return fg_vm_neg(x); }
#elif defined(FG_VN_IS_AVX512)
/* (b zeroed under a compare's mask: two instructions, where the generic
 * form below makes gcc expand the mask to a vector first) */
#define FG_VN_ORD(a, b) ((VN)_mm512_maskz_mov_pd( \
    _mm512_cmp_pd_mask((__m512d)(a), (__m512d)(a), _CMP_ORD_Q), (__m512d)(b)))
NIN(fg_vn_add)(VN a, VN b) { return a + FG_VN_ORD(a, b); }
NIN(fg_vn_mul)(VN a, VN b) { return a * FG_VN_ORD(a, b); }
NIN(fg_vn_neg)(VN x) { return NSEL(NMASK(x == x), -x, x); }
#undef FG_VN_ORD
#else
NIN(fg_vn_add)(VN a, VN b) { return a + (VN)((VNU)b & (VNU)(a == a)); }
NIN(fg_vn_mul)(VN a, VN b) { return a * (VN)((VNU)b & (VNU)(a == a)); }
NIN(fg_vn_neg)(VN x) { return NSEL(NMASK(x == x), -x, x); }
#endif

/* a row's W columns from j (w = W: one load; w < W: the w there, zeros
 * above), or the scalar s on every lane */
NIN(fg_vn_load)(const double *p, ptrdiff_t w)
{
    VN v;
    double buf[FG_VN_W];
    if (w == FG_VN_W) {
#if FG_VN_W == 1
        return *p;
#else
        return *(const VN *)p;
#endif
    }
    memset(buf, 0, sizeof buf);
    memcpy(buf, p, (size_t)w * sizeof(double));
    memcpy(&v, buf, sizeof v);
    return v;
}

NIN(fg_vn_splat)(double s)
{
#if FG_VN_W == 1
    return s;
#else
    VN v;
    int l;
    for (l = 0; l < FG_VN_W; l++) v[l] = s;
    return v;
#endif
}

FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_store)(double *p, VN v, ptrdiff_t w)
{
    double buf[FG_VN_W];
    if (w == FG_VN_W) {
#if FG_VN_W == 1
        *p = v;
#else
        *(VN *)p = v;
#endif
        return;
    }
    memcpy(buf, &v, sizeof v);
    memcpy(p, buf, (size_t)w * sizeof(double));
}

/* operand r (a row or the scalar slot -1 - r) at columns j.. */
NIN(fg_vn_operand)(int r, const double *vs, const double *vb, ptrdiff_t ld, ptrdiff_t j,
                   ptrdiff_t w)
{
    if (r >= 0) return FG_VN_SUF(fg_vn_load)(vb + r * ld + j, w);
    return FG_VN_SUF(fg_vn_splat)(vs[-1 - r]);
}

/* lse_finish: m + log(t) where |m| < inf (nan compares false), else m */
NIN(fg_vn_lse_finish)(VN m, VN t)
{
    VN res = FG_VN_SUF(fg_vm_log)(t);
#if FG_VN_W == 1
    return isfinite(m) ? m + res : m;
#else
    VN am = (VN)((VNU)m & ((VNU){0} + 0x7FFFFFFFFFFFFFFFULL));
    return NSEL(NMASK(am < FG_VM_INF), m + res, m);
#endif
}

/* logsumexp's columns j..j+w-1 */
FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_lse_cols)(
    double *o, const int *refs, int cnt, const double *vs, const double *vb, ptrdiff_t ld,
    ptrdiff_t j, ptrdiff_t w)
{
    VN m, x, t, res;
    int q;
    m = FG_VN_SUF(fg_vn_operand)(refs[0], vs, vb, ld, j, w);
    for (q = 1; q < cnt; q++) {
        x = FG_VN_SUF(fg_vn_operand)(refs[q], vs, vb, ld, j, w);
        m = NSEL(NMASK(x > m) | NMASK(x != x), x, m);     /* lse_max */
    }
    t = FG_VN_SUF(fg_vm_exp)(FG_VN_SUF(fg_vn_operand)(refs[0], vs, vb, ld, j, w) - m);
    for (q = 1; q < cnt; q++)
        t = t + FG_VN_SUF(fg_vm_exp)(FG_VN_SUF(fg_vn_operand)(refs[q], vs, vb, ld, j, w) - m);
    res = FG_VN_SUF(fg_vn_lse_finish)(m, t);
    FG_VN_SUF(fg_vn_store)(o + j, res, w);
}

/* FG_VN_LSEB whole vectors of columns from j at once: fg_vn_lse_cols's steps,
 * each over the block's vectors before the next (the same operations on the
 * same numbers: the same bits), so that the out-of-order core overlaps the
 * block's independent exponentials and logs (one column vector's chain,
 * max -> exps -> sum -> log, is too long for it to overlap the next's).
 * Measured on Zen 4 (a C loop over a 4-operand logsumexp of 512 columns,
 * per vector against blocks, one process, min of 7 rounds, load ~1-2):
 * AVX-512 blocks of 2: 0.87-0.89 of the per-vector time, of 4: 0.89-0.91;
 * AVX2 blocks of 2 or 4: 0.77-0.83 (notes/irr41/h/lse_bench.c of the
 * working notes). */
FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_lse_block)(
    double *o, const int *refs, int cnt, const double *vs, const double *vb, ptrdiff_t ld,
    ptrdiff_t j)
{
    VN m[FG_VN_LSEB], t[FG_VN_LSEB], x;
    int q, b;
    for (b = 0; b < FG_VN_LSEB; b++)
        m[b] = FG_VN_SUF(fg_vn_operand)(refs[0], vs, vb, ld, j + b * FG_VN_W, FG_VN_W);
    for (q = 1; q < cnt; q++)
        for (b = 0; b < FG_VN_LSEB; b++) {
            x = FG_VN_SUF(fg_vn_operand)(refs[q], vs, vb, ld, j + b * FG_VN_W, FG_VN_W);
            m[b] = NSEL(NMASK(x > m[b]) | NMASK(x != x), x, m[b]);     /* lse_max */
        }
    for (b = 0; b < FG_VN_LSEB; b++)
        t[b] = FG_VN_SUF(fg_vm_exp)(FG_VN_SUF(fg_vn_operand)(refs[0], vs, vb, ld,
                                                             j + b * FG_VN_W, FG_VN_W) - m[b]);
    for (q = 1; q < cnt; q++)
        for (b = 0; b < FG_VN_LSEB; b++)
            t[b] = t[b] + FG_VN_SUF(fg_vm_exp)(FG_VN_SUF(fg_vn_operand)(
                refs[q], vs, vb, ld, j + b * FG_VN_W, FG_VN_W) - m[b]);
    for (b = 0; b < FG_VN_LSEB; b++)
        FG_VN_SUF(fg_vn_store)(o + j + b * FG_VN_W, FG_VN_SUF(fg_vn_lse_finish)(m[b], t[b]),
                               FG_VN_W);
}

NFN(fg_vm_lse_fw)(double *o, const int *refs, int cnt, const double *vs, const double *vb,
                  ptrdiff_t ld, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + FG_VN_LSEB * FG_VN_W <= n; j += FG_VN_LSEB * FG_VN_W)
        FG_VN_SUF(fg_vn_lse_block)(o, refs, cnt, vs, vb, ld, j);
    for (; j + FG_VN_W <= n; j += FG_VN_W)
        FG_VN_SUF(fg_vn_lse_cols)(o, refs, cnt, vs, vb, ld, j, FG_VN_W);
    if (j < n)
        FG_VN_SUF(fg_vn_lse_cols)(o, refs, cnt, vs, vb, ld, j, n - j);
}

FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_softmax_cols)(
    double *o, const double *a, double sa, const double *b, ptrdiff_t j, ptrdiff_t w)
{
    VN x = a != NULL ? FG_VN_SUF(fg_vn_load)(a + j, w) : FG_VN_SUF(fg_vn_splat)(sa);
    FG_VN_SUF(fg_vn_store)(o + j, FG_VN_SUF(fg_vm_exp)(x - FG_VN_SUF(fg_vn_load)(b + j, w)),
                           w);
}

NFN(fg_vm_softmax_fw)(double *o, const double *a, double sa, const double *b, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    if (a != NULL) {
        for (; j + FG_VN_W <= n; j += FG_VN_W)
            FG_VN_SUF(fg_vn_softmax_cols)(o, a, sa, b, j, FG_VN_W);
    } else {
        for (; j + FG_VN_W <= n; j += FG_VN_W)
            FG_VN_SUF(fg_vn_softmax_cols)(o, NULL, sa, b, j, FG_VN_W);
    }
    if (j < n)
        FG_VN_SUF(fg_vn_softmax_cols)(o, a, sa, b, j, n - j);
}

/* gr's columns j.. get c: mode 1 stores 0.0 + c, mode 2 adds c */
FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_put)(int mode, double *gr, VN c, ptrdiff_t j,
                                                     ptrdiff_t w)
{
    if (mode == 1)
        FG_VN_SUF(fg_vn_store)(gr + j, 0.0 + c, w);
    else
        FG_VN_SUF(fg_vn_store)(gr + j, FG_VN_SUF(fg_vn_add)(FG_VN_SUF(fg_vn_load)(gr + j, w), c),
                               w);
}

FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_softmax_bw_cols)(
    int ma, double *ga, int mb, double *gb, const double *o, const double *g, ptrdiff_t j,
    ptrdiff_t w)
{
    VN p = FG_VN_SUF(fg_vn_mul)(FG_VN_SUF(fg_vn_load)(o + j, w), FG_VN_SUF(fg_vn_load)(g + j, w));
    if (ma) FG_VN_SUF(fg_vn_put)(ma, ga, p, j, w);
    if (mb) FG_VN_SUF(fg_vn_put)(mb, gb, FG_VN_SUF(fg_vn_neg)(p), j, w);
}

NFN(fg_vm_softmax_bw)(int ma, double *ga, int mb, double *gb, const double *o,
                      const double *g, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#define FG_VN_SMB(MA, MB) \
    for (; j + FG_VN_W <= n; j += FG_VN_W) \
        FG_VN_SUF(fg_vn_softmax_bw_cols)(MA, ga, MB, gb, o, g, j, FG_VN_W);
    /* the modes as literals: one loop each */
    if (ma == 1 && mb == 2) { FG_VN_SMB(1, 2) }
    else if (ma == 2 && mb == 2) { FG_VN_SMB(2, 2) }
    else if (ma == 1 && mb == 1) { FG_VN_SMB(1, 1) }
    else if (ma == 2 && mb == 1) { FG_VN_SMB(2, 1) }
    else if (ma == 0 && mb == 2) { FG_VN_SMB(0, 2) }
    else if (ma == 0 && mb == 1) { FG_VN_SMB(0, 1) }
    else if (ma == 1 && mb == 0) { FG_VN_SMB(1, 0) }
    else if (ma == 2 && mb == 0) { FG_VN_SMB(2, 0) }
    else return;
#undef FG_VN_SMB
    if (j < n)
        FG_VN_SUF(fg_vn_softmax_bw_cols)(ma, ga, mb, gb, o, g, j, n - j);
}

FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_lse_bw_cols)(
    int mode, double *gr, const double *x, const double *e, const double *o, const double *g,
    ptrdiff_t j, ptrdiff_t w)
{
    VN ev;
    if (e != NULL)
        ev = FG_VN_SUF(fg_vn_load)(e + j, w);
    else
        ev = FG_VN_SUF(fg_vm_exp)(FG_VN_SUF(fg_vn_load)(x + j, w)
                                  - FG_VN_SUF(fg_vn_load)(o + j, w));
    FG_VN_SUF(fg_vn_put)(mode, gr, FG_VN_SUF(fg_vn_mul)(ev, FG_VN_SUF(fg_vn_load)(g + j, w)), j,
                         w);
}

NFN(fg_vm_lse_bw_row)(int mode, double *gr, const double *x, const double *e,
                      const double *o, const double *g, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#define FG_VN_LB(M, E) \
    for (; j + FG_VN_W <= n; j += FG_VN_W) \
        FG_VN_SUF(fg_vn_lse_bw_cols)(M, gr, x, E, o, g, j, FG_VN_W);
    if (e != NULL) {
        if (mode == 1) { FG_VN_LB(1, e) } else { FG_VN_LB(2, e) }
    } else {
        if (mode == 1) { FG_VN_LB(1, NULL) } else { FG_VN_LB(2, NULL) }
    }
#undef FG_VN_LB
    if (j < n)
        FG_VN_SUF(fg_vn_lse_bw_cols)(mode, gr, x, e, o, g, j, n - j);
}

/* The common ops' rows at the ISA's width (Cython's loops run at the
 * module's baseline, SSE2 on x86-64, and gcc leaves the pinned multiply's
 * loops scalar there): the same rules of _rules.pxd per column.
 *
 *   mul_fw(o, a, b, n)           OP_MUL: o = fg_vm_mul(a, b)
 *   mul_bw_row(mode, gr, x, g, n)  an OP_MUL operand's gradient row: c =
 *       fg_vm_mul(x, g), x the other operand's value row (op_backward's
 *       ga = b g, gb = a g), stored (mode 1, 0.0 + c) or added (mode 2)
 *   sum_fw(o, refs, cnt, vs, vb, ld, n)   OP_SUM: t = x_0 + 0.0, then
 *       t = fg_vm_add(t, x_q), operands as lse_fw's
 *   gput_row(mode, gr, g, n)     an OP_SUM operand's gradient row (its
 *       nary_backward is g): 0.0 + g stored, or g added
 *
 * Each row is elementwise (every column loaded before it is stored), so o
 * may be an operand's row, as in the Cython loops.  (perf on the irregular
 * workload, 1k ops, AVX-512: forward_batched, fw_nary and backward_batched,
 * whose OP_MUL loops were scalar mulsd + ucomisd, held 13.4% of the batch
 * call's samples; with these rows, they and the rows 8.3%.) */
NFN(fg_vm_mul_fw)(double *o, const double *a, const double *b, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + FG_VN_W <= n; j += FG_VN_W)
        FG_VN_SUF(fg_vn_store)(o + j, FG_VN_SUF(fg_vn_mul)(FG_VN_SUF(fg_vn_load)(a + j, FG_VN_W),
                                                           FG_VN_SUF(fg_vn_load)(b + j, FG_VN_W)),
                               FG_VN_W);
    if (j < n)
        FG_VN_SUF(fg_vn_store)(o + j, FG_VN_SUF(fg_vn_mul)(FG_VN_SUF(fg_vn_load)(a + j, n - j),
                                                           FG_VN_SUF(fg_vn_load)(b + j, n - j)),
                               n - j);
}

NFN(fg_vm_mul_bw_row)(int mode, double *gr, const double *x, const double *g, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#define FG_VN_MB(M) \
    for (; j + FG_VN_W <= n; j += FG_VN_W) \
        FG_VN_SUF(fg_vn_put)(M, gr, FG_VN_SUF(fg_vn_mul)(FG_VN_SUF(fg_vn_load)(x + j, FG_VN_W), \
                                                         FG_VN_SUF(fg_vn_load)(g + j, FG_VN_W)), \
                             j, FG_VN_W);
    if (mode == 1) { FG_VN_MB(1) } else { FG_VN_MB(2) }
#undef FG_VN_MB
    if (j < n)
        FG_VN_SUF(fg_vn_put)(mode, gr, FG_VN_SUF(fg_vn_mul)(FG_VN_SUF(fg_vn_load)(x + j, n - j),
                                                            FG_VN_SUF(fg_vn_load)(g + j, n - j)),
                             j, n - j);
}

FG_VM_INLINE FG_VN_TARGET void FG_VN_SUF(fg_vn_sum_cols)(
    double *o, const int *refs, int cnt, const double *vs, const double *vb, ptrdiff_t ld,
    ptrdiff_t j, ptrdiff_t w)
{
    VN t = FG_VN_SUF(fg_vn_operand)(refs[0], vs, vb, ld, j, w) + 0.0;
    int q;
    for (q = 1; q < cnt; q++)
        t = FG_VN_SUF(fg_vn_add)(t, FG_VN_SUF(fg_vn_operand)(refs[q], vs, vb, ld, j, w));
    FG_VN_SUF(fg_vn_store)(o + j, t, w);
}

NFN(fg_vm_sum_fw)(double *o, const int *refs, int cnt, const double *vs, const double *vb,
                  ptrdiff_t ld, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + FG_VN_W <= n; j += FG_VN_W)
        FG_VN_SUF(fg_vn_sum_cols)(o, refs, cnt, vs, vb, ld, j, FG_VN_W);
    if (j < n)
        FG_VN_SUF(fg_vn_sum_cols)(o, refs, cnt, vs, vb, ld, j, n - j);
}

NFN(fg_vm_gput_row)(int mode, double *gr, const double *g, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#define FG_VN_GP(M) \
    for (; j + FG_VN_W <= n; j += FG_VN_W) \
        FG_VN_SUF(fg_vn_put)(M, gr, FG_VN_SUF(fg_vn_load)(g + j, FG_VN_W), j, FG_VN_W);
    if (mode == 1) { FG_VN_GP(1) } else { FG_VN_GP(2) }
#undef FG_VN_GP
    if (j < n)
        FG_VN_SUF(fg_vn_put)(mode, gr, FG_VN_SUF(fg_vn_load)(g + j, n - j), j, n - j);
}

/* softplus_bw_row(mode, gr, a, g, n): the gradient row of a softplus's
 * operand, op_backward's fg_vm_mul(sigmoid(a), g), stored (mode 1, 0.0 + c)
 * or added (mode 2): the sigmoid in blocks of its two halves as its row's
 * (_vmath_rows.h, the same bits), the product and the store on the vectors
 * in registers instead of a second pass in Cython (whose pinned multiply
 * gcc left scalar). */
NFN(fg_vm_softplus_bw_row)(int mode, double *gr, const double *a, const double *g,
                           ptrdiff_t n)
{
    enum { TB = FG_VM_TB };       /* (the sigmoid row's block) */
    ptrdiff_t j = 0;
    int b;
    VN nh[TB], nl[TB], dh[TB], dl[TB], f1[TB], f2[TB];
#define FG_VN_SPB(M) \
    for (; j + TB * FG_VN_W <= n; j += TB * FG_VN_W) { \
        for (b = 0; b < TB; b++) \
            FG_VN_SUF(fg_vm_sigmoid_a)(FG_VN_SUF(fg_vn_load)(a + j + b * FG_VN_W, FG_VN_W), \
                                       &nh[b], &nl[b], &dh[b], &dl[b], &f1[b], &f2[b]); \
        for (b = 0; b < TB; b++) \
            FG_VN_SUF(fg_vn_put)(M, gr, FG_VN_SUF(fg_vn_mul)( \
                FG_VN_SUF(fg_vm_sigmoid_b)(nh[b], nl[b], dh[b], dl[b], f1[b], f2[b]), \
                FG_VN_SUF(fg_vn_load)(g + j + b * FG_VN_W, FG_VN_W)), j + b * FG_VN_W, FG_VN_W); \
    } \
    for (; j + FG_VN_W <= n; j += FG_VN_W) \
        FG_VN_SUF(fg_vn_put)(M, gr, FG_VN_SUF(fg_vn_mul)( \
            FG_VN_SUF(fg_vm_sigmoid)(FG_VN_SUF(fg_vn_load)(a + j, FG_VN_W)), \
            FG_VN_SUF(fg_vn_load)(g + j, FG_VN_W)), j, FG_VN_W);
    if (mode == 1) { FG_VN_SPB(1) } else { FG_VN_SPB(2) }
#undef FG_VN_SPB
    if (j < n)
        FG_VN_SUF(fg_vn_put)(mode, gr, FG_VN_SUF(fg_vn_mul)(
            FG_VN_SUF(fg_vm_sigmoid)(FG_VN_SUF(fg_vn_load)(a + j, n - j)),
            FG_VN_SUF(fg_vn_load)(g + j, n - j)), j, n - j);
}

#undef VN
#undef VNU
#undef NFN
#undef NIN
#undef NSEL
#undef NMASK
#undef FG_VN_W
#undef FG_VN_SUF
#undef FG_VN_TARGET
#undef FG_VN_LSEB
