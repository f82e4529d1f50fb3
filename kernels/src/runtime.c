/* bssl native runtime: loader (with full bounds checks), memory planner and executor of
 * model.bssl files. The format is specified in docs/model-format.md; the binary convolutions run
 * on the kernels of bssl_kernels.h through their fused epilogue. */
#define _POSIX_C_SOURCE 200809L
#include "bssl_runtime.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(BSSL_NO_CLONES)
#include <immintrin.h>
#endif

/* ---- errors ---- */

static _Thread_local char g_rt_err[320];

static int rt_fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_rt_err, sizeof g_rt_err, fmt, ap);
  va_end(ap);
  return code;
}

int bssl_runtime_format_version(void) { return BSSL_FORMAT_VERSION; }
const char *bssl_model_last_error(void) { return g_rt_err; }

/* ---- format constants (docs/model-format.md) ---- */

#define HEADER_BYTES 128
#define OP_WORDS 32
#define TENSOR_ENTRY 32
#define VALUE_ENTRY 16
#define NONE 0xffffffffu
#define MAX_DIM 65536
#define MAX_ELEMS ((int64_t)1 << 30)
#define MAX_KERNEL 31 /* the zero-padding correction keeps a bit mask of taps */

enum { OP_CONV = 1, OP_BCONV = 2, OP_AVGPOOL = 3, OP_MAXPOOL = 4, OP_GAP = 5, OP_LINEAR = 6 };
enum { DT_F32 = 1, DT_F16 = 2, DT_BITS = 3 };
static const char *const k_op_names[] = {"?", "conv", "bconv", "avgpool", "maxpool", "global_avgpool", "linear"};

typedef struct {
  int32_t c, h, w;
  int64_t bytes, off;
  int first, last; /* steps (0 = input copy, op i = step i + 1) */
  int32_t written; /* channels written so far while validating */
  int nprod;
} rvalue;

typedef struct {
  uint32_t dtype, ndim, dims[4];
  int64_t count;
  const void *raw;
  float *f; /* float view: in the file for f32, converted for f16 */
  int owned;
} rtensor;

typedef struct {
  int value, pad, hp, wp, cw, consumer, fused;
  const float *bias;
  int64_t bytes, off;
  int first, last;
} rpacked;

typedef struct {
  uint32_t type;
  uint32_t f[OP_WORDS];
  int pk;            /* BCONV: packed input buffer */
  int nzero, zero[2]; /* packed buffers zeroed before this op (first producer of a fused value) */
  int nbits, bits[2]; /* BCONV: packed buffers this op's epilogue writes */
  float *mul, *add;   /* BCONV: fused transform */
  float *corr;        /* BCONV with zero padding: correction classes */
  int32_t *crow, *ccol, ccols;
} rop;

struct bssl_model {
  uint8_t *file;
  size_t file_size;
  int32_t in_c, in_h, in_w, num_classes, feature_dim;
  uint32_t n_values, n_ops, n_tensors, features_value, logits_value;
  rvalue *values;
  rtensor *tensors;
  rop *ops;
  rpacked *packs;
  int npacks;
  uint8_t *arena;
  int64_t arena_bytes;
  float *mean, *std;
  char *strings; /* name, then the class names, NUL-terminated */
  const char *name;
  const char **classes;
  int32_t threads;
  bssl_range_fn conv_rows; /* the FP conv: AVX2+FMA or portable, the same results */
  float *zeros; /* cin zeros: the taps of FP convs outside the input */
  double *prof_ms; /* BSSL_RUNTIME_PROFILE=1: per-op thread CPU time, printed by bssl_model_free */
  int32_t *prof_split; /* ... and the most threads each op's last parallel call ran on */
  int64_t prof_runs;
};

static bssl_range_fn pick_conv_rows(void);

/* ---- little-endian reads from a checked range ---- */

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static float f32_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* CRC-32 (zlib / IEEE 802.3, reflected 0xEDB88320) */
static uint32_t g_crc_table[256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    g_crc_table[i] = c;
  }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  pthread_once(&g_crc_once, crc_init);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = g_crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u;
  if (e == 0) {
    if (m == 0) {
      u = sign;
    } else { /* subnormal: renormalise */
      int sh = 0;
      uint32_t mm = m;
      while (!(mm & 0x400)) {
        mm <<= 1;
        sh++;
      }
      u = sign | (uint32_t)(113 - sh) << 23 | (mm & 0x3ff) << 13;
    }
  } else if (e == 31) {
    u = sign | 0x7f800000u | m << 13;
  } else {
    u = sign | (e + 112) << 23 | m << 13;
  }
  return f32_of(u);
}

/* a section [off, off + len) of the file that must lie before the checksum */
static int in_file(const bssl_model *m, uint64_t off, uint64_t len) {
  const uint64_t body = m->file_size - 4;
  return off <= body && len <= body - off;
}

/* ---- loading ---- */

static int parse_header(bssl_model *m, uint64_t *offs) {
  const uint8_t *p = m->file;
  if (m->file_size < HEADER_BYTES + 4)
    return rt_fail(BSSL_RT_EFORMAT, "file too short for a model.bssl header (%zu bytes)", m->file_size);
  if (memcmp(p, "BSSLMODL", 8) != 0) return rt_fail(BSSL_RT_EFORMAT, "bad magic: not a model.bssl file");
  const uint32_t version = rd32(p + 8);
  if (version != BSSL_FORMAT_VERSION)
    return rt_fail(BSSL_RT_EVERSION, "format version %u; this runtime reads version %d", version,
                   BSSL_FORMAT_VERSION);
  if (rd32(p + 12) != HEADER_BYTES) return rt_fail(BSSL_RT_EFORMAT, "header size %u, expected %d", rd32(p + 12), HEADER_BYTES);
  const uint64_t fbytes = rd64(p + 16);
  if (fbytes != m->file_size)
    return rt_fail(BSSL_RT_EFORMAT, "file is %zu bytes but its header says %llu (truncated or padded)",
                   m->file_size, (unsigned long long)fbytes);
  const uint32_t want = rd32(p + m->file_size - 4), got = crc32_of(p, m->file_size - 4);
  if (want != got)
    return rt_fail(BSSL_RT_ECHECKSUM, "checksum mismatch (stored %08x, computed %08x): the file is damaged", want, got);
  const uint32_t c = rd32(p + 24), h = rd32(p + 28), w = rd32(p + 32);
  m->num_classes = (int32_t)rd32(p + 36);
  m->feature_dim = (int32_t)rd32(p + 40);
  m->n_values = rd32(p + 44);
  m->n_ops = rd32(p + 48);
  m->n_tensors = rd32(p + 52);
  for (int i = 0; i < 6; i++) offs[i] = rd64(p + 56 + 8 * i); /* meta off/len, values, ops, tensors, data */
  offs[6] = rd64(p + 104);                                   /* data bytes */
  if (rd32(p + 112) != 0) return rt_fail(BSSL_RT_EUNSUPPORTED, "unknown header flags %#x", rd32(p + 112));
  m->features_value = rd32(p + 116);
  m->logits_value = rd32(p + 120);
  if (rd32(p + 124) != 0) return rt_fail(BSSL_RT_EFORMAT, "reserved header word is not 0");
  if (c < 1 || h < 1 || w < 1 || c > MAX_DIM || h > MAX_DIM || w > MAX_DIM)
    return rt_fail(BSSL_RT_EFORMAT, "bad input shape %ux%ux%u", c, h, w);
  m->in_c = (int32_t)c;
  m->in_h = (int32_t)h;
  m->in_w = (int32_t)w;
  if (m->num_classes < 1 || m->feature_dim < 1 || m->num_classes > (1 << 24) || m->feature_dim > (1 << 24))
    return rt_fail(BSSL_RT_EFORMAT, "bad class count %d or feature dim %d", m->num_classes, m->feature_dim);
  if (m->n_values < 1 || m->n_ops < 1 || m->n_values > (1u << 20) || m->n_ops > (1u << 20) ||
      m->n_tensors > (1u << 20))
    return rt_fail(BSSL_RT_EFORMAT, "bad table sizes: %u values, %u ops, %u tensors", m->n_values, m->n_ops,
                   m->n_tensors);
  if (!in_file(m, offs[0], offs[1])) return rt_fail(BSSL_RT_EFORMAT, "metadata section out of the file");
  if (!in_file(m, offs[2], (uint64_t)m->n_values * VALUE_ENTRY)) return rt_fail(BSSL_RT_EFORMAT, "value table out of the file");
  if (!in_file(m, offs[3], (uint64_t)m->n_ops * OP_WORDS * 4)) return rt_fail(BSSL_RT_EFORMAT, "op list out of the file");
  if (!in_file(m, offs[4], (uint64_t)m->n_tensors * TENSOR_ENTRY)) return rt_fail(BSSL_RT_EFORMAT, "tensor table out of the file");
  if (!in_file(m, offs[5], offs[6]) || offs[5] % 64 != 0)
    return rt_fail(BSSL_RT_EFORMAT, "data section out of the file or not 64-byte aligned");
  if (m->features_value >= m->n_values || m->logits_value >= m->n_values)
    return rt_fail(BSSL_RT_EFORMAT, "features/logits value ids out of range");
  return 0;
}

