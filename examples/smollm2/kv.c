/* kv.c - KV caches for the forward pass (see kv.h). */
#include "kv.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "ref/ref.h"

#define MAX_PARTS 8

struct smol_kv {
  smol_kv_options o;
  int L, H, G, d;
  int *len;       /* tokens in each layer's cache */
  float *kf, *vf; /* [L][capacity][H][d]: unquantized keys and values (the
                     f32 cache, or the reference for statistics) */
  float *kq, *vq; /* minmax, sim: the dequantized cache attention reads */
  tq_ref *ref;    /* sim: the reference encoder and decoder */
  float *mean;    /* [L][2][H][d]: key and value means (centering) */
  float *ks, *vs; /* [max_chunk][H][d]: centered keys and values */
  float *scale;   /* [L][H][d]: key channel scales (smoothing) */
  float *qs;      /* [max_chunk][H*G][d]: queries times the key scales */
  float *exact;   /* [max_chunk][H*G][d]: exact attention for statistics */
  double *cos_sum;
  long *cos_n;
  char err[1536], label[200];
  /* tq */
  tq_backend *be;
  tq_kernel *encode, *decode, *prefill;
  tq_buffer **kc, **vc, **perm; /* per layer */
  uint16_t *order;              /* [L][H][d] channel order on the host */
  tq_buffer *kin, *vin, *qin, *out;
  tq_buffer *seq[MAX_PARTS], *work[MAX_PARTS];
  int host_split; /* the backend's memory is host memory: split queries */
};

static tq_status fail(smol_kv *kv, tq_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(kv->err, sizeof kv->err, fmt, ap);
  va_end(ap);
  return st;
}

const char *smol_kv_error(const smol_kv *kv) {
  return kv->err;
}
const char *smol_kv_label(const smol_kv *kv) {
  return kv->label;
}

static size_t cache_floats(const smol_kv *kv) {
  return (size_t)kv->L * kv->o.capacity * kv->H * kv->d;
}

static tq_status tq_setup(smol_kv *kv, char *err, size_t errn) {
  tq_variant *v = &kv->o.variant;
  char name[160];
  tqg_variant_name(v, name, sizeof name);
  if (v->head_dim != kv->d || v->group != kv->G || v->dtype != TQ_F32 ||
      v->layout != TQ_CONTIGUOUS) {
    snprintf(
        err, errn,
        "variant %s does not fit the model: it needs head_dim %d, group %d, "
        "f32 activations and a contiguous cache",
        name, kv->d, kv->G);
    return TQ_ERR_INVALID;
  }
  tq_status st;
  if ((st = tq_get_kernel(kv->be, v, TQ_OP_ENCODE, &kv->encode)) ||
      (st = tq_get_kernel(kv->be, v, TQ_OP_DECODE, &kv->decode)) ||
      (st = tq_get_kernel(kv->be, v, TQ_OP_PREFILL, &kv->prefill))) {
    snprintf(err, errn, "%s", tq_error(kv->be));
    return st;
  }
  snprintf(kv->label, sizeof kv->label, "%s%s%s (%s, %s)", name,
           kv->o.center ? " centered" : "", kv->o.smooth ? " smoothed" : "",
           tq_backend_label(kv->be),
           tq_kernel_origin(kv->encode));
  kv->host_split = !strcmp(tq_backend_label(kv->be), "c") && kv->o.threads > 1;
  kv->kc = calloc((size_t)kv->L, sizeof *kv->kc);
  kv->vc = calloc((size_t)kv->L, sizeof *kv->vc);
  kv->perm = calloc((size_t)kv->L, sizeof *kv->perm);
  kv->order = malloc((size_t)kv->L * kv->H * kv->d * sizeof *kv->order);
  if (!kv->kc || !kv->vc || !kv->perm || !kv->order) return TQ_ERR_NOMEM;
  size_t slots = (size_t)kv->H * kv->o.capacity;
  size_t act = (size_t)kv->o.max_chunk * kv->H * kv->d * sizeof(float);
  for (int l = 0; l < kv->L && !st; l++) {
    if ((st = tq_alloc(kv->be, slots * tq_key_slot_bytes(v), &kv->kc[l])) ||
        (st = tq_alloc(kv->be, slots * tq_value_slot_bytes(v), &kv->vc[l])) ||
        (st = tq_alloc(kv->be, (size_t)kv->H * kv->d * sizeof(uint16_t),
                       &kv->perm[l])))
      break;
    for (int i = 0; i < kv->H * kv->d; i++) /* identity until calibrated */
      kv->order[(size_t)l * kv->H * kv->d + (size_t)i] = (uint16_t)(i % kv->d);
    st = tq_write(kv->be, kv->perm[l], 0, kv->order + (size_t)l * kv->H * kv->d,
                  (size_t)kv->H * kv->d * sizeof(uint16_t));
  }
  if (!st && !(st = tq_alloc(kv->be, act, &kv->kin)) &&
      !(st = tq_alloc(kv->be, act, &kv->vin)) &&
      !(st = tq_alloc(kv->be, act * kv->G, &kv->qin)))
    st = tq_alloc(kv->be, act * kv->G, &kv->out);
  for (int p = 0; p < MAX_PARTS && !st; p++)
    st = tq_alloc(kv->be, sizeof(int32_t), &kv->seq[p]);
  if (st) snprintf(err, errn, "%s", tq_error(kv->be));
  return st;
}

