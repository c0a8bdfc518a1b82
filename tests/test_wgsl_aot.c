/* test_wgsl_aot.c - the WebGPU backend's AOT path: a dispatch table that
 * tqgen wrote at build time (tests/wgsl/aot.lua, both flavours) is
 * registered, and every op of every entry runs from it (origin "aot")
 * against the reference.  Skipped (77) without a WebGPU library or
 * adapter, unless REQUIRE is 1.
 * usage: test_wgsl_aot REQUIRE */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "emit_wgsl.h"
#include "tq.h"
#include "wgsl_aot_dispatch.h"

int main(int argc, char **argv) {
  int require = argc > 1 ? atoi(argv[1]) : 0;
  CHECK(tq_dispatch_wgsl_aot.count == 4);
  for (int f = 0; f < 2; f++) {
    const char *flavour = f ? "f16sg" : "core";
    setenv("TQ_WGSL_FLAVOUR", flavour, 1);
    tq_backend *be;
    char err[1024];
    tq_status st = tq_open("wgsl", &be, err, sizeof err);
    if (st) {
      printf("wgsl (%s) unavailable: %s\n", flavour, err);
      CHECK(!require);
      return check_failures ? check_report("test_wgsl_aot") : 77;
    }
    CHECK(tq_register(be, &tq_dispatch_wgsl_aot) == TQ_OK);
    for (int i = 0; i < tq_dispatch_wgsl_aot.count; i++) {
      const tq_dispatch_entry *e = &tq_dispatch_wgsl_aot.entries[i];
      /* 5 stages x 2 flavours, and f16sg's attend_fast where it applies */
      CHECK(e->shader_count == 10 + tqg_wgsl_fast(&e->variant));
      for (int op = 0; op < TQ_OP_COUNT; op++) {
        tq_verify_result r;
        st = tq_verify(be, &e->variant, (tq_op)op, NULL, &r);
        CHECK(st == TQ_OK);
        if (st) {
          fprintf(stderr, "%s %s: %s\n", e->name, tqg_op_name((tq_op)op),
                  tq_error(be));
          continue;
        }
        CHECK(r.passed);
        CHECK(r.origin && !strcmp(r.origin, "aot"));
        printf("%s %-6s %-8s from %s: %s (%.3g, tol %.1g)%s%s%s\n", flavour,
               e->name, tqg_op_name((tq_op)op), r.origin,
               r.passed ? "pass" : "FAIL",
               op == TQ_OP_ENCODE ? r.index_mismatch : r.rel_l2, r.tolerance,
               r.path ? " [" : "", r.path ? r.path : "", r.path ? "]" : "");
      }
    }
    tq_close(be);
  }
  return check_report("test_wgsl_aot");
}
