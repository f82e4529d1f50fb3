/* Internals shared by the dispatcher and the per-ISA kernel files (not part of the ABI). */
#ifndef BSSL_INTERNAL_H
#define BSSL_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bssl_kernels.h"

/* One convolution (or GEMM, as a 1x1 conv over a single row) as the tile kernels see it. The
 * input is already one-padded, so every output pixel reads kh segments of seg_words contiguous
 * words, segment ky starting at the pixel's patch pointer + ky * row_words. */
typedef struct {
  int64_t row_words; /* words per (padded) input row: Wp * Cw */
  int32_t seg_words; /* kw * Cw */
  int32_t kh;
  int64_t k_words; /* kh * kw * Cw, the K of a weight block row */
  const uint64_t *wblk;
  int32_t out_channels;
  int32_t nblk;
  int32_t mode;
  int32_t kreal;
  const float *mul, *add;
  const int32_t *thr;
  const uint8_t *flip;
  void *out;
  int32_t out_words; /* ceil(O / 64), BITS mode */
  const bssl_fused_epilogue *fused; /* FUSED mode */
  int32_t ho, wo;                   /* FUSED mode: output map, to place pixels */
} bssl_conv_args;

/* Computes output channels [ob*32, ob*32+32) of mv <= MR consecutive output pixels pix0.. whose
 * patches start at ap[0..MR-1] (entries past mv repeat a valid pointer; their results are
 * dropped). Writes the final outputs (all modes). */
typedef void (*bssl_tile_fn)(const bssl_conv_args *a, int32_t ob, const uint64_t *const *ap,
                             int32_t mv, int64_t pix0);
typedef void (*bssl_pack_fn)(const float *x, int64_t npix, int32_t channels, const float *bias,
                             uint64_t *out);
typedef uint64_t (*bssl_peak_fn)(int64_t iters, int64_t *bit_ops);

typedef struct {
  int mr; /* output pixels per tile */
  bssl_tile_fn tile;
  bssl_pack_fn pack;
  bssl_peak_fn peak;
} bssl_isa_impl;

#define BSSL_MR_MAX 8

/* per-path tables, defined in their files when compiled in */
extern const bssl_isa_impl bssl_impl_avx2;
extern const bssl_isa_impl bssl_impl_avx512;
extern const bssl_isa_impl bssl_impl_neon;

/* portable pieces (scalar.c) */
void bssl_pack_scalar(const float *x, int64_t npix, int32_t channels, const float *bias,
                      uint64_t *out);
uint64_t bssl_peak_scalar(int64_t iters, int64_t *bit_ops);
int bssl_ref_bconv2d(const uint64_t *x, int32_t n, int32_t h, int32_t w, int32_t cw,
                     const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                     int32_t stride, int32_t pad, int32_t kreal, int32_t mode, const float *mul,
                     const float *add, const int32_t *thr, const uint8_t *flip, void *out);
/* reference of bssl_bconv2d_fused on an already padded input (a->mode == BSSL_OUT_FUSED) */
void bssl_ref_bconv2d_fused(const bssl_conv_args *a, const uint64_t *x, int32_t n, int32_t hp,
                            int32_t wp, int32_t cw, int32_t kh, int32_t kw, int32_t stride);
/* writes the outputs of one tile from popcounts pop[m * 32 + j] (m < mv, j < 32) */
void bssl_epilogue(const bssl_conv_args *a, int32_t ob, const int32_t *pop, int32_t mv,
                   int64_t pix0);

/* the fused epilogue of one output value (see bssl_fused_epilogue), shared by the generic path */
static inline float bssl_fused_value(const bssl_fused_epilogue *e, int32_t o, int32_t O, int32_t pop,
                                     int64_t pix, int32_t oy, int32_t ox) {
  float y = fmaf(e->mul[o], (float)pop, e->add[o]);
  if (e->corr) y += e->corr[((int64_t)e->corr_row[oy] * e->corr_cols + e->corr_col[ox]) * O + o];
  if (e->res) y += e->res[pix * e->res_stride + o];
  if (e->bias_in) y += e->bias_in[o];
  if (e->slope && y < 0.0f) y = y * e->slope[o];
  if (e->bias_out) y += e->bias_out[o];
  return y;
}

/* where the packed bits of output pixel (b, oy, ox) go in bits[i] (as 32-bit half words) */
static inline uint32_t *bssl_fused_bits_at(const bssl_bits_out *bo, int64_t b, int32_t oy, int32_t ox) {
  return (uint32_t *)(bo->dst + ((b * bo->hp + oy + bo->pad) * bo->wp + ox + bo->pad) * bo->cw) + bo->word32;
}

/* generic parallel loop over [0, n) on the kernels' worker threads, fixed contiguous split */
typedef void (*bssl_range_fn)(void *ctx, int64_t i0, int64_t i1);
void bssl_parallel_for(int64_t n, int32_t threads, bssl_range_fn fn, void *ctx);
/* how many threads the calling thread's last parallel call ran on (1 after a reset); the
 * runtime's BSSL_RUNTIME_PROFILE table reports it per op */
int32_t bssl_last_split(void);
void bssl_last_split_reset(void);

static inline int bssl_popcount64(uint64_t v) { return __builtin_popcountll(v); }

/* the fused output transforms, one definition for every path */
static inline int32_t bssl_out_dot(int32_t kreal, int32_t pop) { return kreal - 2 * pop; }
static inline float bssl_out_float(float mul, float add, int32_t pop) {
  return fmaf(mul, (float)pop, add); /* fused: the same rounding as vfmadd / vfma */
}
static inline int bssl_out_bit(int32_t thr, uint8_t flip, int32_t pop) {
  return (pop >= thr) ^ (flip != 0);
}

#endif
