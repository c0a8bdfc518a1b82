/* wgsl_plan.c - the launch plan of the WGSL kernels in
 * templates/wgsl/kernel.wgsl (wgsl_plan.h says what a part is).  plan() in
 * templates/wgsl/webgpu.js is the same code in JS: change both together
 * (ctest wgsl_js compares their plans). */
#include "wgsl_plan.h"

#include <stdio.h>
#include <string.h>

#include "core.h"

#define ALIGN TQ_WGSL_OFFSET_ALIGN
#define MAX_GRID 65535 /* workgroups along each axis of a dispatch */

/* The longest context any sequence may have. */
static int capacity_of(const tq_variant *v, const tq_kargs *a) {
  return v->layout == TQ_PAGED ? a->max_blocks * v->block_size : a->capacity;
}

/* Bytes of one sequence's part of the buffer at binding b; 0 for buffers
 * bound whole (params, tables, channel_perm, and a paged cache's pool,
 * which any sequence's blocks may lie anywhere in). */
static uint64_t seq_bytes(const tq_variant *v, tq_op op, const tq_kargs *a,
                          int b) {
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  uint64_t slots =
      v->layout == TQ_PAGED ? 0 : (uint64_t)a->kv_heads * a->capacity;
  uint64_t act = (uint64_t)tqg_dtype_size(v->dtype) * v->head_dim *
                 a->n_tokens * a->kv_heads;
  switch (b) {
    case TQG_WB_K_CACHE:
      return slots * (uint64_t)k.bytes;
    case TQG_WB_V_CACHE:
      return slots * (uint64_t)val.bytes;
    case TQG_WB_BLOCK_TABLE:
      return v->layout == TQ_PAGED ? 4 * (uint64_t)a->max_blocks : 0;
    case TQG_WB_SEQ_LENS:
      return 4;
    case TQG_WB_Q:
    case TQG_WB_OUT:
      return act * (uint64_t)v->group;
    case TQG_WB_K:
    case TQG_WB_V:
      return act;
    case TQG_WB_WORKSPACE:
      return tq_wgsl_workspace(v, op, a) / (uint64_t)a->batch;
    default:
      return 0;
  }
}

/* Bytes of one element of the buffer at binding b (what seq0 counts):
 * activations are indexed by value, everything else by 32-bit word. */
static uint64_t elem_bytes(const tq_variant *v, int b) {
  int act = b == TQG_WB_Q || b == TQG_WB_OUT || b == TQG_WB_K || b == TQG_WB_V;
  return act ? (uint64_t)tqg_dtype_size(v->dtype) : 4;
}

/* The most bytes a window can start before its first sequence: offsets
 * of sequences are multiples of gcd(stride, ALIGN), rounded down to ALIGN. */
static uint64_t lead(uint64_t stride) {
  uint64_t g = stride & (~stride + 1); /* lowest set bit */
  return g >= ALIGN ? 0 : ALIGN - g;
}

/* Entry points of the op's dispatches, in order. */
static int stages_of(tq_op op, int fast, int stage[TQ_WGSL_MAX_STEPS]) {
  if (op == TQ_OP_ENCODE || op == TQ_OP_DEQUANT) {
    stage[0] = op == TQ_OP_ENCODE ? 0 : 4;
    return 1;
  }
  stage[0] = fast ? TQG_WGSL_FAST_STAGE : op == TQ_OP_DECODE ? 1 : 2;
  stage[1] = 3;
  return 2;
}

/* The most sequences one part may take: each window of a buffer fits
 * max_binding, allowing for its lead; at most MAX_GRID (a dispatch's z).
 * 0, with err saying which binding, when not even one sequence fits. */
static int most_per_part(const tq_variant *v, tq_op op, const tq_kargs *a,
                         uint32_t mask, uint64_t max_binding, char *err,
                         size_t errn) {
  uint64_t n = a->batch < MAX_GRID ? (uint64_t)a->batch : MAX_GRID;
  for (int b = 0; b < TQG_WB_COUNT; b++) {
    uint64_t s = seq_bytes(v, op, a, b), pad = lead(s);
    if (!(mask >> b & 1) || !s) continue;
    if (s + pad > max_binding) {
      snprintf(err, errn,
               "%s: one sequence takes %llu bytes of it (%llu with a binding "
               "offset's alignment), past this device's largest storage "
               "binding (%llu bytes); a launch splits its batch, never a "
               "sequence: use a smaller capacity or fewer kv heads",
               tqg_wgsl_binding_name(b), (unsigned long long)s,
               (unsigned long long)(s + pad), (unsigned long long)max_binding);
      return 0;
    }
    if ((max_binding - pad) / s < n) n = (max_binding - pad) / s;
  }
  return (int)n;
}

