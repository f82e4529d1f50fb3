/* AVX-512 path: VPOPCNTDQ counts 64-bit lanes directly. The tile is an outer product like a
 * float GEMM micro-kernel: one packed activation word of a pixel is broadcast and XORed with
 * the same word of 32 output channels (4 zmm), so no horizontal sums are needed and any K
 * (any channel count) works. 6 pixels x 4 vectors = 24 accumulators in registers. */
#include <immintrin.h>

#include "internal.h"

#define MR 6

#define STEP(m)                                                                  \
  do {                                                                           \
    const __m512i av = _mm512_set1_epi64((long long)p##m[j]);                    \
    c##m##0 = _mm512_add_epi64(c##m##0, _mm512_popcnt_epi64(_mm512_xor_si512(av, w0))); \
    c##m##1 = _mm512_add_epi64(c##m##1, _mm512_popcnt_epi64(_mm512_xor_si512(av, w1))); \
    c##m##2 = _mm512_add_epi64(c##m##2, _mm512_popcnt_epi64(_mm512_xor_si512(av, w2))); \
    c##m##3 = _mm512_add_epi64(c##m##3, _mm512_popcnt_epi64(_mm512_xor_si512(av, w3))); \
  } while (0)

static inline void store_vec(const bssl_conv_args *a, __m512i pop, int32_t o, int64_t pix,
                             uint32_t *bits, int v) {
  int32_t nv = a->out_channels - o;
  if (nv <= 0) return;
  const __mmask8 k = nv >= 8 ? 0xff : (__mmask8)((1u << nv) - 1);
  if (a->mode == BSSL_OUT_FLOAT) {
    const __m256 f = _mm512_cvtepi64_ps(pop); /* exact: counts < 2^24 */
    const __m256 y = _mm256_fmadd_ps(_mm256_maskz_loadu_ps(k, a->mul + o), f,
                                     _mm256_maskz_loadu_ps(k, a->add + o));
    _mm256_mask_storeu_ps((float *)a->out + pix * a->out_channels + o, k, y);
  } else if (a->mode == BSSL_OUT_DOT) {
    const __m256i d = _mm256_sub_epi32(_mm256_set1_epi32(a->kreal),
                                       _mm256_slli_epi32(_mm512_cvtepi64_epi32(pop), 1));
    _mm256_mask_storeu_epi32((int32_t *)a->out + pix * a->out_channels + o, k, d);
  } else {
    const __m512i t = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(k, a->thr + o));
    const __mmask8 ge = _mm512_cmpge_epi64_mask(pop, t);
    const __mmask16 fl = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(k, a->flip + o), _mm_set1_epi8(-1));
    *bits |= (uint32_t)((ge ^ (__mmask8)fl) & k) << (8 * v);
  }
}

/* the fused epilogue (bssl_fused_epilogue), 8 channels per vector, the same roundings in the
 * same order as bssl_fused_value. Per-channel vectors are loaded once per tile, pixel pointers
 * once per pixel; the epilogue's fields are copied to locals first (the byte stores of the sign
 * bits could alias them and force reloads), and each 8-channel vector stores its own byte of
 * sign bits. */
