/* bench_decode.c - decode-attention time per step of the C backend's
 * TurboQuant kernel (JIT through the runtime) and of the CPU reference,
 * against exact fp32 attention on the unquantized cache measured in the
 * same run, and against the machine's memcpy bandwidth.
 *
 * Shape: head_dim 128, GQA group 4 (32 q heads over 8 kv heads), K 4 bits,
 * V 4 bits, f16 activations, contiguous cache, batch 1, one query token.
 * Everything runs on one thread.  See bench/README.md for the columns.
 *
 *   bench_decode [--max-context N] [--quick] */
#define _GNU_SOURCE /* clock_gettime; sysconf cache sizes where glibc has them \
                     */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "ref/ref.h"
#include "tq.h"

#define HEAD_DIM 128
#define GROUP 4
#define KV_HEADS 8
#define Q_HEADS (KV_HEADS * GROUP)
#define KEY_BITS 4
#define VALUE_BITS 4
#define MIN_RUNS 5
#define MIN_SECONDS 0.2      /* per measurement */
#define REF_MAX_CONTEXT 4096 /* the reference is slow: stop here */
#define COPY_BYTES ((size_t)256 << 20)
#define SEED 0xBE7C4u

static const int all_contexts[] = {1024, 2048, 4096, 8192, 16384, 32768};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median seconds of fn(arg) over N runs, N >= MIN_RUNS and large enough
 * that the runs together take >= MIN_SECONDS.  One untimed warm-up run.
 * Returns a negative value when fn fails. */
static double median_seconds(int (*fn)(void *), void *arg, int *runs_out) {
  size_t cap = 64, n = 0;
  double *t = malloc(cap * sizeof *t), total = 0;
  if (!t || fn(arg)) {
    free(t);
    return -1;
  }
  while (n < MIN_RUNS || total < MIN_SECONDS) {
    if (n == cap) {
      double *more = realloc(t, 2 * cap * sizeof *t);
      if (!more) break;
      t = more;
      cap *= 2;
    }
    double t0 = now();
    if (fn(arg)) {
      free(t);
      return -1;
    }
    t[n] = now() - t0;
    total += t[n++];
  }
  qsort(t, n, sizeof *t, cmp_double);
  double med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  free(t);
  if (runs_out) *runs_out = (int)n;
  return med;
}

/* ---- the physical limit: memory bandwidth ------------------------------ */
typedef struct copy_job {
  char *src, *dst;
  size_t bytes;
} copy_job;

static int run_copy(void *p) {
  copy_job *c = p;
  memcpy(c->dst, c->src, c->bytes);
  return 0;
}

/* A read-only stream, the access pattern of attention: the sum is kept so
 * the compiler cannot drop the loads. */
static volatile uint64_t read_sink;

static int run_read(void *p) {
  copy_job *c = p;
  const uint64_t *w = (const uint64_t *)c->src;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i + 4 <= c->bytes / 8; i += 4) {
    s0 += w[i];
    s1 += w[i + 1];
    s2 += w[i + 2];
    s3 += w[i + 3];
  }
  read_sink = s0 + s1 + s2 + s3;
  return 0;
}

/* ---- exact fp32 attention on the unquantized cache -------------------- */
/* K and V as float [kv head][capacity][d], like the packed cache's
 * [head][capacity][slot].  For each kv head, its GROUP q heads score every
 * K row in one pass and accumulate every V row in a second pass, so K and
 * V are each streamed once per kv head, as the quantized kernel does.  The
 * dot products keep 8 independent lanes, which the compiler vectorizes
 * without reassociating floating point (no -ffast-math needed). */
typedef struct exact_job {
  int ctx, capacity;
  float sm_scale;
  const float *q; /* [Q_HEADS][d] */
  const float *k, *v;
  float *out; /* [Q_HEADS][d] */
  float *p;   /* scratch [GROUP][capacity] */
} exact_job;

#define LANES 8

