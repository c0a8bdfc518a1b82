/* matmul.c - y = x . w^T for the forward pass.  Register tiles of 4 weight
 * rows x 3 tokens with 8-lane partial sums along the inner dimension; the
 * same body is compiled for AVX2+FMA and for the baseline ISA, chosen at
 * run time, so one binary runs anywhere and fast where it can.  Threads
 * (OpenMP) split the weight rows. */
#include <string.h>

#include "model.h"

typedef float v8 __attribute__((vector_size(32)));

#define ROWS 4
#define TOKS 3

/* The body is a macro, not a function taking vectors, so no vector crosses
 * a call boundary (whose ABI would differ between the two ISAs). */
#define TILE_BODY                                                        \
  v8 acc[ROWS][TOKS];                                                    \
  memset(acc, 0, sizeof acc);                                            \
  int k = 0;                                                             \
  for (; k + 8 <= in; k += 8) {                                          \
    v8 wv[ROWS], xv[TOKS];                                               \
    for (int r = 0; r < ROWS; r++) memcpy(&wv[r], w[r] + k, sizeof(v8)); \
    for (int t = 0; t < TOKS; t++) memcpy(&xv[t], x[t] + k, sizeof(v8)); \
    for (int r = 0; r < ROWS; r++)                                       \
      for (int t = 0; t < TOKS; t++) acc[r][t] += wv[r] * xv[t];         \
  }                                                                      \
  for (int r = 0; r < ROWS; r++)                                         \
    for (int t = 0; t < TOKS; t++) {                                     \
      float s = 0;                                                       \
      for (int l = 0; l < 8; l++) s += acc[r][t][l];                     \
      for (int kk = k; kk < in; kk++) s += w[r][kk] * x[t][kk];          \
      out[t][r] = s;                                                     \
    }

__attribute__((target("avx2,fma"))) static void tile_avx2(
    const float *const *w, const float *const *x, int in,
    float out[TOKS][ROWS]) {
  TILE_BODY
}

static void tile_base(const float *const *w, const float *const *x, int in,
                      float out[TOKS][ROWS]) {
  TILE_BODY
}

typedef void (*tile_fn)(const float *const *, const float *const *, int,
                        float[TOKS][ROWS]);

static tile_fn pick_tile(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
             ? tile_avx2
             : tile_base;
}

void smol_matmul(float *y, const float *x, const float *w, int n, int in,
                 int out, int accumulate) {
  static tile_fn tile;
  if (!tile) tile = pick_tile(); /* idempotent: a race stores the same value */
  int blocks = (out + ROWS - 1) / ROWS;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; b++) {
    const float *wr[ROWS];
    int r0 = b * ROWS;
    /* Rows past the end repeat the last row; their results are dropped. */
    for (int r = 0; r < ROWS; r++)
      wr[r] = w + (size_t)(r0 + r < out ? r0 + r : out - 1) * in;
    for (int t0 = 0; t0 < n; t0 += TOKS) {
      const float *xr[TOKS];
      float res[TOKS][ROWS];
      for (int t = 0; t < TOKS; t++)
        xr[t] = x + (size_t)(t0 + t < n ? t0 + t : n - 1) * in;
      tile(wr, xr, in, res);
      for (int t = 0; t < TOKS && t0 + t < n; t++)
        for (int r = 0; r < ROWS && r0 + r < out; r++) {
          float *dst = y + (size_t)(t0 + t) * out + r0 + r;
          *dst = accumulate ? *dst + res[t][r] : res[t][r];
        }
    }
  }
}
