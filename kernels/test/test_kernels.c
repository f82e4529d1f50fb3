/* Kernel test program: checks the scalar reference against a direct +-1 integer convolution,
 * then every other compiled-in, CPU-supported path against the scalar reference, bit for bit,
 * in all output modes, on random shapes (channel tails, odd sizes, stride 2, batch > 1,
 * several threads). Runs natively and under qemu-user for the ARM builds.
 * Usage: test_kernels [cases]   (exit status 0 = all equal) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bssl_kernels.h"

static uint64_t g_rng = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}
static int rint_(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rfloat(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

static int g_fail = 0;
#define CHECK(cond, ...)                   \
  do {                                     \
    if (!(cond)) {                         \
      fprintf(stderr, "FAIL: " __VA_ARGS__); \
      fprintf(stderr, "\n");               \
      g_fail++;                            \
    }                                      \
  } while (0)

typedef struct {
  int n, h, w, c, o, k, stride, pad, threads;
} shape_t;

static shape_t random_shape(void) {
  static const int cs[] = {1, 3, 31, 64, 65, 100, 128, 130, 200};
  static const int os[] = {1, 5, 32, 33, 64, 70, 96};
  shape_t s;
  s.n = rint_(1, 2);
  s.k = rnd() % 3 ? 3 : 1;
  s.pad = s.k == 3 ? (int)(rnd() % 4 != 0) : 0;
  s.h = rint_(s.k - 2 * s.pad > 1 ? s.k - 2 * s.pad : 1, 9);
  s.w = rint_(s.k - 2 * s.pad > 1 ? s.k - 2 * s.pad : 1, 11);
  s.c = cs[rnd() % (sizeof cs / sizeof cs[0])];
  s.o = os[rnd() % (sizeof os / sizeof os[0])];
  s.stride = rint_(1, 2);
  s.threads = rint_(1, 3);
  return s;
}

/* one case: random +-1 data through every path and every mode */
static void run_case(const shape_t *s, const int *isas, int nisa) {
  const int cw = (s->c + 63) / 64;
  const int ho = (s->h + 2 * s->pad - s->k) / s->stride + 1;
  const int wo = (s->w + 2 * s->pad - s->k) / s->stride + 1;
  const int64_t npix = (int64_t)s->n * s->h * s->w, opix = (int64_t)s->n * ho * wo;
  const int64_t kwords = (int64_t)s->k * s->k * cw;
  const int kreal = s->k * s->k * s->c;
  float *xf = malloc(sizeof(float) * npix * s->c), *bias = malloc(sizeof(float) * s->c);
  float *wf = malloc(sizeof(float) * s->o * s->k * s->k * s->c); /* (O, kh, kw, C) */
  for (int64_t i = 0; i < npix * s->c; i++) xf[i] = rfloat();
  for (int i = 0; i < s->c; i++) bias[i] = 0.3f * rfloat();
  for (int64_t i = 0; i < (int64_t)s->o * s->k * s->k * s->c; i++) wf[i] = rfloat();
  uint64_t *x = malloc(8 * npix * cw), *wc = malloc(8 * s->o * kwords);
  uint64_t *wb = malloc(8 * bssl_blocked_weights_words(s->o, kwords));
  bssl_isa_set(0);
  CHECK(bssl_pack_f32(xf, npix, s->c, bias, x) == 0, "pack: %s", bssl_last_error());
  CHECK(bssl_pack_f32(wf, (int64_t)s->o * s->k * s->k, s->c, NULL, wc) == 0, "pack w");
  CHECK(bssl_block_weights(wc, s->o, kwords, wb) == 0, "block");

  /* packing agrees across paths */
  uint64_t *x2 = malloc(8 * npix * cw);
  for (int i = 0; i < nisa; i++) {
    bssl_isa_set(isas[i]);
    bssl_pack_f32(xf, npix, s->c, bias, x2);
    CHECK(memcmp(x, x2, 8 * npix * cw) == 0, "pack differs on %s (C=%d)", bssl_isa_name(isas[i]), s->c);
  }

  /* the reference against a direct +-1 convolution with +1 padding */
  int32_t *dot = malloc(4 * opix * s->o);
  bssl_isa_set(0);
  CHECK(bssl_bconv2d(x, s->n, s->h, s->w, cw, wb, s->o, s->k, s->k, s->stride, s->pad, kreal,
                     BSSL_OUT_DOT, NULL, NULL, NULL, NULL, dot, 1) == 0, "ref: %s", bssl_last_error());
  for (int b = 0; b < s->n; b++)
    for (int oy = 0; oy < ho; oy++)
      for (int ox = 0; ox < wo; ox++)
        for (int o = 0; o < s->o; o++) {
          int acc = 0;
          for (int ky = 0; ky < s->k; ky++)
            for (int kx = 0; kx < s->k; kx++)
              for (int c = 0; c < s->c; c++) {
                const int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                int av = 1;
                if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w) {
                  const int64_t p = ((int64_t)b * s->h + iy) * s->w + ix;
                  av = xf[p * s->c + c] + bias[c] < 0.0f ? -1 : 1;
                }
                const int wv = wf[(((int64_t)o * s->k + ky) * s->k + kx) * s->c + c] < 0.0f ? -1 : 1;
                acc += av * wv;
              }
          const int64_t idx = (((int64_t)b * ho + oy) * wo + ox) * s->o + o;
          CHECK(dot[idx] == acc, "reference dot %d != %d", dot[idx], acc);
          if (dot[idx] != acc) goto done_direct;
        }