/* reads a u32-length-prefixed string of the meta section at *pos into dst (NUL-terminated) */
static int meta_string(const bssl_model *m, uint64_t end, uint64_t *pos, char **dst, char *lim) {
  if (end - *pos < 4) return rt_fail(BSSL_RT_EFORMAT, "metadata truncated");
  const uint32_t n = rd32(m->file + *pos);
  *pos += 4;
  if (n > end - *pos) return rt_fail(BSSL_RT_EFORMAT, "metadata string of %u bytes runs past its section", n);
  if ((uint64_t)(lim - *dst) < (uint64_t)n + 1) return rt_fail(BSSL_RT_EFORMAT, "metadata strings too long");
  memcpy(*dst, m->file + *pos, n);
  (*dst)[n] = 0;
  *dst += n + 1;
  *pos += n;
  return 0;
}

static int parse_meta(bssl_model *m, uint64_t off, uint64_t len) {
  const uint64_t end = off + len;
  const uint64_t need = (uint64_t)m->in_c * 8;
  if (len < need) return rt_fail(BSSL_RT_EFORMAT, "metadata too short for the normalisation");
  m->mean = (float *)malloc((size_t)m->in_c * 4);
  m->std = (float *)malloc((size_t)m->in_c * 4);
  /* every string is at most the section; one NUL per string */
  m->strings = (char *)malloc((size_t)len + (size_t)m->num_classes + 2);
  m->classes = (const char **)calloc((size_t)m->num_classes, sizeof(char *));
  if (!m->mean || !m->std || !m->strings || !m->classes) return rt_fail(BSSL_RT_ENOMEM, "out of memory (metadata)");
  for (int32_t i = 0; i < m->in_c; i++) {
    m->mean[i] = f32_of(rd32(m->file + off + 4 * (uint64_t)i));
    m->std[i] = f32_of(rd32(m->file + off + 4 * ((uint64_t)m->in_c + i)));
  }
  uint64_t pos = off + need;
  char *dst = m->strings, *lim = m->strings + len + (size_t)m->num_classes + 2;
  m->name = dst;
  int rc = meta_string(m, end, &pos, &dst, lim);
  if (rc) return rc;
  if (end - pos < 4) return rt_fail(BSSL_RT_EFORMAT, "metadata truncated before the class names");
  const uint32_t ncls = rd32(m->file + pos);
  pos += 4;
  if (ncls != 0 && ncls != (uint32_t)m->num_classes)
    return rt_fail(BSSL_RT_EFORMAT, "%u class names for %d classes", ncls, m->num_classes);
  char *empty = dst;
  *dst++ = 0;
  for (int32_t i = 0; i < m->num_classes; i++) {
    if (ncls == 0) {
      m->classes[i] = empty;
      continue;
    }
    m->classes[i] = dst;
    if ((rc = meta_string(m, end, &pos, &dst, lim))) return rc;
  }
  return 0;
}

static int parse_tensors(bssl_model *m, uint64_t toff, uint64_t doff, uint64_t dlen) {
  m->tensors = (rtensor *)calloc(m->n_tensors ? m->n_tensors : 1, sizeof(rtensor));
  if (!m->tensors) return rt_fail(BSSL_RT_ENOMEM, "out of memory (tensor table)");
  for (uint32_t i = 0; i < m->n_tensors; i++) {
    const uint8_t *e = m->file + toff + (uint64_t)i * TENSOR_ENTRY;
    rtensor *t = &m->tensors[i];
    t->dtype = rd32(e);
    t->ndim = rd32(e + 4);
    const uint64_t off = rd64(e + 24);
    if (t->dtype < DT_F32 || t->dtype > DT_BITS)
      return rt_fail(BSSL_RT_EUNSUPPORTED, "tensor %u: unknown dtype %u", i, t->dtype);
    if (t->ndim < 1 || t->ndim > 4) return rt_fail(BSSL_RT_EFORMAT, "tensor %u: ndim %u (1..4)", i, t->ndim);
    int64_t count = 1;
    for (uint32_t d = 0; d < 4; d++) {
      t->dims[d] = rd32(e + 8 + 4 * d);
      if (d >= t->ndim) {
        if (t->dims[d] != 0) return rt_fail(BSSL_RT_EFORMAT, "tensor %u: unused dim %u is not 0", i, d);
        continue;
      }
      if (t->dims[d] < 1 || t->dims[d] > (1u << 24)) return rt_fail(BSSL_RT_EFORMAT, "tensor %u: bad dim %u", i, t->dims[d]);
      count *= t->dims[d];
      if (count > ((int64_t)1 << 32)) return rt_fail(BSSL_RT_EFORMAT, "tensor %u: too many elements", i);
    }
    t->count = count;
    const uint64_t esize = t->dtype == DT_F32 ? 4 : t->dtype == DT_F16 ? 2 : 8;
    const uint64_t nbytes = (uint64_t)count * esize;
    if (off % 64 != 0 || off > dlen || nbytes > dlen - off)
      return rt_fail(BSSL_RT_EFORMAT, "tensor %u: %llu bytes at data offset %llu do not fit the %llu-byte data section "
                     "(or are not 64-byte aligned)", i, (unsigned long long)nbytes, (unsigned long long)off,
                     (unsigned long long)dlen);
    t->raw = m->file + doff + off;
    if (t->dtype == DT_F32) {
      t->f = (float *)t->raw; /* aligned: file buffer and offsets are 64-byte aligned */
    } else if (t->dtype == DT_F16) {
      if ((uint64_t)count * 4 > (uint64_t)SIZE_MAX) return rt_fail(BSSL_RT_ENOMEM, "tensor %u: too large for this machine", i);
      t->f = (float *)malloc((size_t)count * 4);
      if (!t->f) return rt_fail(BSSL_RT_ENOMEM, "out of memory (tensor %u)", i);
      t->owned = 1;
      const uint8_t *src = (const uint8_t *)t->raw;
      for (int64_t k = 0; k < count; k++) t->f[k] = half_to_float((uint16_t)(src[2 * k] | src[2 * k + 1] << 8));
    }
  }
  return 0;
}

/* ---- op validation ---- */

typedef struct {
  bssl_model *m;
  int op;
} vctx;

static int vfail(const vctx *v, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const uint32_t t = v->m->ops[v->op].type;
  return rt_fail(BSSL_RT_EFORMAT, "op %d (%s): %s", v->op, t <= OP_LINEAR ? k_op_names[t] : "?", msg);
}

/* a float tensor id (NONE allowed when optional) with the given dims */
static int want_float(const vctx *v, uint32_t id, int optional, const char *what, uint32_t ndim, const uint32_t *dims) {
  if (id == NONE) return optional ? 0 : vfail(v, "%s tensor is missing", what);
  if (id >= v->m->n_tensors) return vfail(v, "%s tensor id %u out of range", what, id);
  const rtensor *t = &v->m->tensors[id];
  if (t->dtype == DT_BITS) return vfail(v, "%s tensor %u must be float32 or float16", what, id);
  if (t->ndim != ndim) return vfail(v, "%s tensor %u has %u dims, expected %u", what, id, t->ndim, ndim);
  for (uint32_t d = 0; d < ndim; d++)
    if (t->dims[d] != dims[d]) return vfail(v, "%s tensor %u: dim %u is %u, expected %u", what, id, d, t->dims[d], dims[d]);
  return 0;
}

/* an input value id: defined and fully written before this op */
static int want_input(const vctx *v, uint32_t id, const char *what) {
  if (id >= v->m->n_values) return vfail(v, "%s value %u out of range", what, id);
  const rvalue *x = &v->m->values[id];
  if (x->written != x->c) return vfail(v, "%s value %u is read before all its channels are written", what, id);
  return 0;
}

