/* clang_check.h - parse generated source in-process with libclang before it
 * is written out, so a template that stopped compiling (or started to warn)
 * fails at generation time with the template line to fix, not later inside
 * a JIT compile on a user's machine.
 *
 * Built without libclang (TQ_LIBCLANG off, or clang-c/Index.h not found),
 * the check is a no-op that returns TQ_OK; tqg_clang_available() tells. */
#ifndef TQG_CLANG_CHECK_H
#define TQG_CLANG_CHECK_H

#include <stddef.h>

#include "core/tq_types.h"
#include "source.h"

typedef enum {
  TQG_LANG_C,   /* -x c -std=c11 -Wall -Wextra -Wshadow */
  TQG_LANG_CUDA /* -x cuda, device side only, no CUDA toolkit headers */
} tqg_lang;

/* 1 when this build parses with libclang, 0 when tqg_clang_check skips. */
int tqg_clang_available(void);

/* Parses src->text as an unsaved file named file_name (the name the
 * generated file will have on disk) in language lang.  Every diagnostic of
 * severity warning or worse is a failure: returns TQ_ERR_COMPILE with err =
 * "<file_name>:<line>:<col>: <severity>: <message> [<flag>] (from
 * <template>:<line>)" for the first one, followed by how many more there
 * were.  Notes are ignored.  TQ_ERR_NOMEM when src->oom is set.
 *
 * CUDA is checked for device code only, with -nocudainc: the source must
 * define what it uses (__global__ is __attribute__((global)), ...).  The GPU
 * arch is sm_90 when the libclang in use knows it (clang 16 and later), else
 * sm_86, so __CUDA_ARCH__ is 860 under clang 14 and 15. */
tq_status tqg_clang_check(const tqg_source *src, const char *file_name,
                          tqg_lang lang, char *err, size_t errn);

#endif
