/* test_paper.c - the claims of the TurboQuant paper (arXiv 2504.19874),
 * checked on the CPU reference encoder and decoder:
 *   a. TurboQuant_mse distortion of unit vectors per bit width: the
 *      Lloyd-Max values, the paper's printed table, its upper bound
 *      sqrt(3) pi / 2 * 4^-b and lower bound 4^-b, about 4x per added bit;
 *   b. TurboQuant_prod (MSE at b-1 bits + 1-bit QJL of the residual): an
 *      unbiased inner product whose variance meets the QJL lemma and the
 *      Theorem 2 bound, while the MSE-only estimator is measurably shrunk;
 *   c. bytes per token and bits per coordinate of the slot layout.
 * Every random input is fresh (tqg_rng, fixed seeds: the run is
 * deterministic) and no vector is zero.  Tolerances are derived from the
 * standard errors the test measures, as each comment says. */
#include <stdlib.h>

#include "check.h"
#include "ref/ref.h"

#define PI 3.14159265358979323846

/* Lloyd-Max MSE of N(0,1) at 1..4 bits (Max 1960, 4 significant digits). */
static const double lloyd_max_mse[4] = {0.3634, 0.1175, 0.03455, 0.009501};
/* The paper's Theorem 1 table, "D_mse ~ 0.36, 0.117, 0.03, 0.009", and the
 * number of decimals each value is printed with. */
static const double paper_mse[4] = {0.36, 0.117, 0.03, 0.009};
static const int paper_decimals[4] = {2, 3, 2, 3};

static tq_variant key_variant(int d, int key_bits, int qjl, uint64_t seed) {
  tq_variant v;
  tqg_variant_default(&v);
  v.head_dim = d;
  v.key_bits = key_bits;
  v.value_bits = 1; /* unused here; the cheapest codebook to build */
  v.qjl = qjl;
  v.outlier_count = 0;
  v.norm_correction = 0;
  v.seed = seed;
  return v;
}

/* A uniformly random unit vector (normalized Gaussian; redrawn if its norm
 * is zero, which has probability zero but must not divide by zero). */
static void random_unit(tqg_rng *rng, int d, double *x) {
  double n2 = 0;
  while (n2 == 0) {
    n2 = 0;
    for (int j = 0; j < d; j++) {
      x[j] = tqg_rng_normal(rng);
      n2 += x[j] * x[j];
    }
  }
  double inv = 1 / sqrt(n2);
  for (int j = 0; j < d; j++) x[j] *= inv;
}

static double dot(const double *a, const double *b, int d) {
  double s = 0;
  for (int j = 0; j < d; j++) s += a[j] * b[j];
  return s;
}

static double round_to(double x, int decimals) {
  double p = pow(10, decimals);
  return floor(x * p + 0.5) / p;
}

/* ---- a. MSE distortion ------------------------------------------------- */
/* Sample size: the distortion of one unit vector is the mean of d squared
 * coordinate errors, so its spread is small: measured relative standard
 * deviations run from 0.06 (b=1, d=256) to 0.27 (b=4, d=64).  With 4000
 * vectors the standard error of the mean is <= 0.27 / sqrt(4000) = 0.43%
 * of the mean, more than ten times below the 5% band; the test asserts the
 * measured standard error is below 1% so the band is >= 5 standard errors
 * wide whatever the case. */
#define MSE_VECTORS 4000

