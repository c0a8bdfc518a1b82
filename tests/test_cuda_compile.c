/* test_cuda_compile.c - the CUDA backend without a GPU: every variant of the
 * shipped specs compiles with NVRTC for sm_80 and sm_90 into a CUBIN; a
 * compile error names the template line it came from; tq_open("cuda")
 * fails cleanly where there is no driver.  Skipped (exit 77) without NVRTC.
 *
 * Usage: test_cuda_compile <source dir>
 * TQ_TEST_JOBS sets how many compiles run at once (default: online CPUs). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/core.h"
#include "cuda.h"
#include "emit.h"
#include "spec.h"
#include "tq.h"

#define MAX_JOBS 64

static const char *const specs[] = {"specs/qwen3.lua", "specs/llama3.lua",
                                    "specs/smollm2.lua"};
static const char *const archs[] = {"sm_80", "sm_90"};
#define N_ARCHS (sizeof archs / sizeof *archs)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A CUBIN is an ELF image. */
static int is_elf(const void *p, size_t n) {
  return n > 4 && !memcmp(p,
                          "\x7f"
                          "ELF",
                          4);
}

/* One (variant, arch) compile; filled by a worker. */
typedef struct job {
  const tq_variant *v;
  const char *arch;
  char name[160];
  tq_status st;
  size_t bytes;
  int elf, emit_failed;
  double seconds;
  char err[1024];
} job;

typedef struct pool {
  job *jobs;
  int n, next;
  pthread_mutex_t lock;
} pool;

static void run_job(job *j) {
  tqg_source s;
  tqg_source_init(&s);
  void *img = NULL;
  j->st = tqg_emit_cuda(j->v, "test_cuda_compile", &s, j->err, sizeof j->err);
  if (!j->st) {
    double t0 = now();
    j->st = tq_cuda_compile(j->v, j->arch, &s, &img, &j->bytes, j->err,
                            sizeof j->err);
    j->seconds = now() - t0;
    j->elf = img && is_elf(img, j->bytes);
  } else {
    j->emit_failed = 1;
  }
  free(img);
  tqg_source_free(&s);
}

static void *worker(void *arg) {
  pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->lock);
    int i = p->next < p->n ? p->next++ : -1;
    pthread_mutex_unlock(&p->lock);
    if (i < 0) return NULL;
    run_job(&p->jobs[i]);
  }
}

static int jobs_wanted(void) {
  const char *env = getenv("TQ_TEST_JOBS");
  long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_JOBS ? MAX_JOBS : (int)n;
}

/* Every distinct variant of the specs, for every arch. */
static void check_specs(const char *src_dir) {
  tqg_spec loaded[sizeof specs / sizeof *specs];
  int n_loaded = 0, n_variants = 0;
  for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/%s", src_dir, specs[i]);
    tq_status st = tqg_spec_load(path, &loaded[n_loaded], err, sizeof err);
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "  %s\n", err);
      continue;
    }
    CHECK(loaded[n_loaded].backend[TQG_BACKEND_CUDA].enabled);
    n_variants += loaded[n_loaded++].n_variants;
  }
  job *jobs = calloc((size_t)n_variants * N_ARCHS, sizeof *jobs);
  CHECK(jobs != NULL);
  if (!jobs) return;
  int n = 0, distinct = 0;
  for (int i = 0; i < n_loaded; i++)
    for (int k = 0; k < loaded[i].n_variants; k++) {
      const tq_variant *v = &loaded[i].variants[k];
      char name[160];
      tqg_variant_name(v, name, sizeof name);
      int seen = 0;
      for (int j = 0; j < n && !seen; j++) seen = !strcmp(jobs[j].name, name);
      if (seen) continue; /* specs share variants */
      distinct++;
      for (size_t a = 0; a < N_ARCHS; a++) {
        jobs[n].v = v;
        jobs[n].arch = archs[a];
        snprintf(jobs[n].name, sizeof jobs[n].name, "%s", name);
        n++;
      }
    }
  pool p = {jobs, n, 0, PTHREAD_MUTEX_INITIALIZER};
  int n_threads = jobs_wanted();
  if (n_threads > n) n_threads = n > 0 ? n : 1;
  pthread_t threads[MAX_JOBS];
  double t0 = now();
  int started = 0;
  for (int t = 0; t < n_threads; t++)
    started += !pthread_create(&threads[started], NULL, worker, &p);
  if (!started) worker(&p);
  for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
  double wall = now() - t0;
  double sum[N_ARCHS] = {0}, worst = 0;
  size_t bytes[N_ARCHS] = {0};
  const job *slowest = NULL;
  int ok = 0;
  for (int i = 0; i < n; i++) {
    job *j = &jobs[i];
    size_t a = strcmp(j->arch, archs[0]) ? 1 : 0;
    CHECK(j->st == TQ_OK);
    CHECK(j->st || (j->bytes > 0 && j->elf));
    if (j->st) {
      fprintf(stderr, "  %s %s: %s%s\n", j->name, j->arch,
              j->emit_failed ? "emit: " : "", j->err);
      continue;
    }
    ok++;
    sum[a] += j->seconds;
    bytes[a] += j->bytes;
    if (j->seconds > worst) worst = j->seconds, slowest = j;
    printf("  %-44s %s %6.2f s %7zu bytes\n", j->name, j->arch, j->seconds,
           j->bytes);
  }
  printf(
      "compiled %d of %d (%d variants x %zu archs) in %.1f s wall, "
      "%d at a time\n",
      ok, n, distinct, N_ARCHS, wall, n_threads);
  for (size_t a = 0; a < N_ARCHS; a++) {
    int per = n / (int)N_ARCHS;
    printf(
        "  %s: %.1f s of NVRTC in all, %.2f s per variant, %zu KB of "
        "CUBIN per variant\n",
        archs[a], sum[a], per ? sum[a] / per : 0.0,
        per ? bytes[a] / (size_t)per / 1024 : 0);
  }
  if (slowest)
    printf("  slowest: %s %s %.2f s\n", slowest->name, slowest->arch, worst);
  free(jobs);
  for (int i = 0; i < n_loaded; i++) tqg_spec_free(&loaded[i]);
}

