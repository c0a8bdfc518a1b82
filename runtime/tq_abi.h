/* tq_abi.h - the launch arguments every kernel of every backend takes, and
 * the C backend's function types.  Plain C with fixed-width types only: the
 * C emitter copies this text into each generated file, so a generated
 * kernel compiles on its own (JIT through the system compiler, or vendored
 * AOT), and the runtime includes the same file.
 *
 * Shapes (row-major, d = head_dim, H = kv_heads, G = q heads per kv head):
 *   q, out          [batch][n_tokens][H*G][d]   activations (variant dtype)
 *   k, v            [batch][n_tokens][H][d]     encode: input; dequant: output
 *   k_cache,v_cache contiguous: [batch][H][capacity][slot bytes]
 *                   paged: [num_blocks][H][block_size][slot bytes]
 *   block_table     paged: [batch][max_blocks] block ids
 *   seq_lens        [batch] tokens in the cache, the new ones included
 *   channel_perm    [H][d] channel order: the first outlier_count entries are
 *                   the outlier channels; NULL means identity
 * The n_tokens tokens of an op sit at positions seq_lens[b] - n_tokens ..
 * seq_lens[b] - 1: encode writes them; decode and prefill give query i the
 * causal context 0 .. seq_lens[b] - n_tokens + i; dequant writes tokens
 * 0 .. n_tokens - 1. */
#ifndef TQ_ABI_H
#define TQ_ABI_H

#ifndef TQ_ABI_NO_STD_HEADERS /* NVRTC has no standard headers */
#include <stddef.h>
#include <stdint.h>
#endif

typedef struct tq_kargs {
  int32_t batch;
  int32_t kv_heads;
  int32_t n_tokens;
  int32_t capacity;   /* contiguous: token slots per sequence and head */
  int32_t num_blocks; /* paged: blocks in the pool */
  int32_t max_blocks; /* paged: columns of block_table */
  float sm_scale;     /* softmax scale, usually 1/sqrt(d) */
  void *k_cache;
  void *v_cache;
  const int32_t *block_table;
  const int32_t *seq_lens;
  const uint16_t *channel_perm;
  const void *q;
  void *k;
  void *v;
  void *out;
  void *workspace;
  size_t workspace_bytes;
  int32_t splits; /* set by a backend's launch plan (context splits of
                     decode); callers leave it 0 */
} tq_kargs;

/* C backend: every op of a variant is one function; 0 means success. */
typedef int (*tq_c_kernel_fn)(const tq_kargs *args);
typedef size_t (*tq_c_workspace_fn)(int op, const tq_kargs *args);

#endif