/* an output value id written at channel offset off, cout channels, in order */
static int want_output(const vctx *v, uint32_t id, int64_t off, int64_t cout, int64_t h, int64_t w) {
  if (id >= v->m->n_values || id == 0) return vfail(v, "output value %u out of range", id);
  rvalue *x = &v->m->values[id];
  if (off != x->written || cout < 1 || off + cout > x->c)
    return vfail(v, "writes channels [%lld, %lld) of value %u, which has %d channels, %d written",
                 (long long)off, (long long)(off + cout), id, x->c, x->written);
  if (h != x->h || w != x->w)
    return vfail(v, "output map %lldx%lld does not match value %u (%dx%d)", (long long)h, (long long)w, id, x->h, x->w);
  return 0;
}

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

static int check_reserved(const vctx *v, const uint32_t *f, int used) {
  for (int i = used; i < OP_WORDS; i++)
    if (f[i] != 0) return vfail(v, "reserved field %d is %u, expected 0", i, f[i]);
  return 0;
}

static int validate_op(bssl_model *m, int i) {
  vctx v = {m, i};
  rop *op = &m->ops[i];
  const uint32_t *f = op->f;
  int rc;
  const uint32_t in = f[1], out = f[2];
  switch (op->type) {
    case OP_CONV:
    case OP_BCONV: {
      const int bin = op->type == OP_BCONV;
      if ((rc = check_reserved(&v, f, bin ? 18 : 15))) return rc;
      if ((rc = want_input(&v, in, "input"))) return rc;
      const rvalue *x = &m->values[in];
      const int64_t cin = f[3], cout = f[4], k = f[5], s = f[6], p = f[7];
      if (cin != x->c) return vfail(&v, "cin %lld but the input has %d channels", (long long)cin, x->c);
      if (cout < 1 || cout > MAX_DIM || k < 1 || k > MAX_KERNEL || s < 1 || s > 64 || p < 0 || p >= k)
        return vfail(&v, "bad cout %lld, kernel %lld, stride %lld or padding %lld", (long long)cout, (long long)k,
                     (long long)s, (long long)p);
      if (x->h + 2 * p < k || x->w + 2 * p < k) return vfail(&v, "kernel %lld larger than the padded input", (long long)k);
      const int64_t ho = out_size(x->h, k, s, p), wo = out_size(x->w, k, s, p);
      const int64_t off = bin ? (int64_t)f[8] : 0;
      if (off > MAX_DIM) return vfail(&v, "bad channel offset");
      if ((rc = want_output(&v, out, off, cout, ho, wo))) return rc;
      if (!bin && cout != m->values[out].c) return vfail(&v, "an FP conv writes all channels of its output");
      const uint32_t res = f[bin ? 14 : 11];
      const uint32_t cd[1] = {(uint32_t)cout};
      if (res != NONE) {
        if ((rc = want_input(&v, res, "residual"))) return rc;
        const rvalue *r = &m->values[res];
        if (r->h != ho || r->w != wo) return vfail(&v, "residual value %u map does not match the output", res);
        if (bin ? r->c != cout : cout % r->c != 0)
          return vfail(&v, "residual value %u has %d channels for %lld outputs", res, r->c, (long long)cout);
      }
      for (int a = 0; a < 3; a++)
        if ((rc = want_float(&v, f[(bin ? 15 : 12) + a], 1, a == 0 ? "bias_in" : a == 1 ? "slope" : "bias_out", 1, cd)))
          return rc;
      if (!bin) {
        const int64_t g = f[8];
        if (g < 1 || cin % g || cout % g) return vfail(&v, "groups %lld do not divide %lld -> %lld", (long long)g, (long long)cin, (long long)cout);
        const uint32_t wd[4] = {(uint32_t)k, (uint32_t)k, (uint32_t)(cin / g), (uint32_t)cout};
        if ((rc = want_float(&v, f[9], 0, "weight", 4, wd))) return rc;
        if ((rc = want_float(&v, f[10], 1, "bias", 1, cd))) return rc;
      } else {
        const float pv = f32_of(f[9]);
        if (!isfinite(pv)) return vfail(&v, "pad value is not finite");
        const uint32_t ci[1] = {(uint32_t)cin};
        if ((rc = want_float(&v, f[10], 0, "rsign bias", 1, ci))) return rc;
        if ((rc = want_float(&v, f[12], 0, "scale", 1, cd))) return rc;
        if ((rc = want_float(&v, f[13], 0, "shift", 1, cd))) return rc;
        const int64_t cw = (cin + 63) / 64;
        const uint32_t wid = f[11];
        if (wid >= m->n_tensors) return vfail(&v, "weight tensor id %u out of range", wid);
        const rtensor *t = &m->tensors[wid];
        if (t->dtype != DT_BITS || t->ndim != 3 || t->dims[0] != (uint32_t)((cout + 31) / 32) ||
            t->dims[1] != (uint32_t)(k * k * cw) || t->dims[2] != 32)
          return vfail(&v, "weight tensor %u must be packed bits (%lld, %lld, 32)", wid, (long long)((cout + 31) / 32),
                       (long long)(k * k * cw));
        if (cin % 64) { /* channel tail bits must be +1 (0), or they reach the popcount */
          const uint64_t *wb = (const uint64_t *)t->raw;
          const uint64_t tail = ~0ULL << (cin % 64);
          for (int64_t kk = cw - 1; kk < k * k * cw; kk += cw)
            for (int64_t o = 0; o < cout; o++)
              if (wb[((o / 32) * k * k * cw + kk) * 32 + o % 32] & tail)
                return vfail(&v, "weight tensor %u has bits set past the %lld input channels", wid, (long long)cin);
        }
      }
      m->values[out].written += (int32_t)cout;
      m->values[out].nprod++;
      return 0;
    }
    case OP_AVGPOOL:
    case OP_MAXPOOL: {
      const int mx = op->type == OP_MAXPOOL;
      if ((rc = check_reserved(&v, f, mx ? 6 : 5))) return rc;
      if ((rc = want_input(&v, in, "input"))) return rc;
      const rvalue *x = &m->values[in];
      const int64_t k = f[3], s = f[4], p = mx ? f[5] : 0;
      if (k < 1 || k > 64 || s < 1 || s > 64 || p < 0 || 2 * p > k)
        return vfail(&v, "bad kernel %lld, stride %lld or padding %lld", (long long)k, (long long)s, (long long)p);
      if (x->h + 2 * p < k || x->w + 2 * p < k) return vfail(&v, "window larger than the input");
      if (out < m->n_values && m->values[out].c != x->c) return vfail(&v, "pooling keeps the channel count");
      if ((rc = want_output(&v, out, 0, x->c, out_size(x->h, k, s, p), out_size(x->w, k, s, p)))) return rc;
      m->values[out].written = x->c;
      m->values[out].nprod++;
      return 0;
    }
    case OP_GAP: {
      if ((rc = check_reserved(&v, f, 3))) return rc;
      if ((rc = want_input(&v, in, "input"))) return rc;
      const rvalue *x = &m->values[in];
      if (out < m->n_values && m->values[out].c != x->c) return vfail(&v, "global pooling keeps the channel count");
      if ((rc = want_output(&v, out, 0, x->c, 1, 1))) return rc;
      m->values[out].written = x->c;
      m->values[out].nprod++;
      return 0;
    }
    case OP_LINEAR: {
      if ((rc = check_reserved(&v, f, 5))) return rc;
      if ((rc = want_input(&v, in, "input"))) return rc;
      const rvalue *x = &m->values[in];
      if (x->h != 1 || x->w != 1) return vfail(&v, "input must be a 1x1 map (after global pooling)");
      if (out >= m->n_values) return vfail(&v, "output value %u out of range", out);
      const int32_t n = m->values[out].c;
      if ((rc = want_output(&v, out, 0, n, 1, 1))) return rc;
      const uint32_t wd[2] = {(uint32_t)x->c, (uint32_t)n}, bd[1] = {(uint32_t)n};
      if ((rc = want_float(&v, f[3], 0, "weight", 2, wd))) return rc;
      if ((rc = want_float(&v, f[4], 1, "bias", 1, bd))) return rc;
      m->values[out].written = n;
      m->values[out].nprod++;
      return 0;
    }
    default:
      return rt_fail(BSSL_RT_EUNSUPPORTED, "op %d: unknown op type %u (this runtime reads format version %d)", i,
                     op->type, BSSL_FORMAT_VERSION);
  }
}

