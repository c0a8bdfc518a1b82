/* output.c - the generated tree: <dir>/<backend>/<variant>.<ext>,
 * <dir>/<family>_dispatch.{c,h} and <dir>/manifest.json. */
#define _DEFAULT_SOURCE /* realpath */
#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "clang_check.h"
#include "core/core.h"
#include "emit.h"
#include "output_vulkan.h"
#include "vulkan.h"
#include "output_wgsl.h"

unsigned tqg_emittable_backends(void) {
  return 1u << TQG_BACKEND_C | 1u << TQG_BACKEND_CUDA |
         (tqg_spirv_available() ? 1u << TQG_BACKEND_VULKAN : 0) |
         1u << TQG_BACKEND_WGSL;
}

static tq_status make_dir(const char *path, char *err, size_t errn) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p && *p != '/') continue;
    char c = *p;
    *p = 0;
    if (mkdir(buf, 0755) && errno != EEXIST) {
      snprintf(err, errn, "cannot create folder %s: %s", buf, strerror(errno));
      return TQ_ERR_IO;
    }
    if (!c) break;
    *p = c;
  }
  return TQ_OK;
}

/* Writes through a temporary file and a rename, so an interrupted run never
 * leaves a half-written file behind. */
static tq_status write_file(const char *dir, const char *rel, const char *text,
                            size_t len, char *err, size_t errn) {
  char path[1200], tmp[1300];
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  int ok = f && fwrite(text, 1, len, f) == len;
  if (f) ok = !fclose(f) && ok;
  if (!ok || rename(tmp, path)) {
    snprintf(err, errn, "cannot write %s: %s", path, strerror(errno));
    remove(tmp);
    return TQ_ERR_IO;
  }
  return TQ_OK;
}

tq_status tqg_write_file(const char *dir, const char *rel, const char *text,
                         size_t len, char *err, size_t errn) {
  return write_file(dir, rel, text, len, err, errn);
}

static const char *method_name(tq_value_method m) {
  return m == TQ_VALUE_MINMAX ? "minmax" : "tq";
}

static cJSON *variant_json(const tq_variant *v) {
  char name[160], hash[24];
  tqg_variant_name(v, name, sizeof name);
  snprintf(hash, sizeof hash, "%016llx", (unsigned long long)tqg_variant_hash(v));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "name", name);
  cJSON_AddStringToObject(j, "hash", hash);
  cJSON_AddNumberToObject(j, "head_dim", v->head_dim);
  cJSON_AddNumberToObject(j, "group", v->group);
  cJSON_AddNumberToObject(j, "key_bits", v->key_bits);
  cJSON_AddNumberToObject(j, "value_bits", v->value_bits);
  cJSON_AddStringToObject(j, "value_method", method_name(v->value_method));
  if (v->value_method == TQ_VALUE_MINMAX)
    cJSON_AddNumberToObject(j, "value_group", v->value_group);
  cJSON *o = cJSON_AddObjectToObject(j, "outliers");
  cJSON_AddNumberToObject(o, "count", v->outlier_count);
  cJSON_AddNumberToObject(o, "bits", v->outlier_count ? v->outlier_bits : 0);
  cJSON_AddBoolToObject(j, "qjl", v->qjl);
  cJSON_AddBoolToObject(j, "norm_correction", v->norm_correction);
  snprintf(hash, sizeof hash, "%llu", (unsigned long long)v->seed);
  cJSON_AddStringToObject(j, "seed", hash);
  cJSON_AddStringToObject(j, "dtype", tqg_dtype_name(v->dtype));
  cJSON_AddStringToObject(j, "layout", v->layout == TQ_PAGED ? "paged" : "contiguous");
  if (v->layout == TQ_PAGED) cJSON_AddNumberToObject(j, "block_size", v->block_size);
  tq_slot_layout kl, vl;
  tqg_key_layout(v, &kl);
  tqg_value_layout(v, &vl);
  int bpt = kl.bytes + vl.bytes;
  cJSON_AddNumberToObject(j, "key_slot_bytes", kl.bytes);
  cJSON_AddNumberToObject(j, "value_slot_bytes", vl.bytes);
  cJSON_AddNumberToObject(j, "bytes_per_token_per_kv_head", bpt);
  /* Rounded so the JSON text is stable across printf implementations. */
  cJSON_AddNumberToObject(j, "bits_per_coord", (double)(long)(tqg_bits_per_coord(v) * 1000 + 0.5) / 1000);
  double ratio = 4.0 * v->head_dim / bpt; /* f16 K + V: 2 * d * 2 bytes */
  cJSON_AddNumberToObject(j, "compression_vs_f16", (double)(long)(ratio * 1000 + 0.5) / 1000);
  return j;
}

