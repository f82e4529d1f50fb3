/* bssl-infer: run a model.bssl file on an input and print the top-5 classes and the latency.
 *
 *   bssl-infer MODEL [--input x.npy|x.raw|image.ppm] [--threads N] [--repeat K] [--top K] [--json]
 *
 * .npy: float32/float64 (C,H,W) or (N,C,H,W), already normalised as the student takes it;
 * .raw: float32 values, a multiple of C*H*W; .ppm/.pgm (binary P6/P5, 8 bit): pixels scaled to
 * [0,1], resized (bilinear) to the model's input and normalised with the file's mean/std.
 * Without --input a fixed pseudo-random input is used (for timing). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include "bssl_runtime.h"

static int usage(void) {
  fprintf(stderr,
          "usage: bssl-infer MODEL [--input x.npy|x.raw|image.ppm] [--threads N] [--repeat K] [--top K] [--json]\n");
  return 2;
}

static int die(const char *msg, const char *what) {
  fprintf(stderr, "bssl-infer: %s%s%s\n", msg, what ? ": " : "", what ? what : "");
  return 2;
}

static unsigned char *read_all(const char *path, size_t *size) {
  FILE *fh = fopen(path, "rb");
  if (!fh) return NULL;
  unsigned char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      unsigned char *nb = (unsigned char *)realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(fh);
        return NULL;
      }
      buf = nb;
    }
    const size_t got = fread(buf + n, 1, cap - n, fh);
    n += got;
    if (got == 0) break;
  }
  fclose(fh);
  *size = n;
  return buf;
}

static int ends_with(const char *s, const char *suf) {
  const size_t a = strlen(s), b = strlen(suf);
  if (a < b) return 0;
  for (size_t i = 0; i < b; i++)
    if (tolower((unsigned char)s[a - b + i]) != suf[i]) return 0;
  return 1;
}

/* .npy: little-endian float32/float64, C order; returns the values and their count */
static float *load_npy(const unsigned char *b, size_t n, int64_t *count, char *err, size_t errlen) {
  if (n < 10 || memcmp(b, "\x93NUMPY", 6) != 0) {
    snprintf(err, errlen, "not a .npy file");
    return NULL;
  }
  const int major = b[6];
  size_t hl, hs;
  if (major == 1) {
    hl = (size_t)b[8] | (size_t)b[9] << 8;
    hs = 10;
  } else {
    if (n < 12) {
      snprintf(err, errlen, "truncated .npy header");
      return NULL;
    }
    hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    hs = 12;
  }
  if (hl > n - hs) {
    snprintf(err, errlen, "truncated .npy header");
    return NULL;
  }
  char hdr[4096];
  const size_t cp = hl < sizeof hdr - 1 ? hl : sizeof hdr - 1;
  memcpy(hdr, b + hs, cp);
  hdr[cp] = 0;
  int esize = 0;
  if (strstr(hdr, "'<f4'"))
    esize = 4;
  else if (strstr(hdr, "'<f8'"))
    esize = 8;
  else {
    snprintf(err, errlen, "only little-endian float32/float64 .npy arrays are read (header %.200s)", hdr);
    return NULL;
  }
  if (strstr(hdr, "'fortran_order': True")) {
    snprintf(err, errlen, "Fortran-order .npy arrays are not read; save a C-contiguous array");
    return NULL;
  }
  const char *sh = strstr(hdr, "'shape':");
  const char *lp = sh ? strchr(sh, '(') : NULL;
  if (!lp) {
    snprintf(err, errlen, "no shape in the .npy header");
    return NULL;
  }
  int64_t total = 1;
  for (const char *q = lp + 1; *q && *q != ')';) {
    if (isdigit((unsigned char)*q)) {
      char *end;
      const long long d = strtoll(q, &end, 10);
      if (d < 0 || (d > 0 && total > ((int64_t)1 << 40) / d)) {
        snprintf(err, errlen, "bad .npy shape");
        return NULL;
      }
      total *= d;
      q = end;
    } else {
      q++;
    }
  }
  const size_t data = hs + hl;
  if ((uint64_t)total * (uint64_t)esize > n - data) {
    snprintf(err, errlen, ".npy data is shorter than its shape says");
    return NULL;
  }
  float *out = (float *)malloc((size_t)(total ? total : 1) * 4);
  if (!out) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  for (int64_t i = 0; i < total; i++) {
    if (esize == 4) {
      memcpy(&out[i], b + data + 4 * i, 4);
    } else {
      double d;
      memcpy(&d, b + data + 8 * i, 8);
      out[i] = (float)d;
    }
  }
  *count = total;
  return out;
}

