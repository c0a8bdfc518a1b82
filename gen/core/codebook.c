/* codebook.c - Lloyd-Max optimal scalar quantizers for N(0,1).
 *
 * Lloyd's iteration alternates the two optimality conditions: boundaries at
 * midpoints of neighbouring centroids, centroids at the conditional means
 * E[X | b_{i-1} < X < b_i] = (pdf(b_{i-1}) - pdf(b_i)) / P_i.  It starts from
 * the high-resolution optimum (point density proportional to pdf^(1/3),
 * i.e. the quantiles of N(0, 3)) and takes Newton steps on the fixed point
 * (plain Lloyd needs 62k steps at 8 bits); it stops once a Lloyd step moves
 * no centroid more than TQG_LLOYD_TOLERANCE.  exp and the normal CDF are computed here from
 * + - * / only so codebooks are bit-identical on every platform. */
#include <math.h>
#include <string.h>

#include "core.h"

#define TQG_LLOYD_TOLERANCE 1e-10
#define TQG_LLOYD_MAX_ITERATIONS 100005

static const double inv_sqrt_2pi = 0.39894228040143267794;
static const double ln2 = 0.69314718055994530942;

/* e^x by Cody-Waite reduction x = k ln2 + r and a Taylor series in r. */
static double tqg_exp(double x) {
  if (x < -745.0) return 0.0;
  double kf = x / ln2;
  int k = (int)(kf < 0 ? kf - 0.5 : kf + 0.5);
  double r = (x - k * 0.693145751953125) - k * 1.42860682030941723212e-6;
  double term = 1.0, sum = 1.0;
  for (int n = 1; n < 30; n++) {
    term *= r / n;
    sum += term;
    if (term < 1e-18 && term > -1e-18) break;
  }
  for (; k > 0; k--) sum *= 2.0;
  for (; k < 0; k++) sum *= 0.5;
  return sum;
}

double tqg_normal_pdf(double x) { return inv_sqrt_2pi * tqg_exp(-0.5 * x * x); }

/* Upper tail Q(x) = P(X > x) for x >= 0. */
static double upper_tail(double x) {
  if (x < 4.0) {
    /* Phi(x) - 1/2 = pdf(x) * sum x^(2n+1) / (2n+1)!!, all terms positive. */
    double term = x, sum = x;
    for (int n = 1; n < 500 && term > 1e-18 * sum; n++) {
      term *= x * x / (2 * n + 1);
      sum += term;
    }
    return 0.5 - tqg_normal_pdf(x) * sum;
  }
  /* Continued fraction Q(x) = pdf(x) / (x + 1/(x + 2/(x + 3/(x + ...)))),
   * evaluated bottom-up; 200 levels are exact to double at x >= 4. */
  double f = x;
  for (int n = 200; n >= 1; n--) f = x + n / f;
  return tqg_normal_pdf(x) / f;
}

double tqg_normal_cdf(double x) {
  return x >= 0 ? 1.0 - upper_tail(x) : upper_tail(-x);
}

/* Probability mass of (a, b), accurate in both tails. */
static double mass(double a, double b) {
  if (a >= 0) return upper_tail(a) - upper_tail(b);
  if (b <= 0) return upper_tail(-b) - upper_tail(-a);
  return 1.0 - upper_tail(-a) - upper_tail(b);
}

