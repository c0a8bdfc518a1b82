/* vulkan.h - what the Vulkan generator and the Vulkan runtime backend share:
 * the stages of a variant, its constant-table buffer, the GLSL -> SPIR-V
 * compiler (glslang, validated and optimized with SPIRV-Tools) and the
 * module image that holds every stage (docs/DESIGN.md, "The Vulkan
 * backend", has the image's bytes). */
#ifndef TQG_VULKAN_H
#define TQG_VULKAN_H

#include <stdint.h>

#include "core/tq_types.h"
#include "source.h"

#define TQG_VK_WORKGROUP 128 /* invocations per workgroup, every stage */
#define TQG_VK_PUSH_BYTES 36 /* the template's push-constant block */
#define TQG_VK_BINDINGS 11   /* storage bindings 0..10 */
#define TQG_VK_TABLE_BINDING 10
#define TQG_VK_MAX_STAGES 8

/* Stages (one SPIR-V module each).  Decode and prefill share "attend",
 * followed by "reduce"; "attend.sg" is attend built with subgroup
 * operations, preferred where the device has them. */
typedef enum tqg_vk_stage_id {
  TQG_VK_ENCODE,
  TQG_VK_ATTEND,
  TQG_VK_REDUCE,
  TQG_VK_DEQUANT,
  TQG_VK_STAGE_COUNT
} tqg_vk_stage_id;

/* Stage name ("encode", "attend", ...) and the bindings it uses. */
const char *tqg_vk_stage_name(tqg_vk_stage_id s);
uint32_t tqg_vk_stage_bindings(tqg_vk_stage_id s);

/* Query rows (token, q head) one attend workgroup owns: the launch plan
 * and the template agree through this function. */
int tqg_vk_rows_per_group(const tq_variant *v);

/* Does the variant have the fast attend stage (attend_fast.comp)?  The
 * CUDA fast path's condition, and query rows in whole vec4s. */
int tqg_vk_fast(const tq_variant *v);
/* Subgroup sizes the fast stage is built for: a power of two that divides
 * its 32-token chunk.  Its workgroup is 4 subgroups. */
#define TQG_VK_FAST_OK(n) ((n) >= 4 && (n) <= 32 && ((n) & ((n)-1)) == 0)
#define TQG_VK_FAST_WORKERS 4

/* The variant's constant tables (codebooks, boundaries, rotations, QJL
 * projection) as one f32 array bound at TQG_VK_TABLE_BINDING; offsets
 * (in floats, -1 when absent) become TQ_T_* defines of the GLSL. */
typedef struct tqg_vk_tables {
  int kcb, kbnd, vcb, vbnd, ocb, obnd;
  int main_signs, main_matrix, out_signs, out_matrix, qjl;
  size_t count;
  float *data; /* malloc'd, count floats */
} tqg_vk_tables;

tq_status tqg_vk_tables_build(const tq_variant *v, tqg_vk_tables *t, char *err,
                              size_t errn);
void tqg_vk_tables_free(tqg_vk_tables *t);

/* The GLSL of every stage of one variant (templates/vulkan/): one text, the
 * stage chosen by the compiler's preamble.  origin names the spec (or
 * "jit") in the header comment. */
tq_status tqg_emit_vulkan(const tq_variant *v, const char *origin,
                          tqg_source *out, char *err, size_t errn);

/* GLSL -> validated, optimized SPIR-V for one stage, without subgroup
 * operations (subgroups 0) or with them (1); for the attend stage of a
 * tqg_vk_fast variant, a subgroup size n > 1 builds the fast stage for
 * subgroups of exactly n invocations (TQ_FAST_SG).  file names the
 * generated file in messages; a compile error reads
 * "<file>:<line>: <glslang message> (from templates/vulkan/X.comp:N)".
 * words is malloc'd. */
tq_status tqg_spirv_compile(const tqg_source *src, const char *file,
                            tqg_vk_stage_id stage, int subgroups,
                            uint32_t **words, size_t *n_words, char *err,
                            size_t errn);
/* spirv-opt's performance recipe, in-process (spirv_opt.cpp). */
int tqg_spirv_optimize(const uint32_t *in, size_t n, uint32_t **out,
                       size_t *out_n, char *err, size_t errn);
/* Is the SPIR-V compiler built in? */
int tqg_spirv_available(void);

/* ---- the module image: every stage and the tables, one blob ------------ */
typedef struct tqg_vk_shader {
  char stage[16];
  uint32_t workgroup[3];
  uint32_t push_bytes;
  uint32_t bindings;
  const uint32_t *code; /* points into the image */
  size_t code_bytes;
} tqg_vk_shader;

typedef struct tqg_vk_image {
  int n;
  tqg_vk_shader shader[TQG_VK_MAX_STAGES];
  const float *tables; /* points into the image */
  size_t table_floats;
} tqg_vk_image;

/* Compiles every stage of v (attend with subgroups when subgroups is 1,
 * without when 0, both when 2) into a malloc'd image.  When fast_sg is a
 * TQG_VK_FAST_OK size and v is tqg_vk_fast, the image also carries
 * "attend.f<fast_sg>", the fast attend stage for that subgroup size. */
tq_status tqg_vk_build(const tq_variant *v, const tqg_source *src,
                       const char *file, int subgroups, int fast_sg,
                       void **image,
                       size_t *size, char *err, size_t errn);
/* Parses an image (checking every offset and size); the result points
 * into it. */
tq_status tqg_vk_parse(const void *image, size_t size, tqg_vk_image *out,
                       char *err, size_t errn);

#endif
