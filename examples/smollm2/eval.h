/* eval.h - picking a KV cache by name, and scoring a text with it:
 * perplexity, next-token agreement with a baseline, attention cosine. */
#ifndef SMOL_EVAL_H
#define SMOL_EVAL_H

#include "kv.h"
#include "spec.h"

/* A cache by name: "f32", "minmax4" / "minmax8" (any of 1..8 bits), a
 * variant name of the spec ("d64_g3_k4v4_f32") or its short form without
 * the head_dim, group and dtype ("k4v4", "k3v3_o16b4", "k2v2_qjl").  The
 * variant must be in the spec: the spec is what an app ships.  A quantized
 * cache's name may end in "+center" (kv.h: mean-centered keys and values). */
tq_status smol_kv_from_name(tq_backend *be, const tqg_spec *spec,
                            const smol_config *cfg, const char *name,
                            const smol_kv_options *base, smol_kv **out,
                            char *err, size_t errn);

typedef struct smol_eval_result {
  double nll;  /* mean negative log-likelihood, nats per token */
  double ppl;  /* exp(nll) */
  long scored; /* predictions scored */
  double top1; /* fraction of argmax predictions equal to the baseline's */
  double cosine,
      cosine_worst; /* attention cosine: mean over layers, worst layer */
  int cosine_worst_layer;
  size_t bytes_per_token;
  double bits_per_coord;
  double seconds;
} smol_eval_result;

/* Scores tokens[0..n) in consecutive windows of `window` tokens, each from
 * an empty cache and run through the model `chunk` tokens at a time; every
 * token after the first of a window is predicted.  argmax_out (n entries,
 * may be NULL) receives each position's argmax; baseline (may be NULL) is
 * another run's argmax, for top-1 agreement. */
tq_status smol_eval_text(const smol_model *m, smol_kv *kv, const int *tokens,
                         int n, int window, int chunk, const int *baseline,
                         int *argmax_out, smol_eval_result *r, char *err,
                         size_t errn);

#endif
