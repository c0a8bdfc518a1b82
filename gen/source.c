/* source.c - a growing text buffer that remembers where its lines came from. */
#include "source.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tqg_source_init(tqg_source *s) { memset(s, 0, sizeof *s); }

void tqg_source_free(tqg_source *s) {
  free(s->text);
  memset(s, 0, sizeof *s);
}

static void append(tqg_source *s, const char *p, size_t n) {
  if (s->oom) return;
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + n + 1) cap *= 2;
    char *t = realloc(s->text, cap);
    if (!t) {
      s->oom = 1;
      return;
    }
    s->text = t;
    s->cap = cap;
  }
  memcpy(s->text + s->len, p, n);
  s->len += n;
  s->text[s->len] = 0;
  for (size_t i = 0; i < n; i++) s->lines += p[i] == '\n';
}

void tqg_source_mark(tqg_source *s, const char *origin, int origin_line) {
  if (s->n_segments == TQG_SOURCE_MAX_SEGMENTS) return;
  tqg_segment *g = &s->segments[s->n_segments++];
  g->first_line = s->lines + 1;
  g->origin = origin;
  g->origin_line = origin_line;
}

void tqg_source_puts(tqg_source *s, const char *text) {
  append(s, text, strlen(text));
}

void tqg_source_printf(tqg_source *s, const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    append(s, small, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (!big) {
    s->oom = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  append(s, big, (size_t)n);
  free(big);
}

tq_status tqg_source_template(tqg_source *s, const char *origin,
                              const char *tpl, const char *const *keys,
                              const char *const *values, int n, char *err,
                              size_t errn) {
  tqg_source_mark(s, origin, 1);
  int line = 1;
  for (const char *p = tpl; *p;) {
    const char *open = strstr(p, "{{");
    if (!open) {
      tqg_source_puts(s, p);
      break;
    }
    append(s, p, (size_t)(open - p));
    for (const char *c = p; c < open; c++) line += *c == '\n';
    const char *close = strstr(open, "}}");
    size_t klen = close ? (size_t)(close - open - 2) : 0;
    int found = -1;
    for (int i = 0; close && i < n; i++)
      if (strlen(keys[i]) == klen && !strncmp(open + 2, keys[i], klen)) found = i;
    if (found < 0) {
      snprintf(err, errn, "%s:%d: unknown template key '%.*s'", origin, line,
               close ? (int)klen : 8, open + 2);
      return TQ_ERR_INVALID;
    }
    tqg_source_puts(s, values[found]);
    p = close + 2;
  }
  return s->oom ? TQ_ERR_NOMEM : TQ_OK;
}

void tqg_source_origin(const tqg_source *s, int line, char *buf, size_t n) {
  const tqg_segment *best = NULL;
  for (int i = 0; i < s->n_segments; i++)
    if (s->segments[i].first_line <= line) best = &s->segments[i];
  if (!best) {
    snprintf(buf, n, "emitter");
    return;
  }
  snprintf(buf, n, "%s:%d", best->origin,
           best->origin_line + (line - best->first_line));
}
