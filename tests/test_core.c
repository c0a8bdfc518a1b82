/* test_core.c - unit tests of gen's math core: PRNG, Lloyd-Max, rotations,
 * bit packing, half precision, names and hashes, slot layouts. */
#include <stdlib.h>

#include "check.h"
#include "core.h"

static void test_prng(void) {
  tqg_rng a, b;
  tqg_rng_seed(&a, 42);
  tqg_rng_seed(&b, 42);
  for (int i = 0; i < 1000; i++) CHECK(tqg_rng_next(&a) == tqg_rng_next(&b));
  /* Pinned values: the stream is part of the format (rotations and QJL
   * matrices derive from it), so it must never change across platforms.
   * splitmix64(0) first output is the published 0xe220a8397b1dcdaf. */
  tqg_rng_seed(&a, 0);
  CHECK(a.s[0] == 0xe220a8397b1dcdafull);
  uint64_t first = tqg_rng_next(&a);
  tqg_rng_seed(&b, 1);
  CHECK(first != tqg_rng_next(&b));
  /* Uniforms in [0,1) with mean 1/2 (sd of the mean 0.29/sqrt(1e5) ~ 1e-3). */
  double sum = 0, sum2 = 0;
  tqg_rng_seed(&a, 7);
  for (int i = 0; i < 100000; i++) {
    double u = tqg_rng_uniform(&a);
    CHECK(u >= 0 && u < 1);
    sum += u;
  }
  CHECK_NEAR(sum / 1e5, 0.5, 0.005);
  /* Normals: mean 0, variance 1 (5 sigma bands for 2e5 samples). */
  sum = 0;
  for (int i = 0; i < 200000; i++) {
    double x = tqg_rng_normal(&a);
    sum += x;
    sum2 += x * x;
  }
  CHECK_NEAR(sum / 2e5, 0.0, 5 * 1.0 / sqrt(2e5));
  CHECK_NEAR(sum2 / 2e5, 1.0, 5 * sqrt(2.0 / 2e5));
  /* The portable log agrees with libm to rounding. */
  for (double x = 1e-300; x < 1e300; x *= 7.3)
    CHECK_NEAR(tqg_log(x), log(x), 1e-13 * fabs(log(x)) + 1e-15);
}

static void test_lloyd_max(void) {
  /* Max (1960), optimum quantizer for the Gaussian, positive half. */
  static const double max1960[4][4] = {
      {0.7979}, {0.4528, 1.5104}, {0.2451, 0.7560, 1.3439, 2.1519}};
  for (int b = 1; b <= 3; b++) {
    tqg_codebook cb;
    CHECK(tqg_lloyd_max(b, &cb) == TQ_OK);
    int half = cb.levels / 2;
    for (int i = 0; i < half; i++) {
      /* Max printed 4 decimals: agree to half a unit in the last place. */
      CHECK_NEAR(cb.centroid[half + i], max1960[b - 1][i], 0.00005 + 1e-9);
      CHECK_NEAR(cb.centroid[half - 1 - i], -max1960[b - 1][i], 0.00005 + 1e-9);
    }
  }
  static const double mse[] = {0.3634, 0.1175, 0.03455, 0.009501};
  for (int b = 1; b <= 8; b++) {
    tqg_codebook cb, again;
    CHECK(tqg_lloyd_max(b, &cb) == TQ_OK);
    CHECK(tqg_lloyd_max(b, &again) == TQ_OK);
    CHECK(!memcmp(&cb, &again, sizeof cb)); /* deterministic */
    /* The published values have 4 significant digits. */
    if (b <= 4) CHECK_NEAR(cb.mse, mse[b - 1], 0.0005 * mse[b - 1]);
    /* Converged: one more Lloyd step moves no centroid by 1e-10. */
    for (int i = 0; i < cb.levels; i++) {
      double lo = i ? cb.boundary[i - 1] : -40, hi = i + 1 < cb.levels ? cb.boundary[i] : 40;
      double m = tqg_normal_cdf(hi) - tqg_normal_cdf(lo);
      double c = (tqg_normal_pdf(lo) - tqg_normal_pdf(hi)) / m;
      /* the CDF difference loses digits deep in the tail; 1e-9 is still
       * far below any effect on quantization */
      CHECK_NEAR(cb.centroid[i], c, b <= 6 ? 1e-10 : 1e-9);
      if (i + 1 < cb.levels) {
        CHECK(cb.centroid[i] < cb.boundary[i] && cb.boundary[i] < cb.centroid[i + 1]);
        CHECK_NEAR(cb.boundary[i], 0.5 * (cb.centroid[i] + cb.centroid[i + 1]), 1e-15);
      }
    }
    /* Nearest index agrees with a linear scan. */
    tqg_rng r;
    tqg_rng_seed(&r, (uint64_t)b);
    for (int k = 0; k < 2000; k++) {
      double x = 2 * tqg_rng_normal(&r);
      int best = 0;
      for (int i = 1; i < cb.levels; i++)
        if (fabs(x - cb.centroid[i]) < fabs(x - cb.centroid[best])) best = i;
      CHECK(tqg_codebook_index(&cb, x) == best);
    }
  }
  tqg_codebook cb;
  CHECK(tqg_lloyd_max(0, &cb) == TQ_ERR_INVALID);
  CHECK(tqg_lloyd_max(9, &cb) == TQ_ERR_INVALID);
}

