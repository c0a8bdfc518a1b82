/* emit_wgsl.c - the WGSL emitter: the variant's constants as WGSL `const`
 * declarations, then templates/wgsl/kernel.wgsl with its //#if lines
 * resolved for the variant and flavour.  Also the tables buffer, the
 * stages' bindings and the launch arithmetic shared with the runtime
 * backend and the generated JS module. */
#include "emit_wgsl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "emit.h"

#define TARGET_WORKGROUPS TQG_WGSL_TARGET_WORKGROUPS
#define MAX_SPLITS TQG_WGSL_MAX_SPLITS
#define MIN_SLICE TQG_WGSL_MIN_SLICE

static const char *const flavour_names[TQG_WGSL_FLAVOURS] = {"core", "f16sg"};

const char *tqg_wgsl_flavour_name(tqg_wgsl_flavour f) {
  return f < TQG_WGSL_FLAVOURS ? flavour_names[f] : "?";
}

tqg_wgsl_flavour tqg_wgsl_flavour_parse(const char *s) {
  for (int f = 0; f < TQG_WGSL_FLAVOURS; f++)
    if (s && !strcmp(s, flavour_names[f])) return (tqg_wgsl_flavour)f;
  return TQG_WGSL_FLAVOURS;
}

static const char *const binding_names[TQG_WB_COUNT] = {
    "params",       "tables", "k_cache", "v_cache", "block_table", "seq_lens",
    "channel_perm", "q",      "k",       "v",       "out",         "workspace"};

const char *tqg_wgsl_binding_name(int b) {
  return b >= 0 && b < TQG_WB_COUNT ? binding_names[b] : "?";
}

tqg_wgsl_binding_type tqg_wgsl_binding_type_of(int b) {
  switch (b) {
    case TQG_WB_PARAMS:
      return TQG_WGSL_UNIFORM;
    case TQG_WB_TABLES:
    case TQG_WB_BLOCK_TABLE:
    case TQG_WB_SEQ_LENS:
    case TQG_WB_CHANNEL_PERM:
    case TQG_WB_Q:
      return TQG_WGSL_READ_ONLY;
    default:
      return TQG_WGSL_STORAGE;
  }
}

const char *const tqg_wgsl_stage_names[TQG_WGSL_STAGES] = {
    "encode", "decode", "prefill", "reduce", "dequant", "attend_fast"};

#define BIT(b) (1u << (b))
uint32_t tqg_wgsl_binding_mask(const tq_variant *v, int stage) {
  const uint32_t cache = BIT(TQG_WB_PARAMS) | BIT(TQG_WB_TABLES) |
                         BIT(TQG_WB_K_CACHE) | BIT(TQG_WB_V_CACHE) |
                         BIT(TQG_WB_CHANNEL_PERM) |
                         (v->layout == TQ_PAGED ? BIT(TQG_WB_BLOCK_TABLE) : 0);
  switch (stage) {
    case 0:
      return cache | BIT(TQG_WB_SEQ_LENS) | BIT(TQG_WB_K) | BIT(TQG_WB_V);
    case 1:
    case 2:
    case TQG_WGSL_FAST_STAGE:
      return cache | BIT(TQG_WB_SEQ_LENS) | BIT(TQG_WB_Q) |
             BIT(TQG_WB_WORKSPACE);
    case 3:
      return BIT(TQG_WB_PARAMS) | BIT(TQG_WB_TABLES) |
             BIT(TQG_WB_CHANNEL_PERM) | BIT(TQG_WB_OUT) | BIT(TQG_WB_WORKSPACE);
    case 4:
      return cache | BIT(TQG_WB_K) | BIT(TQG_WB_V);
    default:
      return 0;
  }
}

int tqg_wgsl_fast(const tq_variant *variant) {
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  int kb = v->key_bits - (v->qjl ? 1 : 0), d = v->head_dim;
  return v->outlier_count == 0 && !v->qjl && v->value_method == TQ_VALUE_TQ &&
         (kb == 2 || kb == 4) && (v->value_bits == 2 || v->value_bits == 4) &&
         d >= 32 && d <= 128 && (d & (d - 1)) == 0 &&
         (v->layout != TQ_PAGED || v->block_size % 32 == 0 ||
          32 % v->block_size == 0);
}

