/* fastgrad's elementary functions, written once over a vector type: the
 * body.  _vmath.h includes it once per width, after defining
 *
 *   FG_VM_W       doubles per vector: 1 (plain double, every compiler), or
 *                 2, 4, 8 (GNU C vector extensions, gcc/clang)
 *   FG_VM_SUF(f)  f with the build's suffix (f##_plain, f##_avx2 ...)
 *   FG_VM_TARGET  the ISA attribute (__attribute__((target("avx2"))) or empty)
 *
 * and undefines them (and this file's own macros) at its end.  No include
 * guard: included once per width.
 *
 * Why the bits are the same at every width: each function is a fixed
 * sequence of IEEE additions, multiplications and one division (each rounded
 * once, round-to-nearest; the builds use -ffp-contract=off, so a*b+c is
 * never fused), exact bit operations, table reads and lane-wise selects.
 * Nothing depends on which lanes share a vector; no instruction whose result
 * differs between ISAs (no rsqrt/rcp approximations, no FMA).  Rounding to
 * an integer adds 1.5*2^52 (an exact trick, the same under every ISA).
 *
 * The algorithms (one error analysis each, measured in _vmath.h's header):
 *
 * exp   x = k ln2/128 + r, k = 128 m + j, |r| <= ln2/256 (Cody-Waite: k C_HI
 *       exact, C_LO the rest); e^x = 2^m 2^(j/128) e^r with 2^(j/128) =
 *       TH + TL from a table and e^r = 1 + r + q(r), q a Taylor polynomial
 *       of degree 5 (6 for expm1).  The result is TH + (small terms), one
 *       rounding, scaled by 2^m as two exact powers of two (so results in
 *       the subnormal range are rounded once more, at the last multiply,
 *       and overflow gives inf).
 * expm1 the same reduction; 2^(j/128) e^r - 2^-m summed in double-double:
 *       TH has 26 significant bits and r's head 27, so TH * r_head is exact;
 *       two TwoSums keep the rest, which makes the relative error small
 *       also where e^x - 1 cancels.
 * tanh  a = |x|, three ranges, one division, computed in every lane and
 *       selected (sign copied from x at the end):
 *       a < T1 = 0.2555 (tanh < 1/4 + 2^-15): a + a^3 R(a^2), R = P/Q a
 *         rational fit of degree 2/2 (to 2^-59 of tanh);
 *       otherwise from S = 1 + e^(2a) = sh + sl in double-double (e^(2a) as
 *         exp's double-double, 2a clamped to 40: tanh(20) rounds to 1):
 *         tanh a = 1 - 2/S = c - (2 - h S)/S with h = 1/2, c = 1/2 for
 *         a < T2 = 0.5494 (tanh in [1/4, 1/2]) and h = 0, c = 1 above.
 *         q = (2 - h sh)/sh is one rounded division (2 - h sh exact,
 *         Sterbenz); q <= c/2, so its rounding error is at most a quarter
 *         ulp of the result; c - q is summed exactly (Fast2Sum) with the
 *         first-order term of sl, sl (2/sh)^2 / 2 (2/sh = q + h), and
 *         rounded once.  Error: 1/2 (last rounding) + 1/4 (q) + ~2^-10 ulp
 *         (e^(2a) to ~2^-60); below T1, 1/2 + the rational's ~5 roundings
 *         in a term < 0.022 of the result.  Measured max: 0.7547 ulp
 *         (10.2 million points, _vmath.h; so the small terms reach ~2^-8).
 * sigmoid  t = e^-|x| in double-double; 1/(1+t) for x >= 0, t/(1+t) below
 *       (the stable two-branch form, both branches in one expression).
 * log   x = 2^k z, z in [0.6875, 1.375) in one of 128 sub-intervals with a
 *       20-bit invc ~ 1/c; log x = k ln2 + (-log invc) + log1p(z invc - 1):
 *       z invc - 1 is exact (z split into a 33-bit head and the rest), the
 *       sub-intervals next to 1 have invc = 1; log1p(r) - r is a degree-8
 *       Taylor polynomial (|r| < 2^-7); the sum is kept in double-double.
 * log1p u = 1 + x as an exact sum uh + ul; log of that double-double (ul
 *       joins the reduced argument r exactly).
 * softplus  max(x, 0) + log1p(e^-|x|), e^-|x| and the log1p in double-double.
 */

#if FG_VM_W == 1
typedef double FG_VM_SUF(fg_vm_vd);
typedef unsigned long long FG_VM_SUF(fg_vm_vu);
#else
/* aligned(8), as _replay_gemm_body.h's FG_V: loads and stores through them
 * may be unaligned, and no 64-byte-aligned argument meets gcc's -Wpsabi
 * note in the 8-wide build for AVX2 */
