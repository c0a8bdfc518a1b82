/* vulkan_backend.h - what the Vulkan backend offers beyond the vtable:
 * device facts for reports and timestamps for benchmarks. */
#ifndef TQ_VULKAN_BACKEND_H
#define TQ_VULKAN_BACKEND_H

#include "tq.h"

/* GPU time (ms) of the launches finished since the last call, from
 * timestamps written around each submission; TQ_ERR_UNAVAILABLE when the
 * device has no compute timestamps.  Waits for work in flight. */
tq_status tq_vulkan_gpu_ms(tq_backend *be, double *ms);
/* "llvmpipe (...) (Vulkan 1.3.230, driver ...); subgroups yes ...". */
const char *tq_vulkan_describe(tq_backend *be);
/* 1 when the attend stage runs with subgroup operations on this device. */
int tq_vulkan_subgroups(tq_backend *be);
/* The subgroup size the fast attend stage runs with on this device, or 0
 * where it does not run (docs/DESIGN.md, "The Vulkan backend"). */
int tq_vulkan_fast_sg(tq_backend *be);

#endif
