/* verify.c - runs one kernel against the CPU reference on fresh random
 * inputs.  Outputs are poisoned before every launch, so a kernel that
 * writes nothing (or skips a token) fails.
 *
 * Tolerances, and why:
 * - encode: the kernel quantizes in f32, the reference in f64, so a
 *   coordinate within float rounding of a decision boundary may land in the
 *   neighbouring cell.  At most TQ_VERIFY_INDEX_MISMATCH of the indices may
 *   differ and only by one cell; scales and norms within
 *   TQ_VERIFY_FIELD_REL (f32 sums of <= 512 terms are good to ~1e-5, an
 *   index flip moves a norm-corrected scale by less than 1e-3); padding
 *   must be zero and slots the op does not own must keep their poison.
 * - attention and dequant, on the same packed cache as the reference:
 *   relative L2 error below the output dtype's rounding (f32 2e-4 for f32
 *   accumulation over long contexts, f16 2e-3 ~ 4 ulp, bf16 1.6e-2 ~ 4 ulp). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ref/ref.h"

#define TQ_VERIFY_INDEX_MISMATCH 0.01
#define TQ_VERIFY_FIELD_REL 1e-3
#define POISON_BYTE 0xA7 /* as f16 0xA7A7 = -0.0297, as f32 a tiny negative */

static double tolerance(tq_dtype t) {
  return t == TQ_F32 ? 2e-4 : t == TQ_F16 ? 2e-3 : 1.6e-2;
}

typedef struct world {
  tq_ref ref;
  tq_kargs host; /* reference-side arguments (host memory) */
  size_t k_cache_bytes, v_cache_bytes, q_bytes, kv_bytes, perm_bytes, table_bytes;
  int32_t *seq_lens, *table;
  uint16_t *perm;
  void *q, *k, *v, *out, *k_cache, *v_cache;
} world;

static void free_world(world *w) {
  free(w->seq_lens);
  free(w->table);
  free(w->perm);
  free(w->q);
  free(w->k);
  free(w->v);
  free(w->out);
  free(w->k_cache);
  free(w->v_cache);
  tq_ref_free(&w->ref);
}

static void fill_act(void *p, tq_dtype t, size_t n, tqg_rng *rng, double sd) {
  for (size_t i = 0; i < n; i++) tqg_store(p, t, i, sd * tqg_rng_normal(rng));
}