typedef double FG_VM_SUF(fg_vm_vd) __attribute__((vector_size(FG_VM_W * 8), aligned(8)));
typedef unsigned long long FG_VM_SUF(fg_vm_vu)
    __attribute__((vector_size(FG_VM_W * 8), aligned(8)));
#endif
#define VD FG_VM_SUF(fg_vm_vd)
#define VU FG_VM_SUF(fg_vm_vu)
#define FN(f) FG_VM_INLINE FG_VM_TARGET VD FG_VM_SUF(f)
#define SUB(f) FG_VM_INLINE FG_VM_TARGET void FG_VM_SUF(f)

/* bit casts, lane masks (all ones where true), selects, table reads */
#if FG_VM_W == 1
FG_VM_INLINE VU FG_VM_SUF(fg_vm_asu)(VD x) { VU u; memcpy(&u, &x, 8); return u; }
FG_VM_INLINE VD FG_VM_SUF(fg_vm_asd)(VU u) { VD x; memcpy(&x, &u, 8); return x; }
#define ASU(x) FG_VM_SUF(fg_vm_asu)(x)
#define ASD(u) FG_VM_SUF(fg_vm_asd)(u)
#define MASK(c) ((VU)0 - (VU)(c))
#define SEL(m, a, b) ((m) ? (a) : (b))
#define SELU(m, a, b) ((m) ? (a) : (b))
#define SPLAT(c) (c)
#define GATHER(tab, idx) ((tab)[idx])
#else
#define ASU(x) ((VU)(x))
#define ASD(u) ((VD)(u))
#define MASK(c) ((VU)(c))
#if FG_VM_W == 4 && defined(FG_VM_X86)
/* one vblendvpd: every mask here is all ones or all zeros per lane, so the
 * same bits as the and/or form below, in 1 instruction instead of 3.
 * Measured with `benchmarks/bench_vmath.py functions` (AVX2 rows of 10,000
 * doubles, CPU time, this build against the one before, alternating
 * processes): exp 2.30 -> 2.08 ns per element, log 3.92 -> 3.37, log1p
 * 5.01 -> 4.21 (their algorithms unchanged). */
#define SEL(m, a, b) ((VD)_mm256_blendv_pd((__m256d)(VD)(b), (__m256d)(VD)(a), (__m256d)(m)))
#else
#define SEL(m, a, b) ASD((ASU(a) & (m)) | (ASU(b) & ~(m)))
#endif
#define SELU(m, a, b) (((a) & (m)) | ((b) & ~(m)))
/* c - (+0.0) is c for every c, -0.0 included (0.0 + c is not) */
#define SPLAT(c) ((c) - (VD){0})
FG_VM_INLINE FG_VM_TARGET VD FG_VM_SUF(fg_vm_gather)(const double *tab, VU idx)
{
    VD r;
    int l;
    for (l = 0; l < FG_VM_W; l++) r[l] = tab[idx[l]];
    return r;
}
#define GATHER(tab, idx) FG_VM_SUF(fg_vm_gather)(tab, idx)
#endif

/* Table reads: *a = tab[2 i], *b = tab[2 i + 1] (the exp table's pairs), and
 * *a, *b, *c = tab[4 i], tab[4 i + 1], tab[4 i + 2] (the log table's rows).
 * Plain loads, moved into lanes with x86 shuffles where the build has them
 * (data movement only: the same numbers as the lane loop; measured with the
 * tanh row on AVX2, 5.0 -> 4.6 ns per element, the exp row 2.5 -> 2.2).
 * The AVX-512 build's (FG_VM_AVX512; not the 8-wide body for AVX2, whose
 * 512-bit shuffles gcc would have to split): 128-bit pairs / 256-bit rows
 * inserted into 512-bit vectors, then unpacked / permuted, where gcc made
 * 16 (24) masked broadcasts with their index extracts of the lane loop.
 * Measured on Zen 4 (a C loop over rows of 10,000 doubles, _vmath_rows.h's
 * row functions, this against the lane loop, quiet machine): tanh 3.2 ->
 * 2.4 ns per element, sigmoid 3.2 -> 2.2, exp 1.9 -> 1.4, log 2.8 -> 2.2,
 * log1p 3.3 -> 2.6, softplus 6.4 -> 5.6 (notes/th36 of the working notes). */
