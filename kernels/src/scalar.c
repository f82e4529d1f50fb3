/* Portable C: the reference convolution every other path is tested against, the shared tile
 * epilogue, activation packing and the scalar peak loop. Plain loops on purpose: this file is
 * the specification, not the fast path. */
#include <string.h>

#include "internal.h"

void bssl_pack_scalar(const float *x, int64_t npix, int32_t channels, const float *bias,
                      uint64_t *out) {
  const int32_t cw = (channels + 63) / 64;
  for (int64_t p = 0; p < npix; p++) {
    const float *xp = x + p * channels;
    uint64_t *op = out + p * cw;
    for (int32_t wi = 0; wi < cw; wi++) {
      uint64_t word = 0;
      const int32_t c0 = wi * 64;
      const int32_t c1 = c0 + 64 < channels ? c0 + 64 : channels;
      for (int32_t c = c0; c < c1; c++) {
        const float v = bias ? xp[c] + bias[c] : xp[c];
        word |= (uint64_t)(v < 0.0f) << (c - c0);
      }
      op[wi] = word;
    }
  }
}

uint64_t bssl_peak_scalar(int64_t iters, int64_t *bit_ops) {
  uint64_t x0 = 0x0123456789abcdefULL, x1 = 0xfedcba9876543210ULL, x2 = 0x0f0f0f0f33333333ULL,
           x3 = 0x5555aaaa5555aaaaULL, w = 0x9e3779b97f4a7c15ULL;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t i = 0; i < iters; i++) {
#if defined(__GNUC__)
    __asm__ volatile("" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)); /* keep the work in the loop */
#endif
    a0 += (uint64_t)bssl_popcount64(x0 ^ w);
    a1 += (uint64_t)bssl_popcount64(x1 ^ w);
    a2 += (uint64_t)bssl_popcount64(x2 ^ w);
    a3 += (uint64_t)bssl_popcount64(x3 ^ w);
  }
  *bit_ops = iters * 4 * 64;
  return a0 + a1 + a2 + a3;
}

void bssl_epilogue(const bssl_conv_args *a, int32_t ob, const int32_t *pop, int32_t mv,
                   int64_t pix0) {
  const int32_t o0 = ob * BSSL_BLOCK_O;
  int32_t nj = a->out_channels - o0;
  if (nj > BSSL_BLOCK_O) nj = BSSL_BLOCK_O;
  if (a->mode == BSSL_OUT_FUSED) {
    const bssl_fused_epilogue *e = a->fused;
    const int64_t hw = (int64_t)a->ho * a->wo;
    for (int32_t m = 0; m < mv; m++) {
      const int64_t pix = pix0 + m, b = pix / hw;
      const int32_t oy = (int32_t)(pix % hw / a->wo), ox = (int32_t)(pix % hw % a->wo);
      const int32_t *pm = pop + m * BSSL_BLOCK_O;
      uint32_t bits[2] = {0, 0};
      float *o = e->out + pix * e->out_stride + e->out_off + o0;
      for (int32_t j = 0; j < nj; j++) {
        const float y = bssl_fused_value(e, o0 + j, a->out_channels, pm[j], pix, oy, ox);
        o[j] = y;
        for (int32_t i = 0; i < e->nbits; i++)
          bits[i] |= (uint32_t)(y + e->bits[i].bias[o0 + j] < 0.0f) << j;
      }
      for (int32_t i = 0; i < e->nbits; i++) bssl_fused_bits_at(&e->bits[i], b, oy, ox)[ob] = bits[i];
    }
    return;
  }
  for (int32_t m = 0; m < mv; m++) {
    const int64_t pix = pix0 + m;
    const int32_t *pm = pop + m * BSSL_BLOCK_O;
    if (a->mode == BSSL_OUT_DOT) {
      int32_t *o = (int32_t *)a->out + pix * a->out_channels + o0;
      for (int32_t j = 0; j < nj; j++) o[j] = bssl_out_dot(a->kreal, pm[j]);
    } else if (a->mode == BSSL_OUT_FLOAT) {
      float *o = (float *)a->out + pix * a->out_channels + o0;
      for (int32_t j = 0; j < nj; j++) o[j] = bssl_out_float(a->mul[o0 + j], a->add[o0 + j], pm[j]);
    } else {
      uint64_t bits = 0;
      for (int32_t j = 0; j < nj; j++)
        bits |= (uint64_t)bssl_out_bit(a->thr[o0 + j], a->flip[o0 + j], pm[j]) << j;
      /* a 32-channel block fills half a word; the driver zeroed the word first */
      ((uint64_t *)a->out)[pix * a->out_words + o0 / 64] |= bits << (o0 % 64);
    }
  }
}

