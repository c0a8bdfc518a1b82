/* bench_cuda.c - CUDA kernels of one variant on the GPU, through the
 * runtime: decode attention at B x context, encode throughput, prefill,
 * JIT cold compile and warm cache load, and the device-to-device copy rate
 * measured in the same run (the physical limit).  Prints tab-separated rows
 * that bench/gpu_report.py joins with the PyTorch SDPA baseline.
 *
 * usage: bench_cuda [--quick | --shape B CONTEXT | --prefill]  (bench/gpu.sh
 *        runs it; --shape times one decode shape only and --prefill the
 *        encode and the prefill only, for profilers) */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "tq.h"

#define HEADS 8
#define GROUP 4
#define DIM 128
#define CHUNK 4096 /* tokens encoded once, then copied to fill a cache */
#define RUNS 50
#define STREAM_SETS 4 /* encode buffer sets a stream cycles over */

/* The few driver calls the bench needs beyond the runtime: events and
 * device copies, on the context the cuda backend made current. */
typedef int (*ev_create_fn)(void **, unsigned);
typedef int (*ev_record_fn)(void *, void *);
typedef int (*ev_sync_fn)(void *);
typedef int (*ev_elapsed_fn)(float *, void *, void *);
typedef int (*copy_fn)(unsigned long long, unsigned long long, size_t);
static ev_create_fn ev_create;
static ev_record_fn ev_record;
static ev_sync_fn ev_sync;
static ev_elapsed_fn ev_elapsed;
static copy_fn dtod;

