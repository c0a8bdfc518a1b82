/* plan.c - prints the native WGSL launch plan (backends/wgsl_plan.c) of one
 * op as JSON, for tests/wgsl/plan.mjs to compare with the JS module's
 * plan(): the parts, each with its uniform block as 32-bit words, the
 * window of each binding and the dispatches; or {"error": message}.
 *
 * usage: wgsl_plan SPEC VARIANT OP BATCH KV_HEADS N_TOKENS CAPACITY
 *                  NUM_BLOCKS MAX_BLOCKS HAS_PERM FAST MAX_BINDING
 * FAST 1: decode and prefill run attend_fast.  sm_scale is
 * 1/sqrt(head_dim), the JS module's default. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "spec.h"
#include "wgsl_plan.h"

static void print_list(const char *key, const uint64_t *x, int n) {
  printf("\"%s\":[", key);
  for (int i = 0; i < n; i++)
    printf("%s%llu", i ? "," : "", (unsigned long long)x[i]);
  printf("]");
}

int main(int argc, char **argv) {
  if (argc != 13) {
    fprintf(stderr,
            "usage: wgsl_plan SPEC VARIANT OP BATCH KV_HEADS N_TOKENS "
            "CAPACITY NUM_BLOCKS MAX_BLOCKS HAS_PERM FAST MAX_BINDING\n");
    return 2;
  }
  char err[1024];
  tqg_spec spec;
  if (tqg_spec_load(argv[1], &spec, err, sizeof err)) {
    fprintf(stderr, "wgsl_plan: %s\n", err);
    return 1;
  }
  const tq_variant *found = NULL;
  for (int i = 0; i < spec.n_variants && !found; i++) {
    char name[160];
    tqg_variant_name(&spec.variants[i], name, sizeof name);
    if (!strcmp(name, argv[2])) found = &spec.variants[i];
  }
  tq_op op = tqg_op_parse(argv[3]);
  if (!found || op == TQ_OP_COUNT) {
    fprintf(stderr, "wgsl_plan: no variant %s or op %s in %s\n", argv[2],
            argv[3], argv[1]);
    tqg_spec_free(&spec);
    return 1;
  }
  tq_variant v = *found;
  tqg_variant_normalize(&v);
  static const uint16_t perm;
  tq_kargs a = {.batch = atoi(argv[4]),
                .kv_heads = atoi(argv[5]),
                .n_tokens = atoi(argv[6]),
                .capacity = atoi(argv[7]),
                .num_blocks = atoi(argv[8]),
                .max_blocks = atoi(argv[9]),
                .sm_scale = (float)(1.0 / sqrt(v.head_dim)),
                .channel_perm = atoi(argv[10]) ? &perm : NULL};
  int fast = atoi(argv[11]);
  uint64_t max_binding = strtoull(argv[12], NULL, 10);
  tq_wgsl_part p;
  for (int first = 0; first < a.batch; first += (int)p.params.batch)
    if (tq_wgsl_plan(&v, op, &a, fast, max_binding, first, &p, err,
                     sizeof err)) {
      printf("{\"error\":\"%s\"}\n", err); /* messages hold no quotes */
      tqg_spec_free(&spec);
      return 0;
    }
  printf("[");
  for (int first = 0; first < a.batch; first += (int)p.params.batch) {
    tq_wgsl_plan(&v, op, &a, fast, max_binding, first, &p, err, sizeof err);
    uint32_t words[sizeof p.params / 4];
    uint64_t w[sizeof p.params / 4];
    memcpy(words, &p.params, sizeof words);
    for (size_t i = 0; i < sizeof words / 4; i++) w[i] = words[i];
    printf("%s{\"first\":%d,", first ? "," : "", p.first);
    print_list("params", w, (int)(sizeof words / 4));
    printf(",");
    print_list("offset", p.offset, TQG_WB_COUNT);
    printf(",");
    print_list("size", p.size, TQG_WB_COUNT);
    printf(",\"steps\":[");
    for (int i = 0; i < p.n_steps; i++)
      printf("%s{\"stage\":\"%s\",\"grid\":[%u,%u,%u]}", i ? "," : "",
             tqg_wgsl_stage_names[p.steps[i].stage], p.steps[i].grid[0],
             p.steps[i].grid[1], p.steps[i].grid[2]);
    printf("]}");
  }
  printf("]\n");
  tqg_spec_free(&spec);
  return 0;
}