tq_status smol_kv_create(tq_backend *be, const smol_config *cfg,
                         const smol_kv_options *o, smol_kv **out, char *err,
                         size_t errn) {
  *out = NULL;
  if (o->capacity < 1 || o->capacity > cfg->context || o->max_chunk < 1 ||
      (o->kind == SMOL_KV_MINMAX &&
       (o->minmax_bits < 1 || o->minmax_bits > 8)) ||
      (o->kind == SMOL_KV_TQ && !be)) {
    snprintf(err, errn,
             "KV cache options: capacity %d (allowed 1..%d), chunk %d, minmax "
             "bits %d%s",
             o->capacity, cfg->context, o->max_chunk, o->minmax_bits,
             o->kind == SMOL_KV_TQ && !be ? ", no backend" : "");
    return TQ_ERR_INVALID;
  }
  smol_kv *kv = calloc(1, sizeof *kv);
  if (!kv) return TQ_ERR_NOMEM;
  kv->o = *o;
  if (kv->o.threads < 1) kv->o.threads = 1;
  if (kv->o.threads > MAX_PARTS) kv->o.threads = MAX_PARTS;
  kv->L = cfg->n_layers, kv->H = cfg->n_kv_heads,
  kv->G = cfg->n_heads / cfg->n_kv_heads;
  kv->d = cfg->head_dim;
  kv->be = be;
  kv->len = calloc((size_t)kv->L, sizeof *kv->len);
  kv->cos_sum = calloc((size_t)kv->L, sizeof *kv->cos_sum);
  kv->cos_n = calloc((size_t)kv->L, sizeof *kv->cos_n);
  tq_status st = kv->len && kv->cos_sum && kv->cos_n ? TQ_OK : TQ_ERR_NOMEM;
  if (!st && (o->kind == SMOL_KV_F32 || o->stats_stride > 0)) {
    kv->kf = malloc(cache_floats(kv) * sizeof(float));
    kv->vf = malloc(cache_floats(kv) * sizeof(float));
    kv->exact =
        malloc((size_t)o->max_chunk * kv->H * kv->G * kv->d * sizeof(float));
    if (!kv->kf || !kv->vf || !kv->exact) st = TQ_ERR_NOMEM;
  }
  if (!st && (o->center || o->smooth) && o->kind != SMOL_KV_F32) {
    kv->ks = malloc((size_t)o->max_chunk * kv->H * kv->d * sizeof(float));
    kv->vs = malloc((size_t)o->max_chunk * kv->H * kv->d * sizeof(float));
    if (!kv->ks || !kv->vs) st = TQ_ERR_NOMEM;
  }
  if (!st && o->center && o->kind != SMOL_KV_F32) {
    kv->mean = calloc((size_t)kv->L * 2 * kv->H * kv->d, sizeof(float));
    if (!kv->mean) st = TQ_ERR_NOMEM;
  }
  if (!st && o->smooth && o->kind != SMOL_KV_F32) {
    kv->scale = malloc((size_t)kv->L * kv->H * kv->d * sizeof(float));
    if (o->kind == SMOL_KV_TQ)
      kv->qs = malloc((size_t)o->max_chunk * kv->H * kv->G * kv->d * sizeof(float));
    if (!kv->scale || (o->kind == SMOL_KV_TQ && !kv->qs)) st = TQ_ERR_NOMEM;
  }
  if (!st && (o->kind == SMOL_KV_MINMAX || o->kind == SMOL_KV_SIM)) {
    kv->kq = malloc(cache_floats(kv) * sizeof(float));
    kv->vq = malloc(cache_floats(kv) * sizeof(float));
    if (!kv->kq || !kv->vq) st = TQ_ERR_NOMEM;
  }
  if (!st && o->kind == SMOL_KV_SIM) {
    char name[160];
    tqg_variant_name(&o->variant, name, sizeof name);
    kv->ref = calloc(1, sizeof *kv->ref);
    if (!kv->ref) st = TQ_ERR_NOMEM;
    else if (o->variant.head_dim != kv->d || o->variant.outlier_count > 0 ||
             (st = tq_ref_init(kv->ref, &o->variant))) {
      free(kv->ref);
      kv->ref = NULL;
      snprintf(err, errn, "simulated cache %s: head_dim %d must be the model's %d and "
               "outlier channels are not simulated", name, o->variant.head_dim, kv->d);
      st = TQ_ERR_INVALID;
    }
    char sink[32] = "";
    if (o->sink > 0) snprintf(sink, sizeof sink, " +sink%d", o->sink);
    snprintf(kv->label, sizeof kv->label, "sim %s%s%s%s", name, sink,
             o->center ? " +center" : "", o->smooth ? " +smooth" : "");
  }
  if (o->kind == SMOL_KV_F32) snprintf(kv->label, sizeof kv->label, "f32");
  if (o->kind == SMOL_KV_MINMAX)
    snprintf(kv->label, sizeof kv->label, "minmax%d%s%s", o->minmax_bits,
             o->center ? " centered" : "", o->smooth ? " smoothed" : "");
  if (st == TQ_ERR_NOMEM)
    snprintf(err, errn, "out of memory for a KV cache of %d tokens",
             o->capacity);
  if (!st && o->kind == SMOL_KV_TQ) st = tq_setup(kv, err, errn);
  if (st == TQ_ERR_NOMEM && !*err) snprintf(err, errn, "out of memory");
  if (st) {
    smol_kv_free(kv);
    return st;
  }
  *out = kv;
  return TQ_OK;
}

