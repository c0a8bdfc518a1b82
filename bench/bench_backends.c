/* bench_backends.c - decode attention on several backends in one run,
 * through the public runtime API only, on bench_cuda's shapes: head_dim 128,
 * 32 q heads over 8 kv heads, K4/V4, f16, q_len 1, B in {1, 8, 32}, context
 * in {4K, 16K, 32K, 128K}.
 *
 * Every backend gets the same packed cache (encoded once by the C backend,
 * replicated to the full context) and the same queries; the time of one
 * step is tq_run followed by tq_sync, wall clock, median of N runs after
 * warm-up runs: what an engine waits for, measured the same way on every
 * backend.  Where the Vulkan backend has timestamps, its GPU time per step
 * is printed too.  Each backend's output is compared with the first
 * backend's (relative L2), so a fast wrong kernel cannot hide.  With
 * --baseline FILE (sdpa_baseline.py's output) the f16 SDPA time of the same
 * shape is joined in, so one run gives both ratios.
 *
 * usage: bench_backends --backends cuda,vulkan[,...] [--quick] [--runs N]
 *                       [--shape B CONTEXT] [--baseline sdpa.tsv] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "tq.h"
#ifdef TQ_BENCH_VULKAN
#include "vulkan_backend.h"
#endif

#define HEADS 8
#define GROUP 4
#define DIM 128
#define CHUNK 4096 /* tokens encoded once, then replicated */
#define MAX_BACKENDS 4
#define MAX_RUNS 200

typedef struct bench_be {
  const char *name;
  tq_backend *be;
  tq_kernel *dec;
} bench_be;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "bench_backends: %s: %s\n", what, why);
  exit(1);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* SDPA's median ms for (B, ctx) from sdpa_baseline.py's rows, or 0. */
static double baseline(const char *path, int B, int ctx) {
  FILE *f = path ? fopen(path, "r") : NULL;
  char line[256];
  double ms = 0;
  while (f && fgets(line, sizeof line, f)) {
    int b, c;
    double m;
    if (sscanf(line, "sdpa_decode\tB\t%d\tctx\t%d\tms\t%lf", &b, &c, &m) == 3 &&
        b == B && c == ctx)
      ms = m;
  }
  if (f) fclose(f);
  return ms;
}

/* One decode shape on one backend: median wall ms of tq_run + tq_sync, the
 * GPU ms where known (else -1), and the output copied to host. */