done_direct:;

  float *mul = malloc(4 * s->o), *add = malloc(4 * s->o);
  int32_t *thr = malloc(4 * s->o);
  uint8_t *flip = malloc(s->o);
  for (int o = 0; o < s->o; o++) {
    mul[o] = rfloat();
    add[o] = 10.0f * rfloat();
    thr[o] = rint_(-2, kreal + 2);
    flip[o] = (uint8_t)(rnd() & 1);
  }
  const int ow = (s->o + 63) / 64;
  const size_t bytes[3] = {4 * (size_t)opix * s->o, 4 * (size_t)opix * s->o, 8 * (size_t)opix * ow};
  for (int mode = 0; mode < 3; mode++) {
    unsigned char *ref = malloc(bytes[mode]), *got = malloc(bytes[mode]);
    bssl_isa_set(0);
    bssl_bconv2d(x, s->n, s->h, s->w, cw, wb, s->o, s->k, s->k, s->stride, s->pad, kreal, mode,
                 mul, add, thr, flip, ref, 1);
    for (int i = 0; i < nisa; i++) {
      bssl_isa_set(isas[i]);
      memset(got, 0xa5, bytes[mode]); /* garbage: BITS mode must clear what it writes */
      int rc = bssl_bconv2d(x, s->n, s->h, s->w, cw, wb, s->o, s->k, s->k, s->stride, s->pad,
                            kreal, mode, mul, add, thr, flip, got, s->threads);
      CHECK(rc == 0, "%s: %s", bssl_isa_name(isas[i]), bssl_last_error());
      CHECK(memcmp(ref, got, bytes[mode]) == 0,
            "%s differs from scalar: mode=%d n=%d h=%d w=%d c=%d o=%d k=%d stride=%d pad=%d threads=%d",
            bssl_isa_name(isas[i]), mode, s->n, s->h, s->w, s->c, s->o, s->k, s->stride, s->pad,
            s->threads);
      /* float input packed inside the call: the same result */
      memset(got, 0x5a, bytes[mode]);
      rc = bssl_bconv2d_f32(xf, bias, s->n, s->h, s->w, s->c, wb, s->o, s->k, s->k, s->stride,
                            s->pad, mode, mul, add, thr, flip, got, s->threads);
      CHECK(rc == 0 && memcmp(ref, got, bytes[mode]) == 0, "%s: bconv2d_f32 differs (mode=%d c=%d)",
            bssl_isa_name(isas[i]), mode, s->c);
    }
    free(ref);
    free(got);
  }

  /* fused epilogue on the one-padded input: every path equals the scalar reference bit for bit,
   * and the reference equals the FLOAT-mode output put through the epilogue's steps */
  {
    const int hp = s->h + 2 * s->pad, wp = s->w + 2 * s->pad, off = (int)(rnd() % 2) * 32;
    const int ostride = off + s->o, ncw = (ostride + 63) / 64, pad2 = 1;
    uint64_t *xp = calloc((size_t)s->n * hp * wp * cw, 8);
    for (int b = 0; b < s->n; b++)
      for (int y = 0; y < s->h; y++)
        memcpy(xp + (((int64_t)b * hp + y + s->pad) * wp + s->pad) * cw, x + (((int64_t)b * s->h + y) * s->w) * cw,
               8 * (size_t)s->w * cw);
    float *res = malloc(4 * opix * s->o), *bin = malloc(4 * s->o), *sl = malloc(4 * s->o), *bo = malloc(4 * s->o);
    float *nb0 = malloc(4 * s->o), *nb1 = malloc(4 * s->o), *corr = malloc(4 * 6 * s->o);
    int32_t *crow = malloc(4 * ho), *ccol = malloc(4 * wo);
    for (int64_t i = 0; i < opix * s->o; i++) res[i] = rfloat();
    for (int o = 0; o < s->o; o++) {
      bin[o] = 0.2f * rfloat();
      sl[o] = 0.5f * rfloat();
      bo[o] = 0.2f * rfloat();
      nb0[o] = 0.3f * rfloat();
      nb1[o] = 0.3f * rfloat();
    }
    for (int i = 0; i < 6 * s->o; i++) corr[i] = rfloat();
    for (int i = 0; i < ho; i++) crow[i] = (int32_t)(rnd() % 2);
    for (int i = 0; i < wo; i++) ccol[i] = (int32_t)(rnd() % 3);
    const size_t fbytes = 4 * (size_t)opix * ostride, bbytes = 8 * (size_t)s->n * (ho + 2) * (wo + 2) * ncw;
    float *fref = malloc(fbytes), *fgot = malloc(fbytes), *flt = malloc(4 * opix * s->o);
    uint64_t *bref = malloc(2 * bbytes), *bgot = malloc(2 * bbytes);
    bssl_fused_epilogue e;
    memset(&e, 0, sizeof e);
    e.mul = mul;
    e.add = add;
    e.corr = corr;
    e.corr_row = crow;
    e.corr_col = ccol;
    e.corr_cols = 3;
    e.res = res;
    e.res_stride = s->o;
    e.bias_in = bin;
    e.slope = sl;
    e.bias_out = bo;
    e.out_stride = ostride;
    e.out_off = off;
    e.nbits = 2;
    for (int variant = 0; variant < 2; variant++) {
      if (variant == 1) { /* the sparse form: no correction, residual or activation */
        e.corr = NULL;
        e.res = NULL;
        e.bias_in = e.slope = e.bias_out = NULL;
        e.nbits = 1;
      }
      bssl_isa_set(0);
      memset(fref, 0, fbytes);
      memset(bref, 0, 2 * bbytes);
      e.out = fref;
      e.bits[0] = (bssl_bits_out){nb0, bref, ho + 2, wo + 2, pad2, ncw, off / 32};
      e.bits[1] = (bssl_bits_out){nb1, bref + bbytes / 8, ho + 2, wo + 2, pad2, ncw, off / 32};
      CHECK(bssl_bconv2d_fused(xp, s->n, hp, wp, cw, wb, s->o, s->k, s->k, s->stride, kreal, &e, 1) == 0,
            "fused ref: %s", bssl_last_error());
      bssl_bconv2d(x, s->n, s->h, s->w, cw, wb, s->o, s->k, s->k, s->stride, s->pad, kreal, BSSL_OUT_FLOAT,
                   mul, add, NULL, NULL, flt, 1);
      for (int64_t q = 0; q < opix && variant == 0; q++) {
        const int oy = (int)(q % ((int64_t)ho * wo) / wo), ox = (int)(q % wo);
        for (int o = 0; o < s->o; o++) {
          float y = flt[q * s->o + o];
          y += corr[((int64_t)crow[oy] * 3 + ccol[ox]) * s->o + o];
          y += res[q * s->o + o];
          y += bin[o];
          if (y < 0.0f) y = y * sl[o];
          y += bo[o];
          CHECK(fref[q * ostride + off + o] == y, "fused epilogue value %g != %g", fref[q * ostride + off + o], y);
          const int64_t bpix = ((int64_t)(q / ((int64_t)ho * wo)) * (ho + 2) + oy + 1) * (wo + 2) + ox + 1;
          const int c = off + o;
          CHECK((int)((bref[bpix * ncw + c / 64] >> (c % 64)) & 1) == (y + nb0[o] < 0.0f), "fused bit 0");
          CHECK((int)((bref[bbytes / 8 + bpix * ncw + c / 64] >> (c % 64)) & 1) == (y + nb1[o] < 0.0f), "fused bit 1");
          if (g_fail) break;
        }
      }
      for (int i = 0; i < nisa; i++) {
        bssl_isa_set(isas[i]);
        memset(fgot, 0, fbytes);
        memset(bgot, 0, 2 * bbytes);
        e.out = fgot;
        e.bits[0].dst = bgot;
        e.bits[1].dst = bgot + bbytes / 8;
        CHECK(bssl_bconv2d_fused(xp, s->n, hp, wp, cw, wb, s->o, s->k, s->k, s->stride, kreal, &e, s->threads) == 0,
              "fused %s: %s", bssl_isa_name(isas[i]), bssl_last_error());
        CHECK(memcmp(fref, fgot, fbytes) == 0 && memcmp(bref, bgot, 2 * bbytes) == 0,
              "fused %s differs from scalar (variant %d n=%d h=%d w=%d c=%d o=%d k=%d stride=%d off=%d threads=%d)",
              bssl_isa_name(isas[i]), variant, s->n, s->h, s->w, s->c, s->o, s->k, s->stride, off, s->threads);
      }
    }
    free(xp); free(res); free(bin); free(sl); free(bo); free(nb0); free(nb1); free(corr); free(crow); free(ccol);
    free(fref); free(fgot); free(flt); free(bref); free(bgot);
  }

  /* GEMM: rows of the activations times (O, C) weights equals the 1x1 convolution */
  {
    uint64_t *wg = malloc(8 * bssl_blocked_weights_words(s->o, cw));
    uint64_t *wgc = malloc(8 * (size_t)s->o * cw);
    bssl_isa_set(0);
    for (int o = 0; o < s->o; o++) bssl_pack_f32(wf + (int64_t)o * s->k * s->k * s->c, 1, s->c, NULL, wgc + (int64_t)o * cw);
    bssl_block_weights(wgc, s->o, cw, wg);
    int32_t *r1 = malloc(4 * npix * s->o), *r2 = malloc(4 * npix * s->o);
    bssl_bconv2d(x, 1, 1, (int32_t)npix, cw, wg, s->o, 1, 1, 1, 0, s->c, BSSL_OUT_DOT, NULL, NULL,
                 NULL, NULL, r1, 1);
    for (int i = 0; i < nisa; i++) {
      bssl_isa_set(isas[i]);
      CHECK(bssl_bgemm(x, npix, cw, wg, s->o, s->c, BSSL_OUT_DOT, NULL, NULL, NULL, NULL, r2,
                       s->threads) == 0, "bgemm: %s", bssl_last_error());
      CHECK(memcmp(r1, r2, 4 * npix * s->o) == 0, "bgemm differs on %s", bssl_isa_name(isas[i]));
    }
    free(wg);
    free(wgc);
    free(r1);
    free(r2);
  }
  free(xf); free(bias); free(wf); free(x); free(x2); free(wc); free(wb); free(dot);
  free(mul); free(add); free(thr); free(flip);
}

