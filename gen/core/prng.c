/* prng.c - a seeded, portable PRNG: xoshiro256** seeded by splitmix64.
 * Integer arithmetic only for the stream; normals use tqg_log, built from
 * + - * / so the same seed gives the same doubles on every platform. */
#include "core.h"

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tqg_rng_seed(tqg_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t tqg_rng_next(tqg_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double tqg_rng_uniform(tqg_rng *r) {
  return (double)(tqg_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t tqg_seed_derive(uint64_t seed, uint64_t tag) {
  uint64_t x = seed ^ (tag * 0xD6E8FEB86659FD93ull);
  return splitmix64(&x);
}

/* ln(x) for x > 0: x = m * 2^e with m in [1/sqrt2, sqrt2), then
 * ln(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, by its series. */
double tqg_log(double x) {
  static const double ln2 = 0.69314718055994530942;
  int e = 0;
  while (x >= 1.4142135623730951) x *= 0.5, e++;
  while (x < 0.7071067811865476) x *= 2.0, e--;
  double s = (x - 1.0) / (x + 1.0), s2 = s * s, term = s, sum = 0.0;
  for (int k = 1; k < 60; k += 2) {
    sum += term / k;
    term *= s2;
    if (term < 1e-18 && term > -1e-18) break;
  }
  return 2.0 * sum + e * ln2;
}

double tqg_rng_normal(tqg_rng *r) {
  for (;;) {
    double u = 2.0 * tqg_rng_uniform(r) - 1.0;
    double v = 2.0 * tqg_rng_uniform(r) - 1.0;
    double s = u * u + v * v;
    if (s > 0.0 && s < 1.0) {
      /* The second normal of the pair (v * f) is dropped: one call, one
       * normal, so streams never depend on call history. */
      double f = __builtin_sqrt(-2.0 * tqg_log(s) / s);
      return u * f;
    }
  }
}
