/* tq_types.h - the types shared by gen's core, the generator and the runtime.
 *
 * A tq_variant is everything that changes generated code except the op: the
 * op (encode, decode, prefill, dequantize) selects one function inside the
 * code generated for a variant.  See docs/FORMAT.md for the bytes a variant
 * stores per token. */
#ifndef TQ_TYPES_H
#define TQ_TYPES_H

#include <stddef.h>
#include <stdint.h>

#define TQ_GENERATOR_VERSION "0.1.0"

typedef enum tq_status {
  TQ_OK = 0,
  TQ_ERR_INVALID,     /* bad argument, spec or variant */
  TQ_ERR_UNAVAILABLE, /* backend, driver or compiler not present */
  TQ_ERR_NOT_FOUND,   /* no kernel for (variant, op) */
  TQ_ERR_IO,          /* file system */
  TQ_ERR_COMPILE,     /* a compiler rejected generated source */
  TQ_ERR_NOMEM,
  TQ_ERR_VERIFY       /* a kernel disagrees with the reference */
} tq_status;

typedef enum tq_dtype { TQ_F16, TQ_BF16, TQ_F32 } tq_dtype;
typedef enum tq_value_method { TQ_VALUE_TQ, TQ_VALUE_MINMAX } tq_value_method;
typedef enum tq_layout { TQ_CONTIGUOUS, TQ_PAGED } tq_layout;
typedef enum tq_op {
  TQ_OP_ENCODE,  /* append new K/V tokens to the packed cache */
  TQ_OP_DECODE,  /* attention of 1..8 query tokens per sequence */
  TQ_OP_PREFILL, /* causal attention of many query tokens */
  TQ_OP_DEQUANT, /* packed cache -> activations, for engines' own attention */
  TQ_OP_COUNT
} tq_op;

/* Outlier bits value meaning "kept as raw f16, not quantized". */
#define TQ_OUTLIER_F16 16
#define TQ_MAX_HEAD_DIM 512
#define TQ_MAX_BITS 8
#define TQ_MAX_DECODE_QLEN 8

typedef struct tq_variant {
  int head_dim;            /* multiple of 16, <= 512 */
  int group;               /* q heads per kv head (GQA) */
  int key_bits;            /* 1..8; with qjl, (key_bits-1) MSE bits + 1 sign */
  int value_bits;          /* 1..8 */
  tq_value_method value_method;
  int value_group;         /* minmax: channels per scale/min group */
  int outlier_count;       /* 0..head_dim-1 channels coded apart */
  int outlier_bits;        /* 1..8, or TQ_OUTLIER_F16 */
  int qjl;                 /* 1: QJL residual on keys (TurboQuant_prod) */
  int norm_correction;     /* 1: store the norm that makes |x^| = |x| */
  uint64_t seed;           /* rotation / projection seed */
  tq_dtype dtype;          /* activations: q, k, v, outputs */
  tq_layout layout;
  int block_size;          /* paged: tokens per block */
} tq_variant;

#define TQ_DEFAULT_SEED 0x7153u

/* The slot layout of one token of one kv head: byte offsets derived from a
 * variant by tqg_layout().  docs/FORMAT.md is the prose form of this. */
typedef struct tq_part_layout {
  int dim;        /* channels in this part (0: part absent) */
  int bits;       /* index bits per channel, or 16 for raw f16 */
  int idx_offset; /* byte offset of the packed indices (or f16 values) */
  int idx_bytes;  /* padded to 4 */
  int scale_offset; /* f32 scale, -1 when bits == 16 */
} tq_part_layout;

typedef struct tq_slot_layout {
  tq_part_layout main;    /* non-outlier channels, rotated */
  tq_part_layout outlier; /* outlier channels, rotated apart (or raw f16) */
  int qjl_offset;   /* key only: sign bits of S r, padded to 4; -1 if none */
  int qjl_bytes;
  int rnorm_offset; /* key only: f32 |r|; -1 if none */
  int group_offset; /* minmax values: (f16 scale, f16 min) per group; -1 */
  int groups;
  int bytes;        /* whole slot, multiple of 4 */
} tq_slot_layout;

#endif
