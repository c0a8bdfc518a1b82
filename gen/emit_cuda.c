/* emit_cuda.c - the CUDA emitter: integer types for NVRTC (which has no
 * standard headers), the shared prelude, then templates/cuda/kernel.cu. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
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

/* The encode's cell grid for one codebook (tqg_codebook_grid) over the
 * unit-variance coordinates of a dim-channel vector, which lie within
 * sqrt(dim): TQ_<P>_GRID cells (0: none fits, the encode searches the
 * boundaries), the map u = x scale + offset, and per cell four words:
 * threshold (f32 bits), base index, and the squared centroids below and
 * above the threshold (f32 bits).  GRID_CELLS bounds the shared table. */
#define GRID_CELLS 256
static void grid(tqg_source *s, const char *prefix, const char *lower, int bits, int dim) {
  tqg_codebook cb;
  tqg_grid g = {0, 0, 0};
  if (bits >= 1 && bits <= 8 && !tqg_lloyd_max(bits, &cb))
    tqg_codebook_grid(&cb, sqrt((double)dim), GRID_CELLS, &g);
  tqg_source_printf(s,
                    "#define TQ_%s_GRID %d /* cells of the encode's search grid */\n"
                    "#define TQ_%s_GRID_SCALE %#.9gf\n#define TQ_%s_GRID_OFFSET %#.9gf\n",
                    prefix, g.cells, prefix, (float)g.scale, prefix, (float)g.offset);
  if (!g.cells) {
    tqg_source_printf(s, "#define tq_%s_grid ((const unsigned *)0)\n", lower);
    return;
  }
  tqg_source_printf(s, "TQ_TABLE unsigned tq_%s_grid[%d] = {", lower, 4 * g.cells);
  for (int c = 0; c < g.cells; c++) {
    int base;
    double t;
    tqg_grid_cell(&cb, &g, c, &base, &t);
    int top = base + (t < c + 1.0); /* the index above the threshold */
    float f[3] = {(float)t, (float)(cb.centroid[base] * cb.centroid[base]),
                  (float)(cb.centroid[top] * cb.centroid[top])};
    unsigned u[3];
    memcpy(u, f, sizeof u);
    tqg_source_printf(s, "%s0x%08x, %d, 0x%08x, 0x%08x%s", c % 3 ? " " : "\n  ", u[0], base,
                      u[1], u[2], c + 1 < g.cells ? "," : "");
  }
  tqg_source_puts(s, "\n};\n");
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
  tq_variant n = *v;
  tqg_variant_normalize(&n);
  tq_slot_layout k;
  tqg_key_layout(&n, &k);
  grid(s, "K", "k", k.main.bits, k.main.dim);
  grid(s, "V", "v", n.value_method == TQ_VALUE_TQ ? n.value_bits : 0, k.main.dim);
  tqg_c_symbol(v, sym, sizeof sym);
  const char *keys[] = {"SYM"}, *values[] = {sym};
  st = tqg_source_template(s, "templates/cuda/kernel.cu", kernel, keys, values,
                           1, err, errn);
  if (!st && s->oom) st = TQ_ERR_NOMEM;
  return st;
}