/* Builds random inputs and a reference-encoded cache for op. */
static tq_status make_world(world *w, const tq_variant *v, tq_op op,
                            const tq_verify_options *o) {
  memset(w, 0, sizeof *w);
  tq_status st = tq_ref_init(&w->ref, v);
  if (st) return st;
  tqg_rng rng;
  tqg_rng_seed(&rng, o->seed ^ tqg_variant_hash(v) ^ (uint64_t)op * 0x9E37u);
  int d = v->head_dim, G = v->group;
  int B = o->batch > 0 ? o->batch : 2, H = o->kv_heads > 0 ? o->kv_heads : 2;
  int ctx = o->context > 0 ? o->context : 67;
  int n = o->n_tokens > 0 ? o->n_tokens
          : op == TQ_OP_DECODE ? 1 : op == TQ_OP_PREFILL ? 19 : ctx;
  if (op == TQ_OP_DECODE && n > TQ_MAX_DECODE_QLEN) n = TQ_MAX_DECODE_QLEN;
  if (n > ctx) n = ctx;
  tq_kargs *a = &w->host;
  a->batch = B;
  a->kv_heads = H;
  a->n_tokens = n;
  a->sm_scale = (float)(1.0 / sqrt(d));
  w->seq_lens = malloc(sizeof(int32_t) * B);
  /* Sequences of different lengths: ctx, ctx - 5, ... (at least n). */
  for (int b = 0; b < B; b++) {
    int len = ctx - 5 * b;
    w->seq_lens[b] = len < n ? n : len;
  }
  int capacity = ctx + 3; /* slack slots that must stay poisoned */
  size_t slots;
  if (v->layout == TQ_PAGED) {
    int bs = v->block_size, per = (capacity + bs - 1) / bs;
    a->max_blocks = per;
    a->num_blocks = B * per + 1;
    w->table_bytes = sizeof(int32_t) * B * per;
    w->table = malloc(w->table_bytes);
    /* A shuffled pool: block ids out of order, one spare block. */
    int *ids = malloc(sizeof(int) * a->num_blocks);
    for (int i = 0; i < a->num_blocks; i++) ids[i] = i;
    for (int i = a->num_blocks - 1; i > 0; i--) {
      int j = (int)(tqg_rng_next(&rng) % (uint64_t)(i + 1)), t = ids[i];
      ids[i] = ids[j];
      ids[j] = t;
    }
    for (int i = 0; i < B * per; i++) w->table[i] = ids[i];
    free(ids);
    slots = (size_t)a->num_blocks * H * bs;
  } else {
    a->capacity = capacity;
    slots = (size_t)B * H * capacity;
  }
  w->k_cache_bytes = slots * w->ref.key.bytes;
  w->v_cache_bytes = slots * w->ref.value.bytes;
  w->k_cache = malloc(w->k_cache_bytes);
  w->v_cache = malloc(w->v_cache_bytes);
  memset(w->k_cache, POISON_BYTE, w->k_cache_bytes);
  memset(w->v_cache, POISON_BYTE, w->v_cache_bytes);
  /* A random channel order per kv head (outliers = its first entries). */
  w->perm_bytes = sizeof(uint16_t) * H * d;
  w->perm = malloc(w->perm_bytes);
  for (int h = 0; h < H; h++) {
    uint16_t *p = w->perm + (size_t)h * d;
    for (int j = 0; j < d; j++) p[j] = (uint16_t)j;
    for (int j = d - 1; j > 0; j--) {
      int i = (int)(tqg_rng_next(&rng) % (uint64_t)(j + 1));
      uint16_t t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
  }
  int es = tqg_dtype_size(v->dtype);
  w->q_bytes = (size_t)es * B * n * H * G * d;
  w->q = malloc(w->q_bytes);
  w->out = malloc(w->q_bytes);
  fill_act(w->q, v->dtype, w->q_bytes / es, &rng, 1.0);
  /* K/V of the whole context, encoded by the reference; the encode op
   * re-encodes all of it with the kernel. */
  int tokens = op == TQ_OP_ENCODE ? n : ctx;
  w->kv_bytes = (size_t)es * B * tokens * H * d;
  w->k = malloc(w->kv_bytes);
  w->v = malloc(w->kv_bytes);
  /* Keys with a per-channel offset and a few large channels, like real
   * models; values plain Gaussian. */
  for (size_t i = 0; i < w->kv_bytes / es; i++) {
    int j = (int)(i % d);
    double scale = j % 17 == 3 ? 6.0 : 1.0;
    tqg_store(w->k, v->dtype, i, scale * tqg_rng_normal(&rng) + 0.3 * (j % 5));
  }
  fill_act(w->v, v->dtype, w->kv_bytes / es, &rng, 1.0);
  if (!w->seq_lens || !w->perm || !w->q || !w->out || !w->k || !w->v ||
      !w->k_cache || !w->v_cache || (v->layout == TQ_PAGED && !w->table))
    return TQ_ERR_NOMEM;
  a->block_table = w->table;
  a->seq_lens = w->seq_lens;
  a->channel_perm = w->perm;
  a->k_cache = w->k_cache;
  a->v_cache = w->v_cache;
  a->q = w->q;
  a->k = w->k;
  a->v = w->v;
  a->out = w->out;
  if (op != TQ_OP_ENCODE) {
    /* Fill the cache: encode all ctx tokens with the reference. */
    tq_kargs fill = *a;
    int32_t *lens = malloc(sizeof(int32_t) * B);
    for (int b = 0; b < B; b++) lens[b] = ctx;
    fill.seq_lens = lens;
    fill.n_tokens = ctx;
    st = tq_ref_run(&w->ref, TQ_OP_ENCODE, &fill);
    free(lens);
    /* Dequant reads n tokens of every sequence: as many as the shortest. */
    if (op == TQ_OP_DEQUANT) a->n_tokens = w->seq_lens[B - 1];
  }
  return st;
}

typedef struct dev {
  tq_buffer *k_cache, *v_cache, *table, *lens, *perm, *q, *k, *v, *out, *ws;
} dev;

static void free_dev(tq_backend *be, dev *g) {
  tq_buffer **all[] = {&g->k_cache, &g->v_cache, &g->table, &g->lens, &g->perm,
                       &g->q, &g->k, &g->v, &g->out, &g->ws};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) tq_free(be, *all[i]);
}