int main(int argc, char **argv) {
  const int cases = argc > 1 ? atoi(argv[1]) : 60;
  bssl_thread_min_work_set(0); /* split even the tiny test layers over the requested threads */
  int isas[BSSL_ISA_COUNT], nisa = 0;
  printf("bssl kernels ABI %d, best path %s; testing:", bssl_abi_version(), bssl_isa_name(bssl_isa_best()));
  for (int i = 0; i < BSSL_ISA_COUNT; i++)
    if (bssl_isa_supported(i)) {
      isas[nisa++] = i;
      printf(" %s", bssl_isa_name(i));
    }
  printf("\n");
  /* bad arguments are refused, not run */
  CHECK(bssl_bconv2d(NULL, 1, 4, 4, 1, NULL, 8, 3, 3, 1, 1, 9, BSSL_OUT_DOT, NULL, NULL, NULL,
                     NULL, NULL, 1) == BSSL_EARG, "NULL buffers accepted");
  {
    uint64_t x[16] = {0}, w[32 * 9] = {0};
    int32_t out[16 * 8];
    CHECK(bssl_bconv2d(x, 1, 4, 4, 1, w, 8, 3, 3, 1, 1, 9 * 65, BSSL_OUT_DOT, NULL, NULL, NULL,
                       NULL, out, 1) == BSSL_EARG, "kreal inconsistent with cw accepted");
    CHECK(bssl_bconv2d(x, 1, 4, 4, 1, w, 8, 3, 3, 1, 1, 9, BSSL_OUT_FLOAT, NULL, NULL, NULL,
                       NULL, out, 1) == BSSL_EARG, "float mode without mul/add accepted");
  }
  for (int i = 0; i < nisa; i++) {
    bssl_isa_set(isas[i]);
    int64_t ops = 0;
    bssl_peak_xor_popcount(1000, &ops);
    CHECK(ops > 0, "peak loop on %s did no work", bssl_isa_name(isas[i]));
  }
  for (int t = 0; t < cases && g_fail < 10; t++) {
    shape_t s = random_shape();
    run_case(&s, isas, nisa);
  }
  if (g_fail) {
    printf("%d failures\n", g_fail);
    return 1;
  }
  printf("OK: %d random cases, every path equal to the scalar reference\n", cases);
  return 0;
}