/* The cell grid finds every index the boundary search does, computed in f32
 * the way the CUDA encode computes it, for x anywhere in the range; only x
 * within float rounding of a boundary may land one cell over. */
static void test_grid(void) {
  static const double dims[] = {32, 64, 128, 256};
  for (int b = 1; b <= 8; b++) {
    tqg_codebook cb;
    CHECK(tqg_lloyd_max(b, &cb) == TQ_OK);
    for (int di = 0; di < 4; di++) {
      double range = sqrt(dims[di]);
      tqg_grid g;
      int cells = tqg_codebook_grid(&cb, range, 256, &g);
      CHECK(cells == g.cells);
      if (b <= 4) CHECK(cells > 0); /* 4 bits: about 100 cells at d = 128 */
      if (b == 8) CHECK(cells == 0);  /* 255 boundaries 0.01 apart: over the cap */
      if (!cells) continue;
      CHECK(cells <= 256);
      CHECK(g.offset - g.scale * range >= 1.0); /* u >= 1: cell 0 unused */
      int base[256];
      float thr[256];
      for (int c = 0; c < cells; c++) {
        double t;
        tqg_grid_cell(&cb, &g, c, &base[c], &t);
        thr[c] = (float)t;
        if (c) CHECK(base[c] >= base[c - 1] && base[c] <= base[c - 1] + 1);
      }
      CHECK(base[0] == 0 && base[cells - 1] == cb.levels - 1);
      tqg_rng r;
      tqg_rng_seed(&r, (uint64_t)(b * 10 + di));
      int flips = 0;
      for (int k = 0; k < 20000; k++) {
        /* half spread over the range, half close around a boundary */
        double x = k & 1 ? range * (2 * tqg_rng_uniform(&r) - 1)
                         : cb.boundary[k / 2 % (cb.levels - 1)] + 1e-4 * tqg_rng_normal(&r);
        if (fabs(x) > range) continue;
        float u = fmaf((float)x, (float)g.scale, (float)g.offset);
        int c = (int)lrintf(u);
        CHECK(c >= 1 && c < cells);
        if (c < 1 || c >= cells) continue;
        int got = base[c] + (u >= thr[c]), want = tqg_codebook_index(&cb, x);
        if (got == want) continue;
        double near = 1e300;
        for (int i = 0; i + 1 < cb.levels; i++)
          if (fabs(x - cb.boundary[i]) < near) near = fabs(x - cb.boundary[i]);
        CHECK(abs(got - want) == 1 && near < 1e-5 * range);
        flips++;
      }
      CHECK(flips < 200); /* of 10000 draws within 1e-4 of a boundary */
    }
  }
  tqg_codebook cb;
  tqg_grid g;
  CHECK(tqg_lloyd_max(4, &cb) == TQ_OK);
  CHECK(tqg_codebook_grid(&cb, 11.3, 10, &g) == 0 && g.cells == 0); /* cap too small */
}

