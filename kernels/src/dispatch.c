/* Public entry points: code-path choice (CPU features, BSSL_KERNELS_ISA override), argument
 * checks, one-padding, the tiled driver and its threads (split over output rows). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__arm__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
#endif

static _Thread_local char g_err[256];

static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
  return code;
}

int bssl_abi_version(void) { return BSSL_KERNELS_ABI_VERSION; }
const char *bssl_last_error(void) { return g_err; }

static const char *const k_names[BSSL_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

const char *bssl_isa_name(int isa) {
  return isa >= 0 && isa < BSSL_ISA_COUNT ? k_names[isa] : "unknown";
}

static const bssl_isa_impl *impl_of(int isa) {
  switch (isa) {
#if defined(BSSL_HAVE_AVX2)
    case BSSL_ISA_AVX2: return &bssl_impl_avx2;
#endif
#if defined(BSSL_HAVE_AVX512)
    case BSSL_ISA_AVX512: return &bssl_impl_avx512;
#endif
#if defined(BSSL_HAVE_NEON)
    case BSSL_ISA_NEON: return &bssl_impl_neon;
#endif
    default: return NULL;
  }
}

int bssl_isa_supported(int isa) {
  if (isa == BSSL_ISA_SCALAR) return 1;
  if (!impl_of(isa)) return 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == BSSL_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  if (isa == BSSL_ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(__aarch64__)
  if (isa == BSSL_ISA_NEON) return 1; /* Advanced SIMD is mandatory on AArch64 */
#elif defined(__arm__) && defined(__linux__)
  if (isa == BSSL_ISA_NEON) return (getauxval(AT_HWCAP) & HWCAP_NEON) != 0;
#endif
  return 0;
}

int bssl_isa_best(void) {
  static const int order[] = {BSSL_ISA_AVX512, BSSL_ISA_AVX2, BSSL_ISA_NEON};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
    if (bssl_isa_supported(order[i])) return order[i];
  return BSSL_ISA_SCALAR;
}

static int g_isa = -1;

int bssl_isa_get(void) {
  int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
  if (isa >= 0) return isa;
  isa = bssl_isa_best();
  const char *env = getenv("BSSL_KERNELS_ISA");
  if (env && *env) {
    int found = -1;
    for (int i = 0; i < BSSL_ISA_COUNT; i++)
      if (strcmp(env, k_names[i]) == 0) found = i;
    if (found >= 0 && bssl_isa_supported(found))
      isa = found;
    else /* the Python binding raises on this; C callers get the best path and a message */
      fail(BSSL_EISA, "BSSL_KERNELS_ISA=%s is not a supported path here; using %s", env,
           k_names[isa]);
  }
  __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
  return isa;
}

int bssl_isa_set(int isa) {
  if (isa < 0 || isa >= BSSL_ISA_COUNT) return fail(BSSL_EARG, "unknown code path %d", isa);
  if (!bssl_isa_supported(isa))
    return fail(BSSL_EISA, "code path %s is not compiled in or not supported by this CPU",
                k_names[isa]);
  __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
  return 0;
}

int bssl_pack_f32(const float *x, int64_t npix, int32_t channels, const float *bias,
                  uint64_t *out) {
  if (npix < 0 || channels < 1) return fail(BSSL_EARG, "pack: need npix >= 0 and channels >= 1");
  if ((!x || !out) && npix > 0) return fail(BSSL_EARG, "pack: NULL buffer");
  const bssl_isa_impl *impl = impl_of(bssl_isa_get());
  (impl ? impl->pack : bssl_pack_scalar)(x, npix, channels, bias, out);
  return 0;
}

int64_t bssl_blocked_weights_words(int32_t out_channels, int64_t k_words) {
  if (out_channels < 1 || k_words < 1) return fail(BSSL_EARG, "blocked size: O and K must be >= 1");
  return (int64_t)((out_channels + BSSL_BLOCK_O - 1) / BSSL_BLOCK_O) * k_words * BSSL_BLOCK_O;
}

