/* ref.c - the CPU reference encoder, decoder and attention.  The encoder
 * here is the definition of docs/FORMAT.md. */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SQRT_HALF_PI 1.25331413731550025121 /* sqrt(pi / 2), QJL constant */

tq_status tq_ref_init(tq_ref *r, const tq_variant *v) {
  memset(r, 0, sizeof *r);
  r->v = *v;
  tq_status st = tqg_tables_init(v, &r->t);
  if (st) return st;
  tqg_key_layout(v, &r->key);
  tqg_value_layout(v, &r->value);
  return TQ_OK;
}

void tq_ref_free(tq_ref *r) { tqg_tables_free(&r->t); }

static float get_f32(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

static void put_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }

static uint16_t get_u16(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return h;
}

static void put_u16(uint8_t *p, uint16_t h) { memcpy(p, &h, 2); }

static int channel(const uint16_t *perm, int i) { return perm ? perm[i] : i; }

/* Quantizes the rotated part y (dim m) with codebook cb into the part's
 * indices and scale; returns the f32 scale.  The decoded rotated vector is
 * scale * c[idx]: scale = |y| / sqrt(m), or with norm correction
 * |y| / |c[idx]| so the decoded vector keeps the exact norm. */
static float quantize_part(const tq_ref *r, const tqg_codebook *cb,
                           const tq_part_layout *p, const double *y,
                           uint8_t *slot, uint8_t *idx) {
  int m = p->dim;
  double n2 = 0;
  for (int j = 0; j < m; j++) n2 += y[j] * y[j];
  double n = sqrt(n2), z = n > 0 ? sqrt((double)m) / n : 0;
  double c2 = 0;
  for (int j = 0; j < m; j++) {
    idx[j] = (uint8_t)tqg_codebook_index(cb, y[j] * z);
    c2 += cb->centroid[idx[j]] * cb->centroid[idx[j]];
  }
  tqg_pack(idx, m, p->bits, slot + p->idx_offset);
  double scale = n / sqrt((double)m);
  if (r->v.norm_correction && c2 > 0) scale = n / sqrt(c2);
  float s = (float)scale;
  put_f32(slot + p->scale_offset, s);
  return s;
}

/* The outlier part of a key or value: rotated and quantized apart, or raw
 * f16.  x is in the original basis. */
static void encode_outliers(const tq_ref *r, const tq_part_layout *p,
                            const double *x, const uint16_t *perm,
                            uint8_t *slot) {
  int o = p->dim;
  double xo[TQ_MAX_HEAD_DIM], y[TQ_MAX_HEAD_DIM];
  uint8_t idx[TQ_MAX_HEAD_DIM];
  if (o == 0) return;
  for (int j = 0; j < o; j++) xo[j] = x[channel(perm, j)];
  if (p->bits == TQ_OUTLIER_F16) {
    memset(slot + p->idx_offset, 0, (size_t)p->idx_bytes);
    for (int j = 0; j < o; j++)
      put_u16(slot + p->idx_offset + 2 * j, tqg_f32_to_f16((float)xo[j]));
    return;
  }
  tqg_rotate(&r->t.outlier_rot, xo, y);
  quantize_part(r, &r->t.outlier_cb, p, y, slot, idx);
}

/* The rotated main part of x: channels perm[o .. d-1]. */
static void rotate_main(const tq_ref *r, const double *x, const uint16_t *perm,
                        double *y) {
  int o = r->v.outlier_count, m = r->v.head_dim - o;
  double xm[TQ_MAX_HEAD_DIM] = {0};
  for (int j = 0; j < m; j++) xm[j] = x[channel(perm, o + j)];
  tqg_rotate(&r->t.main_rot, xm, y);
}