static void test_rotations(void) {
  static const int dims[] = {16, 32, 64, 80, 96, 112, 128, 192, 256, 5, 123};
  for (size_t k = 0; k < sizeof dims / sizeof *dims; k++) {
    int d = dims[k];
    tqg_rotation rot;
    CHECK(tqg_rotation_init(&rot, d, 99) == TQ_OK);
    CHECK(rot.kind == ((d & (d - 1)) == 0 ? TQG_ROT_WHT : TQG_ROT_DENSE));
    double *m = malloc(sizeof(double) * d * d);
    tqg_rotation_matrix(&rot, m);
    /* R R^T = I to rounding (MGS twice keeps it near 1e-15 d). */
    double worst = 0;
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int t = 0; t < d; t++) s += m[i * d + t] * m[j * d + t];
        worst = fmax(worst, fabs(s - (i == j)));
      }
    CHECK(worst < 1e-12);
    /* inverse(rotate(x)) = x, and norms are kept. */
    tqg_rng r;
    tqg_rng_seed(&r, (uint64_t)d);
    double x[512], y[512], z[512], nx = 0, ny = 0;
    for (int i = 0; i < d; i++) x[i] = tqg_rng_normal(&r);
    tqg_rotate(&rot, x, y);
    tqg_rotate_inverse(&rot, y, z);
    for (int i = 0; i < d; i++) {
      CHECK_NEAR(z[i], x[i], 1e-12);
      nx += x[i] * x[i];
      ny += y[i] * y[i];
    }
    CHECK_NEAR(ny, nx, 1e-10 * nx);
    /* Same seed, same rotation; another seed, another one. */
    tqg_rotation again, other;
    tqg_rotation_init(&again, d, 99);
    tqg_rotation_init(&other, d, 100);
    double *m2 = malloc(sizeof(double) * d * d), *m3 = malloc(sizeof(double) * d * d);
    tqg_rotation_matrix(&again, m2);
    tqg_rotation_matrix(&other, m3);
    CHECK(!memcmp(m, m2, sizeof(double) * d * d));
    CHECK(memcmp(m, m3, sizeof(double) * d * d));
    /* Spreading: a basis vector lands on every coordinate (no coordinate
     * of R e_0 above 5 / sqrt(d); Haar gives ~ sqrt(2 log d / d)). */
    for (int i = 0; i < d; i++) CHECK(fabs(m[i * d]) < 5.0 / sqrt(d));
    free(m);
    free(m2);
    free(m3);
    tqg_rotation_free(&rot);
    tqg_rotation_free(&again);
    tqg_rotation_free(&other);
  }
}

static void test_packing(void) {
  tqg_rng r;
  tqg_rng_seed(&r, 5);
  for (int bits = 1; bits <= 8; bits++)
    for (int n = 1; n <= 70; n += 3) {
      uint8_t idx[80], back[80], packed[96];
      for (int i = 0; i < n; i++) idx[i] = (uint8_t)(tqg_rng_next(&r) & ((1u << bits) - 1));
      memset(packed, 0xEE, sizeof packed);
      tqg_pack(idx, n, bits, packed);
      CHECK(tqg_packed_bytes(n, bits) % 4 == 0);
      CHECK(tqg_packed_bytes(n, bits) * 8 >= n * bits);
      CHECK(tqg_packed_bytes(n, bits) * 8 < n * bits + 32);
      tqg_unpack(packed, n, bits, back);
      CHECK(!memcmp(idx, back, (size_t)n));
      /* Padding bits are zero and bytes past the padded size untouched. */
      for (int bit = n * bits; bit < tqg_packed_bytes(n, bits) * 8; bit++)
        CHECK(!(packed[bit / 8] >> (bit % 8) & 1));
      CHECK(packed[tqg_packed_bytes(n, bits)] == 0xEE);
    }
  /* The documented bit order: little-endian stream, index 0 in the low
   * bits of byte 0.  3-bit indices 5, 3, 7 -> bits 101 110 111 -> byte 0 =
   * 0b11011101 = 0xDD, byte 1 = 0b00000001. */
  uint8_t idx[3] = {5, 3, 7}, packed[4];
  tqg_pack(idx, 3, 3, packed);
  CHECK(packed[0] == 0xDD && packed[1] == 0x01 && packed[2] == 0 && packed[3] == 0);
  uint8_t four[2] = {0xA, 0x3};
  tqg_pack(four, 2, 4, packed);
  CHECK(packed[0] == 0x3A);
}

