/* tq_dispatch.h - the shape of a generated dispatch table: one entry per
 * (variant, backend) with every op.  tqgen writes these as C (AOT); an
 * engine registers them with tq_register and needs no compiler at run time. */
#ifndef TQ_DISPATCH_H
#define TQ_DISPATCH_H

#include "tq_abi.h"
#include "tq_types.h"

typedef struct tq_dispatch_entry {
  const char *name;    /* canonical variant name */
  uint64_t hash;       /* tqg_variant_hash: name + generator version */
  const char *backend; /* "c", "cuda", "vulkan", "wgsl" */
  tq_variant variant;
  /* c backend: the functions themselves */
  tq_c_kernel_fn c_fn[TQ_OP_COUNT];
  tq_c_workspace_fn c_workspace;
  /* GPU backends: a module image and its entry points */
  const void *binary;
  size_t binary_size;
  const char *entry[TQ_OP_COUNT];
} tq_dispatch_entry;

typedef struct tq_dispatch_table {
  const char *family;            /* spec family name */
  const char *generator_version; /* must equal TQ_GENERATOR_VERSION */
  int count;
  const tq_dispatch_entry *entries;
} tq_dispatch_table;

#endif
