/* test_conformance.c - every op of every variant of every shipped spec on
 * the C backend against the reference (tq_verify: fresh random inputs,
 * poisoned outputs), plus a few long contexts.
 * usage: test_conformance SOURCE_DIR [SPEC...] */
#include <stdio.h>

#include "check.h"
#include "variants.h"
#include "core.h"
#include "spec.h"
#include "tq.h"

static int run_spec(tq_backend *be, const char *path) {
  tqg_spec spec;
  char err[1024], name[160];
  if (tqg_spec_load(path, &spec, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int kernels = 0;
  for (int i = 0; i < spec.n_variants; i++) {
    tqg_variant_name(&spec.variants[i], name, sizeof name);
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      tq_verify_result r;
      tq_status st = tq_verify(be, &spec.variants[i], (tq_op)op, NULL, &r);
      CHECK(st == TQ_OK);
      if (st) {
        fprintf(stderr, "%s %s: %s\n", name, tqg_op_name((tq_op)op), tq_error(be));
        continue;
      }
      kernels++;
      CHECK(r.passed);
      if (!r.passed)
        fprintf(stderr, "%s %s: FAIL rel_l2 %.3g idx %.3g: %s\n", name,
                tqg_op_name((tq_op)op), r.rel_l2, r.index_mismatch, r.detail);
    }
  }
  printf("%s: %d variants, %d kernels verified\n", path, spec.n_variants, kernels);
  CHECK(kernels == spec.n_variants * TQ_OP_COUNT);
  tqg_spec_free(&spec);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_conformance SOURCE_DIR\n");
    return 2;
  }
  tq_backend *be;
  char err[1024], path[1024];
  if (tq_open("c", &be, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  static const char *const specs[] = {"qwen3", "llama3", "smollm2"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/specs/%s.lua", argv[1], specs[i]);
    CHECK(run_spec(be, path) == 0);
  }
  /* Long contexts and multi-token decode on two representative variants. */
  tq_variant v;
  tq_verify_options o = {.batch = 1, .kv_heads = 2, .context = 3000, .n_tokens = 8};
  for (int k = 0; k < 2; k++) {
    tq_test_long_variant(&v, k);
    for (int op = TQ_OP_DECODE; op <= TQ_OP_PREFILL; op++) {
      tq_verify_result r;
      o.n_tokens = op == TQ_OP_DECODE ? 8 : 300;
      CHECK(tq_verify(be, &v, (tq_op)op, &o, &r) == TQ_OK);
      CHECK(r.passed);
      printf("long context %d, %s: rel_l2 %.3g\n", o.context,
             tqg_op_name((tq_op)op), r.rel_l2);
    }
  }
  tq_close(be);
  return check_report("conformance");
}