tq_status tq_wgsl_plan(const tq_variant *v, tq_op op, const tq_kargs *a,
                       int fast, uint64_t max_binding, int first,
                       tq_wgsl_part *p, char *err, size_t errn) {
  memset(p, 0, sizeof *p);
  if (a->batch < 1 || a->kv_heads < 1 || a->n_tokens < 1 || first < 0 ||
      first >= a->batch) {
    snprintf(err, errn,
             "no part at sequence %d of batch %d (kv_heads %d, n_tokens %d)",
             first, a->batch, a->kv_heads, a->n_tokens);
    return TQ_ERR_INVALID;
  }
  int stage[TQ_WGSL_MAX_STEPS];
  p->n_steps = stages_of(op, fast, stage);
  uint32_t mask = 0;
  for (int i = 0; i < p->n_steps; i++)
    mask |= tqg_wgsl_binding_mask(v, stage[i]);
  /* Parts of equal size (the last may be smaller); one where all fits. */
  int most = most_per_part(v, op, a, mask, max_binding, err, errn);
  if (!most) return TQ_ERR_INVALID;
  int parts = (a->batch + most - 1) / most, n = (a->batch + parts - 1) / parts;
  if (n > a->batch - first) n = a->batch - first;
  p->first = first;

  tqg_wgsl_params *u = &p->params;
  u->batch = (uint32_t)n;
  u->kv_heads = (uint32_t)a->kv_heads;
  u->n_tokens = (uint32_t)a->n_tokens;
  u->capacity = (uint32_t)a->capacity;
  u->num_blocks = (uint32_t)a->num_blocks;
  u->max_blocks = (uint32_t)a->max_blocks;
  u->sm_scale = a->sm_scale;
  u->has_perm = a->channel_perm != NULL;
  u->rows = (uint32_t)((long)a->n_tokens * v->group);
  u->tiles = (u->rows + 3) / 4;
  /* Splits as for the whole batch: a part's workspace is its window of
   * the launch's. */
  u->splits = (uint32_t)tqg_wgsl_splits(v, op, a->batch, a->kv_heads,
                                        a->n_tokens, capacity_of(v, a));
  /* Encode and dequant: one workgroup per token; attention (splits, kv
   * heads x row tiles, sequences) then reduce (rows, kv heads, sequences). */
  long rows = (long)a->n_tokens * v->group,
       grid[TQ_WGSL_MAX_STEPS][3] = {{a->n_tokens, a->kv_heads, n}};
  if (p->n_steps == 2) {
    long attend[3] = {u->splits, a->kv_heads * ((rows + 3) / 4), n};
    long reduce[3] = {rows, a->kv_heads, n};
    memcpy(grid[0], attend, sizeof attend);
    memcpy(grid[1], reduce, sizeof reduce);
  }
  for (int i = 0; i < p->n_steps; i++) {
    p->steps[i].stage = stage[i];
    for (int k = 0; k < 3; k++) {
      if (grid[i][k] < 1 || grid[i][k] > MAX_GRID) {
        snprintf(err, errn, "%s: grid (%ld, %ld, %ld) is outside 1..%d",
                 tqg_wgsl_stage_names[stage[i]], grid[i][0], grid[i][1],
                 grid[i][2], MAX_GRID);
        return TQ_ERR_INVALID;
      }
      p->steps[i].grid[k] = (uint32_t)grid[i][k];
    }
  }

  /* Each buffer indexed by sequence: the window from the last offset
   * at or before this part's first sequence to the end of its last. */
  for (int b = 0; b < TQG_WB_COUNT; b++) {
    uint64_t s = seq_bytes(v, op, a, b), at = (uint64_t)first * s;
    if (!(mask >> b & 1)) continue;
    if (s) {
      p->offset[b] = at - at % ALIGN;
      p->size[b] = at % ALIGN + (uint64_t)n * s;
      u->seq0[b] = (uint32_t)(at % ALIGN / elem_bytes(v, b));
    }
  }
  return TQ_OK;
}

size_t tq_wgsl_workspace(const tq_variant *v, tq_op op, const tq_kargs *a) {
  return tqg_wgsl_workspace(v, op, a->batch, a->kv_heads, a->n_tokens,
                            capacity_of(v, a));
}
