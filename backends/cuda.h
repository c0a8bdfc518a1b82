/* cuda.h - the CUDA backend's compiler half, usable without a GPU: NVRTC is
 * dlopened on first use, so a machine with the toolkit but no driver can
 * still compile (and CI can check) every CUDA variant for any arch. */
#ifndef TQ_CUDA_H
#define TQ_CUDA_H

#include "source.h"
#include "tq_types.h"

/* TQ_OK when NVRTC can be loaded; err then names its version and where it
 * was found.  TQ_ERR_UNAVAILABLE, with what was tried, otherwise. */
tq_status tq_cuda_nvrtc_available(char *err, size_t errn);

/* Compiles generated CUDA source with NVRTC.  arch "sm_XY" gives a CUBIN
 * for that GPU, "compute_XY" gives PTX (NUL-terminated) for the driver to
 * finish.  *image is malloc'd.  v names the program in diagnostics (NULL:
 * "kernel").  A compile error is TQ_ERR_COMPILE with "nvrtc: " and the
 * first error line, mapped back to its template line. */
tq_status tq_cuda_compile(const tq_variant *v, const char *arch,
                          const tqg_source *src, void **image, size_t *size,
                          char *err, size_t errn);

#endif
