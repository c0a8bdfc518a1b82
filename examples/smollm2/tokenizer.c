/* tokenizer.c - byte-level BPE (see tokenizer.h).
 *
 * Byte-level: every byte maps to one printable code point (the GPT-2 table:
 * printable Latin-1 bytes to themselves, the rest to 256, 257, ...), so
 * token strings in the vocabulary are UTF-8 text and every byte sequence
 * has a spelling.  A word's bytes start as one symbol each; the adjacent
 * pair with the lowest merge rank is merged (leftmost first) until no pair
 * has a rank. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_CONTROL 3
#define TOKEN_USER 4

typedef struct slot {
  uint64_t key; /* string hash entries: unused; pair entries: a << 32 | b */
  int value;    /* token id, or merge rank */
  int merged;   /* pair entries: the merged token */
  int used;
} slot;

struct smol_tokenizer {
  int n_vocab;
  char **text; /* token strings as stored (byte-level spelling) */
  int *len;
  int *type;
  int eos;
  slot *vocab; /* string -> id, open addressing */
  size_t vocab_cap;
  slot *pairs; /* (id, id) -> rank, merged id */
  size_t pairs_cap;
  int byte_token[256];        /* the token of each single byte */
  uint8_t cp_byte[324];       /* byte-level code point -> byte */
  int special[16], n_special; /* control tokens matched in text */
};

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  return x ^ (x >> 33);
}

static int vocab_find(const smol_tokenizer *t, const char *s, size_t n) {
  size_t mask = t->vocab_cap - 1;
  for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
    const slot *e = &t->vocab[i];
    if (!e->used) return -1;
    if ((size_t)t->len[e->value] == n && !memcmp(t->text[e->value], s, n))
      return e->value;
  }
}

static void vocab_put(smol_tokenizer *t, int id) {
  size_t mask = t->vocab_cap - 1;
  size_t i = hash_bytes(t->text[id], (size_t)t->len[id]) & mask;
  for (; t->vocab[i].used; i = (i + 1) & mask)
    if (t->len[t->vocab[i].value] == t->len[id] &&
        !memcmp(t->text[t->vocab[i].value], t->text[id], (size_t)t->len[id]))
      return; /* a duplicate spelling keeps its first id */
  t->vocab[i] = (slot){0, id, 0, 1};
}

static const slot *pair_find(const smol_tokenizer *t, int a, int b) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = t->pairs_cap - 1;
  for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
    const slot *e = &t->pairs[i];
    if (!e->used) return NULL;
    if (e->key == key) return e;
  }
}

static void pair_put(smol_tokenizer *t, int a, int b, int rank, int merged) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = t->pairs_cap - 1, i = mix(key) & mask;
  for (; t->pairs[i].used; i = (i + 1) & mask)
    if (t->pairs[i].key == key) return; /* the first (lowest) rank wins */
  t->pairs[i] = (slot){key, rank, merged, 1};
}

/* The GPT-2 byte -> code point table, and the UTF-8 of each code point. */
static int byte_cp(int b) {
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
    return b;
  int n = 0;
  for (int i = 0; i < b; i++)
    if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) ||
          (i >= 174 && i <= 255)))
      n++;
  return 256 + n;
}

static int utf8_put(int cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | cp >> 6);
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

static size_t pow2_above(size_t n) {
  size_t c = 1;
  while (c < 2 * n) c <<= 1;
  return c;
}