int tqg_wgsl_has_stage(const tq_variant *v, tqg_wgsl_flavour f, int stage) {
  if (stage == TQG_WGSL_FAST_STAGE)
    return f == TQG_WGSL_F16SG && tqg_wgsl_fast(v);
  return stage >= 0 && stage < TQG_WGSL_STAGES;
}

/* ---- tables ------------------------------------------------------------ */
typedef struct growing {
  float *data;
  uint32_t n, cap;
  int oom;
} growing;

/* Appends n doubles as floats; returns where they start. */
static uint32_t put(growing *g, const double *x, size_t n) {
  uint32_t at = g->n;
  if (g->oom || !n) return at;
  if (g->n + n > g->cap) {
    uint32_t cap = g->cap ? g->cap : 256;
    while (cap < g->n + n) cap *= 2;
    float *d = realloc(g->data, sizeof *d * cap);
    if (!d) {
      g->oom = 1;
      return at;
    }
    g->data = d;
    g->cap = cap;
  }
  for (size_t i = 0; i < n; i++) g->data[g->n++] = (float)x[i];
  return at;
}

static void rotation(growing *g, const tqg_rotation *r, uint32_t *signs,
                     uint32_t *mat, int *wht) {
  *wht = r->dim == 0 || r->kind == TQG_ROT_WHT;
  if (r->dim && r->kind == TQG_ROT_WHT)
    *signs = put(g, r->signs, (size_t)r->dim);
  if (r->dim && r->kind == TQG_ROT_DENSE)
    *mat = put(g, r->matrix, (size_t)r->dim * (size_t)r->dim);
}

tq_status tqg_wgsl_tables_init(const tq_variant *variant, tqg_wgsl_tables *t) {
  memset(t, 0, sizeof *t);
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  tqg_tables tab;
  tq_status st = tqg_tables_init(v, &tab);
  if (st) return st;
  growing g = {0};
  const double zero = 0;
  put(&g, &zero, 1); /* absent tables point here */
  t->kcb = put(&g, tab.key_cb.centroid, (size_t)tab.key_cb.levels);
  t->kbnd = put(&g, tab.key_cb.boundary, (size_t)tab.key_cb.levels - 1);
  if (v->value_method == TQ_VALUE_TQ) {
    t->vcb = put(&g, tab.value_cb.centroid, (size_t)tab.value_cb.levels);
    t->vbnd = put(&g, tab.value_cb.boundary, (size_t)tab.value_cb.levels - 1);
  }
  if (v->outlier_count && v->outlier_bits != TQ_OUTLIER_F16) {
    t->ocb = put(&g, tab.outlier_cb.centroid, (size_t)tab.outlier_cb.levels);
    t->obnd =
        put(&g, tab.outlier_cb.boundary, (size_t)tab.outlier_cb.levels - 1);
  }
  rotation(&g, &tab.main_rot, &t->msigns, &t->mmat, &t->main_wht);
  rotation(&g, &tab.outlier_rot, &t->osigns, &t->omat, &t->out_wht);
  if (v->qjl) {
    int m = v->head_dim - v->outlier_count;
    t->qjl = put(&g, tab.qjl, (size_t)m * (size_t)m);
  }
  tqg_tables_free(&tab);
  if (g.oom) {
    free(g.data);
    return TQ_ERR_NOMEM;
  }
  t->data = g.data;
  t->n = g.n;
  return TQ_OK;
}

