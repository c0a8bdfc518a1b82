/* gguf.c - GGUF parsing with every read bounds-checked (see gguf.h). */
#include "gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMS 4
#define MAX_NAME 256 /* longer tensor names are refused (ggml allows 64) */

/* A cursor over the image; the first error sticks and later reads fail. */
typedef struct reader {
  const uint8_t *p;
  size_t size, pos;
  const char *what;
  char *err;
  size_t errn;
  int failed;
} reader;

static tq_status fail(reader *r, const char *fmt, ...) {
  if (r->failed) return TQ_ERR_INVALID;
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(r->err, r->errn, "%s: %s at byte %zu", r->what, msg, r->pos);
  r->failed = 1;
  return TQ_ERR_INVALID;
}

static int take(reader *r, size_t n, const char *field, const uint8_t **out) {
  if (r->failed) return 0;
  if (n > r->size - r->pos) {
    fail(r, "truncated file: %s needs %zu bytes, %zu left", field, n,
         r->size - r->pos);
    return 0;
  }
  *out = r->p + r->pos;
  r->pos += n;
  return 1;
}

static uint64_t le(const uint8_t *b, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
  return v;
}

static int u32(reader *r, const char *field, uint32_t *out) {
  const uint8_t *b;
  if (!take(r, 4, field, &b)) return 0;
  *out = (uint32_t)le(b, 4);
  return 1;
}

static int u64(reader *r, const char *field, uint64_t *out) {
  const uint8_t *b;
  if (!take(r, 8, field, &b)) return 0;
  *out = le(b, 8);
  return 1;
}

static int str(reader *r, const char *field, smol_gguf_str *s) {
  uint64_t n;
  const uint8_t *b;
  if (!u64(r, field, &n)) return 0;
  if (n > r->size - r->pos) {
    fail(r,
         "%s: string length %llu runs past the end of the file (truncated or "
         "corrupt)",
         field, (unsigned long long)n);
    return 0;
  }
  if (!take(r, (size_t)n, field, &b)) return 0;
  s->ptr = (const char *)b;
  s->len = n;
  return 1;
}

static const int scalar_size[SMOL_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4,
                                                      1, 0, 0, 8, 8, 8};

static const char *const type_names[SMOL_GGUF_TYPE_COUNT] = {
    "u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
    "bool", "string", "array", "u64", "i64", "f64"};

/* One value of type t (not an array). */
static int value(reader *r, int t, const char *field) {
  const uint8_t *b;
  smol_gguf_str s;
  if (t == SMOL_GGUF_STRING) return str(r, field, &s);
  return take(r, (size_t)scalar_size[t], field, &b);
}

static int metadata(reader *r, smol_gguf_kv *kv, uint64_t index) {
  char field[96];
  snprintf(field, sizeof field, "metadata key %llu", (unsigned long long)index);
  uint32_t t;
  if (!str(r, field, &kv->key) || !u32(r, field, &t)) return 0;
  snprintf(field, sizeof field, "metadata '%.*s'",
           (int)(kv->key.len > 60 ? 60 : kv->key.len), kv->key.ptr);
  if (t >= SMOL_GGUF_TYPE_COUNT)
    return !fail(r, "%s: unknown value type %u", field, t);
  kv->type = (int)t;
  kv->data = r->p + r->pos;
  if (t != SMOL_GGUF_ARRAY) return value(r, (int)t, field);
  uint32_t et;
  uint64_t n;
  if (!u32(r, field, &et) || !u64(r, field, &n)) return 0;
  if (et >= SMOL_GGUF_TYPE_COUNT || et == SMOL_GGUF_ARRAY)
    return !fail(r, "%s: array element type %u is not supported", field, et);
  kv->elem_type = (int)et;
  kv->count = n;
  kv->data = r->p + r->pos;
  if (et != SMOL_GGUF_STRING) {
    const uint8_t *b;
    if (n > (r->size - r->pos) / (uint64_t)scalar_size[et])
      return !fail(r,
                   "%s: %llu elements of %s run past the end of the file "
                   "(truncated or corrupt)",
                   field, (unsigned long long)n, type_names[et]);
    return take(r, (size_t)n * (size_t)scalar_size[et], field, &b);
  }
  if (n > (r->size - r->pos) / 8) /* each string has an 8-byte length */
    return !fail(r,
                 "%s: %llu strings cannot fit in the rest of the file "
                 "(truncated or corrupt)",
                 field, (unsigned long long)n);
  kv->strings = malloc((size_t)(n ? n : 1) * sizeof *kv->strings);
  if (!kv->strings) return !fail(r, "%s: out of memory", field);
  for (uint64_t i = 0; i < n; i++)
    if (!str(r, field, &kv->strings[i])) return 0;
  return 1;
}