int bssl_block_weights(const uint64_t *w, int32_t out_channels, int64_t k_words, uint64_t *out) {
  if (!w || !out || out_channels < 1 || k_words < 1)
    return fail(BSSL_EARG, "block_weights: bad arguments");
  const int32_t nblk = (out_channels + BSSL_BLOCK_O - 1) / BSSL_BLOCK_O;
  for (int32_t b = 0; b < nblk; b++)
    for (int64_t k = 0; k < k_words; k++)
      for (int32_t j = 0; j < BSSL_BLOCK_O; j++) {
        const int32_t o = b * BSSL_BLOCK_O + j;
        out[((int64_t)b * k_words + k) * BSSL_BLOCK_O + j] = o < out_channels ? w[(int64_t)o * k_words + k] : 0;
      }
  return 0;
}

/* ---- tiled driver ---- */

/* filling the one-padded input: packing float rows (xf) or copying packed ones (x) */
typedef struct {
  const float *xf, *bias;
  const uint64_t *x;
  int32_t channels, h, w, cw, hp, wp, pad;
  uint64_t *dst;
  bssl_pack_fn pack;
} rows_args;

typedef struct {
  const bssl_isa_impl *impl;
  const bssl_conv_args *a;
  const uint64_t *x; /* padded input */
  int32_t n, hp, wp, cw, ho, wo, stride;
  int64_t t0, t1;       /* tile range of this worker, or input rows when `rows` is set */
  const rows_args *rows; /* set: this job fills input rows t0..t1-1 instead */
  bssl_range_fn fn;      /* set: this job runs fn(ctx, t0, t1) instead */
  void *ctx;
} work_t;

static void fill_rows(const rows_args *r, int64_t r0, int64_t r1) {
  for (int64_t row = r0; row < r1; row++) { /* row = b * h + y */
    const int64_t b = row / r->h, y = row % r->h;
    uint64_t *dst = r->dst + ((b * r->hp + y + r->pad) * r->wp + r->pad) * r->cw;
    if (r->xf)
      r->pack(r->xf + row * r->w * r->channels, r->w, r->channels, r->bias, dst);
    else
      memcpy(dst, r->x + row * r->w * r->cw, (size_t)r->w * r->cw * 8);
  }
}

/* Tiles are MR consecutive output pixels in raster order over the whole batch (a tile may
 * span rows, so narrow maps such as 7x7 waste no lanes); the tiles of a chunk share their
 * input rows and stream one weight block at a time through L1. */
#define CHUNK_TILES 16

static void *worker(void *arg) {
  const work_t *wk = (const work_t *)arg;
  if (wk->fn) {
    wk->fn(wk->ctx, wk->t0, wk->t1);
    return NULL;
  }
  if (wk->rows) {
    fill_rows(wk->rows, wk->t0, wk->t1);
    return NULL;
  }
  const bssl_conv_args *a = wk->a;
  const int mr = wk->impl->mr;
  const int64_t total = (int64_t)wk->n * wk->ho * wk->wo, hw = (int64_t)wk->ho * wk->wo;
  const uint64_t *ap[CHUNK_TILES][BSSL_MR_MAX];
  for (int64_t cs = wk->t0; cs < wk->t1; cs += CHUNK_TILES) {
    const int64_t ce = cs + CHUNK_TILES < wk->t1 ? cs + CHUNK_TILES : wk->t1;
    /* walk the chunk's pixels in raster order: one division per chunk, not per pixel */
    int64_t p = cs * mr;
    int64_t b = p / hw, oy = (p % hw) / wk->wo, ox = (p % hw) % wk->wo;
    for (int64_t t = cs; t < ce; t++) {
      const int64_t p0 = t * mr;
      const int32_t mv = total - p0 < mr ? (int32_t)(total - p0) : mr;
      for (int m = 0; m < mv; m++) {
        ap[t - cs][m] = wk->x + ((b * wk->hp + oy * wk->stride) * wk->wp + ox * wk->stride) * wk->cw;
        if (++ox == wk->wo) {
          ox = 0;
          if (++oy == wk->ho) {
            oy = 0;
            b++;
          }
        }
      }
      for (int m = mv; m < mr; m++) ap[t - cs][m] = ap[t - cs][mv - 1]; /* past the end: repeat */
      if (a->mode == BSSL_OUT_BITS)
        memset((uint64_t *)a->out + p0 * a->out_words, 0, (size_t)mv * a->out_words * 8);
    }
    for (int32_t ob = 0; ob < a->nblk; ob++)
      for (int64_t t = cs; t < ce; t++) {
        const int64_t p0 = t * mr;
        const int32_t mv = total - p0 < mr ? (int32_t)(total - p0) : mr;
        wk->impl->tile(a, ob, ap[t - cs], mv, p0);
      }
  }
  return NULL;
}