static void run_shape(bench_be *x, int B, int ctx, const void *kimg,
                      const void *vimg, size_t kbytes, size_t vbytes,
                      const void *qh, size_t qbytes, int runs, double *ms,
                      double *gpu_ms, void *out_host) {
  tq_backend *be = x->be;
  tq_buffer *kc, *vc, *lens, *q, *out, *ws = NULL;
  int32_t *hl = malloc(sizeof(int32_t) * B);
  for (int b = 0; b < B; b++) hl[b] = ctx;
  if (tq_alloc(be, kbytes, &kc) || tq_alloc(be, vbytes, &vc) ||
      tq_alloc(be, 4 * (size_t)B, &lens) || tq_alloc(be, qbytes, &q) ||
      tq_alloc(be, qbytes, &out) || tq_write(be, kc, 0, kimg, kbytes) ||
      tq_write(be, vc, 0, vimg, vbytes) ||
      tq_write(be, lens, 0, hl, sizeof(int32_t) * B) ||
      tq_write(be, q, 0, qh, qbytes))
    die(x->name, tq_error(be));
  free(hl);
  tq_launch l = {.batch = B,
                 .kv_heads = HEADS,
                 .n_tokens = 1,
                 .capacity = ctx,
                 .k_cache = kc,
                 .v_cache = vc,
                 .seq_lens = lens,
                 .q = q,
                 .out = out};
  size_t wsb = tq_workspace_size(x->dec, &l);
  if (wsb && tq_alloc(be, wsb, &ws)) die(x->name, tq_error(be));
  l.workspace = ws;
  for (int i = 0; i < 3; i++)
    if (tq_run(be, x->dec, &l) || tq_sync(be)) die(x->name, tq_error(be));
  double t[MAX_RUNS], g[MAX_RUNS];
  int have_gpu = 0;
#ifdef TQ_BENCH_VULKAN
  double dummy;
  if (!strcmp(x->name, "vulkan"))
    have_gpu = tq_vulkan_gpu_ms(be, &dummy) == TQ_OK;
#endif
  for (int i = 0; i < runs; i++) {
    double t0 = now();
    if (tq_run(be, x->dec, &l) || tq_sync(be)) die(x->name, tq_error(be));
    t[i] = (now() - t0) * 1e3;
    g[i] = -1;
#ifdef TQ_BENCH_VULKAN
    if (have_gpu && tq_vulkan_gpu_ms(be, &g[i])) g[i] = -1;
#endif
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  qsort(g, (size_t)runs, sizeof *g, cmp);
  *ms = t[runs / 2];
  *gpu_ms = have_gpu ? g[runs / 2] : -1;
  if (tq_read(be, out, 0, out_host, qbytes)) die(x->name, tq_error(be));
  tq_free(be, kc);
  tq_free(be, vc);
  tq_free(be, lens);
  tq_free(be, q);
  tq_free(be, out);
  tq_free(be, ws);
}

int main(int argc, char **argv) {
  const char *list = NULL, *base_path = NULL;
  int quick = 0, runs = 50, only_b = 0, only_ctx = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--backends") && i + 1 < argc)
      list = argv[++i];
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--baseline") && i + 1 < argc)
      base_path = argv[++i];
    else if (!strcmp(argv[i], "--shape") && i + 2 < argc) {
      only_b = atoi(argv[++i]);
      only_ctx = atoi(argv[++i]);
    } else {
      fprintf(stderr,
              "usage: bench_backends --backends a,b[,...] [--quick] [--runs N] "
              "[--shape B CONTEXT] [--baseline sdpa.tsv]\n");
      return 2;
    }
  }
  if (!list || runs < 1 || runs > MAX_RUNS)
    die("arguments", "--backends a,b is required; --runs 1..200");
  tq_variant v;
  tqg_variant_default(&v);
  v.group = GROUP;
  bench_be bes[MAX_BACKENDS];
  int n = 0;
  char names[256], err[1024];
  snprintf(names, sizeof names, "%s", list);
  char *save = NULL; /* drivers may use strtok themselves */
  for (char *p = strtok_r(names, ",", &save); p && n < MAX_BACKENDS;
       p = strtok_r(NULL, ",", &save)) {
    bes[n].name = p;
    if (tq_open(p, &bes[n].be, err, sizeof err)) die(p, err);
    if (tq_get_kernel(bes[n].be, &v, TQ_OP_DECODE, &bes[n].dec))
      die(p, tq_error(bes[n].be));
    printf("# backend %s: decode kernel from %s", p,
           tq_kernel_origin(bes[n].dec));
#ifdef TQ_BENCH_VULKAN
    if (!strcmp(p, "vulkan")) printf("; %s", tq_vulkan_describe(bes[n].be));
#endif
    printf("\n");
    n++;
  }

  /* One chunk of packed K/V per kv head, encoded by the C backend. */
  tq_backend *c;
  tq_kernel *enc;
  if (tq_open("c", &c, err, sizeof err)) die("c", err);
  if (tq_get_kernel(c, &v, TQ_OP_ENCODE, &enc)) die("c", tq_error(c));
  size_t kslot = tq_key_slot_bytes(&v), vslot = tq_value_slot_bytes(&v);
  size_t act = (size_t)CHUNK * HEADS * DIM;
  tq_buffer *kin, *vin, *kst, *vst, *len1;
  int32_t chunk = CHUNK;
  tqg_rng rng;
  tqg_rng_seed(&rng, 2026);
  if (tq_alloc(c, 2 * act, &kin) || tq_alloc(c, 2 * act, &vin) ||
      tq_alloc(c, kslot * HEADS * CHUNK, &kst) ||
      tq_alloc(c, vslot * HEADS * CHUNK, &vst) || tq_alloc(c, 4, &len1) ||
      tq_write(c, len1, 0, &chunk, 4))
    die("c", tq_error(c));
  for (size_t i = 0; i < act; i++) {
    tqg_store(tq_buffer_ptr(kin), TQ_F16, i, tqg_rng_normal(&rng));
    tqg_store(tq_buffer_ptr(vin), TQ_F16, i, tqg_rng_normal(&rng));
  }
  tq_launch el = {.batch = 1,
                  .kv_heads = HEADS,
                  .n_tokens = CHUNK,
                  .capacity = CHUNK,
                  .k_cache = kst,
                  .v_cache = vst,
                  .seq_lens = len1,
                  .k = kin,
                  .v = vin};
  if (tq_run(c, enc, &el) || tq_sync(c)) die("c encode", tq_error(c));

  printf(
      "# decode attention, d128 q32/kv8 K4/V4 f16, q_len 1: median wall ms of "
      "tq_run + "
      "tq_sync over %d runs;\n# ratio = first backend's ms / this backend's ms "
      "(above 1: "
      "faster); GB/s counts packed K+V bytes\n",
      runs);
  printf("%-4s %-7s", "B", "context");
  for (int i = 0; i < n; i++)
    printf(" | %-8s ms   GB/s gpu_ms  ratio  err", bes[i].name);
  if (base_path) printf(" | sdpa ms  (sdpa ms / backend ms)");
  printf("\n");
  static const int batches[] = {1, 8, 32};
  static const int contexts[] = {4096, 16384, 32768, 131072};
  for (int bi = 0; bi < 3; bi++)
    for (int ci = 0; ci < 4; ci++) {
      int B = batches[bi], ctx = contexts[ci];
      if (quick && (B > 8 || ctx > 16384)) continue;
      if (only_b && (B != only_b || ctx != only_ctx)) continue;
      size_t kbytes = kslot * HEADS * (size_t)B * ctx,
             vbytes = vslot * HEADS * (size_t)B * ctx;
      char *kimg = malloc(kbytes), *vimg = malloc(vbytes);
      size_t qn = (size_t)B * HEADS * GROUP * DIM;
      uint16_t *qh = malloc(2 * qn);
      void *ref = malloc(2 * qn), *got = malloc(2 * qn);
      if (!kimg || !vimg || !qh || !ref || !got)
        die("host memory", "out of memory");
      for (size_t s = 0; s < (size_t)B * HEADS; s++)
        for (int t = 0; t < ctx; t += CHUNK) {
          size_t h = s % HEADS;
          memcpy(kimg + (s * ctx + t) * kslot,
                 (char *)tq_buffer_ptr(kst) + h * CHUNK * kslot, kslot * CHUNK);
          memcpy(vimg + (s * ctx + t) * vslot,
                 (char *)tq_buffer_ptr(vst) + h * CHUNK * vslot, vslot * CHUNK);
        }
      for (size_t i = 0; i < qn; i++)
        tqg_store(qh, TQ_F16, i, tqg_rng_normal(&rng));
      printf("%-4d %-7d", B, ctx);
      double first = 0, bytes = (double)kbytes + (double)vbytes,
             all[MAX_BACKENDS];
      for (int i = 0; i < n; i++) {
        double ms, gpu;
        run_shape(&bes[i], B, ctx, kimg, vimg, kbytes, vbytes, qh, 2 * qn, runs,
                  &ms, &gpu, i ? got : ref);
        double e = 0, num = 0, den = 0;
        for (size_t k = 0; i && k < qn; k++) {
          double a = tqg_load(got, TQ_F16, k), b = tqg_load(ref, TQ_F16, k);
          num += (a - b) * (a - b);
          den += b * b;
        }
        if (i) e = sqrt(num / fmax(den, 1e-30));
        if (!i) first = ms;
        all[i] = ms;
        printf(" | %-8s %7.4f %6.1f %6.4f %5.2fx %5.0e", "", ms,
               bytes / (ms * 1e-3) / 1e9, gpu, first / ms, e);
        fflush(stdout);
      }
      double sdpa = base_path ? baseline(base_path, B, ctx) : 0;
      if (base_path) {
        printf(" | %7.4f", sdpa);
        for (int i = 0; i < n; i++)
          printf(" %s %5.2fx", bes[i].name, sdpa > 0 ? sdpa / all[i] : 0.0);
      }
      printf("\n");
      fflush(stdout);
      free(kimg);
      free(vimg);
      free(qh);
      free(ref);
      free(got);
    }
  tq_free(c, kin);
  tq_free(c, vin);
  tq_free(c, kst);
  tq_free(c, vst);
  tq_free(c, len1);
  tq_close(c);
  for (int i = 0; i < n; i++) tq_close(bes[i].be);
  return 0;
}
