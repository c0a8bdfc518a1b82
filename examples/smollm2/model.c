/* model.c - loading a Llama-architecture GGUF and its forward pass. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

tq_status smol_dequant_row(int type, const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  switch (type) {
    case SMOL_GGML_F32:
      memcpy(dst, src, (size_t)n * 4);
      return TQ_OK;
    case SMOL_GGML_F16:
      for (int64_t i = 0; i < n; i++)
        dst[i] = tqg_f16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
      return TQ_OK;
    case SMOL_GGML_Q4_0: /* f16 d, 16 bytes of nibbles: x = d * (q - 8) */
    case SMOL_GGML_Q4_1: /* f16 d, f16 m, 16 bytes of nibbles: x = d * q + m */
      for (int64_t i = 0; i < n; i += 32) {
        float d = tqg_f16_to_f32((uint16_t)(b[0] | b[1] << 8)), m = -8 * d;
        if (type == SMOL_GGML_Q4_1)
          m = tqg_f16_to_f32((uint16_t)(b[2] | b[3] << 8));
        const uint8_t *q = b + (type == SMOL_GGML_Q4_1 ? 4 : 2);
        /* Low nibbles are elements 0..15 of the block, high nibbles 16..31. */
        for (int j = 0; j < 16; j++) {
          dst[i + j] = d * (float)(q[j] & 15) + m;
          dst[i + j + 16] = d * (float)(q[j] >> 4) + m;
        }
        b += type == SMOL_GGML_Q4_1 ? 20 : 18;
      }
      return TQ_OK;
    case SMOL_GGML_Q8_0: /* f16 d, 32 signed bytes: x = d * q */
      for (int64_t i = 0; i < n; i += 32, b += 34) {
        float d = tqg_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
        for (int j = 0; j < 32; j++) dst[i + j] = d * (float)(int8_t)b[2 + j];
      }
      return TQ_OK;
    default:
      return TQ_ERR_INVALID;
  }
}

/* A tensor of shape [rows][cols] (ne0 = cols) as f32. */
static tq_status load_tensor(const smol_gguf *g, const char *name, int64_t cols,
                             int64_t rows, float **out, char *err,
                             size_t errn) {
  const smol_gguf_tensor *t = smol_gguf_tensor_find(g, name);
  *out = NULL;
  if (!t) {
    snprintf(err, errn, "tensor '%s' is missing", name);
    return TQ_ERR_NOT_FOUND;
  }
  int64_t r = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
  if ((int64_t)t->ne[0] != cols || r != rows) {
    snprintf(err, errn,
             "tensor '%s' has shape [%llu, %lld]; the model's metadata implies "
             "[%lld, %lld]",
             name, (unsigned long long)t->ne[0], (long long)r, (long long)cols,
             (long long)rows);
    return TQ_ERR_INVALID;
  }
  float *w = malloc((size_t)(cols * rows) * sizeof *w);
  if (!w) {
    snprintf(err, errn, "tensor '%s': out of memory", name);
    return TQ_ERR_NOMEM;
  }
  uint64_t row_bytes = smol_ggml_row_bytes(t->type, (uint64_t)cols);
  for (int64_t i = 0; i < rows; i++)
    if (smol_dequant_row(
            t->type,
            (const uint8_t *)t->data + (size_t)(i * (int64_t)row_bytes),
            w + i * cols, cols)) {
      snprintf(
          err, errn,
          "tensor '%s': type %s cannot be dequantized (supported: F32, F16, "
          "Q4_0, Q4_1, Q8_0)",
          name, smol_ggml_type_name(t->type));
      free(w);
      return TQ_ERR_INVALID;
    }
  *out = w;
  return TQ_OK;
}

