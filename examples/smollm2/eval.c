/* eval.c - caches by name and text scoring (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

/* Does the spec's variant v fit the model (f32 activations, contiguous)? */
static int fits(const tq_variant *v, const smol_config *cfg) {
  return v->head_dim == cfg->head_dim &&
         v->group == cfg->n_heads / cfg->n_kv_heads && v->dtype == TQ_F32 &&
         v->layout == TQ_CONTIGUOUS;
}

static const tq_variant *find_variant(const tqg_spec *spec,
                                      const smol_config *cfg,
                                      const char *name) {
  char full[160], shortname[200];
  for (int i = 0; i < spec->n_variants; i++) {
    const tq_variant *v = &spec->variants[i];
    if (!fits(v, cfg)) continue;
    tqg_variant_name(v, full, sizeof full);
    int pre = snprintf(shortname, sizeof shortname, "d%d_g%d_", v->head_dim,
                       v->group);
    snprintf(shortname + pre, sizeof shortname - (size_t)pre, "%s_f32", name);
    if (!strcmp(full, name) || !strcmp(full, shortname)) return v;
  }
  return NULL;
}

tq_status smol_kv_from_name(tq_backend *be, const tqg_spec *spec,
                            const smol_config *cfg, const char *name,
                            const smol_kv_options *base, smol_kv **out,
                            char *err, size_t errn) {
  smol_kv_options o = *base;
  char plain[160];
  snprintf(plain, sizeof plain, "%s", name);
  /* Trailing options, in any order: "+center", "+smooth". */
  for (int more = 1; more;) {
    size_t len = strlen(plain);
    more = 0;
    static const char *const suffix[] = {"+center", "+smooth"};
    for (int i = 0; i < 2; i++) {
      size_t sl = strlen(suffix[i]);
      if (len > sl && !strcmp(plain + len - sl, suffix[i])) {
        *(i ? &o.smooth : &o.center) = 1;
        plain[len - sl] = 0;
        more = 1;
        break;
      }
    }
  }
  /* "sim:<variant>[+sinkN]": the variant simulated through the reference,
   * the first N positions unquantized. */
  int sim = !strncmp(plain, "sim:", 4);
  char *sink = strstr(plain, "+sink");
  if (sim && sink) {
    char *end = NULL;
    long nsink = strtol(sink + 5, &end, 10);
    if (end == sink + 5 || *end || nsink < 0 || nsink > 1000000) {
      snprintf(err, errn, "cache '%s': '+sink' takes a count of positions", name);
      return TQ_ERR_INVALID;
    }
    o.sink = (int)nsink;
    *sink = 0;
  }
  name = sim ? plain + 4 : plain;
  if (!strcmp(name, "f32")) {
    o.kind = SMOL_KV_F32;
  } else if (!strncmp(name, "minmax", 6) && name[6] >= '1' && name[6] <= '8' &&
             !name[7]) {
    o.kind = SMOL_KV_MINMAX;
    o.minmax_bits = name[6] - '0';
  } else {
    const tq_variant *v = spec ? find_variant(spec, cfg, name) : NULL;
    if (!v) {
      size_t n = (size_t)snprintf(
          err, errn,
          "cache '%s': not f32, minmaxN or a variant of %s "
          "with head_dim %d, group %d, f32, contiguous; it has:",
          name, spec ? spec->file : "(no spec)", cfg->head_dim,
          cfg->n_heads / cfg->n_kv_heads);
      for (int i = 0; spec && i < spec->n_variants && n < errn; i++)
        if (fits(&spec->variants[i], cfg)) {
          char full[160];
          tqg_variant_name(&spec->variants[i], full, sizeof full);
          n += (size_t)snprintf(err + n, errn - n, " %s", full);
        }
      return TQ_ERR_NOT_FOUND;
    }
    o.kind = sim ? SMOL_KV_SIM : SMOL_KV_TQ;
    o.variant = *v;
  }
  if (sim && o.kind != SMOL_KV_SIM) {
    snprintf(err, errn, "cache 'sim:%s': sim: takes a TurboQuant variant", name);
    return TQ_ERR_INVALID;
  }
  return smol_kv_create(o.kind == SMOL_KV_TQ ? be : NULL, cfg, &o, out, err,
                        errn);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* -log softmax(logits)[target] and the argmax of one row. */
static double score_row(const float *logits, int vocab, int target,
                        int *argmax) {
  int best = 0;
  for (int i = 1; i < vocab; i++) best = logits[i] > logits[best] ? i : best;
  double mx = logits[best], sum = 0;
  for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - mx);
  *argmax = best;
  return log(sum) + mx - (double)logits[target];
}

tq_status smol_eval_text(const smol_model *m, smol_kv *kv, const int *tokens,
                         int n, int window, int chunk, const int *baseline,
                         int *argmax_out, smol_eval_result *r, char *err,
                         size_t errn) {
  memset(r, 0, sizeof *r);
  int vocab = m->cfg.vocab;
  float *logits = malloc((size_t)chunk * vocab * sizeof *logits);
  if (!logits) {
    snprintf(err, errn, "out of memory for logits");
    return TQ_ERR_NOMEM;
  }
  double t0 = now(), nll = 0;
  long agree = 0;
  tq_status st = TQ_OK;
  for (int w0 = 0; w0 + 1 < n && !st; w0 += window) {
    int wn = n - w0 < window ? n - w0 : window;
    smol_kv_reset(kv);
    for (int p = 0; p < wn && !st; p += chunk) {
      int c = wn - p < chunk ? wn - p : chunk;
      if ((st = smol_forward(m, tokens + w0 + p, c, p, smol_kv_attend, kv,
                             logits, 0, err, errn))) {
        size_t used = strlen(err);
        snprintf(err + used, errn - used, ": %s", smol_kv_error(kv));
        break;
      }
      for (int t = 0; t < c && p + t + 1 < wn; t++) {
        int at = w0 + p + t, best;
        nll +=
            score_row(logits + (size_t)t * vocab, vocab, tokens[at + 1], &best);
        if (argmax_out) argmax_out[at] = best;
        if (baseline) agree += baseline[at] == best;
        r->scored++;
      }
    }
  }
  free(logits);
  if (st) return st;
  r->seconds = now() - t0;
  r->nll = r->scored ? nll / (double)r->scored : NAN;
  r->ppl = exp(r->nll);
  r->top1 = baseline && r->scored ? (double)agree / (double)r->scored : NAN;
  r->cosine = smol_kv_cosine_mean(kv, &r->cosine_worst, &r->cosine_worst_layer);
  r->bytes_per_token = smol_kv_bytes_per_token(kv);
  r->bits_per_coord = smol_kv_bits_per_coord(kv);
  return TQ_OK;
}