static const float *tf(const bssl_model *m, uint32_t id) { return id == NONE ? NULL : m->tensors[id].f; }

/* ---- planning ---- */

static int64_t align64(int64_t n) { return (n + 63) & ~(int64_t)63; }

/* the fused transform of a binary conv, and its zero-padding correction classes */
static int prepare_bconv(bssl_model *m, rop *op) {
  const uint32_t *f = op->f;
  const int64_t cin = f[3], cout = f[4], k = f[5], s = f[6], p = f[7];
  const float *scale = tf(m, f[12]), *shift = tf(m, f[13]);
  const int64_t K = k * k * cin;
  op->mul = (float *)malloc((size_t)cout * 4);
  op->add = (float *)malloc((size_t)cout * 4);
  if (!op->mul || !op->add) return rt_fail(BSSL_RT_ENOMEM, "out of memory (transform)");
  for (int64_t o = 0; o < cout; o++) { /* y = scale*(K - 2p) + shift as one fma, as bssl.kernels does */
    op->mul[o] = (float)(-2.0 * (double)scale[o]);
    op->add[o] = (float)((double)scale[o] * (double)K + (double)shift[o]);
  }
  const float pv = f32_of(f[9]);
  if (p == 0 || pv == 1.0f) return 0;
  const rvalue *x = &m->values[f[1]];
  const int64_t ho = out_size(x->h, k, s, p), wo = out_size(x->w, k, s, p), cw = (cin + 63) / 64;
  /* taps outside the input, as bit masks over ky (rows) and kx (columns); few distinct ones */
  uint32_t rmask[2 * MAX_KERNEL + 2], cmask[2 * MAX_KERNEL + 2];
  int nr = 0, nc = 0;
  op->crow = (int32_t *)malloc((size_t)ho * 4);
  op->ccol = (int32_t *)malloc((size_t)wo * 4);
  if (!op->crow || !op->ccol) return rt_fail(BSSL_RT_ENOMEM, "out of memory (correction)");
  for (int pass = 0; pass < 2; pass++) {
    const int64_t n = pass ? wo : ho, lim = pass ? x->w : x->h;
    uint32_t *masks = pass ? cmask : rmask;
    int *cnt = pass ? &nc : &nr;
    int32_t *cls = pass ? op->ccol : op->crow;
    for (int64_t o = 0; o < n; o++) {
      uint32_t mk = 0;
      for (int64_t t = 0; t < k; t++) {
        const int64_t i = o * s - p + t;
        if (i < 0 || i >= lim) mk |= 1u << t;
      }
      int c = 0;
      while (c < *cnt && masks[c] != mk) c++;
      if (c == *cnt) {
        if (*cnt >= 2 * MAX_KERNEL + 2) return rt_fail(BSSL_RT_EFORMAT, "too many padding patterns");
        masks[(*cnt)++] = mk;
      }
      cls[o] = c;
    }
  }
  op->ccols = nc;
  op->corr = (float *)calloc((size_t)nr * nc * cout, 4);
  if (!op->corr) return rt_fail(BSSL_RT_ENOMEM, "out of memory (correction)");
  const uint64_t *wb = (const uint64_t *)m->tensors[f[11]].raw;
  for (int64_t o = 0; o < cout; o++)
    for (int r = 0; r < nr; r++)
      for (int c = 0; c < nc; c++) {
        /* padded taps hold pad_value, the kernel counted them as +1: add (pv - 1) * sum sign(W) */
        double sum = 0;
        for (int64_t ky = 0; ky < k; ky++)
          for (int64_t kx = 0; kx < k; kx++) {
            if (!((rmask[r] >> ky) & 1) && !((cmask[c] >> kx) & 1)) continue;
            int64_t neg = 0;
            for (int64_t wd = 0; wd < cw; wd++)
              neg += bssl_popcount64(wb[((o / 32) * k * k * cw + (ky * k + kx) * cw + wd) * 32 + o % 32]);
            sum += (double)(cin - 2 * neg);
          }
        op->corr[((int64_t)r * nc + c) * cout + o] = (float)(((double)pv - 1.0) * (double)scale[o] * sum);
      }
  return 0;
}

/* can the producers of value v write the packed signs for one more consumer in their epilogue? */
static int fusable(const bssl_model *m, uint32_t v, int upto) {
  if (v == 0) return 0;
  const int32_t c = m->values[v].c;
  for (int i = 0; i < upto; i++) {
    const rop *op = &m->ops[i];
    if (op->f[2] != v) continue;
    if (op->type == OP_CONV && op->nbits < 2) continue; /* packs its whole rows (conv_pack_row) */
    if (op->type != OP_BCONV || op->nbits >= 2) return 0;
    const int64_t off = op->f[8], cout = op->f[4];
    if (off % 32 || (cout % 32 && off + cout != c)) return 0; /* each producer owns whole half words */
  }
  return 1;
}

static int plan(bssl_model *m) {
  const int nsteps = (int)m->n_ops + 1;
  for (uint32_t v = 0; v < m->n_values; v++) {
    m->values[v].first = v == 0 ? 0 : nsteps;
    m->values[v].last = -1;
  }
  int nbconv = 0;
  for (uint32_t i = 0; i < m->n_ops; i++) {
    rop *op = &m->ops[i];
    const int step = (int)i + 1;
    rvalue *o = &m->values[op->f[2]];
    if (o->first > step) o->first = step;
    const uint32_t reads[2] = {op->f[1], op->type == OP_BCONV ? op->f[14] : op->type == OP_CONV ? op->f[11] : NONE};
    for (int r = 0; r < 2; r++)
      if (reads[r] != NONE && m->values[reads[r]].last < step) m->values[reads[r]].last = step;
    nbconv += op->type == OP_BCONV;
  }
  m->values[m->features_value].last = nsteps;
  m->values[m->logits_value].last = nsteps;
  m->packs = (rpacked *)calloc(nbconv ? nbconv : 1, sizeof(rpacked));
  if (!m->packs) return rt_fail(BSSL_RT_ENOMEM, "out of memory (plan)");
  for (uint32_t i = 0; i < m->n_ops; i++) {
    rop *op = &m->ops[i];
    if (op->type != OP_BCONV) continue;
    int rc = prepare_bconv(m, op);
    if (rc) return rc;
    const uint32_t v = op->f[1];
    const rvalue *x = &m->values[v];
    rpacked *pk = &m->packs[m->npacks];
    pk->value = (int)v;
    pk->pad = (int)op->f[7];
    pk->hp = x->h + 2 * pk->pad;
    pk->wp = x->w + 2 * pk->pad;
    pk->cw = (x->c + 63) / 64;
    pk->consumer = (int)i;
    pk->bias = tf(m, op->f[10]);
    pk->bytes = align64((int64_t)pk->hp * pk->wp * pk->cw * 8);
    pk->last = (int)i + 1;
    pk->fused = fusable(m, v, (int)i);
    if (pk->fused) {
      int first = -1;
      for (uint32_t j = 0; j < i; j++) {
        rop *pr = &m->ops[j];
        if (pr->f[2] != v) continue;
        if (first < 0) {
          first = (int)j;
          pr->zero[pr->nzero++] = m->npacks;
        }
        pr->bits[pr->nbits++] = m->npacks;
      }
      pk->first = first + 1;
    } else {
      pk->first = (int)i + 1;
    }
    op->pk = m->npacks++;
  }
  /* arena: first fit by decreasing size among buffers whose lifetimes overlap */
  const int nitems = (int)m->n_values + m->npacks;
  int *order = (int *)malloc((size_t)nitems * sizeof(int));
  int *placed = (int *)malloc((size_t)nitems * sizeof(int));
  if (!order || !placed) {
    free(order);
    free(placed);
    return rt_fail(BSSL_RT_ENOMEM, "out of memory (plan)");
  }
#define ITEM_BYTES(it) ((it) < (int)m->n_values ? m->values[it].bytes : m->packs[(it) - (int)m->n_values].bytes)
#define ITEM_FIRST(it) ((it) < (int)m->n_values ? m->values[it].first : m->packs[(it) - (int)m->n_values].first)
#define ITEM_LAST(it) ((it) < (int)m->n_values ? m->values[it].last : m->packs[(it) - (int)m->n_values].last)
  for (uint32_t v = 0; v < m->n_values; v++) {
    rvalue *x = &m->values[v];
    /* a value nothing writes (and so nothing reads) needs no memory */
    x->bytes = v && !x->nprod ? 0 : align64((int64_t)x->h * x->w * x->c * 4);
    if (x->last < x->first) x->last = x->first; /* written, never read */
  }
  for (int i = 0; i < nitems; i++) order[i] = i;
  for (int i = 1; i < nitems; i++) { /* insertion sort, stable: larger first */
    const int it = order[i];
    int j = i - 1;
    while (j >= 0 && ITEM_BYTES(order[j]) < ITEM_BYTES(it)) {
      order[j + 1] = order[j];
      j--;
    }
    order[j + 1] = it;
  }
  int nplaced = 0;
  int64_t total = 0;
  for (int i = 0; i < nitems; i++) {
    const int it = order[i];
    int64_t off = 0;
    for (int again = 1; again;) {
      again = 0;
      for (int j = 0; j < nplaced; j++) {
        const int q = placed[j];
        const int64_t qo = q < (int)m->n_values ? m->values[q].off : m->packs[q - (int)m->n_values].off;
        if (ITEM_FIRST(q) <= ITEM_LAST(it) && ITEM_FIRST(it) <= ITEM_LAST(q) && qo < off + ITEM_BYTES(it) &&
            off < qo + ITEM_BYTES(q)) {
          off = qo + ITEM_BYTES(q);
          again = 1;
        }
      }
    }
    if (it < (int)m->n_values)
      m->values[it].off = off;
    else
      m->packs[it - (int)m->n_values].off = off;
    placed[nplaced++] = it;
    if (off + ITEM_BYTES(it) > total) total = off + ITEM_BYTES(it);
  }
#undef ITEM_BYTES
#undef ITEM_FIRST
#undef ITEM_LAST
  free(order);
  free(placed);
  if (total > ((int64_t)1 << 40)) return rt_fail(BSSL_RT_EFORMAT, "activation memory of %lld bytes is unreasonable", (long long)total);
  if ((uint64_t)total > (uint64_t)SIZE_MAX / 2)
    return rt_fail(BSSL_RT_ENOMEM, "activation memory of %lld bytes does not fit this machine's address space", (long long)total);
  m->arena_bytes = total;
  int32_t maxc = 1;
  for (uint32_t i = 0; i < m->n_ops; i++)
    if (m->ops[i].type == OP_CONV && (int32_t)m->ops[i].f[3] > maxc) maxc = (int32_t)m->ops[i].f[3];
  if (!(m->zeros = (float *)calloc((size_t)maxc, sizeof(float)))) return rt_fail(BSSL_RT_ENOMEM, "out of memory (plan)");
  if (posix_memalign((void **)&m->arena, 64, (size_t)(total > 0 ? total : 64)))
    return rt_fail(BSSL_RT_ENOMEM, "cannot allocate %lld bytes of activation memory", (long long)total);
  return 0;
}

