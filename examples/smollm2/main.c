/* main.c - SmolLM2 with a TurboQuant KV cache through the tqgen runtime.
 *
 *   smollm2 generate [options] PROMPT   greedy continuation
 *   smollm2 ppl [options]               score a text with several caches
 *
 * The variant is picked by name from a spec and built on first use by the
 * runtime (JIT, cached on disk): the app ships a spec, not kernels. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core.h"
#include "eval.h"
#include "tokenizer.h"

#ifndef SMOL_DEFAULT_MODEL
#define SMOL_DEFAULT_MODEL "data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#endif
#ifndef SMOL_DEFAULT_SPEC
#define SMOL_DEFAULT_SPEC "specs/smollm2.lua"
#endif

typedef struct args {
  const char *mode, *model, *spec, *backend, *kv, *text, *prompt;
  int tokens, window, chunk, max_new, chat, threads, stats_stride, markdown;
} args;

static void usage(FILE *f) {
  fprintf(f,
          "usage: smollm2 generate [options] PROMPT\n"
          "       smollm2 ppl [options]\n"
          "options:\n"
          "  --model FILE     GGUF model (default %s)\n"
          "  --spec FILE      spec whose variants the caches come from "
          "(default %s)\n"
          "  --backend NAME   c, cuda, vulkan or wgsl (default c)\n"
          "  --kv LIST        caches, comma-separated: f32, minmax4, minmax8, "
          "or a variant of\n"
          "                   the spec by name (d64_g3_k4v4_f32) or short name "
          "(k4v4, k3v3_o16b4);\n"
          "                   a '+center' suffix centers keys and values, "
          "'+smooth' scales key\n"
          "                   channels (queries inversely); both exact, see "
          "README;\n"
          "                   sim:VARIANT[+sinkN] simulates the variant through "
          "the CPU reference,\n"
          "                   the first N positions unquantized\n"
          "                   generate: one cache (default f32); ppl: f32 "
          "always runs first\n"
          "  -n N             generate: new tokens (default 48)\n"
          "  --chat           generate: wrap the prompt in the model's chat "
          "template\n"
          "  --text FILE      ppl: the text to score\n"
          "  --tokens N       ppl: score the first N tokens of the text "
          "(default all)\n"
          "  --window N       ppl: tokens per window, each from an empty cache "
          "(default 1024)\n"
          "  --chunk N        tokens per forward call (default 128)\n"
          "  --stats N        ppl: compare every N-th query with exact "
          "attention (default 8;\n"
          "                   0 off)\n"
          "  --threads N      threads (default: all cores)\n"
          "  --markdown       ppl: print the table as markdown only\n",
          SMOL_DEFAULT_MODEL, SMOL_DEFAULT_SPEC);
}

static int parse_int(const char *flag, const char *s, int lo, int hi,
                     int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) {
    fprintf(stderr, "smollm2: %s %s: want an integer in %d..%d\n", flag, s, lo,
            hi);
    return 0;
  }
  *out = (int)v;
  return 1;
}

static int parse_args(int argc, char **argv, args *a) {
  *a = (args){.model = SMOL_DEFAULT_MODEL,
              .spec = SMOL_DEFAULT_SPEC,
              .backend = "c",
              .window = 1024,
              .chunk = 128,
              .max_new = 48,
              .stats_stride = 8};
  if (argc < 2) return 0;
  a->mode = argv[1];
  if (strcmp(a->mode, "generate") && strcmp(a->mode, "ppl")) {
    fprintf(stderr, "smollm2: unknown mode '%s'\n", a->mode);
    return 0;
  }
  for (int i = 2; i < argc; i++) {
    const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    const char **s = !strcmp(f, "--model")     ? &a->model
                     : !strcmp(f, "--spec")    ? &a->spec
                     : !strcmp(f, "--backend") ? &a->backend
                     : !strcmp(f, "--kv")      ? &a->kv
                     : !strcmp(f, "--text")    ? &a->text
                                               : NULL;
    int *n = !strcmp(f, "-n")          ? &a->max_new
             : !strcmp(f, "--tokens")  ? &a->tokens
             : !strcmp(f, "--window")  ? &a->window
             : !strcmp(f, "--chunk")   ? &a->chunk
             : !strcmp(f, "--threads") ? &a->threads
             : !strcmp(f, "--stats")   ? &a->stats_stride
                                       : NULL;
    if (!strcmp(f, "--chat")) {
      a->chat = 1;
    } else if (!strcmp(f, "--markdown")) {
      a->markdown = 1;
    } else if ((s || n) && !val) {
      fprintf(stderr, "smollm2: %s needs a value\n", f);
      return 0;
    } else if (s) {
      *s = argv[++i];
    } else if (n) {
      if (!parse_int(f, argv[++i], n == &a->stats_stride ? 0 : 1, 1 << 20, n))
        return 0;
    } else if (f[0] == '-' || a->prompt) {
      fprintf(stderr, "smollm2: unknown argument '%s'\n", f);
      return 0;
    } else {
      a->prompt = f;
    }
  }
  if (!strcmp(a->mode, "generate") && !a->prompt) {
    fprintf(stderr, "smollm2: generate needs a PROMPT\n");
    return 0;
  }
  if (!strcmp(a->mode, "ppl") && !a->text) {
    fprintf(stderr, "smollm2: ppl needs --text FILE\n");
    return 0;
  }
  return 1;
}

typedef struct app {
  args a;
  smol_gguf gguf;
  smol_model model;
  smol_tokenizer *tok;
  tq_backend *be;
  tqg_spec spec;
  int have_spec;
} app;

static int open_app(app *p) {
  char err[2048];
  if (smol_gguf_open(p->a.model, &p->gguf, err, sizeof err) ||
      smol_model_load(&p->gguf, &p->model, err, sizeof err) ||
      smol_tokenizer_load(&p->gguf, &p->tok, err, sizeof err)) {
    fprintf(stderr, "smollm2: %s: %s\n", p->a.model, err);
    return 0;
  }
  const smol_config *c = &p->model.cfg;
  fprintf(
      stderr,
      "model: %s: %d layers, dim %d, %d heads / %d kv heads of %d, vocab %d; "
      "tensors %s\n",
      p->a.model, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim,
      c->vocab, p->model.tensor_types);
  if (tqg_spec_load(p->a.spec, &p->spec, err, sizeof err)) {
    fprintf(stderr, "smollm2: %s\n", err);
    return 0;
  }
  p->have_spec = 1;
  return 1;
}

/* The backend is opened only when a TurboQuant cache asks for it. */
static int need_backend(app *p) {
  char err[1024];
  if (p->be) return 1;
  if (tq_open(p->a.backend, &p->be, err, sizeof err)) {
    fprintf(stderr, "smollm2: backend '%s': %s\n", p->a.backend, err);
    return 0;
  }
  return 1;
}