void tq_ref_encode_key(const tq_ref *r, const double *x, const uint16_t *perm,
                       uint8_t *slot) {
  const tq_slot_layout *l = &r->key;
  int m = l->main.dim;
  double y[TQ_MAX_HEAD_DIM], res[TQ_MAX_HEAD_DIM];
  uint8_t idx[TQ_MAX_HEAD_DIM];
  memset(slot, 0, (size_t)l->bytes);
  rotate_main(r, x, perm, y);
  float scale = 0;
  if (l->main.bits > 0)
    scale = quantize_part(r, &r->t.key_cb, &l->main, y, slot, idx);
  if (r->v.qjl) {
    /* Residual of the MSE part in the rotated basis, then sign(S r) and |r|. */
    double rn2 = 0;
    for (int j = 0; j < m; j++) {
      double dec = l->main.bits > 0 ? (double)scale * r->t.key_cb.centroid[idx[j]] : 0;
      res[j] = y[j] - dec;
      rn2 += res[j] * res[j];
    }
    uint8_t sign[TQ_MAX_HEAD_DIM];
    for (int i = 0; i < m; i++) {
      double s = 0;
      for (int j = 0; j < m; j++) s += r->t.qjl[(size_t)i * m + j] * res[j];
      sign[i] = s >= 0;
    }
    tqg_pack(sign, m, 1, slot + l->qjl_offset);
    put_f32(slot + l->rnorm_offset, (float)sqrt(rn2));
  }
  encode_outliers(r, &l->outlier, x, perm, slot);
}

static void encode_minmax(const tq_ref *r, const double *x, uint8_t *slot) {
  const tq_slot_layout *l = &r->value;
  int g = r->v.value_group, top = (1 << r->v.value_bits) - 1;
  uint8_t idx[TQ_MAX_HEAD_DIM];
  for (int k = 0; k < l->groups; k++) {
    double mn = x[k * g], mx = x[k * g];
    for (int j = 1; j < g; j++) {
      mn = fmin(mn, x[k * g + j]);
      mx = fmax(mx, x[k * g + j]);
    }
    /* Codes use the f16-rounded min and scale that decoding will see. */
    uint16_t hs = tqg_f32_to_f16((float)((mx - mn) / top));
    uint16_t hm = tqg_f32_to_f16((float)mn);
    double s = tqg_f16_to_f32(hs), lo = tqg_f16_to_f32(hm);
    put_u16(slot + l->group_offset + 4 * k, hs);
    put_u16(slot + l->group_offset + 4 * k + 2, hm);
    for (int j = 0; j < g; j++) {
      double q = s > 0 ? floor((x[k * g + j] - lo) / s + 0.5) : 0;
      idx[k * g + j] = (uint8_t)(q < 0 ? 0 : q > top ? top : q);
    }
  }
  tqg_pack(idx, r->v.head_dim, r->v.value_bits, slot + l->main.idx_offset);
}

void tq_ref_encode_value(const tq_ref *r, const double *x,
                         const uint16_t *perm, uint8_t *slot) {
  const tq_slot_layout *l = &r->value;
  memset(slot, 0, (size_t)l->bytes);
  if (r->v.value_method == TQ_VALUE_MINMAX) {
    encode_minmax(r, x, slot);
    return;
  }
  double y[TQ_MAX_HEAD_DIM];
  uint8_t idx[TQ_MAX_HEAD_DIM];
  rotate_main(r, x, perm, y);
  quantize_part(r, &r->t.value_cb, &l->main, y, slot, idx);
  encode_outliers(r, &l->outlier, x, perm, slot);
}

/* Rotated-basis decode of a quantized part: y = scale * c[idx]. */
static void decode_part_rotated(const tqg_codebook *cb,
                                const tq_part_layout *p, const uint8_t *slot,
                                double *y) {
  double s = get_f32(slot + p->scale_offset);
  for (int j = 0; j < p->dim; j++)
    y[j] = s * cb->centroid[tqg_unpack_one(slot + p->idx_offset, j, p->bits)];
}

