/* source.h - generated source text with a map back to where each line came
 * from (a template file and line, or the emitter itself), so a compiler's
 * diagnostic on generated code can name the template line to fix. */
#ifndef TQG_SOURCE_H
#define TQG_SOURCE_H

#include <stddef.h>

#include "core/tq_types.h"

#define TQG_SOURCE_MAX_SEGMENTS 32

typedef struct tqg_segment {
  int first_line;     /* first generated line (1-based) of this segment */
  const char *origin; /* "templates/c/kernel.c" or "emitter" */
  int origin_line;    /* line in origin matching first_line */
} tqg_segment;

typedef struct tqg_source {
  char *text;
  size_t len, cap;
  int lines; /* newlines so far */
  int oom;   /* an allocation failed; text is incomplete */
  int n_segments;
  tqg_segment segments[TQG_SOURCE_MAX_SEGMENTS];
} tqg_source;

void tqg_source_init(tqg_source *s);
void tqg_source_free(tqg_source *s);
/* Starts a segment: the next appended line comes from origin:origin_line. */
void tqg_source_mark(tqg_source *s, const char *origin, int origin_line);
void tqg_source_puts(tqg_source *s, const char *text);
void tqg_source_printf(tqg_source *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends a template, replacing each {{KEY}} by the matching value
 * (keys[i] -> values[i]); an unknown key is an error. */
tq_status tqg_source_template(tqg_source *s, const char *origin,
                              const char *tpl, const char *const *keys,
                              const char *const *values, int n, char *err,
                              size_t errn);
/* Where generated line `line` came from: "templates/c/kernel.c:42". */
void tqg_source_origin(const tqg_source *s, int line, char *buf, size_t n);

#endif
