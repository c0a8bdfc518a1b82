/* test_wgsl.c - the WebGPU backend: every op of every variant of every
 * shipped spec, in both WGSL flavours (core, f16sg), against the reference
 * (tq_verify: fresh random inputs, poisoned outputs), a few long contexts,
 * the fast attend entry's shapes and its fallback, launches in parts under
 * a lowered storage binding limit (and the launches that cannot be split),
 * and a broken template line reported at its generated and template line.
 *
 * usage: test_wgsl SOURCE_DIR REQUIRE [SUBSET]
 * REQUIRE is 1 when the build has the WebGPU headers: then a missing
 * library or adapter is a failure, not a skip (77 only for builds without
 * them).  TQ_WGSL_TEST_SPECS=a,b limits the specs (names under specs/).
 * SUBSET 1 (the sanitizer build): every variant is still emitted and
 * compiled, but kernels run only for smollm2's variants (f32 and f16,
 * contiguous and paged, outliers, QJL) and the long contexts.  ASan and
 * UBSan instrument our C code (runtime, verifier, backend), which takes
 * the same path for every variant; the WGSL runs uninstrumented inside the
 * driver, and all variants run in the normal pass.  The full set under
 * ASan took 6 min of CPU, over the CI budget. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fast_checks.h"
#include "core.h"
#include "emit.h"
#include "spec.h"
#include "tq.h"
#include "variants.h"
#include "wgsl.h"
#include "wgsl_plan.h"

#define MAX_VARIANTS 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Distinct variants of the shipped specs; *last: where the last spec's
 * (smollm2's) begin. */
static int load_variants(const char *src, tqg_spec *specs, int *n_specs,
                         const tq_variant **out, int *last) {
  static const char *const names[] = {"qwen3", "llama3", "smollm2"};
  const char *only = getenv("TQ_WGSL_TEST_SPECS");
  int n = 0;
  *n_specs = 0;
  for (int i = 0; i < 3; i++) {
    if (only && *only && !strstr(only, names[i])) continue;
    char path[1024], err[1024], a[160], b[160];
    snprintf(path, sizeof path, "%s/specs/%s.lua", src, names[i]);
    tqg_spec *s = &specs[*n_specs];
    tq_status st = tqg_spec_load(path, s, err, sizeof err);
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "%s\n", err);
      continue;
    }
    CHECK(s->backend[TQG_BACKEND_WGSL].enabled);
    (*n_specs)++;
    *last = n;
    for (int k = 0; k < s->n_variants; k++) {
      int seen = 0;
      tqg_variant_name(&s->variants[k], a, sizeof a);
      for (int j = 0; j < n && !seen; j++) {
        tqg_variant_name(out[j], b, sizeof b);
        seen = !strcmp(a, b);
      }
      if (!seen && n < MAX_VARIANTS) out[n++] = &s->variants[k];
    }
  }
  return n;
}

/* Every variant emits in both flavours and compiles in the implementation
 * (module and every entry point's pipeline). */
static void check_emit(tq_wgsl_validator *val, const tq_variant *const *v,
                       int n) {
  int ok = 0, validated = 0;
  double t0 = now();
  for (int i = 0; i < n; i++)
    for (int f = 0; f < TQG_WGSL_FLAVOURS; f++) {
      char err[2048], name[160];
      tqg_source s;
      tqg_source_init(&s);
      tq_status st = tqg_emit_wgsl(v[i], (tqg_wgsl_flavour)f, "test_wgsl", &s,
                                   err, sizeof err);
      tqg_variant_name(v[i], name, sizeof name);
      CHECK(st == TQ_OK);
      if (!st && val && tq_wgsl_validator_has(val, (tqg_wgsl_flavour)f)) {
        st = tq_wgsl_validate(val, v[i], (tqg_wgsl_flavour)f, &s, err,
                              sizeof err);
        CHECK(st == TQ_OK);
        validated += !st;
      }
      if (st)
        fprintf(stderr, "  %s %s: %s\n", name,
                tqg_wgsl_flavour_name((tqg_wgsl_flavour)f), err);
      ok += !st;
      tqg_source_free(&s);
    }
  printf("emitted %d of %d modules, %d compiled with pipelines (%.1f s)\n", ok,
         n * TQG_WGSL_FLAVOURS, validated, now() - t0);
}