static void test_mse_distortion(void) {
  static const int dims[3] = {64, 128, 256};
  printf(
      "a. TurboQuant_mse distortion E|x - x^|^2 of unit vectors "
      "(%d per case)\n",
      MSE_VECTORS);
  printf("   %4s %2s %10s %9s %10s %11s %9s %9s\n", "d", "b", "measured",
         "std.err", "Lloyd-Max", "paper/ours", "4^-b", "upper");
  for (int di = 0; di < 3; di++) {
    int d = dims[di];
    double dist[5] = {0};
    for (int b = 1; b <= 4; b++) {
      tq_variant v = key_variant(d, b, 0, TQ_DEFAULT_SEED);
      tq_ref r;
      CHECK(tq_ref_init(&r, &v) == TQ_OK);
      tqg_rng rng;
      tqg_rng_seed(&rng, 0xD157u * 1000 + (uint64_t)d * 10 + (uint64_t)b);
      double x[TQ_MAX_HEAD_DIM], xh[TQ_MAX_HEAD_DIM], sum = 0, sum2 = 0;
      uint8_t slot[4 * TQ_MAX_HEAD_DIM];
      for (int n = 0; n < MSE_VECTORS; n++) {
        random_unit(&rng, d, x);
        tq_ref_encode_key(&r, x, NULL, slot);
        tq_ref_decode_key(&r, slot, NULL, xh);
        double e = 0;
        for (int j = 0; j < d; j++) e += (x[j] - xh[j]) * (x[j] - xh[j]);
        sum += e;
        sum2 += e * e;
      }
      double mean = sum / MSE_VECTORS;
      double se = sqrt((sum2 / MSE_VECTORS - mean * mean) / (MSE_VECTORS - 1));
      double lm = lloyd_max_mse[b - 1], upper = sqrt(3) * PI / 2 * pow(4, -b);
      dist[b] = mean;
      /* The sample is large enough for the 5% band (see above). */
      CHECK(se < 0.01 * mean);
      /* Within 5% of Lloyd-Max for N(0,1), both the published value and
       * the codebook's own: a rotated unit vector's coordinates times
       * sqrt(d) follow a Beta law that tends to N(0,1), with O(1/d)
       * differences (lighter tails) well inside 5% from d = 64 on. */
      CHECK_NEAR(mean / lm, 1.0, 0.05);
      CHECK_NEAR(mean / r.t.key_cb.mse, 1.0, 0.05);
      /* The paper's table is the large-d (Gaussian) value, printed with
       * 2 or 3 decimals.  Its 0.009 is 0.009501 truncated, so the
       * Gaussian limit agrees to within one unit of the last printed
       * place.  The measured value rounds to the printed number at
       * d = 256; at d = 64 and 128 the lighter Beta tails put b = 2 at
       * 0.115 and 0.116 (1-2% under 0.1175, many standard errors), a
       * finite-d effect the 5% band above covers, so those are printed,
       * not asserted. */
      double unit = pow(10, -paper_decimals[b - 1]);
      CHECK(fabs(r.t.key_cb.mse - paper_mse[b - 1]) < unit);
      if (d == 256)
        CHECK_NEAR(round_to(mean, paper_decimals[b - 1]), paper_mse[b - 1],
                   1e-12);
      /* Theorem 1: upper bound; Theorem 3: no quantizer beats 4^-b. */
      CHECK(mean < upper);
      CHECK(mean > pow(4, -b));
      printf("   %4d %2d %10.6f %9.2e %10.6f %5.*f/%.*f %9.6f %9.6f", d, b,
             mean, se, r.t.key_cb.mse, paper_decimals[b - 1], paper_mse[b - 1],
             paper_decimals[b - 1], round_to(mean, paper_decimals[b - 1]),
             pow(4, -b), upper);
      if (b > 1) {
        /* "About 4x per added bit": Lloyd-Max gives 3.09, 3.40, 3.64. */
        double ratio = dist[b - 1] / dist[b];
        CHECK(ratio > 3.0 && ratio < 4.5);
        printf("   D(%d)/D(%d) = %.3f", b - 1, b, ratio);
      }
      printf("\n");
      tq_ref_free(&r);
    }
  }
}

/* ---- b. inner products: QJL unbiased, MSE-only shrunk ------------------ */
/* 100 seeds (each a fresh rotation and QJL matrix S) x 100 pairs = 10^4
 * pairs per case.  x: random unit key; y: N(0, I_d) query, so the true
 * <x, y> ~ N(0, 1) and |y|^2 ~ d. */
#define QJL_SEEDS 100
#define QJL_PAIRS 100

typedef struct moments {
  double n, sum, sum2;
} moments;

static void add(moments *m, double x) {
  m->n += 1;
  m->sum += x;
  m->sum2 += x * x;
}

static double mean_of(const moments *m) {
  return m->sum / m->n;
}

static double se_of(const moments *m) {
  double mu = mean_of(m);
  return sqrt(fmax(m->sum2 / m->n - mu * mu, 0) / (m->n - 1));
}

/* Least squares through the origin of est on true, with a standard error
 * robust to the noise growing with |true| (sandwich estimator). */
typedef struct fit {
  double st2, set, se2;    /* sum true^2, sum est*true, sum est^2 */
  double st4, set3, se2t2; /* for the sandwich: sums of t^4, e t^3, e^2 t^2 */
} fit;

static void fit_add(fit *f, double t, double e) {
  f->st2 += t * t;
  f->set += e * t;
  f->se2 += e * e;
  f->st4 += t * t * t * t;
  f->set3 += e * t * t * t;
  f->se2t2 += e * e * t * t;
}

static double slope_of(const fit *f) {
  return f->set / f->st2;
}

static double slope_se(const fit *f) {
  /* sum (e - s t)^2 t^2 = sum e^2 t^2 - 2 s sum e t^3 + s^2 sum t^4 */
  double s = slope_of(f);
  double rss = f->se2t2 - 2 * s * f->set3 + s * s * f->st4;
  return sqrt(fmax(rss, 0)) / f->st2;
}