static inline __attribute__((always_inline)) void fused_avx512(const bssl_conv_args *a, int32_t ob,
                                                               const __m512i acc[MR][4], int32_t mv,
                                                               int64_t pix0) {
  const bssl_fused_epilogue *e = a->fused;
  const int32_t O = a->out_channels, o0 = ob * BSSL_BLOCK_O, wo = a->wo, ho = a->ho;
  const float *const mul = e->mul, *const add = e->add, *const res = e->res, *const corr = e->corr;
  const float *const bin = e->bias_in, *const slope = e->slope, *const bout = e->bias_out;
  const int nbits = e->nbits;
  const float *const nb0 = nbits > 0 ? e->bits[0].bias : NULL, *const nb1 = nbits > 1 ? e->bits[1].bias : NULL;
  const int64_t hw = (int64_t)ho * wo;
  int64_t b = pix0 / hw;
  int32_t oy = (int32_t)(pix0 % hw / wo), ox = (int32_t)(pix0 % hw % wo);
  float *op[MR];
  const float *rp[MR], *cp[MR];
  uint8_t *bp0[MR], *bp1[MR];
  for (int32_t m = 0; m < mv; m++) {
    const int64_t pix = pix0 + m;
    op[m] = e->out + pix * e->out_stride + e->out_off + o0;
    { /* and the output lines it will write, fetched for ownership early */
      const uintptr_t next = (uintptr_t)op[m] + (uintptr_t)MR * (uintptr_t)e->out_stride * sizeof(float);
      _mm_prefetch((const char *)next, _MM_HINT_ET0);
      _mm_prefetch((const char *)(next + 64), _MM_HINT_ET0);
    }
    rp[m] = res ? res + pix * e->res_stride + o0 : NULL;
    if (res) { /* the residual of the next tile's pixel (a strided stream); a prefetch never faults,
                  and integer addresses keep past-the-end pointers out of the C arithmetic */
      const uintptr_t next = (uintptr_t)rp[m] + (uintptr_t)MR * (uintptr_t)e->res_stride * sizeof(float);
      _mm_prefetch((const char *)next, _MM_HINT_T0);
      _mm_prefetch((const char *)(next + 64), _MM_HINT_T0);
    }
    cp[m] = corr ? corr + ((int64_t)e->corr_row[oy] * e->corr_cols + e->corr_col[ox]) * O + o0 : NULL;
    bp0[m] = nbits > 0 ? (uint8_t *)(bssl_fused_bits_at(&e->bits[0], b, oy, ox) + ob) : NULL;
    bp1[m] = nbits > 1 ? (uint8_t *)(bssl_fused_bits_at(&e->bits[1], b, oy, ox) + ob) : NULL;
    if (++ox == wo) {
      ox = 0;
      if (++oy == ho) {
        oy = 0;
        b++;
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int v = 0; v < 4; v++) {
    const int32_t o = o0 + 8 * v, nv = O - o;
    if (nv <= 0) {
      for (int32_t m = 0; m < mv; m++) { /* the block's unused bytes of sign bits */
        if (nbits > 0) bp0[m][v] = 0;
        if (nbits > 1) bp1[m][v] = 0;
      }
      continue;
    }
    const __mmask8 k = nv >= 8 ? 0xff : (__mmask8)((1u << nv) - 1);
    const __m256 mu = _mm256_maskz_loadu_ps(k, mul + o), ad = _mm256_maskz_loadu_ps(k, add + o);
    const __m256 bi = bin ? _mm256_maskz_loadu_ps(k, bin + o) : zero;
    const __m256 sl = slope ? _mm256_maskz_loadu_ps(k, slope + o) : zero;
    const __m256 bo = bout ? _mm256_maskz_loadu_ps(k, bout + o) : zero;
    const __m256 n0 = nb0 ? _mm256_maskz_loadu_ps(k, nb0 + o) : zero;
    const __m256 n1 = nb1 ? _mm256_maskz_loadu_ps(k, nb1 + o) : zero;
    for (int32_t m = 0; m < mv; m++) {
      __m256 y = _mm256_fmadd_ps(mu, _mm512_cvtepi64_ps(acc[m][v]), ad);
      if (corr) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(k, cp[m] + 8 * v));
      if (res) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(k, rp[m] + 8 * v));
      if (bin) y = _mm256_add_ps(y, bi);
      if (slope) y = _mm256_mask_mul_ps(y, _mm256_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, sl);
      if (bout) y = _mm256_add_ps(y, bo);
      _mm256_mask_storeu_ps(op[m] + 8 * v, k, y);
      if (nb0) bp0[m][v] = (uint8_t)_mm256_mask_cmp_ps_mask(k, _mm256_add_ps(y, n0), zero, _CMP_LT_OQ);
      if (nb1) bp1[m][v] = (uint8_t)_mm256_mask_cmp_ps_mask(k, _mm256_add_ps(y, n1), zero, _CMP_LT_OQ);
    }
  }
}