/* binary PPM (P6) / PGM (P5), 8 bit: bilinear resize to h x w, scale to [0,1], normalise */
static float *load_pnm(const unsigned char *b, size_t n, const bssl_model *m, char *err, size_t errlen) {
  int32_t c, h, w;
  bssl_model_input_shape(m, &c, &h, &w);
  if (n < 3 || b[0] != 'P' || (b[1] != '6' && b[1] != '5')) {
    snprintf(err, errlen, "not a binary PPM/PGM (P6/P5) image; convert PNG/JPEG with e.g. `convert x.jpg x.ppm` or pass .npy");
    return NULL;
  }
  const int chans = b[1] == '6' ? 3 : 1;
  long vals[3];
  size_t pos = 2;
  for (int i = 0; i < 3; i++) {
    while (pos < n && (isspace(b[pos]) || b[pos] == '#')) {
      if (b[pos] == '#')
        while (pos < n && b[pos] != '\n') pos++;
      else
        pos++;
    }
    long v = 0;
    int digits = 0;
    while (pos < n && isdigit(b[pos]) && v < 100000) {
      v = v * 10 + (b[pos++] - '0');
      digits++;
    }
    if (!digits) {
      snprintf(err, errlen, "bad PPM/PGM header");
      return NULL;
    }
    vals[i] = v;
  }
  pos++; /* one whitespace byte before the pixels */
  const long iw = vals[0], ih = vals[1], maxv = vals[2];
  if (iw < 1 || ih < 1 || maxv != 255 || pos > n || (uint64_t)iw * ih * chans > n - pos) {
    snprintf(err, errlen, "unsupported or truncated PPM/PGM (8-bit, maxval 255 only)");
    return NULL;
  }
  if (c != 3 && c != 1) {
    snprintf(err, errlen, "the model takes %d channels, not an image", c);
    return NULL;
  }
  float *mean = (float *)malloc((size_t)c * 4), *std = (float *)malloc((size_t)c * 4);
  float *out = (float *)malloc((size_t)c * h * w * 4);
  if (!mean || !std || !out) {
    free(mean);
    free(std);
    free(out);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  bssl_model_normalization(m, mean, std);
  const unsigned char *px = b + pos;
  for (int32_t ch = 0; ch < c; ch++)
    for (int32_t y = 0; y < h; y++)
      for (int32_t x = 0; x < w; x++) {
        /* bilinear with half-pixel centres, as torchvision's antialias-free resize */
        const double sy = ((double)y + 0.5) * ih / h - 0.5, sx = ((double)x + 0.5) * iw / w - 0.5;
        long y0 = (long)floor(sy), x0 = (long)floor(sx);
        const double fy = sy - y0, fx = sx - x0;
        long y1 = y0 + 1, x1 = x0 + 1;
        y0 = y0 < 0 ? 0 : y0 >= ih ? ih - 1 : y0;
        y1 = y1 < 0 ? 0 : y1 >= ih ? ih - 1 : y1;
        x0 = x0 < 0 ? 0 : x0 >= iw ? iw - 1 : x0;
        x1 = x1 < 0 ? 0 : x1 >= iw ? iw - 1 : x1;
        const int sc = chans == 3 ? ch : 0;
#define P(yy, xx) ((double)px[((yy) * iw + (xx)) * chans + sc])
        const double v = (1 - fy) * ((1 - fx) * P(y0, x0) + fx * P(y0, x1)) + fy * ((1 - fx) * P(y1, x0) + fx * P(y1, x1));
#undef P
        out[((int64_t)ch * h + y) * w + x] = (float)((v / 255.0 - mean[ch]) / std[ch]);
      }
  free(mean);
  free(std);
  return out;
}

/* peak resident set (VmHWM, kB) of this process; -1 where /proc is missing */
static long peak_rss_kb(void) {
  FILE *fh = fopen("/proc/self/status", "r");
  if (!fh) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, fh))
    if (strncmp(line, "VmHWM:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  fclose(fh);
  return kb;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    const unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static long parse_pos(const char *s, const char *what, int *ok) {
  char *end = NULL;
  errno = 0;
  const long v = strtol(s, &end, 10);
  if (errno || !end || *end || v < 1 || v > 1000000) {
    fprintf(stderr, "bssl-infer: %s must be a positive integer, got %s\n", what, s);
    *ok = 0;
  }
  return v;
}

int main(int argc, char **argv) {
  const long start_rss_kb = peak_rss_kb(); /* the empty process: before the model is loaded */
  const char *model_path = NULL, *input = NULL;
  long threads = 1, repeat = 1, top = 5;
  int json = 0, ok = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--json"))
      json = 1;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage();
      return 0;
    } else if (!strcmp(a, "--input") || !strcmp(a, "--threads") || !strcmp(a, "--repeat") || !strcmp(a, "--top")) {
      if (i + 1 >= argc) return usage();
      const char *v = argv[++i];
      if (!strcmp(a, "--input"))
        input = v;
      else if (!strcmp(a, "--threads"))
        threads = parse_pos(v, "--threads", &ok);
      else if (!strcmp(a, "--repeat"))
        repeat = parse_pos(v, "--repeat", &ok);
      else
        top = parse_pos(v, "--top", &ok);
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "bssl-infer: unknown option %s\n", a);
      return usage();
    } else if (!model_path)
      model_path = a;
    else
      return usage();
  }
  if (!ok) return 2;
  if (!model_path) return usage();
  if (threads > 64) return die("--threads must be at most 64", NULL);
  bssl_model *m = NULL;
  if (bssl_model_load(model_path, &m)) return die(bssl_model_last_error(), NULL);
  bssl_model_set_threads(m, (int32_t)threads);
  int32_t c, h, w;
  bssl_model_input_shape(m, &c, &h, &w);
  const int64_t per = (int64_t)c * h * w;
  const int32_t ncls = bssl_model_num_classes(m);
  if (top > ncls) top = ncls;
  if (top > 64) top = 64;
  float *x = NULL;
  int64_t nimg = 1;
  char err[512] = "";
  if (input) {
    size_t size = 0;
    unsigned char *buf = read_all(input, &size);
    if (!buf) {
      bssl_model_free(m);
      return die("cannot read input", input);
    }
    if (ends_with(input, ".npy")) {
      int64_t count = 0;
      x = load_npy(buf, size, &count, err, sizeof err);
      if (x && (count == 0 || count % per)) {
        snprintf(err, sizeof err, "%lld values are not a whole number of %dx%dx%d inputs", (long long)count, c, h, w);
        free(x);
        x = NULL;
      }
      nimg = x ? count / per : 0;
    } else if (ends_with(input, ".raw") || ends_with(input, ".bin")) {
      if (size == 0 || size % (per * 4)) {
        snprintf(err, sizeof err, "%zu bytes are not a whole number of float32 %dx%dx%d inputs", size, c, h, w);
      } else if ((x = (float *)malloc(size))) {
        memcpy(x, buf, size);
        nimg = (int64_t)(size / (per * 4));
      }
    } else if (ends_with(input, ".ppm") || ends_with(input, ".pgm") || ends_with(input, ".pnm")) {
      x = load_pnm(buf, size, m, err, sizeof err);
    } else {
      snprintf(err, sizeof err, "unknown input type (use .npy, .raw float32, or a binary .ppm/.pgm image)");
    }
    free(buf);
    if (!x) {
      bssl_model_free(m);
      return die(err[0] ? err : "out of memory", input);
    }
  } else {
    x = (float *)malloc((size_t)per * 4);
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (int64_t i = 0; x && i < per; i++) { /* fixed pseudo-random N(0,1)-ish values */
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      double u = 0;
      for (int k = 0; k < 4; k++) u += (double)((s >> (16 * k)) & 0xffff) / 65536.0;
      x[i] = (float)((u - 2.0) * 1.7320508);
    }
    if (!x) {
      bssl_model_free(m);
      return die("out of memory", NULL);
    }
  }
  float *logits = (float *)malloc((size_t)nimg * ncls * 4);
  double *lat = (double *)malloc((size_t)repeat * sizeof(double));
  if (!logits || !lat) {
    free(x);
    free(logits);
    free(lat);
    bssl_model_free(m);
    return die("out of memory", NULL);
  }
  int rc = 0;
  for (long r = 0; r < repeat && !rc; r++) { /* one image per timed call */
    const double t0 = now_ms();
    rc = bssl_model_run(m, x, 1, logits, NULL);
    lat[r] = now_ms() - t0;
  }
  if (!rc && nimg > 1) rc = bssl_model_run(m, x, (int32_t)nimg, logits, NULL);
  if (rc) {
    fprintf(stderr, "bssl-infer: %s\n", bssl_model_last_error());
    free(x);
    free(logits);
    free(lat);
    bssl_model_free(m);
    return 1;
  }
  qsort(lat, (size_t)repeat, sizeof(double), cmp_double);
  const double p50 = repeat % 2 ? lat[repeat / 2] : 0.5 * (lat[repeat / 2 - 1] + lat[repeat / 2]);
  /* p90 interpolated between order statistics, as numpy.percentile (bssl bench) computes it */
  const double q90 = 0.9 * (double)(repeat - 1);
  const long i90 = (long)q90;
  const double p90 = i90 + 1 < repeat ? lat[i90] + (q90 - (double)i90) * (lat[i90 + 1] - lat[i90]) : lat[i90];
  if (json) {
    struct utsname u;
    double mean = 0;
    for (long r = 0; r < repeat; r++) mean += lat[r] / (double)repeat;
    printf("{\"model\": ");
    json_string(bssl_model_name(m));
    printf(", \"machine\": ");
    json_string(uname(&u) == 0 ? u.machine : "");
    struct stat st;
    printf(", \"model_bytes\": %lld, \"input_shape\": [%d, %d, %d], \"threads\": %ld, \"repeat\": %ld, "
           "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"mean_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, \"images\": [",
           stat(model_path, &st) == 0 ? (long long)st.st_size : -1LL, c, h, w, threads, repeat, p50, p90, mean, lat[0],
           lat[repeat - 1]);
  } else
    printf("%s: %dx%dx%d -> %d classes, %ld thread%s\n", bssl_model_name(m), c, h, w, ncls, threads, threads > 1 ? "s" : "");
  for (int64_t b = 0; b < nimg; b++) {
    const float *lg = logits + b * ncls;
    int32_t idx[64];
    for (long k = 0; k < top; k++) { /* top-k by selection: k is small */
      int32_t best = -1;
      for (int32_t j = 0; j < ncls; j++) {
        int used = 0;
        for (long q = 0; q < k; q++) used |= idx[q] == j;
        if (!used && (best < 0 || lg[j] > lg[best])) best = j;
      }
      idx[k] = best;
    }
    if (json) {
      printf("%s{\"top\": [", b ? ", " : "");
      for (long k = 0; k < top; k++) {
        printf("%s{\"class\": %d, \"name\": ", k ? ", " : "", idx[k]);
        json_string(bssl_model_class_name(m, idx[k]));
        printf(", \"logit\": %.9g}", lg[idx[k]]);
      }
      printf("]}");
    } else {
      if (nimg > 1) printf("image %lld\n", (long long)b);
      for (long k = 0; k < top; k++) {
        const char *nm = bssl_model_class_name(m, idx[k]);
        printf("  %2ld. class %-5d %-24s logit %.4f\n", k + 1, idx[k], nm && *nm ? nm : "", lg[idx[k]]);
      }
    }
  }
  if (json)
    printf("], \"start_rss_kb\": %ld, \"peak_rss_kb\": %ld}\n", start_rss_kb, peak_rss_kb());
  else
    printf("latency p50 %.3f ms (min %.3f, max %.3f) over %ld run%s, batch 1\n", p50, lat[0], lat[repeat - 1], repeat,
           repeat > 1 ? "s" : "");
  free(x);
  free(logits);
  free(lat);
  bssl_model_free(m);
  return 0;
}
