/* output_wgsl.c - the WGSL part of the generated tree:
 * wgsl/<variant>.<flavour>.wgsl, their dispatch-table entries
 * (tq_dispatch_shader arrays holding the WGSL text) and <family>.webgpu.js, the
 * ES module web engines import.  Each module is compiled by the WebGPU
 * implementation when one is present, so a broken template never ships. */
#include "output_wgsl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "emit.h"
#include "wgsl.h"
#include "wgsl_plan.h"

struct tqg_wgsl_output {
  const tqg_spec *spec;
  const char *dir;
  int quiet;
  int flavours; /* 1: core only; 2: core and f16sg */
  tq_wgsl_validator *val;
  int validated, unvalidated;
  tqg_source js;      /* variants object */
  tqg_source wgsl_js; /* WGSL texts */
  tqg_source tables;  /* distinct tables, base64 */
  int n_tables;
  uint64_t table_hash[1024];
};

tq_status tqg_wgsl_output_begin(const tqg_spec *spec, const char *dir,
                                int quiet, tqg_wgsl_output **out, char *err,
                                size_t errn) {
  tqg_wgsl_output *w = calloc(1, sizeof *w);
  if (!w) return TQ_ERR_NOMEM;
  w->spec = spec;
  w->dir = dir;
  w->quiet = quiet;
  /* subgroups = false: the core flavour only; true or unset: both. */
  w->flavours = spec->backend[TQG_BACKEND_WGSL].subgroups == 0 ? 1 : 2;
  tqg_source_init(&w->js);
  tqg_source_init(&w->wgsl_js);
  tqg_source_init(&w->tables);
  char why[1024];
  if (tq_wgsl_validator_open(&w->val, why, sizeof why)) {
    w->val = NULL;
    if (!quiet)
      fprintf(stderr,
              "tqgen: note: WGSL modules written without compiling them: %s\n",
              why);
  }
  (void)err;
  (void)errn;
  *out = w;
  return TQ_OK;
}

void tqg_wgsl_output_free(tqg_wgsl_output *w) {
  if (!w) return;
  tq_wgsl_validator_close(w->val);
  tqg_source_free(&w->js);
  tqg_source_free(&w->wgsl_js);
  tqg_source_free(&w->tables);
  free(w);
}

/* A C string literal of text, one source line per line. */
static void c_string(tqg_source *s, const char *text, size_t n) {
  tqg_source_puts(s, "  \"");
  for (size_t i = 0; i < n; i++) {
    char c = text[i];
    if (c == '\n')
      tqg_source_puts(s, i + 1 < n ? "\\n\"\n  \"" : "\\n");
    else if (c == '"' || c == '\\')
      tqg_source_printf(s, "\\%c", c);
    else if ((unsigned char)c < 32)
      tqg_source_printf(s, "\\%03o", (unsigned)(unsigned char)c);
    else
      tqg_source_printf(s, "%c", c);
  }
  tqg_source_puts(s, "\"");
}

/* A JS string literal (JSON rules). */
static void js_string(tqg_source *s, const char *text, size_t n) {
  tqg_source_puts(s, "\"");
  for (size_t i = 0; i < n; i++) {
    char c = text[i];
    if (c == '\n')
      tqg_source_puts(s, "\\n");
    else if (c == '"' || c == '\\')
      tqg_source_printf(s, "\\%c", c);
    else if ((unsigned char)c < 32)
      tqg_source_printf(s, "\\u%04x", (unsigned)(unsigned char)c);
    else
      tqg_source_printf(s, "%c", c);
  }
  tqg_source_puts(s, "\"");
}

static void base64(tqg_source *s, const unsigned char *p, size_t n) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char q[5] = {0};
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 |
                 (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    q[0] = a[v >> 18 & 63];
    q[1] = a[v >> 12 & 63];
    q[2] = i + 1 < n ? a[v >> 6 & 63] : '=';
    q[3] = i + 2 < n ? a[v & 63] : '=';
    tqg_source_puts(s, q);
  }
}