/* smallest work (word XORs) worth an extra thread; BSSL_KERNELS_THREAD_WORK overrides */
static int64_t g_min_work = -1;

int64_t bssl_thread_min_work_get(void) {
  int64_t v = __atomic_load_n(&g_min_work, __ATOMIC_RELAXED);
  if (v >= 0) return v;
  v = 1 << 18;
  const char *env = getenv("BSSL_KERNELS_THREAD_WORK");
  if (env && *env) {
    char *end = NULL;
    const long long e = strtoll(env, &end, 10);
    if (end && *end == 0 && e >= 0) v = e;
  }
  __atomic_store_n(&g_min_work, v, __ATOMIC_RELAXED);
  return v;
}

int bssl_thread_min_work_set(int64_t words) {
  if (words < 0) return fail(BSSL_EARG, "thread_min_work must be >= 0");
  __atomic_store_n(&g_min_work, words, __ATOMIC_RELAXED);
  return 0;
}

/* ---- persistent worker threads ----
 * Creating threads per call costs tens of microseconds, as much as a small layer takes, so
 * workers are created once and woken per call. Parallel calls from several caller threads are
 * serialised; a forked child (e.g. a torch DataLoader worker) starts with an empty pool. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  int alive;        /* worker threads running */
  uint64_t gen;     /* job generation */
  int pending;      /* workers that have not finished the current generation */
  work_t *jobs;     /* worker i (1-based) runs jobs[i] when i < njobs */
  int64_t njobs;
} pool_t;

static pool_t g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        0, 0, 0, NULL, 0};
static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;

static void pool_after_fork_child(void) {
  pthread_mutex_init(&g_pool.mu, NULL);
  pthread_cond_init(&g_pool.start, NULL);
  pthread_cond_init(&g_pool.done, NULL);
  pthread_mutex_init(&g_call_mu, NULL);
  g_pool.alive = 0;
  g_pool.pending = 0;
  g_pool.jobs = NULL;
  g_pool.njobs = 0;
}

static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* generation current when worker i was created: it owes the jobs of every later one */
static uint64_t g_born_gen[65];

static void *pool_main(void *arg) {
  const int idx = (int)(intptr_t)arg;
  pthread_mutex_lock(&g_pool.mu);
  uint64_t seen = g_born_gen[idx];
  for (;;) {
    while (g_pool.gen == seen) pthread_cond_wait(&g_pool.start, &g_pool.mu);
    seen = g_pool.gen;
    if (idx < g_pool.njobs) {
      work_t *job = &g_pool.jobs[idx];
      pthread_mutex_unlock(&g_pool.mu);
      worker(job);
      pthread_mutex_lock(&g_pool.mu);
    }
    if (--g_pool.pending == 0) pthread_cond_signal(&g_pool.done);
  }
  return NULL;
}

#define FUSED_EPILOGUE_WORDS 8