int bssl_ref_bconv2d(const uint64_t *x, int32_t n, int32_t h, int32_t w, int32_t cw,
                     const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                     int32_t stride, int32_t pad, int32_t kreal, int32_t mode, const float *mul,
                     const float *add, const int32_t *thr, const uint8_t *flip, void *out) {
  const int32_t ho = (h + 2 * pad - kh) / stride + 1;
  const int32_t wo = (w + 2 * pad - kw) / stride + 1;
  const int64_t kwords = (int64_t)kh * kw * cw;
  const int32_t ow = (out_channels + 63) / 64;
  for (int32_t b = 0; b < n; b++)
    for (int32_t oy = 0; oy < ho; oy++)
      for (int32_t ox = 0; ox < wo; ox++) {
        const int64_t pix = ((int64_t)b * ho + oy) * wo + ox;
        if (mode == BSSL_OUT_BITS) memset((uint64_t *)out + pix * ow, 0, (size_t)ow * 8);
        for (int32_t o = 0; o < out_channels; o++) {
          /* weight o, word k of the blocked layout */
          const uint64_t *wo_ = wblk + (int64_t)(o / BSSL_BLOCK_O) * kwords * BSSL_BLOCK_O +
                                o % BSSL_BLOCK_O;
          int32_t pop = 0;
          for (int32_t ky = 0; ky < kh; ky++)
            for (int32_t kx = 0; kx < kw; kx++) {
              const int32_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
              const int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
              for (int32_t c = 0; c < cw; c++) {
                /* one-padding: a padded pixel is +1 everywhere, i.e. the zero word */
                const uint64_t av = inside ? x[(((int64_t)b * h + iy) * w + ix) * cw + c] : 0;
                const int64_t k = ((int64_t)ky * kw + kx) * cw + c;
                pop += bssl_popcount64(av ^ wo_[k * BSSL_BLOCK_O]);
              }
            }
          if (mode == BSSL_OUT_DOT)
            ((int32_t *)out)[pix * out_channels + o] = bssl_out_dot(kreal, pop);
          else if (mode == BSSL_OUT_FLOAT)
            ((float *)out)[pix * out_channels + o] = bssl_out_float(mul[o], add[o], pop);
          else
            ((uint64_t *)out)[pix * ow + o / 64] |= (uint64_t)bssl_out_bit(thr[o], flip[o], pop)
                                                     << (o % 64);
        }
      }
  return 0;
}

void bssl_ref_bconv2d_fused(const bssl_conv_args *a, const uint64_t *x, int32_t n, int32_t hp,
                            int32_t wp, int32_t cw, int32_t kh, int32_t kw, int32_t stride) {
  int32_t pop[BSSL_BLOCK_O];
  for (int32_t b = 0; b < n; b++)
    for (int32_t oy = 0; oy < a->ho; oy++)
      for (int32_t ox = 0; ox < a->wo; ox++) {
        const int64_t pix = ((int64_t)b * a->ho + oy) * a->wo + ox;
        for (int32_t ob = 0; ob < a->nblk; ob++) {
          const uint64_t *wb = a->wblk + (int64_t)ob * a->k_words * BSSL_BLOCK_O;
          for (int32_t j = 0; j < BSSL_BLOCK_O; j++) {
            int32_t p = 0;
            for (int32_t ky = 0; ky < kh; ky++)
              for (int32_t kx = 0; kx < kw; kx++)
                for (int32_t c = 0; c < cw; c++) {
                  const uint64_t av = x[(((int64_t)b * hp + oy * stride + ky) * wp + ox * stride + kx) * cw + c];
                  p += bssl_popcount64(av ^ wb[(((int64_t)ky * kw + kx) * cw + c) * BSSL_BLOCK_O + j]);
                }
            pop[j] = p;
          }
          bssl_epilogue(a, ob, pop, 1, pix);
        }
      }
}
