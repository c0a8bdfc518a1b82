/* main.c - the tqgen command line: the only place that exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "output.h"
#include "spec.h"
#include "tq.h"

static const char usage[] =
    "usage: tqgen SPEC -o DIR [--backend NAME]... [--aot]\n"
    "       tqgen SPEC --list\n"
    "       tqgen SPEC --verify [--backend NAME]...\n"
    "       tqgen SPEC --print-files [--backend NAME]...\n"
    "       tqgen --codebook BITS\n"
    "\n"
    "  -o DIR          write kernels, <family>_dispatch.{c,h} and manifest.json\n"
    "  --backend NAME  c, cuda, vulkan or wgsl (repeatable; default: the spec's)\n"
    "  --aot           also build binaries for backends that have them\n"
    "  --list          print the variants with bits per coordinate and bytes per token\n"
    "  --verify        run every variant on every available backend against the\n"
    "                  CPU reference and print the errors\n"
    "  --print-files   print the files -o would write, one per line (for build\n"
    "                  systems: cmake's tqgen_add_kernels uses it)\n"
    "  --codebook BITS print the Lloyd-Max codebook for N(0,1) at BITS (1..8)\n";

static int die(const char *fmt, const char *arg) {
  fprintf(stderr, "tqgen: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  return 2;
}

static int print_codebook(const char *arg) {
  char *end;
  long bits = strtol(arg, &end, 10);
  if (*end || bits < 1 || bits > TQ_MAX_BITS)
    return die("--codebook: '%s' is not a bit width; allowed 1..8", arg);
  tqg_codebook cb;
  tqg_lloyd_max((int)bits, &cb);
  printf("# Lloyd-Max quantizer for N(0,1), %ld bits (%d levels), %d iterations\n",
         bits, cb.levels, cb.iterations);
  printf("# mse %.10g\n# index  centroid          upper boundary\n", cb.mse);
  for (int i = 0; i < cb.levels; i++) {
    if (i + 1 < cb.levels)
      printf("%5d  %+.12f  %+.12f\n", i, cb.centroid[i], cb.boundary[i]);
    else
      printf("%5d  %+.12f  +inf\n", i, cb.centroid[i]);
  }
  return 0;
}

static void list(const tqg_spec *s) {
  char name[160];
  printf("%-44s %8s %10s %8s\n", "variant", "bits/co", "bytes/tok", "vs f16");
  for (int i = 0; i < s->n_variants; i++) {
    const tq_variant *v = &s->variants[i];
    tqg_variant_name(v, name, sizeof name);
    int bpt = tqg_bytes_per_token(v);
    printf("%-44s %8.3f %10d %7.2fx\n", name, tqg_bits_per_coord(v), bpt,
           4.0 * v->head_dim / bpt);
  }
  printf("(bytes per token per kv head, K and V; f16 stores %d bytes at "
         "head_dim %d)\n", s->n_variants ? 4 * s->variants[0].head_dim : 0,
         s->n_variants ? s->variants[0].head_dim : 0);
}

static int verify(const tqg_spec *s, unsigned backends) {
  char name[160], err[1024];
  int failures = 0, ran = 0;
  printf("%-40s %-7s %-8s %-6s %11s %11s %9s  %s\n", "variant", "backend", "op",
         "from", "rel_l2/idx", "max_err", "tol", "result");
  for (int b = 0; b < TQG_BACKEND_COUNT; b++) {
    if (!((backends >> b) & 1)) continue;
    tq_backend *be;
    tq_status st = tq_open(tqg_backend_name((tqg_backend)b), &be, err, sizeof err);
    if (st) {
      printf("%-40s %-7s %-8s %-6s %11s %11s %9s  unavailable: %s\n", "*",
             tqg_backend_name((tqg_backend)b), "*", "", "", "", "", err);
      continue;
    }
    for (int i = 0; i < s->n_variants; i++) {
      tqg_variant_name(&s->variants[i], name, sizeof name);
      for (int op = 0; op < TQ_OP_COUNT; op++) {
        tq_verify_result r;
        ran++;
        st = tq_verify(be, &s->variants[i], (tq_op)op, NULL, &r);
        if (st) {
          failures++;
          printf("%-40s %-7s %-8s %-6s %11s %11s %9s  ERROR %s\n", name,
                 tq_backend_label(be), tqg_op_name((tq_op)op), "", "", "", "",
                 tq_error(be));
          continue;
        }
        failures += !r.passed;
        double main_err = op == TQ_OP_ENCODE ? r.index_mismatch : r.rel_l2;
        double second = op == TQ_OP_ENCODE ? r.max_field_rel : r.max_abs;
        /* Where a backend has several paths, say which one ran (so a
         * fallback never passes for the fast path). */
        printf("%-40s %-7s %-8s %-6s %11.3e %11.3e %9.1e  %s%s%s%s%s%s\n", name,
               tq_backend_label(be), tqg_op_name((tq_op)op), r.origin, main_err,
               second, r.tolerance, r.passed ? "pass" : "FAIL",
               r.passed ? "" : ": ", r.passed ? "" : r.detail,
               r.path ? " [" : "", r.path ? r.path : "", r.path ? "]" : "");
      }
    }
    tq_close(be);
  }
  printf("%d kernels verified, %d failed\n", ran, failures);
  return failures || !ran ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *spec_path = NULL, *dir = NULL, *codebook = NULL;
  int do_list = 0, do_verify = 0, aot = 0, do_files = 0;
  unsigned chosen = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(a, "-o") || !strcmp(a, "--backend") || !strcmp(a, "--codebook")) {
      if (i + 1 >= argc) return die("%s needs a value", a) + !fputs(usage, stderr);
      const char *val = argv[++i];
      if (!strcmp(a, "-o")) dir = val;
      else if (!strcmp(a, "--codebook")) codebook = val;
      else {
        tqg_backend b = tqg_backend_parse(val);
        if (b == TQG_BACKEND_COUNT)
          return die("--backend '%s': allowed c, cuda, vulkan, wgsl", val);
        chosen |= 1u << b;
      }
    } else if (!strcmp(a, "--aot")) aot = 1;
    else if (!strcmp(a, "--list")) do_list = 1;
    else if (!strcmp(a, "--verify")) do_verify = 1;
    else if (!strcmp(a, "--print-files")) do_files = 1;
    else if (a[0] == '-') return die("unknown option '%s' (see --help)", a);
    else if (spec_path) return die("more than one spec given ('%s')", a);
    else spec_path = a;
  }
  if (codebook) return print_codebook(codebook);
  if (!spec_path) {
    fputs(usage, stderr);
    return 2;
  }
  if (!dir && !do_list && !do_verify && !do_files)
    return die("%s: nothing to do: give -o DIR, --list or --verify", spec_path);
  tqg_spec spec;
  char err[2048];
  if (tqg_spec_load(spec_path, &spec, err, sizeof err)) {
    fprintf(stderr, "tqgen: %s\n", err);
    return 1;
  }
  unsigned want = 0;
  for (int b = 0; b < TQG_BACKEND_COUNT; b++)
    if (spec.backend[b].enabled) want |= 1u << b;
  if (chosen) {
    for (int b = 0; b < TQG_BACKEND_COUNT; b++)
      if ((chosen >> b & 1) && !(want >> b & 1)) {
        fprintf(stderr, "tqgen: --backend %s: %s does not list it in backends\n",
                tqg_backend_name((tqg_backend)b), spec_path);
        tqg_spec_free(&spec);
        return 1;
      }
    want = chosen;
  }
  int rc = 0;
  if (do_list) list(&spec);
  if (do_files) tqg_print_files(&spec, want & tqg_emittable_backends(), stdout);
  if (dir) {
    unsigned can = tqg_emittable_backends(), missing = want & ~can;
    if (missing && chosen) {
      for (int b = 0; b < TQG_BACKEND_COUNT; b++)
        if (missing >> b & 1)
          fprintf(stderr, "tqgen: --backend %s: this build has no %s emitter\n",
                  tqg_backend_name((tqg_backend)b), tqg_backend_name((tqg_backend)b));
      rc = 1;
    } else {
      for (int b = 0; b < TQG_BACKEND_COUNT; b++)
        if (missing >> b & 1)
          fprintf(stderr, "tqgen: note: %s lists backend %s, which this build "
                          "cannot emit yet; skipped\n",
                  spec_path, tqg_backend_name((tqg_backend)b));
      tqg_output_options o = {dir, want & can, aot, 0};
      if (tqg_write_outputs(&spec, &o, err, sizeof err)) {
        fprintf(stderr, "tqgen: %s: %s\n", spec_path, err);
        rc = 1;
      } else {
        fprintf(stderr, "tqgen: %d variants of %s written to %s\n",
                spec.n_variants, spec.family, dir);
      }
    }
  }
  if (!rc && do_verify) rc = verify(&spec, want);
  tqg_spec_free(&spec);
  return rc;
}