static tq_status load_vocab(const smol_gguf *g, smol_tokenizer *t, char *err,
                            size_t errn) {
  const smol_gguf_kv *tok, *types;
  tq_status st = smol_gguf_get_array(g, "tokenizer.ggml.tokens",
                                     SMOL_GGUF_STRING, &tok, err, errn);
  if (st) return st;
  if (tok->count < 256 || tok->count > (1u << 24)) {
    snprintf(err, errn,
             "tokenizer.ggml.tokens holds %llu tokens; allowed 256..%u",
             (unsigned long long)tok->count, 1u << 24);
    return TQ_ERR_INVALID;
  }
  t->n_vocab = (int)tok->count;
  t->text = calloc((size_t)t->n_vocab, sizeof *t->text);
  t->len = calloc((size_t)t->n_vocab, sizeof *t->len);
  t->type = calloc((size_t)t->n_vocab, sizeof *t->type);
  t->vocab_cap = pow2_above((size_t)t->n_vocab);
  t->vocab = calloc(t->vocab_cap, sizeof *t->vocab);
  if (!t->text || !t->len || !t->type || !t->vocab) return TQ_ERR_NOMEM;
  int have_types = !smol_gguf_get_array(g, "tokenizer.ggml.token_type",
                                        SMOL_GGUF_I32, &types, err, errn) &&
                   types->count == tok->count;
  for (int i = 0; i < t->n_vocab; i++) {
    smol_gguf_str s = tok->strings[i];
    if (s.len > 4096) {
      snprintf(err, errn, "tokenizer.ggml.tokens[%d] is %llu bytes long", i,
               (unsigned long long)s.len);
      return TQ_ERR_INVALID;
    }
    t->text[i] = malloc(s.len + 1);
    if (!t->text[i]) return TQ_ERR_NOMEM;
    memcpy(t->text[i], s.ptr, s.len);
    t->text[i][s.len] = 0;
    t->len[i] = (int)s.len;
    if (have_types) {
      const uint8_t *p = types->data + 4 * (size_t)i;
      t->type[i] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                             (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    vocab_put(t, i);
    if ((t->type[i] == TOKEN_CONTROL || t->type[i] == TOKEN_USER) &&
        t->n_special < 16 && s.len > 0)
      t->special[t->n_special++] = i;
  }
  return TQ_OK;
}

static tq_status load_merges(const smol_gguf *g, smol_tokenizer *t, char *err,
                             size_t errn) {
  const smol_gguf_kv *m;
  tq_status st = smol_gguf_get_array(g, "tokenizer.ggml.merges",
                                     SMOL_GGUF_STRING, &m, err, errn);
  if (st) return st;
  t->pairs_cap = pow2_above((size_t)m->count + 1);
  t->pairs = calloc(t->pairs_cap, sizeof *t->pairs);
  if (!t->pairs) return TQ_ERR_NOMEM;
  char buf[8192];
  for (uint64_t r = 0; r < m->count; r++) {
    smol_gguf_str s = m->strings[r];
    const char *sp = s.len < sizeof buf ? memchr(s.ptr, ' ', s.len) : NULL;
    int a = -1, b = -1, ab = -1;
    if (sp) {
      size_t la = (size_t)(sp - s.ptr), lb = s.len - la - 1;
      a = vocab_find(t, s.ptr, la);
      b = vocab_find(t, sp + 1, lb);
      memcpy(buf, s.ptr, la);
      memcpy(buf + la, sp + 1, lb);
      ab = vocab_find(t, buf, la + lb);
    }
    if (a < 0 || b < 0 || ab < 0) {
      snprintf(
          err, errn,
          "tokenizer.ggml.merges[%llu] '%.*s' does not name two tokens whose "
          "concatenation is a token",
          (unsigned long long)r, (int)(s.len > 80 ? 80 : s.len), s.ptr);
      return TQ_ERR_INVALID;
    }
    pair_put(t, a, b, (int)r, ab);
  }
  return TQ_OK;
}

/* Bytes never seen in training (control bytes, 0xC0, 0xF5..) may have no
 * token; like the reference tokenizers, such bytes are dropped.  Printable
 * ASCII must be there, or this is not a byte-level vocabulary. */
static tq_status load_bytes(smol_tokenizer *t, char *err, size_t errn) {
  for (int b = 0; b < 256; b++) {
    char s[2];
    int cp = byte_cp(b), n = utf8_put(cp, s);
    t->cp_byte[cp] = (uint8_t)b;
    t->byte_token[b] = vocab_find(t, s, (size_t)n);
    if (t->byte_token[b] < 0 && b > ' ' && b < 127) {
      snprintf(err, errn,
               "the vocabulary has no token for byte 0x%02x ('%c'): not a "
               "byte-level "
               "BPE vocabulary",
               b, b);
      return TQ_ERR_INVALID;
    }
  }
  return TQ_OK;
}

tq_status smol_tokenizer_load(const smol_gguf *g, smol_tokenizer **out,
                              char *err, size_t errn) {
  *out = NULL;
  const smol_gguf_kv *model = smol_gguf_find(g, "tokenizer.ggml.model");
  if (!model || model->type != SMOL_GGUF_STRING ||
      memcmp(model->data + 8, "gpt2", 4)) {
    snprintf(err, errn, "tokenizer.ggml.model is not 'gpt2' (byte-level BPE)");
    return TQ_ERR_INVALID;
  }
  smol_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return TQ_ERR_NOMEM;
  tq_status st = load_vocab(g, t, err, errn);
  if (!st) st = load_merges(g, t, err, errn);
  if (!st) st = load_bytes(t, err, errn);
  int64_t eos = -1;
  if (!st &&
      !smol_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &eos, err, errn) &&
      (eos < 0 || eos >= t->n_vocab))
    eos = -1;
  t->eos = (int)eos;
  if (st == TQ_ERR_NOMEM)
    snprintf(err, errn, "out of memory loading the tokenizer");
  if (st) {
    smol_tokenizer_free(t);
    return st;
  }
  *out = t;
  return TQ_OK;
}

void smol_tokenizer_free(smol_tokenizer *t) {
  if (!t) return;
  if (t->text)
    for (int i = 0; i < t->n_vocab; i++) free(t->text[i]);
  free(t->text);
  free(t->len);
  free(t->type);
  free(t->vocab);
  free(t->pairs);
  free(t);
}

/* ---- pre-tokenization ---------------------------------------------------- */

enum { CL_LETTER, CL_NUMBER, CL_SPACE, CL_OTHER };

/* Decodes one code point; invalid UTF-8 is one byte of class "other". */
static int next_cp(const uint8_t *s, size_t n, size_t i, int *len) {
  uint8_t c = s[i];
  int need = c < 0x80             ? 0
             : (c & 0xE0) == 0xC0 ? 1
             : (c & 0xF0) == 0xE0 ? 2
             : (c & 0xF8) == 0xF0 ? 3
                                  : -1;
  if (need < 0 || i + (size_t)need >= n + (need == 0)) {
    *len = 1;
    return need == 0 ? c : -1;
  }
  int cp = need == 0 ? c : c & (0x3F >> need);
  for (int k = 1; k <= need; k++) {
    if ((s[i + (size_t)k] & 0xC0) != 0x80) {
      *len = 1;
      return -1;
    }
    cp = cp << 6 | (s[i + (size_t)k] & 0x3F);
  }
  *len = need + 1;
  return cp;
}

/* Unicode classes: exact for ASCII; above it, common space, punctuation and
 * numeric ranges, and everything else counted as a letter. */
static int cp_class(int cp) {
  if (cp < 0) return CL_OTHER;
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CL_LETTER;
    if (cp >= '0' && cp <= '9') return CL_NUMBER;
    if (cp == ' ' || (cp >= 9 && cp <= 13)) return CL_SPACE;
    return CL_OTHER;
  }
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
      (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
      cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return CL_SPACE;
  if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE) ||
      (cp >= 0x2070 && cp <= 0x2089) || (cp >= 0x2150 && cp <= 0x218B))
    return CL_NUMBER;
  if (cp < 0xA0 ||
      (cp >= 0xA1 && cp <= 0xBF && cp != 0xAA && cp != 0xB5 && cp != 0xBA) ||
      cp == 0xD7 || cp == 0xF7 || (cp >= 0x2010 && cp <= 0x2027) ||
      (cp >= 0x2030 && cp <= 0x205E) || (cp >= 0x20A0 && cp <= 0x20CF) ||
      (cp >= 0x2100 && cp <= 0x214F) || (cp >= 0x2190 && cp <= 0x2BFF) ||
      (cp >= 0x3001 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
      (cp >= 0xFF01 && cp <= 0xFF0F))
    return CL_OTHER;
  return CL_LETTER;
}

