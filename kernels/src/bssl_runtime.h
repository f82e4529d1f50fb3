/* bssl native runtime: runs a whole binary student from a model.bssl file (docs/model-format.md)
 * in C, on the bit-packed kernels of bssl_kernels.h. C11, libc/libm/pthreads only.
 *
 *   bssl_model *m;
 *   if (bssl_model_load("model.bssl", &m)) { puts(bssl_model_last_error()); return 1; }
 *   bssl_model_run(m, x, 1, logits, features);   // x: float NCHW, as the PyTorch student takes it
 *   bssl_model_free(m);
 *
 * Loading checks the whole file (sizes, offsets, checksum, shapes, op list) and plans all
 * activation memory once; running allocates nothing. One model runs one call at a time (its
 * arena is shared by the calls); load the file twice for concurrent callers. Results do not
 * depend on the thread count: every output value is computed by one thread in a fixed order.
 *
 * Functions returning int give 0 or a negative BSSL_RT_E* code; bssl_model_last_error() has the
 * message of the calling thread's last failure.
 */
#ifndef BSSL_RUNTIME_H
#define BSSL_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BSSL_RT_API __declspec(dllexport)
#else
#define BSSL_RT_API __attribute__((visibility("default")))
#endif

#define BSSL_FORMAT_VERSION 1

#define BSSL_RT_EARG (-1)         /* bad argument */
#define BSSL_RT_ENOMEM (-3)       /* allocation failed */
#define BSSL_RT_EIO (-10)         /* cannot open or read the file */
#define BSSL_RT_EFORMAT (-11)     /* not a model.bssl file, truncated, or inconsistent */
#define BSSL_RT_EVERSION (-12)    /* format version this runtime does not read */
#define BSSL_RT_ECHECKSUM (-13)   /* checksum mismatch: the file is damaged */
#define BSSL_RT_EUNSUPPORTED (-14) /* unknown op type or tensor dtype */
#define BSSL_RT_EKERNEL (-15)     /* a kernel call failed */

typedef struct bssl_model bssl_model;

BSSL_RT_API int bssl_runtime_format_version(void);
BSSL_RT_API const char *bssl_model_last_error(void);

BSSL_RT_API int bssl_model_load(const char *path, bssl_model **out);
/* copies the bytes; the caller's buffer may be freed after the call */
BSSL_RT_API int bssl_model_load_memory(const void *data, size_t size, bssl_model **out);
BSSL_RT_API void bssl_model_free(bssl_model *m);

BSSL_RT_API int bssl_model_input_shape(const bssl_model *m, int32_t *channels, int32_t *height,
                                       int32_t *width);
BSSL_RT_API int32_t bssl_model_num_classes(const bssl_model *m);
BSSL_RT_API int32_t bssl_model_feature_dim(const bssl_model *m);
/* per-channel mean and std of the input normalisation (input channels values each) */
BSSL_RT_API int bssl_model_normalization(const bssl_model *m, float *mean, float *std);
BSSL_RT_API const char *bssl_model_name(const bssl_model *m);
/* class i's name ("" when the file has none); NULL when i is out of range */
BSSL_RT_API const char *bssl_model_class_name(const bssl_model *m, int32_t i);
BSSL_RT_API int64_t bssl_model_arena_bytes(const bssl_model *m);
BSSL_RT_API int bssl_model_set_threads(bssl_model *m, int32_t threads);

/* x: n images, float NCHW (n, C, H, W) as the student's forward takes them (normalised);
 * logits (n, num_classes) and features (n, feature_dim) may each be NULL. */
BSSL_RT_API int bssl_model_run(bssl_model *m, const float *x, int32_t n, float *logits,
                               float *features);

#ifdef __cplusplus
}
#endif
#endif