static int load_buffer(bssl_model *m) {
  uint64_t offs[7];
  int rc = parse_header(m, offs);
  if (rc) return rc;
  if ((rc = parse_meta(m, offs[0], offs[1]))) return rc;
  if ((rc = parse_tensors(m, offs[4], offs[5], offs[6]))) return rc;
  m->values = (rvalue *)calloc(m->n_values, sizeof(rvalue));
  m->ops = (rop *)calloc(m->n_ops, sizeof(rop));
  if (!m->values || !m->ops) return rt_fail(BSSL_RT_ENOMEM, "out of memory (graph)");
  for (uint32_t v = 0; v < m->n_values; v++) {
    const uint8_t *e = m->file + offs[2] + (uint64_t)v * VALUE_ENTRY;
    const uint32_t c = rd32(e), h = rd32(e + 4), w = rd32(e + 8);
    if (c < 1 || h < 1 || w < 1 || c > MAX_DIM || h > MAX_DIM || w > MAX_DIM || rd32(e + 12) != 0 ||
        (int64_t)c * h * w > MAX_ELEMS)
      return rt_fail(BSSL_RT_EFORMAT, "value %u: bad shape %ux%ux%u", v, c, h, w);
    m->values[v].c = (int32_t)c;
    m->values[v].h = (int32_t)h;
    m->values[v].w = (int32_t)w;
  }
  rvalue *x0 = &m->values[0];
  if (x0->c != m->in_c || x0->h != m->in_h || x0->w != m->in_w)
    return rt_fail(BSSL_RT_EFORMAT, "value 0 (%dx%dx%d) is not the input shape", x0->c, x0->h, x0->w);
  x0->written = x0->c;
  for (uint32_t i = 0; i < m->n_ops; i++) {
    rop *op = &m->ops[i];
    for (int k = 0; k < OP_WORDS; k++) op->f[k] = rd32(m->file + offs[3] + ((uint64_t)i * OP_WORDS + k) * 4);
    op->type = op->f[0];
    if ((rc = validate_op(m, (int)i))) return rc;
  }
  const rvalue *fv = &m->values[m->features_value], *lv = &m->values[m->logits_value];
  if (fv->c != m->feature_dim || fv->h != 1 || fv->w != 1 || fv->written != fv->c)
    return rt_fail(BSSL_RT_EFORMAT, "features value %u is not a computed 1x1x%d map", m->features_value, m->feature_dim);
  if (lv->c != m->num_classes || lv->h != 1 || lv->w != 1 || lv->written != lv->c)
    return rt_fail(BSSL_RT_EFORMAT, "logits value %u is not a computed 1x1x%d map", m->logits_value, m->num_classes);
  for (uint32_t v = 0; v < m->n_values; v++)
    if (m->values[v].nprod > 0 && m->values[v].written != m->values[v].c)
      return rt_fail(BSSL_RT_EFORMAT, "value %u: only %d of %d channels are written", v, m->values[v].written, m->values[v].c);
  return plan(m);
}

static void print_profile(const bssl_model *m) {
  double total = 0;
  for (uint32_t i = 0; i < m->n_ops; i++) total += m->prof_ms[i];
  fprintf(stderr, "bssl runtime profile: %lld images, %.3f ms per image (thread CPU time)\n", (long long)m->prof_runs,
          total / (double)(m->prof_runs ? m->prof_runs : 1));
  for (uint32_t i = 0; i < m->n_ops; i++) {
    const rop *op = &m->ops[i];
    const rvalue *y = &m->values[op->f[2]];
    fprintf(stderr, "  op %3u %-15s k%u s%u -> %4dx%-4dx%5d %s %8.4f ms %2d thread%s\n", i, k_op_names[op->type],
            op->type <= OP_MAXPOOL ? op->f[op->type <= OP_BCONV ? 5 : 3] : 0,
            op->type <= OP_MAXPOOL ? op->f[op->type <= OP_BCONV ? 6 : 4] : 0, y->h, y->w, y->c,
            op->type == OP_BCONV ? (m->packs[op->pk].fused ? "fused" : "pack ") : "     ",
            m->prof_ms[i] / (double)(m->prof_runs ? m->prof_runs : 1), m->prof_split[i], m->prof_split[i] > 1 ? "s" : "");
  }
}

void bssl_model_free(bssl_model *m) {
  if (!m) return;
  if (m->prof_ms) {
    if (m->prof_runs) print_profile(m);
    free(m->prof_ms);
  }
  free(m->prof_split);
  if (m->ops)
    for (uint32_t i = 0; i < m->n_ops; i++) {
      free(m->ops[i].mul);
      free(m->ops[i].add);
      free(m->ops[i].corr);
      free(m->ops[i].crow);
      free(m->ops[i].ccol);
    }
  if (m->tensors)
    for (uint32_t i = 0; i < m->n_tensors; i++)
      if (m->tensors[i].owned) free(m->tensors[i].f);
  free(m->ops);
  free(m->tensors);
  free(m->values);
  free(m->packs);
  free(m->arena);
  free(m->zeros);
  free(m->mean);
  free(m->std);
  free(m->strings);
  free(m->classes);
  free(m->file);
  free(m);
}

