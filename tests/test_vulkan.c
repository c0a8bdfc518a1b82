/* test_vulkan.c - the Vulkan backend on whatever device the loader offers
 * (lavapipe in CI): every op of every variant of every shipped spec and of
 * a set of option-covering variants against the CPU reference (tq_verify:
 * fresh random inputs, outputs poisoned), long contexts, the plain attend
 * stage where subgroups are switched off, an AOT dispatch table compiled
 * into this test (origin "aot"), a corrupt or stale SPIR-V cache entry
 * rebuilt, and a template error reported at the generated file and line.
 * Exit 77 (skipped) when no Vulkan loader or device exists.
 *
 * usage: test_vulkan SOURCE_DIR [quick]
 *   quick: the shipped specs' contiguous variants of their first dtype
 *   and shorter long contexts, no option variants (the sanitizer pass,
 *   where the reference and verifier run several times slower). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fast_checks.h"
#include "variants.h"
#include "core.h"
#include "emit.h"
#include "internal.h"
#include "spec.h"
#include "tq.h"
#include "vkaot_dispatch.h"
#include "vulkan.h"
#include "vulkan_backend.h"

static int quick;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int verify_all(tq_backend *be, const tq_variant *v, const char *label) {
  char name[160];
  int ok = 1;
  tqg_variant_name(v, name, sizeof name);
  for (int op = 0; op < TQ_OP_COUNT; op++) {
    tq_verify_result r;
    tq_status st = tq_verify(be, v, (tq_op)op, NULL, &r);
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "%s %s %s: %s\n", label, name, tqg_op_name((tq_op)op),
              tq_error(be));
      ok = 0;
      continue;
    }
    CHECK(r.passed);
    if (!r.passed) {
      fprintf(stderr, "%s %s %s: FAIL rel_l2 %.3g idx %.3g: %s\n", label, name,
              tqg_op_name((tq_op)op), r.rel_l2, r.index_mismatch, r.detail);
      ok = 0;
    }
  }
  return ok;
}

static void shipped_specs(tq_backend *be, const char *src) {
  static const char *const specs[] = {"qwen3", "llama3", "smollm2"};
  for (int i = 0; i < 3; i++) {
    char path[1024], err[1024];
    tqg_spec spec;
    double t0 = now();
    snprintf(path, sizeof path, "%s/specs/%s.lua", src, specs[i]);
    if (tqg_spec_load(path, &spec, err, sizeof err)) {
      fprintf(stderr, "%s\n", err);
      CHECK(0);
      continue;
    }
    CHECK(spec.backend[TQG_BACKEND_VULKAN].enabled);
    int passed = 0, ran = 0;
    for (int k = 0; k < spec.n_variants; k++) {
      const tq_variant *v = &spec.variants[k];
      if (quick &&
          (v->layout != TQ_CONTIGUOUS || v->dtype != spec.variants[0].dtype))
        continue;
      ran++;
      passed += verify_all(be, v, specs[i]);
    }
    printf("%s: %d of %d variants run, %d passed all 4 ops (%.1f s)\n",
           specs[i], ran, spec.n_variants, passed, now() - t0);
    CHECK(ran > 0 && passed == ran);
    tqg_spec_free(&spec);
  }
}

/* Options the shipped specs leave out: dense rotations of the main part,
 * raw f16 outliers, norm correction, min-max groups, widths 1..8, small
 * and large heads and groups, f32 with QJL, one-token blocks. */