static void decode_outliers(const tq_ref *r, const tq_part_layout *p,
                            const uint8_t *slot, const uint16_t *perm,
                            double *x) {
  double y[TQ_MAX_HEAD_DIM], xo[TQ_MAX_HEAD_DIM];
  if (p->dim == 0) return;
  if (p->bits == TQ_OUTLIER_F16) {
    for (int j = 0; j < p->dim; j++)
      x[channel(perm, j)] =
          tqg_f16_to_f32(get_u16(slot + p->idx_offset + 2 * j));
    return;
  }
  decode_part_rotated(&r->t.outlier_cb, p, slot, y);
  tqg_rotate_inverse(&r->t.outlier_rot, y, xo);
  for (int j = 0; j < p->dim; j++) x[channel(perm, j)] = xo[j];
}

static void unrotate_main(const tq_ref *r, const double *y,
                          const uint16_t *perm, double *x) {
  int o = r->v.outlier_count, m = r->v.head_dim - o;
  double xm[TQ_MAX_HEAD_DIM];
  tqg_rotate_inverse(&r->t.main_rot, y, xm);
  for (int j = 0; j < m; j++) x[channel(perm, o + j)] = xm[j];
}

void tq_ref_decode_key(const tq_ref *r, const uint8_t *slot,
                       const uint16_t *perm, double *x) {
  const tq_slot_layout *l = &r->key;
  int m = l->main.dim;
  double y[TQ_MAX_HEAD_DIM] = {0};
  if (l->main.bits > 0) decode_part_rotated(&r->t.key_cb, &l->main, slot, y);
  if (r->v.qjl) {
    /* QJL dequantization: sqrt(pi/2) / m * |r| * S^T sign. */
    double c = SQRT_HALF_PI / m * get_f32(slot + l->rnorm_offset);
    for (int i = 0; i < m; i++) {
      double s = tqg_unpack_one(slot + l->qjl_offset, i, 1) ? c : -c;
      for (int j = 0; j < m; j++) y[j] += s * r->t.qjl[(size_t)i * m + j];
    }
  }
  unrotate_main(r, y, perm, x);
  decode_outliers(r, &l->outlier, slot, perm, x);
}

void tq_ref_decode_value(const tq_ref *r, const uint8_t *slot,
                         const uint16_t *perm, double *x) {
  const tq_slot_layout *l = &r->value;
  if (r->v.value_method == TQ_VALUE_MINMAX) {
    int g = r->v.value_group;
    for (int j = 0; j < r->v.head_dim; j++) {
      const uint8_t *gp = slot + l->group_offset + 4 * (j / g);
      x[j] = tqg_f16_to_f32(get_u16(gp + 2)) +
             tqg_f16_to_f32(get_u16(gp)) *
                 tqg_unpack_one(slot + l->main.idx_offset, j, l->main.bits);
    }
    return;
  }
  double y[TQ_MAX_HEAD_DIM];
  decode_part_rotated(&r->t.value_cb, &l->main, slot, y);
  unrotate_main(r, y, perm, x);
  decode_outliers(r, &l->outlier, slot, perm, x);
}

void tq_ref_prepare_query(const tq_ref *r, const double *q,
                          const uint16_t *perm, tq_ref_query *out) {
  int o = r->v.outlier_count, m = r->v.head_dim - o;
  memset(out, 0, sizeof *out);
  rotate_main(r, q, perm, out->main);
  if (o > 0) {
    double qo[TQ_MAX_HEAD_DIM];
    for (int j = 0; j < o; j++) qo[j] = q[channel(perm, j)];
    if (r->v.outlier_bits == TQ_OUTLIER_F16)
      memcpy(out->outlier, qo, sizeof(double) * (size_t)o);
    else
      tqg_rotate(&r->t.outlier_rot, qo, out->outlier);
  }
  if (r->v.qjl)
    for (int i = 0; i < m; i++) {
      double s = 0;
      for (int j = 0; j < m; j++) s += r->t.qjl[(size_t)i * m + j] * out->main[j];
      out->qjl[i] = s;
    }
}