static int finish_load(bssl_model *m, bssl_model **out) {
  m->threads = 1;
  m->conv_rows = pick_conv_rows();
  int rc = load_buffer(m);
  const char *prof = getenv("BSSL_RUNTIME_PROFILE");
  if (!rc && prof && *prof && strcmp(prof, "0") != 0 &&
      (!(m->prof_ms = (double *)calloc(m->n_ops, sizeof(double))) ||
       !(m->prof_split = (int32_t *)calloc(m->n_ops, sizeof(int32_t)))))
    rc = rt_fail(BSSL_RT_ENOMEM, "out of memory (profile)");
  if (rc) {
    bssl_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int bssl_model_load_memory(const void *data, size_t size, bssl_model **out) {
  if (!out) return rt_fail(BSSL_RT_EARG, "load: NULL output pointer");
  *out = NULL;
  if (!data && size) return rt_fail(BSSL_RT_EARG, "load: NULL data");
  const uint64_t nbytes = size; /* 64-bit on every target, so 32-bit builds compare without warnings */
  if (nbytes > ((uint64_t)1 << 40)) return rt_fail(BSSL_RT_EFORMAT, "model of %zu bytes is too large", size);
  bssl_model *m = (bssl_model *)calloc(1, sizeof *m);
  if (!m) return rt_fail(BSSL_RT_ENOMEM, "out of memory");
  if (posix_memalign((void **)&m->file, 64, size ? size : 64)) {
    free(m);
    return rt_fail(BSSL_RT_ENOMEM, "cannot allocate %zu bytes for the model", size);
  }
  if (size) memcpy(m->file, data, size);
  m->file_size = size;
  return finish_load(m, out);
}

int bssl_model_load(const char *path, bssl_model **out) {
  if (!out || !path) return rt_fail(BSSL_RT_EARG, "load: NULL path or output pointer");
  *out = NULL;
  FILE *fh = fopen(path, "rb");
  if (!fh) return rt_fail(BSSL_RT_EIO, "cannot open %s", path);
  long size = -1;
  if (fseek(fh, 0, SEEK_END) == 0) size = ftell(fh);
  if (size < 0 || fseek(fh, 0, SEEK_SET) != 0) {
    fclose(fh);
    return rt_fail(BSSL_RT_EIO, "cannot read %s", path);
  }
  bssl_model *m = (bssl_model *)calloc(1, sizeof *m);
  if (!m || posix_memalign((void **)&m->file, 64, size ? (size_t)size : 64)) {
    fclose(fh);
    free(m);
    return rt_fail(BSSL_RT_ENOMEM, "cannot allocate %ld bytes for %s", size, path);
  }
  m->file_size = (size_t)size;
  const size_t got = size ? fread(m->file, 1, (size_t)size, fh) : 0;
  fclose(fh);
  if (got != (size_t)size) {
    bssl_model_free(m);
    return rt_fail(BSSL_RT_EIO, "short read of %s (%zu of %ld bytes)", path, got, size);
  }
  const int rc = finish_load(m, out);
  if (rc) { /* name the file in the message */
    char msg[sizeof g_rt_err];
    snprintf(msg, sizeof msg, "%s", g_rt_err);
    rt_fail(rc, "%s: %s", path, msg);
  }
  return rc;
}

/* ---- queries ---- */

int bssl_model_input_shape(const bssl_model *m, int32_t *c, int32_t *h, int32_t *w) {
  if (!m) return rt_fail(BSSL_RT_EARG, "NULL model");
  if (c) *c = m->in_c;
  if (h) *h = m->in_h;
  if (w) *w = m->in_w;
  return 0;
}
int32_t bssl_model_num_classes(const bssl_model *m) { return m ? m->num_classes : 0; }
int32_t bssl_model_feature_dim(const bssl_model *m) { return m ? m->feature_dim : 0; }
int bssl_model_normalization(const bssl_model *m, float *mean, float *std) {
  if (!m || !mean || !std) return rt_fail(BSSL_RT_EARG, "normalization: NULL argument");
  memcpy(mean, m->mean, (size_t)m->in_c * 4);
  memcpy(std, m->std, (size_t)m->in_c * 4);
  return 0;
}
const char *bssl_model_name(const bssl_model *m) { return m ? m->name : NULL; }
const char *bssl_model_class_name(const bssl_model *m, int32_t i) {
  return m && i >= 0 && i < m->num_classes ? m->classes[i] : NULL;
}
int64_t bssl_model_arena_bytes(const bssl_model *m) { return m ? m->arena_bytes : -1; }
int bssl_model_set_threads(bssl_model *m, int32_t threads) {
  if (!m || threads < 1 || threads > 64) return rt_fail(BSSL_RT_EARG, "threads must be 1..64, got %d", threads);
  m->threads = threads;
  return 0;
}

/* ---- execution ---- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(BSSL_NO_CLONES)
/* the FP loops vectorise over output channels; an AVX2 clone is picked at load time (no FMA
 * contraction: -ffp-contract=off, so both clones give the same bits) */
#define FP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FP_CLONES
#endif

static float *vptr(const bssl_model *m, uint32_t v) { return (float *)(m->arena + m->values[v].off); }
static uint64_t *pptr(const bssl_model *m, int pk) { return (uint64_t *)(m->arena + m->packs[pk].off); }

typedef struct {
  const bssl_model *m;
  const rop *op;
} conv_job;

/* 8 floats as one value: one AVX2 register, or two SSE / NEON registers; 16: one AVX-512 register */
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
/* unaligned views for the loads and stores of whole vectors */
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));

/* FP conv on NHWC, weights (k, k, cin/g, cout). Every output starts from its bias and adds the
 * taps in (ky, kx, ci) order with one fused multiply-add each (fmaf: exactly rounded, so the
 * AVX2+FMA build and the portable one give the same bits); rows of taps outside the input are
 * skipped and columns outside read zeros, the same for any grouping of pixels or threads.
 * A pass computes PIX output pixels of a row x VB vectors of LANES channels (VT), sharing each
 * weight load; MADDV(acc, x, w): acc = fma(x, w, acc) on every lane. The vector width changes
 * only which outputs a pass groups, never the order of an output's sums. */