/* A template error names the generated line and the template line. */
static void check_error(tq_wgsl_validator *val) {
  tq_variant v;
  tqg_variant_default(&v);
  tqg_source s;
  tqg_source_init(&s);
  tqg_source_mark(&s, "emitter", 0);
  tqg_source_puts(&s, "// header\n");
  tqg_source_mark(&s, "templates/wgsl/fake.wgsl", 40);
  tqg_source_puts(&s,
                  "@compute @workgroup_size(1)\n"
                  "fn encode() {\n"
                  "  let x = undefined_thing + 1u;\n"
                  "}\n");
  char err[2048] = "";
  tq_status st = tq_wgsl_validate(val, &v, TQG_WGSL_CORE, &s, err, sizeof err);
  CHECK(st == TQ_ERR_COMPILE);
  CHECK_CONTAINS(err, "generated d128_g1_k4v4_f16.core.wgsl:4:");
  CHECK_CONTAINS(err, "undefined_thing");
  CHECK_CONTAINS(err, "templates/wgsl/fake.wgsl:42");
  printf("broken template line: %s\n", err);
  tqg_source_free(&s);
}

static void verify_all(tq_backend *be, const char *flavour,
                       const tq_variant *const *v, int n) {
  int ran = 0, failed = 0, fast = 0, attend = 0;
  double worst[TQ_OP_COUNT] = {0}, t0 = now();
  for (int i = 0; i < n; i++) {
    char name[160];
    tqg_variant_name(v[i], name, sizeof name);
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      tq_verify_result r;
      tq_status st = tq_verify(be, v[i], (tq_op)op, NULL, &r);
      CHECK(st == TQ_OK);
      if (st) {
        fprintf(stderr, "  %s %s %s: %s\n", flavour, name,
                tqg_op_name((tq_op)op), tq_error(be));
        failed++;
        continue;
      }
      ran++;
      CHECK(r.passed);
      if (op == TQ_OP_DECODE || op == TQ_OP_PREFILL) {
        attend++;
        fast += r.path && !strncmp(r.path, "fast attend", 11);
      }
      double e = op == TQ_OP_ENCODE ? r.index_mismatch : r.rel_l2;
      if (e / r.tolerance > worst[op]) worst[op] = e / r.tolerance;
      if (!r.passed) {
        failed++;
        fprintf(stderr, "  %s %s %s: FAIL %.3g (tol %.1g): %s\n", flavour, name,
                tqg_op_name((tq_op)op), e, r.tolerance, r.detail);
      }
    }
  }
  CHECK(ran == n * TQ_OP_COUNT);
  printf(
      "%s: %d variants, %d kernels verified, %d failed (%.1f s); worst "
      "error / tolerance: encode %.2f decode %.2f prefill %.2f dequant %.2f; "
      "%d of %d decode/prefill kernels ran the fast attend entry\n",
      flavour, n, ran, failed, now() - t0, worst[0], worst[1], worst[2],
      worst[3], fast, attend);
}

/* Long contexts (many splits, several tiles per split) and multi-token
 * decode on two representative variants. */
static void verify_long(tq_backend *be, const char *flavour) {
  tq_variant v;
  tq_verify_options o = {.batch = 1, .kv_heads = 2, .context = 3000};
  for (int k = 0; k < 2; k++) {
    tq_test_long_variant(&v, k);
    if (k) {
      v.block_size = 16;
      v.dtype = TQ_BF16;
    }
    for (int op = TQ_OP_DECODE; op <= TQ_OP_PREFILL; op++) {
      tq_verify_result r;
      o.n_tokens = op == TQ_OP_DECODE ? 8 : 100;
      tq_status st = tq_verify(be, &v, (tq_op)op, &o, &r);
      CHECK(st == TQ_OK);
      if (st) {
        fprintf(stderr, "  long context: %s\n", tq_error(be));
        continue;
      }
      CHECK(r.passed);
      printf(
          "%s: long context %d, %s %d tokens (variant %d): rel_l2 %.3g (tol "
          "%.1g)\n",
          flavour, o.context, tqg_op_name((tq_op)op), o.n_tokens, k, r.rel_l2,
          r.tolerance);
    }
  }
}

