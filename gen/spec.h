/* spec.h - loading a Lua spec into a family of variants.
 *
 * The spec runs in a sandboxed Lua 5.4 state: only the base functions that
 * cannot reach the outside (no io, os, require, dofile, loadfile, debug, no
 * binary chunks), a memory cap and an instruction budget.  Every error names
 * the spec file and line, the key and the allowed values. */
#ifndef TQG_SPEC_H
#define TQG_SPEC_H

#include "core/tq_types.h"

#define TQG_SPEC_MEMORY_LIMIT (64u << 20)  /* bytes of Lua heap */
#define TQG_SPEC_INSTRUCTION_LIMIT 50000000 /* VM instructions */
#define TQG_SPEC_MAX_VARIANTS 1024        /* distinct variants of a family */

typedef enum tqg_backend {
  TQG_BACKEND_C,
  TQG_BACKEND_CUDA,
  TQG_BACKEND_VULKAN,
  TQG_BACKEND_WGSL,
  TQG_BACKEND_COUNT
} tqg_backend;

const char *tqg_backend_name(tqg_backend b);
/* Returns TQG_BACKEND_COUNT when unknown. */
tqg_backend tqg_backend_parse(const char *s);

typedef struct tqg_model {
  char name[64];
  int head_dim, q_heads, kv_heads;
} tqg_model;

/* Per-backend options.  c: cflags (extra compiler flags for JIT/AOT);
 * cuda: archs (e.g. "sm_80,sm_89,sm_90"); vulkan/wgsl: subgroup on/off. */
typedef struct tqg_backend_options {
  int enabled;
  char cflags[256];
  char archs[128];
  int subgroups; /* -1 unset, 0 off, 1 on */
} tqg_backend_options;

typedef struct tqg_spec {
  char file[512];
  char family[64];
  int n_models;
  tqg_model models[32];
  int n_variants;
  tq_variant *variants;  /* deduplicated, in spec order; free with tqg_spec_free */
  tqg_backend_options backend[TQG_BACKEND_COUNT];
} tqg_spec;

/* Loads and validates a spec.  On error returns TQ_ERR_INVALID or TQ_ERR_IO
 * with "<file>:<line>: <message>" in err. */
tq_status tqg_spec_load(const char *path, tqg_spec *spec, char *err, size_t errn);
void tqg_spec_free(tqg_spec *spec);

#endif