static int run_exact(void *arg) {
  exact_job *e = arg;
  const int d = HEAD_DIM, n = e->ctx;
  for (int h = 0; h < KV_HEADS; h++) {
    const float *K = e->k + (size_t)h * e->capacity * d;
    const float *V = e->v + (size_t)h * e->capacity * d;
    float q[GROUP][HEAD_DIM], acc[GROUP][HEAD_DIM], mx[GROUP], sum[GROUP];
    for (int g = 0; g < GROUP; g++) {
      for (int j = 0; j < d; j++)
        q[g][j] = e->sm_scale * e->q[((size_t)h * GROUP + g) * d + j];
      mx[g] = -INFINITY;
      sum[g] = 0;
    }
    for (int t = 0; t < n; t++) {
      const float *kr = K + (size_t)t * d;
      for (int g = 0; g < GROUP; g++) {
        float lane[LANES] = {0};
        for (int j = 0; j < d; j += LANES)
          for (int l = 0; l < LANES; l++) lane[l] += q[g][j + l] * kr[j + l];
        float s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                  ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        e->p[(size_t)g * e->capacity + t] = s;
        if (s > mx[g]) mx[g] = s;
      }
    }
    for (int g = 0; g < GROUP; g++) {
      float *p = e->p + (size_t)g * e->capacity;
      for (int t = 0; t < n; t++) sum[g] += p[t] = expf(p[t] - mx[g]);
      memset(acc[g], 0, sizeof acc[g]);
    }
    for (int t = 0; t < n; t++) {
      const float *vr = V + (size_t)t * d;
      for (int g = 0; g < GROUP; g++) {
        float w = e->p[(size_t)g * e->capacity + t];
        for (int j = 0; j < d; j++) acc[g][j] += w * vr[j];
      }
    }
    for (int g = 0; g < GROUP; g++)
      for (int j = 0; j < d; j++)
        e->out[((size_t)h * GROUP + g) * d + j] = acc[g][j] / sum[g];
  }
  return 0;
}

/* ---- the kernels under test ------------------------------------------- */
typedef struct kernel_job {
  tq_backend *be;
  const tq_kernel *k;
  tq_launch *l;
} kernel_job;

static int run_kernel(void *arg) {
  kernel_job *j = arg;
  return tq_run(j->be, j->k, j->l) != TQ_OK;
}

typedef struct ref_job {
  const tq_ref *r;
  const tq_kargs *a;
} ref_job;

static int run_ref(void *arg) {
  ref_job *j = arg;
  return tq_ref_run(j->r, TQ_OP_DECODE, j->a) != TQ_OK;
}

/* |a - b| / |b| over n values. */
static double rel_l2(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num / den);
}

static void f16_to_float(const uint16_t *h, float *f, size_t n) {
  for (size_t i = 0; i < n; i++) f[i] = tqg_f16_to_f32(h[i]);
}

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [--max-context N] [--quick]\n"
          "  --max-context N  only contexts <= N (contexts: 1K 2K 4K 8K 16K "
          "32K)\n"
          "  --quick          contexts 1K and 2K only (CI)\n",
          prog);
  return 2;
}

static void die_tq(tq_backend *be, const char *what, tq_status st) {
  fprintf(stderr, "bench_decode: %s failed (status %d): %s\n", what, (int)st,
          tq_error(be));
  exit(1);
}

