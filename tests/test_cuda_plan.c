/* test_cuda_plan.c - the CUDA launch plan (backends/cuda_plan.c) as
 * arithmetic, no GPU: how decode splits the context over the device's
 * slots, the workspace that follows from it, the tensor-core prefill's
 * single split and shared memory under a device's limit, the encode's
 * grids, and refusal of unusable arguments. */
#include "check.h"
#include "core.h"
#include "cuda_plan.h"

#define H100_SLOTS 528     /* 132 SMs at four decode blocks each (the plan's default) */
#define H100_SHARED 232448 /* opt-in shared memory a block, bytes */
#define A100_SHARED 166912

static void fast_variant(tq_variant *v) {
  tqg_variant_default(v);
  v->head_dim = 128;
  v->group = 4;
  v->key_bits = 4;
  v->value_bits = 4;
  v->dtype = TQ_F16;
}

static tq_kargs args(int batch, int kv_heads, int n_tokens, int capacity) {
  tq_kargs a;
  memset(&a, 0, sizeof a);
  a.batch = batch;
  a.kv_heads = kv_heads;
  a.n_tokens = n_tokens;
  a.capacity = capacity;
  return a;
}

static long blocks(const tq_cuda_step *s) {
  return (long)s->grid[0] * s->grid[1] * s->grid[2];
}

/* Decode's first step fills the device's slots once, or takes more splits
 * where one wave would leave slices over 8192 tokens; the caps (64 splits,
 * 64 tokens a split at least) bind first. */
static void check_decode(const tq_variant *v, tq_kargs a, int slots, int want_splits) {
  tq_cuda_step st[TQ_CUDA_MAX_STEPS];
  int n = tq_cuda_plan(v, TQ_OP_DECODE, &a, H100_SHARED, slots, st);
  CHECK(n == 2);
  if (n != 2) return;
  int s = tq_cuda_splits(v, TQ_OP_DECODE, &a, slots);
  CHECK(s == want_splits);
  CHECK((int)st[0].grid[0] == s);
  CHECK(!strcmp(st[0].entry, "decode") && !strcmp(st[1].entry, "reduce"));
  int per_split = (int)(blocks(&st[0]) / s), eff = slots > 0 ? slots : H100_SLOTS;
  /* Uncapped: no slice over 8192 tokens; and either the blocks fit the
   * slots (or a single split overfills them) and one more split would
   * overfill them, or one fewer split would leave a slice over 8192. */
  if (s < 64 && s * 64 < a.capacity) {
    CHECK((a.capacity + s - 1) / s <= 8192);
    CHECK(((s == 1 || blocks(&st[0]) <= eff) && (long)(s + 1) * per_split > eff) ||
          (s > 1 && (a.capacity + s - 2) / (s - 1) > 8192));
  }
  size_t rows = (size_t)a.n_tokens * v->group;
  CHECK(tq_cuda_workspace(v, TQ_OP_DECODE, &a, slots) ==
        sizeof(float) * (size_t)a.batch * a.kv_heads * rows * s * (2 + v->head_dim));
}