static double dot_part(const tqg_codebook *cb, const tq_part_layout *p,
                       const uint8_t *slot, const double *q) {
  double acc = 0;
  for (int j = 0; j < p->dim; j++)
    acc += q[j] * cb->centroid[tqg_unpack_one(slot + p->idx_offset, j, p->bits)];
  return acc * get_f32(slot + p->scale_offset);
}

double tq_ref_score(const tq_ref *r, const tq_ref_query *q,
                    const uint8_t *slot) {
  const tq_slot_layout *l = &r->key;
  double s = 0;
  if (l->main.bits > 0) s += dot_part(&r->t.key_cb, &l->main, slot, q->main);
  if (r->v.qjl) {
    int m = l->main.dim;
    double acc = 0;
    for (int i = 0; i < m; i++)
      acc += tqg_unpack_one(slot + l->qjl_offset, i, 1) ? q->qjl[i] : -q->qjl[i];
    s += SQRT_HALF_PI / m * get_f32(slot + l->rnorm_offset) * acc;
  }
  const tq_part_layout *p = &l->outlier;
  if (p->dim > 0) {
    if (p->bits == TQ_OUTLIER_F16)
      for (int j = 0; j < p->dim; j++)
        s += q->outlier[j] * tqg_f16_to_f32(get_u16(slot + p->idx_offset + 2 * j));
    else
      s += dot_part(&r->t.outlier_cb, p, slot, q->outlier);
  }
  return s;
}

uint8_t *tq_ref_slot(const tq_ref *r, const tq_kargs *a, int value, int b,
                     int h, int t) {
  size_t bytes = (size_t)(value ? r->value.bytes : r->key.bytes);
  uint8_t *base = value ? a->v_cache : a->k_cache;
  if (r->v.layout == TQ_PAGED) {
    int bs = r->v.block_size;
    size_t block = (size_t)a->block_table[(size_t)b * a->max_blocks + t / bs];
    return base + ((block * a->kv_heads + h) * bs + t % bs) * bytes;
  }
  return base + (((size_t)b * a->kv_heads + h) * a->capacity + t) * bytes;
}

static const uint16_t *head_perm(const tq_ref *r, const tq_kargs *a, int h) {
  return a->channel_perm ? a->channel_perm + (size_t)h * r->v.head_dim : NULL;
}

static void encode(const tq_ref *r, const tq_kargs *a) {
  int d = r->v.head_dim, H = a->kv_heads;
  double x[TQ_MAX_HEAD_DIM];
  for (int b = 0; b < a->batch; b++)
    for (int i = 0; i < a->n_tokens; i++) {
      int t = a->seq_lens[b] - a->n_tokens + i;
      for (int h = 0; h < H; h++) {
        size_t at = (((size_t)b * a->n_tokens + i) * H + h) * d;
        const uint16_t *perm = head_perm(r, a, h);
        for (int j = 0; j < d; j++) x[j] = tqg_load(a->k, r->v.dtype, at + j);
        tq_ref_encode_key(r, x, perm, tq_ref_slot(r, a, 0, b, h, t));
        for (int j = 0; j < d; j++) x[j] = tqg_load(a->v, r->v.dtype, at + j);
        tq_ref_encode_value(r, x, perm, tq_ref_slot(r, a, 1, b, h, t));
      }
    }
}

static void dequant(const tq_ref *r, const tq_kargs *a) {
  int d = r->v.head_dim, H = a->kv_heads;
  double x[TQ_MAX_HEAD_DIM];
  for (int b = 0; b < a->batch; b++)
    for (int t = 0; t < a->n_tokens; t++)
      for (int h = 0; h < H; h++) {
        size_t at = (((size_t)b * a->n_tokens + t) * H + h) * d;
        const uint16_t *perm = head_perm(r, a, h);
        tq_ref_decode_key(r, tq_ref_slot(r, a, 0, b, h, t), perm, x);
        for (int j = 0; j < d; j++) tqg_store(a->k, r->v.dtype, at + j, x[j]);
        tq_ref_decode_value(r, tq_ref_slot(r, a, 1, b, h, t), perm, x);
        for (int j = 0; j < d; j++) tqg_store(a->v, r->v.dtype, at + j, x[j]);
      }
}

