/* test_gguf.c - the GGUF reader on a synthesized file (every value read
 * back; every truncation and a list of corruptions refused with a message
 * naming the field) and on the real model file (parsed, then cut at a few
 * places).  usage: test_gguf MODEL.gguf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "model.h"

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = 2 * (b->n + n) + 64;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}
static void u32(buf *b, uint32_t v) {
  put(b, &v, 4);
} /* little-endian host */
static void u64(buf *b, uint64_t v) {
  put(b, &v, 8);
}
static void str(buf *b, const char *s) {
  u64(b, strlen(s));
  put(b, s, strlen(s));
}

/* Offsets of fields the corruption cases patch. */
typedef struct layout {
  size_t version, kv_type, str_len, align_value, dims, type, offset2, name2;
} layout;

/* A small GGUF: five metadata entries and two tensors (F32 [8], Q4_1 [32, 2]),
 * both names 7 bytes long so one can be renamed to the other. */
static buf synth(layout *at) {
  buf b = {0};
  put(&b, "GGUF", 4);
  at->version = b.n;
  u32(&b, 3);
  u64(&b, 2); /* tensors */
  u64(&b, 5); /* metadata */
  str(&b, "general.architecture");
  at->kv_type = b.n;
  u32(&b, SMOL_GGUF_STRING);
  at->str_len = b.n;
  str(&b, "llama");
  str(&b, "llama.block_count");
  u32(&b, SMOL_GGUF_U32);
  u32(&b, 30);
  str(&b, "llama.rope.freq_base");
  u32(&b, SMOL_GGUF_F32);
  float f = 100000.0f;
  put(&b, &f, 4);
  str(&b, "tokenizer.ggml.tokens");
  u32(&b, SMOL_GGUF_ARRAY);
  u32(&b, SMOL_GGUF_STRING);
  u64(&b, 3);
  str(&b, "a");
  str(&b, "bc");
  str(&b, "");
  str(&b, "general.alignment");
  u32(&b, SMOL_GGUF_U32);
  at->align_value = b.n;
  u32(&b, 64);
  str(&b, "norm.ww");
  at->dims = b.n;
  u32(&b, 1);
  u64(&b, 8);
  at->type = b.n;
  u32(&b, SMOL_GGML_F32);
  u64(&b, 0);
  at->name2 = b.n;
  str(&b, "blk.0.w");
  u32(&b, 2);
  u64(&b, 32);
  u64(&b, 2);
  u32(&b, SMOL_GGML_Q4_1);
  at->offset2 = b.n;
  u64(&b, 64);
  while (b.n % 64) put(&b, "", 1);
  float ones[8];
  for (int i = 0; i < 8; i++) ones[i] = (float)i + 0.5f;
  put(&b, ones, sizeof ones);
  while (b.n % 64) put(&b, "", 1);
  /* Two Q4_1 blocks: d = 1, m = -8 (f16 0x3c00, 0xc800), nibbles 0..15. */
  for (int blk = 0; blk < 2; blk++) {
    uint8_t q[20] = {0x00, 0x3c, 0x00, 0xc8};
    for (int j = 0; j < 16; j++) q[4 + j] = (uint8_t)(j | (15 - j) << 4);
    put(&b, q, sizeof q);
  }
  return b;
}

static void check_good(void) {
  layout at;
  buf b = synth(&at);
  smol_gguf g;
  char err[512] = "";
  CHECK(smol_gguf_parse(b.p, b.n, "synth", &g, err, sizeof err) == TQ_OK);
  if (!g.kv) {
    fprintf(stderr, "synthesized file refused: %s\n", err);
    free(b.p);
    return;
  }
  CHECK(g.version == 3 && g.n_kv == 5 && g.n_tensors == 2 && g.alignment == 64);
  int64_t n = 0;
  double fv = 0;
  CHECK(smol_gguf_get_int(&g, "llama.block_count", &n, err, sizeof err) ==
            TQ_OK &&
        n == 30);
  CHECK(smol_gguf_get_float(&g, "llama.rope.freq_base", &fv, err, sizeof err) ==
            TQ_OK &&
        fv == 100000.0);
  CHECK(smol_gguf_get_int(&g, "nope", &n, err, sizeof err) == TQ_ERR_NOT_FOUND);
  CHECK_CONTAINS(err, "'nope' is missing");
  CHECK(smol_gguf_get_int(&g, "general.architecture", &n, err, sizeof err) ==
        TQ_ERR_INVALID);
  CHECK_CONTAINS(err, "is a string, not an integer");
  const smol_gguf_kv *arr;
  CHECK(smol_gguf_get_array(&g, "tokenizer.ggml.tokens", SMOL_GGUF_STRING, &arr,
                            err, sizeof err) == TQ_OK);
  CHECK(arr->count == 3 && arr->strings[1].len == 2 &&
        !memcmp(arr->strings[1].ptr, "bc", 2) && arr->strings[2].len == 0);
  CHECK(smol_gguf_get_array(&g, "tokenizer.ggml.tokens", SMOL_GGUF_I32, &arr,
                            err, sizeof err) == TQ_ERR_INVALID);
  const smol_gguf_tensor *t = smol_gguf_tensor_find(&g, "norm.ww");
  CHECK(t && t->type == SMOL_GGML_F32 && t->bytes == 32 &&
        ((const float *)t->data)[3] == 3.5f);
  t = smol_gguf_tensor_find(&g, "blk.0.w");
  CHECK(t && t->ne[0] == 32 && t->ne[1] == 2 && t->bytes == 40);
  if (t) {
    float row[32];
    CHECK(smol_dequant_row(t->type, t->data, row, 32) == TQ_OK);
    /* element j < 16: low nibble j -> j - 8; element 16 + j: 15 - j - 8 */
    CHECK(row[0] == -8 && row[5] == -3 && row[15] == 7 && row[16] == 7 &&
          row[31] == -8);
  }
  smol_gguf_close(&g);
  free(b.p);
}

