/* fast_checks.h - the checks the Vulkan and WGSL tests share for a
 * backend's fast attend path: decode through it against the CPU reference,
 * and the fallback when an environment variable turns it off.  Both name
 * the path that ran (tq_verify_result.path), so a fallback can never pass
 * for the fast path. */
#ifndef TQ_TEST_FAST_CHECKS_H
#define TQ_TEST_FAST_CHECKS_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "tq.h"

static inline double fast_checks_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Decode of v at the given context with 1 and then 8 query tokens (two
 * sequences, two kv heads): each must pass, and where want is not NULL,
 * report want as its path. */
static inline void fast_check_decode(tq_backend *be, const tq_variant *v, const char *want,
                                     int context) {
  for (int q = 1; q <= 8; q += 7) {
    tq_verify_options o = {.batch = 2, .kv_heads = 2, .n_tokens = q, .context = context};
    tq_verify_result r;
    double t0 = fast_checks_now();
    tq_status st = tq_verify(be, v, TQ_OP_DECODE, &o, &r);
    CHECK(st == TQ_OK && r.passed);
    if (want) CHECK(!st && r.path && !strcmp(r.path, want));
    printf("fast decode, context %d, q_len %d: rel_l2 %.3g (tolerance %.1g) [%s], %.1f s\n",
           o.context, q, st ? -1.0 : r.rel_l2, r.tolerance, !st && r.path ? r.path : "?",
           fast_checks_now() - t0);
  }
}

/* The backend opened with env=0 (TQ_VULKAN_FAST, TQ_WGSL_FAST) must run
 * v's decode on its fallback, say so, and pass.  Returns that backend (the
 * caller may check more on it and closes it), or NULL after a failed
 * check. */
static inline tq_backend *fast_check_off(const char *backend, const char *env,
                                         const tq_variant *v) {
  char err[1024];
  tq_backend *off;
  setenv(env, "0", 1);
  tq_status st = tq_open(backend, &off, err, sizeof err);
  unsetenv(env);
  CHECK(st == TQ_OK);
  if (st) return NULL;
  tq_verify_options o = {.batch = 1, .kv_heads = 2, .n_tokens = 8, .context = 3000};
  tq_verify_result r;
  st = tq_verify(off, v, TQ_OP_DECODE, &o, &r);
  CHECK(st == TQ_OK && r.passed);
  CHECK(!st && r.path && !strncmp(r.path, "fallback", 8));
  printf("fast attend off (%s=0): %s [%s]\n", env, !st && r.passed ? "pass" : "FAIL",
         !st && r.path ? r.path : "?");
  return off;
}

#endif
