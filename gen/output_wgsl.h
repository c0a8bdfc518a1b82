/* output_wgsl.h - the WGSL part of tqg_write_outputs (gen/output.c):
 * wgsl/<variant>.<flavour>.wgsl, the dispatch-table entries and
 * <family>.webgpu.js. */
#ifndef TQG_OUTPUT_WGSL_H
#define TQG_OUTPUT_WGSL_H

#include <cjson/cJSON.h>

#include "output.h"
#include "source.h"

typedef struct tqg_wgsl_output tqg_wgsl_output;

/* Opens a WebGPU device to compile every module with, when there is one. */
tq_status tqg_wgsl_output_begin(const tqg_spec *spec, const char *dir,
                                int quiet, tqg_wgsl_output **out, char *err,
                                size_t errn);
/* Writes the variant's modules and appends to head (the top of
 * <family>_dispatch.c) their WGSL text, the tables and the shader array,
 * whose names (and count) are returned for the dispatch entry. */
tq_status tqg_wgsl_output_variant(tqg_wgsl_output *w, const tq_variant *v,
                                  int index, tqg_source *head, cJSON *files,
                                  cJSON *kernels, char *tables_name,
                                  char *shaders_name, size_t namen,
                                  int *n_shaders, char *err, size_t errn);
/* Writes <family>.webgpu.js. */
tq_status tqg_wgsl_output_end(tqg_wgsl_output *w, cJSON *files, char *err,
                              size_t errn);
void tqg_wgsl_output_free(tqg_wgsl_output *w);

#endif
