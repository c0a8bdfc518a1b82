/* emit_cuda.c - the CUDA emitter: integer types for NVRTC (which has no
 * standard headers), the shared prelude, then templates/cuda/kernel.cu. */
#include <stdio.h>

#include "emit.h"

/* NVRTC (__CUDACC_RTC__) has no standard headers: give tq_abi.h the integer
 * types itself.  nvptx64 is LP64 like the hosts the runtime runs on, so
 * tq_kargs has the same layout on both sides of cuLaunchKernel.  nvcc (the
 * AOT path) has the system headers and uses them. */
static const char cuda_types[] =
    "#ifdef __CUDACC_RTC__\n"
    "#define TQ_ABI_NO_STD_HEADERS\n"
    "typedef unsigned char uint8_t;\ntypedef unsigned short uint16_t;\n"
    "typedef int int32_t;\ntypedef unsigned long size_t;\n"
    "#endif\n";

int tqg_cuda_encode_mma(const tq_variant *v) {
  int d = v->head_dim;
  return v->outlier_count == 0 && !v->qjl && v->value_method == TQ_VALUE_TQ &&
         v->dtype != TQ_F32 && (d == 32 || d == 64 || d == 128) &&
         d / 4 * v->key_bits % 32 == 0 && d / 4 * v->value_bits % 32 == 0;
}

tq_status tqg_emit_cuda(const tq_variant *v, const char *origin,
                        tqg_source *s, char *err, size_t errn) {
  char sym[200];
  const char *kernel = tqg_template("cuda/kernel.cu");
  if (!kernel) {
    snprintf(err, errn, "templates/cuda/kernel.cu is missing from this build");
    return TQ_ERR_INVALID;
  }
  tq_status st = tqg_emit_prelude(v, origin, "cuda", cuda_types,
                                  "#define TQ_TABLE static __device__ const",
                                  s, err, errn);
  if (st) return st;
  tqg_c_symbol(v, sym, sizeof sym);
  const char *keys[] = {"SYM"}, *values[] = {sym};
  st = tqg_source_template(s, "templates/cuda/kernel.cu", kernel, keys, values,
                           1, err, errn);
  if (!st && s->oom) st = TQ_ERR_NOMEM;
  return st;
}