void tqg_wgsl_tables_free(tqg_wgsl_tables *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

/* ---- launch arithmetic ------------------------------------------------ */
static int levels(int bits) {
  return 1 << bits;
}

/* Workgroup bytes of the attention kernels for a tile of `tile` tokens,
 * as kernel.wgsl declares them (the largest entry point). */
static int attend_bytes(const tq_variant *v, int tile) {
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  int m = k.main.dim, o = v->outlier_count, ow = o > 0 ? o : 1;
  int vl = v->value_method == TQ_VALUE_TQ ? levels(v->value_bits) : 1;
  int ol = o && v->outlier_bits != TQ_OUTLIER_F16 ? levels(v->outlier_bits) : 1;
  int cb = levels(k.main.bits) + vl + ol;
  int vws = (val.bytes / 4) | 1;
  int bytes = 4 * cb + 2 * 4 * v->head_dim       /* CB, rot_a, rot_b */
              + 16 * TQG_WGSL_WORKGROUP + 16 + 8 /* red, tile_max, t_lo/hi */
              + 4 * ow                           /* oacc */
              + 16 * (m + ow + (v->qjl ? m : 1)) /* q4, qo4, qs4 */
              + tile * (4 * vws + 16);           /* sv, p4 */
  return bytes;
}

int tqg_wgsl_tile(const tq_variant *v) {
  int tile = TQG_WGSL_WORKGROUP;
  while (tile > 8 && attend_bytes(v, tile) > TQG_WGSL_WORKGROUP_BYTES)
    tile /= 2;
  return tile;
}

int tqg_wgsl_splits(const tq_variant *v, tq_op op, int batch, int kv_heads,
                    int n_tokens, int capacity) {
  if (op != TQ_OP_DECODE && op != TQ_OP_PREFILL) return 0;
  long rows = (long)n_tokens * v->group, tiles = (rows + 3) / 4;
  long base = (long)batch * kv_heads * tiles;
  if (base < 1) return 1;
  long s = (TARGET_WORKGROUPS + base - 1) / base;
  long by_len = (capacity + MIN_SLICE - 1) / MIN_SLICE;
  if (s > by_len) s = by_len;
  if (s > MAX_SPLITS) s = MAX_SPLITS;
  return s < 1 ? 1 : (int)s;
}

size_t tqg_wgsl_workspace(const tq_variant *v, tq_op op, int batch,
                          int kv_heads, int n_tokens, int capacity) {
  if (op != TQ_OP_DECODE && op != TQ_OP_PREFILL) return 0;
  int vdim = v->head_dim; /* TQ_VDIM: m + o channels, or d for min-max */
  size_t rows = (size_t)n_tokens * v->group;
  return sizeof(float) * (size_t)batch * kv_heads * rows *
         (size_t)tqg_wgsl_splits(v, op, batch, kv_heads, n_tokens, capacity) *
         (size_t)(2 + vdim);
}

/* ---- the source -------------------------------------------------------- */
/* Keys of the template's //#if lines. */
typedef struct cond {
  const char *name;
  int on;
} cond;

static int cond_value(const cond *c, int n, const char *name, size_t len,
                      int *found) {
  for (int i = 0; i < n; i++)
    if (strlen(c[i].name) == len && !strncmp(c[i].name, name, len)) {
      *found = 1;
      return c[i].on;
    }
  *found = 0;
  return 0;
}

/* Keeps or blanks the lines of tpl between //#if KEY, //#else, //#endif
 * (nesting allowed; `//#if !KEY` negates).  Blanked lines stay as empty
 * lines so a line of the output is the same line of the template. */
static tq_status resolve(const char *tpl, const cond *c, int nc, char **out,
                         char *err, size_t errn) {
  size_t n = strlen(tpl);
  char *o = malloc(n + 1), *w = o;
  if (!o) return TQ_ERR_NOMEM;
  int keep[16] = {1}, taken[16] = {1}, depth = 0, line = 1;
  for (const char *p = tpl; *p; line++) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *s = p;
    while (s < p + len && (*s == ' ')) s++;
    int directive = !strncmp(s, "//#", 3);
    if (directive && !strncmp(s, "//#if ", 6)) {
      const char *k = s + 6;
      int neg = *k == '!';
      k += neg;
      size_t kl = 0;
      while (k + kl < p + len && k[kl] != ' ' && k[kl] != '\r') kl++;
      int found, on = cond_value(c, nc, k, kl, &found);
      if (!found || depth == 15) {
        snprintf(err, errn, "templates/wgsl/kernel.wgsl:%d: %s '%.*s'", line,
                 found ? "//#if nested too deeply" : "unknown //#if key",
                 (int)kl, k);
        free(o);
        return TQ_ERR_INVALID;
      }
      on = neg ? !on : on;
      depth++;
      keep[depth] = keep[depth - 1] && on;
      taken[depth] = on;
    } else if (directive && !strncmp(s, "//#else", 7) && depth > 0) {
      keep[depth] = keep[depth - 1] && !taken[depth];
    } else if (directive && !strncmp(s, "//#endif", 8) && depth > 0) {
      depth--;
    } else if (directive) {
      snprintf(err, errn, "templates/wgsl/kernel.wgsl:%d: stray '%.*s'", line,
               (int)len, p);
      free(o);
      return TQ_ERR_INVALID;
    } else if (keep[depth]) {
      memcpy(w, p, len);
      w += len;
    }
    if (end) *w++ = '\n';
    p = end ? end + 1 : p + len;
  }
  *w = 0;
  if (depth) {
    snprintf(err, errn, "templates/wgsl/kernel.wgsl: %d unclosed //#if", depth);
    free(o);
    return TQ_ERR_INVALID;
  }
  *out = o;
  return TQ_OK;
}

