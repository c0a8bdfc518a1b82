/* ref.h - the CPU reference: the definition of the slot format and the
 * oracle every kernel is checked against.  Plain C, double accumulation,
 * no attempt at speed.
 *
 * Ops take the same tq_kargs as kernels (host pointers), so a verifier runs
 * a kernel and the reference on identical arguments.  Attention is computed
 * two ways: over the packed cache in the rotated basis (what kernels do) and
 * by dequantizing then running exact attention; tests prove they agree. */
#ifndef TQ_REF_H
#define TQ_REF_H

#include "core.h"
#include "tq_abi.h"

typedef struct tq_ref {
  tq_variant v;
  tqg_tables t;
  tq_slot_layout key, value;
} tq_ref;

tq_status tq_ref_init(tq_ref *r, const tq_variant *v);
void tq_ref_free(tq_ref *r);

/* One vector of head_dim channels <-> one slot.  perm: the kv head's channel
 * order (outliers first), or NULL for identity. */
void tq_ref_encode_key(const tq_ref *r, const double *x, const uint16_t *perm,
                       uint8_t *slot);
void tq_ref_encode_value(const tq_ref *r, const double *x,
                         const uint16_t *perm, uint8_t *slot);
void tq_ref_decode_key(const tq_ref *r, const uint8_t *slot,
                       const uint16_t *perm, double *x);
void tq_ref_decode_value(const tq_ref *r, const uint8_t *slot,
                         const uint16_t *perm, double *x);

/* A query prepared once for scoring packed keys: rotated main and outlier
 * parts and, with QJL, S times the rotated main part. */
typedef struct tq_ref_query {
  double main[TQ_MAX_HEAD_DIM];
  double outlier[TQ_MAX_HEAD_DIM];
  double qjl[TQ_MAX_HEAD_DIM];
} tq_ref_query;

void tq_ref_prepare_query(const tq_ref *r, const double *q,
                          const uint16_t *perm, tq_ref_query *out);
/* <q, k> estimated from a packed key slot, in the rotated bases.  Without
 * QJL this equals <q, decode(k)>; with QJL it is the unbiased estimator. */
double tq_ref_score(const tq_ref *r, const tq_ref_query *q,
                    const uint8_t *slot);

/* Address of the slot of token t of sequence b, kv head h. */
uint8_t *tq_ref_slot(const tq_ref *r, const tq_kargs *a, int value, int b,
                     int h, int t);

/* The four ops over a cache, like a kernel. */
tq_status tq_ref_run(const tq_ref *r, tq_op op, const tq_kargs *a);
/* Decode/prefill attention by dequantizing every K/V slot, then exact
 * attention: writes a->out like TQ_OP_DECODE. */
tq_status tq_ref_attention_dequant(const tq_ref *r, const tq_kargs *a);

/* Exact causal attention on unquantized doubles.  q, out: [batch][n_q][H*G][d];
 * k, v: [batch][ctx][H][d] with ctx = ctx_stride; query i of sequence b sees
 * tokens 0 .. seq_lens[b] - n_q + i. */
void tq_ref_attention_exact(int head_dim, int group, int batch, int kv_heads,
                            int n_q, int ctx_stride, const int32_t *seq_lens,
                            double sm_scale, const double *q, const double *k,
                            const double *v, double *out);

#endif
