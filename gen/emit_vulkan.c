/* emit_vulkan.c - the Vulkan emitter: the variant's defines and table
 * offsets, then templates/vulkan/common.comp and one block per stage, each
 * under #if TQ_STAGE == ..., so one readable GLSL file holds every stage.
 * The constant tables travel beside the SPIR-V as a storage buffer: large
 * constant arrays in GLSL would be copied into every invocation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "emit.h"
#include "vulkan.h"

static const char *const stage_names[TQG_VK_STAGE_COUNT] = {
    "encode", "attend", "reduce", "dequant"};
/* Where each stage's template lives; its embedded name drops "templates/". */
static const char *const stage_files[TQG_VK_STAGE_COUNT] = {
    "templates/vulkan/encode.comp", "templates/vulkan/attend.comp",
    "templates/vulkan/reduce.comp", "templates/vulkan/dequant.comp"};
#define TEMPLATE_NAME(file) ((file) + strlen("templates/"))

/* Bits of the storage bindings in templates/vulkan/common.comp:
 * 0 k_cache 1 v_cache 2 block_table 3 seq_lens 4 channel_perm 5 q 6 k 7 v
 * 8 out 9 workspace 10 tables. */
#define B(i) (1u << (i))
static const uint32_t stage_bindings[TQG_VK_STAGE_COUNT] = {
    B(0) | B(1) | B(2) | B(3) | B(4) | B(6) | B(7) | B(10),
    B(0) | B(1) | B(2) | B(3) | B(4) | B(5) | B(9) | B(10),
    B(4) | B(8) | B(9) | B(10),
    B(0) | B(1) | B(2) | B(4) | B(6) | B(7) | B(10)};
#undef B

const char *tqg_vk_stage_name(tqg_vk_stage_id s) {
  return s < TQG_VK_STAGE_COUNT ? stage_names[s] : "?";
}

uint32_t tqg_vk_stage_bindings(tqg_vk_stage_id s) {
  return s < TQG_VK_STAGE_COUNT ? stage_bindings[s] : 0;
}

/* All q heads of a kv head share each cache read when the group fits (up
 * to 8 rows); small groups take 4 rows so multi-token decode still shares.
 * Shared memory for the rows' rotated queries stays under 8 KiB. */
int tqg_vk_rows_per_group(const tq_variant *v) {
  int rows = v->group >= 4 ? (v->group < 8 ? v->group : 8) : 4;
  int m = v->head_dim - v->outlier_count;
  int per_row = m + v->outlier_count + (v->qjl ? m : 0);
  while (rows > 1 && rows * per_row > 2048) rows /= 2;
  return rows;
}

/* The fast attend stage's variants (templates/vulkan/attend_fast.comp),
 * the condition of the CUDA fast path: no outliers, no QJL, TurboQuant
 * values, 2- or 4-bit keys and values, head_dim <= 128 and a multiple of
 * 32, paged blocks a multiple or divisor of 32; and query rows in whole
 * vec4s.  Also a power-of-two head_dim (32, 64, 128): the index words of a
 * value (head_dim * bits / 32) must divide the subgroup or be divided by
 * it, or lanes would share tokens (head_dim 96 has 12 or 6 words). */
int tqg_vk_fast(const tq_variant *variant) {
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  int kb = v->key_bits - (v->qjl ? 1 : 0);
  return v->outlier_count == 0 && !v->qjl &&
         v->value_method == TQ_VALUE_TQ && (kb == 2 || kb == 4) &&
         (v->value_bits == 2 || v->value_bits == 4) && v->head_dim <= 128 &&
         v->head_dim % 32 == 0 && (v->head_dim & (v->head_dim - 1)) == 0 &&
         (v->layout != TQ_PAGED || v->block_size % 32 == 0 ||
          32 % v->block_size == 0) &&
         tqg_vk_rows_per_group(v) % 4 == 0;
}

