/* emit_c.c - the portable C emitter: tq_abi.h, the variant's defines and
 * constant tables, then templates/c/kernel.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "emit.h"

void tqg_c_symbol(const tq_variant *v, char *buf, size_t n) {
  char name[160];
  tqg_variant_name(v, name, sizeof name);
  snprintf(buf, n, "tqk_%s", name);
}

/* TQ_TABLE float NAME[n] = { ... }; with round-trip float precision.  The
 * backend's text defines TQ_TABLE (static const, or __device__ for CUDA). */
static void table(tqg_source *s, const char *name, const double *x, size_t n) {
  tqg_source_printf(s, "TQ_TABLE float %s[%zu] = {", name, n);
  for (size_t i = 0; i < n; i++)
    tqg_source_printf(s, "%s%.9g%s", i % 8 ? " " : "\n  ", (float)x[i],
                      i + 1 < n ? "," : "");
  tqg_source_puts(s, "\n};\n");
}

/* Centroids, boundaries and, for widths that pack whole indices into a
 * byte (1, 2, 4 bits), the per-byte expansion tab[byte][k] = centroid of
 * the k-th index in that byte: decoding then copies one row per byte. */
static void codebook(tqg_source *s, const char *prefix, const tqg_codebook *cb,
                     int expansion) {
  char name[64];
  snprintf(name, sizeof name, "%s_cb", prefix);
  table(s, name, cb->centroid, (size_t)cb->levels);
  snprintf(name, sizeof name, "%s_bnd", prefix);
  table(s, name, cb->boundary, (size_t)cb->levels - 1);
  if (!expansion) return;
  snprintf(name, sizeof name, "%s_tab", prefix);
  if (8 % cb->bits || cb->bits == 8) {
    tqg_source_printf(s, "#define %s ((const float *)0)\n", name);
    return;
  }
  int per = 8 / cb->bits;
  double tab[256 * 8];
  for (int b = 0; b < 256; b++)
    for (int k = 0; k < per; k++)
      tab[b * per + k] = cb->centroid[(b >> (k * cb->bits)) & (cb->levels - 1)];
  table(s, name, tab, (size_t)(256 * per));
}

/* The CUDA encode's cell grid for one codebook (tqg_codebook_grid; none
 * for a NULL one) over the unit-variance coordinates of a dim-channel
 * vector, which lie within sqrt(dim): TQ_<P>_GRID cells (0: none fits, the
 * encode searches the boundaries), the map u = x scale + offset, and per
 * cell four words: threshold (f32 bits), base index, and the squared
 * centroids below and above the threshold (f32 bits).  GRID_CELLS bounds
 * the kernel's shared table. */
#define GRID_CELLS 256
static void grid(tqg_source *s, const char *prefix, const char *lower,
                 const tqg_codebook *cb, int dim) {
  tqg_grid g = {0, 0, 0};
  if (cb) tqg_codebook_grid(cb, sqrt((double)dim), GRID_CELLS, &g);
  tqg_source_printf(s,
                    "#define TQ_%s_GRID %d /* cells of the encode's search grid */\n"
                    "#define TQ_%s_GRID_SCALE %#.9gf\n#define TQ_%s_GRID_OFFSET %#.9gf\n",
                    prefix, g.cells, prefix, (float)g.scale, prefix, (float)g.offset);
  if (!g.cells) {
    tqg_source_printf(s, "#define tq_%s_grid ((const unsigned *)0)\n", lower);
    return;
  }
  tqg_source_printf(s, "TQ_TABLE unsigned tq_%s_grid[%d] = {", lower, 4 * g.cells);
  for (int c = 0; c < g.cells; c++) {
    int base;
    double t;
    tqg_grid_cell(cb, &g, c, &base, &t);
    int top = base + (t < c + 1.0); /* the index above the threshold */
    float f[3] = {(float)t, (float)(cb->centroid[base] * cb->centroid[base]),
                  (float)(cb->centroid[top] * cb->centroid[top])};
    unsigned u[3];
    memcpy(u, f, sizeof u);
    tqg_source_printf(s, "%s0x%08x, %d, 0x%08x, 0x%08x%s", c % 3 ? " " : "\n  ", u[0], base,
                      u[1], u[2], c + 1 < g.cells ? "," : "");
  }
  tqg_source_puts(s, "\n};\n");
}