/* The fast attend entry where the device runs it (lavapipe: subgroups of 8
 * with AVX2, of 4 without, a size the entry does not serve): decode at 20K
 * tokens with 1 and 8 query tokens on 16-token pages (head_dim 128, 4-bit
 * values: two index words a lane on 8-wide subgroups); the shapes whose
 * lanes take several tokens per value step (head_dim 64 and 32 with 2-bit
 * values), 2-bit keys, pages of 4 tokens (several pages a chunk) and of
 * 64, group 3 (a row of the tile empty), contiguous f32 and bf16; then
 * TQ_WGSL_FAST=0, which must say it ran the fallback.  Every path is
 * checked, so a fallback never passes for the fast entry. */
static void fast_path(tq_backend *be) {
  tq_variant v;
  tqg_variant_default(&v);
  v.group = 4;
  v.layout = TQ_PAGED;
  v.block_size = 16;
  CHECK(tqg_wgsl_fast(&v));
  tq_kernel *k = NULL;
  CHECK(tq_get_kernel(be, &v, TQ_OP_DECODE, &k) == TQ_OK);
  const char *path = k ? tq_kernel_path(k) : NULL;
  CHECK(path != NULL);
  char want[96];
  snprintf(want, sizeof want, "%s", path ? path : "?");
  int on = !strncmp(want, "fast attend, subgroups of ", 26);
  printf("fast attend entry: %s\n", on ? want : "NOT RUN on this device");
  if (!on) printf("  (%s)\n", want);
  fast_check_decode(be, &v, want, 20000);
  static const int shapes[][7] = {
      /* d, g, kb, vb, block (0: contiguous), dtype, n_tokens */
      {64, 4, 2, 2, 8, TQ_F16, 1},   {32, 8, 4, 2, 32, TQ_F16, 3},
      {64, 3, 4, 4, 64, TQ_F32, 1},  {128, 4, 2, 2, 4, TQ_F16, 2},
      {128, 2, 4, 4, 0, TQ_BF16, 5}, {64, 4, 4, 2, 0, TQ_F32, 1}};
  for (int i = 0; i < 6; i++) {
    tq_variant x;
    tqg_variant_default(&x);
    x.head_dim = shapes[i][0];
    x.group = shapes[i][1];
    x.key_bits = shapes[i][2];
    x.value_bits = shapes[i][3];
    x.layout = shapes[i][4] ? TQ_PAGED : TQ_CONTIGUOUS;
    x.block_size = shapes[i][4] ? shapes[i][4] : x.block_size;
    x.dtype = (tq_dtype)shapes[i][5];
    CHECK(tqg_wgsl_fast(&x));
    char name[160];
    tqg_variant_name(&x, name, sizeof name);
    for (int op = TQ_OP_DECODE; op <= TQ_OP_PREFILL; op++) {
      /* Decode at 12K: 64 splits of 192 tokens, so on subgroups of 8 to 32
       * a worker takes several chunks (the rescaling between them runs). */
      tq_verify_options o = {
          .batch = 1,
          .kv_heads = 2,
          .context = op == TQ_OP_DECODE ? 12000 : 1000,
          .n_tokens = op == TQ_OP_DECODE ? shapes[i][6] : 40};
      tq_verify_result r;
      tq_status st = tq_verify(be, &x, (tq_op)op, &o, &r);
      CHECK(st == TQ_OK && r.passed);
      CHECK(!st && r.path && !strcmp(r.path, want));
      printf("fast %s %s: rel_l2 %.3g (tolerance %.1g) [%s]\n", name,
             tqg_op_name((tq_op)op), st ? -1.0 : r.rel_l2, r.tolerance,
             !st && r.path ? r.path : "?");
    }
  }
  /* Off by request: the attend entry with subgroups runs, and says so. */
  tq_backend *off = fast_check_off("wgsl", "TQ_WGSL_FAST", &v);
  if (off) tq_close(off);
}

/* Bytes of one sequence of the widest buffer a launch binds by sequence:
 * its plan in one part, divided by the batch. */
