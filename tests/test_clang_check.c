/* test_clang_check.c - the generated C of a spread of variants passes
 * libclang with -Wall -Wextra -Wshadow; an error or a warning put into a
 * template segment fails with the generated file, line and template line;
 * the CUDA front end takes a small device kernel and rejects a wrong one.
 * Skipped (exit 77) in a build without libclang. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "clang_check.h"
#include "core/core.h"
#include "emit.h"

#define MAX_VARIANTS 48

static double now(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every axis the brief names, one at a time from the default, then a few
 * combinations that put several #if branches of the template together. */
static int variants(tq_variant *out) {
  int n = 0;
  tq_variant v;
#define ADD(edit)            \
  do {                       \
    tqg_variant_default(&v); \
    edit;                    \
    out[n++] = v;            \
  } while (0)
  ADD((void)0);
  ADD(v.head_dim = 64);
  ADD(v.head_dim = 96);
  for (int b = 1; b <= 8; b++) ADD(v.key_bits = b);
  for (int b = 2; b <= 8; b++) ADD((v.key_bits = b, v.qjl = 1));
  for (int b = 1; b <= 8; b += 7) ADD(v.value_bits = b);
  ADD((v.outlier_count = 16, v.outlier_bits = 4));
  ADD((v.outlier_count = 16, v.outlier_bits = 16));
  ADD(v.value_method = TQ_VALUE_MINMAX);
  ADD(v.dtype = TQ_BF16);
  ADD(v.dtype = TQ_F32);
  ADD(v.layout = TQ_PAGED);
  ADD(v.norm_correction = 1);
  ADD(v.group = 4);
  ADD((v.dtype = TQ_BF16, v.outlier_count = 16, v.outlier_bits = 16));
  ADD((v.dtype = TQ_F32, v.value_method = TQ_VALUE_MINMAX));
  ADD((v.head_dim = 96, v.group = 2, v.key_bits = 3, v.outlier_count = 16,
       v.outlier_bits = 4, v.qjl = 1, v.dtype = TQ_BF16, v.layout = TQ_PAGED));
  ADD((v.head_dim = 64, v.value_method = TQ_VALUE_MINMAX, v.value_group = 16,
       v.dtype = TQ_F32, v.layout = TQ_PAGED, v.block_size = 32));
  ADD((v.head_dim = 128, v.key_bits = 8, v.value_bits = 2, v.qjl = 1,
       v.outlier_count = 16, v.outlier_bits = 16, v.norm_correction = 1));
  ADD((v.head_dim = 96, v.key_bits = 2, v.value_bits = 3,
       v.value_method = TQ_VALUE_MINMAX, v.value_group = 32,
       v.outlier_count = 16, v.outlier_bits = 8, v.dtype = TQ_F16));
#undef ADD
  return n;
}

/* (a) generated C of every variant: no diagnostic at all. */
static void check_variants(void) {
  static tq_variant vs[MAX_VARIANTS];
  int n = variants(vs);
  double total = 0, worst = 0;
  size_t bytes = 0;
  for (int i = 0; i < n; i++) {
    char sym[200], file[220], err[1024];
    tqg_c_symbol(&vs[i], sym, sizeof sym);
    snprintf(file, sizeof file, "%s.c", sym);
    tqg_source s;
    tqg_source_init(&s);
    tq_status st = tqg_emit_c(&vs[i], "test_clang_check", &s, err, sizeof err);
    CHECK(st == TQ_OK);
    if (st) {
      fprintf(stderr, "emit %s: %s\n", file, err);
      tqg_source_free(&s);
      continue;
    }
    double t0 = now();
    st = tqg_clang_check(&s, file, TQG_LANG_C, err, sizeof err);
    double dt = now() - t0;
    total += dt;
    worst = dt > worst ? dt : worst;
    bytes += s.len;
    CHECK(st == TQ_OK);
    if (st) fprintf(stderr, "%s\n", err);
    tqg_source_free(&s);
  }
  /* Timing is information for whoever decides where the check runs, not an
   * assertion. */
  printf(
      "test_clang_check: %d variants, %.1f ms per variant (worst %.1f ms), "
      "%.0f KiB of C per variant\n",
      n, 1e3 * total / n, 1e3 * worst, (double)bytes / n / 1024);
}

/* A small file: head as emitter lines, then body as a template segment
 * that starts at origin:line. */
static void fake_source(tqg_source *s, const char *head, const char *origin,
                        int line, const char *body) {
  tqg_source_init(s);
  tqg_source_mark(s, "emitter", 0);
  tqg_source_puts(s, head);
  tqg_source_mark(s, origin, line);
  tqg_source_puts(s, body);
}

/* Two emitter lines, then body from templates/c/fake.c:10 on (generated
 * line 3). */
static void fake_c(tqg_source *s, const char *body) {
  fake_source(s, "/* fake generated file */\n#include <stddef.h>\n",
              "templates/c/fake.c", 10, body);
}

