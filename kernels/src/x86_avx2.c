/* AVX2 path: no vector popcount, so bytes are counted with the nibble lookup (vpshufb, Mula
 * et al.), summed in 8-bit lanes for up to 31 words (31 * 8 < 256) and folded into 64-bit
 * lanes with vpsadbw. Same outer-product tile as AVX-512: a broadcast activation word against
 * 4 weight words of 4 output channels each; 2 pixels x 16 channels per pass, two passes. */
#include <immintrin.h>

#include "internal.h"

#define MR 2

static inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

static void tile_avx2(const bssl_conv_args *a, int32_t ob, const uint64_t *const *ap,
                      int32_t mv, int64_t pix0) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const uint64_t *wb = a->wblk + (int64_t)ob * a->k_words * BSSL_BLOCK_O;
  const int32_t seg = a->seg_words;
  int32_t pop[MR * BSSL_BLOCK_O];
  for (int half = 0; half < 2; half++) {
    const int32_t h0 = half * 16;
    if (ob * BSSL_BLOCK_O + h0 >= a->out_channels) {
      for (int m = 0; m < MR; m++)
        for (int j = 0; j < 16; j++) pop[m * BSSL_BLOCK_O + h0 + j] = 0;
      continue;
    }
    __m256i s[MR][4], b[MR][4];
    for (int m = 0; m < MR; m++)
      for (int v = 0; v < 4; v++) s[m][v] = b[m][v] = zero;
    int run = 0; /* words summed in the 8-bit lanes since the last fold */
    for (int32_t ky = 0; ky < a->kh; ky++) {
      const int64_t off = ky * a->row_words;
      const uint64_t *p0 = ap[0] + off, *p1 = ap[1] + off;
      const uint64_t *wk = wb + (int64_t)ky * seg * BSSL_BLOCK_O + h0;
      for (int32_t j = 0; j < seg; j++) {
        const uint64_t *wj = wk + (int64_t)j * BSSL_BLOCK_O;
        const __m256i a0 = _mm256_set1_epi64x((long long)p0[j]);
        const __m256i a1 = _mm256_set1_epi64x((long long)p1[j]);
        for (int v = 0; v < 4; v++) {
          const __m256i w = _mm256_loadu_si256((const __m256i *)(wj + 4 * v));
          b[0][v] = _mm256_add_epi8(b[0][v], popcnt_bytes(_mm256_xor_si256(a0, w), lut, low));
          b[1][v] = _mm256_add_epi8(b[1][v], popcnt_bytes(_mm256_xor_si256(a1, w), lut, low));
        }
        if (++run == 31) {
          for (int m = 0; m < MR; m++)
            for (int v = 0; v < 4; v++) {
              s[m][v] = _mm256_add_epi64(s[m][v], _mm256_sad_epu8(b[m][v], zero));
              b[m][v] = zero;
            }
          run = 0;
        }
      }
    }
    for (int m = 0; m < MR; m++)
      for (int v = 0; v < 4; v++) {
        s[m][v] = _mm256_add_epi64(s[m][v], _mm256_sad_epu8(b[m][v], zero));
        int64_t lanes[4];
        _mm256_storeu_si256((__m256i *)lanes, s[m][v]);
        for (int l = 0; l < 4; l++) pop[m * BSSL_BLOCK_O + h0 + 4 * v + l] = (int32_t)lanes[l];
      }
  }
  bssl_epilogue(a, ob, pop, mv, pix0);
}

static void pack_avx2(const float *x, int64_t npix, int32_t channels, const float *bias,
                      uint64_t *out) {
  const int32_t cw = (channels + 63) / 64;
  const int32_t full = channels / 8 * 8;
  for (int64_t p = 0; p < npix; p++) {
    const float *xp = x + p * channels;
    uint64_t *op = out + p * cw;
    for (int32_t wi = 0; wi < cw; wi++) op[wi] = 0;
    int32_t c = 0;
    for (; c < full; c += 8) {
      __m256 v = _mm256_loadu_ps(xp + c);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + c));
      const uint64_t m = (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
      op[c / 64] |= m << (c % 64);
    }
    for (; c < channels; c++) {
      const float v = bias ? xp[c] + bias[c] : xp[c];
      op[c / 64] |= (uint64_t)(v < 0.0f) << (c % 64);
    }
  }
}

static uint64_t peak_avx2(int64_t iters, int64_t *bit_ops) {
  /* xor + nibble-lookup popcount + byte add, folded every 31 rounds as the tile does */
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  __m256i x0 = _mm256_set1_epi64x(0x0123456789abcdefLL), x1 = _mm256_set1_epi64x(0x5555aaaa5555aaaaLL);
  const __m256i w0 = _mm256_set1_epi64x(0x9e3779b97f4a7c15LL), w1 = _mm256_set1_epi64x(0x7f4a7c159e3779b9LL);
  __m256i b0 = zero, b1 = zero, b2 = zero, b3 = zero, s = zero;
  int64_t done = 0;
  while (done < iters) {
    const int64_t n = iters - done < 31 ? iters - done : 31;
    for (int64_t i = 0; i < n; i++) {
      __asm__ volatile("" : "+x"(x0), "+x"(x1));
      b0 = _mm256_add_epi8(b0, popcnt_bytes(_mm256_xor_si256(x0, w0), lut, low));
      b1 = _mm256_add_epi8(b1, popcnt_bytes(_mm256_xor_si256(x1, w0), lut, low));
      b2 = _mm256_add_epi8(b2, popcnt_bytes(_mm256_xor_si256(x0, w1), lut, low));
      b3 = _mm256_add_epi8(b3, popcnt_bytes(_mm256_xor_si256(x1, w1), lut, low));
    }
    s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_add_epi64(_mm256_sad_epu8(b0, zero), _mm256_sad_epu8(b1, zero)),
                                             _mm256_add_epi64(_mm256_sad_epu8(b2, zero), _mm256_sad_epu8(b3, zero))));
    b0 = b1 = b2 = b3 = zero;
    done += n;
  }
  *bit_ops = iters * 4 * 256;
  int64_t lanes[4];
  _mm256_storeu_si256((__m256i *)lanes, s);
  return (uint64_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
}

const bssl_isa_impl bssl_impl_avx2 = {MR, tile_avx2, pack_avx2, peak_avx2};
