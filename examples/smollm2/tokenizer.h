/* tokenizer.h - the byte-level BPE tokenizer of a GGUF file
 * (tokenizer.ggml.model "gpt2": tokens, merges and token types from the
 * metadata).  Pre-tokenization follows SmolLM2's tokenizer: every digit
 * apart, then the GPT-2 split (contractions, letter runs, digit runs, other
 * runs, each with an optional leading space, and whitespace). */
#ifndef SMOL_TOKENIZER_H
#define SMOL_TOKENIZER_H

#include "gguf.h"

typedef struct smol_tokenizer smol_tokenizer;

tq_status smol_tokenizer_load(const smol_gguf *g, smol_tokenizer **out,
                              char *err, size_t errn);
void smol_tokenizer_free(smol_tokenizer *t);

/* Encodes text into *tokens (malloc'd, *n of them).  With `special`,
 * control tokens written literally in the text (<|im_start|>) become their
 * ids; otherwise they are plain text. */
tq_status smol_tokenize(const smol_tokenizer *t, const char *text, size_t len,
                        int special, int **tokens, int *n, char *err,
                        size_t errn);
/* The bytes of one token (control tokens as their name); returns the
 * length written (up to cap, not NUL-terminated). */
int smol_token_bytes(const smol_tokenizer *t, int id, char *buf, int cap);
int smol_token_id(const smol_tokenizer *t, const char *text); /* -1: none */
int smol_tokenizer_eos(const smol_tokenizer *t);
int smol_tokenizer_is_control(const smol_tokenizer *t, int id);

#endif