static void option_variants(tq_backend *be) {
  typedef struct {
    int d, g, kb, vb, minmax, vgroup, oc, ob, qjl, nc, dtype, paged, block;
  } opt;
  static const opt list[] = {
      {96, 2, 4, 4, 0, 32, 0, 8, 0, 0, TQ_F16, 0, 16}, /* dense main rotation */
      {80, 1, 3, 5, 0, 32, 0, 8, 0, 1, TQ_F32, 1, 1},  /* dense, nc, block 1 */
      {128, 4, 3, 3, 0, 32, 24, 16, 0, 0, TQ_BF16, 0,
       16}, /* raw f16 outliers */
      {128, 8, 2, 6, 0, 32, 24, 2, 0, 1, TQ_F16, 1,
       32}, /* dense outlier rotation */
      {64, 3, 8, 7, 0, 32, 0, 8, 1, 0, TQ_F32, 0, 16},  /* 7 MSE bits + QJL */
      {64, 12, 1, 1, 1, 16, 0, 8, 0, 0, TQ_F16, 1, 16}, /* 1 bit, min-max 16 */
      {256, 16, 4, 8, 1, 64, 0, 8, 0, 0, TQ_BF16, 0,
       16}, /* group 16, 8-bit values */
      {512, 2, 2, 3, 0, 32, 32, 4, 1, 1, TQ_F16, 1,
       64}, /* head 512, QJL + outliers */
  };
  int passed = 0, n = (int)(sizeof list / sizeof *list);
  double t0 = now();
  for (int i = 0; i < n; i++) {
    const opt *o = &list[i];
    tq_variant v;
    tqg_variant_default(&v);
    v.head_dim = o->d;
    v.group = o->g;
    v.key_bits = o->kb;
    v.value_bits = o->vb;
    v.value_method = o->minmax ? TQ_VALUE_MINMAX : TQ_VALUE_TQ;
    v.value_group = o->vgroup;
    v.outlier_count = o->oc;
    v.outlier_bits = o->ob;
    v.qjl = o->qjl;
    v.norm_correction = o->nc;
    v.dtype = (tq_dtype)o->dtype;
    v.layout = o->paged ? TQ_PAGED : TQ_CONTIGUOUS;
    v.block_size = o->block;
    passed += verify_all(be, &v, "options");
  }
  printf("option variants: %d of %d passed all 4 ops (%.1f s)\n", passed, n,
         now() - t0);
}

/* Long contexts, multi-token decode and long prefill: many splits. */
static void long_contexts(tq_backend *be) {
  tq_variant v;
  for (int k = 0; k < 2; k++) {
    tq_test_long_variant(&v, k);
    tq_verify_options o = {.batch = 1, .kv_heads = 2};
    for (int op = TQ_OP_DECODE; op <= TQ_OP_PREFILL; op++) {
      if (quick && k) break;
      tq_verify_result r;
      double t0 = now();
      /* Decode far enough for many splits; prefill (quadratic in the
       * reference and on lavapipe) over enough tokens for several tiles. */
      o.context = op == TQ_OP_DECODE ? (quick ? 3000 : 20000) : 1500;
      o.n_tokens = op == TQ_OP_DECODE ? 8 : 160;
      tq_status st = tq_verify(be, &v, (tq_op)op, &o, &r);
      CHECK(st == TQ_OK);
      CHECK(st || r.passed);
      printf(
          "long context %d, variant %d, %s: rel_l2 %.3g (tolerance %.1g), %.1f "
          "s\n",
          o.context, k, tqg_op_name((tq_op)op), st ? -1.0 : r.rel_l2,
          r.tolerance, now() - t0);
    }
  }
}

/* The fast attend stage where the device has a size it is built for (every
 * lavapipe: its subgroups are 4, 8 or 16 wide): decode at 20K tokens with 1
 * and 8 query tokens, the shapes whose lanes take several tokens per value
 * step (head_dim 64 and 32 with 2-bit values, as head_dim 128 with 4-bit
 * values does on 32-wide subgroups) and 8 rows per workgroup, a paged cache
 * of 8-token blocks; then the same variant with TQ_VULKAN_FAST=0, which
 * must say it ran the fallback.  The path is checked, so a fallback can
 * never pass for the fast stage. */
