/* tq_dispatch.h - the shape of a generated dispatch table: one entry per
 * (variant, backend) with every op.  tqgen writes these as C (AOT); an
 * engine registers them with tq_register and needs no compiler at run time. */
#ifndef TQ_DISPATCH_H
#define TQ_DISPATCH_H

#include "tq_abi.h"
#include "tq_types.h"

/* One compiled shader of a backend that builds a module per entry point
 * (Vulkan: SPIR-V words; WebGPU: WGSL text).  `stage` is the name the
 * backend's launch plan asks for ("encode", "decode", "decode_reduce", ...). */
typedef struct tq_dispatch_shader {
  const char *stage;
  const void *code;
  size_t code_size;             /* bytes */
  uint32_t workgroup_size[3];
  uint32_t push_constant_bytes; /* Vulkan: bytes of the push-constant block */
  uint32_t binding_mask;        /* bit i: the shader uses storage binding i */
} tq_dispatch_shader;

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
  /* Vulkan and WebGPU: one shader per stage */
  const tq_dispatch_shader *shaders;
  int shader_count;
} tq_dispatch_entry;

typedef struct tq_dispatch_table {
  const char *family;            /* spec family name */
  const char *generator_version; /* must equal TQ_GENERATOR_VERSION */
  int count;
  const tq_dispatch_entry *entries;
} tq_dispatch_table;

#endif
