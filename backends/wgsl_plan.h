/* wgsl_plan.h - how each op of a WGSL variant is launched: its uniform
 * block, dispatches and the part of each buffer every binding sees, as pure
 * arithmetic on the variant and the launch arguments.  No WebGPU headers:
 * the plan is tested on machines without a GPU, and the generated JS
 * module's plan() (templates/wgsl/webgpu.js) mirrors it line for line.
 *
 * A launch whose buffers do not fit one storage binding of the device runs
 * in parts: sub-batches of sequences, each a launch of its own that binds
 * a window of every buffer the kernels index by sequence (a contiguous
 * cache, block_table, seq_lens, q, k, v, out, workspace; context splits
 * stay those of the whole batch).  A window starts at a multiple of
 * TQ_WGSL_OFFSET_ALIGN bytes, so up to that many bytes before its first
 * sequence; the uniform block's seq0[binding] says where that sequence starts,
 * in the buffer's elements, and the kernels add it to their indices.  Buffers
 * bound whole (tables, channel_perm, a paged cache's pool) must fit one
 * binding. */
#ifndef TQ_WGSL_PLAN_H
#define TQ_WGSL_PLAN_H

#include <stdint.h>

#include "emit_wgsl.h"
#include "tq_abi.h"
#include "tq_types.h"

/* Storage binding offsets are multiples of this: WebGPU's largest (and
 * default) minStorageBufferOffsetAlignment, so it suits every device. */
#define TQ_WGSL_OFFSET_ALIGN 256

typedef struct tq_wgsl_step {
  int stage; /* entry point: tqg_wgsl_stage_names[stage] */
  uint32_t grid[3];
} tq_wgsl_step;
#define TQ_WGSL_MAX_STEPS 2

/* One part of a launch: sequences first .. first + params.batch - 1. */
typedef struct tq_wgsl_part {
  int first;
  tqg_wgsl_params params; /* its uniform block (seq0 included) */
  /* What binding b sees of its buffer: bytes [offset, offset + size);
   * size 0: the whole buffer. */
  uint64_t offset[TQG_WB_COUNT], size[TQG_WB_COUNT];
  int n_steps;
  tq_wgsl_step steps[TQ_WGSL_MAX_STEPS];
} tq_wgsl_part;

/* The part of a launch that starts at sequence `first` (0, then each
 * part's first + params.batch until a->batch).  fast: decode and prefill
 * run attend_fast.  max_binding: the device's largest storage binding.
 * TQ_ERR_INVALID with err naming the binding, its bytes and the limit when
 * one sequence cannot fit, or the grid is out of WebGPU's range. */
tq_status tq_wgsl_plan(const tq_variant *v, tq_op op, const tq_kargs *a,
                       int fast, uint64_t max_binding, int first,
                       tq_wgsl_part *p, char *err, size_t errn);

/* Bytes of workspace a launch needs (decode and prefill; 0 otherwise). */
size_t tq_wgsl_workspace(const tq_variant *v, tq_op op, const tq_kargs *a);

#endif
