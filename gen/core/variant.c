/* variant.c - checking, naming, hashing and laying out variants. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "core.h"

static const char *const op_names[TQ_OP_COUNT] = {"encode", "decode",
                                                  "prefill", "dequant"};

const char *tqg_op_name(tq_op op) {
  return op >= 0 && op < TQ_OP_COUNT ? op_names[op] : "?";
}

tq_op tqg_op_parse(const char *s) {
  for (int i = 0; i < TQ_OP_COUNT; i++)
    if (strcmp(s, op_names[i]) == 0) return (tq_op)i;
  return TQ_OP_COUNT;
}

void tqg_variant_default(tq_variant *v) {
  memset(v, 0, sizeof *v);
  v->head_dim = 128;
  v->group = 1;
  v->key_bits = 4;
  v->value_bits = 4;
  v->value_method = TQ_VALUE_TQ;
  v->value_group = 32;
  v->outlier_bits = 8;
  v->seed = TQ_DEFAULT_SEED;
  v->dtype = TQ_F16;
  v->layout = TQ_CONTIGUOUS;
  v->block_size = 16;
}

void tqg_variant_normalize(tq_variant *v) {
  tq_variant d;
  tqg_variant_default(&d);
  if (v->value_method != TQ_VALUE_MINMAX) v->value_group = d.value_group;
  if (v->outlier_count == 0) v->outlier_bits = d.outlier_bits;
  if (v->layout != TQ_PAGED) v->block_size = d.block_size;
}

#define FAIL(...)                        \
  do {                                   \
    if (msg) snprintf(msg, n, __VA_ARGS__); \
    return TQ_ERR_INVALID;               \
  } while (0)

tq_status tqg_variant_check(const tq_variant *v, char *msg, size_t n) {
  if (v->head_dim < 16 || v->head_dim > TQ_MAX_HEAD_DIM || v->head_dim % 16)
    FAIL("head_dim = %d: allowed values are multiples of 16 from 16 to %d",
         v->head_dim, TQ_MAX_HEAD_DIM);
  if (v->group < 1 || v->group > 64)
    FAIL("group (q_heads / kv_heads) = %d: allowed 1..64", v->group);
  if (v->key_bits < 1 || v->key_bits > TQ_MAX_BITS)
    FAIL("key_bits = %d: allowed 1..%d", v->key_bits, TQ_MAX_BITS);
  if (v->value_bits < 1 || v->value_bits > TQ_MAX_BITS)
    FAIL("value_bits = %d: allowed 1..%d", v->value_bits, TQ_MAX_BITS);
  if (v->qjl && v->key_bits < 2)
    FAIL("qjl = true needs key_bits >= 2 (key_bits - 1 MSE bits plus 1 QJL "
         "sign bit), got key_bits = %d",
         v->key_bits);
  if (v->value_method != TQ_VALUE_TQ && v->value_method != TQ_VALUE_MINMAX)
    FAIL("value_method: allowed \"tq\" or \"minmax\"");
  if (v->value_method == TQ_VALUE_MINMAX &&
      (v->value_group < 1 || v->head_dim % v->value_group))
    FAIL("value_group = %d: must divide head_dim = %d", v->value_group,
         v->head_dim);
  if (v->outlier_count < 0 || v->outlier_count >= v->head_dim)
    FAIL("outliers.count = %d: allowed 0..%d (fewer than head_dim = %d)",
         v->outlier_count, v->head_dim - 1, v->head_dim);
  if (v->outlier_count > 0 && v->outlier_bits != TQ_OUTLIER_F16 &&
      (v->outlier_bits < 1 || v->outlier_bits > TQ_MAX_BITS))
    FAIL("outliers.bits = %d: allowed 1..%d or 16 (raw f16)", v->outlier_bits,
         TQ_MAX_BITS);
  if (v->dtype != TQ_F16 && v->dtype != TQ_BF16 && v->dtype != TQ_F32)
    FAIL("dtype: allowed \"f16\", \"bf16\", \"f32\"");
  if (v->layout == TQ_PAGED && (v->block_size < 1 || v->block_size > 1024))
    FAIL("block_size = %d: allowed 1..1024", v->block_size);
  if (v->layout != TQ_CONTIGUOUS && v->layout != TQ_PAGED)
    FAIL("layout: allowed \"contiguous\" or { paged = block_size }");
  return TQ_OK;
}

const char *tqg_dtype_name(tq_dtype t) {
  switch (t) {
    case TQ_F16: return "f16";
    case TQ_BF16: return "bf16";
    case TQ_F32: return "f32";
  }
  return "?";
}

int tqg_dtype_size(tq_dtype t) { return t == TQ_F32 ? 4 : 2; }

int tqg_variant_name(const tq_variant *v, char *buf, size_t n) {
  char part[64];
  size_t len = 0;
  int k = 0;
#define ADD(...)                                                \
  do {                                                          \
    k = snprintf(part, sizeof part, __VA_ARGS__);               \
    if (len < n) snprintf(buf + len, n - len, "%s", part);      \
    len += (size_t)k;                                           \
  } while (0)
  if (n) buf[0] = 0;
  ADD("d%d_g%d_k%dv%d", v->head_dim, v->group, v->key_bits, v->value_bits);
  if (v->value_method == TQ_VALUE_MINMAX) ADD("mm%d", v->value_group);
  if (v->outlier_count > 0) {
    if (v->outlier_bits == TQ_OUTLIER_F16)
      ADD("_o%dh", v->outlier_count);
    else
      ADD("_o%db%d", v->outlier_count, v->outlier_bits);
  }
  if (v->qjl) ADD("_qjl");
  if (v->norm_correction) ADD("_nc");
  if (v->seed != TQ_DEFAULT_SEED) ADD("_s%llx", (unsigned long long)v->seed);
  ADD("_%s", tqg_dtype_name(v->dtype));
  if (v->layout == TQ_PAGED) ADD("_paged%d", v->block_size);
#undef ADD
  return (int)len;
}

uint64_t tqg_variant_hash(const tq_variant *v) {
  char name[160], key[200];
  tqg_variant_name(v, name, sizeof name);
  int len = snprintf(key, sizeof key, "%s@%s", name, TQ_GENERATOR_VERSION);
  return XXH64(key, (size_t)len, 0);
}

/* A rotated, quantized part: packed indices then an f32 scale; a raw part:
 * f16 values.  Returns the next free offset. */