/* Appends n values to t->data; returns the offset, or -1 when n == 0. */
static int put(tqg_vk_tables *t, const double *x, size_t n, size_t *cap) {
  if (!n) return -1;
  if (t->count + n > *cap) {
    size_t c = *cap ? *cap : 1024;
    while (c < t->count + n) c *= 2;
    float *d = realloc(t->data, c * sizeof *d);
    if (!d) return -2;
    t->data = d;
    *cap = c;
  }
  int at = (int)t->count;
  for (size_t i = 0; i < n; i++) t->data[t->count++] = (float)x[i];
  return at;
}

static void put_rotation(tqg_vk_tables *t, const tqg_rotation *r, int *signs,
                         int *matrix, size_t *cap) {
  *signs = *matrix = -1;
  if (r->dim == 0) return;
  if (r->kind == TQG_ROT_WHT)
    *signs = put(t, r->signs, (size_t)r->dim, cap);
  else
    *matrix = put(t, r->matrix, (size_t)r->dim * (size_t)r->dim, cap);
}

tq_status tqg_vk_tables_build(const tq_variant *variant, tqg_vk_tables *t,
                              char *err, size_t errn) {
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  memset(t, 0, sizeof *t);
  tq_status st = tqg_variant_check(v, err, errn);
  if (st) return st;
  tqg_tables tb;
  if ((st = tqg_tables_init(v, &tb))) {
    snprintf(err, errn, "building tables: out of memory");
    return st;
  }
  size_t cap = 0;
  int main_dim = v->head_dim - v->outlier_count;
  t->kcb = put(t, tb.key_cb.centroid, (size_t)tb.key_cb.levels, &cap);
  t->kbnd = put(t, tb.key_cb.boundary, (size_t)tb.key_cb.levels - 1, &cap);
  t->vcb = t->vbnd = t->ocb = t->obnd = t->qjl = -1;
  if (v->value_method == TQ_VALUE_TQ) {
    t->vcb = put(t, tb.value_cb.centroid, (size_t)tb.value_cb.levels, &cap);
    t->vbnd =
        put(t, tb.value_cb.boundary, (size_t)tb.value_cb.levels - 1, &cap);
  }
  if (v->outlier_count && v->outlier_bits != TQ_OUTLIER_F16) {
    t->ocb = put(t, tb.outlier_cb.centroid, (size_t)tb.outlier_cb.levels, &cap);
    t->obnd =
        put(t, tb.outlier_cb.boundary, (size_t)tb.outlier_cb.levels - 1, &cap);
  }
  put_rotation(t, &tb.main_rot, &t->main_signs, &t->main_matrix, &cap);
  put_rotation(t, &tb.outlier_rot, &t->out_signs, &t->out_matrix, &cap);
  if (v->qjl)
    t->qjl = put(t, tb.qjl, (size_t)main_dim * (size_t)main_dim, &cap);
  tqg_tables_free(&tb);
  int bad = t->kcb == -2 || t->kbnd == -2 || t->vcb == -2 || t->vbnd == -2 ||
            t->ocb == -2 || t->obnd == -2 || t->main_signs == -2 ||
            t->main_matrix == -2 || t->out_signs == -2 || t->out_matrix == -2 ||
            t->qjl == -2;
  if (bad || !t->data) {
    tqg_vk_tables_free(t);
    snprintf(err, errn, "building tables: out of memory");
    return TQ_ERR_NOMEM;
  }
  return TQ_OK;
}