static uint64_t widest_sequence(const tq_variant *v, tq_op op,
                                const tq_kargs *a) {
  tq_wgsl_part p;
  char err[512];
  uint64_t w = 0;
  if (tq_wgsl_plan(v, op, a, 0, UINT64_MAX, 0, &p, err, sizeof err)) {
    fprintf(stderr, "  plan: %s\n", err);
    return 0;
  }
  for (int b = 0; b < TQG_WB_COUNT; b++)
    if (p.size[b] / (uint64_t)a->batch > w) w = p.size[b] / (uint64_t)a->batch;
  return w;
}

/* Parts of a launch under a binding limit (0 when the plan fails), and
 * the largest seq0 of any. */
static int count_parts(const tq_variant *v, tq_op op, const tq_kargs *a,
                       uint64_t limit, int *most_lead) {
  tq_wgsl_part p;
  char err[512];
  int n = 0;
  *most_lead = 0;
  for (int first = 0; first < a->batch; first += (int)p.params.batch, n++) {
    if (tq_wgsl_plan(v, op, a, 0, limit, first, &p, err, sizeof err)) {
      fprintf(stderr, "  plan: %s\n", err);
      return 0;
    }
    for (int b = 0; b < TQG_WB_COUNT; b++)
      if ((int)p.params.seq0[b] > *most_lead)
        *most_lead = (int)p.params.seq0[b];
  }
  return n;
}

/* A backend whose largest storage binding is `limit` bytes. */
static tq_status open_limited(uint64_t limit, tq_backend **be, char *err,
                              size_t errn) {
  char text[32];
  snprintf(text, sizeof text, "%llu", (unsigned long long)limit);
  setenv("TQ_WGSL_MAX_BINDING", text, 1);
  tq_status st = tq_open("wgsl", be, err, errn);
  unsetenv("TQ_WGSL_MAX_BINDING");
  return st;
}

/* Launches too large for one storage binding run in parts: sub-batches
 * that bind windows of the buffers indexed by sequence.  Every op of two
 * contiguous variants (the fast attend entry's shape; 32 outlier channels
 * with bf16 activations) runs with TQ_WGSL_MAX_BINDING at two sequences of
 * its widest such buffer, so its 12 sequences take at least 3 parts and
 * neither cache fits one binding.
 * tq_verify's capacity, context + 3, makes the caches' strides miss
 * multiples of 256, so windows start before their first sequence and the
 * kernels add a non-zero seq0; the path must be the one the unlimited
 * backend runs (the fast entry where the device has it).  Then the errors:
 * one sequence past the limit, a paged cache's pool past it (bound whole),
 * a limit that is not a number. */