static void fast_path(tq_backend *be) {
  int sg = tq_vulkan_fast_sg(be);
  printf("fast attend: subgroups of %d (0: none here)\n", sg);
  tq_variant v;
  tqg_variant_default(&v);
  v.group = 4;
  v.layout = TQ_PAGED;
  v.block_size = 16;
  CHECK(tqg_vk_fast(&v));
  char want[64];
  snprintf(want, sizeof want, "fast attend, subgroups of %d", sg);
  fast_check_decode(be, &v, sg ? want : NULL, quick ? 3000 : 20000);
  static const int shapes[][5] = {/* d, g, kb, vb, block */
                                  {64, 4, 2, 2, 8},
                                  {32, 8, 4, 2, 32},
                                  {64, 3, 4, 4, 64}};
  for (int i = 0; i < 3; i++) {
    tq_variant x;
    tqg_variant_default(&x);
    x.head_dim = shapes[i][0];
    x.group = shapes[i][1];
    x.key_bits = shapes[i][2];
    x.value_bits = shapes[i][3];
    x.layout = TQ_PAGED;
    x.block_size = shapes[i][4];
    x.dtype = TQ_F32;
    CHECK(tqg_vk_fast(&x));
    CHECK(verify_all(be, &x, "fast"));
    tq_kernel *k;
    CHECK(tq_get_kernel(be, &x, TQ_OP_DECODE, &k) == TQ_OK);
    if (sg) CHECK(k && tq_kernel_path(k) && !strcmp(tq_kernel_path(k), want));
  }
  /* Off by request: the attend stage with subgroups runs, and says so. */
  tq_backend *off = fast_check_off("vulkan", "TQ_VULKAN_FAST", &v);
  if (!off) return;
  CHECK(tq_vulkan_fast_sg(off) == 0);
  tq_close(off);
}

/* With subgroups off the plain attend stage runs (the fallback). */
static void fallback(void) {
  char err[1024];
  tq_backend *be;
  setenv("TQ_VULKAN_SUBGROUPS", "0", 1);
  tq_status st = tq_open("vulkan", &be, err, sizeof err);
  unsetenv("TQ_VULKAN_SUBGROUPS");
  CHECK(st == TQ_OK);
  if (st) return;
  CHECK(tq_vulkan_subgroups(be) == 0);
  tq_variant v;
  tqg_variant_default(&v);
  v.group = 3;
  v.dtype = TQ_F32;
  int ok = verify_all(be, &v, "no-subgroups");
  v.qjl = 1;
  v.key_bits = 3;
  v.group = 8;
  ok &= verify_all(be, &v, "no-subgroups");
  printf("without subgroups: %s (%s)\n", ok ? "pass" : "FAIL",
         tq_vulkan_describe(be));
  tq_close(be);
}

/* The dispatch table tqgen wrote for tests/vulkan/aot.lua. */
static void aot(void) {
  char err[1024];
  tq_backend *be;
  CHECK(tq_open("vulkan", &be, err, sizeof err) == TQ_OK);
  CHECK(tq_register(be, &tq_dispatch_vkaot) == TQ_OK);
  int with_sg = 0, ok = 0;
  for (int i = 0; i < tq_dispatch_vkaot.count; i++) {
    const tq_dispatch_entry *e = &tq_dispatch_vkaot.entries[i];
    CHECK(!strcmp(e->backend, "vulkan"));
    for (int k = 0; k < e->shader_count; k++)
      with_sg += !strcmp(e->shaders[k].stage, "attend.sg");
    tq_kernel *kern;
    CHECK(tq_get_kernel(be, &e->variant, TQ_OP_DECODE, &kern) == TQ_OK);
    CHECK(kern && !strcmp(tq_kernel_origin(kern), "aot"));
    ok += verify_all(be, &e->variant, "aot");
  }
  CHECK(tq_dispatch_vkaot.count == 8);
  CHECK(with_sg == tq_dispatch_vkaot.count); /* subgroups unset: both builds */
  CHECK(ok == tq_dispatch_vkaot.count);
  printf("AOT: %d entries loaded from the table and verified\n", ok);
  tq_close(be);
}

/* A corrupt cache file (checksum) and a stale one (valid file, bad image)
 * are both rebuilt. */