static void close_app(app *p) {
  if (p->have_spec) tqg_spec_free(&p->spec);
  tq_close(p->be);
  smol_tokenizer_free(p->tok);
  smol_model_free(&p->model);
  smol_gguf_close(&p->gguf);
}

static smol_kv_options base_options(const app *p, int capacity) {
  smol_kv_options o = {.capacity = capacity,
                       .max_chunk = p->a.chunk,
                       .threads = p->a.threads ? p->a.threads : 1};
#ifdef _OPENMP
  if (!p->a.threads) o.threads = omp_get_max_threads();
#endif
  return o;
}

static smol_kv *make_kv(app *p, const char *name, const smol_kv_options *o) {
  char err[4096];
  smol_kv *kv = NULL;
  int is_tq = strcmp(name, "f32") && strncmp(name, "minmax", 6) && strncmp(name, "sim:", 4) &&
              strncmp(name, "f32+", 4);
  if (is_tq && !need_backend(p)) return NULL;
  if (smol_kv_from_name(p->be, &p->spec, &p->model.cfg, name, o, &kv, err,
                        sizeof err)) {
    fprintf(stderr, "smollm2: %s\n", err);
    return NULL;
  }
  return kv;
}

static int generate(app *p) {
  const smol_config *c = &p->model.cfg;
  char err[2048], buf[256];
  const char *kvname = p->a.kv ? p->a.kv : "f32";
  char prompt[8192];
  if (p->a.chat)
    snprintf(prompt, sizeof prompt,
             "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
             p->a.prompt);
  else
    snprintf(prompt, sizeof prompt, "%s", p->a.prompt);
  int *tokens = NULL, n = 0;
  if (smol_tokenize(p->tok, prompt, strlen(prompt), p->a.chat, &tokens, &n, err,
                    sizeof err)) {
    fprintf(stderr, "smollm2: %s\n", err);
    return 0;
  }
  int cap = n + p->a.max_new;
  smol_kv_options o = base_options(p, cap < c->context ? cap : c->context);
  smol_kv *kv = n ? make_kv(p, kvname, &o) : NULL;
  float *logits = malloc((size_t)c->vocab * sizeof *logits);
  int ok = kv && logits && n + p->a.max_new <= c->context;
  if (kv)
    fprintf(stderr, "cache: %s, %zu bytes per token\n", smol_kv_label(kv),
            smol_kv_bytes_per_token(kv));
  if (!n) fprintf(stderr, "smollm2: the prompt is empty\n");
  fwrite(prompt, 1, strlen(prompt), stdout);
  for (int p0 = 0; ok && p0 < n; p0 += p->a.chunk) {
    int m = n - p0 < p->a.chunk ? n - p0 : p->a.chunk;
    ok = !smol_forward(&p->model, tokens + p0, m, p0, smol_kv_attend, kv,
                       logits, 1, err, sizeof err);
  }
  for (int i = 0, pos = n; ok && i < p->a.max_new; i++, pos++) {
    int next = 0;
    for (int v = 1; v < c->vocab; v++)
      next = logits[v] > logits[next] ? v : next;
    if (next == smol_tokenizer_eos(p->tok)) break;
    fwrite(buf, 1, (size_t)smol_token_bytes(p->tok, next, buf, sizeof buf),
           stdout);
    fflush(stdout);
    ok = !smol_forward(&p->model, &next, 1, pos, smol_kv_attend, kv, logits, 1,
                       err, sizeof err);
  }
  printf("\n");
  if (!ok && kv) fprintf(stderr, "smollm2: %s: %s\n", err, smol_kv_error(kv));
  free(logits);
  free(tokens);
  smol_kv_free(kv);
  return ok;
}

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "smollm2: %s: %s\n", path, strerror(errno));
    return NULL;
  }
  char *s = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 > cap) {
      char *q = realloc(s, cap = 2 * cap + 8192);
      if (!q) break;
      s = q;
    }
    size_t got = fread(s + n, 1, cap - n, f);
    n += got;
    if (!got) break;
  }
  fclose(f);
  *len = n;
  return s;
}