/* A rotation as TQ_<P>_SIGNS / TQ_<P>_MATRIX (one of them NULL). */
static tq_status rotation(tqg_source *s, const char *prefix, const char *lower,
                          const tqg_rotation *rot) {
  char name[64];
  if (rot->dim == 0) {
    tqg_source_printf(s, "#define TQ_%s_SIGNS ((const float *)0)\n"
                         "#define TQ_%s_MATRIX ((const float *)0)\n",
                      prefix, prefix);
    return TQ_OK;
  }
  if (rot->kind == TQG_ROT_WHT) {
    snprintf(name, sizeof name, "tq_%s_signs", lower);
    table(s, name, rot->signs, (size_t)rot->dim);
    tqg_source_printf(s, "#define TQ_%s_SIGNS %s\n#define TQ_%s_MATRIX ((const float *)0)\n",
                      prefix, name, prefix);
    return TQ_OK;
  }
  snprintf(name, sizeof name, "tq_%s_matrix", lower);
  table(s, name, rot->matrix, (size_t)rot->dim * (size_t)rot->dim);
  tqg_source_printf(s, "#define TQ_%s_SIGNS ((const float *)0)\n#define TQ_%s_MATRIX %s\n",
                    prefix, prefix, name);
  return TQ_OK;
}

/* Everything above a backend's template: header comment, tq_abi.h, the
 * variant's defines and its constant tables.  `abi_prefix` goes before
 * tq_abi.h (CUDA's own integer types), `table_decl` defines TQ_TABLE. */