static void parts(tq_backend *be, const char *flavour) {
  enum { B = 12, H = 2, CTX = 1000 };
  char err[1024];
  for (int k = 0; k < 2; k++) {
    tq_variant v;
    tq_test_long_variant(&v, k);
    if (k) {
      v.layout = TQ_CONTIGUOUS;
      v.dtype = TQ_BF16;
    }
    tqg_variant_normalize(&v);
    char name[160];
    tqg_variant_name(&v, name, sizeof name);
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      /* tq_verify's shapes: dequant takes n_tokens from the last sequence,
       * whose length is the context less 5 a sequence. */
      int n = op == TQ_OP_ENCODE ? 16 : op == TQ_OP_DECODE ? 2 : 19;
      tq_verify_options o = {
          .batch = B, .kv_heads = H, .context = CTX, .n_tokens = n};
      tq_kargs a = {.batch = B,
                    .kv_heads = H,
                    .n_tokens = op == TQ_OP_DEQUANT ? CTX - 5 * (B - 1) : n,
                    .capacity = CTX + 3};
      uint64_t limit = 2 * widest_sequence(&v, (tq_op)op, &a) + 256;
      size_t slot = tq_key_slot_bytes(&v) < tq_value_slot_bytes(&v)
                        ? tq_key_slot_bytes(&v)
                        : tq_value_slot_bytes(&v);
      uint64_t cache = (uint64_t)B * H * a.capacity * slot; /* the smaller */
      int lead = 0, count = count_parts(&v, (tq_op)op, &a, limit, &lead);
      CHECK(count >= 3);
      CHECK(cache > limit);
      CHECK(lead > 0);
      tq_kernel *kern = NULL;
      CHECK(tq_get_kernel(be, &v, (tq_op)op, &kern) == TQ_OK);
      const char *want = kern ? tq_kernel_path(kern) : NULL;
      tq_backend *lim;
      tq_status st = open_limited(limit, &lim, err, sizeof err);
      CHECK(st == TQ_OK);
      if (st) {
        fprintf(stderr, "  %s\n", err);
        continue;
      }
      tq_verify_result r;
      st = tq_verify(lim, &v, (tq_op)op, &o, &r);
      CHECK(st == TQ_OK && r.passed);
      if (st)
        fprintf(stderr, "  %s %s: %s\n", name, tqg_op_name((tq_op)op),
                tq_error(lim));
      CHECK(!st &&
            (want == r.path || (want && r.path && !strcmp(want, r.path))));
      double e = op == TQ_OP_ENCODE ? r.index_mismatch : r.rel_l2;
      printf(
          "%s: %s %s in %d parts (binding limit %llu bytes, caches %llu): "
          "%.3g (tolerance %.1g) [%s]\n",
          flavour, name, tqg_op_name((tq_op)op), count,
          (unsigned long long)limit, (unsigned long long)cache, st ? -1.0 : e,
          r.tolerance, !st && r.path ? r.path : "-");
      tq_close(lim);
    }
  }

  /* One sequence past the limit: its cache cannot be split. */
  tq_variant v;
  tq_test_long_variant(&v, 0);
  uint64_t seq = (uint64_t)H * (CTX + 3) * tq_key_slot_bytes(&v);
  tq_verify_options o = {
      .batch = B, .kv_heads = H, .context = CTX, .n_tokens = 1};
  tq_verify_result r;
  tq_backend *lim;
  char want[160];
  tq_status st = open_limited(seq - 4, &lim, err, sizeof err);
  CHECK(st == TQ_OK);
  if (!st) {
    st = tq_verify(lim, &v, TQ_OP_DECODE, &o, &r);
    CHECK(st == TQ_ERR_INVALID);
    snprintf(want, sizeof want, "k_cache: one sequence takes %llu bytes",
             (unsigned long long)seq);
    CHECK_CONTAINS(tq_error(lim), want);
    snprintf(want, sizeof want, "largest storage binding (%llu bytes)",
             (unsigned long long)(seq - 4));
    CHECK_CONTAINS(tq_error(lim), want);
    printf("%s: one sequence past the limit: %s\n", flavour, tq_error(lim));
    tq_close(lim);
  }
  /* A paged pool past the limit: bound whole, so an error too.  Pool as
   * tq_verify makes it: the pages of the capacity for each sequence, and
   * a spare. */
  tq_test_long_variant(&v, 1);
  int pages = (CTX + 3 + v.block_size - 1) / v.block_size;
  uint64_t pool =
      (uint64_t)(B * pages + 1) * H * v.block_size * tq_key_slot_bytes(&v);
  st = open_limited(pool / 2, &lim, err, sizeof err);
  CHECK(st == TQ_OK);
  if (!st) {
    st = tq_verify(lim, &v, TQ_OP_DECODE, &o, &r);
    CHECK(st == TQ_ERR_INVALID);
    snprintf(
        want, sizeof want,
        "(k_cache) is a buffer of %llu bytes, past this device's largest "
        "storage binding (%llu bytes); a paged cache's pool is bound whole",
        (unsigned long long)pool, (unsigned long long)(pool / 2));
    CHECK_CONTAINS(tq_error(lim), want);
    printf("%s: paged pool past the limit: %s\n", flavour, tq_error(lim));
    tq_close(lim);
  }
  setenv("TQ_WGSL_MAX_BINDING", "12k", 1);
  st = tq_open("wgsl", &lim, err, sizeof err);
  unsetenv("TQ_WGSL_MAX_BINDING");
  CHECK(st == TQ_ERR_INVALID);
  if (!st) tq_close(lim);
  CHECK_CONTAINS(err, "TQ_WGSL_MAX_BINDING='12k': expected a byte count");
}