typedef struct outbuf {
  int *ids;
  int n, cap;
} outbuf;

static int push(outbuf *o, int id) {
  if (o->n == o->cap) {
    int cap = o->cap ? 2 * o->cap : 256;
    int *p = realloc(o->ids, (size_t)cap * sizeof *p);
    if (!p) return 0;
    o->ids = p;
    o->cap = cap;
  }
  o->ids[o->n++] = id;
  return 1;
}

/* BPE over one pre-tokenized word. */
static int bpe_word(const smol_tokenizer *t, const uint8_t *w, size_t n,
                    outbuf *o) {
  int local[256], *sym = n <= 256 ? local : malloc(n * sizeof *sym);
  if (!sym) return 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (t->byte_token[w[i]] >= 0) sym[k++] = t->byte_token[w[i]];
  for (;;) {
    int best = -1, rank = 0, merged = 0;
    for (size_t i = 0; i + 1 < k; i++) {
      const slot *p = pair_find(t, sym[i], sym[i + 1]);
      if (p && (best < 0 || p->value < rank))
        best = (int)i, rank = p->value, merged = p->merged;
    }
    if (best < 0) break;
    sym[best] = merged;
    memmove(sym + best + 1, sym + best + 2,
            (k - (size_t)best - 2) * sizeof *sym);
    k--;
  }
  int ok = 1;
  for (size_t i = 0; i < k && ok; i++) ok = push(o, sym[i]);
  if (sym != local) free(sym);
  return ok;
}