/* Index of the variant's tables in TABLES (identical tables are shared:
 * they depend on head_dim, bits, outliers and seed only). */
static int table_index(tqg_wgsl_output *w, const tq_variant *v, tq_status *st) {
  tqg_wgsl_tables t;
  if ((*st = tqg_wgsl_tables_init(v, &t))) return 0;
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = (const unsigned char *)t.data;
  for (size_t i = 0; i < (size_t)t.n * 4; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  int at = -1;
  for (int i = 0; i < w->n_tables && at < 0; i++)
    if (w->table_hash[i] == h) at = i;
  if (at < 0 && w->n_tables < 1024) {
    at = w->n_tables;
    w->table_hash[w->n_tables++] = h;
    tqg_source_puts(&w->tables, "  \"");
    base64(&w->tables, p, (size_t)t.n * 4);
    tqg_source_puts(&w->tables, "\",\n");
  }
  tqg_wgsl_tables_free(&t);
  return at < 0 ? 0 : at;
}

static void js_variant_head(tqg_source *s, const tq_variant *v,
                            const char *name, int tables) {
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  tqg_source_printf(
      s,
      "  \"%s\": {\n    variant: { head_dim: %d, group: %d, key_bits: %d, "
      "value_bits: %d, "
      "value_method: \"%s\", value_group: %d, outlier_count: %d, outlier_bits: "
      "%d, "
      "qjl: %s, norm_correction: %s, seed: \"0x%llx\", dtype: \"%s\", layout: "
      "\"%s\", "
      "block_size: %d },\n    keySlotBytes: %d, valueSlotBytes: %d, tables: "
      "%d,\n"
      "    flavours: {\n",
      name, v->head_dim, v->group, v->key_bits, v->value_bits,
      v->value_method == TQ_VALUE_MINMAX ? "minmax" : "tq", v->value_group,
      v->outlier_count, v->outlier_bits, v->qjl ? "true" : "false",
      v->norm_correction ? "true" : "false", (unsigned long long)v->seed,
      tqg_dtype_name(v->dtype), v->layout == TQ_PAGED ? "paged" : "contiguous",
      v->block_size, k.bytes, val.bytes, tables);
}

/* A stage's entry: attend_fast's workgroup is subgroupWorkers subgroups
 * (createKernel sets its size through the override `constant`). */
static void js_stages(tqg_source *s, const tq_variant *v, const char *key,
                      tqg_wgsl_flavour fl) {
  tqg_source_printf(s, "      %s: { code: WGSL[\"%s\"], stages: {\n",
                    tqg_wgsl_flavour_name(fl), key);
  for (int st = 0; st < TQG_WGSL_STAGES; st++) {
    if (!tqg_wgsl_has_stage(v, fl, st)) continue;
    uint32_t mask = tqg_wgsl_binding_mask(v, st);
    tqg_source_printf(s, "        %s: { entryPoint: \"%s\", ",
                      tqg_wgsl_stage_names[st], tqg_wgsl_stage_names[st]);
    if (st == TQG_WGSL_FAST_STAGE)
      tqg_source_printf(s,
                        "workgroupSize: null, subgroupWorkers: %d, "
                        "constant: \"%s\", bindings: [",
                        TQG_WGSL_FAST_WORKERS, TQG_WGSL_FAST_CONSTANT);
    else
      tqg_source_printf(s, "workgroupSize: [%d, 1, 1], bindings: [",
                        TQG_WGSL_WORKGROUP);
    for (int b = 0, first = 1; b < TQG_WB_COUNT; b++)
      if (mask >> b & 1) {
        tqg_source_printf(s, "%s%d", first ? "" : ", ", b);
        first = 0;
      }
    tqg_source_puts(s, "] },\n");
  }
  tqg_source_puts(s, "      } },\n");
}

tq_status tqg_wgsl_output_variant(tqg_wgsl_output *w, const tq_variant *v,
                                  int index, tqg_source *head, cJSON *files,
                                  cJSON *kernels, char *tables_name,
                                  char *shaders_name, size_t namen,
                                  int *n_shaders, char *err, size_t errn) {
  char name[160], rel[300], key[200], array[64];
  tqg_variant_name(v, name, sizeof name);
  tq_status st = TQ_OK;
  int tables = table_index(w, v, &st);
  if (st) return st;
  js_variant_head(&w->js, v, name, tables);
  for (int f = 0; f < w->flavours && !st; f++) {
    tqg_wgsl_flavour fl = (tqg_wgsl_flavour)f;
    const char *fn = tqg_wgsl_flavour_name(fl);
    snprintf(rel, sizeof rel, "wgsl/%s.%s.wgsl", name, fn);
    if (!w->quiet) fprintf(stderr, "  wgsl    %s\n", rel);
    tqg_source src;
    tqg_source_init(&src);
    st = tqg_emit_wgsl(v, fl, w->spec->file, &src, err, errn);
    if (!st && w->val && tq_wgsl_validator_has(w->val, fl)) {
      st = tq_wgsl_validate(w->val, v, fl, &src, err, errn);
      w->validated += !st;
    } else if (!st) {
      w->unvalidated++;
    }
    if (!st) st = tqg_write_file(w->dir, rel, src.text, src.len, err, errn);
    if (!st) {
      cJSON_AddItemToArray(files, cJSON_CreateString(rel));
      for (int s = 0; s < TQG_WGSL_STAGES; s++) {
        if (!tqg_wgsl_has_stage(v, fl, s)) continue;
        cJSON *kj = cJSON_CreateObject();
        cJSON_AddStringToObject(kj, "op", tqg_wgsl_stage_names[s]);
        cJSON_AddStringToObject(kj, "backend", "wgsl");
        cJSON_AddStringToObject(kj, "flavour", fn);
        cJSON_AddStringToObject(kj, "file", rel);
        cJSON_AddStringToObject(kj, "entry_point", tqg_wgsl_stage_names[s]);
        cJSON_AddItemToArray(kernels, kj);
      }
      snprintf(array, sizeof array, "tq_wgsl_%d_%s", index, fn);
      tqg_source_printf(head, "/* %s */\nstatic const char %s[] =\n", rel,
                        array);
      c_string(head, src.text, src.len);
      tqg_source_puts(head, ";\n");
      snprintf(key, sizeof key, "%s.%s", name, fn);
      tqg_source_printf(&w->wgsl_js, "  \"%s\": ", key);
      js_string(&w->wgsl_js, src.text, src.len);
      tqg_source_puts(&w->wgsl_js, ",\n");
      js_stages(&w->js, v, key, fl);
    }
    tqg_source_free(&src);
  }
  if (st) return st;
  tqg_source_puts(&w->js, "    },\n  },\n");
  /* The entry's shaders: every stage of every flavour, "<flavour>/<stage>",
   * all stages of a flavour in one module of WGSL text (attend_fast's
   * workgroup size 0: 4 subgroups, sized at pipeline creation).  Its binary
   * is the tables buffer's contents. */
  tqg_wgsl_tables t;
  if ((st = tqg_wgsl_tables_init(v, &t))) return st;
  snprintf(tables_name, namen, "tq_wgsl_tables_%d", index);
  tqg_source_printf(head, "static const float %s[%u] = {", tables_name, t.n);
  for (uint32_t i = 0; i < t.n; i++)
    tqg_source_printf(head, "%s%.9g%s", i % 8 ? " " : "\n  ", t.data[i],
                      i + 1 < t.n ? "," : "");
  tqg_source_puts(head, "\n};\n");
  tqg_wgsl_tables_free(&t);
  snprintf(shaders_name, namen, "tq_wgsl_%d", index);
  tqg_source_printf(head, "static const tq_dispatch_shader %s[] = {\n",
                    shaders_name);
  *n_shaders = 0;
  for (int f = 0; f < w->flavours; f++)
    for (int s = 0; s < TQG_WGSL_STAGES; s++) {
      const char *fn = tqg_wgsl_flavour_name((tqg_wgsl_flavour)f);
      if (!tqg_wgsl_has_stage(v, (tqg_wgsl_flavour)f, s)) continue;
      tqg_source_printf(head,
                        "  {\"%s/%s\", tq_wgsl_%d_%s, sizeof tq_wgsl_%d_%s - "
                        "1, {%d, 1, 1}, 0, 0x%03x},\n",
                        fn, tqg_wgsl_stage_names[s], index, fn, index, fn,
                        s == TQG_WGSL_FAST_STAGE ? 0 : TQG_WGSL_WORKGROUP,
                        (unsigned)tqg_wgsl_binding_mask(v, s));
      ++*n_shaders;
    }
  tqg_source_puts(head, "};\n\n");
  return head->oom || w->js.oom ? TQ_ERR_NOMEM : TQ_OK;
}

tq_status tqg_wgsl_output_end(tqg_wgsl_output *w, cJSON *files, char *err,
                              size_t errn) {
  const char *runtime = tqg_template("wgsl/webgpu.js");
  if (!runtime) {
    snprintf(err, errn, "templates/wgsl/webgpu.js is missing from this build");
    return TQ_ERR_INVALID;
  }
  tqg_source s;
  tqg_source_init(&s);
  tqg_source_printf(
      &s,
      "// Generated by tqgen %s from %s - do not edit.\n"
      "// WebGPU kernels of the %s family: for each variant, the WGSL of each\n"
      "// flavour (core: every WebGPU device; f16sg: shader-f16 + subgroups),\n"
      "// its entry points, bindings and workgroup size, and the functions "
      "that\n"
      "// compile a variant and record its dispatches (docs/WEBGPU.md).\n"
      "// %d modules compiled by the WebGPU implementation at generation "
      "time%s.\n\n"
      "export const generator = \"%s\";\nexport const family = \"%s\";\n\n"
      "// Codebooks, rotations and QJL projections: little-endian f32, "
      "base64.\n"
      "const TABLES = [\n",
      TQ_GENERATOR_VERSION, w->spec->file, w->spec->family, w->validated,
      w->unvalidated ? " (some were not: no implementation or feature here)"
                     : "",
      TQ_GENERATOR_VERSION, w->spec->family);
  tqg_source_puts(&s, w->tables.text ? w->tables.text : "");
  tqg_source_puts(&s, "];\n\nconst WGSL = {\n");
  tqg_source_puts(&s, w->wgsl_js.text ? w->wgsl_js.text : "");
  tqg_source_puts(&s, "};\n\nexport const variants = {\n");
  tqg_source_puts(&s, w->js.text ? w->js.text : "");
  tqg_source_puts(&s, "};\n\n");
  const char *keys[] = {"TARGET_WORKGROUPS", "MAX_SPLITS", "MIN_SLICE",
                        "OFFSET_ALIGN", "FAST_SIZES"};
  char target[16], max_splits[16], min_slice[16], align[16], sizes[32] = "";
  snprintf(target, sizeof target, "%d", TQG_WGSL_TARGET_WORKGROUPS);
  snprintf(max_splits, sizeof max_splits, "%d", TQG_WGSL_MAX_SPLITS);
  snprintf(min_slice, sizeof min_slice, "%d", TQG_WGSL_MIN_SLICE);
  snprintf(align, sizeof align, "%d", TQ_WGSL_OFFSET_ALIGN);
  for (int n = 1; n <= 64; n *= 2)
    if (TQG_WGSL_FAST_OK(n))
      snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), "%s%d",
               sizes[0] ? ", " : "", n);
  const char *values[] = {target, max_splits, min_slice, align, sizes};
  tq_status st = tqg_source_template(&s, "templates/wgsl/webgpu.js", runtime,
                                     keys, values, 5, err, errn);
  char rel[200];
  snprintf(rel, sizeof rel, "%s.webgpu.js", w->spec->family);
  if (!st)
    st = s.oom ? TQ_ERR_NOMEM
               : tqg_write_file(w->dir, rel, s.text, s.len, err, errn);
  if (!st) cJSON_AddItemToArray(files, cJSON_CreateString(rel));
  tqg_source_free(&s);
  return st;
}
