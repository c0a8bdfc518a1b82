/* cuda_plan.c - grids, blocks, shared memory and workspace of the CUDA
 * kernels in templates/cuda/kernel.cu.  The constants mirror the template's
 * (TQ_THREADS, TQ_RQ, TQ_LPK); keep them in step. */
#include "cuda_plan.h"

#include "core.h"
#include "emit.h"

#define THREADS 128 /* TQ_THREADS */
#define ROWS 4      /* TQ_RQ */
/* Blocks of the split kernel a device runs at once when the backend could
 * not ask the driver (the CUDA backend asks it before every plan it
 * launches): an H100's 132 SMs at four decode blocks each, the template's
 * __launch_bounds__ (TQ_DECODE_BLOCKS). */
#define DEFAULT_SLOTS 528
/* The same for the tensor-core encode: 132 SMs at three blocks each (its
 * 168 registers a thread). */
#define ENCODE_DEFAULT_SLOTS 396
#define MAX_SPLITS 64     /* the reduce kernel merges at most 64 */
#define MIN_SLICE 64      /* tokens per split, at least */
#define MAX_SLICE 8192    /* tokens per split, at most where the splits allow */

const char *const tq_cuda_entries[] = {"encode", "decode", "prefill",
                                       "dequant", "reduce", NULL};

static int lanes_per_key(const tq_variant *v) {
  int m = v->head_dim - v->outlier_count;
  return m > 256 ? 32 : m >= 64 ? 16 : 8;
}

/* The longest context any sequence may have: what a split must cover. */
static int capacity(const tq_variant *v, const tq_kargs *a) {
  return v->layout == TQ_PAGED ? a->max_blocks * v->block_size : a->capacity;
}

/* The template's TQ_FAST: these variants use the fast attention kernel,
 * whose shared memory is all static. */
static int fast_path(const tq_variant *v) {
  int kb = v->key_bits, vb = v->value_bits;
  return v->outlier_count == 0 && !v->qjl && v->value_method == TQ_VALUE_TQ &&
         (kb == 2 || kb == 4) && (vb == 2 || vb == 4) && v->head_dim >= 32 &&
         v->head_dim <= 128 && (v->head_dim & (v->head_dim - 1)) == 0 &&
         (v->layout != TQ_PAGED || v->block_size % 32 == 0 || 32 % v->block_size == 0);
}

/* The template's TQ_MMA: prefill of these runs on tensor cores, TQ_MROWS
 * query rows a block, one split, and writes the output itself (no
 * workspace, no reduce). */
#define MMA_WARPS 8             /* TQ_MWARPS */
#define MMA_ROWS (32 * MMA_WARPS) /* TQ_MROWS */
#define MMA_TOKENS 64           /* TQ_MTOK */
static int mma_prefill(const tq_variant *v, tq_op op) {
  return op == TQ_OP_PREFILL && fast_path(v) && v->dtype != TQ_F32;
}

/* The template's struct tq_mma_smem: q rows of halves (padded by 8), two
 * tiles of packed key and value slots, three tiles' scales, the lookup
 * tables, two mbarriers, then three key and value tiles of halves, the
 * third (the warps' ping-pong) only where the device allows it. */
static unsigned mma_shared_bytes(const tq_variant *v, int shared_limit) {
  tq_slot_layout k, val;
  tqg_key_layout(v, &k);
  tqg_value_layout(v, &val);
  unsigned ld = 2u * (unsigned)(v->head_dim + 8), tile = 2 * MMA_TOKENS * ld;
  unsigned fixed = MMA_ROWS * ld + 2 * MMA_TOKENS * (unsigned)(k.bytes + val.bytes) +
                   6 * MMA_TOKENS * 4 + 2 * 8 * 4 + 2 * 8;
  unsigned three = fixed + 3 * tile;
  return shared_limit <= 0 || three <= (unsigned)shared_limit ? three : fixed + 2 * tile;
}

#define ENCODE_WARP_VECTORS 16 /* the tensor-core encode's (tqg_cuda_encode_mma) */

/* The template's TQ_EFAST: encode in registers, a vector on d / lane_ch
 * lanes of lane_ch channels, whose index bits fill whole words. */
static int encode_lane_channels(int d) { return d < 256 ? 16 : 32; }
static int encode_fast(const tq_variant *v) {
  int d = v->head_dim, ch = encode_lane_channels(d);
  return !tqg_cuda_encode_mma(v) && v->outlier_count == 0 && !v->qjl &&
         v->value_method == TQ_VALUE_TQ && d >= 32 && d <= 256 && (d & (d - 1)) == 0 &&
         ch * v->key_bits % 32 == 0 && ch * v->value_bits % 32 == 0;
}

/* Splits of the context: as many as fill the device's slots once, or more
 * where that would leave a split over MAX_SLICE tokens.  A block's fixed
 * costs (rotating its q rows, the first chunk's latency, writing partials)
 * and a last wave that runs part-empty both fall as slices grow; at B = 8,
 * 16K on an H100 one wave of 640 blocks measured 0.110 ms against 0.145 ms
 * for 3.2 waves of 2112.  Past a few thousand tokens a slice, those costs
 * are amortized and the slots one wave leaves empty weigh more: B = 32,
 * 128K took 2.52 ms in 512 blocks against 2.33-2.35 ms in 4096-6144
 * (bench/RESULTS.md). */