uint64_t smol_ggml_row_bytes(int type, uint64_t n) {
  uint64_t block, bytes;
  switch (type) {
    case SMOL_GGML_F32:
      block = 1, bytes = 4;
      break;
    case SMOL_GGML_F16:
      block = 1, bytes = 2;
      break;
    case SMOL_GGML_Q4_0:
      block = 32, bytes = 18;
      break;
    case SMOL_GGML_Q4_1:
      block = 32, bytes = 20;
      break;
    case SMOL_GGML_Q5_0:
      block = 32, bytes = 22;
      break;
    case SMOL_GGML_Q5_1:
      block = 32, bytes = 24;
      break;
    case SMOL_GGML_Q8_0:
      block = 32, bytes = 34;
      break;
    default:
      return 0;
  }
  return n % block ? 0 : n / block * bytes;
}

const char *smol_ggml_type_name(int type) {
  switch (type) {
    case SMOL_GGML_F32:
      return "F32";
    case SMOL_GGML_F16:
      return "F16";
    case SMOL_GGML_Q4_0:
      return "Q4_0";
    case SMOL_GGML_Q4_1:
      return "Q4_1";
    case SMOL_GGML_Q5_0:
      return "Q5_0";
    case SMOL_GGML_Q5_1:
      return "Q5_1";
    case SMOL_GGML_Q8_0:
      return "Q8_0";
    default:
      return "unknown";
  }
}

static int tensor_info(reader *r, smol_gguf_tensor *t, uint64_t index) {
  char field[96];
  snprintf(field, sizeof field, "tensor info %llu", (unsigned long long)index);
  uint32_t nd, type;
  if (!str(r, field, &t->name) || !u32(r, field, &nd)) return 0;
  snprintf(field, sizeof field, "tensor '%.*s'",
           (int)(t->name.len > 60 ? 60 : t->name.len), t->name.ptr);
  if (t->name.len == 0 || t->name.len >= MAX_NAME)
    return !fail(r, "%s: name length %llu; allowed 1..%d", field,
                 (unsigned long long)t->name.len, MAX_NAME - 1);
  if (nd < 1 || nd > MAX_DIMS)
    return !fail(r, "%s: %u dimensions; allowed 1..%d", field, nd, MAX_DIMS);
  t->n_dims = (int)nd;
  uint64_t elems = 1;
  for (int i = 0; i < MAX_DIMS; i++) {
    t->ne[i] = 1;
    if (i < (int)nd && !u64(r, field, &t->ne[i])) return 0;
    if (t->ne[i] == 0 || t->ne[i] > (1ull << 40) / elems)
      return !fail(r, "%s: dimension %d = %llu is out of range", field, i,
                   (unsigned long long)t->ne[i]);
    elems *= t->ne[i];
  }
  if (!u32(r, field, &type) || !u64(r, field, &t->offset)) return 0;
  t->type = (int)type;
  uint64_t row = smol_ggml_row_bytes(t->type, t->ne[0]);
  if (!row)
    return !fail(
        r,
        "%s: type %u (%s) with a row of %llu elements is not supported "
        "(known: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 in whole blocks)",
        field, type, smol_ggml_type_name(t->type),
        (unsigned long long)t->ne[0]);
  t->bytes = row * (elems / t->ne[0]);
  return 1;
}

