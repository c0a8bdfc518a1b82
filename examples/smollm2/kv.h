/* kv.h - the model's KV cache, behind one attention call per layer.
 *
 *  - SMOL_KV_TQ: the cache stays packed in tqgen's slot format on a runtime
 *    backend; new tokens go through the variant's encode kernel, attention
 *    through its prefill kernel (more than TQ_MAX_DECODE_QLEN queries) or
 *    decode kernel.  With outlier channels, the channel order of each layer
 *    and kv head is calibrated from the first tokens of a sequence.
 *  - SMOL_KV_F32: unquantized keys and values, exact attention (the
 *    baseline every other cache is measured against).
 *  - SMOL_KV_MINMAX: per-token min-max uniform quantization of each key and
 *    value vector (no rotation), dequantized into an f32 cache: a simulated
 *    baseline at 4 or 8 bits.
 *  - SMOL_KV_SIM: a TurboQuant variant simulated on the host: each key and
 *    value goes through the CPU reference encoder and decoder (the format's
 *    definition, runtime/ref) into an f32 cache, exact attention after.  The
 *    first `sink` positions of a sequence can stay unquantized, to measure
 *    what the attention-sink tokens cost before any kernel supports it.
 *
 * Centering (an option of the quantized caches): the per-channel median key
 * and value of each layer and kv head over the first tokens of a sequence
 * are subtracted before quantization.  Attention is unchanged in exact
 * arithmetic: q.(k - mk) shifts every score of a query by the same q.mk,
 * which softmax ignores, and sum_j p_j (v_j - mv) + mv = sum_j p_j v_j since
 * the weights sum to one; so mv is added back to the output.  It is there to
 * measure whether a common component of the keys costs quantizer budget; on
 * SmolLM2 it does not pay (bench/RESULTS.md): the attention-sink token, far
 * from the center, then carries a larger error.
 *
 * Smoothing (an option of the quantized caches): keys are divided and
 * queries multiplied by per-channel scales of each layer and kv head,
 * calibrated from the first tokens of a sequence (kv.c, set_scales), so
 * scores are unchanged in exact arithmetic while the quantizer's error,
 * proportional to |k / s|, is spent where the queries look. */
#ifndef SMOL_KV_H
#define SMOL_KV_H

#include "model.h"
#include "tq.h"

typedef enum smol_kv_kind {
  SMOL_KV_F32,
  SMOL_KV_MINMAX,
  SMOL_KV_TQ,
  SMOL_KV_SIM
} smol_kv_kind;

typedef struct smol_kv_options {
  smol_kv_kind kind;
  int minmax_bits;    /* SMOL_KV_MINMAX: 1..8 */
  tq_variant variant; /* SMOL_KV_TQ, SMOL_KV_SIM: head_dim and group must match
                         the model */
  int sink;           /* SMOL_KV_SIM: positions 0 .. sink-1 stay unquantized */
  int capacity;       /* tokens per sequence */
  int max_chunk;      /* most tokens per attention call */
  int threads;        /* C backend: query splits run in parallel (1: off) */
  int center;         /* quantized caches: subtract calibrated means */
  int smooth;         /* quantized caches: calibrated key channel scales */
  int stats_stride;   /* > 0: every stats_stride-th position is compared with
                         exact attention on the unquantized keys and values */
} smol_kv_options;

typedef struct smol_kv smol_kv;

/* be: a backend opened with tq_open (SMOL_KV_TQ only; NULL otherwise). */
tq_status smol_kv_create(tq_backend *be, const smol_config *cfg,
                         const smol_kv_options *o, smol_kv **out, char *err,
                         size_t errn);
void smol_kv_free(smol_kv *kv);
/* Starts a new sequence: empties every layer (outliers recalibrate). */
void smol_kv_reset(smol_kv *kv);
/* smol_attend_fn for smol_forward; ctx is the smol_kv. */
tq_status smol_kv_attend(void *ctx, int layer, int pos, int n, const float *q,
                         const float *k, const float *v, float *out);
const char *smol_kv_error(const smol_kv *kv);

/* Bytes the cache stores per token (all layers and kv heads) and bits per
 * coordinate of K and V together. */
size_t smol_kv_bytes_per_token(const smol_kv *kv);
double smol_kv_bits_per_coord(const smol_kv *kv);
/* Mean cosine similarity of attention outputs against exact attention, per
 * layer (NAN before any sample) and over all layers; the worst layer too. */
double smol_kv_cosine(const smol_kv *kv, int layer);
double smol_kv_cosine_mean(const smol_kv *kv, double *worst, int *worst_layer);
/* The calibrated channel order of a layer and kv head (NULL if none). */
const uint16_t *smol_kv_channel_order(const smol_kv *kv, int layer,
                                      int kv_head);
/* "c: d64_g3_k4v4_f32 (jit)", "f32", "minmax4". */
const char *smol_kv_label(const smol_kv *kv);

#endif