static tq_status read_config(const smol_gguf *g, smol_config *c, char *err,
                             size_t errn) {
  static const char *const keys[] = {"llama.block_count",
                                     "llama.embedding_length",
                                     "llama.feed_forward_length",
                                     "llama.attention.head_count",
                                     "llama.attention.head_count_kv",
                                     "llama.context_length"};
  int *dst[] = {&c->n_layers, &c->dim,        &c->ffn_dim,
                &c->n_heads,  &c->n_kv_heads, &c->context};
  const smol_gguf_kv *arch = smol_gguf_find(g, "general.architecture");
  if (!arch || arch->type != SMOL_GGUF_STRING ||
      memcmp(arch->data + 8, "llama", 5) != 0) {
    snprintf(err, errn,
             "general.architecture is not 'llama' (this example runs Llama-"
             "architecture models such as SmolLM2)");
    return TQ_ERR_INVALID;
  }
  for (int i = 0; i < 6; i++) {
    int64_t v;
    tq_status st = smol_gguf_get_int(g, keys[i], &v, err, errn);
    if (st) return st;
    if (v < 1 || v > (1 << 20)) {
      snprintf(err, errn, "metadata '%s' = %lld is out of range", keys[i],
               (long long)v);
      return TQ_ERR_INVALID;
    }
    *dst[i] = (int)v;
  }
  tq_status st;
  if ((st = smol_gguf_get_float(g, "llama.rope.freq_base", &c->rope_base, err,
                                errn)) ||
      (st = smol_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon",
                                &c->norm_eps, err, errn)))
    return st;
  const smol_gguf_kv *tokens;
  if ((st = smol_gguf_get_array(g, "tokenizer.ggml.tokens", SMOL_GGUF_STRING,
                                &tokens, err, errn)))
    return st;
  c->vocab = (int)tokens->count;
  if (c->n_layers > SMOL_MAX_LAYERS || c->dim % c->n_heads ||
      c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2) {
    snprintf(
        err, errn,
        "unsupported shape: %d layers (max %d), dim %d, %d heads, %d kv heads",
        c->n_layers, SMOL_MAX_LAYERS, c->dim, c->n_heads, c->n_kv_heads);
    return TQ_ERR_INVALID;
  }
  c->head_dim = c->dim / c->n_heads;
  return TQ_OK;
}

/* Llama GGUF files use rotations of adjacent channel pairs (2i, 2i + 1) at
 * frequency base^(-2i / head_dim): the converter permuted the Q and K
 * weights so this equals the original model's rotate-half form. */
static tq_status rope_tables(smol_model *m) {
  int half = m->cfg.head_dim / 2, ctx = m->cfg.context;
  m->rope_cos = malloc((size_t)ctx * half * sizeof(float));
  m->rope_sin = malloc((size_t)ctx * half * sizeof(float));
  if (!m->rope_cos || !m->rope_sin) return TQ_ERR_NOMEM;
  for (int p = 0; p < ctx; p++)
    for (int i = 0; i < half; i++) {
      double a = p * pow(m->cfg.rope_base, -2.0 * i / m->cfg.head_dim);
      m->rope_cos[(size_t)p * half + i] = (float)cos(a);
      m->rope_sin[(size_t)p * half + i] = (float)sin(a);
    }
  return TQ_OK;
}

static void count_types(const smol_gguf *g, smol_model *m) {
  int count[16] = {0};
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (g->tensors[i].type < 16) count[g->tensors[i].type]++;
  size_t n = 0;
  for (int t = 0; t < 16 && n < sizeof m->tensor_types; t++)
    if (count[t])
      n += (size_t)snprintf(m->tensor_types + n, sizeof m->tensor_types - n,
                            "%s%s x%d", n ? ", " : "", smol_ggml_type_name(t),
                            count[t]);
}