static void cu32(tqg_source *s, const char *name, long value, const char *why) {
  tqg_source_printf(s, "const %s: u32 = %ldu;%s%s\n", name, value,
                    why ? " // " : "", why ? why : "");
}

static void cbool(tqg_source *s, const char *name, int value, const char *why) {
  tqg_source_printf(s, "const %s: bool = %s;%s%s\n", name,
                    value ? "true" : "false", why ? " // " : "",
                    why ? why : "");
}

/* Byte offset of a field -> word offset (absent fields: 0, never read). */
static long words(int bytes) {
  return bytes > 0 ? bytes / 4 : 0;
}

tq_status tqg_emit_wgsl(const tq_variant *variant, tqg_wgsl_flavour flavour,
                        const char *origin, tqg_source *s, char *err,
                        size_t errn) {
  char name[160];
  tq_variant normal = *variant, *v = &normal;
  tqg_variant_normalize(v);
  tq_status st = tqg_variant_check(v, err, errn);
  if (st) return st;
  if (flavour >= TQG_WGSL_FLAVOURS) {
    snprintf(err, errn, "unknown WGSL flavour %d", (int)flavour);
    return TQ_ERR_INVALID;
  }
  const char *kernel = tqg_template("wgsl/kernel.wgsl");
  if (!kernel) {
    snprintf(err, errn,
             "templates/wgsl/kernel.wgsl is missing from this build");
    return TQ_ERR_INVALID;
  }
  tqg_wgsl_tables tb;
  if ((st = tqg_wgsl_tables_init(v, &tb))) {
    snprintf(err, errn, "building tables: out of memory");
    return st;
  }
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  tqg_variant_name(v, name, sizeof name);
  int sg = flavour == TQG_WGSL_F16SG;
  int fast = tqg_wgsl_has_stage(v, flavour, TQG_WGSL_FAST_STAGE);
  int o = v->outlier_count, oq = o && v->outlier_bits != TQ_OUTLIER_F16;

  tqg_source_mark(s, "emitter", 0);
  tqg_source_printf(
      s,
      "// Generated by tqgen %s - do not edit.\n"
      "// variant  %s (hash %016llx)\n"
      "// flavour  %s%s\n"
      "// from     %s\n"
      "// backend  wgsl; entry points encode, decode, prefill, reduce, "
      "dequant%s\n"
      "// slot     key %d bytes, value %d bytes; %.3f bits per coordinate\n"
      "// tables   binding 1 holds %u f32 (codebooks, rotations, QJL), built\n"
      "//          from the variant by the runtime or the JS module\n",
      TQ_GENERATOR_VERSION, name, (unsigned long long)tqg_variant_hash(v),
      tqg_wgsl_flavour_name(flavour),
      sg ? " (needs the shader-f16 and subgroups features)" : " (WebGPU core)",
      origin,
      fast ? ",\n//          attend_fast (override " TQG_WGSL_FAST_CONSTANT
             ": the subgroup size, 8, 16 or 32)"
           : "",
      k.bytes, val.bytes, tqg_bits_per_coord(v), tb.n);
  if (sg) tqg_source_puts(s, "enable f16;\nenable subgroups;\n");
  tqg_source_puts(s, "\n// ---- variant constants\n");
  const char *act = v->dtype == TQ_F32         ? "f32"
                    : sg && v->dtype == TQ_F16 ? "f16"
                                               : "u32";
  tqg_source_printf(s, "alias TQ_ACT = %s; // %s activations%s\n", act,
                    tqg_dtype_name(v->dtype),
                    !strcmp(act, "u32") ? ", two per word" : "");
  cu32(s, "TQ_D", v->head_dim, "head_dim");
  cu32(s, "TQ_G", v->group, "q heads per kv head");
  cu32(s, "TQ_O", o, "outlier channels");
  cu32(s, "TQ_M", k.main.dim, "main channels");
  cu32(s, "TQ_KB", k.main.bits, "key MSE bits");
  cu32(s, "TQ_VB", v->value_bits, "value bits");
  cu32(s, "TQ_OB", o ? v->outlier_bits : 0, "outlier bits (16: raw f16)");
  cu32(s, "TQ_OBQ", oq ? v->outlier_bits : 1,
       "outlier index bits (1 when unused)");
  cbool(s, "TQ_QJL", v->qjl, NULL);
  cbool(s, "TQ_NC", v->norm_correction, "norm correction");
  cbool(s, "TQ_VMINMAX", v->value_method == TQ_VALUE_MINMAX, NULL);
  cu32(s, "TQ_VGROUP", v->value_group > 0 ? v->value_group : 1, NULL);
  cu32(s, "TQ_BLOCK", v->layout == TQ_PAGED ? v->block_size : 1, "paged block");
  cu32(s, "TQ_KL", levels(k.main.bits), "codebook sizes");
  cu32(s, "TQ_VL", v->value_method == TQ_VALUE_TQ ? levels(v->value_bits) : 1,
       NULL);
  cu32(s, "TQ_OL", oq ? levels(v->outlier_bits) : 1, NULL);
  cu32(s, "TQ_WG", TQG_WGSL_WORKGROUP, "threads per workgroup");
  cu32(s, "TQ_TILE", tqg_wgsl_tile(v), "cache tokens per attention tile");
  tqg_source_puts(s, "// key slot, in 32-bit words (docs/FORMAT.md)\n");
  cu32(s, "TQ_K_WORDS", k.bytes / 4, NULL);
  cu32(s, "TQ_K_IDX", words(k.main.idx_offset), NULL);
  cu32(s, "TQ_K_SCALE", words(k.main.scale_offset), NULL);
  cu32(s, "TQ_K_QJL", words(k.qjl_offset), NULL);
  cu32(s, "TQ_K_RNORM", words(k.rnorm_offset), NULL);
  cu32(s, "TQ_K_OUT_IDX", words(k.outlier.idx_offset), NULL);
  cu32(s, "TQ_K_OUT_SCALE", words(k.outlier.scale_offset), NULL);
  tqg_source_puts(s, "// value slot\n");
  cu32(s, "TQ_V_WORDS", val.bytes / 4, NULL);
  cu32(s, "TQ_V_IDX", words(val.main.idx_offset), NULL);
  cu32(s, "TQ_V_SCALE", words(val.main.scale_offset), NULL);
  cu32(s, "TQ_V_GROUPS", words(val.group_offset), NULL);
  cu32(s, "TQ_V_OUT_IDX", words(val.outlier.idx_offset), NULL);
  cu32(s, "TQ_V_OUT_SCALE", words(val.outlier.scale_offset), NULL);
  tqg_source_puts(s, "// tables buffer (binding 1): where each table starts\n");
  cbool(s, "TQ_MAIN_WHT", tb.main_wht, "randomized Hadamard, else dense");
  cbool(s, "TQ_OUT_WHT", tb.out_wht, NULL);
  cu32(s, "TB_KCB", tb.kcb, "key centroids");
  cu32(s, "TB_KBND", tb.kbnd, "key boundaries");
  cu32(s, "TB_VCB", tb.vcb, NULL);
  cu32(s, "TB_VBND", tb.vbnd, NULL);
  cu32(s, "TB_OCB", tb.ocb, NULL);
  cu32(s, "TB_OBND", tb.obnd, NULL);
  cu32(s, "TB_MSIGNS", tb.msigns, NULL);
  cu32(s, "TB_MMAT", tb.mmat, NULL);
  cu32(s, "TB_OSIGNS", tb.osigns, NULL);
  cu32(s, "TB_OMAT", tb.omat, NULL);
  cu32(s, "TB_QJL", tb.qjl, NULL);
  tqg_source_puts(s, "\n");
  tqg_wgsl_tables_free(&tb);

  const cond c[] = {
      {"SG", sg},
      {"FAST", fast},
      {"PAGED", v->layout == TQ_PAGED},
      {"ACT_F32", v->dtype == TQ_F32},
      {"ACT_F16", sg && v->dtype == TQ_F16},
      {"ACT_PACKED", v->dtype == TQ_BF16 || (!sg && v->dtype == TQ_F16)},
      {"ACT_BF16", v->dtype == TQ_BF16},
  };
  char *text = NULL;
  st = resolve(kernel, c, (int)(sizeof c / sizeof *c), &text, err, errn);
  if (st) return st;
  st = tqg_source_template(s, "templates/wgsl/kernel.wgsl", text, NULL, NULL, 0,
                           err, errn);
  free(text);
  if (!st && s->oom) st = TQ_ERR_NOMEM;
  return st;
}
