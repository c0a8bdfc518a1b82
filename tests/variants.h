/* variants.h - variants several test programs share. */
#ifndef TQ_TEST_VARIANTS_H
#define TQ_TEST_VARIANTS_H

#include "core.h"

/* The two variants of the long-context checks: which 0 is the default
 * K4/V4 at group 4; which 1 is K3/V3 with 32 outlier channels at 4 bits in
 * a paged cache, the other code paths of every backend. */
static inline void tq_test_long_variant(tq_variant *v, int which) {
  tqg_variant_default(v);
  v->group = 4;
  if (which) {
    v->key_bits = 3;
    v->value_bits = 3;
    v->outlier_count = 32;
    v->outlier_bits = 4;
    v->layout = TQ_PAGED;
  }
}

#endif