/* Offsets, alignment and overlap of the tensors against the data section. */
static tq_status place_tensors(reader *r, smol_gguf *g) {
  uint64_t data_size = g->size - g->data_offset;
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    smol_gguf_tensor *t = &g->tensors[i];
    int nl = (int)t->name.len;
    if (t->offset % g->alignment)
      return fail(r,
                  "tensor '%.*s': data offset %llu is not a multiple of the "
                  "alignment %llu",
                  nl, t->name.ptr, (unsigned long long)t->offset,
                  (unsigned long long)g->alignment);
    if (t->offset > data_size || t->bytes > data_size - t->offset)
      return fail(r,
                  "tensor '%.*s': %llu bytes at data offset %llu run past the "
                  "end of the "
                  "file (data section holds %llu bytes: truncated file?)",
                  nl, t->name.ptr, (unsigned long long)t->bytes,
                  (unsigned long long)t->offset, (unsigned long long)data_size);
    t->data = g->image + g->data_offset + t->offset;
    for (uint64_t j = 0; j < i; j++)
      if (g->tensors[j].name.len == t->name.len &&
          !memcmp(g->tensors[j].name.ptr, t->name.ptr, (size_t)nl))
        return fail(r, "tensor '%.*s' appears twice", nl, t->name.ptr);
  }
  return TQ_OK;
}

static tq_status parse(reader *r, smol_gguf *g) {
  const uint8_t *magic;
  if (!take(r, 4, "magic", &magic)) return TQ_ERR_INVALID;
  if (memcmp(magic, "GGUF", 4)) {
    r->pos = 0;
    return fail(r, "not a GGUF file (magic %02x %02x %02x %02x, want \"GGUF\")",
                magic[0], magic[1], magic[2], magic[3]);
  }
  if (!u32(r, "version", &g->version)) return TQ_ERR_INVALID;
  if (g->version < 2 || g->version > 3)
    return fail(r, "GGUF version %u is not supported (2 and 3 are)",
                g->version);
  if (!u64(r, "tensor count", &g->n_tensors) ||
      !u64(r, "metadata count", &g->n_kv))
    return TQ_ERR_INVALID;
  /* Each entry takes at least 8 (+4) bytes: larger counts are corrupt. */
  if (g->n_kv > r->size / 12 || g->n_tensors > r->size / 24)
    return fail(
        r,
        "counts (%llu metadata, %llu tensors) cannot fit in a %zu-byte file "
        "(truncated or corrupt)",
        (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, r->size);
  g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
  g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
  if (!g->kv || !g->tensors) return fail(r, "out of memory");
  for (uint64_t i = 0; i < g->n_kv; i++)
    if (!metadata(r, &g->kv[i], i)) return TQ_ERR_INVALID;
  g->alignment = 32;
  const smol_gguf_kv *a = smol_gguf_find(g, "general.alignment");
  if (a) {
    uint64_t al = a->type == SMOL_GGUF_U32 ? le(a->data, 4) : 0;
    if (al == 0 || (al & (al - 1)))
      return fail(
          r,
          "general.alignment must be a u32 power of two (type %s, value %llu)",
          type_names[a->type], (unsigned long long)al);
    g->alignment = al;
  }
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (!tensor_info(r, &g->tensors[i], i)) return TQ_ERR_INVALID;
  g->data_offset = (r->pos + g->alignment - 1) / g->alignment * g->alignment;
  if (g->data_offset > g->size)
    return fail(r, "truncated file: the data section would start at byte %llu",
                (unsigned long long)g->data_offset);
  return place_tensors(r, g);
}

tq_status smol_gguf_parse(const void *image, size_t size, const char *what,
                          smol_gguf *g, char *err, size_t errn) {
  memset(g, 0, sizeof *g);
  g->image = (uint8_t *)image;
  g->size = size;
  reader r = {image, size, 0, what, err, errn, 0};
  tq_status st = parse(&r, g);
  if (st) smol_gguf_close(g);
  return st;
}

tq_status smol_gguf_open(const char *path, smol_gguf *g, char *err,
                         size_t errn) {
  memset(g, 0, sizeof *g);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errn,
             "%s: cannot open (run scripts/setup.sh to fetch the model)", path);
    return TQ_ERR_IO;
  }
  long n = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
  uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
  int ok =
      buf && !fseek(f, 0, SEEK_SET) && fread(buf, 1, (size_t)n, f) == (size_t)n;
  fclose(f);
  if (!ok) {
    free(buf);
    snprintf(err, errn, "%s: cannot read (%s)", path,
             n <= 0 ? "empty file" : "read error");
    return n == 0 ? TQ_ERR_INVALID : TQ_ERR_IO;
  }
  tq_status st = smol_gguf_parse(buf, (size_t)n, path, g, err, errn);
  if (st) {
    free(buf);
    return st;
  }
  g->owned = 1;
  return TQ_OK;
}

