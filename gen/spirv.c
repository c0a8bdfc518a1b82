/* spirv.c - GLSL -> SPIR-V in-process: glslang's C interface compiles one
 * stage, SPIRV-Tools validates it (spvValidate), spirv-opt's performance
 * recipe optimizes it (spirv_opt.cpp) and the result is validated again.
 * Shared by `tqgen` (AOT) and the runtime's Vulkan JIT, so both produce the
 * same words.  Without glslang at build time every call says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vulkan.h"

#ifdef TQG_HAVE_GLSLANG
#include <glslang/Include/glslang_c_interface.h>
#include <glslang/Public/resource_limits_c.h>
#include <pthread.h>
#include <spirv-tools/libspirv.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_ok;

/* glslang's process state lives until exit: finalizing it while another
 * thread compiles is not safe, and the OS reclaims it anyway. */
static void init(void) {
  init_ok = glslang_initialize_process() != 0;
}

int tqg_spirv_available(void) {
  return 1;
}

/* The first error of a glslang log, "ERROR: 0:LINE: text", as
 * "<file>:LINE: text (from <template>:N)". */
static void explain(const tqg_source *src, const char *file, const char *log,
                    char *err, size_t errn) {
  const char *e = strstr(log, "ERROR: ");
  if (!e) {
    snprintf(err, errn, "%s: glslang: %.400s", file,
             *log ? log : "(empty log)");
    return;
  }
  e += 7;
  int line = 0;
  const char *colon = strchr(e, ':');
  if (colon && colon[1] >= '0' && colon[1] <= '9') {
    line = atoi(colon + 1);
    const char *c2 = strchr(colon + 1, ':');
    if (c2) e = c2 + 1;
  }
  while (*e == ' ') e++;
  int len = (int)strcspn(e, "\n");
  if (len > 300) len = 300;
  char where[300] = "";
  if (line > 0) tqg_source_origin(src, line, where, sizeof where);
  snprintf(err, errn, "%s:%d: %.*s%s%s%s", file, line, len, e,
           *where ? " (from " : "", where, *where ? ")" : "");
}

/* spvValidate on words; err names what it found. */
static tq_status validate(const uint32_t *w, size_t n, const char *file,
                          const char *when, char *err, size_t errn) {
  spv_context ctx = spvContextCreate(SPV_ENV_VULKAN_1_1);
  if (!ctx) return TQ_ERR_NOMEM;
  spv_const_binary_t bin = {w, n};
  spv_diagnostic diag = NULL;
  spv_result_t r = spvValidate(ctx, &bin, &diag);
  tq_status st = TQ_OK;
  if (r != SPV_SUCCESS) {
    snprintf(err, errn, "%s: SPIR-V %s fails validation: %.400s", file, when,
             diag && diag->error ? diag->error : "(no message)");
    st = TQ_ERR_COMPILE;
  }
  spvDiagnosticDestroy(diag);
  spvContextDestroy(ctx);
  return st;
}

tq_status tqg_spirv_compile(const tqg_source *src, const char *file,
                            tqg_vk_stage_id stage, int subgroups,
                            uint32_t **words, size_t *n_words, char *err,
                            size_t errn) {
  *words = NULL;
  *n_words = 0;
  pthread_once(&init_once, init);
  if (!init_ok) {
    snprintf(err, errn, "glslang_initialize_process failed");
    return TQ_ERR_UNAVAILABLE;
  }
  char preamble[96];
  snprintf(preamble, sizeof preamble,
           "#define TQ_STAGE %d\n#define TQ_SUBGROUPS %d\n#define TQ_FAST_SG "
           "%d\n",
           (int)stage, subgroups ? 1 : 0,
           stage == TQG_VK_ATTEND && subgroups > 1 ? subgroups : 0);
  const glslang_input_t input = {
      .language = GLSLANG_SOURCE_GLSL,
      .stage = GLSLANG_STAGE_COMPUTE,
      .client = GLSLANG_CLIENT_VULKAN,
      .client_version = GLSLANG_TARGET_VULKAN_1_1,
      .target_language = GLSLANG_TARGET_SPV,
      .target_language_version = GLSLANG_TARGET_SPV_1_3,
      .code = src->text,
      .default_version = 450,
      .default_profile = GLSLANG_NO_PROFILE,
      .force_default_version_and_profile = 0,
      .forward_compatible = 0,
      .messages = GLSLANG_MSG_SPV_RULES_BIT | GLSLANG_MSG_VULKAN_RULES_BIT,
      .resource = glslang_default_resource(),
  };
  glslang_shader_t *sh = glslang_shader_create(&input);
  if (!sh) return TQ_ERR_NOMEM;
  glslang_shader_set_preamble(sh, preamble);
  tq_status st = TQ_OK;
  if (!glslang_shader_preprocess(sh, &input) ||
      !glslang_shader_parse(sh, &input)) {
    explain(src, file, glslang_shader_get_info_log(sh), err, errn);
    glslang_shader_delete(sh);
    return TQ_ERR_COMPILE;
  }
  glslang_program_t *prog = glslang_program_create();
  if (!prog) {
    glslang_shader_delete(sh);
    return TQ_ERR_NOMEM;
  }
  glslang_program_add_shader(prog, sh);
  if (!glslang_program_link(
          prog, GLSLANG_MSG_SPV_RULES_BIT | GLSLANG_MSG_VULKAN_RULES_BIT)) {
    explain(src, file, glslang_program_get_info_log(prog), err, errn);
    st = TQ_ERR_COMPILE;
  }
  uint32_t *raw = NULL;
  size_t n = 0;
  if (!st) {
    /* No debug info: the words must not depend on where the file is. */
    glslang_spv_options_t opt = {.disable_optimizer = true};
    glslang_program_SPIRV_generate_with_options(prog, GLSLANG_STAGE_COMPUTE,
                                                &opt);
    n = glslang_program_SPIRV_get_size(prog);
    raw = n ? malloc(n * sizeof *raw) : NULL;
    if (!raw)
      st = TQ_ERR_NOMEM;
    else
      glslang_program_SPIRV_get(prog, raw);
  }
  glslang_program_delete(prog);
  glslang_shader_delete(sh);
  if (!st) st = validate(raw, n, file, "from glslang", err, errn);
  uint32_t *opt_words = NULL;
  size_t opt_n = 0;
  if (!st && !tqg_spirv_optimize(raw, n, &opt_words, &opt_n, err, errn))
    st = TQ_ERR_COMPILE;
  free(raw);
  if (!st) st = validate(opt_words, opt_n, file, "after spirv-opt", err, errn);
  if (st) {
    free(opt_words);
    return st;
  }
  *words = opt_words;
  *n_words = opt_n;
  return TQ_OK;
}

#else /* built without glslang */

int tqg_spirv_available(void) {
  return 0;
}

int tqg_spirv_optimize(const uint32_t *in, size_t n, uint32_t **out,
                       size_t *out_n, char *err, size_t errn) {
  (void)in;
  (void)n;
  *out = NULL;
  *out_n = 0;
  snprintf(err, errn, "built without SPIRV-Tools");
  return 0;
}

tq_status tqg_spirv_compile(const tqg_source *src, const char *file,
                            tqg_vk_stage_id stage, int subgroups,
                            uint32_t **words, size_t *n_words, char *err,
                            size_t errn) {
  (void)src;
  (void)stage;
  (void)subgroups;
  *words = NULL;
  *n_words = 0;
  snprintf(err, errn,
           "%s: this build has no SPIR-V compiler (install glslang-dev and "
           "spirv-tools, then reconfigure)",
           file);
  return TQ_ERR_UNAVAILABLE;
}
#endif