FG_VM_INLINE FG_VM_TARGET void FG_VM_SUF(fg_vm_read2)(const double *tab, VU i, VD *a, VD *b)
{
#if FG_VM_W == 4 && defined(FG_VM_X86)
    __m256d p = _mm256_loadu2_m128d(tab + 2 * i[2], tab + 2 * i[0]);
    __m256d q = _mm256_loadu2_m128d(tab + 2 * i[3], tab + 2 * i[1]);
    *a = (VD)_mm256_unpacklo_pd(p, q);
    *b = (VD)_mm256_unpackhi_pd(p, q);
#elif FG_VM_W == 8 && defined(FG_VM_X86) && defined(FG_VM_AVX512)
    /* pairs 0, 2, 4, 6 and 1, 3, 5, 7 in the 128-bit lanes of p and q */
#define IX(k) (2 * i[k])
    __m512d p = _mm512_castpd128_pd512(_mm_loadu_pd(tab + IX(0)));
    __m512d q = _mm512_castpd128_pd512(_mm_loadu_pd(tab + IX(1)));
    p = _mm512_insertf64x2(p, _mm_loadu_pd(tab + IX(2)), 1);
    q = _mm512_insertf64x2(q, _mm_loadu_pd(tab + IX(3)), 1);
    p = _mm512_insertf64x2(p, _mm_loadu_pd(tab + IX(4)), 2);
    q = _mm512_insertf64x2(q, _mm_loadu_pd(tab + IX(5)), 2);
    p = _mm512_insertf64x2(p, _mm_loadu_pd(tab + IX(6)), 3);
    q = _mm512_insertf64x2(q, _mm_loadu_pd(tab + IX(7)), 3);
#undef IX
    *a = (VD)_mm512_unpacklo_pd(p, q);
    *b = (VD)_mm512_unpackhi_pd(p, q);
#elif FG_VM_W == 2 && defined(FG_VM_X86)
    __m128d p = _mm_loadu_pd(tab + 2 * i[0]), q = _mm_loadu_pd(tab + 2 * i[1]);
    *a = (VD)_mm_unpacklo_pd(p, q);
    *b = (VD)_mm_unpackhi_pd(p, q);
#else
    *a = GATHER(tab, i << 1);
    *b = GATHER(tab, (i << 1) | 1);
#endif
}

FG_VM_INLINE FG_VM_TARGET void FG_VM_SUF(fg_vm_read3)(const double *tab, VU i, VD *a, VD *b,
                                                      VD *c)
{
#if FG_VM_W == 4 && defined(FG_VM_X86)
    /* four rows of 4, transposed */
    __m256d r0 = _mm256_loadu_pd(tab + 4 * i[0]), r1 = _mm256_loadu_pd(tab + 4 * i[1]);
    __m256d r2 = _mm256_loadu_pd(tab + 4 * i[2]), r3 = _mm256_loadu_pd(tab + 4 * i[3]);
    __m256d l01 = _mm256_unpacklo_pd(r0, r1), h01 = _mm256_unpackhi_pd(r0, r1);
    __m256d l23 = _mm256_unpacklo_pd(r2, r3), h23 = _mm256_unpackhi_pd(r2, r3);
    *a = (VD)_mm256_permute2f128_pd(l01, l23, 0x20);
    *b = (VD)_mm256_permute2f128_pd(h01, h23, 0x20);
    *c = (VD)_mm256_permute2f128_pd(l01, l23, 0x31);
#elif FG_VM_W == 8 && defined(FG_VM_X86) && defined(FG_VM_AVX512)
    /* rows k and k + 4 in the two halves of Rk, then the 4-wide transpose
     * in each half, and the halves' pairs gathered in order */
#define ROWS2(k) _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_loadu_pd(tab + 4 * i[k])), \
                                    _mm256_loadu_pd(tab + 4 * i[(k) + 4]), 1)
    __m512d R0 = ROWS2(0), R1 = ROWS2(1), R2 = ROWS2(2), R3 = ROWS2(3);
#undef ROWS2
    __m512d l01 = _mm512_unpacklo_pd(R0, R1), h01 = _mm512_unpackhi_pd(R0, R1);
    __m512d l23 = _mm512_unpacklo_pd(R2, R3), h23 = _mm512_unpackhi_pd(R2, R3);
    __m512i even = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    __m512i odd = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    *a = (VD)_mm512_permutex2var_pd(l01, even, l23);
    *b = (VD)_mm512_permutex2var_pd(h01, even, h23);
    *c = (VD)_mm512_permutex2var_pd(l01, odd, l23);
#elif FG_VM_W == 2 && defined(FG_VM_X86)
    __m128d p0 = _mm_loadu_pd(tab + 4 * i[0]), q0 = _mm_loadu_pd(tab + 4 * i[1]);
    __m128d p1 = _mm_loadu_pd(tab + 4 * i[0] + 2), q1 = _mm_loadu_pd(tab + 4 * i[1] + 2);
    *a = (VD)_mm_unpacklo_pd(p0, q0);
    *b = (VD)_mm_unpackhi_pd(p0, q0);
    *c = (VD)_mm_unpacklo_pd(p1, q1);
#else
    *a = GATHER(tab, i << 2);
    *b = GATHER(tab, (i << 2) | 1);
    *c = GATHER(tab, (i << 2) | 2);
#endif
}

#define SIGN 0x8000000000000000ULL