static int lay_part(tq_part_layout *p, int dim, int bits, int at) {
  p->dim = dim;
  p->bits = bits;
  p->idx_offset = at;
  p->scale_offset = -1;
  if (dim == 0) {
    p->idx_bytes = 0;
    return at;
  }
  if (bits == TQ_OUTLIER_F16) {
    p->idx_bytes = (dim * 2 + 3) & ~3;
    return at + p->idx_bytes;
  }
  p->idx_bytes = tqg_packed_bytes(dim, bits);
  p->scale_offset = at + p->idx_bytes;
  return p->scale_offset + 4;
}

void tqg_key_layout(const tq_variant *v, tq_slot_layout *l) {
  memset(l, 0, sizeof *l);
  int main_dim = v->head_dim - v->outlier_count;
  int at = lay_part(&l->main, main_dim, v->key_bits - (v->qjl ? 1 : 0), 0);
  l->qjl_offset = l->rnorm_offset = l->group_offset = -1;
  if (v->qjl) {
    l->qjl_offset = at;
    l->qjl_bytes = tqg_packed_bytes(main_dim, 1);
    l->rnorm_offset = at + l->qjl_bytes;
    at = l->rnorm_offset + 4;
  }
  at = lay_part(&l->outlier, v->outlier_count, v->outlier_bits, at);
  l->bytes = at;
}

void tqg_value_layout(const tq_variant *v, tq_slot_layout *l) {
  memset(l, 0, sizeof *l);
  l->qjl_offset = l->rnorm_offset = l->group_offset = -1;
  if (v->value_method == TQ_VALUE_MINMAX) {
    /* Every channel in one uniform part, no rotation, no outliers. */
    l->main.dim = v->head_dim;
    l->main.bits = v->value_bits;
    l->main.idx_offset = 0;
    l->main.idx_bytes = tqg_packed_bytes(v->head_dim, v->value_bits);
    l->main.scale_offset = -1;
    l->groups = v->head_dim / v->value_group;
    l->group_offset = l->main.idx_bytes;
    l->bytes = l->group_offset + ((l->groups * 4 + 3) & ~3);
    return;
  }
  int main_dim = v->head_dim - v->outlier_count;
  int at = lay_part(&l->main, main_dim, v->value_bits, 0);
  at = lay_part(&l->outlier, v->outlier_count, v->outlier_bits, at);
  l->bytes = at;
}

int tqg_bytes_per_token(const tq_variant *v) {
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  return k.bytes + val.bytes;
}

double tqg_bits_per_coord(const tq_variant *v) {
  return 8.0 * tqg_bytes_per_token(v) / (2.0 * v->head_dim);
}