/* Every prefix of the synthesized file is refused, with a message. */
static void check_truncations(void) {
  layout at;
  buf b = synth(&at);
  int refused = 0;
  for (size_t n = 0; n < b.n; n++) {
    uint8_t *p = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    memcpy(p, b.p, n);
    smol_gguf g;
    char err[512] = "";
    tq_status st = smol_gguf_parse(p, n, "cut", &g, err, sizeof err);
    refused += st == TQ_ERR_INVALID && !strncmp(err, "cut: ", 5) &&
               strstr(err, " at byte ");
    if (st == TQ_OK) {
      fprintf(stderr, "prefix of %zu of %zu bytes was accepted\n", n, b.n);
      smol_gguf_close(&g);
    }
    free(p);
  }
  CHECK(refused == (int)b.n);
  free(b.p);
}

typedef struct corruption {
  const char *what;
  int field; /* index into the layout */
  uint64_t value;
  int width;
  const char *message;
} corruption;

static void check_corruptions(void) {
  static const corruption cases[] = {
      {"magic", -1, 0x46554747, 4, "not a GGUF file"},
      {"version", 0, 1, 4, "GGUF version 1 is not supported"},
      {"value type", 1, 99, 4, "unknown value type 99"},
      {"string length", 2, 1ull << 40, 8, "runs past the end of the file"},
      {"alignment", 3, 48, 4, "power of two"},
      {"dimensions", 4, 5, 4, "5 dimensions; allowed 1..4"},
      {"tensor type", 5, 77, 4, "type 77 (unknown)"},
      {"offset alignment", 6, 32, 8, "not a multiple of the alignment 64"},
      {"offset range", 6, 1ull << 20, 8, "run past the end of the file"},
      {"duplicate", 7, 0, 0, "appears twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const corruption *c = &cases[i];
    layout at;
    buf b = synth(&at);
    size_t fields[] = {at.version, at.kv_type, at.str_len, at.align_value,
                       at.dims,    at.type,    at.offset2, at.name2};
    if (c->field < 0) {
      memcpy(b.p, "GGML", 4);
    } else if (c->width) {
      memcpy(b.p + fields[c->field], &c->value, (size_t)c->width);
    } else { /* rename the second tensor to the first one's name */
      memcpy(b.p + at.name2 + 8, "norm.ww", 7);
    }
    smol_gguf g;
    char err[512] = "";
    tq_status st = smol_gguf_parse(b.p, b.n, "bad", &g, err, sizeof err);
    CHECK(st == TQ_ERR_INVALID);
    if (st == TQ_OK) smol_gguf_close(&g);
    if (!strstr(err, c->message))
      fprintf(stderr, "corruption '%s': got \"%s\"\n", c->what, err);
    CHECK_CONTAINS(err, c->message);
    free(b.p);
  }
}

/* The model loader names what is missing in a file that parses. */
static void check_model_errors(void) {
  layout at;
  buf b = synth(&at);
  smol_gguf g;
  char err[512] = "";
  smol_model m;
  CHECK(smol_gguf_parse(b.p, b.n, "synth", &g, err, sizeof err) == TQ_OK);
  CHECK(smol_model_load(&g, &m, err, sizeof err) == TQ_ERR_NOT_FOUND);
  CHECK_CONTAINS(err, "'llama.embedding_length' is missing");
  smol_gguf_close(&g);
  free(b.p);
}

static void check_real(const char *path) {
  smol_gguf g;
  char err[1024];
  if (smol_gguf_open(path, &g, err, sizeof err)) {
    fprintf(stderr,
            "%s\n(scripts/setup.sh fetches the model; this test needs it)\n",
            err);
    CHECK(!"the model file is readable");
    return;
  }
  const smol_gguf_tensor *emb = smol_gguf_tensor_find(&g, "token_embd.weight");
  CHECK(g.n_tensors == 272 && g.n_kv == 33 && emb &&
        emb->type == SMOL_GGML_Q8_0);
  /* Cuts: inside the metadata, inside the tensor infos, inside the data. */
  size_t cuts[] = {100, 1000000, (size_t)g.data_offset - 7, g.size / 2,
                   g.size - 1};
  for (int i = 0; i < 5; i++) {
    smol_gguf cut;
    char e[1024] = "";
    CHECK(smol_gguf_parse(g.image, cuts[i], "cut", &cut, e, sizeof e) ==
          TQ_ERR_INVALID);
    CHECK(strstr(e, "truncated") || strstr(e, "past the end"));
    printf("cut at %zu of %zu bytes: %s\n", cuts[i], g.size, e);
  }
  smol_gguf_close(&g);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_gguf MODEL.gguf\n");
    return 2;
  }
  check_good();
  check_truncations();
  check_corruptions();
  check_model_errors();
  check_real(argv[1]);
  return check_report("test_gguf");
}