int main(int argc, char **argv) {
  int max_context = all_contexts[5];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) {
      max_context = 2048;
    } else if (!strcmp(argv[i], "--max-context") && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);
      if (*end || n < 1 || n > all_contexts[5]) {
        fprintf(stderr, "bench_decode: --max-context %s: want 1..%d\n", argv[i],
                all_contexts[5]);
        return 2;
      }
      max_context = (int)n;
    } else {
      return usage(argv[0]);
    }
  }
  int contexts[6], n_ctx = 0;
  for (int i = 0; i < 6; i++)
    if (all_contexts[i] <= max_context) contexts[n_ctx++] = all_contexts[i];
  if (n_ctx == 0) contexts[n_ctx++] = max_context; /* below 1K: just N */
  const int capacity = contexts[n_ctx - 1];

  tq_variant v;
  tqg_variant_default(&v);
  v.head_dim = HEAD_DIM;
  v.group = GROUP;
  v.key_bits = KEY_BITS;
  v.value_bits = VALUE_BITS;
  v.dtype = TQ_F16;
  char name[160];
  tqg_variant_name(&v, name, sizeof name);
  const size_t kslot = tq_key_slot_bytes(&v), vslot = tq_value_slot_bytes(&v);

  /* Backend and kernels (JIT compile or disk cache, timed). */
  char err[512];
  tq_backend *be;
  tq_status st = tq_open("c", &be, err, sizeof err);
  if (st) {
    fprintf(stderr, "bench_decode: tq_open(\"c\"): %s\n", err);
    return 1;
  }
  tq_kernel *enc, *dec;
  double t0 = now();
  if ((st = tq_get_kernel(be, &v, TQ_OP_ENCODE, &enc)))
    die_tq(be, "tq_get_kernel(encode)", st);
  if ((st = tq_get_kernel(be, &v, TQ_OP_DECODE, &dec)))
    die_tq(be, "tq_get_kernel(decode)", st);
  double t_get = now() - t0;

  /* Random Gaussian K, V (f16) for the whole capacity; q for one step. */
  const size_t kv_elems = (size_t)capacity * KV_HEADS * HEAD_DIM;
  const size_t q_elems = (size_t)Q_HEADS * HEAD_DIM;
  uint16_t *k16 = malloc(kv_elems * 2), *v16 = malloc(kv_elems * 2);
  uint16_t *q16 = malloc(q_elems * 2), *o16 = malloc(q_elems * 2);
  float *kf = malloc(kv_elems * 4), *vf = malloc(kv_elems * 4);
  float *qf = malloc(q_elems * 4), *out_exact = malloc(q_elems * 4);
  float *out_c = malloc(q_elems * 4), *out_ref = malloc(q_elems * 4);
  float *pscratch = malloc((size_t)GROUP * capacity * 4);
  uint8_t *kc_host = malloc((size_t)KV_HEADS * capacity * kslot);
  uint8_t *vc_host = malloc((size_t)KV_HEADS * capacity * vslot);
  char *copy_src = malloc(COPY_BYTES), *copy_dst = malloc(COPY_BYTES);
  if (!k16 || !v16 || !q16 || !o16 || !kf || !vf || !qf || !out_exact ||
      !out_c || !out_ref || !pscratch || !kc_host || !vc_host || !copy_src ||
      !copy_dst) {
    fprintf(stderr, "bench_decode: out of memory\n");
    return 1;
  }
  tqg_rng rng;
  tqg_rng_seed(&rng, SEED);
  for (size_t i = 0; i < kv_elems; i++) {
    k16[i] = tqg_f32_to_f16((float)tqg_rng_normal(&rng));
    v16[i] = tqg_f32_to_f16((float)tqg_rng_normal(&rng));
  }
  for (size_t i = 0; i < q_elems; i++)
    q16[i] = tqg_f32_to_f16((float)tqg_rng_normal(&rng));
  /* The unquantized cache for fp32 attention: the same f16 values, laid
   * out [kv head][token][d] (the encode input is [token][kv head][d]). */
  for (int t = 0; t < capacity; t++)
    for (int h = 0; h < KV_HEADS; h++)
      for (int j = 0; j < HEAD_DIM; j++) {
        size_t in = ((size_t)t * KV_HEADS + h) * HEAD_DIM + j;
        size_t at = ((size_t)h * capacity + t) * HEAD_DIM + j;
        kf[at] = tqg_f16_to_f32(k16[in]);
        vf[at] = tqg_f16_to_f32(v16[in]);
      }
  f16_to_float(q16, qf, q_elems);

  /* Device (host) buffers and the packed cache, filled by the C backend's
   * encode kernel in one launch of all capacity tokens. */
  tq_buffer *kc, *vc, *lens, *qb, *ob, *kb, *vb;
  int32_t len = capacity;
#define ALLOC(buf, bytes) \
  if ((st = tq_alloc(be, (bytes), &(buf)))) die_tq(be, "tq_alloc", st)
  ALLOC(kc, (size_t)KV_HEADS * capacity * kslot);
  ALLOC(vc, (size_t)KV_HEADS * capacity * vslot);
  ALLOC(lens, sizeof(int32_t));
  ALLOC(qb, q_elems * 2);
  ALLOC(ob, q_elems * 2);
  ALLOC(kb, kv_elems * 2);
  ALLOC(vb, kv_elems * 2);