static tq_status emit_c_file(const tqg_spec *spec, const tq_variant *v,
                             const char *dir, const char *rel, char *err,
                             size_t errn) {
  tqg_source src;
  tqg_source_init(&src);
  tq_status st = tqg_emit_c(v, spec->file, &src, err, errn);
  if (!st) st = tqg_clang_check(&src, rel, TQG_LANG_C, err, errn);
  if (!st) st = write_file(dir, rel, src.text, src.len, err, errn);
  tqg_source_free(&src);
  return st;
}

/* Kernels of one op in the manifest. */
static void manifest_kernels(cJSON *kernels, const char *backend,
                             const char *rel, const char *sym) {
  for (int op = 0; op < TQ_OP_COUNT; op++) {
    char fn[260];
    snprintf(fn, sizeof fn, "%s_%s", sym, tqg_op_name((tq_op)op));
    cJSON *kj = cJSON_CreateObject();
    cJSON_AddStringToObject(kj, "op", tqg_op_name((tq_op)op));
    cJSON_AddStringToObject(kj, "backend", backend);
    cJSON_AddStringToObject(kj, "file", rel);
    cJSON_AddStringToObject(kj, "symbol", fn);
    cJSON_AddItemToArray(kernels, kj);
  }
}

/* nvcc -fatbin for every arch of the spec (default sm_80, sm_89, sm_90);
 * returns the fatbin's bytes (malloc'd). */
static tq_status nvcc_fatbin(const char *dir, const char *rel_cu,
                             const char *archs, void **bin, size_t *size,
                             char *err, size_t errn) {
  char out[1300], log[1300], list[128], gencode[16][64];
  char *argv[64];
  int n = 0;
  const char *nvcc = getenv("NVCC");
  if (!nvcc || !*nvcc) nvcc = "nvcc";
  /* nvcc runs inside dir on the relative path: the fatbin records the
   * source path, and a path that does not depend on -o keeps the output
   * byte-identical wherever it is written. */
  snprintf(out, sizeof out, "%s/%s.fatbin.tmp%ld", dir, rel_cu, (long)getpid());
  snprintf(log, sizeof log, "%s/%s.nvcc.log%ld", dir, rel_cu, (long)getpid());
  char *abs_out = realpath(dir, NULL);
  if (!abs_out) {
    snprintf(err, errn, "--aot: cannot resolve %s", dir);
    return TQ_ERR_IO;
  }
  char out_abs[1400];
  snprintf(out_abs, sizeof out_abs, "%s/%s.fatbin.tmp%ld", abs_out, rel_cu, (long)getpid());
  free(abs_out);
  snprintf(list, sizeof list, "%s", *archs ? archs : "sm_80,sm_89,sm_90");
  argv[n++] = (char *)nvcc;
  argv[n++] = "-fatbin";
  argv[n++] = "-std=c++17";
  int g = 0;
  for (char *a = strtok(list, ","); a && g < 16; a = strtok(NULL, ","), g++) {
    /* sm_90a -> arch=compute_90a,code=sm_90a */
    snprintf(gencode[g], sizeof gencode[g], "arch=compute_%s,code=%s", a + 3, a);
    argv[n++] = "-gencode";
    argv[n++] = gencode[g];
  }
  argv[n++] = "-o";
  argv[n++] = out_abs;
  argv[n++] = (char *)rel_cu;
  argv[n] = NULL;
  int rc = tq_spawn(argv, dir, log);
  tq_status st = TQ_OK;
  if (rc != 0) {
    FILE *f = fopen(log, "r");
    char first[400] = "";
    if (f) {
      if (!fgets(first, sizeof first, f)) first[0] = 0;
      fclose(f);
    }
    first[strcspn(first, "\n")] = 0;
    snprintf(err, errn, "--aot: %s failed on %s (exit %d)%s%s", nvcc, rel_cu, rc,
             *first ? ": " : "", rc == 127 ? "nvcc not found (set NVCC)" : first);
    st = TQ_ERR_COMPILE;
  } else {
    FILE *f = fopen(out, "rb");
    long len = -1;
    if (f && !fseek(f, 0, SEEK_END)) len = ftell(f);
    *bin = len > 0 ? malloc((size_t)len) : NULL;
    if (!f || len <= 0 || !*bin || fseek(f, 0, SEEK_SET) ||
        fread(*bin, 1, (size_t)len, f) != (size_t)len) {
      snprintf(err, errn, "--aot: cannot read %s", out);
      free(*bin);
      *bin = NULL;
      st = TQ_ERR_IO;
    } else {
      *size = (size_t)len;
    }
    if (f) fclose(f);
  }
  remove(out);
  remove(log);
  return st;
}

