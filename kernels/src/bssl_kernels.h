/* bssl bit-packed XNOR-popcount kernels: public C ABI (loaded from Python with ctypes).
 *
 * Conventions (shared with the rest of bssl):
 *   - a bit 1 means -1 (x < 0), a bit 0 means +1; bits are packed along channels into
 *     uint64 words, channel c lives in word c / 64, bit c % 64;
 *   - the channel tail of the last word is 0 (+1) in activations AND weights, so the tail
 *     bits XOR to 0 and never reach the popcount;
 *   - spatial padding is +1 ("one-padding", larq pad_values=1): padded pixels are zero words;
 *   - +-1 dot product = K - 2 * popcount(a XOR w) with K = kh * kw * cin (real channels,
 *     padded taps included because one-padding makes them real +1 entries).
 *
 * Layouts: activations NHWC packed (N, H, W, Cw) with Cw = ceil(C / 64); canonical packed
 * weights (O, kh, kw, Cw); blocked weights (ceil(O / 32), kh * kw * Cw, 32) made by
 * bssl_block_weights, the layout every kernel path reads.
 *
 * Every function returns 0 on success or a negative BSSL_E* code; bssl_last_error() gives a
 * message for the calling thread.
 */
#ifndef BSSL_KERNELS_H
#define BSSL_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BSSL_API __declspec(dllexport)
#else
#define BSSL_API __attribute__((visibility("default")))
#endif

#define BSSL_KERNELS_ABI_VERSION 3

/* code paths */
#define BSSL_ISA_SCALAR 0 /* portable C reference */
#define BSSL_ISA_AVX2 1
#define BSSL_ISA_AVX512 2 /* AVX-512F + VPOPCNTDQ */
#define BSSL_ISA_NEON 3   /* aarch64 or armv7 NEON */
#define BSSL_ISA_COUNT 4

/* output modes of the convolution / GEMM */
#define BSSL_OUT_DOT 0   /* int32: the +-1 dot product K - 2*popcount */
#define BSSL_OUT_FLOAT 1 /* float: y[o] = mul[o] * popcount + add[o]  (fmaf, bit-exact across paths) */
#define BSSL_OUT_BITS 2  /* packed uint64 (N, Ho, Wo, ceil(O/64)): bit = (popcount >= thr[o]) ^ flip[o] */
#define BSSL_OUT_FUSED 3 /* bssl_bconv2d_fused only: float epilogue + packed signs for next convs */

#define BSSL_BLOCK_O 32 /* output channels per weight block */

#define BSSL_EARG (-1)    /* bad argument (shape, pointer, mode) */
#define BSSL_EISA (-2)    /* code path not compiled in or not supported by this CPU */
#define BSSL_ENOMEM (-3)  /* allocation failed */

BSSL_API int bssl_abi_version(void);
BSSL_API const char *bssl_last_error(void);

BSSL_API const char *bssl_isa_name(int isa);
/* 1 when the path is compiled into this library and the CPU can run it */
BSSL_API int bssl_isa_supported(int isa);
/* the path used now: BSSL_KERNELS_ISA=scalar|avx2|avx512|neon at first use, else the best one */
BSSL_API int bssl_isa_get(void);
BSSL_API int bssl_isa_set(int isa);
/* the best supported path, ignoring the environment override */
BSSL_API int bssl_isa_best(void);

/* sign bits of x + bias (bias may be NULL) for npix pixels of C contiguous floats each */
BSSL_API int bssl_pack_f32(const float *x, int64_t npix, int32_t channels, const float *bias,
                           uint64_t *out);

BSSL_API int64_t bssl_blocked_weights_words(int32_t out_channels, int64_t k_words);
/* (O, K words) canonical weights -> (ceil(O/32), K, 32) blocked, zero rows for O padding */
BSSL_API int bssl_block_weights(const uint64_t *w, int32_t out_channels, int64_t k_words,
                                uint64_t *out);

/* Binary conv2d with one-padding.
 *   x: (n, h, w, cw) packed; wblk: blocked weights of (out_channels, kh, kw, cw);
 *   kreal = kh * kw * in_channels (the K of the dot product);
 *   mode BSSL_OUT_DOT: out int32 (n, ho, wo, O); BSSL_OUT_FLOAT: out float (n, ho, wo, O) with
 *   mul/add; BSSL_OUT_BITS: out uint64 (n, ho, wo, ceil(O/64)) with thr/flip.
 *   ho = (h + 2 pad - kh) / stride + 1, likewise wo. threads >= 1 split the output rows. */