int main(void) {
  tq_variant v;
  fast_variant(&v);

  /* B = 8 (64 blocks a split): 8 splits fill 512 of an H100's 528 slots;
   * an unknown device plans as an H100. */
  check_decode(&v, args(8, 8, 1, 16384), H100_SLOTS, 8);
  check_decode(&v, args(8, 8, 1, 16384), 0, 8);
  /* An A100 (108 SMs, four blocks each) and a small device. */
  check_decode(&v, args(8, 8, 1, 16384), 432, 6);
  check_decode(&v, args(32, 8, 1, 16384), H100_SLOTS, 2);
  /* B = 32 at 128K: 16 splits of 8192 tokens, several waves. */
  check_decode(&v, args(32, 8, 1, 131072), H100_SLOTS, 16);
  /* B = 1: capped at the reduce's 64 splits; a short context at one
   * split per 64 tokens; q_len 8 over a big batch: one split. */
  check_decode(&v, args(1, 8, 1, 16384), H100_SLOTS, 64);
  check_decode(&v, args(1, 8, 1, 200), H100_SLOTS, 4);
  check_decode(&v, args(32, 8, 8, 4096), H100_SLOTS, 1);

  /* Prefill of a fast f16 variant: tensor cores, one split, no workspace,
   * shared memory within the device's limit (three tile buffers on an
   * H100, two on an A100). */
  tq_kargs a = args(1, 8, 4096, 4096);
  tq_cuda_step st[TQ_CUDA_MAX_STEPS];
  CHECK(tq_cuda_plan(&v, TQ_OP_PREFILL, &a, H100_SHARED, H100_SLOTS, st) == 1);
  unsigned h100 = st[0].shared_bytes;
  CHECK(h100 <= H100_SHARED);
  CHECK(tq_cuda_splits(&v, TQ_OP_PREFILL, &a, H100_SLOTS) == 1);
  CHECK(tq_cuda_workspace(&v, TQ_OP_PREFILL, &a, H100_SLOTS) == 0);
  CHECK(tq_cuda_plan(&v, TQ_OP_PREFILL, &a, A100_SHARED, 432, st) == 1);
  CHECK(st[0].shared_bytes <= A100_SHARED && st[0].shared_bytes < h100);
  /* f32 prefill splits the context like decode. */
  tq_variant f = v;
  f.dtype = TQ_F32;
  CHECK(tq_cuda_plan(&f, TQ_OP_PREFILL, &a, H100_SHARED, H100_SLOTS, st) == 2);

  /* Encode: no splits, no workspace.  On tensor cores (f16, d = 128) the
   * grid fills the slots once, keys and values: 4096 tokens x 8 heads are
   * 512 blocks' worth of 64 vectors, 198 of them fill an H100's 396 encode
   * slots (three blocks an SM, the default), 264 fill 528; a short append
   * takes only the blocks it needs. */
  CHECK(tq_cuda_plan(&v, TQ_OP_ENCODE, &a, H100_SHARED, 528, st) == 1);
  CHECK(st[0].grid[0] == 264 && st[0].grid[1] == 2 && st[0].grid[2] == 1);
  CHECK(st[0].block[0] == 128);
  CHECK(tq_cuda_plan(&v, TQ_OP_ENCODE, &a, H100_SHARED, 0, st) == 1 && st[0].grid[0] == 198);
  tq_kargs step = args(8, 8, 1, 4096);
  CHECK(tq_cuda_plan(&v, TQ_OP_ENCODE, &step, H100_SHARED, 528, st) == 1);
  CHECK(st[0].grid[0] == 1 && st[0].grid[2] == 8);
  CHECK(tq_cuda_splits(&v, TQ_OP_ENCODE, &a, H100_SLOTS) == 0);
  CHECK(tq_cuda_workspace(&v, TQ_OP_ENCODE, &a, H100_SLOTS) == 0);
  /* f32 keeps the register path: a block per 16 vectors, all at once. */
  CHECK(tq_cuda_plan(&f, TQ_OP_ENCODE, &a, H100_SHARED, 528, st) == 1);
  CHECK(st[0].grid[0] == 4096 * 8 / 16 && st[0].grid[1] == 2);

  /* Unusable arguments: no plan. */
  tq_kargs bad = args(0, 8, 1, 16384);
  CHECK(tq_cuda_plan(&v, TQ_OP_DECODE, &bad, H100_SHARED, H100_SLOTS, st) == 0);
  bad = args(70000, 8, 1, 16384);
  CHECK(tq_cuda_plan(&v, TQ_OP_DECODE, &bad, H100_SHARED, H100_SLOTS, st) == 0);

  if (check_failures) fprintf(stderr, "test_cuda_plan: %d check(s) failed\n", check_failures);
  else printf("test_cuda_plan: all checks passed\n");
  return check_failures != 0;
}
