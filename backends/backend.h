/* backend.h - the vtable every backend implements.  GPU APIs are dlopened
 * inside their backend, so the runtime builds and runs without them. */
#ifndef TQ_BACKEND_H
#define TQ_BACKEND_H

#include "source.h"
#include "tq.h"

typedef struct tq_backend_ops {
  const char *name;
  const char *binary_kind; /* what the JIT cache stores: "so", "cubin", ... */
  /* What the binaries are built for beyond the backend (e.g. "sm_90"), so
   * one cache serves several devices; NULL when nothing varies. */
  const char *(*target)(void *state);
  /* Is the backend usable here?  Fills err with what is missing. */
  tq_status (*probe)(char *err, size_t errn);
  tq_status (*open)(void **state, char *err, size_t errn);
  void (*close)(void *state);
  /* Source for a variant (all ops): the backend's emitter. */
  tq_status (*emit)(const tq_variant *v, tqg_source *out, char *err, size_t errn);
  /* JIT: source -> binary image (malloc'd), suitable for the disk cache. */
  tq_status (*compile)(void *state, const tq_variant *v, const tqg_source *src,
                       void **binary, size_t *size, char *err, size_t errn);
  /* Binary image -> loaded module. */
  tq_status (*load)(void *state, const tq_variant *v, const void *binary,
                    size_t size, void **module, char *err, size_t errn);
  /* AOT entry -> loaded module. */
  tq_status (*load_aot)(void *state, const tq_dispatch_entry *e, void **module,
                        char *err, size_t errn);
  void (*unload)(void *state, void *module);
  /* Memory and sync fail on GPUs for reasons of their own (out of memory,
   * a kernel's fault surfacing later): err says which. */
  tq_status (*alloc)(void *state, size_t bytes, void **mem, char *err,
                     size_t errn);
  void (*free)(void *state, void *mem);
  tq_status (*write)(void *state, void *mem, size_t off, const void *src,
                     size_t n, char *err, size_t errn);
  tq_status (*read)(void *state, const void *mem, size_t off, void *dst,
                    size_t n, char *err, size_t errn);
  /* Host address of device memory, or NULL when not host-visible. */
  void *(*host_ptr)(void *state, void *mem);
  size_t (*workspace)(void *state, void *module, tq_op op, const tq_kargs *a);
  tq_status (*launch)(void *state, void *module, tq_op op, const tq_kargs *a,
                      char *err, size_t errn);
  tq_status (*sync)(void *state, char *err, size_t errn);
  /* Which code path a loaded kernel runs where a backend has several (a
   * name starting "fallback" when a better one exists but not here); NULL
   * when the backend has one path.  Optional. */
  const char *(*path)(void *state, void *module, tq_op op);
} tq_backend_ops;

/* Runs argv (no shell) in folder cwd (NULL: this one) with stdout and
 * stderr to log_path; returns the exit status, or -1 when it could not run
 * or was killed.  For compilers. */
int tq_spawn(char *const argv[], const char *cwd, const char *log_path);

extern const tq_backend_ops tq_backend_c;
extern const tq_backend_ops tq_backend_cuda;
extern const tq_backend_ops tq_backend_vulkan; /* when built with volk */
extern const tq_backend_ops tq_backend_wgsl; /* unavailable without wgpu-native */

#endif