BSSL_API int bssl_bconv2d(const uint64_t *x, int32_t n, int32_t h, int32_t w, int32_t cw,
                          const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                          int32_t stride, int32_t pad, int32_t kreal, int32_t mode,
                          const float *mul, const float *add, const int32_t *thr,
                          const uint8_t *flip, void *out, int32_t threads);

/* The same convolution on float NHWC input x (n, h, w, channels), whose sign bits of x + bias
 * (bias may be NULL: the RSign bias of the unit) are packed straight into the padded buffer:
 * one call per binary layer, kreal = kh * kw * channels. */
BSSL_API int bssl_bconv2d_f32(const float *x, const float *bias, int32_t n, int32_t h, int32_t w,
                              int32_t channels, const uint64_t *wblk, int32_t out_channels,
                              int32_t kh, int32_t kw, int32_t stride, int32_t pad, int32_t mode,
                              const float *mul, const float *add, const int32_t *thr,
                              const uint8_t *flip, void *out, int32_t threads);

/* Binary GEMM for dense layers: a (m, kw) packed rows times blocked weights of (n_out, kw)
 * -> out (m, n_out) in the same modes as bssl_bconv2d; kreal = number of real input features. */
BSSL_API int bssl_bgemm(const uint64_t *a, int64_t m, int32_t kw, const uint64_t *wblk,
                        int32_t n_out, int32_t kreal, int32_t mode, const float *mul,
                        const float *add, const int32_t *thr, const uint8_t *flip, void *out,
                        int32_t threads);

/* Fused epilogue of a binary conv whose output goes on through residual adds, an RPReLU and
 * into the next binary convs (the native runtime's path). Per output pixel p = (b, oy, ox) and
 * channel o < O, in this order, each step one float rounding on every path:
 *   y = fmaf(mul[o], popcount, add[o])
 *   y += corr[(corr_row[oy] * corr_cols + corr_col[ox]) * O + o]  (zero-padding correction)
 *   y += res[p * res_stride + o];  y += bias_in[o]
 *   y = y < 0 ? y * slope[o] : y;  y += bias_out[o]
 *   out[p * out_stride + out_off + o] = y
 *   for each bits[i]: sign bit of (y + bits[i].bias[o]) into the one-padded packed buffer
 *     bits[i].dst of shape (n, hp, wp, cw), pixel (b, oy + pad, ox + pad), as the 32-bit half
 *     word32 + o / 32 of that pixel's words (each 32-channel block stores its own half word).
 * Every pointer but mul, add and out may be NULL (step skipped). The caller zeroes dst once
 * (frame and channel tail) and keeps word32 * 32 + O within the buffer's channels. */
typedef struct {
  const float *bias;
  uint64_t *dst;
  int32_t hp, wp, pad, cw, word32;
} bssl_bits_out;

typedef struct {
  const float *mul, *add;
  const float *corr;
  const int32_t *corr_row, *corr_col;
  int32_t corr_cols;
  const float *res;
  int32_t res_stride;
  const float *bias_in, *slope, *bias_out;
  float *out;
  int32_t out_stride, out_off;
  int32_t nbits;
  bssl_bits_out bits[2];
} bssl_fused_epilogue;

/* Binary conv2d on an input that is already one-padded (x: (n, hp, wp, cw); no padding is
 * added here), output (n, ho, wo) with ho = (hp - kh) / stride + 1, through the fused epilogue.
 * Same tiles, thread split and results on every path as bssl_bconv2d. */
BSSL_API int bssl_bconv2d_fused(const uint64_t *x, int32_t n, int32_t hp, int32_t wp, int32_t cw,
                                const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                                int32_t stride, int32_t kreal, const bssl_fused_epilogue *ep,
                                int32_t threads);

/* Threads: a call uses at most `threads` threads (persistent workers, woken per call) and only
 * as many as have min_work word-XORs each (default 2^18, ~16M binary MACs; env
 * BSSL_KERNELS_THREAD_WORK; 0 = always split). */
BSSL_API int64_t bssl_thread_min_work_get(void);
BSSL_API int bssl_thread_min_work_set(int64_t words);

/* Peak microbenchmark: `iters` rounds of register-resident XOR + popcount + add on the current
 * path, as the kernels use them; returns a checksum, *bit_ops gets the binary MACs done. */
BSSL_API uint64_t bssl_peak_xor_popcount(int64_t iters, int64_t *bit_ops);

#ifdef __cplusplus
}
#endif
#endif
