/* clang_check.c - generated source through libclang's parser and semantic
 * analysis (no code generation), every warning treated as an error and
 * mapped back to the template line it came from. */
#include "clang_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TQG_HAVE_LIBCLANG

#include <clang-c/Index.h>

int tqg_clang_available(void) {
  return 1;
}

#define MAX_ARGS 24

/* Major version of the libclang actually loaded ("... clang version 14.0.6
 * ..."), 0 when it cannot be read. */
static int clang_major(void) {
  CXString v = clang_getClangVersion();
  const char *s = clang_getCString(v);
  const char *p = s ? strstr(s, "version ") : NULL;
  int major = p ? atoi(p + 8) : 0;
  clang_disposeString(v);
  return major;
}

/* The resource directory (the compiler's own <stddef.h>, ...) found at
 * build time next to clang-c/Index.h, when it is still there; else NULL and
 * libclang uses the one it derives from where it was loaded from.  Debian's
 * libclang 14 derives the right one too; naming it keeps the check from
 * depending on how a distribution lays libclang out. */
static const char *resource_dir(void) {
#ifdef TQG_CLANG_RESOURCE_DIR
  FILE *f = fopen(TQG_CLANG_RESOURCE_DIR "/include/stddef.h", "r");
  if (!f) return NULL;
  fclose(f);
  return TQG_CLANG_RESOURCE_DIR;
#else
  return NULL;
#endif
}

/* The command line for lang, without the file name; returns argc. */
static int command_line(tqg_lang lang, const char **argv) {
  int n = 0;
  if (lang == TQG_LANG_CUDA) {
    /* -Wno-unknown-cuda-version: see counts() */
    static const char *const cuda[] = {
        "-x",         "cuda",       "--cuda-device-only",       "-nocudainc",
        "-nocudalib", "-std=c++17", "-Wno-unknown-cuda-version"};
    for (size_t i = 0; i < sizeof cuda / sizeof *cuda; i++) argv[n++] = cuda[i];
    /* clang learnt sm_90 in release 16 */
    argv[n++] =
        clang_major() >= 16 ? "--cuda-gpu-arch=sm_90" : "--cuda-gpu-arch=sm_86";
  } else {
    argv[n++] = "-x";
    argv[n++] = "c";
    argv[n++] = "-std=c11";
  }
  argv[n++] = "-Wall";
  argv[n++] = "-Wextra";
  argv[n++] = "-Wshadow";
  const char *dir = resource_dir();
  if (dir) {
    argv[n++] = "-resource-dir";
    argv[n++] = dir;
  }
  return n;
}

/* Whether d fails the check: a warning or worse, except the driver's word
 * that the installed CUDA toolkit is newer than this clang knows.  That one
 * is about the machine, not the source (which uses nothing of the toolkit),
 * and libclang reports driver diagnostics before -Wno-... takes effect. */
static int counts(CXDiagnostic d) {
  if (clang_getDiagnosticSeverity(d) < CXDiagnostic_Warning) return 0;
  CXString opt = clang_getDiagnosticOption(d, NULL);
  const char *o = clang_getCString(opt);
  int machine = o && !strcmp(o, "-Wunknown-cuda-version");
  clang_disposeString(opt);
  return !machine;
}

static const char *severity_name(enum CXDiagnosticSeverity s) {
  switch (s) {
    case CXDiagnostic_Warning:
      return "warning";
    case CXDiagnostic_Error:
      return "error";
    case CXDiagnostic_Fatal:
      return "fatal error";
    default:
      return "note";
  }
}

static const char *parse_error_name(enum CXErrorCode e) {
  switch (e) {
    case CXError_Failure:
      return "failure";
    case CXError_Crashed:
      return "libclang crashed";
    case CXError_InvalidArguments:
      return "invalid arguments";
    case CXError_ASTReadError:
      return "the driver rejected the command line";
    default:
      return "unknown error";
  }
}

/* err = "<where>: <severity>: <message> [<flag>] (from <origin>)".  A
 * location in the main file maps through src's segments; one in a header
 * names the header; none (a driver diagnostic) names just the file. */