tq_status tqg_emit_prelude(const tq_variant *variant, const char *origin,
                           const char *backend, const char *abi_prefix,
                           const char *table_decl, tqg_source *s, char *err,
                           size_t errn) {
  char name[160];
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  tq_status st = tqg_variant_check(v, err, errn);
  if (st) return st;
  const char *abi = tqg_template("abi");
  if (!abi) {
    snprintf(err, errn, "runtime/tq_abi.h is missing from this build's templates");
    return TQ_ERR_INVALID;
  }
  tqg_tables t;
  if ((st = tqg_tables_init(v, &t))) {
    snprintf(err, errn, "building tables: out of memory");
    return st;
  }
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  tqg_variant_name(v, name, sizeof name);

  tqg_source_mark(s, "emitter", 0);
  tqg_source_printf(s,
      "/* Generated by tqgen %s - do not edit.\n"
      " * variant  %s (hash %016llx)\n"
      " * from     %s\n"
      " * backend  %s; ops encode, decode, prefill, dequant\n"
      " * slot     key %d bytes, value %d bytes; %.3f bits per coordinate */\n",
      TQ_GENERATOR_VERSION, name, (unsigned long long)tqg_variant_hash(v),
      origin, backend, k.bytes, val.bytes, tqg_bits_per_coord(v));
  tqg_source_puts(s, abi_prefix);
  tqg_source_mark(s, "runtime/tq_abi.h", 1);
  tqg_source_puts(s, abi);
  tqg_source_mark(s, "emitter", 0);
  tqg_source_printf(s, "\n/* ---- variant constants ---- */\n%s\n", table_decl);
  tqg_source_printf(s,
      "#define TQ_DTYPE_F16 0\n#define TQ_DTYPE_BF16 1\n#define TQ_DTYPE_F32 2\n"
      "#define TQ_DTYPE %d\n"
      "#define TQ_D %d /* head_dim */\n#define TQ_G %d /* q heads per kv head */\n"
      "#define TQ_O %d /* outlier channels */\n#define TQ_M %d /* main channels */\n"
      "#define TQ_KB %d /* key MSE bits */\n#define TQ_VB %d /* value bits */\n"
      "#define TQ_OB %d /* outlier bits (16: raw f16) */\n"
      "#define TQ_QJL %d\n#define TQ_NC %d /* norm correction */\n"
      "#define TQ_VMINMAX %d\n#define TQ_VGROUP %d\n"
      "#define TQ_PAGED %d\n#define TQ_BLOCK %d\n",
      v->dtype == TQ_F16 ? 0 : v->dtype == TQ_BF16 ? 1 : 2, v->head_dim,
      v->group, v->outlier_count, k.main.dim, k.main.bits, v->value_bits,
      v->outlier_count ? v->outlier_bits : 0, v->qjl, v->norm_correction,
      v->value_method == TQ_VALUE_MINMAX, v->value_group,
      v->layout == TQ_PAGED, v->block_size);
  tqg_source_printf(s,
      "/* key slot (docs/FORMAT.md) */\n"
      "#define TQ_K_BYTES %d\n#define TQ_K_IDX %d\n#define TQ_K_SCALE %d\n"
      "#define TQ_K_QJL %d\n#define TQ_K_RNORM %d\n"
      "#define TQ_K_OUT_IDX %d\n#define TQ_K_OUT_SCALE %d\n"
      "/* value slot */\n"
      "#define TQ_V_BYTES %d\n#define TQ_V_IDX %d\n#define TQ_V_SCALE %d\n"
      "#define TQ_V_GROUPS %d\n#define TQ_V_OUT_IDX %d\n#define TQ_V_OUT_SCALE %d\n",
      k.bytes, k.main.idx_offset, k.main.scale_offset, k.qjl_offset,
      k.rnorm_offset, k.outlier.idx_offset, k.outlier.scale_offset, val.bytes,
      val.main.idx_offset, val.main.scale_offset, val.group_offset,
      val.outlier.idx_offset, val.outlier.scale_offset);

  tqg_source_puts(s, "\n/* ---- tables: Lloyd-Max codebooks for N(0,1), rotations, QJL ---- */\n");
  int expand = !strcmp(backend, "c"); /* only the C template uses them */
  if (k.main.bits > 0) codebook(s, "tq_k", &t.key_cb, expand);
  if (v->value_method == TQ_VALUE_TQ) codebook(s, "tq_v", &t.value_cb, expand);
  if (v->outlier_count && v->outlier_bits != TQ_OUTLIER_F16)
    codebook(s, "tq_out", &t.outlier_cb, expand);
  /* The tensor-core CUDA encode alone searches by a grid. */
  if (!strcmp(backend, "cuda") && tqg_cuda_encode_mma(v)) {
    grid(s, "K", "k", k.main.bits > 0 ? &t.key_cb : NULL, k.main.dim);
    grid(s, "V", "v", v->value_method == TQ_VALUE_TQ ? &t.value_cb : NULL, val.main.dim);
  }
  rotation(s, "MAIN", "main", &t.main_rot);
  rotation(s, "OUT", "out", &t.outlier_rot);
  if (v->qjl) table(s, "tq_qjl_s", t.qjl, (size_t)k.main.dim * (size_t)k.main.dim);
  tqg_tables_free(&t);
  tqg_source_puts(s, "\n");
  return s->oom ? TQ_ERR_NOMEM : TQ_OK;
}

tq_status tqg_emit_c(const tq_variant *v, const char *origin, tqg_source *s,
                     char *err, size_t errn) {
  char sym[200];
  const char *kernel = tqg_template("c/kernel.c");
  if (!kernel) {
    snprintf(err, errn, "templates/c/kernel.c is missing from this build");
    return TQ_ERR_INVALID;
  }
  tq_status st = tqg_emit_prelude(v, origin, "c", "", "#define TQ_TABLE static const",
                                  s, err, errn);
  if (st) return st;
  tqg_c_symbol(v, sym, sizeof sym);
  const char *keys[] = {"SYM"}, *values[] = {sym};
  st = tqg_source_template(s, "templates/c/kernel.c", kernel, keys, values, 1,
                           err, errn);
  if (!st && s->oom) st = TQ_ERR_NOMEM;
  return st;
}