static _Thread_local int32_t g_last_split = 1;
int32_t bssl_last_split(void) { return g_last_split; }
void bssl_last_split_reset(void) { g_last_split = 1; }

/* runs jobs[0] on the caller and jobs[1..] on pool workers; returns how many jobs ran (all
 * unless the pool could not grow, then the caller runs the rest) */
static int64_t run_jobs(work_t *jobs, int64_t n) {
  if (n <= 1) {
    worker(&jobs[0]);
    g_last_split = 1;
    return n;
  }
  pthread_once(&g_fork_once, pool_register_fork);
  pthread_mutex_lock(&g_call_mu);
  pthread_mutex_lock(&g_pool.mu);
  while (g_pool.alive < n - 1) {
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    g_born_gen[g_pool.alive + 1] = g_pool.gen;
    const int ok = pthread_create(&tid, &attr, pool_main, (void *)(intptr_t)(g_pool.alive + 1)) == 0;
    pthread_attr_destroy(&attr);
    if (!ok) break;
    g_pool.alive++;
  }
  if (g_pool.alive < n - 1) n = g_pool.alive + 1; /* fewer threads than asked: the jobs merge below */
  g_last_split = (int32_t)n;
  g_pool.jobs = jobs;
  g_pool.njobs = n;
  g_pool.pending = g_pool.alive;
  g_pool.gen++;
  pthread_cond_broadcast(&g_pool.start);
  pthread_mutex_unlock(&g_pool.mu);
  worker(&jobs[0]);
  pthread_mutex_lock(&g_pool.mu);
  while (g_pool.pending > 0) pthread_cond_wait(&g_pool.done, &g_pool.mu);
  g_pool.jobs = NULL;
  pthread_mutex_unlock(&g_pool.mu);
  pthread_mutex_unlock(&g_call_mu);
  return n;
}

static int check_mode(int32_t mode, const float *mul, const float *add, const int32_t *thr,
                      const uint8_t *flip, const void *out) {
  if (!out) return fail(BSSL_EARG, "output buffer is NULL");
  if (mode == BSSL_OUT_FLOAT && (!mul || !add))
    return fail(BSSL_EARG, "float output needs mul and add arrays");
  if (mode == BSSL_OUT_BITS && (!thr || !flip))
    return fail(BSSL_EARG, "bits output needs thr and flip arrays");
  if (mode < BSSL_OUT_DOT || mode > BSSL_OUT_BITS) return fail(BSSL_EARG, "unknown output mode %d", mode);
  return 0;
}

/* The geometry and output of one convolution over an already padded input of padded width wp;
 * every field not named here (thr, flip, fused, ...) starts zero. */
static bssl_conv_args conv_args(int32_t wp, int32_t cw, int32_t kh, int32_t kw, const uint64_t *wblk,
                                int32_t out_channels, int32_t kreal, int32_t mode, const float *mul,
                                const float *add, void *out) {
  return (bssl_conv_args){.row_words = (int64_t)wp * cw,
                          .seg_words = kw * cw,
                          .kh = kh,
                          .k_words = (int64_t)kh * kw * cw,
                          .wblk = wblk,
                          .out_channels = out_channels,
                          .nblk = (out_channels + BSSL_BLOCK_O - 1) / BSSL_BLOCK_O,
                          .mode = mode,
                          .kreal = kreal,
                          .mul = mul,
                          .add = add,
                          .out = out};
}

/* Splits the output tiles into contiguous bands (bands of output rows), one per thread. The work
 * counts word-XORs, words_per_output for each output value; a thread is only worth waking for
 * min_work of it (~2^18 or ~16M binary MACs by default), and the pool holds 64 at most. */
