/* internal.h - runtime internals shared by runtime.c, cache.c, verify.c. */
#ifndef TQ_INTERNAL_H
#define TQ_INTERNAL_H

#include "backend.h"
#include "tq.h"

#define TQ_MAX_TABLES 16
#define TQ_MAX_MODULES 256

typedef struct tq_module {
  uint64_t hash;
  tq_variant variant;
  void *handle; /* backend module */
  const char *origin;
  struct tq_backend *backend;
} tq_module;

struct tq_kernel {
  tq_module *module;
  tq_op op;
};

struct tq_buffer {
  void *mem;
  size_t size;
  int borrowed; /* from tq_wrap: not ours to free */
};

struct tq_backend {
  const tq_backend_ops *ops;
  void *state;
  char err[2048];
  int n_tables;
  const tq_dispatch_table *tables[TQ_MAX_TABLES];
  int n_modules;
  tq_module modules[TQ_MAX_MODULES];
  tq_kernel kernels[TQ_MAX_MODULES][TQ_OP_COUNT];
};

/* Records a message in be->err and returns st. */
tq_status tq_fail(tq_backend *be, tq_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The JIT disk cache: $XDG_CACHE_HOME/tqgen (or ~/.cache/tqgen), one file
 * per (backend, variant hash); see cache.c for the file format. */
int tq_cache_dir(char *buf, size_t n);
/* TQ_OK with a malloc'd payload; TQ_ERR_NOT_FOUND when absent or invalid
 * (an invalid file is removed so it gets rebuilt). */
tq_status tq_cache_load(const char *backend, uint64_t hash, void **payload,
                        size_t *size);
tq_status tq_cache_store(const char *backend, uint64_t hash,
                         const void *payload, size_t size, char *err,
                         size_t errn);
/* Writes head then body as the file at path, creating its folders: into a
 * temporary file beside it, renamed over path once complete, so a reader
 * never sees a partial file.  Both runtime caches (JIT binaries, Vulkan's
 * pipeline cache) write this way. */
tq_status tq_file_replace(const char *path, const void *head, size_t head_n,
                          const void *body, size_t body_n, char *err, size_t errn);
/* Path of the cache file for (backend, hash), for tests. */
int tq_cache_path(const char *backend, uint64_t hash, char *buf, size_t n);

#endif