/* A byte array, 16 per line, aligned for the driver's loader. */
static void byte_array(tqg_source *s, const char *name, const unsigned char *p,
                       size_t n) {
  tqg_source_printf(s, "static const _Alignas(16) unsigned char %s[%zu] = {", name, n);
  for (size_t i = 0; i < n; i++)
    tqg_source_printf(s, "%s%u%s", i % 16 ? "" : "\n  ", p[i], i + 1 < n ? "," : "");
  tqg_source_puts(s, "\n};\n");
}

void tqg_print_files(const tqg_spec *spec, unsigned backends, FILE *f) {
  char name[160];
  for (int i = 0; i < spec->n_variants; i++) {
    tqg_variant_name(&spec->variants[i], name, sizeof name);
    if ((backends >> TQG_BACKEND_C) & 1) fprintf(f, "c/%s.c\n", name);
    if ((backends >> TQG_BACKEND_CUDA) & 1) fprintf(f, "cuda/%s.cu\n", name);
    if ((backends >> TQG_BACKEND_VULKAN) & 1) fprintf(f, "vulkan/%s.comp\n", name);
    if ((backends >> TQG_BACKEND_WGSL) & 1)
      for (int fl = 0; fl < (spec->backend[TQG_BACKEND_WGSL].subgroups == 0 ? 1 : 2); fl++)
        fprintf(f, "wgsl/%s.%s.wgsl\n", name, tqg_wgsl_flavour_name((tqg_wgsl_flavour)fl));
  }
  if ((backends >> TQG_BACKEND_WGSL) & 1) fprintf(f, "%s.webgpu.js\n", spec->family);
  fprintf(f, "%s_dispatch.h\n%s_dispatch.c\nmanifest.json\n", spec->family,
          spec->family);
}

/* One dispatch-table entry: C functions, a CUDA fatbin array, or Vulkan
 * shaders (with the constant tables as the binary). */
static void dispatch_entry(tqg_source *c, const tq_variant *v, const char *name,
                           const char *sym, const char *backend,
                           const char *fatbin, const char *shaders,
                           int n_shaders) {
  tqg_source_printf(c,
      "  {\"%s\", 0x%016llxull, \"%s\",\n"
      "   {.head_dim = %d, .group = %d, .key_bits = %d, .value_bits = %d,\n"
      "    .value_method = %s, .value_group = %d, .outlier_count = %d,\n"
      "    .outlier_bits = %d, .qjl = %d, .norm_correction = %d,\n"
      "    .seed = 0x%llxull, .dtype = %s, .layout = %s, .block_size = %d},\n",
      name, (unsigned long long)tqg_variant_hash(v), backend, v->head_dim,
      v->group, v->key_bits, v->value_bits,
      v->value_method == TQ_VALUE_MINMAX ? "TQ_VALUE_MINMAX" : "TQ_VALUE_TQ",
      v->value_group, v->outlier_count, v->outlier_bits, v->qjl,
      v->norm_correction, (unsigned long long)v->seed,
      v->dtype == TQ_F16 ? "TQ_F16" : v->dtype == TQ_BF16 ? "TQ_BF16" : "TQ_F32",
      v->layout == TQ_PAGED ? "TQ_PAGED" : "TQ_CONTIGUOUS", v->block_size);
  if (fatbin)
    tqg_source_printf(c, "   {NULL, NULL, NULL, NULL}, NULL, %s, sizeof %s,\n"
                         "   {NULL, NULL, NULL, NULL}, %s, %d},\n", fatbin, fatbin,
                      shaders ? shaders : "NULL", shaders ? n_shaders : 0);
  else
    tqg_source_printf(c, "   {%s_encode, %s_decode, %s_prefill, %s_dequant}, %s_workspace,\n"
                         "   NULL, 0, {NULL, NULL, NULL, NULL}, NULL, 0},\n",
                      sym, sym, sym, sym, sym);
}