tq_status smol_model_load(const smol_gguf *g, smol_model *m, char *err,
                          size_t errn) {
  memset(m, 0, sizeof *m);
  smol_config *c = &m->cfg;
  tq_status st = read_config(g, c, err, errn);
  if (st) return st;
  count_types(g, m);
  int kvd = c->n_kv_heads * c->head_dim;
  char name[96];
  for (int l = 0; l < c->n_layers && !st; l++) {
    smol_layer *L = &m->layer[l];
    struct {
      const char *suffix;
      float **dst;
      int cols, rows;
    } t[] = {{"attn_norm", &L->attn_norm, c->dim, 1},
             {"ffn_norm", &L->ffn_norm, c->dim, 1},
             {"attn_q", &L->wq, c->dim, c->dim},
             {"attn_k", &L->wk, c->dim, kvd},
             {"attn_v", &L->wv, c->dim, kvd},
             {"attn_output", &L->wo, c->dim, c->dim},
             {"ffn_gate", &L->w_gate, c->dim, c->ffn_dim},
             {"ffn_up", &L->w_up, c->dim, c->ffn_dim},
             {"ffn_down", &L->w_down, c->ffn_dim, c->dim}};
    for (size_t i = 0; i < sizeof t / sizeof *t && !st; i++) {
      snprintf(name, sizeof name, "blk.%d.%s.weight", l, t[i].suffix);
      st = load_tensor(g, name, t[i].cols, t[i].rows, t[i].dst, err, errn);
    }
  }
  if (!st)
    st = load_tensor(g, "token_embd.weight", c->dim, c->vocab, &m->embed, err,
                     errn);
  if (!st)
    st = load_tensor(g, "output_norm.weight", c->dim, 1, &m->out_norm, err,
                     errn);
  if (!st) {
    /* SmolLM2 ties the output head to the embedding. */
    m->output = m->embed;
    if (smol_gguf_tensor_find(g, "output.weight"))
      st = load_tensor(g, "output.weight", c->dim, c->vocab, &m->output, err,
                       errn);
  }
  if (!st && rope_tables(m)) {
    snprintf(err, errn, "out of memory for RoPE tables");
    st = TQ_ERR_NOMEM;
  }
  if (st) smol_model_free(m);
  return st;
}

void smol_model_free(smol_model *m) {
  for (int l = 0; l < SMOL_MAX_LAYERS; l++) {
    smol_layer *L = &m->layer[l];
    float *p[] = {L->attn_norm, L->ffn_norm, L->wq,   L->wk,    L->wv,
                  L->wo,        L->w_gate,   L->w_up, L->w_down};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
  }
  if (m->output != m->embed) free(m->output);
  free(m->embed);
  free(m->out_norm);
  free(m->rope_cos);
  free(m->rope_sin);
  memset(m, 0, sizeof *m);
}

static void rmsnorm(float *y, const float *x, const float *w, int n, int dim,
                    double eps) {
  for (int t = 0; t < n; t++) {
    const float *xt = x + (size_t)t * dim;
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
    float s = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++) y[(size_t)t * dim + i] = xt[i] * s * w[i];
  }
}

static void rope(const smol_model *m, float *x, int n, int heads, int pos) {
  int hd = m->cfg.head_dim, half = hd / 2;
  for (int t = 0; t < n; t++) {
    const float *c = m->rope_cos + (size_t)(pos + t) * half;
    const float *s = m->rope_sin + (size_t)(pos + t) * half;
    for (int h = 0; h < heads; h++) {
      float *v = x + ((size_t)t * heads + h) * hd;
      for (int i = 0; i < half; i++) {
        float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c[i] - b * s[i];
        v[2 * i + 1] = a * s[i] + b * c[i];
      }
    }
  }
}

typedef struct scratch {
  float *x, *h, *q, *k, *v, *att, *gate, *up;
} scratch;

static void scratch_free(scratch *s) {
  free(s->x), free(s->h), free(s->q), free(s->k), free(s->v), free(s->att),
      free(s->gate), free(s->up);
}

