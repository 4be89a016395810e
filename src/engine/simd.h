/*
 * simd.h - internal: the one vector vocabulary of the numeric kernels
 * (ops.c, attention.c, dirconv.c, winograd.c). VW floats per vector where
 * the build targets AVX-512 or AVX2; VW undefined elsewhere, and the
 * kernels keep their plain C loops. V_FMA exists where the target has
 * fused multiply-add.
 *
 * Vector expf/erff/tanhf come from glibc's libmvec (the same routines GCC
 * calls when it vectorises libm calls): within a few ulp, far inside the
 * parity tolerance, and an order of magnitude faster than scalar libm.
 */
#ifndef DMX_ENGINE_SIMD_H
#define DMX_ENGINE_SIMD_H

#include <math.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
typedef __m512 vf;
__m512 _ZGVeN16v_expf(__m512);
__m512 _ZGVeN16v_erff(__m512);
__m512 _ZGVeN16v_tanhf(__m512);
#define V_LOAD  _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_SET1  _mm512_set1_ps
#define V_ZERO  _mm512_setzero_ps
#define V_ADD   _mm512_add_ps
#define V_SUB   _mm512_sub_ps
#define V_MUL   _mm512_mul_ps
#define V_DIV   _mm512_div_ps
#define V_MAX   _mm512_max_ps
#define V_FMA   _mm512_fmadd_ps /* a * b + c */
#define V_EXP   _ZGVeN16v_expf
#define V_ERF   _ZGVeN16v_erff
#define V_TANH  _ZGVeN16v_tanhf
static inline float v_hsum(vf v) { return _mm512_reduce_add_ps(v); }
static inline float v_hmax(vf v) { return _mm512_reduce_max_ps(v); }
#elif defined(__AVX2__)
#define VW      8
typedef __m256 vf;
__m256 _ZGVdN8v_expf(__m256);
__m256 _ZGVdN8v_erff(__m256);
__m256 _ZGVdN8v_tanhf(__m256);
#define V_LOAD  _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_SET1  _mm256_set1_ps
#define V_ZERO  _mm256_setzero_ps
#define V_ADD   _mm256_add_ps
#define V_SUB   _mm256_sub_ps
#define V_MUL   _mm256_mul_ps
#define V_DIV   _mm256_div_ps
#define V_MAX   _mm256_max_ps
#ifdef __FMA__
#define V_FMA _mm256_fmadd_ps
#endif
#define V_EXP  _ZGVdN8v_expf
#define V_ERF  _ZGVdN8v_erff
#define V_TANH _ZGVdN8v_tanhf
static inline float v_hsum(vf v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
static inline float v_hmax(vf v) {
    float t[8], m;
    _mm256_storeu_ps(t, v);
    m = t[0];
    for (int i = 1; i < 8; i++) m = t[i] > m ? t[i] : m;
    return m;
}
#endif

/* v_select_ge0(x, a, b): a where x >= 0, else b (lane by lane). */
#if defined(__AVX512F__)
static inline vf v_select_ge0(vf x, vf a, vf b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, V_ZERO(), _CMP_GE_OQ), b, a);
}
#elif defined(__AVX2__)
static inline vf v_select_ge0(vf x, vf a, vf b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, V_ZERO(), _CMP_GE_OQ));
}
#endif

/* v_exp_le0(x) = e^x for x <= 0 (GLU's sigmoid, of -|g|), inline: the
 * classic Cephes expf reduction (x = n ln2 + r, |r| <= ln2/2, the ln2
 * product split in two) and its degree-5 polynomial, within 2 ulp of
 * e^x; x below -87.3 counts as -87.3 (e^x about 1e-38, nothing beside
 * 1). A libmvec call per vector costs several times more where the rest
 * of the loop is a load or two and a few operations. */