static void run_tiles(const bssl_isa_impl *impl, const bssl_conv_args *a, const uint64_t *x, int32_t n,
                      int32_t hp, int32_t wp, int32_t cw, int32_t ho, int32_t wo, int32_t stride,
                      int64_t words_per_output, int32_t threads) {
  const int64_t ntiles = ((int64_t)n * ho * wo + impl->mr - 1) / impl->mr;
  const int64_t work = ntiles * impl->mr * (int64_t)a->nblk * BSSL_BLOCK_O * words_per_output;
  const int64_t min_work = bssl_thread_min_work_get();
  int64_t nth = threads < ntiles ? threads : ntiles;
  if (min_work > 0 && nth > work / min_work) nth = work / min_work > 1 ? work / min_work : 1;
  if (nth > 64) nth = 64;
  work_t works[64];
  for (int64_t i = 0; i < nth; i++)
    works[i] = (work_t){impl, a, x, n, hp, wp, cw, ho, wo, stride, ntiles * i / nth, ntiles * (i + 1) / nth,
                        NULL, NULL, NULL};
  const int64_t ran = run_jobs(works, nth);
  for (int64_t i = ran; i < nth; i++) worker(&works[i]); /* the pool could not grow that far */
}

/* x: packed input; or xf (+ bias): float NHWC input with `channels` channels, packed here
 * straight into the padded buffer */
static int bconv(const uint64_t *x, const float *xf, const float *bias, int32_t channels,
                 int32_t n, int32_t h, int32_t w, int32_t cw, const uint64_t *wblk,
                 int32_t out_channels, int32_t kh, int32_t kw, int32_t stride, int32_t pad,
                 int32_t kreal, int32_t mode, const float *mul, const float *add,
                 const int32_t *thr, const uint8_t *flip, void *out, int32_t threads) {
  if (n < 0 || h < 1 || w < 1 || cw < 1 || out_channels < 1 || kh < 1 || kw < 1 || stride < 1 ||
      pad < 0 || threads < 1)
    return fail(BSSL_EARG, "bconv2d: bad shape (n=%d h=%d w=%d cw=%d O=%d k=%dx%d stride=%d pad=%d threads=%d)",
                n, h, w, cw, out_channels, kh, kw, stride, pad, threads);
  if (h + 2 * pad < kh || w + 2 * pad < kw)
    return fail(BSSL_EARG, "bconv2d: kernel %dx%d larger than padded input %dx%d", kh, kw,
                h + 2 * pad, w + 2 * pad);
  if (kreal % (kh * kw) != 0 || (kreal / (kh * kw) + 63) / 64 != cw)
    return fail(BSSL_EARG, "bconv2d: kreal=%d is not kh*kw*C for a C packed into %d words", kreal, cw);
  if ((!x && !xf) || !wblk) return fail(BSSL_EARG, "bconv2d: NULL input or weights");
  int rc = check_mode(mode, mul, add, thr, flip, out);
  if (rc) return rc;
  if (n == 0) return 0;

  const int isa = bssl_isa_get();
  if (isa == BSSL_ISA_SCALAR) {
    uint64_t *packed = NULL;
    if (xf) {
      packed = (uint64_t *)malloc((size_t)n * h * w * cw * 8);
      if (!packed) return fail(BSSL_ENOMEM, "bconv2d: cannot allocate the packed input");
      bssl_pack_scalar(xf, (int64_t)n * h * w, channels, bias, packed);
      x = packed;
    }
    rc = bssl_ref_bconv2d(x, n, h, w, cw, wblk, out_channels, kh, kw, stride, pad, kreal, mode,
                          mul, add, thr, flip, out);
    free(packed);
    return rc;
  }
  const bssl_isa_impl *impl = impl_of(isa);

  const int32_t ho = (h + 2 * pad - kh) / stride + 1, wo = (w + 2 * pad - kw) / stride + 1;
  const int32_t hp = h + 2 * pad, wp = w + 2 * pad;
  uint64_t *padded = NULL;
  const uint64_t *xin = x;
  if (pad > 0 || xf) {
    /* one-padding is the zero word, so a zeroed frame around the rows does it */
    padded = (uint64_t *)(pad > 0 ? calloc((size_t)n * hp * wp * cw, 8) : malloc((size_t)n * hp * wp * cw * 8));
    if (!padded) return fail(BSSL_ENOMEM, "bconv2d: cannot allocate the padded input");
    const rows_args ra = {xf, bias, x, channels, h, w, cw, hp, wp, pad, padded, impl->pack};
    /* packing floats is worth other threads from about min_work / 4 values each (2^16 by
     * default; 0 always splits); copies are not */
    const int64_t rows = (int64_t)n * h, mw = bssl_thread_min_work_get() / 4;
    int64_t np_ = !xf ? 1 : mw > 0 ? (int64_t)n * h * w * channels / mw : threads;
    if (np_ > threads) np_ = threads;
    if (np_ > rows) np_ = rows;
    if (np_ > 64) np_ = 64;
    if (np_ < 1) np_ = 1;
    work_t fills[64];
    for (int64_t i = 0; i < np_; i++)
      fills[i] = (work_t){.rows = &ra, .t0 = rows * i / np_, .t1 = rows * (i + 1) / np_};
    const int64_t ran = run_jobs(fills, np_);
    for (int64_t i = ran; i < np_; i++) worker(&fills[i]);
    xin = padded;
  }

  bssl_conv_args a = conv_args(wp, cw, kh, kw, wblk, out_channels, kreal, mode, mul, add, out);
  a.thr = thr;
  a.flip = flip;
  a.out_words = (out_channels + 63) / 64;
  run_tiles(impl, &a, xin, n, hp, wp, cw, ho, wo, stride, a.k_words, threads);
  free(padded);
  return rc;
}

