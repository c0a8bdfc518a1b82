/* gguf.h - a reader for GGUF model files (versions 2 and 3): header,
 * metadata, tensor infos and the aligned data section.
 *
 * The whole file is read into memory and every length, count, type and
 * offset is checked against its end before use, so a truncated or corrupt
 * file is an error naming the byte offset and the field, never a crash. */
#ifndef SMOL_GGUF_H
#define SMOL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "tq_types.h"

/* Metadata value types, as numbered by the format. */
enum {
  SMOL_GGUF_U8,
  SMOL_GGUF_I8,
  SMOL_GGUF_U16,
  SMOL_GGUF_I16,
  SMOL_GGUF_U32,
  SMOL_GGUF_I32,
  SMOL_GGUF_F32,
  SMOL_GGUF_BOOL,
  SMOL_GGUF_STRING,
  SMOL_GGUF_ARRAY,
  SMOL_GGUF_U64,
  SMOL_GGUF_I64,
  SMOL_GGUF_F64,
  SMOL_GGUF_TYPE_COUNT
};

/* Tensor element types this reader can size (ggml numbering). */
enum {
  SMOL_GGML_F32 = 0,
  SMOL_GGML_F16 = 1,
  SMOL_GGML_Q4_0 = 2,
  SMOL_GGML_Q4_1 = 3,
  SMOL_GGML_Q5_0 = 6,
  SMOL_GGML_Q5_1 = 7,
  SMOL_GGML_Q8_0 = 8
};

typedef struct smol_gguf_str {
  const char *ptr; /* not NUL-terminated; points into the file image */
  uint64_t len;
} smol_gguf_str;

typedef struct smol_gguf_kv {
  smol_gguf_str key;
  int type;               /* SMOL_GGUF_* */
  int elem_type;          /* arrays: the element type */
  uint64_t count;         /* arrays: elements */
  const uint8_t *data;    /* scalar bytes, or the first array element */
  smol_gguf_str *strings; /* arrays of strings: an index (malloc'd) */
} smol_gguf_kv;

typedef struct smol_gguf_tensor {
  smol_gguf_str name;
  int n_dims;
  uint64_t ne[4];  /* ne[0] is the contiguous dimension */
  int type;        /* SMOL_GGML_* */
  uint64_t offset; /* from the start of the data section */
  uint64_t bytes;
  const void *data;
} smol_gguf_tensor;

typedef struct smol_gguf {
  uint8_t *image; /* the file, or the caller's buffer (owned = 0) */
  size_t size;
  int owned;
  uint32_t version;
  uint64_t alignment;
  uint64_t data_offset;
  uint64_t n_kv, n_tensors;
  smol_gguf_kv *kv;
  smol_gguf_tensor *tensors;
} smol_gguf;

/* Reads and parses a file.  On error returns TQ_ERR_IO or TQ_ERR_INVALID
 * with "<path>: <what> at byte <n>" in err. */
tq_status smol_gguf_open(const char *path, smol_gguf *g, char *err,
                         size_t errn);
/* Parses an image in memory (kept, not copied); `what` names it in errors. */
tq_status smol_gguf_parse(const void *image, size_t size, const char *what,
                          smol_gguf *g, char *err, size_t errn);
void smol_gguf_close(smol_gguf *g);

const smol_gguf_kv *smol_gguf_find(const smol_gguf *g, const char *key);
const smol_gguf_tensor *smol_gguf_tensor_find(const smol_gguf *g,
                                              const char *name);
/* Typed metadata lookups: TQ_ERR_NOT_FOUND when absent, TQ_ERR_INVALID on a
 * type mismatch; both with a message. */
tq_status smol_gguf_get_int(const smol_gguf *g, const char *key, int64_t *out,
                            char *err, size_t errn);
tq_status smol_gguf_get_float(const smol_gguf *g, const char *key, double *out,
                              char *err, size_t errn);
/* Array of `elem_type` (SMOL_GGUF_STRING for string arrays). */
tq_status smol_gguf_get_array(const smol_gguf *g, const char *key,
                              int elem_type, const smol_gguf_kv **out,
                              char *err, size_t errn);

const char *smol_ggml_type_name(int type);
/* Bytes of `n` elements of a row, or 0 when n is not a whole number of
 * blocks or the type is unknown. */
uint64_t smol_ggml_row_bytes(int type, uint64_t n);

#endif