tq_status tqg_write_outputs(const tqg_spec *spec, const tqg_output_options *o,
                            char *err, size_t errn) {
  char rel[300], name[160], sym[200];
  tq_status st = make_dir(o->dir, err, errn);
  int do_c = (o->backends >> TQG_BACKEND_C) & 1;
  int do_cuda = (o->backends >> TQG_BACKEND_CUDA) & 1;
  int do_vulkan = (o->backends >> TQG_BACKEND_VULKAN) & 1;
  int do_wgsl = (o->backends >> TQG_BACKEND_WGSL) & 1;
  tqg_wgsl_output *wgsl = NULL;
  if (!st && do_c) {
    snprintf(rel, sizeof rel, "%s/c", o->dir);
    st = make_dir(rel, err, errn);
  }
  if (!st && do_cuda) {
    snprintf(rel, sizeof rel, "%s/cuda", o->dir);
    st = make_dir(rel, err, errn);
  }
  if (!st && do_wgsl) {
    snprintf(rel, sizeof rel, "%s/wgsl", o->dir);
    st = make_dir(rel, err, errn);
    if (!st) st = tqg_wgsl_output_begin(spec, o->dir, o->quiet, &wgsl, err, errn);
  }
  if (!st && do_vulkan) {
    snprintf(rel, sizeof rel, "%s/vulkan", o->dir);
    st = make_dir(rel, err, errn);
  }
  if (st) {
    tqg_wgsl_output_free(wgsl);
    return st;
  }
  tqg_source h, c, fatbins;
  tqg_source_init(&h);
  tqg_source_init(&c);
  tqg_source_init(&fatbins);
  cJSON *root = cJSON_CreateObject(), *files = cJSON_CreateArray();
  cJSON_AddStringToObject(root, "generator", "tqgen");
  cJSON_AddStringToObject(root, "version", TQ_GENERATOR_VERSION);
  cJSON_AddStringToObject(root, "spec", spec->file);
  cJSON_AddStringToObject(root, "family", spec->family);
  cJSON *models = cJSON_AddArrayToObject(root, "models");
  for (int i = 0; i < spec->n_models; i++) {
    const tqg_model *m = &spec->models[i];
    cJSON *mj = cJSON_CreateObject();
    cJSON_AddStringToObject(mj, "name", m->name);
    cJSON_AddNumberToObject(mj, "head_dim", m->head_dim);
    cJSON_AddNumberToObject(mj, "q_heads", m->q_heads);
    cJSON_AddNumberToObject(mj, "kv_heads", m->kv_heads);
    cJSON_AddItemToArray(models, mj);
  }
  cJSON *variants = cJSON_AddArrayToObject(root, "variants");

  const char *fam = spec->family;
  tqg_source_printf(&h,
      "/* Generated by tqgen %s from %s - do not edit. */\n"
      "#ifndef TQ_DISPATCH_%s_H\n#define TQ_DISPATCH_%s_H\n\n"
      "#include \"tq_dispatch.h\"\n\n", TQ_GENERATOR_VERSION, spec->file, fam, fam);
  /* <family>_dispatch.c is `fatbins` (its head, then any fatbin arrays, which
   * the entries refer to) followed by `c` (the entries and the table). */
  tqg_source_printf(&fatbins,
      "/* Generated by tqgen %s from %s - do not edit.\n"
      " * Register with tq_register(backend, &tq_dispatch_%s). */\n"
      "#include \"%s_dispatch.h\"\n\n", TQ_GENERATOR_VERSION, spec->file, fam, fam);
  for (int i = 0; i < spec->n_variants && do_c; i++) {
    tqg_c_symbol(&spec->variants[i], sym, sizeof sym);
    for (int op = 0; op < TQ_OP_COUNT; op++)
      tqg_source_printf(&h, "int %s_%s(const tq_kargs *args);\n", sym, tqg_op_name((tq_op)op));
    tqg_source_printf(&h, "size_t %s_workspace(int op, const tq_kargs *args);\n", sym);
  }
  tqg_source_printf(&h, "\nextern const tq_dispatch_table tq_dispatch_%s;\n\n#endif\n", fam);
  tqg_source_printf(&c, "static const tq_dispatch_entry entries[] = {\n");
  int count = 0;
  for (int i = 0; i < spec->n_variants && !st; i++) {
    const tq_variant *v = &spec->variants[i];
    cJSON *vj = variant_json(v);
    cJSON *kernels = cJSON_AddArrayToObject(vj, "kernels");
    cJSON_AddItemToArray(variants, vj);
    tqg_variant_name(v, name, sizeof name);
    tqg_c_symbol(v, sym, sizeof sym);
    if (do_c) {
      snprintf(rel, sizeof rel, "c/%s.c", name);
      if (!o->quiet) fprintf(stderr, "  c       %s\n", rel);
      if ((st = emit_c_file(spec, v, o->dir, rel, err, errn))) break;
      cJSON_AddItemToArray(files, cJSON_CreateString(rel));
      manifest_kernels(kernels, "c", rel, sym);
      dispatch_entry(&c, v, name, sym, "c", NULL, NULL, 0);
      count++;
    }
    if (do_cuda) {
      snprintf(rel, sizeof rel, "cuda/%s.cu", name);
      if (!o->quiet) fprintf(stderr, "  cuda    %s%s\n", rel, o->aot ? " (+ fatbin)" : "");
      tqg_source src;
      tqg_source_init(&src);
      st = tqg_emit_cuda(v, spec->file, &src, err, errn);
      if (!st) st = write_file(o->dir, rel, src.text, src.len, err, errn);
      tqg_source_free(&src);
      if (st) break;
      cJSON_AddItemToArray(files, cJSON_CreateString(rel));
      manifest_kernels(kernels, "cuda", rel, sym);
      if (o->aot) {
        void *bin = NULL;
        size_t size = 0;
        char array[64];
        st = nvcc_fatbin(o->dir, rel, spec->backend[TQG_BACKEND_CUDA].archs, &bin,
                         &size, err, errn);
        if (st) break;
        snprintf(array, sizeof array, "tq_fatbin_%d", i);
        byte_array(&fatbins, array, bin, size);
        free(bin);
        dispatch_entry(&c, v, name, sym, "cuda", array, NULL, 0);
        count++;
      }
    }
    if (do_vulkan) {
      /* The GLSL is written first, so a compile error's file:line opens. */
      char tables[64], shaders[64];
      int n_shaders = 0;
      snprintf(rel, sizeof rel, "vulkan/%s.comp", name);
      if (!o->quiet) fprintf(stderr, "  vulkan  %s (+ SPIR-V)\n", rel);
      tqg_source src;
      tqg_source_init(&src);
      st = tqg_emit_vulkan(v, spec->file, &src, err, errn);
      if (!st) st = write_file(o->dir, rel, src.text, src.len, err, errn);
      if (!st)
        st = tqg_vulkan_arrays(v, &src, rel, spec->backend[TQG_BACKEND_VULKAN].subgroups, i,
                               &fatbins, tables, shaders, sizeof tables, &n_shaders, err, errn);
      tqg_source_free(&src);
      if (st) break;
      cJSON_AddItemToArray(files, cJSON_CreateString(rel));
      manifest_kernels(kernels, "vulkan", rel, sym);
      dispatch_entry(&c, v, name, sym, "vulkan", tables, shaders, n_shaders);
      count++;
    }
    if (do_wgsl) {
      /* WGSL per flavour, compiled by the WebGPU implementation when present. */
      char tables[64], shaders[64];
      int n_shaders = 0;
      if ((st = tqg_wgsl_output_variant(wgsl, v, i, &fatbins, files, kernels, tables,
                                        shaders, sizeof tables, &n_shaders, err, errn)))
        break;
      dispatch_entry(&c, v, name, sym, "wgsl", tables, shaders, n_shaders);
      count++;
    }
  }
  if (!st && do_wgsl) st = tqg_wgsl_output_end(wgsl, files, err, errn);
  tqg_wgsl_output_free(wgsl);
  tqg_source_printf(&c, "  {0} /* end: keeps the array non-empty */\n};\n\nconst tq_dispatch_table tq_dispatch_%s = {\n"
                        "  \"%s\", \"%s\", %d, entries};\n",
                    fam, fam, TQ_GENERATOR_VERSION, count);
  if (!st) {
    snprintf(rel, sizeof rel, "%s_dispatch.h", fam);
    st = write_file(o->dir, rel, h.text, h.len, err, errn);
    cJSON_AddItemToArray(files, cJSON_CreateString(rel));
  }
  if (!st) {
    tqg_source_puts(&fatbins, c.text);
    snprintf(rel, sizeof rel, "%s_dispatch.c", fam);
    st = fatbins.oom ? TQ_ERR_NOMEM
                     : write_file(o->dir, rel, fatbins.text, fatbins.len, err, errn);
    cJSON_AddItemToArray(files, cJSON_CreateString(rel));
  }
  cJSON_AddItemToArray(files, cJSON_CreateString("manifest.json"));
  cJSON_AddItemToObject(root, "files", files);
  if (!st) {
    char *text = cJSON_Print(root);
    if (!text) st = TQ_ERR_NOMEM;
    else {
      size_t len = strlen(text);
      char *nl = realloc(text, len + 2);
      if (nl) {
        text = nl;
        text[len++] = '\n';
        text[len] = 0;
      }
      st = write_file(o->dir, "manifest.json", text, len, err, errn);
      free(text);
    }
  }
  cJSON_Delete(root);
  tqg_source_free(&h);
  tqg_source_free(&c);
  tqg_source_free(&fatbins);
  return st;
}