/* s + e = a + b exactly (Knuth's TwoSum: any a, b) */
#define TWOSUM(a, b, s, e) do { VD a_ = (a), b_ = (b), bb_; \
        s = a_ + b_; bb_ = s - a_; e = (a_ - (s - bb_)) + (b_ - bb_); } while (0)
/* the same when |a| >= |b| or a == 0 (Dekker's Fast2Sum) */
#define FAST2SUM(a, b, s, e) do { VD a_ = (a), b_ = (b); \
        s = a_ + b_; e = b_ - (s - a_); } while (0)
/* a = hi + lo, hi with 53 - s significant bits (Veltkamp; C = 2^s + 1) */
#define SPLIT(a, C, hi, lo) do { VD a_ = (a), c_ = a_ * (C); \
        hi = c_ - (c_ - a_); lo = a_ - hi; } while (0)
/* hi = a rounded to 26 significant bits (Veltkamp's head, C = 2^27 + 1) */
#define SHORT(a, hi) do { VD a_ = (a), c_ = a_ * 134217729.0; \
        hi = c_ - (c_ - a_); } while (0)


/* The exp reduction of x (in [-746, 710], or nan): x = k ln2/128 + rh - kcl,
 * k = 128 m + j; TH + TL = 2^(j/128); r = rh - kcl rounded; q = e^r - 1 - r
 * to 2^-60.5 (deg6 == 0: degree 5, for results near 1) or to 2^-63 |r|
 * (deg6 == 1: degree 6, for expm1, whose result may be as small as r).
 * M = m + 2048 (so that it is never negative). */
SUB(fg_vm_exp_reduce)(VD x, int deg6, VD *th, VD *tl, VD *rh, VD *kcl, VD *r, VD *q,
                      VU *M)
{
    VD t = x * FG_VM_INVLN2N + FG_VM_SHIFT;   /* k + 1.5*2^52: k rounded */
    VD kd = t - FG_VM_SHIFT;                  /* k, exactly */
    VU u = ASU(t);                            /* bits: 0x4338... + k */
    VU j = u & 127;
    VD rr;
    *M = (u - 0x4338000000000000ULL + 2048 * 128 - j) >> 7;
    *rh = x - kd * FG_VM_C_HI;                /* exact (k C_HI exact, Sterbenz) */
    *kcl = kd * FG_VM_C_LO;
    rr = *rh - *kcl;
    *r = rr;
    FG_VM_SUF(fg_vm_read2)(fg_vm_exp_tab, j, th, tl);
    if (deg6)
        *q = (rr * rr) * (FG_VM_P2 + rr * (FG_VM_P3 + rr * (FG_VM_P4 + rr * (FG_VM_P5
                                                                     + rr * FG_VM_P6))));
    else
        *q = (rr * rr) * (FG_VM_P2 + rr * (FG_VM_P3 + rr * (FG_VM_P4 + rr * FG_VM_P5)));
}

/* 2^m as two factors 2^m1 * 2^m2 (m1 = floor(m/2)), both normal for every m
 * of the exp reduction: v * s1 * s2 is exact until the last multiply, which
 * rounds (subnormal results) or overflows once */
SUB(fg_vm_scale2)(VU M, VD *s1, VD *s2)
{
    VU h = M >> 1;
    *s1 = ASD((h - 1) << 52);
    *s2 = ASD((M - h - 1) << 52);
}

/* e^x = 2^m (hi + lo) in double-double, x in [-746, 710] or nan */
SUB(fg_vm_exp_dd)(VD x, VD *hi, VD *lo, VU *M)
{
    VD th, tl, rh, kcl, r, q, w, l;
    FG_VM_SUF(fg_vm_exp_reduce)(x, 0, &th, &tl, &rh, &kcl, &r, &q, M);
    w = r + q;                                   /* e^r - 1 */
    l = tl + (th * w + tl * w);
    FAST2SUM(th, l, *hi, *lo);                   /* |l| < 0.01 th */
}

/* e^x - 1 = 2^m (hi + lo) in double-double, x in [-40, 710] or nan */
SUB(fg_vm_expm1_dd)(VD x, VD *hi, VD *lo, VU *M)
{
    VD th, tl, rh, kcl, r, q, w, r1, r2, p1, small, pm, ah, al, bh, bl;
    VU Mc;
    FG_VM_SUF(fg_vm_exp_reduce)(x, 1, &th, &tl, &rh, &kcl, &r, &q, M);
    w = r + q;
    SPLIT(rh, 67108865.0, r1, r2);               /* r1: 27 bits */
    p1 = th * r1;                                /* exact: 26 + 27 bits */
    small = (th * r2 + th * (q - kcl)) + (tl + tl * w);
    /* 2^(j/128) - 2^-m exactly, then + th r1: |ah| >= 2^(1/128) - 1 > |p1|
     * unless ah == 0 (k == 0), so Fast2Sum is exact.  2^-m; for m > 952
     * the subtracted 1 is far below the result's ulp: 2^-952 stands in, and
     * 2^-m stays a normal number */
    Mc = SELU(MASK(*M > 3000), (VU){0} + 3000, *M);
    pm = ASD((3071 - Mc) << 52);
    TWOSUM(th, -pm, ah, al);
    FAST2SUM(ah, p1, bh, bl);
    FAST2SUM(bh, (al + bl) + small, *hi, *lo);
}

