/* tq.h - the tqgen runtime: open a backend, get kernels for (variant, op)
 * from registered AOT dispatch tables or by JIT, run them, verify them.
 *
 * Every call returns a tq_status; the message of the last failure on a
 * backend is tq_error(backend).  Nothing allocates inside tq_run: workspace
 * sizes come from tq_workspace_size and the caller passes the buffer. */
#ifndef TQ_H
#define TQ_H

#include "tq_abi.h"
#include "tq_dispatch.h"
#include "tq_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tq_backend tq_backend;
typedef struct tq_kernel tq_kernel;
typedef struct tq_buffer tq_buffer;

/* Backends: "c" (and "cuda", "vulkan", "wgsl" when built and present).
 * TQ_ERR_UNAVAILABLE when this machine lacks the driver or compiler; err
 * says what is missing. */
tq_status tq_open(const char *backend, tq_backend **out, char *err,
                  size_t errn);
void tq_close(tq_backend *be);
const char *tq_error(const tq_backend *be);
const char *tq_backend_label(const tq_backend *be);
/* Names of the backends compiled into this runtime, NULL-terminated. */
const char *const *tq_backends(void);

/* AOT: kernels of a generated dispatch table are found before any JIT.
 * Entries of other backends are ignored; a table from another generator
 * version is refused. */
tq_status tq_register(tq_backend *be, const tq_dispatch_table *table);

/* The kernel of (variant, op): a registered AOT entry, else the JIT cache
 * on disk, else generate + compile + cache.  The kernel lives as long as
 * the backend. */
tq_status tq_get_kernel(tq_backend *be, const tq_variant *v, tq_op op,
                        tq_kernel **out);
/* "aot", "jit" (compiled now) or "cache" (loaded from the disk cache). */
const char *tq_kernel_origin(const tq_kernel *k);
/* Which code path the kernel runs on a backend that has several (e.g.
 * Vulkan's fast attend stage or its fallbacks; a name starting "fallback"
 * where a better path exists but not on this device), else NULL. */
const char *tq_kernel_path(const tq_kernel *k);

/* Device memory.  On the c backend it is host memory. */
tq_status tq_alloc(tq_backend *be, size_t bytes, tq_buffer **out);
void tq_free(tq_backend *be, tq_buffer *buf);
size_t tq_buffer_size(const tq_buffer *buf);
/* An engine's own memory (a device pointer on GPU backends) as a buffer;
 * tq_free releases the wrapper only. */
tq_status tq_wrap(tq_backend *be, void *mem, size_t bytes, tq_buffer **out);
/* The address behind a buffer (device pointer on GPU backends). */
void *tq_buffer_ptr(const tq_buffer *buf);
tq_status tq_write(tq_backend *be, tq_buffer *dst, size_t offset,
                   const void *src, size_t bytes);
tq_status tq_read(tq_backend *be, const tq_buffer *src, size_t offset,
                  void *dst, size_t bytes);

/* Launch arguments: tq_kargs with buffers (shapes in tq_abi.h).  Unused
 * buffers may be NULL; block_table is only read for paged variants,
 * channel_perm may be NULL (identity). */
typedef struct tq_launch {
  int batch, kv_heads, n_tokens;
  int capacity;   /* contiguous */
  int num_blocks; /* paged */
  int max_blocks; /* paged */
  float sm_scale; /* 0 means 1/sqrt(head_dim) */
  tq_buffer *k_cache, *v_cache, *block_table, *seq_lens, *channel_perm;
  tq_buffer *q, *k, *v, *out, *workspace;
} tq_launch;

size_t tq_workspace_size(const tq_kernel *k, const tq_launch *l);
/* Checks shapes and buffer sizes against the variant, then launches. */
tq_status tq_run(tq_backend *be, const tq_kernel *k, const tq_launch *l);
tq_status tq_sync(tq_backend *be);

/* Bytes of one slot and of a whole cache (capacity tokens, or a pool). */
size_t tq_key_slot_bytes(const tq_variant *v);
size_t tq_value_slot_bytes(const tq_variant *v);

/* Verification against the CPU reference on fresh random inputs. */
typedef struct tq_verify_options {
  int batch, kv_heads, context, n_tokens; /* 0: defaults by op */
  uint64_t seed;
} tq_verify_options;

typedef struct tq_verify_result {
  tq_op op;
  const char *origin;       /* kernel origin: aot / jit / cache */
  const char *path;         /* tq_kernel_path, or NULL */
  double rel_l2;            /* attention / dequant: |out - ref| / |ref| */
  double max_abs;           /* max |out - ref| / max |ref| */
  double index_mismatch;    /* encode: fraction of indices that differ */
  double max_field_rel;     /* encode: worst relative error of scales/norms */
  double tolerance;         /* the bound rel_l2 (or index_mismatch) must meet */
  int passed;
  char detail[256];         /* why it failed, or what was compared */
} tq_verify_result;

tq_status tq_verify(tq_backend *be, const tq_variant *v, tq_op op,
                    const tq_verify_options *opt, tq_verify_result *res);

#ifdef __cplusplus
}
#endif
#endif