#define DEFINE_CONV_ROWS(NAME, ATTR, VT, VTU, LANES, PIX, VB, MADDV)                                        \
  ATTR static void NAME(void *ctx, int64_t r0, int64_t r1) {                                            \
    const conv_job *jb = (const conv_job *)ctx;                                                         \
    const bssl_model *m = jb->m;                                                                        \
    const uint32_t *f = jb->op->f;                                                                      \
    const rvalue *x = &m->values[f[1]], *y = &m->values[f[2]];                                          \
    const int32_t cin = (int32_t)f[3], cout = (int32_t)f[4], k = (int32_t)f[5], s = (int32_t)f[6];     \
    const int32_t p = (int32_t)f[7], g = (int32_t)f[8], cig = cin / g, cog = cout / g;                 \
    const float *in = vptr(m, f[1]), *W = tf(m, f[9]), *bias = tf(m, f[10]);                            \
    float *out = vptr(m, f[2]);                                                                         \
    const float *zeros = m->zeros;                                                                      \
    for (int64_t oy = r0; oy < r1; oy++) {                                                              \
      for (int32_t ox0 = 0; ox0 < y->w; ox0 += PIX) {                                              \
        const int32_t np = y->w - ox0 < PIX ? y->w - ox0 : PIX;                               \
        float *o0 = out + (oy * y->w + ox0) * cout;                                                     \
        for (int32_t gi = 0; gi < g; gi++) {                                                            \
          int32_t j0 = 0;                                                                               \
          for (; cog % LANES == 0 && j0 < cog; j0 += LANES * VB) {                                         \
            const int32_t jc = gi * cog + j0, nb = (cog - j0) / LANES < VB ? (cog - j0) / LANES : VB; \
            VT acc[PIX][VB];                                                                 \
            for (int b = 0; b < VB; b++) {                                                         \
              VT bv = {0};                                                                             \
              if (bias && b < nb) bv = *(const VTU *)(bias + jc + LANES * b);                                           \
              for (int q = 0; q < PIX; q++) acc[q][b] = bv;                                        \
            }                                                                                           \
            for (int32_t ky = 0; ky < k; ky++) {                                                        \
              const int64_t iy = oy * s - p + ky;                                                       \
              if (iy < 0 || iy >= x->h) continue;                                                       \
              for (int32_t kx = 0; kx < k; kx++) {                                                      \
                const float *xp[PIX];                                                              \
                for (int q = 0; q < PIX; q++) {                                                    \
                  const int64_t ix = (int64_t)(ox0 + (q < np ? q : 0)) * s - p + kx;                    \
                  xp[q] = (ix < 0 || ix >= x->w ? zeros : in + (iy * x->w + ix) * cin + gi * cig);      \
                }                                                                                       \
                const float *wt = W + ((int64_t)ky * k + kx) * cig * cout + jc;                         \
                if (nb == VB) { /* fixed trip counts: the accumulators stay in registers */        \
                  for (int32_t ci = 0; ci < cig; ci++) {                                                \
                    VT wv[VB];                                                                    \
                    for (int b = 0; b < VB; b++) wv[b] = *(const VTU *)(wt + (int64_t)ci * cout + LANES * b);      \
                    for (int q = 0; q < PIX; q++) {                                                \
                      const float xv = xp[q][ci];                                                       \
                      for (int b = 0; b < VB; b++) MADDV(acc[q][b], xv, wv[b]);                    \
                    }                                                                                   \
                  }                                                                                     \
                } else {                                                                                \
                  for (int32_t ci = 0; ci < cig; ci++)                                                  \
                    for (int b = 0; b < nb; b++) {                                                      \
                      const VT wv = *(const VTU *)(wt + (int64_t)ci * cout + LANES * b);                \
                      for (int q = 0; q < PIX; q++) MADDV(acc[q][b], xp[q][ci], wv);               \
                    }                                                                                   \
                }                                                                                       \
              }                                                                                         \
            }                                                                                           \
            /* fixed trip counts again: a variable-length copy of the accumulators becomes `rep movs` */ \
            for (int q = 0; q < PIX; q++)                                                               \
              for (int b = 0; b < VB; b++)                                                              \
                if (q < np && b < nb) *(VTU *)(o0 + (int64_t)q * cout + jc + LANES * b) = acc[q][b];    \
          }                                                                                             \
          if (j0 < cog) /* channel counts that are not a multiple of LANES: the same sums, one at a time */ \
            for (int q = 0; q < np; q++) {                                                              \
              float *o = o0 + (int64_t)q * cout + gi * cog;                                             \
              for (int32_t j = 0; j < cog; j++) o[j] = bias ? bias[gi * cog + j] : 0.0f;               \
              for (int32_t ky = 0; ky < k; ky++) {                                                      \
                const int64_t iy = oy * s - p + ky;                                                     \
                if (iy < 0 || iy >= x->h) continue;                                                     \
                for (int32_t kx = 0; kx < k; kx++) {                                                    \
                  const int64_t ix = (int64_t)(ox0 + q) * s - p + kx;                                   \
                  const float *xq = ix < 0 || ix >= x->w ? zeros : in + (iy * x->w + ix) * cin + gi * cig; \
                  const float *wt = W + ((int64_t)ky * k + kx) * cig * cout + gi * cog;                 \
                  for (int32_t ci = 0; ci < cig; ci++)                                                  \
                    for (int32_t j = 0; j < cog; j++) o[j] = fmaf(xq[ci], wt[(int64_t)ci * cout + j], o[j]); \
                }                                                                                       \
              }                                                                                         \
            }                                                                                           \
        }                                                                                               \
        conv_epilogue(m, f, out, oy * y->w + ox0, np, cout);                                            \
      }                                                                                                 \
      conv_pack_row(m, jb->op, out + oy * y->w * cout, oy);                                             \
    }                                                                                                   \
  }

/* the signs of a finished output row (+ each consumer's RSign bias) into the consumers' one-padded
 * packed inputs: what the pack before those binary convs would write */
static void conv_pack_row(const bssl_model *m, const rop *op, const float *row, int64_t oy) {
  const rvalue *y = &m->values[op->f[2]];
  for (int i = 0; i < op->nbits; i++) {
    const rpacked *q = &m->packs[op->bits[i]];
    uint64_t *dst = (uint64_t *)(m->arena + q->off) + ((oy + q->pad) * q->wp + q->pad) * q->cw;
    bssl_pack_f32(row, y->w, y->c, q->bias, dst);
  }
}

/* residual (channel o reads o % its channels), RPReLU, in place on np pixels from pix0 */
static void conv_epilogue(const bssl_model *m, const uint32_t *f, float *out, int64_t pix0, int np, int32_t cout) {
  const float *res = f[11] == NONE ? NULL : vptr(m, f[11]);
  const int32_t rc = f[11] == NONE ? 1 : m->values[f[11]].c;
  const float *bin = tf(m, f[12]), *slope = tf(m, f[13]), *bout = tf(m, f[14]);
  if (!res && !bin && !slope && !bout) return;
  for (int q = 0; q < np; q++) {
    const int64_t pix = pix0 + q;
    float *o = out + pix * cout;
    for (int32_t j = 0; j < cout; j++) {
      float v = o[j];
      if (res) v += res[pix * rc + j % rc];
      if (bin) v += bin[j];
      if (slope && v < 0.0f) v = v * slope[j];
      if (bout) v += bout[j];
      o[j] = v;
    }
  }
}

#define MADD8_LANES(acc, xv, wv)                                    \
  do {                                                              \
    for (int l_ = 0; l_ < 8; l_++) (acc)[l_] = fmaf((xv), (wv)[l_], (acc)[l_]); \
  } while (0)
DEFINE_CONV_ROWS(conv_rows_portable, , v8f, v8f_u, 8, 4, 2, MADD8_LANES)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(BSSL_NO_CLONES)
/* 4 x 2 accumulators fit the 16 AVX2 registers; 8 x 2 of the 32 AVX-512 ones */
#define MADD8_FMA(acc, xv, wv) (acc) = (v8f)_mm256_fmadd_ps(_mm256_set1_ps(xv), (__m256)(wv), (__m256)(acc))
DEFINE_CONV_ROWS(conv_rows_fma, __attribute__((target("avx2,fma"))), v8f, v8f_u, 8, 4, 2, MADD8_FMA)
#define MADD16_FMA(acc, xv, wv) (acc) = (v16f)_mm512_fmadd_ps(_mm512_set1_ps(xv), (__m512)(wv), (__m512)(acc))
DEFINE_CONV_ROWS(conv_rows_avx512_16, __attribute__((target("avx512f"))), v16f, v16f_u, 16, 8, 2, MADD16_FMA)
/* AVX-512 where every group's output channels fill 16-lane vectors (the stems: 32, 64), else AVX2 */
static void conv_rows_avx512(void *ctx, int64_t r0, int64_t r1) {
  const uint32_t *f = ((const conv_job *)ctx)->op->f;
  if (((int32_t)f[4] / (int32_t)f[8]) % 16 == 0)
    conv_rows_avx512_16(ctx, r0, r1);
  else
    conv_rows_fma(ctx, r0, r1);
}
/* BSSL_RUNTIME_FP=portable|avx2 forces those loops (the tests compare them bit for bit) */
static bssl_range_fn pick_conv_rows(void) {
  const char *env = getenv("BSSL_RUNTIME_FP");
  if (env && strcmp(env, "portable") == 0) return conv_rows_portable;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return conv_rows_portable;
  if (env && strcmp(env, "avx2") == 0) return conv_rows_fma;
  return __builtin_cpu_supports("avx512f") ? conv_rows_avx512 : conv_rows_fma;
}
#else
static bssl_range_fn pick_conv_rows(void) { return conv_rows_portable; }
#endif

/* threads worth waking for `values` float operations: as for packing, about a quarter of the
 * kernels' minimum work per thread (BSSL_KERNELS_THREAD_WORK) each; 0 always splits */
static int32_t fp_threads(int64_t values, int32_t threads) {
  const int64_t mw = bssl_thread_min_work_get() / 4;
  int64_t t = mw > 0 ? values / mw : threads;
  if (t > threads) t = threads;
  return t < 1 ? 1 : (int32_t)t;
}

typedef struct {
  const bssl_model *m;
  const rop *op;
} op_job;

/* output rows [y0, y1) of a pool; every output value is computed by one thread in one order */
FP_CLONES static void run_pool_rows(const bssl_model *m, const rop *op, int32_t y0, int32_t y1) {
  const uint32_t *f = op->f;
  const rvalue *x = &m->values[f[1]], *y = &m->values[f[2]];
  const int mx = op->type == OP_MAXPOOL;
  const int32_t k = (int32_t)f[3], s = (int32_t)f[4], p = mx ? (int32_t)f[5] : 0, c = x->c;
  const float *in = vptr(m, f[1]);
  float *out = vptr(m, f[2]);
  const float inv = 1.0f / (float)(k * k);
  for (int32_t oy = y0; oy < y1; oy++)
    for (int32_t ox = 0; ox < y->w; ox++) {
      float *o = out + ((int64_t)oy * y->w + ox) * c;
      for (int32_t j = 0; j < c; j++) o[j] = mx ? -INFINITY : 0.0f;
      for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = oy * s - p + ky;
        if (iy < 0 || iy >= x->h) continue;
        for (int32_t kx = 0; kx < k; kx++) {
          const int32_t ix = ox * s - p + kx;
          if (ix < 0 || ix >= x->w) continue;
          const float *xp = in + ((int64_t)iy * x->w + ix) * c;
          if (mx)
            for (int32_t j = 0; j < c; j++) o[j] = xp[j] > o[j] ? xp[j] : o[j];
          else
            for (int32_t j = 0; j < c; j++) o[j] += xp[j];
        }
      }
      if (!mx)
        for (int32_t j = 0; j < c; j++) o[j] *= inv;
    }
}

