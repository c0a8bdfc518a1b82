/* A consumer of the installed package: every kernel of the generated
 * dispatch table must come from the table (AOT) and pass verification. */
#include <stdio.h>
#include <string.h>

#include "smollm2_dispatch.h"
#include "tq.h"

int main(void) {
  tq_backend *be;
  char err[512];
  if (tq_open("c", &be, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (tq_register(be, &tq_dispatch_smollm2)) {
    fprintf(stderr, "%s\n", tq_error(be));
    return 1;
  }
  int bad = 0, n = 0;
  for (int i = 0; i < tq_dispatch_smollm2.count; i++)
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      tq_verify_result r;
      const tq_dispatch_entry *e = &tq_dispatch_smollm2.entries[i];
      if (tq_verify(be, &e->variant, (tq_op)op, NULL, &r)) {
        fprintf(stderr, "%s: %s\n", e->name, tq_error(be));
        bad++;
        continue;
      }
      n++;
      if (!r.passed || strcmp(r.origin, "aot")) {
        fprintf(stderr, "%s op %d: passed %d origin %s\n", e->name, op, r.passed, r.origin);
        bad++;
      }
    }
  printf("consumer: %d AOT kernels verified, %d problems\n", n, bad);
  tq_close(be);
  return bad || n == 0;
}
