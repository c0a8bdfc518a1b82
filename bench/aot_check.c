/* aot_check.c - the CUDA AOT path on a GPU: every kernel of a dispatch table
 * generated with `tqgen bench/aot_check.lua --aot` must load from its fatbin
 * (origin "aot", so no NVRTC ran) and pass verification.  Built by
 * `bench/gpu.sh --build`, run by `bench/gpu.sh` on the device. */
#include <stdio.h>
#include <string.h>

#include "aot_check_dispatch.h"
#include "tq.h"

int main(void) {
  tq_backend *be;
  char err[512];
  if (tq_open("cuda", &be, err, sizeof err)) {
    fprintf(stderr, "aot_check: %s\n", err);
    return 1;
  }
  if (tq_register(be, &tq_dispatch_aot_check)) {
    fprintf(stderr, "aot_check: %s\n", tq_error(be));
    return 1;
  }
  int n = 0, bad = 0;
  for (int i = 0; i < tq_dispatch_aot_check.count; i++) {
    const tq_dispatch_entry *e = &tq_dispatch_aot_check.entries[i];
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      tq_verify_result r;
      n++;
      if (tq_verify(be, &e->variant, (tq_op)op, NULL, &r)) {
        printf("%s op %d: %s\n", e->name, op, tq_error(be));
        bad++;
      } else if (!r.passed || strcmp(r.origin, "aot")) {
        printf("%s op %d: passed %d, origin %s\n", e->name, op, r.passed, r.origin);
        bad++;
      }
    }
  }
  printf("aot_check: %d CUDA kernels from fatbins, %d problems\n", n, bad);
  tq_close(be);
  return bad != 0;
}
