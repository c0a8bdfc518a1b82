/* check.h - the assertions every test program uses.  A failed check prints
 * where and what, and the program exits nonzero at the end. */
#ifndef TQ_TEST_CHECK_H
#define TQ_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

/* |got - want| <= tol, printing both numbers on failure. */
#define CHECK_NEAR(got, want, tol)                                          \
  do {                                                                      \
    double g_ = (double)(got), w_ = (double)(want), t_ = (double)(tol);     \
    if (!(fabs(g_ - w_) <= t_)) {                                           \
      fprintf(stderr, "%s:%d: %s = %.10g, want %.10g +- %.3g\n", __FILE__,  \
              __LINE__, #got, g_, w_, t_);                                  \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

/* The string s contains the substring sub. */
#define CHECK_CONTAINS(s, sub)                                              \
  do {                                                                      \
    const char *s_ = (s);                                                   \
    if (!s_ || !strstr(s_, (sub))) {                                        \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,  \
              __LINE__, s_ ? s_ : "(null)", (sub));                         \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

static inline int check_report(const char *name) {
  if (check_failures)
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
  else
    printf("%s: all checks passed\n", name);
  return check_failures ? 1 : 0;
}

#endif