static int splits(const tq_variant *v, const tq_kargs *a, int slots) {
  int rows = a->n_tokens * v->group, tiles = (rows + ROWS - 1) / ROWS;
  long base = (long)a->batch * a->kv_heads * tiles;
  long s = (slots > 0 ? slots : DEFAULT_SLOTS) / base;
  long by_slice = (capacity(v, a) + MAX_SLICE - 1) / MAX_SLICE;
  long by_len = (capacity(v, a) + MIN_SLICE - 1) / MIN_SLICE;
  if (s < by_slice) s = by_slice;
  if (s > by_len) s = by_len;
  if (s > MAX_SPLITS) s = MAX_SPLITS;
  return s < 1 ? 1 : (int)s;
}

static void set3(unsigned *d, unsigned x, unsigned y, unsigned z) {
  d[0] = x;
  d[1] = y;
  d[2] = z;
}

int tq_cuda_plan(const tq_variant *v, tq_op op, const tq_kargs *a, int shared_limit,
                 int slots, tq_cuda_step steps[TQ_CUDA_MAX_STEPS]) {
  if (a->batch < 1 || a->kv_heads < 1 || a->n_tokens < 1 || a->batch > 65535 ||
      a->kv_heads > 65535)
    return 0;
  if (op == TQ_OP_ENCODE || op == TQ_OP_DEQUANT) {
    steps[0].entry = op == TQ_OP_ENCODE ? "encode" : "dequant";
    if (op == TQ_OP_ENCODE && tqg_cuda_encode_mma(v)) {
      /* One wave: each warp takes groups of 16 vectors a grid apart. */
      long per_block = THREADS / 32 * ENCODE_WARP_VECTORS;
      long need = ((long)a->n_tokens * a->kv_heads + per_block - 1) / per_block;
      long fill = (slots > 0 ? slots : ENCODE_DEFAULT_SLOTS) / (2L * a->batch);
      if (fill < 1) fill = 1;
      set3(steps[0].grid, (unsigned)(need < fill ? need : fill), 2, (unsigned)a->batch);
      set3(steps[0].block, THREADS, 1, 1);
    } else if (op == TQ_OP_ENCODE && encode_fast(v)) {
      long per_block = THREADS / (v->head_dim / encode_lane_channels(v->head_dim));
      long groups = ((long)a->n_tokens * a->kv_heads + per_block - 1) / per_block;
      if (groups > 0x7fffffffL) return 0;
      set3(steps[0].grid, (unsigned)groups, 2, (unsigned)a->batch);
      set3(steps[0].block, THREADS, 1, 1);
    } else {
      set3(steps[0].grid, (unsigned)a->n_tokens, (unsigned)a->kv_heads, (unsigned)a->batch);
      set3(steps[0].block, 32, 1, 1);
    }
    steps[0].shared_bytes = 0;
    return 1;
  }
  int rows = a->n_tokens * v->group, tiles = (rows + ROWS - 1) / ROWS;
  if (mma_prefill(v, op)) {
    /* One block per (row tile, sequence, kv head), heaviest tiles first. */
    long blocks = (long)((rows + MMA_ROWS - 1) / MMA_ROWS) * a->batch * a->kv_heads;
    if (blocks > 0x7fffffffL) return 0;
    steps[0].entry = "prefill";
    set3(steps[0].grid, (unsigned)blocks, 1, 1);
    set3(steps[0].block, 32 * MMA_WARPS, 1, 1);
    steps[0].shared_bytes = mma_shared_bytes(v, shared_limit);
    return 1;
  }
  long y = (long)a->kv_heads * tiles;
  if (y > 65535) return 0;
  int groups = (THREADS / 32) * (32 / lanes_per_key(v));
  steps[0].entry = op == TQ_OP_DECODE ? "decode" : "prefill";
  set3(steps[0].grid, (unsigned)splits(v, a, slots), (unsigned)y, (unsigned)a->batch);
  set3(steps[0].block, THREADS, 1, 1);
  steps[0].shared_bytes =
      fast_path(v) ? 0 : (unsigned)(sizeof(float) * groups * ROWS * v->head_dim /* TQ_VDIM */);
  steps[1].entry = "reduce";
  set3(steps[1].grid, (unsigned)rows, (unsigned)a->kv_heads, (unsigned)a->batch);
  set3(steps[1].block, THREADS, 1, 1);
  steps[1].shared_bytes = 0;
  return 2;
}

int tq_cuda_splits(const tq_variant *v, tq_op op, const tq_kargs *a, int slots) {
  if (mma_prefill(v, op)) return 1;
  return op == TQ_OP_DECODE || op == TQ_OP_PREFILL ? splits(v, a, slots) : 0;
}

size_t tq_cuda_workspace(const tq_variant *v, tq_op op, const tq_kargs *a, int slots) {
  if ((op != TQ_OP_DECODE && op != TQ_OP_PREFILL) || mma_prefill(v, op)) return 0;
  size_t rows = (size_t)a->n_tokens * v->group;
  return sizeof(float) * (size_t)a->batch * a->kv_heads * rows * tq_cuda_splits(v, op, a, slots) *
         (2 + v->head_dim /* TQ_VDIM */);
}