/* A hand-written kernel: CUBIN for sm_XY, PTX text for compute_XY; an
 * undeclared identifier on the second line of a segment marked as
 * templates/cuda/fake.cu:20 is reported at fake.cu:21. */
static void check_small(void) {
  static const char good[] =
      "extern \"C\" __global__ void tqk_fake(int *p) {\n"
      "  p[threadIdx.x] = (int)threadIdx.x;\n"
      "}\n";
  static const char bad[] =
      "extern \"C\" __global__ void tqk_fake(int *p) {\n"
      "  p[threadIdx.x] = undeclared_thing;\n"
      "}\n";
  char err[1024] = "";
  void *img = NULL;
  size_t n = 0;
  tqg_source s;

  tqg_source_init(&s);
  tqg_source_mark(&s, "templates/cuda/fake.cu", 20);
  tqg_source_puts(&s, good);
  tq_status st = tq_cuda_compile(NULL, "sm_80", &s, &img, &n, err, sizeof err);
  CHECK(st == TQ_OK);
  CHECK(img && is_elf(img, n));
  free(img);
  img = NULL;
  st = tq_cuda_compile(NULL, "compute_80", &s, &img, &n, err, sizeof err);
  CHECK(st == TQ_OK);
  CHECK(img && n > 1 && ((char *)img)[n - 1] == 0); /* loadable PTX text */
  if (img && n > 1) CHECK_CONTAINS((char *)img, ".entry tqk_fake");
  free(img);
  img = NULL;
  st = tq_cuda_compile(NULL, "sm80", &s, &img, &n, err, sizeof err);
  CHECK(st == TQ_ERR_INVALID);
  CHECK_CONTAINS(err, "sm80");
  tqg_source_free(&s);

  tqg_source_init(&s);
  tqg_source_mark(&s, "templates/cuda/fake.cu", 20);
  tqg_source_puts(&s, bad);
  st = tq_cuda_compile(NULL, "sm_90", &s, &img, &n, err, sizeof err);
  CHECK(st == TQ_ERR_COMPILE);
  CHECK(img == NULL);
  CHECK_CONTAINS(err, "nvrtc: ");
  CHECK_CONTAINS(err, "undeclared_thing");
  CHECK_CONTAINS(err, "templates/cuda/fake.cu:21");
  printf("broken source: %s\n", err);
  tqg_source_free(&s);
}

/* Without a driver tq_open("cuda") is TQ_ERR_UNAVAILABLE with a message;
 * with one it opens.  An unknown backend's message lists the built ones. */
static void check_open(void) {
  char err[512] = "";
  tq_backend *be = NULL;
  tq_status st = tq_open("cuda", &be, err, sizeof err);
  CHECK(st == TQ_OK || st == TQ_ERR_UNAVAILABLE);
  if (st == TQ_OK) {
    CHECK(be != NULL);
    printf("tq_open(\"cuda\"): a GPU is present\n");
    tq_close(be);
  } else {
    CHECK(be == NULL);
    CHECK_CONTAINS(err, "cuda backend unavailable: ");
    printf("tq_open(\"cuda\"): %s\n", err);
  }
  st = tq_open("no-such-backend", &be, err, sizeof err);
  CHECK(st == TQ_ERR_UNAVAILABLE);
  CHECK_CONTAINS(err, "built: c, cuda");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_cuda_compile <source dir>\n");
    return 2;
  }
  check_open();
  char why[1024];
  if (tq_cuda_nvrtc_available(why, sizeof why) != TQ_OK) {
    if (check_failures) return check_report("test_cuda_compile");
    printf("skipped: %s\n", why);
    return 77;
  }
  printf("%s\n", why);
  check_small();
  check_specs(argv[1]);
  return check_report("test_cuda_compile");
}
