/* output_vulkan.h - the Vulkan part of the generated tree: SPIR-V arrays
 * and constant tables for the AOT dispatch table. */
#ifndef TQG_OUTPUT_VULKAN_H
#define TQG_OUTPUT_VULKAN_H

#include "source.h"
#include "spec.h"

/* Compiles every stage of variant number `index` (src: its GLSL, written
 * as `rel`) and appends to `arrays` the C arrays a dispatch entry points
 * at: SPIR-V words per stage, the f32 tables as words, and a
 * tq_dispatch_shader list.  Fills the names of the last two and the stage
 * count.  subgroups: the spec's vulkan option (-1 unset, 0, 1). */
tq_status tqg_vulkan_arrays(const tq_variant *v, const tqg_source *src,
                            const char *rel, int subgroups, int index,
                            tqg_source *arrays, char *tables_name,
                            char *shaders_name, size_t name_n, int *n_shaders,
                            char *err, size_t errn);

#endif
