/* model.h - a Llama-architecture model (SmolLM2) read from GGUF: weights
 * dequantized to f32 once at load, and a batched forward pass whose
 * attention is delegated to a KV cache (kv.h). */
#ifndef SMOL_MODEL_H
#define SMOL_MODEL_H

#include "gguf.h"

#define SMOL_MAX_LAYERS 64

typedef struct smol_config {
  int n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim, vocab, context;
  double rope_base, norm_eps;
} smol_config;

typedef struct smol_layer {
  float *attn_norm, *ffn_norm; /* [dim] */
  float *wq, *wk, *wv, *wo;    /* [out][in] row-major */
  float *w_gate, *w_up, *w_down;
} smol_layer;

typedef struct smol_model {
  smol_config cfg;
  smol_layer layer[SMOL_MAX_LAYERS];
  float *embed;    /* [vocab][dim]: token_embd */
  float *out_norm; /* [dim] */
  float *output;   /* [vocab][dim]: output.weight, or embed when tied */
  float *rope_cos, *rope_sin; /* [context][head_dim / 2] */
  char tensor_types[128]; /* "Q4_1 x210, F32 x61, Q8_0 x1": what the file holds
                           */
} smol_model;

/* Loads config and weights from an open GGUF (which may be closed after).
 * Errors name the tensor or metadata key. */
tq_status smol_model_load(const smol_gguf *g, smol_model *m, char *err,
                          size_t errn);
void smol_model_free(smol_model *m);

/* Dequantizes one row of n elements of a ggml type to f32. */
tq_status smol_dequant_row(int type, const void *src, float *dst, int64_t n);

/* Attention for one layer: q [n][n_heads][head_dim] at positions
 * pos .. pos + n - 1 with k, v [n][n_kv_heads][head_dim] (RoPE applied);
 * appends k, v to the cache and writes out [n][n_heads][head_dim]. */
typedef tq_status (*smol_attend_fn)(void *ctx, int layer, int pos, int n,
                                    const float *q, const float *k,
                                    const float *v, float *out);

/* Runs tokens[0..n) at positions pos.. through the model, writing logits
 * [n][vocab] (or only the last row when last_only). */
tq_status smol_forward(const smol_model *m, const int *tokens, int n, int pos,
                       smol_attend_fn attend, void *ctx, float *logits,
                       int last_only, char *err, size_t errn);

/* y[n][out] = x[n][in] . w[out][in]^T, threaded; += when accumulate. */
void smol_matmul(float *y, const float *x, const float *w, int n, int in,
                 int out, int accumulate);

#endif