static int load_driver(void) {
  void *dl = dlopen("libcuda.so.1", RTLD_NOW);
  if (!dl) return 0;
  ev_create = (ev_create_fn)dlsym(dl, "cuEventCreate");
  ev_record = (ev_record_fn)dlsym(dl, "cuEventRecord");
  ev_sync = (ev_sync_fn)dlsym(dl, "cuEventSynchronize");
  ev_elapsed = (ev_elapsed_fn)dlsym(dl, "cuEventElapsedTime");
  dtod = (copy_fn)dlsym(dl, "cuMemcpyDtoD_v2");
  return ev_create && ev_record && ev_sync && ev_elapsed && dtod;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void die(tq_backend *be, const char *what) {
  fprintf(stderr, "bench_cuda: %s: %s\n", what, be ? tq_error(be) : "");
  exit(1);
}

static int cmp(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

/* Median milliseconds a launch over `runs` timings, each of `batch`
 * back-to-back launches between two events, cycling through the n launches
 * of l (distinct buffers).  batch 1 is one launch's latency, its launch
 * included; a longer batch is throughput as a stream of work sees it, each
 * launch's host cost hidden behind the kernels before it. */
static double time_batches(tq_backend *be, tq_kernel *k, const tq_launch *l, int n, int batch,
                           int runs) {
  void *e0, *e1;
  float ms[RUNS];
  ev_create(&e0, 0);
  ev_create(&e1, 0);
  for (int i = 0; i < 5; i++)
    if (tq_run(be, k, &l[i % n])) die(be, "warm-up");
  for (int i = 0; i < runs; i++) {
    ev_record(e0, NULL);
    for (int j = 0; j < batch; j++)
      if (tq_run(be, k, &l[j % n])) die(be, "run");
    ev_record(e1, NULL);
    ev_sync(e1);
    ev_elapsed(&ms[i], e0, e1);
    ms[i] /= (float)batch;
  }
  qsort(ms, (size_t)runs, sizeof(float), cmp);
  return ms[runs / 2];
}

/* Median milliseconds of `runs` launches, each between two events. */
static double time_run(tq_backend *be, tq_kernel *k, const tq_launch *l, int runs) {
  return time_batches(be, k, l, 1, 1, runs);
}

static tq_buffer *upload_random(tq_backend *be, size_t n, tq_dtype t, tqg_rng *r) {
  size_t bytes = n * (size_t)tqg_dtype_size(t);
  void *h = malloc(bytes);
  for (size_t i = 0; i < n; i++) tqg_store(h, t, i, tqg_rng_normal(r));
  tq_buffer *b;
  if (tq_alloc(be, bytes, &b) || tq_write(be, b, 0, h, bytes)) die(be, "upload");
  free(h);
  return b;
}

static double copy_bandwidth(tq_backend *be) {
  size_t bytes = (size_t)1 << 30;
  tq_buffer *a, *b;
  if (tq_alloc(be, bytes, &a) || tq_alloc(be, bytes, &b)) die(be, "alloc 1 GiB");
  void *e0, *e1;
  float ms[20];
  ev_create(&e0, 0);
  ev_create(&e1, 0);
  for (int i = 0; i < 20; i++) {
    ev_record(e0, NULL);
    dtod((unsigned long long)tq_buffer_ptr(b), (unsigned long long)tq_buffer_ptr(a), bytes);
    ev_record(e1, NULL);
    ev_sync(e1);
    ev_elapsed(&ms[i], e0, e1);
  }
  qsort(ms, 20, sizeof(float), cmp);
  tq_free(be, a);
  tq_free(be, b);
  return 2.0 * bytes / (ms[10] * 1e-3) / 1e9; /* read + write, GB/s */
}

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  int prefill_only = argc > 1 && !strcmp(argv[1], "--prefill");
  int only_b = 0, only_ctx = 0;
  if (argc > 3 && !strcmp(argv[1], "--shape")) {
    only_b = atoi(argv[2]);
    only_ctx = atoi(argv[3]);
  }
  char err[1024], name[160];
  tq_backend *be;
  if (!load_driver()) die(NULL, "libcuda.so.1 not loadable");
  tq_variant v;
  tqg_variant_default(&v);
  v.head_dim = DIM;
  v.group = GROUP;
  tqg_variant_name(&v, name, sizeof name);

  /* JIT: a cold compile into an empty cache, then a warm load from it.
   * Empty means NVIDIA's too: NVRTC 13 keeps compiled programs in the
   * driver's compute cache (CUDA_CACHE_PATH), so a source compiled by any
   * earlier process would come back in 0.1 s. */
  char cache[] = "/tmp/tqgen-bench-cache-XXXXXX"; /* mkdtemp's template */
  char nv_cache[64];
  if (!mkdtemp(cache)) die(NULL, "mkdtemp");
  setenv("XDG_CACHE_HOME", cache, 1);
  snprintf(nv_cache, sizeof nv_cache, "%s/nv", cache);
  setenv("CUDA_CACHE_PATH", nv_cache, 1);
  double t0 = now();
  if (tq_open("cuda", &be, err, sizeof err)) {
    fprintf(stderr, "bench_cuda: %s\n", err);
    return 1;
  }
  double t_open = now() - t0;
  tq_kernel *kdec, *kenc, *kpre;
  t0 = now();
  if (tq_get_kernel(be, &v, TQ_OP_DECODE, &kdec)) die(be, "jit");
  double t_cold = now() - t0;
  const char *cold_origin = tq_kernel_origin(kdec);
  tq_close(be);
  if (tq_open("cuda", &be, err, sizeof err)) die(NULL, err);
  t0 = now();
  if (tq_get_kernel(be, &v, TQ_OP_DECODE, &kdec)) die(be, "cache load");
  double t_warm = now() - t0;
  printf("jit\t%s\tcold_s\t%.3f\tcold_origin\t%s\twarm_load_ms\t%.3f\twarm_origin\t%s\topen_s\t%.3f\n",
         name, t_cold, cold_origin, 1e3 * t_warm, tq_kernel_origin(kdec), t_open);
  if (tq_get_kernel(be, &v, TQ_OP_ENCODE, &kenc) ||
      tq_get_kernel(be, &v, TQ_OP_PREFILL, &kpre))
    die(be, "kernels");

  double copy = copy_bandwidth(be);
  printf("copy\tGBps\t%.1f\n", copy);
  fflush(stdout);

  tqg_rng rng;
  tqg_rng_seed(&rng, 2026);
  size_t kslot = tq_key_slot_bytes(&v), vslot = tq_value_slot_bytes(&v);

  /* Encode CHUNK tokens of one sequence: the staging cache, and the encode
   * throughput (bytes read + written over time). */
  tq_buffer *kin = upload_random(be, (size_t)CHUNK * HEADS * DIM, v.dtype, &rng);
  tq_buffer *vin = upload_random(be, (size_t)CHUNK * HEADS * DIM, v.dtype, &rng);
  tq_buffer *kst, *vst, *len1;
  int32_t chunk_len = CHUNK;
  if (tq_alloc(be, kslot * HEADS * CHUNK, &kst) || tq_alloc(be, vslot * HEADS * CHUNK, &vst) ||
      tq_alloc(be, 4, &len1) || tq_write(be, len1, 0, &chunk_len, 4))
    die(be, "staging");
  tq_launch enc = {.batch = 1, .kv_heads = HEADS, .n_tokens = CHUNK, .capacity = CHUNK,
                   .k_cache = kst, .v_cache = vst, .seq_lens = len1, .k = kin, .v = vin};
  /* One launch alone, its latency with the launch, on buffers the run
   * before left in L2 (21 MB of a 50 MB L2 on an H100); and a stream of 20
   * launches cycling over STREAM_SETS buffer sets, 84 MB in all, so each
   * launch finds its inputs evicted by the three before it. */
  tq_launch encs[STREAM_SETS] = {enc};
  for (int i = 1; i < STREAM_SETS; i++) {
    encs[i] = enc;
    encs[i].k = upload_random(be, (size_t)CHUNK * HEADS * DIM, v.dtype, &rng);
    encs[i].v = upload_random(be, (size_t)CHUNK * HEADS * DIM, v.dtype, &rng);
    if (tq_alloc(be, kslot * HEADS * CHUNK, &encs[i].k_cache) ||
        tq_alloc(be, vslot * HEADS * CHUNK, &encs[i].v_cache))
      die(be, "stream sets");
  }
  double ms = time_run(be, kenc, &enc, 20), sms = time_batches(be, kenc, encs, STREAM_SETS, 20, 9);
  for (int i = 1; i < STREAM_SETS; i++) {
    tq_free(be, encs[i].k);
    tq_free(be, encs[i].v);
    tq_free(be, encs[i].k_cache);
    tq_free(be, encs[i].v_cache);
  }
  double enc_bytes = (double)CHUNK * HEADS * (2.0 * DIM * 2 + kslot + vslot);
  printf("encode\ttokens\t%d\tms\t%.4f\tGBps\t%.1f\tpct_copy\t%.1f"
         "\tstream_ms\t%.4f\tstream_GBps\t%.1f\tstream_pct_copy\t%.1f\n",
         CHUNK, ms, enc_bytes / (ms * 1e-3) / 1e9, 100 * enc_bytes / (ms * 1e-3) / 1e9 / copy,
         sms, enc_bytes / (sms * 1e-3) / 1e9, 100 * enc_bytes / (sms * 1e-3) / 1e9 / copy);

  static const int batches[] = {1, 8, 32};
  static const int contexts[] = {4096, 16384, 32768, 131072};
  for (int bi = 0; bi < 3; bi++)
    for (int ci = 0; ci < 4; ci++) {
      int B = batches[bi], ctx = contexts[ci];
      if (quick && (B > 8 || ctx > 16384)) continue;
      if (prefill_only) continue;
      if (only_b && (B != only_b || ctx != only_ctx)) continue;
      tq_buffer *kc, *vc, *lens, *q, *out, *ws = NULL;
      if (tq_alloc(be, kslot * HEADS * B * (size_t)ctx, &kc) ||
          tq_alloc(be, vslot * HEADS * B * (size_t)ctx, &vc) || tq_alloc(be, 4 * (size_t)B, &lens))
        die(be, "cache alloc");
      for (int b = 0; b < B; b++)
        for (int h = 0; h < HEADS; h++)
          for (int c = 0; c < ctx / CHUNK; c++) {
            size_t dst = ((size_t)b * HEADS + h) * ctx + (size_t)c * CHUNK, src = (size_t)h * CHUNK;
            dtod((unsigned long long)((char *)tq_buffer_ptr(kc) + dst * kslot),
                 (unsigned long long)((char *)tq_buffer_ptr(kst) + src * kslot), kslot * CHUNK);
            dtod((unsigned long long)((char *)tq_buffer_ptr(vc) + dst * vslot),
                 (unsigned long long)((char *)tq_buffer_ptr(vst) + src * vslot), vslot * CHUNK);
          }
      int32_t *hl = malloc(sizeof(int32_t) * B);
      for (int b = 0; b < B; b++) hl[b] = ctx;
      tq_write(be, lens, 0, hl, sizeof(int32_t) * B);
      free(hl);
      q = upload_random(be, (size_t)B * HEADS * GROUP * DIM, v.dtype, &rng);
      if (tq_alloc(be, (size_t)B * HEADS * GROUP * DIM * 2, &out)) die(be, "out");
      tq_launch l = {.batch = B, .kv_heads = HEADS, .n_tokens = 1, .capacity = ctx,
                     .k_cache = kc, .v_cache = vc, .seq_lens = lens, .q = q, .out = out};
      size_t wsb = tq_workspace_size(kdec, &l);
      if (wsb && tq_alloc(be, wsb, &ws)) die(be, "workspace");
      l.workspace = ws;
      ms = time_run(be, kdec, &l, RUNS);
      double bytes = (double)B * HEADS * ctx * (kslot + vslot);
      printf("decode\tB\t%d\tctx\t%d\tms\t%.4f\tGBps\t%.1f\tpct_copy\t%.1f\n", B, ctx, ms,
             bytes / (ms * 1e-3) / 1e9, 100 * bytes / (ms * 1e-3) / 1e9 / copy);
      fflush(stdout);
      tq_free(be, kc);
      tq_free(be, vc);
      tq_free(be, lens);
      tq_free(be, q);
      tq_free(be, out);
      tq_free(be, ws);
    }

  if (only_b) {
    tq_close(be);
    return 0;
  }
  /* Prefill: a 4K prompt attending causally over its own packed cache. */
  {
    tq_buffer *q = upload_random(be, (size_t)CHUNK * HEADS * GROUP * DIM, v.dtype, &rng), *out, *ws = NULL;
    if (tq_alloc(be, (size_t)CHUNK * HEADS * GROUP * DIM * 2, &out)) die(be, "out");
    tq_launch l = {.batch = 1, .kv_heads = HEADS, .n_tokens = CHUNK, .capacity = CHUNK,
                   .k_cache = kst, .v_cache = vst, .seq_lens = len1, .q = q, .out = out};
    size_t wsb = tq_workspace_size(kpre, &l);
    if (wsb && tq_alloc(be, wsb, &ws)) die(be, "workspace");
    l.workspace = ws;
    ms = time_run(be, kpre, &l, 10);
    printf("prefill\ttokens\t%d\tms\t%.4f\n", CHUNK, ms);
    tq_free(be, q);
    tq_free(be, out);
    tq_free(be, ws);
  }
  if (prefill_only) {
    tq_close(be);
    return 0;
  }

  /* Long-context correctness on the GPU: decode at 32K against the CPU
   * reference (outputs poisoned, fresh inputs). */
  tq_verify_options o = {.batch = 2, .kv_heads = HEADS, .context = quick ? 4096 : 32768, .n_tokens = 1};
  tq_verify_result r;
  if (tq_verify(be, &v, TQ_OP_DECODE, &o, &r)) die(be, "verify");
  printf("verify_long\tctx\t%d\trel_l2\t%.3g\t%s\n", o.context, r.rel_l2, r.passed ? "pass" : "FAIL");
  o.n_tokens = 8;
  if (tq_verify(be, &v, TQ_OP_DECODE, &o, &r)) die(be, "verify");
  printf("verify_long\tctx\t%d\tqlen8_rel_l2\t%.3g\t%s\n", o.context, r.rel_l2, r.passed ? "pass" : "FAIL");
  /* Prefill of a long prompt (the tensor-core path for f16): 1024 new
   * tokens after 4096 cached ones. */
  o.context = 4096 + 1024;
  o.n_tokens = 1024;
  o.batch = 1;
  if (tq_verify(be, &v, TQ_OP_PREFILL, &o, &r)) die(be, "verify");
  printf("verify_long\tctx\t%d\tprefill1024_rel_l2\t%.3g\t%s\n", o.context, r.rel_l2,
         r.passed ? "pass" : "FAIL");
  tq_close(be);
  return 0;
}