static tq_status upload(tq_backend *be, tq_buffer **b, const void *src,
                        size_t n) {
  tq_status st = tq_alloc(be, n, b);
  if (!st) st = tq_write(be, *b, 0, src, n);
  return st;
}

static tq_status poisoned(tq_backend *be, tq_buffer **b, size_t n) {
  void *p = malloc(n);
  if (!p) return TQ_ERR_NOMEM;
  memset(p, POISON_BYTE, n);
  tq_status st = upload(be, b, p, n);
  free(p);
  return st;
}

static double rel_err(double got, double want) {
  return fabs(got - want) / fmax(fabs(want), 1e-6);
}

static float f32_at(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

/* Compares one part of a slot (indices + scale); counts index mismatches. */
static int compare_part(const tq_part_layout *p, const uint8_t *got,
                        const uint8_t *want, long *idx_total, long *idx_bad,
                        double *field, char *why, size_t n) {
  if (p->dim == 0) return 1;
  if (p->bits == TQ_OUTLIER_F16) {
    if (memcmp(got + p->idx_offset, want + p->idx_offset, (size_t)p->idx_bytes)) {
      snprintf(why, n, "raw f16 outlier values differ");
      return 0;
    }
    return 1;
  }
  for (int j = 0; j < p->dim; j++) {
    int a = (int)tqg_unpack_one(got + p->idx_offset, j, p->bits);
    int b = (int)tqg_unpack_one(want + p->idx_offset, j, p->bits);
    (*idx_total)++;
    if (a == b) continue;
    (*idx_bad)++;
    if (abs(a - b) > 1) {
      snprintf(why, n, "index %d is %d, reference %d (more than one cell)", j, a, b);
      return 0;
    }
  }
  /* Padding bits after the last index must be zero. */
  int used = p->dim * p->bits;
  for (int bit = used; bit < p->idx_bytes * 8; bit++)
    if (got[p->idx_offset + bit / 8] >> (bit % 8) & 1) {
      snprintf(why, n, "padding bit %d of the index block is set", bit);
      return 0;
    }
  if (p->scale_offset >= 0) {
    double e = rel_err(f32_at(got + p->scale_offset), f32_at(want + p->scale_offset));
    if (e > *field) *field = e;
  }
  return 1;
}

static int compare_slot(const tq_ref *r, int value, const uint8_t *got,
                        const uint8_t *want, long *tot, long *bad,
                        double *field, char *why, size_t n) {
  const tq_slot_layout *l = value ? &r->value : &r->key;
  if (!compare_part(&l->main, got, want, tot, bad, field, why, n)) return 0;
  if (!compare_part(&l->outlier, got, want, tot, bad, field, why, n)) return 0;
  if (l->qjl_offset >= 0) {
    tq_part_layout signs = {l->main.dim, 1, l->qjl_offset, l->qjl_bytes, -1};
    if (!compare_part(&signs, got, want, tot, bad, field, why, n)) return 0;
    /* |r| is small next to |k|: an index flip moves it by a whole cell's
     * share, so judge it against the key scale rather than itself. */
    double s = fmax(fabs(f32_at(want + l->main.scale_offset)), 1e-6);
    double e = fabs(f32_at(got + l->rnorm_offset) - f32_at(want + l->rnorm_offset)) / s;
    if (e > *field) *field = e;
  }
  if (l->group_offset >= 0)
    for (int g = 0; g < l->groups; g++) {
      uint16_t a[2], b[2];
      memcpy(a, got + l->group_offset + 4 * g, 4);
      memcpy(b, want + l->group_offset + 4 * g, 4);
      for (int i = 0; i < 2; i++) {
        double e = rel_err(tqg_f16_to_f32(a[i]), tqg_f16_to_f32(b[i]));
        /* f32 vs f64 (max - min) / levels may round to neighbouring f16s. */
        if (e > 1e-3 && a[i] != b[i] && abs((int)a[i] - (int)b[i]) > 1) {
          snprintf(why, n, "min-max group %d %s differs", g, i ? "min" : "scale");
          return 0;
        }
      }
    }
  return 1;
}

static tq_status check_encode(tq_backend *be, world *w, dev *g,
                              tq_verify_result *res) {
  const tq_ref *r = &w->ref;
  uint8_t *kc = malloc(w->k_cache_bytes), *vc = malloc(w->v_cache_bytes);
  tq_status st = TQ_ERR_NOMEM;
  if (kc && vc) st = tq_read(be, g->k_cache, 0, kc, w->k_cache_bytes);
  if (!st) st = tq_read(be, g->v_cache, 0, vc, w->v_cache_bytes);
  if (!st) st = tq_ref_run(r, TQ_OP_ENCODE, &w->host);
  if (st) {
    free(kc);
    free(vc);
    return st;
  }
  long tot = 0, bad = 0;
  double field = 0;
  int ok = 1;
  const tq_kargs *a = &w->host;
  for (int b = 0; ok && b < a->batch; b++)
    for (int h = 0; ok && h < a->kv_heads; h++)
      for (int t = a->seq_lens[b] - a->n_tokens; ok && t < a->seq_lens[b]; t++)
        for (int val = 0; ok && val < 2; val++) {
          uint8_t *want = tq_ref_slot(r, a, val, b, h, t);
          size_t off = (size_t)(want - (uint8_t *)(val ? a->v_cache : a->k_cache));
          size_t bytes = (size_t)(val ? r->value.bytes : r->key.bytes);
          ok = compare_slot(r, val, (val ? vc : kc) + off, want, &tot, &bad,
                            &field, res->detail, sizeof res->detail);
          /* Owned slots compared; blank them so what remains must match. */
          memset((val ? vc : kc) + off, 0, bytes);
          memset(want, 0, bytes);
          if (!ok)
            snprintf(res->detail + strlen(res->detail),
                     sizeof res->detail - strlen(res->detail),
                     " (seq %d, head %d, token %d, %s)", b, h, t, val ? "value" : "key");
        }
  /* Outside the new slots both caches must still hold the poison. */
  if (ok && memcmp(kc, w->k_cache, w->k_cache_bytes)) {
    snprintf(res->detail, sizeof res->detail, "k_cache written outside the new slots");
    ok = 0;
  }
  if (ok && memcmp(vc, w->v_cache, w->v_cache_bytes)) {
    snprintf(res->detail, sizeof res->detail, "v_cache written outside the new slots");
    ok = 0;
  }
  res->index_mismatch = tot ? (double)bad / tot : 0;
  res->max_field_rel = field;
  res->tolerance = TQ_VERIFY_INDEX_MISMATCH;
  if (ok && res->index_mismatch > TQ_VERIFY_INDEX_MISMATCH) {
    snprintf(res->detail, sizeof res->detail, "%ld of %ld indices differ", bad, tot);
    ok = 0;
  }
  if (ok && field > TQ_VERIFY_FIELD_REL) {
    snprintf(res->detail, sizeof res->detail, "a scale or norm is off by %.3g (relative)", field);
    ok = 0;
  }
  if (ok)
    snprintf(res->detail, sizeof res->detail, "%ld indices, %ld at a boundary", tot, bad);
  res->passed = ok;
  free(kc);
  free(vc);
  return TQ_OK;
}

/* check_encode once more with no channel permutation (channel_perm NULL),
 * on freshly poisoned caches; res keeps the worse figures of the two runs
 * and, on a failure, says which order failed. */
static tq_status check_encode_identity(tq_backend *be, const tq_kernel *k, tq_launch *l,
                                       world *w, dev *g, tq_verify_result *res) {
  memset(w->k_cache, POISON_BYTE, w->k_cache_bytes);
  memset(w->v_cache, POISON_BYTE, w->v_cache_bytes);
  w->host.channel_perm = NULL;
  l->channel_perm = NULL;
  tq_status st = tq_write(be, g->k_cache, 0, w->k_cache, w->k_cache_bytes);
  if (!st) st = tq_write(be, g->v_cache, 0, w->v_cache, w->v_cache_bytes);
  if (!st) st = tq_run(be, k, l);
  if (!st) st = tq_sync(be);
  tq_verify_result again = *res;
  if (!st) st = check_encode(be, w, g, &again);
  if (st) return st;
  res->index_mismatch = fmax(res->index_mismatch, again.index_mismatch);
  res->max_field_rel = fmax(res->max_field_rel, again.max_field_rel);
  res->passed = again.passed;
  if (!again.passed)
    snprintf(res->detail, sizeof res->detail, "identity channel order: %.200s", again.detail);
  return TQ_OK;
}

/* Relative L2 and max errors of n elements of type t. */
static void compare_act(const void *got, const void *want, tq_dtype t,
                        size_t n, tq_verify_result *res) {
  double num = 0, den = 0, mx = 0, ref_max = 0;
  int nan = 0;
  for (size_t i = 0; i < n; i++) {
    double a = tqg_load(got, t, i), b = tqg_load(want, t, i);
    if (!isfinite(a)) nan = 1;
    num += (a - b) * (a - b);
    den += b * b;
    mx = fmax(mx, fabs(a - b));
    ref_max = fmax(ref_max, fabs(b));
  }
  res->rel_l2 = nan ? INFINITY : sqrt(num / fmax(den, 1e-30));
  res->max_abs = nan ? INFINITY : mx / fmax(ref_max, 1e-30);
  res->tolerance = tolerance(t);
  res->passed = res->rel_l2 <= res->tolerance;
  snprintf(res->detail, sizeof res->detail, "%zu outputs%s", n,
           nan ? ", some not finite (unwritten?)" : "");
}

tq_status tq_verify(tq_backend *be, const tq_variant *v, tq_op op,
                    const tq_verify_options *opt, tq_verify_result *res) {
  tq_verify_options o = opt ? *opt : (tq_verify_options){0};
  memset(res, 0, sizeof *res);
  res->op = op;
  if (!o.seed) o.seed = 0x5EED;
  tq_kernel *k;
  tq_status st = tq_get_kernel(be, v, op, &k);
  if (st) return st;
  res->origin = tq_kernel_origin(k);
  res->path = tq_kernel_path(k);
  world w;
  dev g = {0};
  if ((st = make_world(&w, v, op, &o))) {
    free_world(&w);
    return tq_fail(be, st, "verify: cannot build inputs");
  }
  const tq_kargs *a = &w.host;
  tq_launch l = {.batch = a->batch, .kv_heads = a->kv_heads,
                 .n_tokens = a->n_tokens, .capacity = a->capacity,
                 .num_blocks = a->num_blocks, .max_blocks = a->max_blocks,
                 .sm_scale = a->sm_scale};
  st = upload(be, &g.k_cache, w.k_cache, w.k_cache_bytes);
  if (!st) st = upload(be, &g.v_cache, w.v_cache, w.v_cache_bytes);
  if (!st) st = upload(be, &g.lens, w.seq_lens, sizeof(int32_t) * a->batch);
  if (!st) st = upload(be, &g.perm, w.perm, w.perm_bytes);
  if (!st && w.table) st = upload(be, &g.table, w.table, w.table_bytes);
  size_t io_bytes = op == TQ_OP_ENCODE || op == TQ_OP_DEQUANT
                        ? (size_t)tqg_dtype_size(v->dtype) * a->batch * a->n_tokens * a->kv_heads * v->head_dim
                        : w.q_bytes;
  if (!st && op == TQ_OP_ENCODE) {
    st = upload(be, &g.k, w.k, io_bytes);
    if (!st) st = upload(be, &g.v, w.v, io_bytes);
  } else if (!st && op == TQ_OP_DEQUANT) {
    st = poisoned(be, &g.k, io_bytes);
    if (!st) st = poisoned(be, &g.v, io_bytes);
  } else if (!st) {
    st = upload(be, &g.q, w.q, w.q_bytes);
    if (!st) st = poisoned(be, &g.out, w.q_bytes);
  }
  l.k_cache = g.k_cache;
  l.v_cache = g.v_cache;
  l.seq_lens = g.lens;
  l.channel_perm = g.perm;
  l.block_table = g.table;
  l.q = g.q;
  l.k = g.k;
  l.v = g.v;
  l.out = g.out;
  /* GPU kernels merge context splits through a workspace. */
  size_t ws = st ? 0 : tq_workspace_size(k, &l);
  if (ws && !(st = tq_alloc(be, ws, &g.ws))) l.workspace = g.ws;
  if (!st) st = tq_run(be, k, &l);
  if (!st) st = tq_sync(be);
  if (!st) {
    if (op == TQ_OP_ENCODE) {
      st = check_encode(be, &w, &g, res);
      /* Again in the identity channel order, which kernels may load as
       * whole vectors rather than channel by channel. */
      if (!st && res->passed) st = check_encode_identity(be, k, &l, &w, &g, res);
    } else {
      void *got = malloc(io_bytes), *got2 = malloc(io_bytes);
      if (!got || !got2) st = TQ_ERR_NOMEM;
      if (!st && op == TQ_OP_DEQUANT) {
        st = tq_read(be, g.k, 0, got, io_bytes);
        if (!st) st = tq_read(be, g.v, 0, got2, io_bytes);
        if (!st) st = tq_ref_run(&w.ref, op, a);
        if (!st) {
          /* Keys and values: report the worse of the two. */
          tq_verify_result rk, rv;
          compare_act(got, w.k, v->dtype, io_bytes / tqg_dtype_size(v->dtype), &rk);
          compare_act(got2, w.v, v->dtype, io_bytes / tqg_dtype_size(v->dtype), &rv);
          *res = rk.rel_l2 >= rv.rel_l2 ? rk : rv;
          res->max_abs = fmax(rk.max_abs, rv.max_abs);
          res->passed = rk.passed && rv.passed;
        }
      } else if (!st) {
        st = tq_read(be, g.out, 0, got, io_bytes);
        if (!st) st = tq_ref_run(&w.ref, op, a);
        if (!st) compare_act(got, w.out, v->dtype, io_bytes / tqg_dtype_size(v->dtype), res);
      }
      free(got);
      free(got2);
      res->op = op;
      res->origin = tq_kernel_origin(k);
      res->path = tq_kernel_path(k);
    }
  }
  free_dev(be, &g);
  free_world(&w);
  if (st && !be->err[0]) tq_fail(be, st, "verify failed to run");
  return st;
}