static void tile_avx512(const bssl_conv_args *a, int32_t ob, const uint64_t *const *ap,
                        int32_t mv, int64_t pix0) {
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
  __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
  __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  __m512i c40 = c00, c41 = c00, c42 = c00, c43 = c00;
  __m512i c50 = c00, c51 = c00, c52 = c00, c53 = c00;
  const uint64_t *wb = a->wblk + (int64_t)ob * a->k_words * BSSL_BLOCK_O;
  const int32_t seg = a->seg_words;
  for (int32_t ky = 0; ky < a->kh; ky++) {
    const int64_t off = ky * a->row_words;
    const uint64_t *p0 = ap[0] + off, *p1 = ap[1] + off, *p2 = ap[2] + off, *p3 = ap[3] + off,
                   *p4 = ap[4] + off, *p5 = ap[5] + off;
    const uint64_t *wk = wb + (int64_t)ky * seg * BSSL_BLOCK_O;
    for (int32_t j = 0; j < seg; j++) {
      const uint64_t *wj = wk + (int64_t)j * BSSL_BLOCK_O;
      const __m512i w0 = _mm512_loadu_si512(wj), w1 = _mm512_loadu_si512(wj + 8),
                    w2 = _mm512_loadu_si512(wj + 16), w3 = _mm512_loadu_si512(wj + 24);
      STEP(0);
      STEP(1);
      STEP(2);
      STEP(3);
      STEP(4);
      STEP(5);
    }
  }
  const int32_t o0 = ob * BSSL_BLOCK_O;
  const __m512i acc[MR][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                              {c30, c31, c32, c33}, {c40, c41, c42, c43}, {c50, c51, c52, c53}};
  if (a->mode == BSSL_OUT_FUSED) {
    fused_avx512(a, ob, acc, mv, pix0);
    return;
  }
  if (a->mode == BSSL_OUT_FLOAT) {
    /* the deploy path: per-channel mul/add loaded once per tile, one fma per 8 outputs */
    for (int v = 0; v < 4; v++) {
      const int32_t o = o0 + 8 * v, nv = a->out_channels - o;
      if (nv <= 0) break;
      const __mmask8 k = nv >= 8 ? 0xff : (__mmask8)((1u << nv) - 1);
      const __m256 mu = _mm256_maskz_loadu_ps(k, a->mul + o), ad = _mm256_maskz_loadu_ps(k, a->add + o);
      float *dst = (float *)a->out + pix0 * a->out_channels + o;
      for (int32_t m = 0; m < mv; m++)
        _mm256_mask_storeu_ps(dst + (int64_t)m * a->out_channels, k,
                              _mm256_fmadd_ps(mu, _mm512_cvtepi64_ps(acc[m][v]), ad));
    }
    return;
  }
  for (int32_t m = 0; m < mv; m++) {
    uint32_t bits = 0;
    for (int v = 0; v < 4; v++) store_vec(a, acc[m][v], o0 + 8 * v, pix0 + m, &bits, v);
    if (a->mode == BSSL_OUT_BITS)
      ((uint64_t *)a->out)[(pix0 + m) * a->out_words + o0 / 64] |= (uint64_t)bits << (o0 % 64);
  }
}

static void pack_avx512(const float *x, int64_t npix, int32_t channels, const float *bias,
                        uint64_t *out) {
  const int32_t cw = (channels + 63) / 64;
  const int32_t nq = (channels + 15) / 16; /* 16-channel groups, the last one maybe partial */
  const int32_t left = channels - (nq - 1) * 16;
  const __mmask16 ktail = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
  for (int64_t p = 0; p < npix; p++) {
    const float *xp = x + p * channels;
    uint64_t *op = out + p * cw;
    uint64_t word = 0;
    for (int32_t q = 0; q < nq; q++) {
      const __mmask16 k = q == nq - 1 ? ktail : 0xffff;
      __m512 v = _mm512_maskz_loadu_ps(k, xp + 16 * q);
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, bias + 16 * q));
      word |= (uint64_t)_mm512_mask_cmp_ps_mask(k, v, _mm512_setzero_ps(), _CMP_LT_OQ) << (16 * (q & 3));
      if ((q & 3) == 3 || q == nq - 1) {
        op[q / 4] = word;
        word = 0;
      }
    }
  }
}

static uint64_t peak_avx512(int64_t iters, int64_t *bit_ops) {
  /* the kernel's own instruction mix (xor, popcount, add) on registers, 12 independent chains */
  __m512i x0 = _mm512_set1_epi64(0x0123456789abcdefLL), x1 = _mm512_set1_epi64(0x1111222233334444LL),
          x2 = _mm512_set1_epi64(0x5555aaaa5555aaaaLL), x3 = _mm512_set1_epi64(0x0f0f0f0f0f0f0f0fLL);
  const __m512i w0 = _mm512_set1_epi64(0x9e3779b97f4a7c15LL), w1 = _mm512_set1_epi64(0x7f4a7c159e3779b9LL),
                w2 = _mm512_set1_epi64(0x3c6ef372fe94f82bLL);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
          a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  for (int64_t i = 0; i < iters; i++) {
    __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3));
#define P(acc, x, w) acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(x, w)))
    P(a0, x0, w0); P(a1, x1, w0); P(a2, x2, w0); P(a3, x3, w0);
    P(a4, x0, w1); P(a5, x1, w1); P(a6, x2, w1); P(a7, x3, w1);
    P(a8, x0, w2); P(a9, x1, w2); P(a10, x2, w2); P(a11, x3, w2);
#undef P
  }
  *bit_ops = iters * 12 * 512;
  __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                               _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
  s = _mm512_add_epi64(s, _mm512_add_epi64(_mm512_add_epi64(a8, a9), _mm512_add_epi64(a10, a11)));
  return (uint64_t)_mm512_reduce_add_epi64(s);
}

const bssl_isa_impl bssl_impl_avx512 = {MR, tile_avx512, pack_avx512, peak_avx512};