/* log(xh + xl) = hi + lo for a double-double xh + xl (|xl| <= ulp(xh)/2,
 * xh > 0 finite; other lanes: garbage).  with_lo is a literal 0 or 1: 0
 * ignores xl (log of a double), and the compiler drops its steps. */
SUB(fg_vm_log_dd)(VD xh, VD xl, int with_lo, VD *hi, VD *lo)
{
    VU sub = MASK(xh < 0x1p-1022);
    VD xs = SEL(sub, xh * 0x1p52, xh);           /* subnormals: scaled up */
    VU ix = ASU(xs);
    VU tmp = ix - 0x3FE6000000000000ULL;         /* bits of 0.6875 */
    VU i = (tmp >> 45) & 127;
    VU E = (tmp + SIGN) >> 52;                   /* k + 2048 */
    VD kd = ASD(E | 0x4330000000000000ULL) - (0x1p52 + 2048.0);
    VD z = ASD(ix - (tmp & 0xFFF0000000000000ULL));   /* x / 2^k */
    VD invc, lch, lcl, z1, z2, rh, rl, r, rlo, p, h0, s, e;
    FG_VM_SUF(fg_vm_read3)(fg_vm_log_tab, i, &invc, &lch, &lcl);
    kd = kd - ASD(sub & 0x404A000000000000ULL);  /* - 52.0 where scaled */
    SPLIT(z, 1048577.0, z1, z2);                 /* z1: 33 bits, z2: 20 */
    rh = z1 * invc - 1.0;                        /* exact: 33 + 20 bits, Sterbenz */
    rl = z2 * invc;                              /* exact, below rh's last bit */
    FAST2SUM(rh, rl, r, rlo);                    /* r = z invc - 1 (rh is 0 near 1) */
    if (with_lo) {
        /* + xl / 2^k * invc, which may be all of r (log1p of a tiny x:
         * xh = 1, r = 0): summed exactly, not added as a correction.
         * 2^-k for k <= 952 (above, xl is far below the result's ulp) */
        VU Ec = SELU(MASK(E > 3000), (VU){0} + 3000, E);
        VD c;
        TWOSUM(r, (xl * ASD((3071 - Ec) << 52)) * invc, r, c);
        rlo = rlo + c;
    }
    p = (r * r) * (FG_VM_L2 + r * (FG_VM_L3 + r * (FG_VM_L4 + r * (FG_VM_L5 + r * (
        FG_VM_L6 + r * (FG_VM_L7 + r * FG_VM_L8))))));
    h0 = kd * FG_VM_LN2_HI + lch;                /* exact: both on the 2^-42 grid */
    TWOSUM(h0, r, s, e);
    FAST2SUM(s, e + (((kd * FG_VM_LN2_LO + lcl) + rlo) + p), *hi, *lo);
}

/* N / D for double-doubles N = nh + nl (|nl| <= 2^-8 |nh|) and D = dh + dl
 * (normalized: |dl| <= ulp(dh)), rounded once.  q0 = nh / dh cut to 26
 * bits and D's head d1 to 26 bits make q0 d1 exact, so the remainder
 * R = N - q0 D is accurate to ~2^-80 |N|; q0 + R / dh is N / D to 2^-60. */
FN(fg_vm_div_dd)(VD nh, VD nl, VD dh, VD dl)
{
    VD y = 1.0 / dh;
    VD q0, d1, R;
    SHORT(nh * y, q0);
    SHORT(dh, d1);
    R = ((nh - q0 * d1) - q0 * ((dh - d1) + dl)) + nl;   /* nh - q0 d1 exact */
    return q0 + R * y;
}


/* ---------------------------------------------------------------------------
 * the functions
 * ------------------------------------------------------------------------- */

FN(fg_vm_exp)(VD x)
{
    VD xc, th, tl, rh, kcl, r, q, w, res, s1, s2;
    VU M;
    xc = SEL(MASK(x > 710.0), SPLAT(710.0), x);      /* nan passes */
    xc = SEL(MASK(xc < -746.0), SPLAT(-746.0), xc);
    FG_VM_SUF(fg_vm_exp_reduce)(xc, 0, &th, &tl, &rh, &kcl, &r, &q, &M);
    w = r + q;
    res = th + (tl + (th * w + tl * w));
    FG_VM_SUF(fg_vm_scale2)(M, &s1, &s2);
    return (res * s1) * s2;
}