/* (b), (c): injected faults, and the same file without them passing. */
static void check_faults(void) {
  char err[1024];
  tqg_source s;

  fake_c(&s,
         "size_t tq_fake(size_t x) {\n  size_t y = x + 1;\n"
         "  return y;\n}\n");
  CHECK(tqg_clang_check(&s, "fake_ok.c", TQG_LANG_C, err, sizeof err) == TQ_OK);
  CHECK(err[0] == 0);
  tqg_source_free(&s);

  /* undeclared identifier on the segment's 3rd line: generated line 5 */
  fake_c(&s,
         "size_t tq_fake(size_t x) {\n  size_t y = x + 1;\n"
         "  return y + not_declared;\n}\n");
  CHECK(tqg_clang_check(&s, "fake_error.c", TQG_LANG_C, err, sizeof err) ==
        TQ_ERR_COMPILE);
  CHECK_CONTAINS(err, "fake_error.c:5:");
  CHECK_CONTAINS(err, "error");
  CHECK_CONTAINS(err, "not_declared");
  CHECK_CONTAINS(err, "(from templates/c/fake.c:12)");
  CHECK(strstr(err, "more") == NULL); /* one diagnostic only */
  /* a short buffer is cut, not overrun */
  char tiny[12];
  CHECK(tqg_clang_check(&s, "fake_error.c", TQG_LANG_C, tiny, sizeof tiny) ==
        TQ_ERR_COMPILE);
  CHECK(strlen(tiny) == sizeof tiny - 1);
  tqg_source_free(&s);

  /* a warning fails too: unused variable on generated line 4 */
  fake_c(&s,
         "size_t tq_fake(size_t x) {\n  size_t unused = x;\n"
         "  return x;\n}\n");
  CHECK(tqg_clang_check(&s, "fake_warning.c", TQG_LANG_C, err, sizeof err) ==
        TQ_ERR_COMPILE);
  CHECK_CONTAINS(err, "fake_warning.c:4:");
  CHECK_CONTAINS(err, "warning: unused variable 'unused' [-Wunused-variable]");
  CHECK_CONTAINS(err, "(from templates/c/fake.c:11)");
  tqg_source_free(&s);

  /* -Wshadow and -Wextra are on; the first is reported, the rest counted */
  fake_c(&s,
         "int tq_fake(int x, int n) {\n  { int x = 2; n += x; }\n"
         "  return n + x < sizeof(int);\n}\n");
  CHECK(tqg_clang_check(&s, "fake_two.c", TQG_LANG_C, err, sizeof err) ==
        TQ_ERR_COMPILE);
  CHECK_CONTAINS(err, "fake_two.c:4:");
  CHECK_CONTAINS(err, "[-Wshadow]");
  CHECK_CONTAINS(err, "; and 1 more warning(s) or error(s)");
  tqg_source_free(&s);

  fake_c(&s, "int tq_fake(void) { return 0; }\n");
  s.oom = 1;
  CHECK(tqg_clang_check(&s, "fake_oom.c", TQG_LANG_C, err, sizeof err) ==
        TQ_ERR_NOMEM);
  tqg_source_free(&s);
}

/* The CUDA front end, device side, without the toolkit's headers. */
static void check_cuda(void) {
  static const char prelude[] =
      "#define __global__ __attribute__((global))\n"
      "#define __device__ __attribute__((device))\n";
  char err[1024];
  tqg_source s;
  fake_source(&s, prelude, "templates/cuda/fake.cu", 1,
              "__device__ static float twice(float x) { return 2.0f * x; }\n"
              "__global__ void tq_scale(float *x, int n) {\n"
              "  int i = (int)(__nvvm_read_ptx_sreg_tid_x() +\n"
              "                __nvvm_read_ptx_sreg_ctaid_x() *\n"
              "                __nvvm_read_ptx_sreg_ntid_x());\n"
              "  if (i < n) x[i] = twice(x[i]);\n"
              "}\n");
  tq_status st =
      tqg_clang_check(&s, "fake_ok.cu", TQG_LANG_CUDA, err, sizeof err);
  CHECK(st == TQ_OK);
  if (st) fprintf(stderr, "cuda: %s\n", err);
  tqg_source_free(&s);

  /* undeclared identifier on the segment's 2nd line: generated line 4 */
  fake_source(&s, prelude, "templates/cuda/fake.cu", 1,
              "__global__ void tq_bad(float *x) {\n"
              "  x[0] = missing;\n}\n");
  CHECK(tqg_clang_check(&s, "fake_bad.cu", TQG_LANG_CUDA, err, sizeof err) ==
        TQ_ERR_COMPILE);
  CHECK_CONTAINS(err, "fake_bad.cu:4:");
  CHECK_CONTAINS(err, "missing");
  CHECK_CONTAINS(err, "(from templates/cuda/fake.cu:2)");
  tqg_source_free(&s);
}

int main(void) {
  if (!tqg_clang_available()) {
    printf("test_clang_check: skipped: built without libclang\n");
    return 77;
  }
  check_variants();
  check_faults();
  check_cuda();
  return check_report("test_clang_check");
}