#undef ALLOC
  if ((st = tq_write(be, kb, 0, k16, kv_elems * 2)) ||
      (st = tq_write(be, vb, 0, v16, kv_elems * 2)) ||
      (st = tq_write(be, qb, 0, q16, q_elems * 2)) ||
      (st = tq_write(be, lens, 0, &len, sizeof len)))
    die_tq(be, "tq_write", st);
  tq_launch l = {0};
  l.batch = 1;
  l.kv_heads = KV_HEADS;
  l.n_tokens = capacity;
  l.capacity = capacity;
  l.sm_scale = (float)(1.0 / sqrt(HEAD_DIM));
  l.k_cache = kc;
  l.v_cache = vc;
  l.seq_lens = lens;
  l.k = kb;
  l.v = vb;
  l.q = qb;
  l.out = ob;
  t0 = now();
  if ((st = tq_run(be, enc, &l))) die_tq(be, "encode", st);
  double t_enc = now() - t0;
  if ((st = tq_read(be, kc, 0, kc_host, (size_t)KV_HEADS * capacity * kslot)) ||
      (st = tq_read(be, vc, 0, vc_host, (size_t)KV_HEADS * capacity * vslot)))
    die_tq(be, "tq_read", st);
  l.n_tokens = 1; /* one decoding step from here on */

  /* The reference over the same packed cache (host copies). */
  tq_ref ref;
  if ((st = tq_ref_init(&ref, &v))) {
    fprintf(stderr, "bench_decode: tq_ref_init failed (status %d)\n", (int)st);
    return 1;
  }
  uint16_t *oref16 = malloc(q_elems * 2);
  if (!oref16) {
    fprintf(stderr, "bench_decode: out of memory\n");
    return 1;
  }
  tq_kargs ra = {0};
  ra.batch = 1;
  ra.kv_heads = KV_HEADS;
  ra.n_tokens = 1;
  ra.capacity = capacity;
  ra.sm_scale = l.sm_scale;
  ra.k_cache = kc_host;
  ra.v_cache = vc_host;
  ra.seq_lens = &len;
  ra.q = q16;
  ra.out = oref16;

  /* Physical limit: memcpy of 256 MiB (and a read-only stream). */
  memset(copy_src, 1, COPY_BYTES); /* touch every page before timing */
  memset(copy_dst, 0, COPY_BYTES);
  copy_job cj = {copy_src, copy_dst, COPY_BYTES};
  double t_copy = median_seconds(run_copy, &cj, NULL);
  double t_read = median_seconds(run_read, &cj, NULL);
  /* memcpy moves the bytes twice: read once, written once. */
  double mem_gbs = 2.0 * COPY_BYTES / t_copy * 1e-9;
  double read_gbs = (double)COPY_BYTES / t_read * 1e-9;

  printf(
      "bench_decode: variant %s, batch 1, %d kv heads x group %d = %d q "
      "heads, 1 query token, one thread\n",
      name, KV_HEADS, GROUP, Q_HEADS);
  printf(
      "  packed slot: K %zu + V %zu = %zu bytes per token per kv head "
      "(fp32: %d, f16: %d)\n",
      kslot, vslot, kslot + vslot, 2 * 4 * HEAD_DIM, 2 * 2 * HEAD_DIM);
  printf(
      "  C kernel: %s in %.3f s (JIT: system C compiler, flags in backends/c.c); cache of "
      "%d tokens encoded in %.3f s (%.0f tokens/s, all %d heads)\n",
      tq_kernel_origin(dec), t_get, capacity, t_enc, capacity / t_enc,
      KV_HEADS);
  printf(
      "  memcpy 256 MiB: %.2f GB/s (read + write traffic; %.2f GB/s "
      "copied); read-only stream: %.2f GB/s\n",
      mem_gbs, mem_gbs / 2, read_gbs);
  long llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  if (llc > 0)
    printf(
        "  caches are warm (each run re-reads the same cache); last-level "
        "cache reported: %.0f MiB\n",
        llc / 1048576.0);
  printf("  times: median of N runs, N >= %d and >= %.1f s per measurement\n\n",
         MIN_RUNS, MIN_SECONDS);
  printf("%6s | %9s %9s %9s %7s | %8s %8s | %8s %7s %6s | %8s %7s %6s\n", "ctx",
         "ref ms", "C ms", "fp32 ms", "C/fp32", "C ns/tok", "f32 ns/t",
         "pack MB", "C GB/s", "C %mem", "fp32 MB", "f32GB/s", "f32%mem");
  printf(
      "-------+---------------------------------------+-------------------"
      "+-------------------------+------------------------\n");

  double err_ref[6], err_exact[6];
  for (int ci = 0; ci < n_ctx; ci++) {
    int ctx = contexts[ci];
    len = ctx;
    if ((st = tq_write(be, lens, 0, &len, sizeof len)))
      die_tq(be, "tq_write", st);
    /* C kernel */
    kernel_job kj = {be, dec, &l};
    double t_c = median_seconds(run_kernel, &kj, NULL);
    if (t_c < 0) die_tq(be, "decode", TQ_ERR_INVALID);
    if ((st = tq_read(be, ob, 0, o16, q_elems * 2))) die_tq(be, "tq_read", st);
    f16_to_float(o16, out_c, q_elems);
    /* fp32 exact on the unquantized cache */
    exact_job ej = {ctx, capacity, l.sm_scale, qf, kf, vf, out_exact, pscratch};
    double t_x = median_seconds(run_exact, &ej, NULL);
    err_exact[ci] = rel_l2(out_c, out_exact, q_elems);
    /* reference, up to REF_MAX_CONTEXT */
    double t_r = -1;
    err_ref[ci] = -1;
    if (ctx <= REF_MAX_CONTEXT) {
      ref_job rj = {&ref, &ra};
      t_r = median_seconds(run_ref, &rj, NULL);
      f16_to_float(oref16, out_ref, q_elems);
      err_ref[ci] = rel_l2(out_c, out_ref, q_elems);
    }
    double packed = (double)ctx * KV_HEADS * (double)(kslot + vslot);
    double fp32 = (double)ctx * KV_HEADS * 2.0 * HEAD_DIM * 4;
    double c_gbs = packed / t_c * 1e-9, x_gbs = fp32 / t_x * 1e-9;
    char ref_ms[16] = "-";
    if (t_r >= 0) snprintf(ref_ms, sizeof ref_ms, "%.3f", t_r * 1e3);
    printf(
        "%6d | %9s %9.3f %9.3f %6.2fx | %8.2f %8.2f | %8.2f %7.2f %5.1f%% "
        "| %8.2f %7.2f %5.1f%%\n",
        ctx, ref_ms, t_c * 1e3, t_x * 1e3, t_x / t_c, t_c * 1e9 / ctx,
        t_x * 1e9 / ctx, packed / 1e6, c_gbs, 100 * c_gbs / mem_gbs, fp32 / 1e6,
        x_gbs, 100 * x_gbs / mem_gbs);
    fflush(stdout);
  }

  /* The numbers above are of a correct kernel: it matches the reference
   * on the same packed cache, and the fp32 baseline matches exact double
   * attention. */
  printf(
      "\nchecks: C kernel output vs reference (same packed cache) and vs "
      "exact fp32 attention (unquantized), relative L2\n");
  for (int ci = 0; ci < n_ctx; ci++) {
    char r[24] = "-";
    if (err_ref[ci] >= 0) snprintf(r, sizeof r, "%.2e", err_ref[ci]);
    printf(
        "  ctx %6d: vs reference %9s   vs exact fp32 %.4f (4-bit "
        "quantization error)\n",
        contexts[ci], r, err_exact[ci]);
  }
  {
    int ctx = contexts[0];
    double *qd = malloc(q_elems * 8), *od = malloc(q_elems * 8);
    double *kd = malloc((size_t)ctx * KV_HEADS * HEAD_DIM * 8);
    double *vd = malloc((size_t)ctx * KV_HEADS * HEAD_DIM * 8);
    int32_t clen = ctx;
    if (qd && od && kd && vd) {
      for (size_t i = 0; i < q_elems; i++) qd[i] = qf[i];
      for (size_t i = 0; i < (size_t)ctx * KV_HEADS * HEAD_DIM; i++) {
        kd[i] = tqg_f16_to_f32(k16[i]);
        vd[i] = tqg_f16_to_f32(v16[i]);
      }
      tq_ref_attention_exact(HEAD_DIM, GROUP, 1, KV_HEADS, 1, ctx, &clen,
                             l.sm_scale, qd, kd, vd, od);
      exact_job ej = {ctx, capacity, l.sm_scale, qf,
                      kf,  vf,       out_exact,  pscratch};
      run_exact(&ej);
      double num = 0, den = 0;
      for (size_t i = 0; i < q_elems; i++) {
        num += (out_exact[i] - od[i]) * (out_exact[i] - od[i]);
        den += od[i] * od[i];
      }
      printf("  fp32 baseline vs exact double attention at ctx %d: %.2e\n", ctx,
             sqrt(num / den));
    }
    free(qd);
    free(od);
    free(kd);
    free(vd);
  }

  tq_ref_free(&ref);
  tq_buffer *bufs[] = {kc, vc, lens, qb, ob, kb, vb};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) tq_free(be, bufs[i]);
  tq_close(be);
  void *mem[] = {k16,     v16,       q16,      o16,     kf,       vf,
                 qf,      out_exact, out_c,    out_ref, pscratch, kc_host,
                 vc_host, copy_src,  copy_dst, oref16};
  for (size_t i = 0; i < sizeof mem / sizeof *mem; i++) free(mem[i]);
  return 0;
}