/* Length of a run of class `cl` starting at i, below end. */
static size_t run(const uint8_t *s, size_t i, size_t end, int cl) {
  size_t j = i;
  while (j < end) {
    int l, cp = next_cp(s, end, j, &l);
    if (cp_class(cp) != cl) break;
    j += (size_t)l;
  }
  return j - i;
}

/* The GPT-2 split of s[i..end) (a piece without digits, or one digit):
 * returns the length of the word at i. */
static size_t gpt2_word(const uint8_t *s, size_t i, size_t end) {
  static const char *const contractions[] = {"'s", "'t",  "'re", "'ve",
                                             "'m", "'ll", "'d"};
  for (int c = 0; c < 7; c++) {
    size_t l = strlen(contractions[c]);
    if (end - i >= l && !memcmp(s + i, contractions[c], l)) return l;
  }
  int l0, cl0 = cp_class(next_cp(s, end, i, &l0));
  if (cl0 != CL_SPACE) return run(s, i, end, cl0);
  if (s[i] == ' ' && i + 1 < end) {
    int l1, cl1 = cp_class(next_cp(s, end, i + 1, &l1));
    if (cl1 != CL_SPACE) return 1 + run(s, i + 1, end, cl1);
  }
  /* \s+(?!\S): all of a trailing run, else the run less its last char. */
  size_t ws = run(s, i, end, CL_SPACE);
  if (i + ws == end) return ws;
  if (ws > 1) { /* back off one code point */
    size_t j = i, last = i;
    while (j < i + ws) {
      int l;
      next_cp(s, end, j, &l);
      last = j;
      j += (size_t)l;
    }
    return last - i;
  }
  return ws;
}

static int encode_text(const smol_tokenizer *t, const uint8_t *s, size_t n,
                       outbuf *o) {
  size_t i = 0;
  while (i < n) {
    /* Each digit is a piece of its own; the rest splits up to the next. */
    size_t end = i;
    int l, cl = cp_class(next_cp(s, n, i, &l));
    if (cl == CL_NUMBER) {
      end = i + (size_t)l;
    } else {
      while (end < n && cp_class(next_cp(s, n, end, &l)) != CL_NUMBER)
        end += (size_t)l;
    }
    while (i < end) {
      size_t w = gpt2_word(s, i, end);
      if (!bpe_word(t, s + i, w, o)) return 0;
      i += w;
    }
  }
  return 1;
}

tq_status smol_tokenize(const smol_tokenizer *t, const char *text, size_t len,
                        int special, int **tokens, int *n, char *err,
                        size_t errn) {
  outbuf o = {0};
  const uint8_t *s = (const uint8_t *)text;
  size_t i = 0, start = 0;
  int ok = 1;
  while (ok && i <= len) {
    int hit = -1;
    for (int k = 0; special && i < len && k < t->n_special && hit < 0; k++) {
      int id = t->special[k];
      if ((size_t)t->len[id] <= len - i &&
          !memcmp(s + i, t->text[id], (size_t)t->len[id]))
        hit = id;
    }
    if (hit < 0 && i < len) {
      i++;
      continue;
    }
    ok = encode_text(t, s + start, i - start, &o) && (hit < 0 || push(&o, hit));
    if (hit < 0) break;
    i += (size_t)t->len[hit];
    start = i;
  }
  if (!ok) {
    free(o.ids);
    snprintf(err, errn, "out of memory tokenizing %zu bytes", len);
    return TQ_ERR_NOMEM;
  }
  *tokens = o.ids;
  *n = o.n;
  return TQ_OK;
}

int smol_token_bytes(const smol_tokenizer *t, int id, char *buf, int cap) {
  if (id < 0 || id >= t->n_vocab) return 0;
  const uint8_t *s = (const uint8_t *)t->text[id];
  int n = 0, len = t->len[id];
  if (t->type[id] == TOKEN_CONTROL || t->type[id] == TOKEN_USER) {
    n = len < cap ? len : cap;
    memcpy(buf, s, (size_t)n);
    return n;
  }
  for (int i = 0; i < len && n < cap;) {
    int l, cp = next_cp(s, (size_t)len, (size_t)i, &l);
    buf[n++] = cp >= 0 && cp < 324 ? (char)t->cp_byte[cp] : '?';
    i += l;
  }
  return n;
}

int smol_token_id(const smol_tokenizer *t, const char *text) {
  return vocab_find(t, text, strlen(text));
}

int smol_tokenizer_eos(const smol_tokenizer *t) {
  return t->eos;
}

int smol_tokenizer_is_control(const smol_tokenizer *t, int id) {
  return id >= 0 && id < t->n_vocab && t->type[id] == TOKEN_CONTROL;
}