static int scratch_alloc(const smol_config *c, int n, scratch *s) {
  size_t kvd = (size_t)c->n_kv_heads * c->head_dim, N = (size_t)n;
  s->x = malloc(N * c->dim * sizeof(float));
  s->h = malloc(N * c->dim * sizeof(float));
  s->q = malloc(N * c->dim * sizeof(float));
  s->k = malloc(N * kvd * sizeof(float));
  s->v = malloc(N * kvd * sizeof(float));
  s->att = malloc(N * c->dim * sizeof(float));
  s->gate = malloc(N * c->ffn_dim * sizeof(float));
  s->up = malloc(N * c->ffn_dim * sizeof(float));
  return s->x && s->h && s->q && s->k && s->v && s->att && s->gate && s->up;
}

static tq_status layer_forward(const smol_model *m, int l, scratch *s, int n,
                               int pos, smol_attend_fn attend, void *ctx) {
  const smol_config *c = &m->cfg;
  const smol_layer *L = &m->layer[l];
  int kvd = c->n_kv_heads * c->head_dim;
  rmsnorm(s->h, s->x, L->attn_norm, n, c->dim, c->norm_eps);
  smol_matmul(s->q, s->h, L->wq, n, c->dim, c->dim, 0);
  smol_matmul(s->k, s->h, L->wk, n, c->dim, kvd, 0);
  smol_matmul(s->v, s->h, L->wv, n, c->dim, kvd, 0);
  rope(m, s->q, n, c->n_heads, pos);
  rope(m, s->k, n, c->n_kv_heads, pos);
  tq_status st = attend(ctx, l, pos, n, s->q, s->k, s->v, s->att);
  if (st) return st;
  smol_matmul(s->x, s->att, L->wo, n, c->dim, c->dim, 1);
  rmsnorm(s->h, s->x, L->ffn_norm, n, c->dim, c->norm_eps);
  smol_matmul(s->gate, s->h, L->w_gate, n, c->dim, c->ffn_dim, 0);
  smol_matmul(s->up, s->h, L->w_up, n, c->dim, c->ffn_dim, 0);
  size_t f = (size_t)n * c->ffn_dim;
  for (size_t i = 0; i < f; i++) /* SwiGLU: silu(gate) * up */
    s->gate[i] = s->gate[i] / (1.0f + expf(-s->gate[i])) * s->up[i];
  smol_matmul(s->x, s->gate, L->w_down, n, c->ffn_dim, c->dim, 1);
  return TQ_OK;
}

tq_status smol_forward(const smol_model *m, const int *tokens, int n, int pos,
                       smol_attend_fn attend, void *ctx, float *logits,
                       int last_only, char *err, size_t errn) {
  const smol_config *c = &m->cfg;
  if (n < 1 || pos < 0 || pos + n > c->context) {
    snprintf(err, errn,
             "positions %d..%d are outside the model's context of %d tokens",
             pos, pos + n - 1, c->context);
    return TQ_ERR_INVALID;
  }
  for (int t = 0; t < n; t++)
    if (tokens[t] < 0 || tokens[t] >= c->vocab) {
      snprintf(err, errn,
               "token %d at position %d is outside the vocabulary of %d",
               tokens[t], pos + t, c->vocab);
      return TQ_ERR_INVALID;
    }
  scratch s = {0};
  tq_status st = TQ_OK;
  if (!scratch_alloc(c, n, &s)) {
    snprintf(err, errn, "out of memory for %d tokens of activations", n);
    st = TQ_ERR_NOMEM;
  }
  for (int t = 0; t < n && !st; t++)
    memcpy(s.x + (size_t)t * c->dim, m->embed + (size_t)tokens[t] * c->dim,
           (size_t)c->dim * sizeof(float));
  for (int l = 0; l < c->n_layers && !st; l++)
    if ((st = layer_forward(m, l, &s, n, pos, attend, ctx)))
      snprintf(err, errn, "layer %d attention failed", l);
  if (!st) {
    int first = last_only ? n - 1 : 0;
    rmsnorm(s.h, s.x + (size_t)first * c->dim, m->out_norm, n - first, c->dim,
            c->norm_eps);
    smol_matmul(logits, s.h, m->output, n - first, c->dim, c->vocab, 0);
  }
  scratch_free(&s);
  return st;
}