FN(fg_vm_expm1)(VD x)
{
    VD xc, hi, lo, s1, s2, res;
    VU M;
    xc = SEL(MASK(x > 710.0), SPLAT(710.0), x);
    xc = SEL(MASK(xc < -40.0), SPLAT(-40.0), xc);    /* e^-40 - 1 rounds to -1 */
    FG_VM_SUF(fg_vm_expm1_dd)(xc, &hi, &lo, &M);
    FG_VM_SUF(fg_vm_scale2)(M, &s1, &s2);
    res = (hi * s1) * s2;
    return SEL(MASK(x == 0.0), x, res);              /* -0.0 stays -0.0 */
}

/* tanh in two halves (see the algorithm above), so that a row can run the
 * first half over a block of vectors and then the second (_vmath_rows.h):
 * the whole chain is too long for the out-of-order window to overlap two
 * vectors.  fg_vm_tanh_a: the division's operands num / den, and z, h for
 * the end; fg_vm_tanh_b: the rest. */
SUB(fg_vm_tanh_a)(VD x, VD *num, VD *den, VD *z, VD *h)
{
    VD a, s, p, q, a2, t, kd, rh, kcl, r, r2, e, w, l, th, tl, uh, ul, sc, sh, sl, hh;
    VU small, u, j;
    a = ASD(ASU(x) & ~SIGN);
    small = MASK(a < FG_VM_TANH_T1);
    hh = SEL(MASK(a < FG_VM_TANH_T2), SPLAT(0.5), SPLAT(0.0));
    /* a < T1: tanh a = a + (a s) p / q */
    s = a * a;
    p = FG_VM_TP0 + s * (FG_VM_TP1 + s * FG_VM_TP2);
    q = 1.0 + s * (FG_VM_TQ1 + s * FG_VM_TQ2);
    /* e^(2a) = 2^m (uh + ul): exp's reduction (k = 128 m + j >= 0), its
     * degree-5 polynomial in Estrin's order (a shorter chain) */
    a2 = a + a;                                      /* exact */
    a2 = SEL(MASK(a2 > 40.0), SPLAT(40.0), a2);      /* nan passes */
    t = a2 * FG_VM_INVLN2N + FG_VM_SHIFT;
    kd = t - FG_VM_SHIFT;
    u = ASU(t);
    j = u & 127;
    rh = a2 - kd * FG_VM_C_HI;                       /* exact */
    kcl = kd * FG_VM_C_LO;
    r = rh - kcl;
    FG_VM_SUF(fg_vm_read2)(fg_vm_exp_tab, j, &th, &tl);
    r2 = r * r;
    e = r2 * ((FG_VM_P2 + r * FG_VM_P3) + r2 * (FG_VM_P4 + r * FG_VM_P5));
    w = r + e;
    l = tl + (th * w + tl * w);
    FAST2SUM(th, l, uh, ul);
    /* 2^m, 0 <= m <= 58 here: the bits of u - j = 0x4338.. + 128 m,
     * shifted so that the 0x4338.. leaves */
    sc = ASD(((u - j) << 45) + 0x3FF0000000000000ULL);
    FAST2SUM(uh * sc, SPLAT(1.0), sh, sl);           /* S = 1 + e^(2a) */
    sl = sl + ul * sc;
    *num = SEL(small, p, 2.0 - hh * sh);             /* 2 - h sh: exact */
    *den = SEL(small, q, sh);
    *z = SEL(small, a * s, sl * 0.5);
    *h = hh;
}

FN(fg_vm_tanh_b)(VD x, VD num, VD den, VD z, VD h)
{
    VD a, y, ts, b1, b2, yy, tb, res;
    VU small;
    a = ASD(ASU(x) & ~SIGN);
    small = MASK(a < FG_VM_TANH_T1);
    y = num / den;
    ts = a + z * y;
    FAST2SUM(1.0 - h, -y, b1, b2);                   /* c - q, exactly */
    yy = y + h;                                      /* 2 / sh */
    tb = b1 + (b2 + (yy * yy) * z);
    res = SEL(small, ts, tb);                        /* >= 0 (+0 at 0) */
    res = ASD(ASU(res) | (ASU(x) & SIGN));           /* tanh(-x) = -tanh(x) */
    return SEL(MASK(x != x), x + x, res);
}

FN(fg_vm_tanh)(VD x)
{
    VD num, den, z, h;
    FG_VM_SUF(fg_vm_tanh_a)(x, &num, &den, &z, &h);
    return FG_VM_SUF(fg_vm_tanh_b)(x, num, den, z, h);
}

/* (the name the row macro of _vmath_rows.h builds a plain row from) */
FN(fg_vm_tanh1)(VD x) { return FG_VM_SUF(fg_vm_tanh)(x); }