void smol_kv_free(smol_kv *kv) {
  if (!kv) return;
  for (int l = 0; kv->be && l < kv->L; l++) {
    if (kv->kc) tq_free(kv->be, kv->kc[l]);
    if (kv->vc) tq_free(kv->be, kv->vc[l]);
    if (kv->perm) tq_free(kv->be, kv->perm[l]);
  }
  if (kv->be) {
    tq_free(kv->be, kv->kin), tq_free(kv->be, kv->vin),
        tq_free(kv->be, kv->qin);
    tq_free(kv->be, kv->out);
    for (int p = 0; p < MAX_PARTS; p++)
      tq_free(kv->be, kv->seq[p]), tq_free(kv->be, kv->work[p]);
  }
  free(kv->kc), free(kv->vc), free(kv->perm), free(kv->order);
  if (kv->ref) tq_ref_free(kv->ref);
  free(kv->ref);
  free(kv->len), free(kv->kf), free(kv->vf), free(kv->kq), free(kv->vq),
      free(kv->mean), free(kv->ks), free(kv->vs), free(kv->scale),
      free(kv->qs), free(kv->exact),
      free(kv->cos_sum), free(kv->cos_n);
  free(kv);
}

void smol_kv_reset(smol_kv *kv) {
  memset(kv->len, 0, (size_t)kv->L * sizeof *kv->len);
}

/* Per-token min-max: step and minimum rounded to f16 (what a cache would
 * store), x -> min + step * round((x - min) / step). */
static void minmax_roundtrip(float *x, int d, int bits) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < d; i++)
    lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  int top = (1 << bits) - 1;
  float mn = tqg_f16_to_f32(tqg_f32_to_f16(lo));
  float step = tqg_f16_to_f32(tqg_f32_to_f16((hi - lo) / (float)top));
  for (int i = 0; i < d; i++) {
    int q = step > 0 ? (int)floorf((x[i] - mn) / step + 0.5f) : 0;
    q = q < 0 ? 0 : q > top ? top : q;
    x[i] = mn + step * (float)q;
  }
}

/* Appends n rows of x [n][H][d] to a [L][capacity][H][d] cache. */
static void store(const smol_kv *kv, float *cache, int layer, int pos, int n,
                  const float *x) {
  size_t row = (size_t)kv->H * kv->d;
  memcpy(cache + ((size_t)layer * kv->o.capacity + (size_t)pos) * row, x,
         (size_t)n * row * sizeof(float));
}