/* Attention over the packed cache in the rotated basis: score each key from
 * codebook values, accumulate TQ values in their rotated bases, rotate the
 * output back once. */
static tq_status attend(const tq_ref *r, const tq_kargs *a) {
  int d = r->v.head_dim, G = r->v.group, H = a->kv_heads;
  int o = r->v.outlier_count, m = d - o;
  int minmax = r->v.value_method == TQ_VALUE_MINMAX;
  const tq_part_layout *vm = &r->value.main, *vo = &r->value.outlier;
  size_t maxlen = 0;
  for (int b = 0; b < a->batch; b++)
    if ((size_t)a->seq_lens[b] > maxlen) maxlen = (size_t)a->seq_lens[b];
  double *p = malloc(sizeof(double) * (maxlen ? maxlen : 1));
  if (!p) return TQ_ERR_NOMEM;
  double x[TQ_MAX_HEAD_DIM], acc_m[TQ_MAX_HEAD_DIM], acc_o[TQ_MAX_HEAD_DIM],
      y[TQ_MAX_HEAD_DIM];
  tq_ref_query rq;
  for (int b = 0; b < a->batch; b++)
    for (int i = 0; i < a->n_tokens; i++) {
      int ctx = a->seq_lens[b] - a->n_tokens + i + 1;
      for (int hq = 0; hq < H * G; hq++) {
        int h = hq / G;
        const uint16_t *perm = head_perm(r, a, h);
        size_t at = (((size_t)b * a->n_tokens + i) * H * G + hq) * d;
        for (int j = 0; j < d; j++) x[j] = tqg_load(a->q, r->v.dtype, at + j);
        tq_ref_prepare_query(r, x, perm, &rq);
        double mx = -INFINITY, sum = 0;
        for (int t = 0; t < ctx; t++) {
          p[t] = a->sm_scale * tq_ref_score(r, &rq, tq_ref_slot(r, a, 0, b, h, t));
          mx = fmax(mx, p[t]);
        }
        for (int t = 0; t < ctx; t++) sum += (p[t] = exp(p[t] - mx));
        memset(acc_m, 0, sizeof acc_m);
        memset(acc_o, 0, sizeof acc_o);
        for (int t = 0; t < ctx; t++) {
          const uint8_t *slot = tq_ref_slot(r, a, 1, b, h, t);
          double w = p[t] / sum;
          if (minmax) {
            tq_ref_decode_value(r, slot, perm, y);
            for (int j = 0; j < d; j++) acc_m[j] += w * y[j];
            continue;
          }
          decode_part_rotated(&r->t.value_cb, vm, slot, y);
          for (int j = 0; j < m; j++) acc_m[j] += w * y[j];
          if (o == 0) continue;
          if (vo->bits == TQ_OUTLIER_F16)
            for (int j = 0; j < o; j++)
              acc_o[j] += w * tqg_f16_to_f32(get_u16(slot + vo->idx_offset + 2 * j));
          else {
            decode_part_rotated(&r->t.outlier_cb, vo, slot, y);
            for (int j = 0; j < o; j++) acc_o[j] += w * y[j];
          }
        }
        if (minmax) {
          memcpy(x, acc_m, sizeof(double) * (size_t)d);
        } else {
          unrotate_main(r, acc_m, perm, x);
          if (o > 0) {
            double xo[TQ_MAX_HEAD_DIM];
            if (vo->bits == TQ_OUTLIER_F16)
              memcpy(xo, acc_o, sizeof(double) * (size_t)o);
            else
              tqg_rotate_inverse(&r->t.outlier_rot, acc_o, xo);
            for (int j = 0; j < o; j++) x[channel(perm, j)] = xo[j];
          }
        }
        for (int j = 0; j < d; j++) tqg_store(a->out, r->v.dtype, at + j, x[j]);
      }
    }
  free(p);
  return TQ_OK;
}