/* e^-|x| = 2^m (hi + lo) in double-double, x any (nan: nan); M = m + 2048,
 * the scale factors of 2^m in s1, s2 */
SUB(fg_vm_exp_neg_abs)(VD x, VD *hi, VD *lo, VU *M, VD *s1, VD *s2)
{
    VD nx;
    nx = ASD(ASU(x) | SIGN);                         /* -|x| */
    nx = SEL(MASK(nx < -746.0), SPLAT(-746.0), nx);
    FG_VM_SUF(fg_vm_exp_dd)(nx, hi, lo, M);
    FG_VM_SUF(fg_vm_scale2)(*M, s1, s2);
}

/* sigmoid in two halves, as tanh (the rows run them over blocks of vectors,
 * _vmath_rows.h): fg_vm_sigmoid_a: the quotient's operands N = nh + nl,
 * D = dh + dl and the scale factors f1, f2; fg_vm_sigmoid_b: the rest. */
SUB(fg_vm_sigmoid_a)(VD x, VD *nh, VD *nl, VD *dh, VD *dl, VD *f1, VD *f2)
{
    VD hi, lo, s1, s2;
    VU pos = MASK(x >= 0.0), M;
    FG_VM_SUF(fg_vm_exp_neg_abs)(x, &hi, &lo, &M, &s1, &s2);
    FAST2SUM(SPLAT(1.0), (hi * s1) * s2, *dh, *dl);  /* D = 1 + t, t in [0, 1] */
    *dl = *dl + (lo * s1) * s2;
    /* x >= 0: 1 / (1 + e^-x); x < 0: e^x / (1 + e^x), never e^(positive).
     * e^x / D is divided unscaled and scaled after: one rounding, also for
     * results in the subnormal range */
    *nh = SEL(pos, SPLAT(1.0), hi);
    *nl = SEL(pos, SPLAT(0.0), lo);
    *f1 = SEL(pos, SPLAT(1.0), s1);
    *f2 = SEL(pos, SPLAT(1.0), s2);
}

FN(fg_vm_sigmoid_b)(VD nh, VD nl, VD dh, VD dl, VD f1, VD f2)
{
    return (FG_VM_SUF(fg_vm_div_dd)(nh, nl, dh, dl) * f1) * f2;
}

FN(fg_vm_sigmoid)(VD x)
{
    VD nh, nl, dh, dl, f1, f2;
    FG_VM_SUF(fg_vm_sigmoid_a)(x, &nh, &nl, &dh, &dl, &f1, &f2);
    return FG_VM_SUF(fg_vm_sigmoid_b)(nh, nl, dh, dl, f1, f2);
}

/* (the name the row macro of _vmath_rows.h builds a plain row from) */
FN(fg_vm_sigmoid1)(VD x) { return FG_VM_SUF(fg_vm_sigmoid)(x); }

FN(fg_vm_log)(VD x)
{
    VD hi, lo, res;
    FG_VM_SUF(fg_vm_log_dd)(x, x, 0, &hi, &lo);
    res = SEL(MASK(x == 0.0), SPLAT(-FG_VM_INF), hi);
    res = SEL(MASK(x < 0.0), SPLAT(FG_VM_NAN), res);
    res = SEL(MASK(x == FG_VM_INF), x, res);
    return SEL(MASK(x != x), x + x, res);
}

FN(fg_vm_log1p)(VD x)
{
    VD uh, ul, hi, lo, res;
    TWOSUM(SPLAT(1.0), x, uh, ul);                          /* 1 + x = uh + ul exactly */
    FG_VM_SUF(fg_vm_log_dd)(uh, ul, 1, &hi, &lo);
    res = SEL(MASK(x == -1.0), SPLAT(-FG_VM_INF), hi);
    res = SEL(MASK(x < -1.0), SPLAT(FG_VM_NAN), res);
    res = SEL(MASK(x == FG_VM_INF), x, res);
    res = SEL(MASK(x == 0.0), x, res);               /* -0.0 stays -0.0 */
    return SEL(MASK(x != x), x + x, res);
}

/* softplus's last steps, from e^-|x| = (th + tl) s1 s2 (M: its exponent
 * field, fg_vm_exp_neg_abs's) and 1 + t = uh + ul (t its head, ul with
 * t's low part): log1p(t) in double-double, max(x, 0) added, the small-t
 * branch and the special values.  Shared by fg_vm_softplus and
 * fg_vm_softplus_sigmoid, which is why the two give the same bits. */