int bssl_bconv2d_fused(const uint64_t *x, int32_t n, int32_t hp, int32_t wp, int32_t cw,
                       const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                       int32_t stride, int32_t kreal, const bssl_fused_epilogue *ep,
                       int32_t threads) {
  if (n < 0 || hp < kh || wp < kw || cw < 1 || out_channels < 1 || kh < 1 || kw < 1 || stride < 1 ||
      threads < 1)
    return fail(BSSL_EARG, "bconv2d_fused: bad shape (n=%d hp=%d wp=%d cw=%d O=%d k=%dx%d stride=%d threads=%d)",
                n, hp, wp, cw, out_channels, kh, kw, stride, threads);
  if (kreal % (kh * kw) != 0 || (kreal / (kh * kw) + 63) / 64 != cw)
    return fail(BSSL_EARG, "bconv2d_fused: kreal=%d is not kh*kw*C for a C packed into %d words", kreal, cw);
  if (!x || !wblk || !ep || !ep->mul || !ep->add || !ep->out)
    return fail(BSSL_EARG, "bconv2d_fused: NULL input, weights, mul/add or output");
  if (ep->nbits < 0 || ep->nbits > 2) return fail(BSSL_EARG, "bconv2d_fused: nbits=%d (0..2)", ep->nbits);
  for (int i = 0; i < ep->nbits; i++)
    if (!ep->bits[i].dst || !ep->bits[i].bias) return fail(BSSL_EARG, "bconv2d_fused: NULL bits output %d", i);
  if (ep->corr && (!ep->corr_row || !ep->corr_col)) return fail(BSSL_EARG, "bconv2d_fused: correction without row/col classes");
  if (n == 0) return 0;
  bssl_conv_args a = conv_args(wp, cw, kh, kw, wblk, out_channels, kreal, BSSL_OUT_FUSED, ep->mul, ep->add, ep->out);
  a.fused = ep;
  a.ho = (hp - kh) / stride + 1;
  a.wo = (wp - kw) / stride + 1;
  const int isa = bssl_isa_get();
  if (isa == BSSL_ISA_SCALAR) {
    bssl_ref_bconv2d_fused(&a, x, n, hp, wp, cw, kh, kw, stride);
    return 0;
  }
  const bssl_isa_impl *impl = impl_of(isa);
  /* the fused epilogue (scale, residual, RPReLU, float store and sign bits per output value)
   * costs about as much as FUSED_EPILOGUE_WORDS word-XORs: BSSL_RUNTIME_PROFILE puts a 1x1 conv
   * over one input word (ReActNet-A's 112x112 expansion) at about half the time of the 3x3 conv
   * over nine words with the same outputs. Counting it lets the many-output, short-K 1x1 convs
   * split over threads like the others. */
  run_tiles(impl, &a, x, n, hp, wp, cw, a.ho, a.wo, stride, a.k_words + FUSED_EPILOGUE_WORDS, threads);
  return 0;
}