static void test_inner_product(void) {
  static const int dims[2] = {64, 128};
  printf(
      "b. inner products <x, y>, x unit, y ~ N(0, I): %d seeds x %d pairs "
      "per case\n",
      QJL_SEEDS, QJL_PAIRS);
  for (int di = 0; di < 2; di++)
    for (int b = 2; b <= 3; b++) {
      int d = dims[di];
      moments err = {0}, dir = {0}, lemma = {0}, thm2 = {0};
      moments mse_dir = {0};
      fit qjl_fit = {0}, mse_fit = {0};
      double d_prev = 0; /* Lloyd-Max MSE at b - 1 bits */
      tqg_rng rng;
      tqg_rng_seed(&rng, 0x91Cu * 1000 + (uint64_t)d * 10 + (uint64_t)b);
      for (int s = 0; s < QJL_SEEDS; s++) {
        uint64_t seed = 0x5EED0000u + (uint64_t)s * 7919u;
        tq_variant vq = key_variant(d, b, 1, seed);
        tq_variant vm = key_variant(d, b - 1, 0, seed);
        tq_ref rq, rm;
        CHECK(tq_ref_init(&rq, &vq) == TQ_OK);
        CHECK(tq_ref_init(&rm, &vm) == TQ_OK);
        d_prev = rm.t.key_cb.mse;
        for (int p = 0; p < QJL_PAIRS; p++) {
          double x[TQ_MAX_HEAD_DIM], y[TQ_MAX_HEAD_DIM];
          uint8_t kq[4 * TQ_MAX_HEAD_DIM], km[4 * TQ_MAX_HEAD_DIM];
          random_unit(&rng, d, x);
          for (int j = 0; j < d; j++) y[j] = tqg_rng_normal(&rng);
          double truth = dot(x, y, d), y2 = dot(y, y, d);
          static tq_ref_query qq, qm; /* large: keep them off the stack */
          tq_ref_prepare_query(&rq, y, NULL, &qq);
          tq_ref_prepare_query(&rm, y, NULL, &qm);
          tq_ref_encode_key(&rq, x, NULL, kq);
          tq_ref_encode_key(&rm, x, NULL, km);
          double est = tq_ref_score(&rq, &qq, kq);
          double est_m = tq_ref_score(&rm, &qm, km);
          float rnorm;
          memcpy(&rnorm, kq + rq.key.rnorm_offset, sizeof rnorm);
          double e = est - truth, sgn = truth >= 0 ? 1 : -1;
          add(&err, e);
          add(&dir, e * sgn);
          add(&mse_dir, (est_m - truth) * sgn);
          /* QJL lemma: Var(est | r) <= pi / (2d) |y|^2 |r|^2. */
          add(&lemma, e * e / (PI / (2 * d) * y2 * (double)rnorm * rnorm));
          /* Theorem 2: E err^2 <= sqrt(3) pi^2 |y|^2 / d * 4^-b. */
          add(&thm2, e * e / (sqrt(3) * PI * PI * y2 / d * pow(4, -b)));
          fit_add(&qjl_fit, truth, est);
          fit_add(&mse_fit, truth, est_m);
        }
        tq_ref_free(&rq);
        tq_ref_free(&rm);
      }
      double sq = slope_of(&qjl_fit), sm = slope_of(&mse_fit);
      printf(
          "   d=%d b=%d  QJL (%d+1 bits): mean err %+.4f (se %.4f), "
          "mean err*sign(true) %+.4f (se %.4f), slope %.4f (se %.4f)\n",
          d, b, b - 1, mean_of(&err), se_of(&err), mean_of(&dir), se_of(&dir),
          sq, slope_se(&qjl_fit));
      printf(
          "              err^2 / lemma bound %.4f (se %.4f), "
          "err^2 / Theorem 2 bound %.4f (se %.4f)\n",
          mean_of(&lemma), se_of(&lemma), mean_of(&thm2), se_of(&thm2));
      printf(
          "              MSE only (%d bits): mean err*sign(true) %+.4f "
          "(se %.4f), slope %.4f (se %.4f), 1 - D(%d) = %.4f\n",
          b - 1, mean_of(&mse_dir), se_of(&mse_dir), sm, slope_se(&mse_fit),
          b - 1, 1 - d_prev);
      /* Unbiased: E[est | x, y] = <x, y> over S.  The plain mean error is
       * zero for any estimator symmetric in y, so the test that bites is
       * the error in the direction of the true value, err * sign(true),
       * whose mean is (slope - 1) E|true| for a multiplicative bias.  Both
       * within 3 standard errors of zero. */
      CHECK(fabs(mean_of(&err)) <= 3 * se_of(&err));
      CHECK(fabs(mean_of(&dir)) <= 3 * se_of(&dir));
      /* Slope of est against true: 1 for an unbiased estimator.  Its
       * standard error is sqrt(Var err / 10^4) ~ sqrt(pi/2 D(b-1) / 10^4):
       * 0.0076 at b = 2, 0.0043 at b = 3, so the 0.97..1.03 band is >= 4
       * standard errors wide. */
      CHECK(sq > 0.97 && sq < 1.03);
      CHECK(3 * slope_se(&qjl_fit) < 0.03);
      /* The lemma's bound holds in expectation: the exact variance is
       * (pi/2 |y|^2 |r|^2 - <r, y>^2) / d, so the mean ratio is
       * 1 - (2/pi) E cos^2(r, y) ~ 1 - 0.64 / d: at most 1 + 3 se. */
      CHECK(mean_of(&lemma) <= 1 + 3 * se_of(&lemma));
      /* And it is nearly tight (>= 0.9): an estimator with a wrong
       * constant or a dropped |r| would miss by far more. */
      CHECK(mean_of(&lemma) >= 0.9);
      /* Theorem 2: E err^2 = pi/2 D(b-1) |y|^2 / d is below the bound;
       * measured ratios are 0.53 (b=2) and 0.69 (b=3). */
      CHECK(mean_of(&thm2) <= 1 + 3 * se_of(&thm2));
      /* The MSE-only estimator is biased: <y, x^> has slope E<x, x^> =
       * E[Q(X) X] = 1 - D(b-1) for the Lloyd-Max centroid condition (the
       * paper's 2/pi = 0.637 at 1 bit; 0.882 at 2 bits).  The finite-d
       * Beta law moves it by O(1/d) (measured +0.007 at d = 64, +0.006
       * at d = 128, 0.004 at 2 bits); the slope's standard error is
       * <= 0.005, so +-0.02 holds it with margin and
       * 0.97 separates it from the QJL slope by > 10 standard errors. */
      CHECK_NEAR(sm, 1 - d_prev, 0.02);
      CHECK(sm < 0.97);
      CHECK(mean_of(&mse_dir) < -5 * se_of(&mse_dir));
    }
}