/* Inverse CDF by bisection: only used for the starting point. */
static double normal_quantile(double p) {
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; i++) {
    double mid = 0.5 * (lo + hi);
    if (tqg_normal_cdf(mid) < p) lo = mid; else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/* One Lloyd map c -> F(c) with the derivatives of F for Newton's method:
 * F_i depends on the boundaries lo = b_{i-1}, hi = b_i, and
 * dF_i/dlo = pdf(lo) (F_i - lo) / P_i, dF_i/dhi = pdf(hi) (hi - F_i) / P_i. */
static void lloyd_map(const double *c, int L, double *f, double *dlo,
                      double *dhi) {
  for (int i = 0; i < L; i++) {
    double lo = i == 0 ? -40 : 0.5 * (c[i - 1] + c[i]);
    double hi = i == L - 1 ? 40 : 0.5 * (c[i] + c[i + 1]);
    double plo = tqg_normal_pdf(lo), phi = tqg_normal_pdf(hi);
    double m = mass(lo, hi);
    f[i] = (plo - phi) / m;
    dlo[i] = i == 0 ? 0 : plo * (f[i] - lo) / m;
    dhi[i] = i == L - 1 ? 0 : phi * (hi - f[i]) / m;
  }
}

tq_status tqg_lloyd_max(int bits, tqg_codebook *cb) {
  if (bits < 1 || bits > TQ_MAX_BITS) return TQ_ERR_INVALID;
  memset(cb, 0, sizeof *cb);
  int L = 1 << bits;
  cb->bits = bits;
  cb->levels = L;
  double *c = cb->centroid, *b = cb->boundary;
  double f[256], dlo[256], dhi[256], sub[256], diag[256], sup[256], rhs[256];
  for (int i = 0; i < L; i++)
    c[i] = 1.7320508075688772 * normal_quantile((i + 0.5) / L);
  int it;
  for (it = 1; it <= TQG_LLOYD_MAX_ITERATIONS; it++) {
    lloyd_map(c, L, f, dlo, dhi);
    double move = 0;
    for (int i = 0; i < L; i++) {
      double d = f[i] > c[i] ? f[i] - c[i] : c[i] - f[i];
      if (d > move) move = d;
    }
    if (move < TQG_LLOYD_TOLERANCE) break;
    /* Newton on G(c) = F(c) - c, whose Jacobian is tridiagonal (boundaries
     * are midpoints): solve (J_F - I) delta = c - F by the Thomas algorithm. */
    for (int i = 0; i < L; i++) {
      sub[i] = 0.5 * dlo[i];
      sup[i] = 0.5 * dhi[i];
      diag[i] = 0.5 * (dlo[i] + dhi[i]) - 1.0;
      rhs[i] = c[i] - f[i];
    }
    for (int i = 1; i < L; i++) {
      double w = sub[i] / diag[i - 1];
      diag[i] -= w * sup[i - 1];
      rhs[i] -= w * rhs[i - 1];
    }
    double next[256];
    next[L - 1] = rhs[L - 1] / diag[L - 1];
    for (int i = L - 2; i >= 0; i--)
      next[i] = (rhs[i] - sup[i] * next[i + 1]) / diag[i];
    int ordered = 1;
    for (int i = 0; i < L; i++) {
      next[i] += c[i];
      if (i && !(next[i] > next[i - 1])) ordered = 0;
    }
    /* A Newton step that breaks the ordering falls back to Lloyd's step. */
    for (int i = 0; i < L; i++) c[i] = ordered ? next[i] : f[i];
  }
  if (it > TQG_LLOYD_MAX_ITERATIONS) return TQ_ERR_INVALID;
  memcpy(c, f, sizeof(double) * (size_t)L);
  for (int i = 0; i + 1 < L; i++) b[i] = 0.5 * (c[i] + c[i + 1]);
  cb->iterations = it;
  /* At the centroid condition E[X Q(X)] = E[Q(X)^2], so the distortion is
   * E[X^2] - E[Q^2] = 1 - sum c_i^2 P_i. */
  double eq2 = 0;
  for (int i = 0; i < L; i++) {
    double lo = i == 0 ? -40 : b[i - 1], hi = i == L - 1 ? 40 : b[i];
    eq2 += c[i] * c[i] * mass(lo, hi);
  }
  cb->mse = 1.0 - eq2;
  return TQ_OK;
}

int tqg_codebook_index(const tqg_codebook *cb, double x) {
  int lo = 0, hi = cb->levels - 1; /* answer in [lo, hi] */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (x >= cb->boundary[mid]) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/* Is the offset's placement of every boundary inside its own cell, clear of
 * the edges by the margin? */
static int grid_fits(const tqg_codebook *cb, double scale, double offset) {
  long prev = -1;
  for (int i = 0; i + 1 < cb->levels; i++) {
    double u = cb->boundary[i] * scale + offset + 0.5; /* edges at integers */
    long cell = (long)floor(u);
    double in = u - (double)cell;
    if (cell <= prev || in < TQG_GRID_MARGIN || in > 1.0 - TQG_GRID_MARGIN) return 0;
    prev = cell;
  }
  return 1;
}

/* Cells narrower than the closest boundaries, widened 1% at a time from the
 * narrowest that could fit, each width tried at 32 phases.  The offset keeps
 * u >= 1 over the range, so cell 0 stays unused and u never goes negative;
 * one cell of slack at the top absorbs rounding. */
int tqg_codebook_grid(const tqg_codebook *cb, double range, int max_cells, tqg_grid *g) {
  double gap = 1e300;
  for (int i = 0; i + 2 < cb->levels; i++)
    if (cb->boundary[i + 1] - cb->boundary[i] < gap) gap = cb->boundary[i + 1] - cb->boundary[i];
  g->cells = 0;
  g->scale = g->offset = 0;
  if (range <= 0 || cb->levels < 2) return 0;
  double scale = cb->levels > 2 ? (1.0 + 2 * TQG_GRID_MARGIN) / gap : 1.0;
  for (;; scale *= 1.01) {
    /* Kernels compute u in f32: the map is what f32 holds. */
    scale = (double)(float)scale;
    double lo = ceil(scale * range) + 1.0;
    if ((int)floor(2 * lo + 3) > max_cells) return 0;
    for (int ph = 0; ph < 32; ph++) {
      double offset = (double)(float)(lo + ph / 32.0);
      if (!grid_fits(cb, scale, offset)) continue;
      g->scale = scale;
      g->offset = offset;
      g->cells = (int)floor(offset + scale * range + 0.5) + 2;
      return g->cells;
    }
  }
}

void tqg_grid_cell(const tqg_codebook *cb, const tqg_grid *g, int c, int *base,
                   double *threshold) {
  *base = 0;
  *threshold = c + 2.0;
  for (int i = 0; i + 1 < cb->levels; i++) {
    double u = cb->boundary[i] * g->scale + g->offset;
    if (u < c - 0.5) (*base)++;
    else if (u < c + 0.5) *threshold = u;
  }
}