/* x [n][H][d] minus (sign -1) or plus (+1) the layer's mean of kind
 * (0 keys, 1 values). */
static void shift(const smol_kv *kv, int layer, int kind, float *x, int n,
                  float sign) {
  const float *m =
      kv->mean + ((size_t)layer * 2 + (size_t)kind) * kv->H * kv->d;
  size_t row = (size_t)kv->H * kv->d;
  for (size_t t = 0; t < (size_t)n; t++)
    for (size_t i = 0; i < row; i++) x[t * row + i] += sign * m[i];
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* The per-layer, per-kv-head centers of the first tokens of a sequence:
 * the per-channel median, not the mean, because the first token of a
 * sequence (the attention sink) has keys and values far from the rest and
 * would drag a mean away from every other token. */
static void set_means(smol_kv *kv, int layer, int n, const float *k,
                      const float *v) {
  size_t row = (size_t)kv->H * kv->d;
  float *m = kv->mean + (size_t)layer * 2 * row,
        *col = malloc((size_t)n * sizeof *col);
  for (size_t i = 0; col && i < row; i++)
    for (int kind = 0; kind < 2; kind++) {
      const float *x = kind ? v : k;
      for (size_t t = 0; t < (size_t)n; t++) col[t] = x[t * row + i];
      qsort(col, (size_t)n, sizeof *col, cmp_float);
      m[(size_t)kind * row + i] =
          n % 2 ? col[n / 2] : 0.5f * (col[n / 2 - 1] + col[n / 2]);
    }
  free(col);
}

/* The keys and values the quantizer sees: centered copies, or as given. */
static void centered(smol_kv *kv, int layer, int pos, int n, const float **k,
                     const float **v) {
  if (!kv->mean) return;
  if (pos == 0) set_means(kv, layer, n, *k, *v);
  size_t bytes = (size_t)n * kv->H * kv->d * sizeof(float);
  memcpy(kv->ks, *k, bytes);
  memcpy(kv->vs, *v, bytes);
  shift(kv, layer, 0, kv->ks, n, -1);
  shift(kv, layer, 1, kv->vs, n, -1);
  *k = kv->ks;
  *v = kv->vs;
}

/* Key channel scales of each kv head from the first tokens of a sequence:
 * s_c = sqrt(rms(k_c) / rms(q_c)) over the tokens and the head's queries.
 * Scores q.k = (q s).(k / s) are unchanged, but the quantizer's error on
 * k / s is isotropic after the rotation with a size set by |k / s|, so a
 * score's error scales with |k / s| |q s|, which this s minimizes over
 * per-channel scales (Cauchy-Schwarz): channels where keys are large and
 * queries small stop spending the key's error budget. */
static void set_scales(smol_kv *kv, int layer, int n, const float *k,
                       const float *q) {
  int H = kv->H, G = kv->G, d = kv->d;
  float *s = kv->scale + (size_t)layer * H * d;
  for (int h = 0; h < H; h++) {
    double ek[TQ_MAX_HEAD_DIM] = {0}, eq[TQ_MAX_HEAD_DIM] = {0};
    double top_k = 0, top_q = 0;
    for (int t = 0; t < n; t++)
      for (int c = 0; c < d; c++) {
        double a = k[((size_t)t * H + h) * d + c];
        ek[c] += a * a;
        for (int g = 0; g < G; g++) {
          double b = q[(((size_t)t * H + h) * G + g) * d + c];
          eq[c] += b * b;
        }
      }
    for (int c = 0; c < d; c++)
      top_k = ek[c] > top_k ? ek[c] : top_k, top_q = eq[c] > top_q ? eq[c] : top_q;
    for (int c = 0; c < d; c++) /* floors keep a silent channel finite */
      s[h * d + c] = (float)pow((ek[c] / n + 1e-4 * top_k / n) /
                                    (eq[c] / ((double)n * G) + 1e-4 * top_q / ((double)n * G)),
                                0.25);
  }
}

/* Smoothing: keys divided by the layer's scales; queries multiplied by
 * them for the packed cache, whose kernels score q against k / s (the
 * simulated caches scale their dequantized keys back instead: unsmooth). */
static void smoothed(smol_kv *kv, int layer, int pos, int n, const float **k,
                     const float **q) {
  if (!kv->scale) return;
  int H = kv->H, G = kv->G, d = kv->d;
  if (pos == 0) set_scales(kv, layer, n, *k, *q);
  const float *s = kv->scale + (size_t)layer * H * d;
  for (size_t t = 0; t < (size_t)n; t++)
    for (size_t i = 0; i < (size_t)H * d; i++)
      kv->ks[t * H * d + i] = (*k)[t * H * d + i] / s[i];
  *k = kv->ks;
  if (kv->o.kind != SMOL_KV_TQ) return;
  for (size_t r = 0; r < (size_t)n * H * G; r++) { /* row r: q head r % (H G) */
    const float *sh = s + (r % ((size_t)H * G)) / (size_t)G * d;
    for (int c = 0; c < d; c++) kv->qs[r * d + c] = (*q)[r * d + c] * sh[c];
  }
  *q = kv->qs;
}

/* Keys of a dequantized cache back from the smoothed basis. */
static void unsmooth(const smol_kv *kv, int layer, float *x, int n) {
  if (!kv->scale) return;
  const float *s = kv->scale + (size_t)layer * kv->H * kv->d;
  size_t row = (size_t)kv->H * kv->d;
  for (size_t t = 0; t < (size_t)n; t++)
    for (size_t i = 0; i < row; i++) x[t * row + i] *= s[i];
}

static void store_minmax(smol_kv *kv, float *cache, int layer, int pos, int n,
                         const float *x, int kind) {
  size_t row = (size_t)kv->H * kv->d;
  float *dst = cache + ((size_t)layer * kv->o.capacity + (size_t)pos) * row;
  memcpy(dst, x, (size_t)n * row * sizeof(float));
  for (size_t i = 0; i < (size_t)n * kv->H; i++)
    minmax_roundtrip(dst + i * (size_t)kv->d, kv->d, kv->o.minmax_bits);
  if (kind == 0) unsmooth(kv, layer, dst, n);
  if (kv->mean) shift(kv, layer, kind, dst, n, +1);
}

/* The simulated cache: every vector through the reference encoder and
 * decoder, except positions below the sink count. */
static void store_sim(smol_kv *kv, float *cache, int layer, int pos, int n,
                      const float *x, int value) {
  size_t row = (size_t)kv->H * kv->d;
  float *dst = cache + ((size_t)layer * kv->o.capacity + (size_t)pos) * row;
  memcpy(dst, x, (size_t)n * row * sizeof(float));
  size_t slot_bytes = value ? tq_value_slot_bytes(&kv->o.variant)
                            : tq_key_slot_bytes(&kv->o.variant);
  uint8_t slot[4096];
  double in[TQ_MAX_HEAD_DIM], outv[TQ_MAX_HEAD_DIM];
  if (slot_bytes > sizeof slot) return; /* head_dim is checked at creation */
  for (int t = 0; t < n; t++) {
    if (pos + t < kv->o.sink) continue;
    for (int h = 0; h < kv->H; h++) {
      float *y = dst + ((size_t)t * kv->H + h) * kv->d;
      for (int i = 0; i < kv->d; i++) in[i] = y[i];
      if (value) {
        tq_ref_encode_value(kv->ref, in, NULL, slot);
        tq_ref_decode_value(kv->ref, slot, NULL, outv);
      } else {
        tq_ref_encode_key(kv->ref, in, NULL, slot);
        tq_ref_decode_key(kv->ref, slot, NULL, outv);
      }
      for (int i = 0; i < kv->d; i++) y[i] = (float)outv[i];
    }
  }
  if (!value) unsmooth(kv, layer, dst, n);
  if (kv->mean) shift(kv, layer, value, dst, n, +1);
}

static float dot(const float *a, const float *b, int d) {
  float acc[8] = {0};
  int i = 0;
  for (; i + 8 <= d; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  float s = 0;
  for (; i < d; i++) s += a[i] * b[i];
  for (int l = 0; l < 8; l++) s += acc[l];
  return s;
}

/* Exact causal attention over the f32 cache for query rows t with
 * (pos + t) % stride == 0 (stride 1: all). */
static void attention_f32(const smol_kv *kv, const float *kc, const float *vc,
                          int layer, int pos, int n, int stride, const float *q,
                          float *out) {
  int H = kv->H, G = kv->G, d = kv->d, rows = n * H * G;
  size_t krow = (size_t)H * d;
  const float *K = kc + (size_t)layer * kv->o.capacity * krow;
  const float *V = vc + (size_t)layer * kv->o.capacity * krow;
  float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel
  {
    float *p = malloc((size_t)(pos + n) * sizeof *p);
#pragma omp for schedule(dynamic, 4)
    for (int r = 0; r < rows; r++) {
      int t = r / (H * G), qh = r % (H * G), h = qh / G, ctx = pos + t + 1;
      if (!p || (pos + t) % stride) continue;
      const float *qr = q + (size_t)r * d;
      float mx = -INFINITY, sum = 0, *o = out + (size_t)r * d;
      for (int j = 0; j < ctx; j++) {
        p[j] = dot(qr, K + (size_t)j * krow + (size_t)h * d, d) * scale;
        mx = p[j] > mx ? p[j] : mx;
      }
      for (int j = 0; j < ctx; j++) sum += p[j] = expf(p[j] - mx);
      for (int i = 0; i < d; i++) o[i] = 0;
      for (int j = 0; j < ctx; j++) {
        const float *vr = V + (size_t)j * krow + (size_t)h * d;
        float w = p[j] / sum;
        for (int i = 0; i < d; i++) o[i] += w * vr[i];
      }
    }
    free(p);
  }
}

/* Outlier channels of each kv head: the outlier_count channels with the
 * largest share of the keys' energy plus share of the values' energy over
 * these tokens, first (largest first); then the rest in channel order. */
static tq_status calibrate(smol_kv *kv, int layer, int n, const float *k,
                           const float *v) {
  int H = kv->H, d = kv->d, o = kv->o.variant.outlier_count;
  uint16_t *order = kv->order + (size_t)layer * H * d;
  for (int h = 0; h < H; h++) {
    double ek[TQ_MAX_HEAD_DIM] = {0}, ev[TQ_MAX_HEAD_DIM] = {0}, tk = 0, tv = 0;
    double score[TQ_MAX_HEAD_DIM];
    unsigned char taken[TQ_MAX_HEAD_DIM] = {0};
    for (int t = 0; t < n; t++)
      for (int c = 0; c < d; c++) {
        double a = k[((size_t)t * H + h) * d + c],
               b = v[((size_t)t * H + h) * d + c];
        ek[c] += a * a, ev[c] += b * b, tk += a * a, tv += b * b;
      }
    for (int c = 0; c < d; c++)
      score[c] = ek[c] / (tk > 0 ? tk : 1) + ev[c] / (tv > 0 ? tv : 1);
    uint16_t *ord = order + (size_t)h * d;
    for (int i = 0; i < o; i++) {
      int best = -1;
      for (int c = 0; c < d; c++)
        if (!taken[c] && (best < 0 || score[c] > score[best])) best = c;
      taken[best] = 1;
      ord[i] = (uint16_t)best;
    }
    for (int c = 0, i = o; c < d; c++)
      if (!taken[c]) ord[i++] = (uint16_t)c;
  }
  if (tq_write(kv->be, kv->perm[layer], 0, order,
               (size_t)H * d * sizeof *order))
    return fail(kv, TQ_ERR_INVALID, "layer %d: writing the channel order: %s",
                layer, tq_error(kv->be));
  return TQ_OK;
}

static tq_status set_len(smol_kv *kv, tq_buffer *b, int len) {
  int32_t s = len;
  return tq_write(kv->be, b, 0, &s, sizeof s);
}

/* Work-balanced split of n causal queries at pos into parts: part i is
 * queries cut[i]..cut[i+1]-1. */
static int split(int pos, int n, int parts, int *cut) {
  if (parts > n) parts = n;
  double total = (double)n * pos + (double)n * (n + 1) / 2, acc = 0;
  cut[0] = 0;
  int p = 1;
  for (int t = 0; t < n && p < parts; t++) {
    acc += pos + t + 1;
    if (acc >= total * p / parts) cut[p++] = t + 1;
  }
  for (; p <= parts; p++) cut[p] = n;
  return parts;
}

static tq_status run_part(smol_kv *kv, int layer, int pos, int a, int b,
                          int part) {
  size_t qrow = (size_t)kv->H * kv->G * kv->d * sizeof(float);
  tq_buffer *q = kv->qin, *o = kv->out, *wq = NULL, *wo = NULL;
  tq_status st = set_len(kv, kv->seq[part], pos + b);
  if (!st && kv->host_split) {
    st = tq_wrap(kv->be, (char *)tq_buffer_ptr(kv->qin) + (size_t)a * qrow,
                 (size_t)(b - a) * qrow, &wq);
    if (!st)
      st = tq_wrap(kv->be, (char *)tq_buffer_ptr(kv->out) + (size_t)a * qrow,
                   (size_t)(b - a) * qrow, &wo);
    q = wq, o = wo;
  }
  const tq_kernel *k = b - a <= TQ_MAX_DECODE_QLEN ? kv->decode : kv->prefill;
  tq_launch l = {.batch = 1,
                 .kv_heads = kv->H,
                 .n_tokens = b - a,
                 .capacity = kv->o.capacity,
                 .k_cache = kv->kc[layer],
                 .v_cache = kv->vc[layer],
                 .seq_lens = kv->seq[part],
                 .channel_perm = kv->perm[layer],
                 .q = q,
                 .out = o};
  size_t ws = st ? 0 : tq_workspace_size(k, &l);
  if (!st && ws > tq_buffer_size(kv->work[part])) {
    tq_free(kv->be, kv->work[part]);
    kv->work[part] = NULL;
    st = tq_alloc(kv->be, ws, &kv->work[part]);
  }
  l.workspace = ws ? kv->work[part] : NULL;
  if (!st) st = tq_run(kv->be, k, &l);
  tq_free(kv->be, wq);
  tq_free(kv->be, wo);
  return st;
}

static tq_status tq_attend(smol_kv *kv, int layer, int pos, int n,
                           const float *q, const float *k, const float *v,
                           float *out) {
  size_t act = (size_t)n * kv->H * kv->d * sizeof(float);
  tq_status st;
  if (pos == 0 && kv->o.variant.outlier_count > 0 &&
      (st = calibrate(kv, layer, n, k, v)))
    return st;
  tq_launch enc = {.batch = 1,
                   .kv_heads = kv->H,
                   .n_tokens = n,
                   .capacity = kv->o.capacity,
                   .k_cache = kv->kc[layer],
                   .v_cache = kv->vc[layer],
                   .seq_lens = kv->seq[0],
                   .channel_perm = kv->perm[layer],
                   .k = kv->kin,
                   .v = kv->vin};
  if ((st = tq_write(kv->be, kv->kin, 0, k, act)) ||
      (st = tq_write(kv->be, kv->vin, 0, v, act)) ||
      (st = tq_write(kv->be, kv->qin, 0, q, act * kv->G)) ||
      (st = set_len(kv, kv->seq[0], pos + n)) ||
      (st = tq_run(kv->be, kv->encode, &enc)))
    return fail(kv, st, "layer %d, encode of %d tokens at %d: %s", layer, n,
                pos, tq_error(kv->be));
  int cut[MAX_PARTS + 1],
      parts = kv->host_split ? split(pos, n, kv->o.threads, cut) : 1;
  if (parts == 1) cut[0] = 0, cut[1] = n;
  tq_status part_st[MAX_PARTS] = {TQ_OK};
#pragma omp parallel for num_threads(parts) if (parts > 1)
  for (int p = 0; p < parts; p++)
    part_st[p] = run_part(kv, layer, pos, cut[p], cut[p + 1], p);
  for (int p = 0; p < parts; p++)
    if (part_st[p])
      return fail(kv, part_st[p], "layer %d, attention of %d tokens at %d: %s",
                  layer, n, pos, tq_error(kv->be));
  if ((st = tq_sync(kv->be)) ||
      (st = tq_read(kv->be, kv->out, 0, out, act * kv->G)))
    return fail(kv, st, "layer %d: %s", layer, tq_error(kv->be));
  if (kv->mean) { /* the value mean, back into each q head's output */
    const float *mv = kv->mean + ((size_t)layer * 2 + 1) * kv->H * kv->d;
    for (int r = 0; r < n * kv->H * kv->G; r++)
      for (int i = 0; i < kv->d; i++)
        out[(size_t)r * kv->d + (size_t)i] +=
            mv[(size_t)(r % (kv->H * kv->G) / kv->G) * kv->d + (size_t)i];
  }
  return TQ_OK;
}

static void accumulate_cosine(smol_kv *kv, int layer, int pos, int n,
                              const float *got) {
  int rows = kv->H * kv->G, d = kv->d, s = kv->o.stats_stride;
  for (int t = 0; t < n; t++) {
    if ((pos + t) % s) continue;
    for (int r = 0; r < rows; r++) {
      const float *a = got + ((size_t)t * rows + r) * d,
                  *b = kv->exact + ((size_t)t * rows + r) * d;
      double ab = 0, aa = 0, bb = 0;
      for (int i = 0; i < d; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i],
            bb += (double)b[i] * b[i];
      kv->cos_sum[layer] += aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb);
      kv->cos_n[layer]++;
    }
  }
}

tq_status smol_kv_attend(void *ctx, int layer, int pos, int n, const float *q,
                         const float *k, const float *v, float *out) {
  smol_kv *kv = ctx;
  if (layer < 0 || layer >= kv->L || pos != kv->len[layer] || n < 1 ||
      n > kv->o.max_chunk || pos + n > kv->o.capacity)
    return fail(kv, TQ_ERR_INVALID,
                "layer %d: %d tokens at position %d; the cache holds %d of "
                "%d tokens and takes at most %d per call (append only)",
                layer, n, pos,
                layer >= 0 && layer < kv->L ? kv->len[layer] : -1,
                kv->o.capacity, kv->o.max_chunk);
  int stats = kv->o.stats_stride > 0;
  if (kv->kf)
    store(kv, kv->kf, layer, pos, n, k), store(kv, kv->vf, layer, pos, n, v);
  tq_status st = TQ_OK;
  const float *kc = k, *vc = v, *qc = q;
  centered(kv, layer, pos, n, &kc, &vc);
  smoothed(kv, layer, pos, n, &kc, &qc);
  if (kv->o.kind == SMOL_KV_TQ) {
    st = tq_attend(kv, layer, pos, n, qc, kc, vc, out);
  } else if (kv->o.kind == SMOL_KV_MINMAX) {
    store_minmax(kv, kv->kq, layer, pos, n, kc, 0);
    store_minmax(kv, kv->vq, layer, pos, n, vc, 1);
    attention_f32(kv, kv->kq, kv->vq, layer, pos, n, 1, q, out);
  } else if (kv->o.kind == SMOL_KV_SIM) {
    store_sim(kv, kv->kq, layer, pos, n, kc, 0);
    store_sim(kv, kv->vq, layer, pos, n, vc, 1);
    attention_f32(kv, kv->kq, kv->vq, layer, pos, n, 1, q, out);
  } else {
    attention_f32(kv, kv->kf, kv->vf, layer, pos, n, 1, q, out);
  }
  if (!st && stats) {
    /* Exact attention of the sampled rows on the unquantized keys and
     * values (for the f32 cache this recomputes its own output: cosine 1). */
    attention_f32(kv, kv->kf, kv->vf, layer, pos, n, kv->o.stats_stride, q,
                  kv->exact);
    accumulate_cosine(kv, layer, pos, n, out);
  }
  if (!st) kv->len[layer] = pos + n;
  return st;
}

size_t smol_kv_bytes_per_token(const smol_kv *kv) {
  size_t per_head;
  if (kv->o.kind == SMOL_KV_TQ || kv->o.kind == SMOL_KV_SIM)
    per_head =
        tq_key_slot_bytes(&kv->o.variant) + tq_value_slot_bytes(&kv->o.variant);
  else if (kv->o.kind ==
           SMOL_KV_MINMAX) /* indices + f16 step and min, K and V */
    per_head = 2 * ((size_t)(kv->d * kv->o.minmax_bits + 7) / 8 + 4);
  else
    per_head = 2 * (size_t)kv->d * sizeof(float);
  return per_head * (size_t)kv->H * (size_t)kv->L;
}

double smol_kv_bits_per_coord(const smol_kv *kv) {
  return 8.0 * (double)smol_kv_bytes_per_token(kv) /
         (2.0 * kv->d * kv->H * kv->L);
}

double smol_kv_cosine(const smol_kv *kv, int layer) {
  return kv->cos_n[layer] ? kv->cos_sum[layer] / (double)kv->cos_n[layer] : NAN;
}

double smol_kv_cosine_mean(const smol_kv *kv, double *worst, int *worst_layer) {
  double sum = 0;
  int n = 0;
  *worst = NAN;
  *worst_layer = -1;
  for (int l = 0; l < kv->L; l++) {
    double c = smol_kv_cosine(kv, l);
    if (isnan(c)) continue;
    sum += c, n++;
    if (*worst_layer < 0 || c < *worst) *worst = c, *worst_layer = l;
  }
  return n ? sum / n : NAN;
}

const uint16_t *smol_kv_channel_order(const smol_kv *kv, int layer,
                                      int kv_head) {
  if (!kv->order || kv->o.variant.outlier_count == 0) return NULL;
  return kv->order + ((size_t)layer * kv->H + (size_t)kv_head) * kv->d;
}