void tqg_vk_tables_free(tqg_vk_tables *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

/* An offset define; absent tables are -1 (code that would use them is
 * compiled out, or guarded by the -1). */
static void offset(tqg_source *s, const char *name, int at) {
  tqg_source_printf(s, "#define TQ_T_%s %d\n", name, at);
}

tq_status tqg_emit_vulkan(const tq_variant *variant, const char *origin,
                          tqg_source *s, char *err, size_t errn) {
  char name[160];
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  const char *common = tqg_template("vulkan/common.comp");
  const char *fast = tqg_template("vulkan/attend_fast.comp");
  for (int i = 0; i < TQG_VK_STAGE_COUNT; i++)
    if (!tqg_template(TEMPLATE_NAME(stage_files[i]))) common = NULL;
  if (!fast) common = NULL;
  if (!common) {
    snprintf(err, errn, "templates/vulkan/ are missing from this build");
    return TQ_ERR_INVALID;
  }
  tqg_vk_tables t;
  tq_status st = tqg_vk_tables_build(v, &t, err, errn);
  if (st) return st;
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  tqg_variant_name(v, name, sizeof name);
  int ob = v->outlier_count ? v->outlier_bits : 0;

  tqg_source_mark(s, "emitter", 0);
  tqg_source_printf(
      s,
      "/* Generated by tqgen %s - do not edit.\n"
      " * variant  %s (hash %016llx)\n"
      " * from     %s\n"
      " * backend  vulkan: GLSL 4.50 compute, one SPIR-V module per stage; "
      "the\n"
      " *          compiler's preamble defines TQ_STAGE (encode 0, attend 1 "
      "for\n"
      " *          decode and prefill, reduce 2, dequant 3), TQ_SUBGROUPS and\n"
      " *          TQ_FAST_SG (the fast attend stage's subgroup size, or 0)\n"
      " * tables   %zu floats in the storage buffer at binding %d (offsets "
      "below)\n"
      " * slot     key %d bytes, value %d bytes; %.3f bits per coordinate */\n",
      TQ_GENERATOR_VERSION, name, (unsigned long long)tqg_variant_hash(v),
      origin, t.count, TQG_VK_TABLE_BINDING, k.bytes, val.bytes,
      tqg_bits_per_coord(v));
  tqg_source_puts(s,
                  "#version 450\n"
                  "#ifndef TQ_STAGE\n#error \"define TQ_STAGE: 0 encode, 1 "
                  "attend, 2 reduce, 3 dequant\"\n#endif\n"
                  "#ifndef TQ_SUBGROUPS\n#define TQ_SUBGROUPS 0\n#endif\n"
                  "#ifndef TQ_FAST_SG\n#define TQ_FAST_SG 0\n#endif\n"
                  "#if TQ_SUBGROUPS\n"
                  "#extension GL_KHR_shader_subgroup_basic : require\n"
                  "#extension GL_KHR_shader_subgroup_arithmetic : require\n"
                  "#endif\n"
                  "#if TQ_FAST_SG\n"
                  "#extension GL_KHR_shader_subgroup_shuffle : require\n"
                  "#extension GL_EXT_control_flow_attributes : require\n"
                  "#endif\n\n/* ---- variant constants ---- */\n");
  tqg_source_printf(
      s,
      "#if TQ_FAST_SG /* the fast attend stage: four subgroups */\n"
      "#define TQ_WG (4u * uint(TQ_FAST_SG))\n#else\n"
      "#define TQ_WG %du /* invocations per workgroup */\n#endif\n"
      "#define TQ_RQ %d /* query rows per attend workgroup */\n"
      "#define TQ_FAST %d /* the fast attend stage applies */\n"
      "#define TQ_DTYPE_F16 0\n#define TQ_DTYPE_BF16 1\n#define TQ_DTYPE_F32 "
      "2\n"
      "#define TQ_DTYPE %d\n"
      "#define TQ_D %d /* head_dim */\n#define TQ_G %d /* q heads per kv head "
      "*/\n"
      "#define TQ_O %d /* outlier channels */\n#define TQ_M %d /* main "
      "channels */\n"
      "#define TQ_KB %d /* key MSE bits */\n#define TQ_VB %d /* value bits */\n"
      "#define TQ_OB %d /* outlier bits (16: raw f16) */\n"
      "#define TQ_OB_Q %d /* outlier index bits (1 when raw) */\n"
      "#define TQ_QJL %d\n#define TQ_NC %d /* norm correction */\n"
      "#define TQ_VMINMAX %d\n#define TQ_VGROUP %d\n"
      "#define TQ_PAGED %d\n#define TQ_BLOCK %d\n",
      TQG_VK_WORKGROUP, tqg_vk_rows_per_group(v), tqg_vk_fast(v),
      v->dtype == TQ_F16    ? 0
      : v->dtype == TQ_BF16 ? 1
                            : 2,
      v->head_dim, v->group, v->outlier_count, k.main.dim, k.main.bits,
      v->value_bits, ob, ob == 16 || ob == 0 ? 1 : ob, v->qjl,
      v->norm_correction, v->value_method == TQ_VALUE_MINMAX, v->value_group,
      v->layout == TQ_PAGED, v->layout == TQ_PAGED ? v->block_size : 1);
  tqg_source_printf(
      s,
      "/* key slot, bytes (docs/FORMAT.md) */\n"
      "#define TQ_K_BYTES %d\n#define TQ_K_IDX %d\n#define TQ_K_SCALE %d\n"
      "#define TQ_K_QJL %d\n#define TQ_K_RNORM %d\n"
      "#define TQ_K_OUT_IDX %d\n#define TQ_K_OUT_SCALE %d\n"
      "/* value slot */\n"
      "#define TQ_V_BYTES %d\n#define TQ_V_IDX %d\n#define TQ_V_SCALE %d\n"
      "#define TQ_V_GROUPS %d\n#define TQ_V_OUT_IDX %d\n#define TQ_V_OUT_SCALE "
      "%d\n"
      "/* tables: float offsets in tab[] (-1: absent) */\n",
      k.bytes, k.main.idx_offset, k.main.scale_offset, k.qjl_offset,
      k.rnorm_offset, k.outlier.idx_offset, k.outlier.scale_offset, val.bytes,
      val.main.idx_offset, val.main.scale_offset, val.group_offset,
      val.outlier.idx_offset, val.outlier.scale_offset);
  offset(s, "KCB", t.kcb);
  offset(s, "KBND", t.kbnd);
  offset(s, "VCB", t.vcb);
  offset(s, "VBND", t.vbnd);
  offset(s, "OCB", t.ocb);
  offset(s, "OBND", t.obnd);
  offset(s, "MAIN_SIGNS", t.main_signs);
  offset(s, "MAIN_MATRIX", t.main_matrix);
  offset(s, "OUT_SIGNS", t.out_signs);
  offset(s, "OUT_MATRIX", t.out_matrix);
  offset(s, "QJL", t.qjl);
  tqg_vk_tables_free(&t);
  tqg_source_puts(s, "\n");
  st = tqg_source_template(s, "templates/vulkan/common.comp", common, NULL,
                           NULL, 0, err, errn);
  for (int i = 0; i < TQG_VK_STAGE_COUNT && !st; i++) {
    tqg_source_mark(s, "emitter", 0);
    tqg_source_printf(s, "\n#%s TQ_STAGE == %d /* %s */\n", i ? "elif" : "if",
                      i, stage_names[i]);
    if (i == TQG_VK_ATTEND && tqg_vk_fast(v)) {
      /* Both attend stages; the preamble's TQ_FAST_SG picks one. */
      tqg_source_puts(s, "#if TQ_FAST_SG\n");
      st = tqg_source_template(s, "templates/vulkan/attend_fast.comp", fast,
                               NULL, NULL, 0, err, errn);
      if (st) break;
      tqg_source_mark(s, "emitter", 0);
      tqg_source_puts(s, "#else\n");
    }
    st = tqg_source_template(s, stage_files[i],
                             tqg_template(TEMPLATE_NAME(stage_files[i])), NULL,
                             NULL, 0, err, errn);
    if (!st && i == TQG_VK_ATTEND && tqg_vk_fast(v)) {
      tqg_source_mark(s, "emitter", 0);
      tqg_source_puts(s, "#endif /* TQ_FAST_SG */\n");
    }
  }
  if (!st) {
    tqg_source_mark(s, "emitter", 0);
    tqg_source_puts(s, "#else\n#error \"unknown TQ_STAGE\"\n#endif\n");
  }
  if (!st && s->oom) st = TQ_ERR_NOMEM;
  return st;
}