/* The launch that motivated parts, planned for an H100 (no device
 * needed): decode at batch 32, 131072 tokens, 8 kv heads, head_dim 128,
 * K4/V4 has caches of 32 x 71303168 bytes, past the 2147483644-byte
 * largest binding; it runs as two parts of 16 sequences whose cache
 * windows start at sequence 16's first byte (a multiple of 256: seq0 0). */
static void h100_plan(void) {
  tq_variant v;
  tq_test_long_variant(&v, 0);
  tq_kargs a = {.batch = 32, .kv_heads = 8, .n_tokens = 1, .capacity = 131072};
  uint64_t seq = (uint64_t)8 * 131072 * tq_key_slot_bytes(&v),
           limit = 2147483644;
  CHECK(seq == 71303168 && 32 * seq > limit);
  tq_wgsl_part p;
  char err[512];
  int parts = 0;
  for (int first = 0; first < a.batch; first += (int)p.params.batch, parts++) {
    tq_status st = tq_wgsl_plan(&v, TQ_OP_DECODE, &a, 1, limit, first, &p, err,
                                sizeof err);
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "  %s\n", err);
      return;
    }
    CHECK(p.first == 16 * parts && p.params.batch == 16);
    CHECK(p.offset[TQG_WB_K_CACHE] == (uint64_t)first * seq);
    CHECK(p.size[TQG_WB_K_CACHE] == 16 * seq &&
          p.size[TQG_WB_K_CACHE] <= limit);
    CHECK(p.params.seq0[TQG_WB_K_CACHE] == 0 && p.params.splits == 9);
    CHECK(p.steps[0].stage == TQG_WGSL_FAST_STAGE && p.steps[0].grid[2] == 16);
  }
  CHECK(parts == 2);
  printf(
      "H100 plan, decode B = 32, 128K: %d parts of %u sequences, %llu-byte "
      "cache windows\n",
      parts, p.params.batch, (unsigned long long)p.size[TQG_WB_K_CACHE]);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_wgsl SOURCE_DIR REQUIRE\n");
    return 2;
  }
  int require = atoi(argv[2]), subset = argc > 3 && atoi(argv[3]);
  static tqg_spec specs[3];
  static const tq_variant *variants[MAX_VARIANTS];
  int n_specs = 0;
  int last = 0;
  int n = load_variants(argv[1], specs, &n_specs, variants, &last);
  CHECK(n > 0);

  char err[1024];
  tq_wgsl_validator *val = NULL;
  tq_status st = tq_wgsl_validator_open(&val, err, sizeof err);
  check_emit(st ? NULL : val, variants, n);
  h100_plan();
  if (st) {
    printf("WebGPU unavailable: %s\n", err);
    CHECK(!require);
    for (int i = 0; i < n_specs; i++) tqg_spec_free(&specs[i]);
    return check_failures ? check_report("test_wgsl") : 77;
  }
  check_error(val);
  tq_wgsl_validator_close(val);

  for (int f = 0; f < TQG_WGSL_FLAVOURS; f++) {
    const char *flavour = tqg_wgsl_flavour_name((tqg_wgsl_flavour)f);
    setenv("TQ_WGSL_FLAVOUR", flavour, 1);
    tq_backend *be;
    st = tq_open("wgsl", &be, err, sizeof err);
    if (st && f == TQG_WGSL_F16SG && st == TQ_ERR_UNAVAILABLE) {
      /* Said plainly: this flavour was compiled above but not run. */
      printf(
          "f16sg flavour NOT EXECUTED on this adapter (%s): compiled and "
          "validated only; its execution is checked on the GPU "
          "(bench/gpu.sh)\n",
          err);
      continue;
    }
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "tq_open(wgsl) with flavour %s: %s\n", flavour, err);
      continue;
    }
    if (subset) /* smollm2's variants: the last spec loaded */
      verify_all(be, flavour, variants + last, n - last);
    else
      verify_all(be, flavour, variants, n);
    verify_long(be, flavour);
    if (f == TQG_WGSL_F16SG) fast_path(be);
    parts(be, flavour);
    tq_close(be);
  }
  unsetenv("TQ_WGSL_FLAVOUR");
  for (int i = 0; i < n_specs; i++) tqg_spec_free(&specs[i]);
  return check_report("test_wgsl");
}