static void describe(CXDiagnostic d, const tqg_source *src,
                     const char *file_name, char *err, size_t errn) {
  CXSourceLocation loc = clang_getDiagnosticLocation(d);
  CXFile file;
  unsigned line = 0, col = 0;
  clang_getExpansionLocation(loc, &file, &line, &col, NULL);
  CXString msg = clang_getDiagnosticSpelling(d);
  CXString opt = clang_getDiagnosticOption(d, NULL);
  const char *m = clang_getCString(msg), *o = clang_getCString(opt);
  const char *sev = severity_name(clang_getDiagnosticSeverity(d));
  char flag[96] = "";
  if (o && *o) snprintf(flag, sizeof flag, " [%s]", o);
  if (!file) {
    snprintf(err, errn, "%s: %s: %s%s", file_name, sev, m ? m : "", flag);
  } else if (clang_Location_isFromMainFile(loc)) {
    char origin[256];
    tqg_source_origin(src, (int)line, origin, sizeof origin);
    snprintf(err, errn, "%s:%u:%u: %s: %s%s (from %s)", file_name, line, col,
             sev, m ? m : "", flag, origin);
  } else {
    CXString header = clang_getFileName(file);
    const char *h = clang_getCString(header);
    snprintf(err, errn, "%s:%u:%u: %s: %s%s (in a header included by %s)",
             h ? h : "?", line, col, sev, m ? m : "", flag, file_name);
    clang_disposeString(header);
  }
  clang_disposeString(opt);
  clang_disposeString(msg);
}

tq_status tqg_clang_check(const tqg_source *src, const char *file_name,
                          tqg_lang lang, char *err, size_t errn) {
  char scratch[1];
  if (!err || !errn) {
    err = scratch;
    errn = sizeof scratch;
  }
  err[0] = 0;
  if (src->oom) {
    snprintf(err, errn, "%s: source incomplete (out of memory while emitting)",
             file_name);
    return TQ_ERR_NOMEM;
  }
  const char *argv[MAX_ARGS];
  int argc = command_line(lang, argv);
  struct CXUnsavedFile file = {file_name, src->text ? src->text : "",
                               (unsigned long)src->len};
  CXIndex index = clang_createIndex(0, 0);
  if (!index) {
    snprintf(err, errn, "%s: libclang could not create an index", file_name);
    return TQ_ERR_NOMEM;
  }
  CXTranslationUnit tu = NULL;
  enum CXErrorCode rc = clang_parseTranslationUnit2(
      index, file_name, argv, argc, &file, 1, CXTranslationUnit_None, &tu);
  if (rc != CXError_Success || !tu) {
    /* The diagnostics that would say why go with the unit that was not
     * made; the command line lets a person rerun it with clang itself. */
    int k = snprintf(err, errn,
                     "%s: libclang could not check it (%s); to see why, run: "
                     "clang -fsyntax-only",
                     file_name, parse_error_name(rc));
    for (int i = 0; i < argc && k >= 0 && (size_t)k < errn; i++)
      k += snprintf(err + k, errn - (size_t)k, " %s", argv[i]);
    if (k >= 0 && (size_t)k < errn)
      snprintf(err + k, errn - (size_t)k, " %s", file_name);
    if (tu) clang_disposeTranslationUnit(tu);
    clang_disposeIndex(index);
    return TQ_ERR_UNAVAILABLE;
  }
  unsigned n = clang_getNumDiagnostics(tu), bad = 0;
  for (unsigned i = 0; i < n; i++) {
    CXDiagnostic d = clang_getDiagnostic(tu, i);
    if (counts(d) && bad++ == 0) describe(d, src, file_name, err, errn);
    clang_disposeDiagnostic(d);
  }
  clang_disposeTranslationUnit(tu);
  clang_disposeIndex(index);
  if (bad > 1) {
    size_t k = strlen(err);
    snprintf(err + k, errn - k, "; and %u more warning(s) or error(s)",
             bad - 1);
  }
  return bad ? TQ_ERR_COMPILE : TQ_OK;
}

#else /* no libclang: nothing is checked */

int tqg_clang_available(void) {
  return 0;
}

tq_status tqg_clang_check(const tqg_source *src, const char *file_name,
                          tqg_lang lang, char *err, size_t errn) {
  (void)src;
  (void)file_name;
  (void)lang;
  if (err && errn) err[0] = 0;
  return TQ_OK;
}

#endif