/* ---- c. bytes per token ------------------------------------------------ */
/* Layout (gen/core/variant.c, docs/FORMAT.md): a quantized part is its
 * packed indices padded to 4 bytes then an f32 scale; a raw f16 part is
 * 2 bytes per channel padded to 4; a QJL key adds sign bits of the main
 * dim padded to 4 and an f32 |r|.  Key and value slots both count. */
static void test_bytes(void) {
  tq_variant v;
  printf("c. bytes per token per kv head (K + V) and bits per coordinate\n");
  /* d128 K4 V4: 128 * 4 / 8 = 64 index bytes + 4 scale = 68, twice. */
  tqg_variant_default(&v);
  v.head_dim = 128;
  v.key_bits = v.value_bits = 4;
  CHECK(tqg_bytes_per_token(&v) == 136);
  CHECK_NEAR(tqg_bits_per_coord(&v), 4.25, 1e-12); /* 136 * 8 / 256 */
  printf(
      "   d128 k4v4: %d bytes, %.4f bits/coord (fp16 K+V: 512 bytes, "
      "%.2fx smaller)\n",
      tqg_bytes_per_token(&v), tqg_bits_per_coord(&v),
      512.0 / tqg_bytes_per_token(&v));
  /* d128 K3 V3, 32 outlier channels at 4 bits: main 96 * 3 / 8 = 36 + 4;
   * outliers 32 * 4 / 8 = 16 + 4; per slot 60, K + V 120; 3.75 bits. */
  v.key_bits = v.value_bits = 3;
  v.outlier_count = 32;
  v.outlier_bits = 4;
  CHECK(tqg_bytes_per_token(&v) == 2 * ((36 + 4) + (16 + 4)));
  CHECK_NEAR(tqg_bits_per_coord(&v), 120 * 8 / 256.0, 1e-12);
  printf("   d128 k3v3 o32b4: %d bytes, %.4f bits/coord\n",
         tqg_bytes_per_token(&v), tqg_bits_per_coord(&v));
  /* Same with raw f16 outliers: 32 * 2 = 64 bytes, no scale. */
  v.outlier_bits = TQ_OUTLIER_F16;
  CHECK(tqg_bytes_per_token(&v) == 2 * ((36 + 4) + 64));
  /* QJL key at 4 bits: 3-bit MSE 48 + 4, signs 16, |r| 4 = 72; V4 68. */
  tqg_variant_default(&v);
  v.key_bits = v.value_bits = 4;
  v.qjl = 1;
  CHECK(tqg_bytes_per_token(&v) == (48 + 4 + 16 + 4) + (64 + 4));
  /* Padding: d80 at 3 bits packs 240 bits = 30 bytes, padded to 32. */
  tqg_variant_default(&v);
  v.head_dim = 80;
  v.key_bits = v.value_bits = 3;
  CHECK(tqg_bytes_per_token(&v) == 2 * (32 + 4));
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  test_mse_distortion();
  test_inner_product();
  test_bytes();
  return check_report("test_paper");
}
