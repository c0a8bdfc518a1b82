/* emit_wgsl.h - what the WGSL emitter, the WebGPU runtime backend and the
 * generated JS module agree on: flavours, entry points (stages) with their
 * bindings, and the f32 tables buffer every kernel reads its codebooks,
 * rotations and QJL projection from. */
#ifndef TQG_EMIT_WGSL_H
#define TQG_EMIT_WGSL_H

#include <stdint.h>

#include "core/tq_types.h"
#include "source.h"

/* core: WebGPU core features only (every browser).  f16sg: `enable f16;`
 * and subgroup operations (devices with shader-f16 and subgroups). */
typedef enum tqg_wgsl_flavour {
  TQG_WGSL_CORE,
  TQG_WGSL_F16SG,
  TQG_WGSL_FLAVOURS
} tqg_wgsl_flavour;

const char *tqg_wgsl_flavour_name(tqg_wgsl_flavour f);
/* TQG_WGSL_FLAVOURS when unknown. */
tqg_wgsl_flavour tqg_wgsl_flavour_parse(const char *s);

/* Threads of every workgroup of every entry point. */
#define TQG_WGSL_WORKGROUP 128
/* Workgroup memory the kernels stay within: WebGPU's default limit. */
#define TQG_WGSL_WORKGROUP_BYTES 16384

/* Bindings of group 0 (templates/wgsl/kernel.wgsl). */
enum {
  TQG_WB_PARAMS, /* uniform: tqg_wgsl_params */
  TQG_WB_TABLES, /* read-only storage: f32 tables */
  TQG_WB_K_CACHE,
  TQG_WB_V_CACHE,
  TQG_WB_BLOCK_TABLE, /* paged variants only */
  TQG_WB_SEQ_LENS,
  TQG_WB_CHANNEL_PERM,
  TQG_WB_Q,
  TQG_WB_K,
  TQG_WB_V,
  TQG_WB_OUT,
  TQG_WB_WORKSPACE,
  TQG_WB_COUNT
};

typedef enum tqg_wgsl_binding_type {
  TQG_WGSL_UNIFORM,
  TQG_WGSL_READ_ONLY, /* read-only storage */
  TQG_WGSL_STORAGE    /* read-write storage */
} tqg_wgsl_binding_type;

tqg_wgsl_binding_type tqg_wgsl_binding_type_of(int binding);
/* "params", "tables", "k_cache", ... (the tq_kargs field names). */
const char *tqg_wgsl_binding_name(int binding);

/* Entry points of a module: encode, decode, prefill, reduce, dequant, and
 * attend_fast (TQG_WGSL_FAST_STAGE, decode and prefill on subgroup workers)
 * in the f16sg flavour of the variants tqg_wgsl_fast accepts. */
#define TQG_WGSL_STAGES 6
#define TQG_WGSL_FAST_STAGE 5
extern const char *const tqg_wgsl_stage_names[TQG_WGSL_STAGES];
/* Bit i set: the stage uses binding i (depends on the layout: paged). */
uint32_t tqg_wgsl_binding_mask(const tq_variant *v, int stage);

/* Does the variant have the fast attend entry?  The CUDA fast path's
 * condition: no outliers, no QJL, TurboQuant values, 2- or 4-bit keys and
 * values, head_dim a power of two 32..128, paged blocks a multiple or
 * divisor of 32. */
int tqg_wgsl_fast(const tq_variant *v);
/* Does the module of flavour f have entry point `stage`? */
int tqg_wgsl_has_stage(const tq_variant *v, tqg_wgsl_flavour f, int stage);
/* The fast entry is specialized, through its override constant TQ_SG, for
 * one subgroup size of these (a lane's value channels stay at most 16);
 * its workgroup is TQG_WGSL_FAST_WORKERS subgroups. */
#define TQG_WGSL_FAST_OK(n) ((n) == 8 || (n) == 16 || (n) == 32)
#define TQG_WGSL_FAST_WORKERS 4
#define TQG_WGSL_FAST_CONSTANT "TQ_SG"

/* The uniform block, as kernel.wgsl's struct Params. */
typedef struct tqg_wgsl_params {
  uint32_t batch, kv_heads, n_tokens, capacity, num_blocks, max_blocks;
  float sm_scale;
  uint32_t splits, has_perm, rows, tiles;
  uint32_t probe; /* attend_fast: 1 reports its subgroup layout in WS[0..1] */
  /* The element where sequence 0 of the launch starts in what binding b
   * sees of its buffer (a window, for a launch run in parts:
   * backends/wgsl_plan.h). */
  uint32_t seq0[TQG_WB_COUNT];
} tqg_wgsl_params;

/* Floats of the tables buffer and where each table starts. */
typedef struct tqg_wgsl_tables {
  float *data; /* malloc'd; n floats (at least 1) */
  uint32_t n;
  uint32_t kcb, kbnd, vcb, vbnd, ocb, obnd, msigns, mmat, osigns, omat, qjl;
  int main_wht, out_wht;
} tqg_wgsl_tables;

tq_status tqg_wgsl_tables_init(const tq_variant *v, tqg_wgsl_tables *t);
void tqg_wgsl_tables_free(tqg_wgsl_tables *t);

/* Cache tokens per attention tile (what fits the workgroup memory). */
int tqg_wgsl_tile(const tq_variant *v);

/* The split rule (mirrored by the JS module): enough workgroups to fill a
 * large GPU, at most 64 splits, at least 32 cache tokens per split. */
#define TQG_WGSL_TARGET_WORKGROUPS 2112 /* 16 per SM on a 132-SM GPU */
#define TQG_WGSL_MAX_SPLITS 64
#define TQG_WGSL_MIN_SLICE 32

/* Decode/prefill context splits for a launch, and workspace bytes; the
 * runtime backend and the JS module's plan() compute the same numbers. */
int tqg_wgsl_splits(const tq_variant *v, tq_op op, int batch, int kv_heads,
                    int n_tokens, int capacity);
size_t tqg_wgsl_workspace(const tq_variant *v, tq_op op, int batch,
                          int kv_heads, int n_tokens, int capacity);

#endif