void bssl_parallel_for(int64_t n, int32_t threads, bssl_range_fn fn, void *ctx) {
  if (n <= 0) return;
  int64_t nth = threads < 1 ? 1 : threads;
  if (nth > n) nth = n;
  if (nth > 64) nth = 64;
  work_t works[64];
  for (int64_t i = 0; i < nth; i++)
    works[i] = (work_t){.t0 = n * i / nth, .t1 = n * (i + 1) / nth, .fn = fn, .ctx = ctx};
  const int64_t ran = run_jobs(works, nth);
  for (int64_t i = ran; i < nth; i++) worker(&works[i]);
}

int bssl_bconv2d(const uint64_t *x, int32_t n, int32_t h, int32_t w, int32_t cw,
                 const uint64_t *wblk, int32_t out_channels, int32_t kh, int32_t kw,
                 int32_t stride, int32_t pad, int32_t kreal, int32_t mode, const float *mul,
                 const float *add, const int32_t *thr, const uint8_t *flip, void *out,
                 int32_t threads) {
  return bconv(x, NULL, NULL, 0, n, h, w, cw, wblk, out_channels, kh, kw, stride, pad, kreal, mode,
               mul, add, thr, flip, out, threads);
}

int bssl_bconv2d_f32(const float *x, const float *bias, int32_t n, int32_t h, int32_t w,
                     int32_t channels, const uint64_t *wblk, int32_t out_channels, int32_t kh,
                     int32_t kw, int32_t stride, int32_t pad, int32_t mode, const float *mul,
                     const float *add, const int32_t *thr, const uint8_t *flip, void *out,
                     int32_t threads) {
  if (channels < 1 || kh < 1 || kw < 1 || !x)
    return fail(BSSL_EARG, "bconv2d_f32: bad input (channels=%d, k=%dx%d)", channels, kh, kw);
  return bconv(NULL, x, bias, channels, n, h, w, (channels + 63) / 64, wblk, out_channels, kh, kw,
               stride, pad, kh * kw * channels, mode, mul, add, thr, flip, out, threads);
}

int bssl_bgemm(const uint64_t *a, int64_t m, int32_t kw, const uint64_t *wblk, int32_t n_out,
               int32_t kreal, int32_t mode, const float *mul, const float *add,
               const int32_t *thr, const uint8_t *flip, void *out, int32_t threads) {
  if (m < 0 || m > 0x7fffffff) return fail(BSSL_EARG, "bgemm: m=%lld out of range", (long long)m);
  if (m == 0) return check_mode(mode, mul, add, thr, flip, out);
  /* a GEMM is a 1x1 convolution over one row of m pixels */
  return bssl_bconv2d(a, 1, 1, (int32_t)m, kw, wblk, n_out, 1, 1, 1, 0, kreal, mode, mul, add,
                      thr, flip, out, threads);
}

uint64_t bssl_peak_xor_popcount(int64_t iters, int64_t *bit_ops) {
  const bssl_isa_impl *impl = impl_of(bssl_isa_get());
  return (impl ? impl->peak : bssl_peak_scalar)(iters, bit_ops);
}
