/* templates/c/kernel.c - portable C kernels for one variant.
 *
 * The emitter puts the tq_abi.h text, the variant's TQ_* defines and its
 * constant tables (codebooks, boundaries, rotation signs or matrices, QJL
 * projection) above this text, and replaces {{SYM}} with the variant's
 * symbol prefix.  Everything stays in floats and in the rotated basis:
 * q is rotated once per query, keys are scored from codebook values, values
 * are accumulated as scale * centroid and the output is rotated back once.
 * No buffer of dequantized K or V exists; the only scratch is one tile of
 * decoded rows on the stack. */
#include <math.h>
#include <string.h>

#define TQ_TOKEN_TILE 32 /* cache tokens decoded per step */
#define TQ_QUERY_TILE 16 /* query rows (token, head) sharing one pass */

/* ---- activations ------------------------------------------------------ */
/* f16 <-> f32: f16 activations, raw-f16 outliers (TQ_OB 16 implies
 * TQ_O > 0) and minmax scales; other variants would warn of unused
 * functions. */
#if TQ_DTYPE == TQ_DTYPE_F16 || TQ_OB == 16 || TQ_VMINMAX
static float tq_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu,
           man = h & 0x3FFu, u;
  float f;
  if (exp == 0) {
    f = (float)man * 0x1.0p-24f;
    return sign ? -f : f;
  }
  u = exp == 31 ? sign | 0x7F800000u | (man << 13)
                : sign | ((exp + 112) << 23) | (man << 13);
  memcpy(&f, &u, 4);
  return f;
}

static uint16_t tq_float_to_half(float f) {
  uint32_t x, sign, exp, man, half, rem;
  int e;
  memcpy(&x, &f, 4);
  sign = (x >> 16) & 0x8000u;
  exp = (x >> 23) & 0xFFu;
  man = x & 0x7FFFFFu;
  if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u : 0));
  e = (int)exp - 112;
  if (e >= 31) return (uint16_t)(sign | 0x7C00u);
  if (e <= 0) {
    int shift;
    uint32_t mid;
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    shift = 14 - e;
    half = man >> shift;
    rem = man & ((1u << shift) - 1);
    mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  half = ((uint32_t)e << 10) | (man >> 13);
  rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;
  return (uint16_t)(sign | half);
}
#endif

#if TQ_DTYPE == TQ_DTYPE_F32
typedef float tq_act;
#define TQ_LOAD(p, i) ((p)[i])
#define TQ_STORE(p, i, x) ((p)[i] = (x))
#elif TQ_DTYPE == TQ_DTYPE_F16
typedef uint16_t tq_act;
#define TQ_LOAD(p, i) tq_half_to_float((p)[i])
#define TQ_STORE(p, i, x) ((p)[i] = tq_float_to_half(x))
#else
typedef uint16_t tq_act;
static float tq_bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t tq_float_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}
#define TQ_LOAD(p, i) tq_bf16_to_float((p)[i])
#define TQ_STORE(p, i, x) ((p)[i] = tq_float_to_bf16(x))
#endif

/* ---- slots ------------------------------------------------------------- */
static uint8_t *tq_slot(const tq_kargs *a, uint8_t *base, int slot_bytes,
                        int b, int h, int t) {
#if TQ_PAGED
  size_t block = (size_t)a->block_table[(size_t)b * a->max_blocks + t / TQ_BLOCK];
  return base + ((block * a->kv_heads + h) * TQ_BLOCK + t % TQ_BLOCK) * slot_bytes;
#else
  return base + (((size_t)b * a->kv_heads + h) * a->capacity + t) * slot_bytes;
#endif
}

static float tq_f32_at(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

static void tq_put_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }

/* Index i of width bits from a little-endian bit stream (docs/FORMAT.md):
 * at most two bytes hold it, and the second is read only when needed. */
static unsigned tq_index(const uint8_t *p, int i, int bits) {
  int bit = i * bits;
  unsigned w = p[bit >> 3];
  if ((bit & 7) + bits > 8) w |= (unsigned)p[(bit >> 3) + 1] << 8;
  return (w >> (bit & 7)) & ((1u << bits) - 1u);
}

