/* Loader fuzzing for the native runtime: damaged copies of a valid model.bssl, each loaded (and
 * run when it loads). Built with -fsanitize=address,undefined by tests/test_runtime_fuzz.py; any
 * out-of-bounds access, leak or undefined behaviour aborts with a sanitizer report.
 *
 *   fuzz_runtime MODEL ITERATIONS [SEED]
 *
 * Mutations: flipped bytes (caught by the checksum), flipped bytes with the CRC-32 recomputed
 * (reach the validators), truncation, extension, and header fields set to extreme values. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bssl_runtime.h"

static uint64_t g_s = 0x853c49e6748fea9bULL;
static uint64_t rnd(void) {
  g_s ^= g_s << 13;
  g_s ^= g_s >> 7;
  g_s ^= g_s << 17;
  return g_s;
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

static void reseal(uint8_t *b, size_t n) {
  if (n < 4) return;
  const uint32_t c = crc32_of(b, n - 4);
  for (int i = 0; i < 4; i++) b[n - 4 + i] = (uint8_t)(c >> (8 * i));
}

static void put32(uint8_t *b, size_t n, size_t off, uint32_t v) {
  if (off + 4 <= n)
    for (int i = 0; i < 4; i++) b[off + i] = (uint8_t)(v >> (8 * i));
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fuzz_runtime MODEL ITERATIONS [SEED]\n");
    return 2;
  }
  FILE *fh = fopen(argv[1], "rb");
  if (!fh) return 2;
  fseek(fh, 0, SEEK_END);
  const long size = ftell(fh);
  fseek(fh, 0, SEEK_SET);
  uint8_t *orig = (uint8_t *)malloc((size_t)size);
  if (!orig || fread(orig, 1, (size_t)size, fh) != (size_t)size) return 2;
  fclose(fh);
  const long iters = atol(argv[2]);
  if (argc > 3) g_s ^= (uint64_t)atoll(argv[3]) * 0x9e3779b97f4a7c15ULL;

  bssl_model *m = NULL;
  if (bssl_model_load_memory(orig, (size_t)size, &m) != 0) {
    fprintf(stderr, "the valid model does not load: %s\n", bssl_model_last_error());
    return 3;
  }
  int32_t c, h, w;
  bssl_model_input_shape(m, &c, &h, &w);
  bssl_model_free(m);
  float *x = (float *)calloc((size_t)c * h * w, sizeof(float));
  for (int64_t i = 0; i < (int64_t)c * h * w; i++) x[i] = (float)((int64_t)(rnd() % 2001) - 1000) / 500.0f;

  long loaded = 0, rejected = 0, ran = 0;
  int codes[32] = {0};
  /* the header, tables and ops hold the fields worth hitting; they sit in the first bytes */
  const size_t head = (size_t)size < 8192 ? (size_t)size : 8192;
  for (long it = 0; it < iters; it++) {
    size_t n = (size_t)size;
    uint8_t *b = (uint8_t *)malloc(n + 64);
    memcpy(b, orig, n);
    const int kind = (int)(rnd() % 6);
    if (kind == 0) { /* a few flipped bytes anywhere; the checksum must catch them */
      for (int k = 1 + (int)(rnd() % 4); k > 0; k--) b[rnd() % n] ^= (uint8_t)(1 + rnd() % 255);
    } else if (kind == 1 || kind == 2) { /* flipped bytes in the structured part, resealed */
      for (int k = 1 + (int)(rnd() % 3); k > 0; k--) {
        const size_t at = kind == 1 ? rnd() % head : rnd() % n;
        b[at] ^= (uint8_t)(1u << (rnd() % 8));
      }
      reseal(b, n);
    } else if (kind == 3) { /* truncation, resealed or not */
      n = (size_t)(rnd() % n);
      if (rnd() & 1) reseal(b, n);
    } else if (kind == 4) { /* extreme values in a header or table word, resealed */
      static const uint32_t vals[] = {0, 1, 0x7fffffffu, 0x80000000u, 0xffffffffu, 0xfffffffeu, 64, 65536};
      put32(b, n, (rnd() % (head / 4)) * 4, vals[rnd() % 8]);
      reseal(b, n);
    } else { /* extension with junk, file size field kept or updated */
      const size_t extra = 1 + rnd() % 64;
      for (size_t i = 0; i < extra; i++) b[n + i] = (uint8_t)rnd();
      n += extra;
      if (rnd() & 1) put32(b, n, 16, (uint32_t)n);
      reseal(b, n);
    }
    bssl_model *mm = NULL;
    const int rc = bssl_model_load_memory(b, n, &mm);
    if (rc == 0) {
      loaded++;
      float logits[4096];
      const int32_t ncls = bssl_model_num_classes(mm);
      float *lg = ncls <= 4096 ? logits : (float *)malloc((size_t)ncls * 4);
      float *ft = (float *)malloc((size_t)bssl_model_feature_dim(mm) * 4);
      if (bssl_model_run(mm, x, 1, lg, ft) == 0) ran++;
      if (lg != logits) free(lg);
      free(ft);
      bssl_model_free(mm);
    } else {
      rejected++;
      if (mm) {
        fprintf(stderr, "iteration %ld: failed load returned a model\n", it);
        return 4;
      }
      if (!bssl_model_last_error()[0]) {
        fprintf(stderr, "iteration %ld: error %d without a message\n", it, rc);
        return 4;
      }
      codes[(-rc) & 31]++;
    }
    free(b);
  }
  printf("iterations %ld loaded %ld ran %ld rejected %ld", iters, loaded, ran, rejected);
  for (int i = 0; i < 32; i++)
    if (codes[i]) printf(" E%d:%d", -i, codes[i]);
  printf("\n");
  free(x);
  free(orig);
  return 0;
}