FN(fg_vm_softplus_end)(VD x, VD th, VD tl, VD t, VD s1, VD s2, VU M, VD uh, VD ul)
{
    VD hi, lo, mx, s, e, res, small;
    FG_VM_SUF(fg_vm_log_dd)(uh, ul, 1, &hi, &lo);    /* log1p(t) */
    mx = SEL(MASK(x > 0.0), x, SPLAT(0.0));
    TWOSUM(mx, hi, s, e);
    res = s + (e + lo);
    /* x < -21 (t < 2^-30): log1p(t) = t (1 - t/2 + t^2/3) to 2^-87, summed
     * unscaled and scaled once.  Above, 1 + t holds t to 2^-83; here t's
     * low part would be lost in it (t < 2^-53: all of t is in ul), and
     * near the bottom of the normal range in the subnormals */
    small = ((th + (tl + th * (t * (FG_VM_L2 + t * FG_VM_L3)))) * s1) * s2;
    res = SEL(MASK(x < 0.0) & MASK(M < 2048 - 30), small, res);
    res = SEL(MASK(x == FG_VM_INF), x, res);
    return SEL(MASK(x != x), x + x, res);
}

FN(fg_vm_softplus)(VD x)
{
    VD th, tl, s1, s2, t, uh, ul;
    VU M;
    FG_VM_SUF(fg_vm_exp_neg_abs)(x, &th, &tl, &M, &s1, &s2);
    t = (th * s1) * s2;
    FAST2SUM(SPLAT(1.0), t, uh, ul);                 /* 1 + t */
    ul = ul + (tl * s1) * s2;
    return FG_VM_SUF(fg_vm_softplus_end)(x, th, tl, t, s1, s2, M, uh, ul);
}

/* softplus in two halves, as tanh and sigmoid (the row runs them over
 * blocks of vectors, _vmath_rows.h): fg_vm_softplus_a: e^-|x| (th, tl, M)
 * and 1 + t = uh + ul; fg_vm_softplus_b: the scale factors again (from M,
 * the same bits) and fg_vm_softplus_end.  fg_vm_softplus's operations on
 * the same numbers. */
SUB(fg_vm_softplus_a)(VD x, VD *th, VD *tl, VU *M, VD *uh, VD *ul)
{
    VD s1, s2, t;
    FG_VM_SUF(fg_vm_exp_neg_abs)(x, th, tl, M, &s1, &s2);
    t = (*th * s1) * s2;
    FAST2SUM(SPLAT(1.0), t, *uh, *ul);               /* 1 + t */
    *ul = *ul + (*tl * s1) * s2;
}

FN(fg_vm_softplus_b)(VD x, VD th, VD tl, VU M, VD uh, VD ul)
{
    VD s1, s2;
    FG_VM_SUF(fg_vm_scale2)(M, &s1, &s2);
    return FG_VM_SUF(fg_vm_softplus_end)(x, th, tl, (th * s1) * s2, s1, s2, M, uh, ul);
}

/* (the name the row macro of _vmath_rows.h builds a plain row from) */
FN(fg_vm_softplus1)(VD x) { return FG_VM_SUF(fg_vm_softplus)(x); }

/* softplus(x), and sigmoid(x) in *sg, from one e^-|x|: fg_vm_softplus's
 * and fg_vm_sigmoid's operations on the same numbers (so the bits of both;
 * the 1 + t that softplus takes the log of is sigmoid's denominator D before
 * its low part gets e^-|x|'s).  For a softplus whose backward (sigmoid(x) * g)
 * runs later: one exp instead of two (the one-row replay, _replay_row.pxi). */
FN(fg_vm_softplus_sigmoid)(VD x, VD *sg)
{
    VD th, tl, s1, s2, t, uh, ul, dl;
    VU M, pos = MASK(x >= 0.0);
    FG_VM_SUF(fg_vm_exp_neg_abs)(x, &th, &tl, &M, &s1, &s2);
    t = (th * s1) * s2;
    FAST2SUM(SPLAT(1.0), t, uh, ul);                 /* 1 + t */
    dl = ul + (tl * s1) * s2;                        /* (sigmoid's dl) */
    /* sigmoid: fg_vm_sigmoid_a's selects, then fg_vm_sigmoid_b */
    *sg = (FG_VM_SUF(fg_vm_div_dd)(SEL(pos, SPLAT(1.0), th), SEL(pos, SPLAT(0.0), tl), uh, dl)
           * SEL(pos, SPLAT(1.0), s1)) * SEL(pos, SPLAT(1.0), s2);
    /* softplus: fg_vm_softplus's steps from its log1p on */
    return FG_VM_SUF(fg_vm_softplus_end)(x, th, tl, t, s1, s2, M, uh, dl);
}

#undef VD
#undef VU
#undef FN
#undef SUB
#undef ASU
#undef ASD
#undef MASK
#undef SEL
#undef SELU
#undef SPLAT
#undef GATHER
#undef SIGN
#undef TWOSUM
#undef FAST2SUM
#undef SPLIT
#undef SHORT
#undef FG_VM_W
#undef FG_VM_SUF
#undef FG_VM_TARGET