tq_status tq_ref_run(const tq_ref *r, tq_op op, const tq_kargs *a) {
  switch (op) {
    case TQ_OP_ENCODE: encode(r, a); return TQ_OK;
    case TQ_OP_DEQUANT: dequant(r, a); return TQ_OK;
    case TQ_OP_DECODE:
    case TQ_OP_PREFILL: return attend(r, a);
    default: return TQ_ERR_INVALID;
  }
}

void tq_ref_attention_exact(int d, int G, int batch, int H, int n_q,
                            int ctx_stride, const int32_t *seq_lens,
                            double sm_scale, const double *q, const double *k,
                            const double *v, double *out) {
  double *p = malloc(sizeof(double) * (size_t)(ctx_stride ? ctx_stride : 1));
  if (!p) return;
  for (int b = 0; b < batch; b++)
    for (int i = 0; i < n_q; i++) {
      int ctx = seq_lens[b] - n_q + i + 1;
      for (int hq = 0; hq < H * G; hq++) {
        int h = hq / G;
        const double *qv = q + (((size_t)b * n_q + i) * H * G + hq) * d;
        double *ov = out + (((size_t)b * n_q + i) * H * G + hq) * d;
        double mx = -INFINITY, sum = 0;
        for (int t = 0; t < ctx; t++) {
          const double *kv = k + (((size_t)b * ctx_stride + t) * H + h) * d;
          double s = 0;
          for (int j = 0; j < d; j++) s += qv[j] * kv[j];
          p[t] = sm_scale * s;
          mx = fmax(mx, p[t]);
        }
        for (int t = 0; t < ctx; t++) sum += (p[t] = exp(p[t] - mx));
        for (int j = 0; j < d; j++) ov[j] = 0;
        for (int t = 0; t < ctx; t++) {
          const double *vv = v + (((size_t)b * ctx_stride + t) * H + h) * d;
          for (int j = 0; j < d; j++) ov[j] += p[t] / sum * vv[j];
        }
      }
    }
  free(p);
}

tq_status tq_ref_attention_dequant(const tq_ref *r, const tq_kargs *a) {
  int d = r->v.head_dim, G = r->v.group, H = a->kv_heads, n = a->n_tokens;
  int ctx = 0;
  for (int b = 0; b < a->batch; b++)
    if (a->seq_lens[b] > ctx) ctx = a->seq_lens[b];
  size_t kv_len = (size_t)a->batch * ctx * H * d;
  size_t q_len = (size_t)a->batch * n * H * G * d;
  double *k = malloc(sizeof(double) * kv_len), *v = malloc(sizeof(double) * kv_len);
  double *q = malloc(sizeof(double) * q_len), *out = malloc(sizeof(double) * q_len);
  tq_status st = TQ_ERR_NOMEM;
  if (k && v && q && out) {
    for (int b = 0; b < a->batch; b++)
      for (int t = 0; t < a->seq_lens[b]; t++)
        for (int h = 0; h < H; h++) {
          size_t at = (((size_t)b * ctx + t) * H + h) * d;
          tq_ref_decode_key(r, tq_ref_slot(r, a, 0, b, h, t), head_perm(r, a, h), k + at);
          tq_ref_decode_value(r, tq_ref_slot(r, a, 1, b, h, t), head_perm(r, a, h), v + at);
        }
    for (size_t i = 0; i < q_len; i++) q[i] = tqg_load(a->q, r->v.dtype, i);
    tq_ref_attention_exact(d, G, a->batch, H, n, ctx, a->seq_lens, a->sm_scale,
                           q, k, v, out);
    for (size_t i = 0; i < q_len; i++) tqg_store(a->out, r->v.dtype, i, out[i]);
    st = TQ_OK;
  }
  free(k);
  free(v);
  free(q);
  free(out);
  return st;
}
