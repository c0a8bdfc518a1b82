/* cuda_plan.h - how each op of a CUDA variant is launched: grid, block,
 * shared memory and workspace, as pure arithmetic on the variant and the
 * launch arguments (and, for the context splits, how many blocks the
 * device runs at once).  The launch passes the plan's split count to the
 * kernels in tq_kargs.splits, so the plan is the single place that chooses
 * it.  No CUDA headers: the plan is tested on machines without a GPU. */
#ifndef TQ_CUDA_PLAN_H
#define TQ_CUDA_PLAN_H

#include "tq_abi.h"
#include "tq_types.h"

typedef struct tq_cuda_step {
  const char *entry; /* op suffix of the kernel: "decode", "reduce", ... */
  unsigned grid[3];
  unsigned block[3];
  unsigned shared_bytes;
} tq_cuda_step;

#define TQ_CUDA_MAX_STEPS 2

/* Fills steps in order; returns how many (0 when args are unusable).
 * shared_limit: the most shared memory a block may opt into on the device
 * (bytes; 0 when unknown), which the tensor-core prefill sizes itself by.
 * slots: how many blocks of step 0's kernel the device runs at once, SMs
 * times resident blocks (0 when unknown: an H100's figure); the decode's
 * split count fills them once, and so does the tensor-core encode's grid. */
int tq_cuda_plan(const tq_variant *v, tq_op op, const tq_kargs *a, int shared_limit,
                 int slots, tq_cuda_step steps[TQ_CUDA_MAX_STEPS]);
/* The decode/prefill split count the plan chose; the launch stores it in
 * tq_kargs.splits, where the kernels read it. */
int tq_cuda_splits(const tq_variant *v, tq_op op, const tq_kargs *a, int slots);
/* Bytes of workspace the plan's kernels need. */
size_t tq_cuda_workspace(const tq_variant *v, tq_op op, const tq_kargs *a, int slots);
/* Entry points a module of this variant exports, NULL-terminated. */
extern const char *const tq_cuda_entries[];

#endif