static void pool_range(void *ctx, int64_t y0, int64_t y1) {
  const op_job *j = (const op_job *)ctx;
  run_pool_rows(j->m, j->op, (int32_t)y0, (int32_t)y1);
}

static void run_pool(const bssl_model *m, const rop *op) {
  const rvalue *y = &m->values[op->f[2]];
  const int64_t k = op->f[3];
  op_job jb = {m, op};
  bssl_parallel_for(y->h, fp_threads((int64_t)y->h * y->w * y->c * k * k, m->threads), pool_range, &jb);
}

FP_CLONES static void run_gap(const bssl_model *m, const rop *op) {
  const rvalue *x = &m->values[op->f[1]];
  const int64_t npix = (int64_t)x->h * x->w;
  const float *in = vptr(m, op->f[1]);
  float *restrict out = vptr(m, op->f[2]);
  for (int32_t j = 0; j < x->c; j++) out[j] = 0.0f;
  for (int64_t q = 0; q < npix; q++) {
    const float *restrict xp = in + q * x->c;
    for (int32_t j = 0; j < x->c; j++) out[j] += xp[j];
  }
  const float inv = (float)npix;
  for (int32_t j = 0; j < x->c; j++) out[j] /= inv;
}

/* one thread: the weights are read once per image, so the layer is bound by memory bandwidth,
 * and splitting its outputs over two threads made the caller's share slower, not faster
 * (BSSL_RUNTIME_PROFILE, ReActNet-A's 1024 x 1000 classifier) */
FP_CLONES static void run_linear(const bssl_model *m, const rop *op) {
  const int32_t c = m->values[op->f[1]].c, n = m->values[op->f[2]].c;
  const float *in = vptr(m, op->f[1]), *W = tf(m, op->f[3]), *bias = tf(m, op->f[4]);
  float *restrict out = vptr(m, op->f[2]);
  for (int32_t j = 0; j < n; j++) out[j] = bias ? bias[j] : 0.0f;
  for (int32_t i = 0; i < c; i++) { /* weights (C, N): the inner loop runs over outputs */
    const float xv = in[i];
    const float *restrict wr = W + (int64_t)i * n;
    for (int32_t j = 0; j < n; j++) out[j] += xv * wr[j];
  }
}

static int run_bconv(bssl_model *m, const rop *op) {
  const uint32_t *f = op->f;
  const rpacked *pk = &m->packs[op->pk];
  uint64_t *xp = pptr(m, op->pk);
  const rvalue *x = &m->values[f[1]];
  if (!pk->fused) { /* pack sign(x + b) into the interior of the one-padded buffer */
    memset(xp, 0, (size_t)pk->bytes);
    const float *xf = vptr(m, f[1]);
    for (int32_t yy = 0; yy < x->h; yy++) {
      const int rc = bssl_pack_f32(xf + (int64_t)yy * x->w * x->c, x->w, x->c, pk->bias,
                                   xp + ((int64_t)(yy + pk->pad) * pk->wp + pk->pad) * pk->cw);
      if (rc) return rt_fail(BSSL_RT_EKERNEL, "pack: %s", bssl_last_error());
    }
  }
  const int32_t cout = (int32_t)f[4], k = (int32_t)f[5], off = (int32_t)f[8];
  bssl_fused_epilogue ep;
  memset(&ep, 0, sizeof ep);
  ep.mul = op->mul;
  ep.add = op->add;
  ep.corr = op->corr;
  ep.corr_row = op->crow;
  ep.corr_col = op->ccol;
  ep.corr_cols = op->ccols;
  if (f[14] != NONE) {
    ep.res = vptr(m, f[14]);
    ep.res_stride = m->values[f[14]].c;
  }
  ep.bias_in = tf(m, f[15]);
  ep.slope = tf(m, f[16]);
  ep.bias_out = tf(m, f[17]);
  ep.out = vptr(m, f[2]);
  ep.out_stride = m->values[f[2]].c;
  ep.out_off = off;
  ep.nbits = op->nbits;
  for (int i = 0; i < op->nbits; i++) {
    const rpacked *q = &m->packs[op->bits[i]];
    ep.bits[i] = (bssl_bits_out){q->bias + off, pptr(m, op->bits[i]), q->hp, q->wp, q->pad, q->cw, off / 32};
  }
  const int rc = bssl_bconv2d_fused(xp, 1, pk->hp, pk->wp, pk->cw, (const uint64_t *)m->tensors[f[11]].raw, cout, k, k,
                                    (int32_t)f[6], k * k * (int32_t)f[3], &ep, m->threads);
  if (rc) return rt_fail(BSSL_RT_EKERNEL, "bconv: %s", bssl_last_error());
  return 0;
}

/* before the producers write a packed buffer's interior: its frame must hold zero words (+1),
 * and so must the channel tail, which no producer writes unless the channels fill the words */
static void zero_packed(const bssl_model *m, int pk) {
  const rpacked *q = &m->packs[pk];
  uint64_t *b = pptr(m, pk);
  if (m->values[q->value].c % 64 != 0) {
    memset(b, 0, (size_t)q->bytes);
    return;
  }
  const size_t row = (size_t)q->wp * q->cw, edge = (size_t)q->pad * q->cw;
  if (q->pad == 0) return;
  memset(b, 0, row * q->pad * 8);
  memset(b + (size_t)(q->hp - q->pad) * row, 0, row * q->pad * 8);
  for (int32_t y = q->pad; y < q->hp - q->pad; y++) {
    memset(b + y * row, 0, edge * 8);
    memset(b + y * row + row - edge, 0, edge * 8);
  }
}

int bssl_model_run(bssl_model *m, const float *x, int32_t n, float *logits, float *features) {
  if (!m || (!x && n > 0) || n < 0) return rt_fail(BSSL_RT_EARG, "run: NULL model or input, or n < 0");
  const int32_t c = m->in_c, h = m->in_h, w = m->in_w;
  for (int32_t b = 0; b < n; b++) {
    const float *xb = x + (int64_t)b * c * h * w;
    float *x0 = vptr(m, 0);
    for (int32_t ch = 0; ch < c; ch++) /* NCHW -> NHWC */
      for (int64_t q = 0; q < (int64_t)h * w; q++) x0[q * c + ch] = xb[(int64_t)ch * h * w + q];
    for (uint32_t i = 0; i < m->n_ops; i++) {
      const rop *op = &m->ops[i];
      struct timespec t0, t1;
      if (m->prof_ms) {
        bssl_last_split_reset();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
      }
      for (int z = 0; z < op->nzero; z++) zero_packed(m, op->zero[z]);
      switch (op->type) {
        case OP_BCONV: {
          const int rc = run_bconv(m, op);
          if (rc) return rc;
          break;
        }
        case OP_CONV: {
          conv_job jb = {m, op};
          bssl_parallel_for(m->values[op->f[2]].h, m->threads, m->conv_rows, &jb);
          break;
        }
        case OP_AVGPOOL:
        case OP_MAXPOOL: run_pool(m, op); break;
        case OP_GAP: run_gap(m, op); break;
        case OP_LINEAR: run_linear(m, op); break;
        default: return rt_fail(BSSL_RT_EUNSUPPORTED, "op %u: unknown type %u", i, op->type);
      }
      if (m->prof_ms) {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
        m->prof_ms[i] += (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (bssl_last_split() > m->prof_split[i]) m->prof_split[i] = bssl_last_split();
      }
    }
    if (m->prof_ms) m->prof_runs++;
    if (logits) memcpy(logits + (int64_t)b * m->num_classes, vptr(m, m->logits_value), (size_t)m->num_classes * 4);
    if (features)
      memcpy(features + (int64_t)b * m->feature_dim, vptr(m, m->features_value), (size_t)m->feature_dim * 4);
  }
  return 0;
}