static void cache_rebuild(void) {
  char err[1024], path[1200], target[64];
  tq_variant v;
  tqg_variant_default(&v);
  v.head_dim = 48;
  v.group = 2;
  for (int round = 0; round < 3; round++) {
    tq_backend *be;
    CHECK(tq_open("vulkan", &be, err, sizeof err) == TQ_OK);
    if (tq_vulkan_fast_sg(be))
      snprintf(target, sizeof target, "vulkan-sg-f%d", tq_vulkan_fast_sg(be));
    else
      snprintf(target, sizeof target, "vulkan-%s",
               tq_vulkan_subgroups(be) ? "sg" : "base");
    CHECK(tq_cache_path(target, tqg_variant_hash(&v), path, sizeof path));
    if (round == 1) { /* flip a byte of the payload */
      FILE *f = fopen(path, "r+b");
      CHECK(f != NULL);
      if (f) {
        fseek(f, -100, SEEK_END);
        int c = fgetc(f);
        fseek(f, -100, SEEK_END);
        fputc(c ^ 0x5A, f);
        fclose(f);
      }
    } else if (round == 2) { /* a whole, checksummed file that is no image */
      static const char junk[] =
          "this is not a Vulkan module image, but a valid cache file";
      CHECK(tq_cache_store(target, tqg_variant_hash(&v), junk, sizeof junk, err,
                           sizeof err) == TQ_OK);
    }
    tq_kernel *k;
    CHECK(tq_get_kernel(be, &v, TQ_OP_DECODE, &k) == TQ_OK);
    const char *origin = k ? tq_kernel_origin(k) : "";
    printf("cache round %d: origin %s\n", round, origin);
    if (round) CHECK(!strcmp(origin, "jit")); /* rebuilt, not trusted */
    tq_verify_result r;
    CHECK(tq_verify(be, &v, TQ_OP_DECODE, NULL, &r) == TQ_OK && r.passed);
    tq_close(be);
  }
  /* And the good entry written by the last rebuild loads from the cache. */
  tq_backend *be;
  tq_kernel *k;
  CHECK(tq_open("vulkan", &be, err, sizeof err) == TQ_OK);
  CHECK(tq_get_kernel(be, &v, TQ_OP_ENCODE, &k) == TQ_OK);
  CHECK(k && !strcmp(tq_kernel_origin(k), "cache"));
  tq_close(be);
}

/* A broken line in a template is reported at the generated file's line and
 * the template line it came from. */
static void template_error(void) {
  tq_variant v;
  tqg_variant_default(&v);
  v.key_bits = 3; /* no fast stage: the needle's first match is attend.comp's */
  tqg_source s;
  char err[1024];
  tqg_source_init(&s);
  CHECK(tqg_emit_vulkan(&v, "test", &s, err, sizeof err) == TQ_OK);
  /* Same line count: the segment map stays right. */
  const char *needle = "  const int len = seq_lens[b];";
  char *at = s.text ? strstr(s.text, needle) : NULL;
  CHECK(at != NULL);
  if (!at) return;
  memcpy(at, "  const int len = seq_lenz[b];", strlen(needle));
  int gen_line = 1, tpl_line = 1;
  for (const char *p = s.text; p < at; p++) gen_line += *p == '\n';
  const char *tpl = tqg_template("vulkan/attend.comp");
  const char *in_tpl = tpl ? strstr(tpl, needle) : NULL;
  CHECK(in_tpl != NULL);
  for (const char *p = tpl; in_tpl && p < in_tpl; p++) tpl_line += *p == '\n';
  uint32_t *w = NULL;
  size_t n = 0;
  tq_status st = tqg_spirv_compile(&s, "vulkan/x.comp", TQG_VK_ATTEND, 0, &w,
                                   &n, err, sizeof err);
  CHECK(st == TQ_ERR_COMPILE);
  char want[128];
  snprintf(want, sizeof want, "vulkan/x.comp:%d:", gen_line);
  CHECK_CONTAINS(err, want);
  snprintf(want, sizeof want, "(from templates/vulkan/attend.comp:%d)",
           tpl_line);
  CHECK_CONTAINS(err, want);
  CHECK_CONTAINS(err, "seq_lenz");
  printf("template error: %s\n", err);
  free(w);
  tqg_source_free(&s);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_vulkan SOURCE_DIR [quick]\n");
    return 2;
  }
  quick = argc > 2 && !strcmp(argv[2], "quick");
  template_error(); /* needs no device */
  tq_backend *be;
  char err[1024];
  tq_status st = tq_open("vulkan", &be, err, sizeof err);
  if (st == TQ_ERR_UNAVAILABLE) {
    printf("skipped: %s\n", err);
    return check_failures ? 1 : 77;
  }
  CHECK(st == TQ_OK);
  if (st) {
    fprintf(stderr, "%s\n", err);
    return check_report("vulkan");
  }
  printf("device: %s\n", tq_vulkan_describe(be));
  shipped_specs(be, argv[1]);
  if (!quick) option_variants(be);
  long_contexts(be);
  fast_path(be);
  tq_close(be);
  fallback();
  aot();
  cache_rebuild();
  return check_report("vulkan");
}