#if defined(VW) && defined(V_FMA)
#define V_EXP_INLINE 1
static inline vf v_exp_le0(vf x) {
    const vf lo = V_SET1(-87.33654f);
    x = V_MAX(lo, x); /* (a NaN x stays NaN: max returns its second operand) */
#if VW == 16
    vf n = _mm512_roundscale_ps(V_MUL(x, V_SET1(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    vf n = _mm256_round_ps(V_MUL(x, V_SET1(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
    vf r = V_FMA(n, V_SET1(-0.693359375f), x);
    r = V_FMA(n, V_SET1(2.12194440e-4f), r);
    vf p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    p = V_FMA(p, V_MUL(r, r), V_ADD(r, V_SET1(1.0f)));
#if VW == 16
    return _mm512_scalef_ps(p, n);
#else
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return V_MUL(p, _mm256_castsi256_ps(e));
#endif
}

/* v_exp2_le0(t) = 2^t for t <= 0 (t up to a few hundredths above 0 is
 * fine too), inline, for the softmax: its caller forms t = x log2(e) -
 * max log2(e) with one multiply-add, so the shift and the change of base
 * cost one operation where v_exp_le0 needs a subtraction, a product and
 * two multiply-adds (13 operations per vector against 19: the attention's
 * softmax pass, a seventh of its time on AVX2, takes a quarter less).
 * t = n + f, n the nearest integer, |f| <= 1/2; 2^f by a degree-6
 * polynomial (fitted for relative error: 2e-9, 1.3 ulp evaluated in
 * float); 2^n exactly into the exponent. Below -126 counts as -126 (2^t
 * about 1e-38); a NaN stays NaN. */
static inline vf v_exp2_le0(vf t) {
    t = V_MAX(V_SET1(-126.0f), t); /* (NaN: max returns its second operand) */
#if VW == 16
    vf n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    /* adding 1.5 * 2^23 rounds to an integer and leaves n + 127 in the low
     * mantissa bits: shifted into the exponent field they make 2^n */
    const vf magic = V_SET1(12582912.0f + 127.0f);
    vf k = V_ADD(t, magic), n = V_SUB(k, magic);
#endif
    vf f = V_SUB(t, n);
    vf p = V_SET1(1.5353361960e-4f);
    p = V_FMA(p, f, V_SET1(1.3398875017e-3f));
    p = V_FMA(p, f, V_SET1(9.6184369177e-3f));
    p = V_FMA(p, f, V_SET1(5.5503323674e-2f));
    p = V_FMA(p, f, V_SET1(2.4022647738e-1f));
    p = V_FMA(p, f, V_SET1(6.9314718246e-1f));
    p = V_FMA(p, f, V_SET1(1.0f));
#if VW == 16
    return _mm512_scalef_ps(p, n);
#else
    return V_MUL(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(k), 23)));
#endif
}
#endif

/* GELU, exact: x/2 (1 + erf(x/sqrt 2)), upstream's nn.GELU(). The scalar
 * twin and builds without AVX-512 take that form with erff (libmvec's per
 * vector). With AVX-512 it is computed inline as x (1 - s) for x >= 0
 * and x s below, s = erfc(|x|/sqrt 2) / 2 = e^{-z^2} P(t) / 2,
 * t = 1 / (1 + p z) (the Abramowitz-Stegun substitution), P of degree 8
 * in t - t0 fitted for relative error on z in [0, 6] (1.2e-7 in double;
 * beyond, s < 1e-17, and z is clamped at 10; below x = -14.1 the result
 * is that of -14.1, about -4e-39, so a huge negative x gives about 0, not
 * x times a tiny s): 30 % less time than libmvec's erff there (with AVX2
 * it measured slower, so AVX2 keeps libmvec), as accurate in absolute
 * terms, and the negative side keeps its relative accuracy where 1 + erf
 * cancels. */
static inline float dmx__gelu1(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }
#if VW == 16 && defined(V_EXP_INLINE)
static inline vf v_gelu(vf x) {
    static const float c[9] = {3.194658905e-01f, 1.103874462e+00f, 1.840480989e+00f,
                               2.291635941e+00f, 2.040761899e+00f, 1.126148958e+00f,
                               1.506090623e-01f, -2.624955282e-01f, -1.400490303e-01f};
    const vf one = V_SET1(1.0f);
    /* z = |x| / sqrt 2, at most 10 (NaN: 10; x carries it to the result) */
    vf z = V_MUL(_mm512_min_ps(_mm512_abs_ps(x), V_SET1(14.142135f)), V_SET1((float)M_SQRT1_2));
    vf d = V_FMA(V_SET1(0.3275911f), z, one), r = _mm512_rcp14_ps(d);
    r = V_MUL(r, V_FMA(V_SUB(V_ZERO(), d), r, V_SET1(2.0f))); /* one Newton step */
    vf u = V_SUB(r, V_SET1(0.668602981993269f)), a = V_SET1(c[8]);
    for (int k = 7; k >= 0; k--) a = V_FMA(a, u, V_SET1(c[k]));
    vf s = V_MUL(V_MUL(V_SET1(0.5f), v_exp_le0(V_MUL(V_SUB(V_ZERO(), z), z))), a);
    /* (max keeps a NaN x: it returns its second operand) */
    return v_select_ge0(x, V_MUL(x, V_SUB(one, s)), V_MUL(V_MAX(V_SET1(-14.142135f), x), s));
}
#elif defined(VW)
static inline vf v_gelu(vf x) {
    return V_MUL(V_MUL(V_SET1(0.5f), x), V_ADD(V_SET1(1.0f), V_ERF(V_MUL(x, V_SET1((float)M_SQRT1_2)))));
}
#endif

/* v_transpose(src, lds, dst, ldd): dst (VW rows of stride ldd) = the
 * transpose of src (VW rows of stride lds), in registers: unpacks of
 * pairs, of quads, then 128-bit lane shuffles (gemm.c's packing of a
 * transposed operand, attention.c's key panels). */
#if VW == 8
static inline void v_transpose(const float *src, size_t lds, float *dst, size_t ldd) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);
        t[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
    }
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ldd, t[i]);
}
#elif VW == 16
static inline void v_transpose(const float *src, size_t lds, float *dst, size_t ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

#endif