void smol_gguf_close(smol_gguf *g) {
  if (g->kv)
    for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].strings);
  free(g->kv);
  free(g->tensors);
  if (g->owned) free(g->image);
  memset(g, 0, sizeof *g);
}

static int str_eq(smol_gguf_str s, const char *c) {
  size_t n = strlen(c);
  return s.len == n && !memcmp(s.ptr, c, n);
}

const smol_gguf_kv *smol_gguf_find(const smol_gguf *g, const char *key) {
  for (uint64_t i = 0; i < g->n_kv; i++)
    if (str_eq(g->kv[i].key, key)) return &g->kv[i];
  return NULL;
}

const smol_gguf_tensor *smol_gguf_tensor_find(const smol_gguf *g,
                                              const char *name) {
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (str_eq(g->tensors[i].name, name)) return &g->tensors[i];
  return NULL;
}

static tq_status lookup(const smol_gguf *g, const char *key,
                        const smol_gguf_kv **kv, char *err, size_t errn) {
  *kv = smol_gguf_find(g, key);
  if (*kv) return TQ_OK;
  snprintf(err, errn, "metadata '%s' is missing", key);
  return TQ_ERR_NOT_FOUND;
}

tq_status smol_gguf_get_int(const smol_gguf *g, const char *key, int64_t *out,
                            char *err, size_t errn) {
  const smol_gguf_kv *kv;
  tq_status st = lookup(g, key, &kv, err, errn);
  if (st) return st;
  const uint8_t *b = kv->data;
  switch (kv->type) {
    case SMOL_GGUF_U8:
      *out = b[0];
      break;
    case SMOL_GGUF_I8:
      *out = (int8_t)b[0];
      break;
    case SMOL_GGUF_U16:
      *out = (int64_t)le(b, 2);
      break;
    case SMOL_GGUF_I16:
      *out = (int16_t)le(b, 2);
      break;
    case SMOL_GGUF_U32:
      *out = (int64_t)le(b, 4);
      break;
    case SMOL_GGUF_I32:
      *out = (int32_t)le(b, 4);
      break;
    case SMOL_GGUF_U64:
      *out = (int64_t)le(b, 8);
      break;
    case SMOL_GGUF_I64:
      *out = (int64_t)le(b, 8);
      break;
    case SMOL_GGUF_BOOL:
      *out = b[0] != 0;
      break;
    default:
      snprintf(err, errn, "metadata '%s' is a %s, not an integer", key,
               type_names[kv->type]);
      return TQ_ERR_INVALID;
  }
  return TQ_OK;
}

tq_status smol_gguf_get_float(const smol_gguf *g, const char *key, double *out,
                              char *err, size_t errn) {
  const smol_gguf_kv *kv;
  tq_status st = lookup(g, key, &kv, err, errn);
  if (st) return st;
  if (kv->type == SMOL_GGUF_F32) {
    uint32_t u = (uint32_t)le(kv->data, 4);
    float f;
    memcpy(&f, &u, 4);
    *out = f;
  } else if (kv->type == SMOL_GGUF_F64) {
    uint64_t u = le(kv->data, 8);
    memcpy(out, &u, 8);
  } else {
    int64_t i;
    if (smol_gguf_get_int(g, key, &i, err, errn)) {
      snprintf(err, errn, "metadata '%s' is a %s, not a number", key,
               type_names[kv->type]);
      return TQ_ERR_INVALID;
    }
    *out = (double)i;
  }
  return TQ_OK;
}

tq_status smol_gguf_get_array(const smol_gguf *g, const char *key,
                              int elem_type, const smol_gguf_kv **out,
                              char *err, size_t errn) {
  tq_status st = lookup(g, key, out, err, errn);
  if (st) return st;
  if ((*out)->type != SMOL_GGUF_ARRAY || (*out)->elem_type != elem_type) {
    snprintf(
        err, errn, "metadata '%s' is a %s%s%s, want an array of %s", key,
        type_names[(*out)->type], (*out)->type == SMOL_GGUF_ARRAY ? " of " : "",
        (*out)->type == SMOL_GGUF_ARRAY ? type_names[(*out)->elem_type] : "",
        type_names[elem_type]);
    return TQ_ERR_INVALID;
  }
  return TQ_OK;
}