static void test_half(void) {
  CHECK(tqg_f32_to_f16(1.0f) == 0x3C00);
  CHECK(tqg_f32_to_f16(-2.0f) == 0xC000);
  CHECK(tqg_f32_to_f16(65504.0f) == 0x7BFF);
  CHECK(tqg_f32_to_f16(1e6f) == 0x7C00);        /* overflow -> inf */
  CHECK(tqg_f32_to_f16(5.96046448e-8f) == 0x0001); /* smallest subnormal */
  CHECK(tqg_f32_to_f16(1.0f + 0x1.0p-11f) == 0x3C00); /* tie to even */
  CHECK(tqg_f32_to_f16(1.0f + 0x1.8p-11f) == 0x3C01);
  CHECK(tqg_f32_to_bf16(1.0f) == 0x3F80);
  CHECK(tqg_f32_to_bf16(1.0f + 0x1.0p-8f) == 0x3F80); /* tie to even */
  /* Every finite half round-trips. */
  for (unsigned h = 0; h < 0x10000; h++) {
    if ((h & 0x7C00) == 0x7C00) continue;
    CHECK(tqg_f32_to_f16(tqg_f16_to_f32((uint16_t)h)) == h);
  }
}

static void test_variants(void) {
  tq_variant v;
  char name[160], msg[256];
  tqg_variant_default(&v);
  v.group = 4;
  tqg_variant_name(&v, name, sizeof name);
  CHECK(!strcmp(name, "d128_g4_k4v4_f16"));
  CHECK(tqg_bytes_per_token(&v) == 136); /* (64 + 4) per K and per V */
  CHECK_NEAR(tqg_bits_per_coord(&v), 4.25, 1e-12);
  uint64_t h = tqg_variant_hash(&v);
  v.layout = TQ_PAGED;
  v.qjl = 1;
  v.outlier_count = 32;
  v.outlier_bits = TQ_OUTLIER_F16;
  tqg_variant_name(&v, name, sizeof name);
  CHECK(!strcmp(name, "d128_g4_k4v4_o32h_qjl_f16_paged16"));
  CHECK(tqg_variant_hash(&v) != h);
  /* Key: 96 x 3 bits = 36 B, scale 4, signs 12, |r| 4, 32 f16 = 64. */
  tq_slot_layout l;
  tqg_key_layout(&v, &l);
  CHECK(l.main.idx_bytes == 36 && l.main.scale_offset == 36);
  CHECK(l.qjl_offset == 40 && l.qjl_bytes == 12 && l.rnorm_offset == 52);
  CHECK(l.outlier.idx_offset == 56 && l.bytes == 120);
  /* Check messages name the key and the allowed values. */
  tqg_variant_default(&v);
  v.head_dim = 100;
  CHECK(tqg_variant_check(&v, msg, sizeof msg) == TQ_ERR_INVALID);
  CHECK_CONTAINS(msg, "head_dim = 100");
  CHECK_CONTAINS(msg, "multiples of 16");
  tqg_variant_default(&v);
  v.key_bits = 9;
  CHECK(tqg_variant_check(&v, msg, sizeof msg) == TQ_ERR_INVALID);
  CHECK_CONTAINS(msg, "key_bits = 9: allowed 1..8");
  tqg_variant_default(&v);
  v.outlier_count = 128;
  CHECK(tqg_variant_check(&v, msg, sizeof msg) == TQ_ERR_INVALID);
  CHECK_CONTAINS(msg, "outliers.count = 128");
  tqg_variant_default(&v);
  v.qjl = 1;
  v.key_bits = 1;
  CHECK(tqg_variant_check(&v, msg, sizeof msg) == TQ_ERR_INVALID);
  CHECK_CONTAINS(msg, "qjl");
  CHECK(tqg_op_parse("prefill") == TQ_OP_PREFILL);
  CHECK(tqg_op_parse("nope") == TQ_OP_COUNT);
}

int main(void) {
  test_prng();
  test_lloyd_max();
  test_grid();
  test_rotations();
  test_packing();
  test_half();
  test_variants();
  return check_report("core");
}