/* out[j] = scale * cb[index j] for a packed part of n channels.  tab, when
 * not NULL, is the codebook expanded per byte (1, 2 and 4 bits): one row
 * of 8 / bits centroids for each packed byte. */
static void tq_decode_part(const uint8_t *p, int n, int bits, const float *cb,
                           const float *tab, float scale, float *out) {
  int j = 0, k;
  if (tab) {
    const int per = 8 / bits;
    for (; j + per <= n; j += per) {
      const float *row = tab + p[j / per] * per;
      for (k = 0; k < per; k++) out[j + k] = scale * row[k];
    }
  } else if (bits == 8) {
    for (; j < n; j++) out[j] = scale * cb[p[j]];
  }
  for (; j < n; j++) out[j] = scale * cb[tq_index(p, j, bits)];
}

static void tq_pack_indices(const uint8_t *idx, int n, int bits, uint8_t *out) {
  int i, k, bit;
  for (i = 0; i < n; i++)
    for (k = 0, bit = i * bits; k < bits; k++, bit++)
      if (idx[i] >> k & 1) out[bit >> 3] |= (uint8_t)(1u << (bit & 7));
}

static int tq_nearest(const float *boundary, int levels, float x) {
  int lo = 0, hi = levels - 1;
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if (x >= boundary[mid]) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/* ---- rotations --------------------------------------------------------- */
static void tq_wht(float *x, int n) {
  int h, i, j;
  for (h = 1; h < n; h <<= 1)
    for (i = 0; i < n; i += h << 1)
      for (j = i; j < i + h; j++) {
        float u = x[j], v = x[j + h];
        x[j] = u + v;
        x[j + h] = u - v;
      }
}

/* y = R x (inverse = 0) or x = R^T y (inverse = 1) for one rotation given by
 * signs (randomized Hadamard) or a dense row-major matrix. */
static void tq_rotate(const float *signs, const float *matrix, int n,
                      int inverse, const float *in, float *out) {
  int i, k;
  if (signs) {
    float s = 1.0f / sqrtf((float)n);
    for (i = 0; i < n; i++) out[i] = inverse ? in[i] : in[i] * signs[i];
    tq_wht(out, n);
    for (i = 0; i < n; i++) out[i] *= inverse ? s * signs[i] : s;
    return;
  }
  for (i = 0; i < n; i++) out[i] = 0;
  for (i = 0; i < n; i++)
    for (k = 0; k < n; k++) {
      if (inverse) out[k] += matrix[i * n + k] * in[i];
      else out[i] += matrix[i * n + k] * in[k];
    }
}

#define TQ_MAIN_ROTATE(inv, in, out) \
  tq_rotate(TQ_MAIN_SIGNS, TQ_MAIN_MATRIX, TQ_M, inv, in, out)
#define TQ_OUT_ROTATE(inv, in, out) \
  tq_rotate(TQ_OUT_SIGNS, TQ_OUT_MATRIX, TQ_O, inv, in, out)

static int tq_channel(const uint16_t *perm, int i) { return perm ? perm[i] : i; }

/* ---- encode ------------------------------------------------------------ */
/* Quantizes rotated y (n channels) into a part; returns the stored scale. */
static float tq_quantize(const float *y, int n, int bits, const float *bnd,
                         const float *cb, uint8_t *idx_out, int scale_at,
                         uint8_t *slot) {
  uint8_t idx[TQ_D];
  float n2 = 0, c2 = 0, z, scale;
  int j;
  for (j = 0; j < n; j++) n2 += y[j] * y[j];
  z = n2 > 0 ? sqrtf((float)n / n2) : 0;
  for (j = 0; j < n; j++) {
    idx[j] = (uint8_t)tq_nearest(bnd, 1 << bits, y[j] * z);
    c2 += cb[idx[j]] * cb[idx[j]];
  }
  tq_pack_indices(idx, n, bits, idx_out);
  scale = sqrtf(n2 / (float)n);
  if (TQ_NC && c2 > 0) scale = sqrtf(n2 / c2);
  tq_put_f32(slot + scale_at, scale);
  return scale;
}

static void tq_encode_outliers(const float *x, const uint16_t *perm,
                               uint8_t *slot, int idx_at, int scale_at) {
#if TQ_O > 0
  float xo[TQ_O], y[TQ_O];
  int j;
  for (j = 0; j < TQ_O; j++) xo[j] = x[tq_channel(perm, j)];
#if TQ_OB == 16
  (void)y;
  (void)scale_at;
  for (j = 0; j < TQ_O; j++) {
    uint16_t h = tq_float_to_half(xo[j]);
    memcpy(slot + idx_at + 2 * j, &h, 2);
  }
#else
  TQ_OUT_ROTATE(0, xo, y);
  tq_quantize(y, TQ_O, TQ_OB, tq_out_bnd, tq_out_cb, slot + idx_at, scale_at,
              slot);
#endif
#else
  (void)x;
  (void)perm;
  (void)slot;
  (void)idx_at;
  (void)scale_at;
#endif
}

static void tq_gather_main(const float *x, const uint16_t *perm, float *xm) {
  int j;
  for (j = 0; j < TQ_M; j++) xm[j] = x[tq_channel(perm, TQ_O + j)];
}

static void tq_encode_key(const float *x, const uint16_t *perm, uint8_t *slot) {
  float xm[TQ_M], y[TQ_M];
  memset(slot, 0, TQ_K_BYTES);
  tq_gather_main(x, perm, xm);
  TQ_MAIN_ROTATE(0, xm, y);
#if TQ_QJL
  {
    float scale = 0, r[TQ_M], rn2 = 0;
    int i, j;
#if TQ_KB > 0
    uint8_t idx[TQ_M];
    scale = tq_quantize(y, TQ_M, TQ_KB, tq_k_bnd, tq_k_cb, slot + TQ_K_IDX,
                        TQ_K_SCALE, slot);
    for (j = 0; j < TQ_M; j++) idx[j] = (uint8_t)tq_index(slot + TQ_K_IDX, j, TQ_KB);
    for (j = 0; j < TQ_M; j++) r[j] = y[j] - scale * tq_k_cb[idx[j]];
#else
    (void)scale;
    for (j = 0; j < TQ_M; j++) r[j] = y[j];
#endif
    for (j = 0; j < TQ_M; j++) rn2 += r[j] * r[j];
    for (i = 0; i < TQ_M; i++) {
      float s = 0;
      for (j = 0; j < TQ_M; j++) s += tq_qjl_s[i * TQ_M + j] * r[j];
      if (s >= 0) slot[TQ_K_QJL + (i >> 3)] |= (uint8_t)(1u << (i & 7));
    }
    tq_put_f32(slot + TQ_K_RNORM, sqrtf(rn2));
  }
#else
  tq_quantize(y, TQ_M, TQ_KB, tq_k_bnd, tq_k_cb, slot + TQ_K_IDX, TQ_K_SCALE,
              slot);
#endif
  tq_encode_outliers(x, perm, slot, TQ_K_OUT_IDX, TQ_K_OUT_SCALE);
}

static void tq_encode_value(const float *x, const uint16_t *perm,
                            uint8_t *slot) {
  memset(slot, 0, TQ_V_BYTES);
#if TQ_VMINMAX
  {
    const int top = (1 << TQ_VB) - 1;
    uint8_t idx[TQ_D];
    int g, j;
    (void)perm;
    for (g = 0; g < TQ_D / TQ_VGROUP; g++) {
      float mn = x[g * TQ_VGROUP], mx = mn, s, lo;
      uint16_t hs, hm;
      for (j = 1; j < TQ_VGROUP; j++) {
        mn = fminf(mn, x[g * TQ_VGROUP + j]);
        mx = fmaxf(mx, x[g * TQ_VGROUP + j]);
      }
      hs = tq_float_to_half((mx - mn) / top);
      hm = tq_float_to_half(mn);
      s = tq_half_to_float(hs);
      lo = tq_half_to_float(hm);
      memcpy(slot + TQ_V_GROUPS + 4 * g, &hs, 2);
      memcpy(slot + TQ_V_GROUPS + 4 * g + 2, &hm, 2);
      for (j = 0; j < TQ_VGROUP; j++) {
        float q = s > 0 ? floorf((x[g * TQ_VGROUP + j] - lo) / s + 0.5f) : 0;
        idx[g * TQ_VGROUP + j] = (uint8_t)(q < 0 ? 0 : q > top ? top : q);
      }
    }
    tq_pack_indices(idx, TQ_D, TQ_VB, slot + TQ_V_IDX);
  }
#else
  {
    float xm[TQ_M], y[TQ_M];
    tq_gather_main(x, perm, xm);
    TQ_MAIN_ROTATE(0, xm, y);
    tq_quantize(y, TQ_M, TQ_VB, tq_v_bnd, tq_v_cb, slot + TQ_V_IDX, TQ_V_SCALE,
                slot);
    tq_encode_outliers(x, perm, slot, TQ_V_OUT_IDX, TQ_V_OUT_SCALE);
  }
#endif
}

static const uint16_t *tq_perm(const tq_kargs *a, int h) {
  return a->channel_perm ? a->channel_perm + (size_t)h * TQ_D : NULL;
}

int {{SYM}}_encode(const tq_kargs *a) {
  const tq_act *k = (const tq_act *)a->k, *v = (const tq_act *)a->v;
  float x[TQ_D];
  int b, i, h, j;
  for (b = 0; b < a->batch; b++)
    for (i = 0; i < a->n_tokens; i++) {
      int t = a->seq_lens[b] - a->n_tokens + i;
      for (h = 0; h < a->kv_heads; h++) {
        size_t at = (((size_t)b * a->n_tokens + i) * a->kv_heads + h) * TQ_D;
        for (j = 0; j < TQ_D; j++) x[j] = TQ_LOAD(k, at + j);
        tq_encode_key(x, tq_perm(a, h),
                      tq_slot(a, (uint8_t *)a->k_cache, TQ_K_BYTES, b, h, t));
        for (j = 0; j < TQ_D; j++) x[j] = TQ_LOAD(v, at + j);
        tq_encode_value(x, tq_perm(a, h),
                        tq_slot(a, (uint8_t *)a->v_cache, TQ_V_BYTES, b, h, t));
      }
    }
  return 0;
}

/* ---- decoding one slot into the rotated bases ------------------------- */
/* The outlier part at idx_at / scale_at: rotated, or raw f16. */
static void tq_outlier_rows(const uint8_t *slot, int idx_at, int scale_at,
                            float *out) {
#if TQ_O > 0
#if TQ_OB == 16
  int j;
  (void)scale_at;
  for (j = 0; j < TQ_O; j++) {
    uint16_t h;
    memcpy(&h, slot + idx_at + 2 * j, 2);
    out[j] = tq_half_to_float(h);
  }
#else
  tq_decode_part(slot + idx_at, TQ_O, TQ_OB, tq_out_cb, tq_out_tab,
                 tq_f32_at(slot + scale_at), out);
#endif
#else
  (void)slot;
  (void)idx_at;
  (void)scale_at;
  (void)out;
#endif
}

/* Key: main part (rotated), outlier part. */
static void tq_key_rows(const uint8_t *slot, float *main, float *out) {
#if TQ_KB > 0
  tq_decode_part(slot + TQ_K_IDX, TQ_M, TQ_KB, tq_k_cb, tq_k_tab,
                 tq_f32_at(slot + TQ_K_SCALE), main);
#else
  (void)main;
#endif
  tq_outlier_rows(slot, TQ_K_OUT_IDX, TQ_K_OUT_SCALE, out);
}

/* Value: TQ values like keys; min-max values straight into channel order. */
static void tq_value_rows(const uint8_t *slot, float *main, float *out) {
#if TQ_VMINMAX
  int j;
  (void)out;
  for (j = 0; j < TQ_D; j++) {
    uint16_t hs, hm;
    memcpy(&hs, slot + TQ_V_GROUPS + 4 * (j / TQ_VGROUP), 2);
    memcpy(&hm, slot + TQ_V_GROUPS + 4 * (j / TQ_VGROUP) + 2, 2);
    main[j] = tq_half_to_float(hm) +
              tq_half_to_float(hs) * (float)tq_index(slot + TQ_V_IDX, j, TQ_VB);
  }
#else
  tq_decode_part(slot + TQ_V_IDX, TQ_M, TQ_VB, tq_v_cb, tq_v_tab,
                 tq_f32_at(slot + TQ_V_SCALE), main);
  tq_outlier_rows(slot, TQ_V_OUT_IDX, TQ_V_OUT_SCALE, out);
#endif
}

/* ---- attention (decode and prefill share it) ------------------------- */
#define TQ_VM (TQ_VMINMAX ? TQ_D : TQ_M) /* value channels in "main" */
#define TQ_OW (TQ_O > 0 ? TQ_O : 1)

typedef struct tq_query {
  float main[TQ_M];    /* rotated main part of q */
  float out[TQ_OW];    /* rotated (or raw) outlier part */
  float qjl[TQ_M];     /* S q_main, for the QJL term */
  float qjl_sum;       /* sum of qjl, so the term is 2 sum_{sign=1} - sum */
  float max, sum;      /* online softmax state */
  float acc[TQ_VM];    /* sum of p * value, rotated basis (TQ values) */
  float acc_out[TQ_OW];
  int ctx;             /* tokens this query may see */
  size_t at;           /* element offset of q and out */
} tq_query;

static void tq_prepare(const float *q, const uint16_t *perm, float scale,
                       tq_query *s) {
  float qm[TQ_M];
  int j;
  for (j = 0; j < TQ_M; j++) qm[j] = scale * q[tq_channel(perm, TQ_O + j)];
  TQ_MAIN_ROTATE(0, qm, s->main);
#if TQ_O > 0
  {
    float qo[TQ_O];
    for (j = 0; j < TQ_O; j++) qo[j] = scale * q[tq_channel(perm, j)];
#if TQ_OB == 16
    memcpy(s->out, qo, sizeof qo);
#else
    TQ_OUT_ROTATE(0, qo, s->out);
#endif
  }
#endif
#if TQ_QJL
  {
    int i;
    s->qjl_sum = 0;
    for (i = 0; i < TQ_M; i++) {
      float acc = 0;
      for (j = 0; j < TQ_M; j++) acc += tq_qjl_s[i * TQ_M + j] * s->main[j];
      s->qjl[i] = acc;
      s->qjl_sum += acc;
    }
  }
#endif
  s->max = -INFINITY;
  s->sum = 0;
  memset(s->acc, 0, sizeof s->acc);
  memset(s->acc_out, 0, sizeof s->acc_out);
}

/* Dot product with 8 independent partial sums: without them the compiler
 * may not reorder a float reduction, so the loop would not vectorize. */
static float tq_dot(const float *a, const float *b, int n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum = 0;
  int j, k;
  for (j = 0; j + 8 <= n; j += 8)
    for (k = 0; k < 8; k++) part[k] += a[j + k] * b[j + k];
  for (; j < n; j++) sum += a[j] * b[j];
  for (k = 0; k < 8; k++) sum += part[k];
  return sum;
}

/* Scaled score of one query against one decoded key tile row. */
static float tq_score(const tq_query *s, const float *km, const float *ko,
                      const uint8_t *slot) {
  float acc = 0;
#if TQ_KB > 0
  acc += tq_dot(s->main, km, TQ_M);
#else
  (void)km;
#endif
#if TQ_O > 0
  acc += tq_dot(s->out, ko, TQ_O);
#else
  (void)ko;
#endif
#if TQ_QJL
  {
    /* sqrt(pi/2) / m * |r| * <S q, sign>, with sign = 2 * bit - 1. */
    float pos = 0;
    int j;
    for (j = 0; j < TQ_M; j++)
      if (slot[TQ_K_QJL + (j >> 3)] >> (j & 7) & 1) pos += s->qjl[j];
    acc += 1.25331413731550025f / TQ_M * tq_f32_at(slot + TQ_K_RNORM) *
           (2 * pos - s->qjl_sum);
  }
#else
  (void)slot;
#endif
  return acc;
}

static int tq_attend(const tq_kargs *a) {
  const tq_act *q = (const tq_act *)a->q;
  tq_act *o = (tq_act *)a->out;
  const int rows_per_head = a->n_tokens * TQ_G;
  static const int nonzero = 1; /* keeps -Wunused quiet for tables */
  int b, h;
  (void)nonzero;
  for (b = 0; b < a->batch; b++)
    for (h = 0; h < a->kv_heads; h++) {
      const uint16_t *perm = tq_perm(a, h);
      int r0;
      for (r0 = 0; r0 < rows_per_head; r0 += TQ_QUERY_TILE) {
        tq_query qs[TQ_QUERY_TILE];
        float km[TQ_TOKEN_TILE][TQ_M], ko[TQ_TOKEN_TILE][TQ_OW];
        float vm[TQ_TOKEN_TILE][TQ_VM], vo[TQ_TOKEN_TILE][TQ_OW];
        float p[TQ_TOKEN_TILE];
        int nr = rows_per_head - r0 < TQ_QUERY_TILE ? rows_per_head - r0
                                                    : TQ_QUERY_TILE;
        int r, t0, t, j, ctx = 0;
        for (r = 0; r < nr; r++) {
          /* Row (token i, head g) of this kv head's queries. */
          int i = (r0 + r) / TQ_G, g = (r0 + r) % TQ_G;
          float x[TQ_D];
          qs[r].at = (((size_t)b * a->n_tokens + i) * a->kv_heads * TQ_G +
                      (size_t)h * TQ_G + g) * TQ_D;
          for (j = 0; j < TQ_D; j++) x[j] = TQ_LOAD(q, qs[r].at + j);
          tq_prepare(x, perm, a->sm_scale, &qs[r]);
          qs[r].ctx = a->seq_lens[b] - a->n_tokens + i + 1;
          if (qs[r].ctx > ctx) ctx = qs[r].ctx;
        }
        for (t0 = 0; t0 < ctx; t0 += TQ_TOKEN_TILE) {
          int nt = ctx - t0 < TQ_TOKEN_TILE ? ctx - t0 : TQ_TOKEN_TILE;
          for (t = 0; t < nt; t++) {
            tq_key_rows(tq_slot(a, (uint8_t *)a->k_cache, TQ_K_BYTES, b, h, t0 + t),
                        km[t], ko[t]);
            tq_value_rows(tq_slot(a, (uint8_t *)a->v_cache, TQ_V_BYTES, b, h, t0 + t),
                          vm[t], vo[t]);
          }
          for (r = 0; r < nr; r++) {
            tq_query *s = &qs[r];
            int n = s->ctx - t0 < nt ? s->ctx - t0 : nt;
            float mx = s->max, corr;
            if (n <= 0) continue;
            for (t = 0; t < n; t++) {
              p[t] = tq_score(s, km[t], ko[t],
                              TQ_QJL ? tq_slot(a, (uint8_t *)a->k_cache, TQ_K_BYTES, b, h, t0 + t) : NULL);
              if (p[t] > mx) mx = p[t];
            }
            /* Online softmax: rescale what was summed under the old max. */
            corr = expf(s->max - mx);
            s->sum *= corr;
            for (j = 0; j < TQ_VM; j++) s->acc[j] *= corr;
            for (j = 0; j < TQ_O; j++) s->acc_out[j] *= corr;
            s->max = mx;
            for (t = 0; t < n; t++) {
              float w = expf(p[t] - mx);
              s->sum += w;
              for (j = 0; j < TQ_VM; j++) s->acc[j] += w * vm[t][j];
              if (!TQ_VMINMAX)
                for (j = 0; j < TQ_O; j++) s->acc_out[j] += w * vo[t][j];
            }
          }
        }
        for (r = 0; r < nr; r++) {
          tq_query *s = &qs[r];
          float x[TQ_D], inv = 1.0f / s->sum;
#if TQ_VMINMAX
          for (j = 0; j < TQ_D; j++) x[j] = s->acc[j] * inv;
#else
          float xm[TQ_M];
          TQ_MAIN_ROTATE(1, s->acc, xm);
          for (j = 0; j < TQ_M; j++) x[tq_channel(perm, TQ_O + j)] = xm[j] * inv;
#if TQ_O > 0
          {
            float xo[TQ_O];
#if TQ_OB == 16
            memcpy(xo, s->acc_out, sizeof xo);
#else
            TQ_OUT_ROTATE(1, s->acc_out, xo);
#endif
            for (j = 0; j < TQ_O; j++) x[tq_channel(perm, j)] = xo[j] * inv;
          }
#endif
#endif
          for (j = 0; j < TQ_D; j++) TQ_STORE(o, s->at + j, x[j]);
        }
      }
    }
  return 0;
}

int {{SYM}}_decode(const tq_kargs *a) { return tq_attend(a); }

int {{SYM}}_prefill(const tq_kargs *a) { return tq_attend(a); }

/* ---- dequantize -------------------------------------------------------- */
int {{SYM}}_dequant(const tq_kargs *a) {
  tq_act *k = (tq_act *)a->k, *v = (tq_act *)a->v;
  int b, t, h, j;
  for (b = 0; b < a->batch; b++)
    for (t = 0; t < a->n_tokens; t++)
      for (h = 0; h < a->kv_heads; h++) {
        const uint16_t *perm = tq_perm(a, h);
        const uint8_t *ks = tq_slot(a, (uint8_t *)a->k_cache, TQ_K_BYTES, b, h, t);
        const uint8_t *vs = tq_slot(a, (uint8_t *)a->v_cache, TQ_V_BYTES, b, h, t);
        size_t at = (((size_t)b * a->n_tokens + t) * a->kv_heads + h) * TQ_D;
        float m[TQ_VM], ob[TQ_OW], xm[TQ_M], x[TQ_D];
        memset(m, 0, sizeof m);
        tq_key_rows(ks, m, ob);
#if TQ_QJL
        {
          /* The QJL part dequantizes to sqrt(pi/2)/m |r| S^T sign. */
          float c = 1.25331413731550025f / TQ_M * tq_f32_at(ks + TQ_K_RNORM);
          int i;
          for (i = 0; i < TQ_M; i++) {
            float s = (ks[TQ_K_QJL + (i >> 3)] >> (i & 7) & 1) ? c : -c;
            for (j = 0; j < TQ_M; j++) m[j] += s * tq_qjl_s[i * TQ_M + j];
          }
        }
#endif
        TQ_MAIN_ROTATE(1, m, xm);
        for (j = 0; j < TQ_M; j++) x[tq_channel(perm, TQ_O + j)] = xm[j];
#if TQ_O > 0
        {
          float xo[TQ_O];
#if TQ_OB == 16
          memcpy(xo, ob, sizeof xo);
#else
          TQ_OUT_ROTATE(1, ob, xo);
#endif
          for (j = 0; j < TQ_O; j++) x[tq_channel(perm, j)] = xo[j];
        }
#endif
        for (j = 0; j < TQ_D; j++) TQ_STORE(k, at + j, x[j]);
        tq_value_rows(vs, m, ob);
#if TQ_VMINMAX
        for (j = 0; j < TQ_D; j++) x[j] = m[j];
#else
        TQ_MAIN_ROTATE(1, m, xm);
        for (j = 0; j < TQ_M; j++) x[tq_channel(perm, TQ_O + j)] = xm[j];
#if TQ_O > 0
        {
          float xo[TQ_O];
#if TQ_OB == 16
          memcpy(xo, ob, sizeof xo);
#else
          TQ_OUT_ROTATE(1, ob, xo);
#endif
          for (j = 0; j < TQ_O; j++) x[tq_channel(perm, j)] = xo[j];
        }
#endif
#endif
        for (j = 0; j < TQ_D; j++) TQ_STORE(v, at + j, x[j]);
      }
  return 0;
}

size_t {{SYM}}_workspace(int op, const tq_kargs *a) {
  (void)op;
  (void)a;
  return 0; /* scratch lives on the stack, one tile at a time */
}