static void row(const args *a, const char *name, const smol_eval_result *r,
                double base_ppl) {
  char cos[64] = "-", top1[16] = "-";
  if (!(r->cosine != r->cosine))
    snprintf(cos, sizeof cos, "%.4f (%.4f, L%d)", r->cosine, r->cosine_worst,
             r->cosine_worst_layer);
  if (!(r->top1 != r->top1))
    snprintf(top1, sizeof top1, "%.2f%%", 100 * r->top1);
  printf("| %s | %.3f | %zu | %.4f | %+.2f%% | %s | %s |", name,
         r->bits_per_coord, r->bytes_per_token, r->ppl,
         100 * (r->ppl / base_ppl - 1), top1, cos);
  if (!a->markdown) printf(" %.1f s", r->seconds);
  printf("\n");
  fflush(stdout);
}

static int perplexity(app *p) {
  char err[4096];
  size_t len;
  char *text = read_text(p->a.text, &len);
  int *tokens = NULL, n = 0;
  if (!text) return 0;
  tq_status st =
      smol_tokenize(p->tok, text, len, 0, &tokens, &n, err, sizeof err);
  free(text);
  if (st) {
    fprintf(stderr, "smollm2: %s\n", err);
    return 0;
  }
  if (p->a.tokens && p->a.tokens < n) n = p->a.tokens;
  int window = p->a.window < n ? p->a.window : n;
  if (n < 2 || window > p->model.cfg.context) {
    fprintf(stderr,
            "smollm2: %d tokens, window %d: need 2 or more tokens and a window "
            "within "
            "the context (%d)\n",
            n, window, p->model.cfg.context);
    free(tokens);
    return 0;
  }
  smol_kv_options o = base_options(p, window);
  o.stats_stride = p->a.stats_stride;
  printf(
      "text: %s, %d tokens in windows of %d (each from an empty cache), chunks "
      "of %d; "
      "backend %s\n",
      p->a.text, n, window, p->a.chunk, p->a.backend);
  printf(
      "attention cosine: every %d-th query of every layer against exact "
      "attention on the "
      "unquantized keys and values; mean over layers (worst layer)\n\n",
      o.stats_stride);
  printf(
      "| cache | bits/coord | KV bytes/token | perplexity | vs f32 | top-1 = "
      "f32 | attention "
      "cosine |\n|---|---|---|---|---|---|---|\n");
  int *base = malloc((size_t)n * sizeof *base), ok = base != NULL;
  double base_ppl = 0;
  char list[2048];
  snprintf(list, sizeof list, "f32%s%s", p->a.kv ? "," : "",
           p->a.kv ? p->a.kv : "");
  char *save = NULL;
  for (char *name = strtok_r(list, ",", &save); ok && name;
       name = strtok_r(NULL, ",", &save)) {
    int first = base_ppl == 0;
    if (!first && !strcmp(name, "f32")) continue;
    smol_kv *kv = make_kv(p, name, &o);
    smol_eval_result r;
    ok = kv && !smol_eval_text(&p->model, kv, tokens, n, window, p->a.chunk,
                               first ? NULL : base, first ? base : NULL, &r,
                               err, sizeof err);
    if (kv && !ok) fprintf(stderr, "smollm2: cache %s: %s\n", name, err);
    if (ok) {
      if (first) base_ppl = r.ppl;
      row(&p->a, smol_kv_label(kv), &r, base_ppl);
    }
    smol_kv_free(kv);
  }
  free(base);
  free(tokens);
  return ok;
}

int main(int argc, char **argv) {
  app p = {0};
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    usage(stdout);
    return 0;
  }
  if (!parse_args(argc, argv, &p.a)) {
    usage(stderr);
    return 2;
  }
#ifdef _OPENMP
  if (p.a.threads) omp_set_num_threads(p.a.threads);
#endif
  int ok = open_app(&p) &&
           (!strcmp(p.a.mode, "generate") ? generate(&p) : perplexity(&p));
  close_app(&p);
  return ok ? 0 : 1;
}
