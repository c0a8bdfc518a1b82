/* output_vulkan.c - SPIR-V in the AOT dispatch table.  Every stage is
 * compiled in-process (gen/spirv.c), so `tqgen -o` always embeds them: an
 * engine registers the table and needs no compiler at run time.  The
 * attend stage is built twice unless the spec turns subgroups off: with
 * subgroup operations ("attend.sg") and without ("attend"), and the
 * backend picks what the device supports. */
#include "output_vulkan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vulkan.h"

static void words(tqg_source *s, const char *name, const uint32_t *w,
                  size_t n) {
  tqg_source_printf(s, "static const uint32_t %s[%zu] = {", name, n);
  for (size_t i = 0; i < n; i++)
    tqg_source_printf(s, "%s0x%08x%s", i % 8 ? " " : "\n  ", w[i],
                      i + 1 < n ? "," : "");
  tqg_source_puts(s, "\n};\n");
}

tq_status tqg_vulkan_arrays(const tq_variant *v, const tqg_source *src,
                            const char *rel, int subgroups, int index,
                            tqg_source *arrays, char *tables_name,
                            char *shaders_name, size_t name_n, int *n_shaders,
                            char *err, size_t errn) {
  void *image = NULL;
  size_t size = 0;
  /* With subgroups, the fast attend stage for 32-wide subgroups (NVIDIA's
   * size) too; other devices take attend.sg or attend. */
  tq_status st = tqg_vk_build(v, src, rel, subgroups == 0 ? 0 : 2,
                              subgroups == 0 ? 0 : 32, &image, &size, err,
                              errn);
  tqg_vk_image img;
  if (!st) st = tqg_vk_parse(image, size, &img, err, errn);
  if (st) {
    free(image);
    return st;
  }
  char name[64];
  tqg_source_printf(
      arrays,
      "/* %s: SPIR-V of each stage, then the constant tables (f32 bits) */\n",
      rel);
  for (int i = 0; i < img.n; i++) {
    snprintf(name, sizeof name, "tq_spirv_%d_%d", index, i);
    words(arrays, name, img.shader[i].code, img.shader[i].code_bytes / 4);
  }
  snprintf(tables_name, name_n, "tq_vk_tables_%d", index);
  words(arrays, tables_name, (const uint32_t *)img.tables, img.table_floats);
  snprintf(shaders_name, name_n, "tq_vk_shaders_%d", index);
  tqg_source_printf(arrays, "static const tq_dispatch_shader %s[%d] = {\n",
                    shaders_name, img.n);
  for (int i = 0; i < img.n; i++) {
    const tqg_vk_shader *sh = &img.shader[i];
    tqg_source_printf(arrays,
                      "  {\"%s\", tq_spirv_%d_%d, sizeof tq_spirv_%d_%d, {%u, "
                      "%u, %u}, %u, 0x%x},\n",
                      sh->stage, index, i, index, i, sh->workgroup[0],
                      sh->workgroup[1], sh->workgroup[2], sh->push_bytes,
                      sh->bindings);
  }
  tqg_source_puts(arrays, "};\n\n");
  *n_shaders = img.n;
  free(image);
  return arrays->oom ? TQ_ERR_NOMEM : TQ_OK;
}
