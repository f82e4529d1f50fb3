/* NEON path (aarch64 and armv7): vcnt counts bits per byte; vpadal folds byte pairs into
 * 16-bit lanes every word, which holds up to 4095 words (16 per word per lane) before the
 * 16-bit lanes are folded into 32-bit sums. Outer-product tile as on x86: a broadcast
 * activation word against 2 output channels per q register. */
#include <arm_neon.h>

#include "internal.h"

#if defined(__aarch64__)
#define MR 4 /* 32 q registers: 4 pixels x 4 vectors of accumulators */
#else
#define MR 2 /* armv7 has 16 q registers */
#endif
#define NV 4      /* q registers of weights per pass: 8 output channels */
#define FOLD 4095 /* words per 16-bit run */

static void tile_neon(const bssl_conv_args *a, int32_t ob, const uint64_t *const *ap,
                      int32_t mv, int64_t pix0) {
  const uint64_t *wb = a->wblk + (int64_t)ob * a->k_words * BSSL_BLOCK_O;
  const int32_t seg = a->seg_words;
  int32_t pop[MR * BSSL_BLOCK_O];
  for (int32_t q0 = 0; q0 < BSSL_BLOCK_O; q0 += 2 * NV) {
    if (ob * BSSL_BLOCK_O + q0 >= a->out_channels) {
      for (int m = 0; m < MR; m++)
        for (int j = 0; j < 2 * NV; j++) pop[m * BSSL_BLOCK_O + q0 + j] = 0;
      continue;
    }
    uint16x8_t c[MR][NV];
    uint32x4_t s[MR][NV];
    for (int m = 0; m < MR; m++)
      for (int v = 0; v < NV; v++) {
        c[m][v] = vdupq_n_u16(0);
        s[m][v] = vdupq_n_u32(0);
      }
    int run = 0;
    for (int32_t ky = 0; ky < a->kh; ky++) {
      const int64_t off = ky * a->row_words;
      const uint64_t *p[MR];
      for (int m = 0; m < MR; m++) p[m] = ap[m] + off;
      const uint64_t *wk = wb + (int64_t)ky * seg * BSSL_BLOCK_O + q0;
      for (int32_t j = 0; j < seg; j++) {
        const uint64_t *wj = wk + (int64_t)j * BSSL_BLOCK_O;
        uint8x16_t w[NV];
        for (int v = 0; v < NV; v++) w[v] = vreinterpretq_u8_u64(vld1q_u64(wj + 2 * v));
        for (int m = 0; m < MR; m++) {
          const uint8x16_t av = vreinterpretq_u8_u64(vld1q_dup_u64(p[m] + j));
          for (int v = 0; v < NV; v++) c[m][v] = vpadalq_u8(c[m][v], vcntq_u8(veorq_u8(av, w[v])));
        }
        if (++run == FOLD) {
          for (int m = 0; m < MR; m++)
            for (int v = 0; v < NV; v++) {
              s[m][v] = vpadalq_u16(s[m][v], c[m][v]);
              c[m][v] = vdupq_n_u16(0);
            }
          run = 0;
        }
      }
    }
    for (int m = 0; m < MR; m++)
      for (int v = 0; v < NV; v++) {
        const uint64x2_t t = vpaddlq_u32(vpadalq_u16(s[m][v], c[m][v]));
        pop[m * BSSL_BLOCK_O + q0 + 2 * v] = (int32_t)vgetq_lane_u64(t, 0);
        pop[m * BSSL_BLOCK_O + q0 + 2 * v + 1] = (int32_t)vgetq_lane_u64(t, 1);
      }
  }
  bssl_epilogue(a, ob, pop, mv, pix0);
}

static uint64_t peak_neon(int64_t iters, int64_t *bit_ops) {
  uint8x16_t x0 = vreinterpretq_u8_u64(vdupq_n_u64(0x0123456789abcdefULL));
  uint8x16_t x1 = vreinterpretq_u8_u64(vdupq_n_u64(0x5555aaaa5555aaaaULL));
  const uint8x16_t w0 = vreinterpretq_u8_u64(vdupq_n_u64(0x9e3779b97f4a7c15ULL));
  const uint8x16_t w1 = vreinterpretq_u8_u64(vdupq_n_u64(0x7f4a7c159e3779b9ULL));
  uint16x8_t c0 = vdupq_n_u16(0), c1 = c0, c2 = c0, c3 = c0;
  uint32x4_t s = vdupq_n_u32(0);
  int64_t done = 0;
  while (done < iters) {
    const int64_t n = iters - done < FOLD ? iters - done : FOLD;
    for (int64_t i = 0; i < n; i++) {
      __asm__ volatile("" : "+w"(x0), "+w"(x1));
      c0 = vpadalq_u8(c0, vcntq_u8(veorq_u8(x0, w0)));
      c1 = vpadalq_u8(c1, vcntq_u8(veorq_u8(x1, w0)));
      c2 = vpadalq_u8(c2, vcntq_u8(veorq_u8(x0, w1)));
      c3 = vpadalq_u8(c3, vcntq_u8(veorq_u8(x1, w1)));
    }
    s = vpadalq_u16(vpadalq_u16(vpadalq_u16(vpadalq_u16(s, c0), c1), c2), c3);
    c0 = c1 = c2 = c3 = vdupq_n_u16(0);
    done += n;
  }
  *bit_ops = iters * 4 * 128;
  const uint64x2_t t = vpaddlq_u32(s);
  return vgetq_lane_u64(t, 0) + vgetq_lane_u64(t, 1);
}

const bssl_isa_impl bssl_impl_neon = {MR, tile_neon, bssl_pack_scalar, peak_neon};
