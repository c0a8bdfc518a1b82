/* rotation.c - seeded random rotations and the per-variant constant tables.
 *
 * Power-of-two dimensions use a randomized Walsh-Hadamard transform
 * R = H D / sqrt(d) (O(d log d), what the kernels apply to q).  Other
 * dimensions (80, 96, 112, 192, the main part after outliers are split
 * off, ...) use a Haar-random dense orthogonal matrix: Gram-Schmidt, done
 * twice for orthogonality to rounding, on a matrix of portable normals. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* Purpose tags for tqg_seed_derive: one stream per table. */
enum { SEED_MAIN_ROT = 1, SEED_OUTLIER_ROT = 2, SEED_QJL = 3 };

static int is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

void tqg_wht(double *x, int n) {
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; j++) {
        double a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

static void gram_schmidt_rows(double *m, int d) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < d; i++) {
      double *r = m + (size_t)i * d;
      for (int j = 0; j < i; j++) {
        const double *q = m + (size_t)j * d;
        double dot = 0;
        for (int k = 0; k < d; k++) dot += r[k] * q[k];
        for (int k = 0; k < d; k++) r[k] -= dot * q[k];
      }
      double nn = 0;
      for (int k = 0; k < d; k++) nn += r[k] * r[k];
      double inv = 1.0 / __builtin_sqrt(nn);
      for (int k = 0; k < d; k++) r[k] *= inv;
    }
}

tq_status tqg_rotation_init(tqg_rotation *rot, int dim, uint64_t seed) {
  memset(rot, 0, sizeof *rot);
  rot->dim = dim;
  if (dim <= 0) return TQ_OK;
  tqg_rng rng;
  tqg_rng_seed(&rng, seed);
  if (is_pow2(dim)) {
    rot->kind = TQG_ROT_WHT;
    rot->signs = malloc(sizeof(double) * (size_t)dim);
    if (!rot->signs) return TQ_ERR_NOMEM;
    for (int i = 0; i < dim; i++)
      rot->signs[i] = (tqg_rng_next(&rng) >> 63) ? -1.0 : 1.0;
    return TQ_OK;
  }
  rot->kind = TQG_ROT_DENSE;
  rot->matrix = malloc(sizeof(double) * (size_t)dim * (size_t)dim);
  if (!rot->matrix) return TQ_ERR_NOMEM;
  for (size_t i = 0; i < (size_t)dim * (size_t)dim; i++)
    rot->matrix[i] = tqg_rng_normal(&rng);
  gram_schmidt_rows(rot->matrix, dim);
  return TQ_OK;
}

void tqg_rotation_free(tqg_rotation *rot) {
  free(rot->signs);
  free(rot->matrix);
  memset(rot, 0, sizeof *rot);
}

void tqg_rotate(const tqg_rotation *rot, const double *x, double *y) {
  int d = rot->dim;
  if (rot->kind == TQG_ROT_WHT) {
    double s = 1.0 / __builtin_sqrt((double)d);
    for (int i = 0; i < d; i++) y[i] = x[i] * rot->signs[i];
    tqg_wht(y, d);
    for (int i = 0; i < d; i++) y[i] *= s;
    return;
  }
  for (int i = 0; i < d; i++) {
    double acc = 0;
    for (int k = 0; k < d; k++) acc += rot->matrix[(size_t)i * d + k] * x[k];
    y[i] = acc;
  }
}

void tqg_rotate_inverse(const tqg_rotation *rot, const double *y, double *x) {
  int d = rot->dim;
  if (rot->kind == TQG_ROT_WHT) {
    /* (H D / sqrt d)^-1 = D H / sqrt d: H is symmetric, H H = d I. */
    double s = 1.0 / __builtin_sqrt((double)d);
    for (int i = 0; i < d; i++) x[i] = y[i];
    tqg_wht(x, d);
    for (int i = 0; i < d; i++) x[i] *= s * rot->signs[i];
    return;
  }
  for (int k = 0; k < d; k++) x[k] = 0;
  for (int i = 0; i < d; i++)
    for (int k = 0; k < d; k++) x[k] += rot->matrix[(size_t)i * d + k] * y[i];
}

void tqg_rotation_matrix(const tqg_rotation *rot, double *out) {
  int d = rot->dim;
  double *e = calloc((size_t)d, sizeof(double));
  double *col = malloc(sizeof(double) * (size_t)d);
  if (!e || !col) {
    free(e);
    free(col);
    return;
  }
  for (int j = 0; j < d; j++) {
    e[j] = 1;
    tqg_rotate(rot, e, col);
    for (int i = 0; i < d; i++) out[(size_t)i * d + j] = col[i];
    e[j] = 0;
  }
  free(e);
  free(col);
}

tq_status tqg_tables_init(const tq_variant *v, tqg_tables *t) {
  memset(t, 0, sizeof *t);
  tq_status st = tqg_variant_check(v, NULL, 0);
  if (st) return st;
  int main_dim = v->head_dim - v->outlier_count;
  int key_main_bits = v->key_bits - (v->qjl ? 1 : 0);
  if (key_main_bits > 0 && (st = tqg_lloyd_max(key_main_bits, &t->key_cb)))
    return st;
  if ((st = tqg_lloyd_max(v->value_bits, &t->value_cb))) return st;
  int outlier_quantized =
      v->outlier_count > 0 && v->outlier_bits != TQ_OUTLIER_F16;
  if (outlier_quantized && (st = tqg_lloyd_max(v->outlier_bits, &t->outlier_cb)))
    return st;
  st = tqg_rotation_init(&t->main_rot, main_dim,
                         tqg_seed_derive(v->seed, SEED_MAIN_ROT));
  if (!st && outlier_quantized)
    st = tqg_rotation_init(&t->outlier_rot, v->outlier_count,
                           tqg_seed_derive(v->seed, SEED_OUTLIER_ROT));
  if (!st && v->qjl) {
    t->qjl = malloc(sizeof(double) * (size_t)main_dim * (size_t)main_dim);
    if (!t->qjl) st = TQ_ERR_NOMEM;
    else {
      tqg_rng rng;
      tqg_rng_seed(&rng, tqg_seed_derive(v->seed, SEED_QJL));
      for (size_t i = 0; i < (size_t)main_dim * (size_t)main_dim; i++)
        t->qjl[i] = tqg_rng_normal(&rng);
    }
  }
  if (st) tqg_tables_free(t);
  return st;
}

void tqg_tables_free(tqg_tables *t) {
  tqg_rotation_free(&t->main_rot);
  tqg_rotation_free(&t->outlier_rot);
  free(t->qjl);
  t->qjl = NULL;
}
