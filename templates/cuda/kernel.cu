/* templates/cuda/kernel.cu - CUDA kernels for one variant.
 *
 * The emitter puts tq_abi.h, the variant's TQ_* defines and its constant
 * tables above this text and replaces {{SYM}} with the symbol prefix.  No
 * toolkit headers: NVRTC compiles this as it stands.  Every kernel takes the
 * launch arguments by value; backends/cuda_plan.c chooses grids and the
 * decode split count, which kernels read from the arguments (splits).
 *
 * Decode and prefill: grid (splits, kv_heads * row tiles, batch), TQ_THREADS
 * threads.  A block owns one kv head, TQ_RQ query rows (token, q head) and
 * one slice of the context.  Its warps split into key groups of TQ_LPK
 * lanes; a key group scores one cache token at a time, each lane holding a
 * fixed run of channels, so every cache byte is read once per block and
 * straight from codebook values: no dequantized K or V exists.  Partial
 * softmax states go to the workspace and the reduce kernel merges the
 * splits, rotates the output back once and writes it.  Prefill of the
 * f16/bf16 fast-path variants is the exception: tq_prefill_mma (tensor
 * cores, one block per 128 query rows, dynamic shared memory) writes the
 * output itself. */

#define TQ_THREADS 128
#define TQ_WARPS (TQ_THREADS / 32)
#define TQ_RQ 4 /* query rows per block */
#ifndef TQ_UNROLL /* TQ_NVRTC_OPTIONS=-DTQ_UNROLL=n tries others */
#define TQ_UNROLL 2 /* cache tokens in flight per key group */
#endif
/* Lanes per key: a power of two, so a key group is an aligned part of a
 * warp and its partial sums meet through xor shuffles. */
#if TQ_M > 256
#define TQ_LPK 32
#elif TQ_M >= 64
#define TQ_LPK 16
#else
#define TQ_LPK 8
#endif
#define TQ_KPW (32 / TQ_LPK) /* keys a warp scores at once */
#define TQ_CPL ((TQ_M + TQ_LPK - 1) / TQ_LPK) /* main channels per lane */
#define TQ_OCPL (TQ_O > 0 ? (TQ_O + TQ_LPK - 1) / TQ_LPK : 1)
#define TQ_VDIM (TQ_VMINMAX ? TQ_D : TQ_M + TQ_O) /* accumulated value dims */
#define TQ_VCPL (TQ_VMINMAX ? (TQ_D + TQ_LPK - 1) / TQ_LPK : TQ_CPL)
#define TQ_OW (TQ_O > 0 ? TQ_O : 1)
#define TQ_PART (2 + TQ_VDIM) /* workspace floats per (row, split): m, l, acc */

typedef unsigned char tq_u8;
typedef unsigned short tq_u16;
typedef unsigned int tq_u32;

#define TQ_INF __int_as_float(0x7f800000)
#define TQ_FULL 0xffffffffu /* every lane of a warp */

/* ---- activations ------------------------------------------------------ */
__device__ __forceinline__ float tq_h2f(tq_u16 h) {
  float f;
  asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ tq_u16 tq_f2h(float f) {
  tq_u16 h;
  asm("{ .reg .f16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float tq_bf2f(tq_u16 h) {
  return __int_as_float((int)((tq_u32)h << 16));
}
__device__ __forceinline__ tq_u16 tq_f2bf(float f) {
  tq_u32 x = (tq_u32)__float_as_int(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (tq_u16)((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (tq_u16)(x >> 16);
}

#if TQ_DTYPE == TQ_DTYPE_F32
typedef float tq_act;
__device__ __forceinline__ float tq_load(const tq_act *p, size_t i) { return p[i]; }
__device__ __forceinline__ void tq_store(tq_act *p, size_t i, float x) { p[i] = x; }
#elif TQ_DTYPE == TQ_DTYPE_F16
typedef tq_u16 tq_act;
__device__ __forceinline__ float tq_load(const tq_act *p, size_t i) { return tq_h2f(p[i]); }
__device__ __forceinline__ void tq_store(tq_act *p, size_t i, float x) { p[i] = tq_f2h(x); }
#else
typedef tq_u16 tq_act;
__device__ __forceinline__ float tq_load(const tq_act *p, size_t i) { return tq_bf2f(p[i]); }
__device__ __forceinline__ void tq_store(tq_act *p, size_t i, float x) { p[i] = tq_f2bf(x); }
#endif

/* ---- slots ------------------------------------------------------------- */
__device__ __forceinline__ tq_u8 *tq_slot(const tq_kargs &a, void *base,
                                          int bytes, int b, int h, int t) {
#if TQ_PAGED
  size_t block = (size_t)a.block_table[(size_t)b * a.max_blocks + t / TQ_BLOCK];
  return (tq_u8 *)base + ((block * a.kv_heads + h) * TQ_BLOCK + t % TQ_BLOCK) * bytes;
#else
  return (tq_u8 *)base + (((size_t)b * a.kv_heads + h) * a.capacity + t) * bytes;
#endif
}

__device__ __forceinline__ float tq_f32_at(const tq_u8 *p) {
  return *(const float *)p;
}

/* Index j of width bits from 32-bit words (docs/FORMAT.md bit order).  The
 * word after the last index word always exists inside the slot (a scale or
 * norm follows every index block). */
__device__ __forceinline__ unsigned tq_index(const tq_u32 *w, int j, int bits) {
  int bit = j * bits, k = bit >> 5, sh = bit & 31;
  unsigned v = w[k] >> sh;
  if (sh + bits > 32) v |= w[k + 1] << (32 - sh);
  return v & ((1u << bits) - 1u);
}

__device__ __forceinline__ int tq_channel(const tq_u16 *perm, int i) {
  return perm ? perm[i] : i;
}

/* Cache tokens query row `row` (token row / TQ_G of the op's n_tokens)
 * attends to causally, of len in the cache; 0 past the last row. */
__device__ __forceinline__ int tq_row_context(const tq_kargs &a, int len, int row, int rows) {
  return row < rows ? len - a.n_tokens + row / TQ_G + 1 : 0;
}
__device__ __forceinline__ const tq_u16 *tq_perm(const tq_kargs &a, int h) {
  return a.channel_perm ? a.channel_perm + (size_t)h * TQ_D : 0;
}

/* ---- block-wide rotations in shared memory ---------------------------- */
__device__ void tq_wht(float *x, int n) {
  for (int h = 1; h < n; h <<= 1) {
    __syncthreads();
    for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
      int i = (p / h) * 2 * h + p % h;
      float u = x[i], v = x[i + h];
      x[i] = u + v;
      x[i + h] = u - v;
    }
  }
  __syncthreads();
}

/* out = R in (inverse = 0) or R^T in (inverse = 1), in and out in shared
 * memory and distinct.  R is signs (randomized Hadamard) or a dense matrix. */
__device__ void tq_rotate(const float *signs, const float *matrix, int n,
                          int inverse, const float *in, float *out) {
  __syncthreads();
  if (signs) {
    float s = rsqrtf((float)n);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      out[i] = inverse ? in[i] : in[i] * signs[i];
    tq_wht(out, n);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      out[i] *= inverse ? s * signs[i] : s;
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      float acc = 0.f;
      for (int k = 0; k < n; k++)
        acc += (inverse ? matrix[k * n + i] : matrix[i * n + k]) * in[k];
      out[i] = acc;
    }
  }
  __syncthreads();
}

#define TQ_MAIN_ROTATE(inv, in, out) \
  tq_rotate(TQ_MAIN_SIGNS, TQ_MAIN_MATRIX, TQ_M, inv, in, out)
#define TQ_OUT_ROTATE(inv, in, out) \
  tq_rotate(TQ_OUT_SIGNS, TQ_OUT_MATRIX, TQ_O, inv, in, out)

/* Sum and maximum over a warp (every lane gets it). */
__device__ __forceinline__ float tq_warp_sum(float x) {
  for (int o = 16; o; o >>= 1) x += __shfl_xor_sync(TQ_FULL, x, o);
  return x;
}
__device__ __forceinline__ float tq_warp_max(float x) {
  for (int o = 16; o; o >>= 1) x = fmaxf(x, __shfl_xor_sync(TQ_FULL, x, o));
  return x;
}

/* The Walsh-Hadamard transform (unnormalized) of a vector on `lanes`
 * adjacent lanes (sub = the lane's place among them), n contiguous
 * channels each: butterflies within the lane's channels, then one shuffle
 * a stage across lanes, the upper lane of a pair keeping u - w. */
template <int n, int lanes>
__device__ __forceinline__ void tq_wht_lanes(float (&x)[n], int sub) {
#pragma unroll
  for (int hh = 1; hh < n; hh <<= 1)
#pragma unroll
    for (int e = 0; e < n; e++)
      if (!(e & hh)) {
        const float u = x[e], w = x[e + hh];
        x[e] = u + w;
        x[e + hh] = u - w;
      }
#pragma unroll
  for (int m = 1; m < lanes; m <<= 1) {
    const float sg = sub & m ? -1.f : 1.f;
#pragma unroll
    for (int e = 0; e < n; e++) x[e] = fmaf(x[e], sg, __shfl_xor_sync(TQ_FULL, x[e], m));
  }
}

/* Sum over the block (every thread gets it). */
__device__ float tq_block_sum(float v, float *scratch) {
  v = tq_warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++) s += scratch[w];
  __syncthreads();
  return s;
}

/* ---- encode ------------------------------------------------------------ */
/* Quantizes rotated y (n channels, shared) into packed words at dst and
 * returns the scale (docs/FORMAT.md).  idx: shared scratch, n bytes. */
__device__ float tq_quantize(const float *y, int n, int bits, const float *cb,
                             const float *bnd, tq_u8 *idx, tq_u32 *dst,
                             float *scratch) {
  float n2 = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) n2 += y[j] * y[j];
  n2 = tq_block_sum(n2, scratch);
  float z = n2 > 0.f ? sqrtf((float)n / n2) : 0.f, c2 = 0.f;
  int levels = 1 << bits;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float x = y[j] * z;
    int lo = 0, hi = levels - 1;
    while (lo < hi) {
      int mid = (lo + hi) >> 1;
      if (x >= bnd[mid]) lo = mid + 1; else hi = mid;
    }
    idx[j] = (tq_u8)lo;
    c2 += cb[lo] * cb[lo];
  }
  c2 = tq_block_sum(c2, scratch); /* also orders idx writes before packing */
  int words = (n * bits + 31) / 32;
  for (int w = threadIdx.x; w < words; w += blockDim.x) {
    tq_u32 word = 0;
    for (int bit = 32 * w; bit < 32 * w + 32 && bit < n * bits; bit++)
      word |= (tq_u32)((idx[bit / bits] >> (bit % bits)) & 1u) << (bit - 32 * w);
    dst[w] = word;
  }
  float scale = sqrtf(n2 / (float)n);
  if (TQ_NC && c2 > 0.f) scale = sqrtf(n2 / c2);
  return scale;
}

/* Writes 1-bit flags (shared bytes) as packed words. */
__device__ void tq_pack_bits(const tq_u8 *flag, int n, tq_u32 *dst) {
  for (int w = threadIdx.x; w < (n + 31) / 32; w += blockDim.x) {
    tq_u32 word = 0;
    for (int i = 32 * w; i < 32 * w + 32 && i < n; i++) word |= (tq_u32)flag[i] << (i - 32 * w);
    dst[w] = word;
  }
}

struct tq_encode_smem {
  float x[TQ_D];
  float xm[TQ_M];
  float y[TQ_M];
  float xo[TQ_OW];
  float yo[TQ_OW];
  float r[TQ_M];
  tq_u8 idx[TQ_D];
  float scratch[32];
};

/* The outlier part of a slot: raw f16 or its own quantized instance. */
__device__ void tq_encode_outliers(tq_encode_smem &s, const tq_u16 *perm,
                                   tq_u8 *slot, int idx_at, int scale_at) {
#if TQ_O > 0
  for (int j = threadIdx.x; j < TQ_O; j += blockDim.x) s.xo[j] = s.x[tq_channel(perm, j)];
#if TQ_OB == 16
  __syncthreads();
  for (int w = threadIdx.x; w < (TQ_O + 1) / 2; w += blockDim.x) {
    tq_u32 lo = tq_f2h(s.xo[2 * w]);
    tq_u32 hi = 2 * w + 1 < TQ_O ? tq_f2h(s.xo[2 * w + 1]) : 0u;
    ((tq_u32 *)(slot + idx_at))[w] = lo | hi << 16;
  }
#else
  TQ_OUT_ROTATE(0, s.xo, s.yo);
  float sc = tq_quantize(s.yo, TQ_O, TQ_OB, tq_out_cb, tq_out_bnd, s.idx,
                         (tq_u32 *)(slot + idx_at), s.scratch);
  if (threadIdx.x == 0) *(float *)(slot + scale_at) = sc;
#endif
#endif
}

/* ---- tensor-core primitives (f16 and bf16 variants) ------------------- */
#if TQ_DTYPE == TQ_DTYPE_F16
#define TQ_MMA_TYPE "f16"
#define TQ_ONE_BITS 0x3c00u /* 1.0 as the activation's half */
#elif TQ_DTYPE == TQ_DTYPE_BF16
#define TQ_MMA_TYPE "bf16"
#define TQ_ONE_BITS 0x3f80u
#endif
#if TQ_DTYPE != TQ_DTYPE_F32
/* mma.sync m16n8k16 in the activation's half type, f32 accumulators:
 * c += a b. */
__device__ __forceinline__ void tq_mma(float *c, const tq_u32 *a, tq_u32 b0, tq_u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32." TQ_MMA_TYPE "." TQ_MMA_TYPE ".f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* c = a b: the first k step, without zeroing c first. */
__device__ __forceinline__ void tq_mma0(float *c, const tq_u32 *a, tq_u32 b0, tq_u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32." TQ_MMA_TYPE "." TQ_MMA_TYPE ".f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}
#endif

/* ---- encode, fast path -------------------------------------------------
 * Variants with no outliers, no QJL and TurboQuant values over a power-of-
 * two head_dim whose per-lane index bits pack into whole words.  A vector
 * lives in the registers of TQ_EV lanes, TQ_EL channels each: the Walsh-
 * Hadamard butterflies run in-lane, then across those lanes by shuffles;
 * the codebook search and packing follow with no block barrier.  A block
 * encodes TQ_EVB vectors of one cache (blockIdx.y: keys or values), so the
 * branch between the two is uniform.  Instruction issue is what bounds
 * this kernel, so the lane count keeps shuffles few and the boundaries sit
 * in shared memory for a branch-free search. */
#define TQ_EL (TQ_D < 256 ? 16 : 32)     /* channels of a lane */
#define TQ_EV (TQ_D / TQ_EL)              /* lanes of a vector */
#define TQ_EVB (TQ_THREADS / TQ_EV)       /* vectors of a block */
#define TQ_EPACK(bits) ((TQ_EL * (bits)) % 32 == 0) /* whole words a lane */
#define TQ_ETPACK(bits) ((TQ_D / 4 * (bits)) % 32 == 0) /* whole words a quarter vector */
#define TQ_EMMA (TQ_O == 0 && !TQ_QJL && !TQ_VMINMAX && TQ_DTYPE != TQ_DTYPE_F32 && \
                 (TQ_D == 32 || TQ_D == 64 || TQ_D == 128) && TQ_ETPACK(TQ_KB) && TQ_ETPACK(TQ_VB))
#define TQ_EFAST (!TQ_EMMA && TQ_O == 0 && !TQ_QJL && !TQ_VMINMAX && TQ_D >= 32 && \
                  TQ_D <= 256 && (TQ_D & (TQ_D - 1)) == 0 && TQ_EPACK(TQ_KB) && TQ_EPACK(TQ_VB))
/* The index of v, the number of codebook boundaries at or below it, by a
 * branch-free search over the boundaries in shared memory (a power of two
 * at a time; lo counts bytes, so each probe is one load at a constant
 * offset), and its centroid c. */
template <int bits>
__device__ __forceinline__ unsigned tq_search(float v, const float *bnd, const float *cb, float &c) {
  unsigned lo = 0;
  for (int half = 1 << (bits - 1); half; half >>= 1)
    if (v >= *(const float *)((const char *)bnd + lo + 4 * (half - 1))) lo += 4 * half;
  c = *(const float *)((const char *)cb + lo);
  return lo >> 2;
}

#if TQ_EFAST
struct tq_efast_smem {
  float sign[TQ_D];
  float bnd[255], cb[256];
};

/* One part (key or value) of the vector of token i, head h, sequence b;
 * every lane of the warp takes part (the shuffles), valid or not. */
template <int bits>
__device__ __forceinline__ void tq_encode_vec(const tq_kargs &a, const tq_efast_smem &s,
                                              const tq_act *src, void *cache, int bytes,
                                              int idx_off, int scale_off, bool valid, int b,
                                              int h, int i) {
  const int sub = threadIdx.x % TQ_EV, j0 = sub * TQ_EL;
  const tq_u16 *perm = tq_perm(a, h);
  const size_t at = (((size_t)b * a.n_tokens + i) * a.kv_heads + h) * TQ_D;
  float x[TQ_EL];
  if (!valid) {
    for (int e = 0; e < TQ_EL; e++) x[e] = 0.f;
  } else if (perm) {
    for (int e = 0; e < TQ_EL; e++) x[e] = tq_load(src, at + perm[j0 + e]);
  } else {
#if TQ_DTYPE == TQ_DTYPE_F32
    const float4 *p = (const float4 *)(src + at + j0);
    for (int e = 0; e < TQ_EL / 4; e++) {
      const float4 w = p[e];
      x[4 * e] = w.x, x[4 * e + 1] = w.y, x[4 * e + 2] = w.z, x[4 * e + 3] = w.w;
    }
#else
    const uint4 *p = (const uint4 *)(src + at + j0);
    for (int e = 0; e < TQ_EL / 8; e++) {
      const uint4 w = p[e];
      const tq_u32 u[4] = {w.x, w.y, w.z, w.w};
      for (int k = 0; k < 4; k++) {
        x[8 * e + 2 * k] = tq_load((const tq_act *)&u[k], 0);
        x[8 * e + 2 * k + 1] = tq_load((const tq_act *)&u[k], 1);
      }
    }
#endif
  }
  for (int e = 0; e < TQ_EL; e++) x[e] *= s.sign[j0 + e];
  tq_wht_lanes<TQ_EL, TQ_EV>(x, sub);
  /* x is sqrt(d) times the rotated vector y; n2 = |y|^2. */
  float n2 = 0.f;
  for (int e = 0; e < TQ_EL; e++) n2 = fmaf(x[e], x[e], n2);
  for (int m = 1; m < TQ_EV; m <<= 1) n2 += __shfl_xor_sync(TQ_FULL, n2, m);
  n2 *= 1.f / (float)TQ_D;
  /* The unit-variance coordinates are y * sqrt(d / n2) = x / sqrt(n2). */
  const float z = n2 > 0.f ? rsqrtf(n2) : 0.f;
  constexpr int words = TQ_EL * bits / 32; /* index words of a lane */
  tq_u32 word[words];
  for (int w = 0; w < words; w++) word[w] = 0u;
  float c2 = 0.f;
  for (int e = 0; e < TQ_EL; e++) {
    float c;
    const unsigned lo = tq_search<bits>(x[e] * z, s.bnd, s.cb, c);
    c2 = fmaf(c, c, c2);
    const int k = e * bits / 32, sh = e * bits % 32; /* docs/FORMAT.md bit order */
    word[k] |= lo << sh;
    if (sh + bits > 32) word[k + 1] |= lo >> (32 - sh);
  }
  for (int m = 1; m < TQ_EV; m <<= 1) c2 += __shfl_xor_sync(TQ_FULL, c2, m);
  if (!valid) return;
  tq_u8 *slot = tq_slot(a, cache, bytes, b, h, a.seq_lens[b] - a.n_tokens + i);
  tq_u32 *dst = (tq_u32 *)(slot + idx_off);
  for (int w = 0; w < words; w++) dst[sub * words + w] = word[w];
  if (sub == 0)
    *(float *)(slot + scale_off) = TQ_NC && c2 > 0.f ? sqrtf(n2 / c2) : sqrtf(n2 / (float)TQ_D);
}
#endif

/* ---- encode on tensor cores ---------------------------------------------
 * f16 and bf16 variants of the fast path at head_dim 32, 64 or 128 whose
 * quarter vectors (d/4 channels) pack into whole index words.  A warp
 * encodes groups of 16 vectors, its mma rows, loading the next group
 * into registers while one computes; lane (g, t) = (lane / 4, lane % 4)
 * loads channels [t d/4, (t + 1) d/4) of vectors g and g + 8 (16-byte
 * loads) and flips their signs by xor.  The Walsh-Hadamard transform
 * H_d factors as H_16 within blocks of 16 mma k slots (an mma against
 * constant +-1 B fragments per 8 outputs) times H_{d/16} across the
 * blocks (butterflies within each lane's accumulators).  Taking a lane's
 * contiguous channels as its A fragment permutes the bits of the channel
 * index: channel t d/4 + 4 block + 2 s1 + s0 sits in k slot
 * 16 block + 8 s1 + 2 t + s0.  H_d is unchanged when the same permutation
 * of index bits acts on both sides, so the outputs come out under it too:
 * accumulator (block, n tile, e) of lane t is channel
 * t d/4 + 4 block + 2 ntile + e, the lane's own channels again, whose
 * index words it stores whole.  Products of halves and +-1 are exact,
 * sums f32, as in the butterflies.  The codebook search is the emitter's
 * cell grid (TQ_K_GRID, gen/core/codebook.c): one 16-byte shared load and
 * one comparison an index; widths whose grid would be too large search
 * the boundaries.  Shuffles: four a vector, for its two norms. */
#if TQ_EMMA
#define TQ_ENB (TQ_D / 16) /* 16-channel blocks of a vector */
#define TQ_EQW (TQ_D / 8)  /* words (half pairs) of a lane's quarter vector */
#define TQ_EVW 16          /* vectors of a warp */
#define TQ_ECELLS (TQ_K_GRID > TQ_V_GRID ? TQ_K_GRID : TQ_V_GRID)
#define TQ_EMAGIC 0x4b400000u /* bits of 1.5 * 2^23: + it rounds to an integer */
#define TQ_EBATCH 8           /* grid loads in flight a lane (divides 4 TQ_ENB) */
struct tq_emma_smem {
  tq_u32 mask[4][TQ_EQW]; /* sign bits of each quarter's half pairs */
  uint4 grid[TQ_ECELLS > 0 ? TQ_ECELLS : 1]; /* threshold, base, c^2 below, c^2 above */
  float bnd[255], cb[256];                    /* for parts without a grid */
};

/* H_16's entries in rows k and k + 1 of column n as a half pair. */
__device__ __forceinline__ tq_u32 tq_h16_pair(int k, int n) {
  return (TQ_ONE_BITS | (tq_u32)(__popc(k & n) & 1) << 15) |
         (TQ_ONE_BITS | (tq_u32)(__popc((k + 1) & n) & 1) << 15) << 16;
}

/* The quarter vectors of lane (g, t) in the 16 vectors from vec0 on, of
 * sequence b: rows g and g + 8 of the mma's A, signs not yet flipped, so
 * nothing waits on the loads until the mma uses them. */
__device__ __forceinline__ void tq_encode_load(const tq_kargs &a, const tq_act *src, int b,
                                               int vec0, tq_u32 (&w)[2][TQ_EQW]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n = a.n_tokens * a.kv_heads;
  for (int r = 0; r < 2; r++) {
    const int vec = vec0 + g + 8 * r;
    const size_t at = ((size_t)b * n + vec) * TQ_D;
    if (vec >= n) {
      for (int k = 0; k < TQ_EQW; k++) w[r][k] = 0u;
    } else if (a.channel_perm) {
      const tq_u16 *perm = tq_perm(a, vec % a.kv_heads), *x = (const tq_u16 *)src + at;
      for (int k = 0; k < TQ_EQW; k++) {
        const int j = t * (TQ_D / 4) + 2 * k;
        w[r][k] = x[perm[j]] | (tq_u32)x[perm[j + 1]] << 16;
      }
    } else {
      const uint4 *p = (const uint4 *)(src + at + t * (TQ_D / 4));
      for (int q = 0; q < TQ_EQW / 4; q++) {
        const uint4 v = p[q];
        w[r][4 * q] = v.x, w[r][4 * q + 1] = v.y, w[r][4 * q + 2] = v.z, w[r][4 * q + 3] = v.w;
      }
    }
  }
}

/* Encodes one part (keys or values) of the 16 vectors from vec0 on, loaded
 * into w, into the cache, flipping signs by the lane's masks; every lane
 * takes part (the mma and the norm shuffles). */
template <int bits, int cells>
__device__ __forceinline__ void tq_encode_rows(const tq_kargs &a, const tq_emma_smem &s,
                                               const tq_u32 (&w)[2][TQ_EQW],
                                               const tq_u32 (&mask)[TQ_EQW], void *cache,
                                               int bytes, int idx_off, int scale_off,
                                               float gscale, float goffset, int b, int pos0,
                                               int vec0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n = a.n_tokens * a.kv_heads;
  tq_u32 hb[4];
  for (int nt = 0; nt < 2; nt++) {
    hb[2 * nt] = tq_h16_pair(2 * t, g + 8 * nt);
    hb[2 * nt + 1] = tq_h16_pair(2 * t + 8, g + 8 * nt);
  }
  float acc[TQ_ENB][2][4]; /* [block][n tile]: rows g (0, 1) and g + 8 (2, 3) */
  for (int blk = 0; blk < TQ_ENB; blk++) {
    const tq_u32 m0 = mask[2 * blk], m1 = mask[2 * blk + 1];
    const tq_u32 af[4] = {w[0][2 * blk] ^ m0, w[1][2 * blk] ^ m0, w[0][2 * blk + 1] ^ m1,
                          w[1][2 * blk + 1] ^ m1};
    tq_mma0(acc[blk][0], af, hb[0], hb[1]);
    tq_mma0(acc[blk][1], af, hb[2], hb[3]);
  }
  for (int hh = 1; hh < TQ_ENB; hh <<= 1)
    for (int blk = 0; blk < TQ_ENB; blk++)
      if (!(blk & hh))
        for (int nt = 0; nt < 2; nt++)
          for (int e = 0; e < 4; e++) {
            const float u = acc[blk][nt][e], v = acc[blk + hh][nt][e];
            acc[blk][nt][e] = u + v;
            acc[blk + hh][nt][e] = u - v;
          }
  /* acc is sqrt(d) times the rotated vectors y; n2 = |y|^2 per row, in
   * four partial sums each to keep the chains short. */
  float n2[2], part[4] = {0.f, 0.f, 0.f, 0.f};
  for (int blk = 0; blk < TQ_ENB; blk++)
    for (int nt = 0; nt < 2; nt++)
      for (int e = 0; e < 4; e++) part[e] = fmaf(acc[blk][nt][e], acc[blk][nt][e], part[e]);
  n2[0] = part[0] + part[1];
  n2[1] = part[2] + part[3];
  constexpr int words = TQ_D / 4 * bits / 32; /* index words of a quarter */
  for (int r = 0; r < 2; r++) {
    n2[r] += __shfl_xor_sync(TQ_FULL, n2[r], 1);
    n2[r] += __shfl_xor_sync(TQ_FULL, n2[r], 2);
    n2[r] *= 1.f / (float)TQ_D;
    /* The unit-variance coordinates are acc / sqrt(n2). */
    const float z = n2[r] > 0.f ? rsqrtf(n2[r]) : 0.f, zs = z * gscale;
    tq_u32 word[words];
    for (int k = 0; k < words; k++) word[k] = 0u;
    float c2s[2] = {0.f, 0.f}; /* even and odd channels' sums */
    /* The lane's 4 TQ_ENB coordinates of row r, j = 4 blk + 2 nt + e, in
     * batches whose grid loads are all issued before the first comparison:
     * one at a time, each load's latency would stand in the chain of the
     * next (ptxas gave them all one register pair). */
    for (int j0 = 0; j0 < 4 * TQ_ENB; j0 += TQ_EBATCH) {
      float u[TQ_EBATCH];
      uint4 c[TQ_EBATCH];
      for (int q = 0; q < TQ_EBATCH; q++) {
        const int j = j0 + q;
        const float x = acc[j / 4][j / 2 % 2][2 * r + j % 2];
        if (cells) {
          /* u's cell: the integer nearest u, by adding 1.5 * 2^23; NaN
           * and anything past the grid land in its last cell. */
          u[q] = fmaf(x, zs, goffset);
          const unsigned cell = min(__float_as_uint(u[q] + 12582912.f) - TQ_EMAGIC,
                                    (unsigned)cells - 1u);
          if (TQ_NC) {
            c[q] = s.grid[cell];
          } else {
            const uint2 xy = *(const uint2 *)&s.grid[cell];
            c[q] = make_uint4(xy.x, xy.y, 0u, 0u);
          }
        } else {
          u[q] = x * z;
        }
      }
      for (int q = 0; q < TQ_EBATCH; q++) {
        const int j = j0 + q, e = j % 2, k = j * bits / 32, sh = j * bits % 32;
        unsigned idx;
        if (cells) {
          const bool up = u[q] >= __uint_as_float(c[q].x);
          if (TQ_NC) c2s[e] += __uint_as_float(up ? c[q].w : c[q].z);
          idx = c[q].y + up;
        } else {
          float cv;
          idx = tq_search<bits>(u[q], s.bnd, s.cb, cv);
          c2s[e] = fmaf(cv, cv, c2s[e]);
        }
        word[k] |= idx << sh; /* docs/FORMAT.md bit order */
        if (sh + bits > 32) word[k + 1] |= idx >> (32 - sh);
      }
    }
    float c2 = c2s[0] + c2s[1];
    c2 += __shfl_xor_sync(TQ_FULL, c2, 1);
    c2 += __shfl_xor_sync(TQ_FULL, c2, 2);
    const int vec = vec0 + g + 8 * r;
    if (vec >= n) continue;
    const int i = vec / a.kv_heads, h = vec % a.kv_heads;
    tq_u8 *slot = tq_slot(a, cache, bytes, b, h, pos0 + i);
    tq_u32 *dst = (tq_u32 *)(slot + idx_off) + t * words;
    for (int k = 0; k < words; k++) dst[k] = word[k];
    if (t == 0)
      *(float *)(slot + scale_off) =
          TQ_NC && c2 > 0.f ? sqrtf(n2[r] / c2) : sqrtf(n2[r] / (float)TQ_D);
  }
}
#endif

/* Grids (backends/cuda_plan.c): on tensor cores (blocks that fill the
 * device once, keys | values, batch), TQ_THREADS threads, each warp taking
 * groups of 16 vectors gridDim.x * TQ_WARPS apart; the register fast path
 * (vector groups of TQ_EVB, keys | values, batch), TQ_THREADS threads;
 * otherwise (n_tokens, kv_heads, batch), one warp for one token of one
 * head. */
extern "C" __global__ void {{SYM}}_encode(const tq_kargs a) {
#if TQ_EMMA
  __shared__ tq_emma_smem s;
  const bool value = blockIdx.y;
  const int n = a.n_tokens * a.kv_heads, groups = (n + TQ_EVW - 1) / TQ_EVW;
  const int stride = gridDim.x * TQ_WARPS, b = blockIdx.z, warp = threadIdx.x / 32;
  const tq_act *src = (const tq_act *)(value ? a.v : a.k);
  const int cells = value ? TQ_V_GRID : TQ_K_GRID;
  const tq_u32 *grid = value ? tq_v_grid : tq_k_grid;
  const int pos0 = a.seq_lens[b] - a.n_tokens; /* the first new token's position */
  int grp = blockIdx.x * TQ_WARPS + warp;
  /* Every global read of the set-up is in flight before the first wait:
   * the signs and the grid words (ahead of the bulk), then the warp's first
   * group, all into registers; the shared stores and the barrier follow. */
  const int j = threadIdx.x;
  static_assert(4 * TQ_EQW <= TQ_THREADS, "a sign pair a thread");
  float sign[2] = {1.f, 1.f};
  if (j < 4 * TQ_EQW) {
    const int ch = j / TQ_EQW * (TQ_D / 4) + 2 * (j % TQ_EQW);
    sign[0] = TQ_MAIN_SIGNS[ch];
    sign[1] = TQ_MAIN_SIGNS[ch + 1];
  }
  constexpr int gwords = TQ_ECELLS > 0 ? (4 * TQ_ECELLS + TQ_THREADS - 1) / TQ_THREADS : 1;
  tq_u32 gw[gwords]; /* grid words of this thread */
  for (int q = 0; q < gwords; q++)
    gw[q] = j + q * TQ_THREADS < 4 * cells ? grid[j + q * TQ_THREADS] : 0u;
  tq_u32 w[2][TQ_EQW];
  if (grp < groups) tq_encode_load(a, src, b, grp * TQ_EVW, w);
  if (j < 4 * TQ_EQW)
    s.mask[j / TQ_EQW][j % TQ_EQW] =
        (sign[0] < 0.f ? 0x8000u : 0u) | (sign[1] < 0.f ? 0x80000000u : 0u);
  for (int q = 0; q < gwords; q++)
    if (j + q * TQ_THREADS < 4 * cells) ((tq_u32 *)s.grid)[j + q * TQ_THREADS] = gw[q];
  if (!cells) {
    const int levels = 1 << (value ? TQ_VB : TQ_KB);
    const float *cb = value ? tq_v_cb : tq_k_cb, *bnd = value ? tq_v_bnd : tq_k_bnd;
    for (int l = j; l < levels; l += TQ_THREADS) {
      s.cb[l] = cb[l];
      if (l < levels - 1) s.bnd[l] = bnd[l];
    }
  }
  __syncthreads();
  if (grp >= groups) return; /* the whole warp */
  tq_u32 mask[TQ_EQW];
  for (int k = 0; k < TQ_EQW; k++) mask[k] = s.mask[threadIdx.x % 4][k];
  /* The warp's groups of 16 vectors, the next one's loads in flight while
   * this one computes. */
  for (; grp < groups; grp += stride) {
    tq_u32 next[2][TQ_EQW];
    if (grp + stride < groups) tq_encode_load(a, src, b, (grp + stride) * TQ_EVW, next);
    if (value)
      tq_encode_rows<TQ_VB, TQ_V_GRID>(a, s, w, mask, a.v_cache, TQ_V_BYTES, TQ_V_IDX,
                                       TQ_V_SCALE, TQ_V_GRID_SCALE, TQ_V_GRID_OFFSET, b,
                                       pos0, grp * TQ_EVW);
    else
      tq_encode_rows<TQ_KB, TQ_K_GRID>(a, s, w, mask, a.k_cache, TQ_K_BYTES, TQ_K_IDX,
                                       TQ_K_SCALE, TQ_K_GRID_SCALE, TQ_K_GRID_OFFSET, b,
                                       pos0, grp * TQ_EVW);
    for (int r = 0; r < 2; r++)
      for (int k = 0; k < TQ_EQW; k++) w[r][k] = next[r][k];
  }
#elif TQ_EFAST
  __shared__ tq_efast_smem s;
  const bool value = blockIdx.y;
  const int levels = 1 << (value ? TQ_VB : TQ_KB);
  const float *cb = value ? tq_v_cb : tq_k_cb, *bnd = value ? tq_v_bnd : tq_k_bnd;
  for (int j = threadIdx.x; j < TQ_D; j += blockDim.x) s.sign[j] = TQ_MAIN_SIGNS[j];
  for (int j = threadIdx.x; j < levels; j += blockDim.x) {
    s.cb[j] = cb[j];
    if (j < levels - 1) s.bnd[j] = bnd[j];
  }
  __syncthreads();
  const int vec = blockIdx.x * TQ_EVB + threadIdx.x / TQ_EV, b = blockIdx.z;
  const int i = vec / a.kv_heads, h = vec % a.kv_heads;
  const bool valid = vec < a.n_tokens * a.kv_heads;
  if (value)
    tq_encode_vec<TQ_VB>(a, s, (const tq_act *)a.v, a.v_cache, TQ_V_BYTES, TQ_V_IDX,
                         TQ_V_SCALE, valid, b, h, i);
  else
    tq_encode_vec<TQ_KB>(a, s, (const tq_act *)a.k, a.k_cache, TQ_K_BYTES, TQ_K_IDX,
                         TQ_K_SCALE, valid, b, h, i);
#else
  __shared__ tq_encode_smem s;
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int t = a.seq_lens[b] - a.n_tokens + i;
  const tq_u16 *perm = tq_perm(a, h);
  const size_t at = (((size_t)b * a.n_tokens + i) * a.kv_heads + h) * TQ_D;
  for (int kv = 0; kv < 2; kv++) {
    const tq_act *src = (const tq_act *)(kv ? a.v : a.k);
    tq_u8 *slot = tq_slot(a, kv ? a.v_cache : a.k_cache, kv ? TQ_V_BYTES : TQ_K_BYTES, b, h, t);
    __syncthreads();
    for (int j = threadIdx.x; j < TQ_D; j += blockDim.x) s.x[j] = tq_load(src, at + j);
    __syncthreads();
#if TQ_VMINMAX
    if (kv) {
      const int top = (1 << TQ_VB) - 1;
      for (int g = threadIdx.x; g < TQ_D / TQ_VGROUP; g += blockDim.x) {
        float mn = s.x[g * TQ_VGROUP], mx = mn;
        for (int j = 1; j < TQ_VGROUP; j++) {
          mn = fminf(mn, s.x[g * TQ_VGROUP + j]);
          mx = fmaxf(mx, s.x[g * TQ_VGROUP + j]);
        }
        tq_u16 hs = tq_f2h((mx - mn) / top), hm = tq_f2h(mn);
        float st = tq_h2f(hs), lo = tq_h2f(hm);
        ((tq_u32 *)(slot + TQ_V_GROUPS))[g] = (tq_u32)hs | (tq_u32)hm << 16;
        for (int j = 0; j < TQ_VGROUP; j++) {
          float q = st > 0.f ? floorf((s.x[g * TQ_VGROUP + j] - lo) / st + 0.5f) : 0.f;
          s.idx[g * TQ_VGROUP + j] = (tq_u8)(q < 0.f ? 0.f : q > top ? (float)top : q);
        }
      }
      __syncthreads();
      int words = (TQ_D * TQ_VB + 31) / 32;
      for (int w = threadIdx.x; w < words; w += blockDim.x) {
        tq_u32 word = 0;
        for (int bit = 32 * w; bit < 32 * w + 32 && bit < TQ_D * TQ_VB; bit++)
          word |= (tq_u32)((s.idx[bit / TQ_VB] >> (bit % TQ_VB)) & 1u) << (bit - 32 * w);
        ((tq_u32 *)(slot + TQ_V_IDX))[w] = word;
      }
      continue;
    }
#endif
    for (int j = threadIdx.x; j < TQ_M; j += blockDim.x) s.xm[j] = s.x[tq_channel(perm, TQ_O + j)];
    TQ_MAIN_ROTATE(0, s.xm, s.y);
    if (!kv) {
#if TQ_QJL
      float sc = tq_quantize(s.y, TQ_M, TQ_KB, tq_k_cb, tq_k_bnd, s.idx,
                             (tq_u32 *)(slot + TQ_K_IDX), s.scratch);
      if (threadIdx.x == 0) *(float *)(slot + TQ_K_SCALE) = sc;
      float rn2 = 0.f;
      for (int j = threadIdx.x; j < TQ_M; j += blockDim.x) {
        s.r[j] = s.y[j] - sc * tq_k_cb[s.idx[j]];
        rn2 += s.r[j] * s.r[j];
      }
      rn2 = tq_block_sum(rn2, s.scratch);
      for (int k = threadIdx.x; k < TQ_M; k += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < TQ_M; j++) acc += tq_qjl_s[k * TQ_M + j] * s.r[j];
        s.idx[k] = acc >= 0.f;
      }
      __syncthreads();
      tq_pack_bits(s.idx, TQ_M, (tq_u32 *)(slot + TQ_K_QJL));
      if (threadIdx.x == 0) *(float *)(slot + TQ_K_RNORM) = sqrtf(rn2);
#else
      float sc = tq_quantize(s.y, TQ_M, TQ_KB, tq_k_cb, tq_k_bnd, s.idx,
                             (tq_u32 *)(slot + TQ_K_IDX), s.scratch);
      if (threadIdx.x == 0) *(float *)(slot + TQ_K_SCALE) = sc;
#endif
      __syncthreads();
      tq_encode_outliers(s, perm, slot, TQ_K_OUT_IDX, TQ_K_OUT_SCALE);
    } else {
#if !TQ_VMINMAX
      float sc = tq_quantize(s.y, TQ_M, TQ_VB, tq_v_cb, tq_v_bnd, s.idx,
                             (tq_u32 *)(slot + TQ_V_IDX), s.scratch);
      if (threadIdx.x == 0) *(float *)(slot + TQ_V_SCALE) = sc;
      __syncthreads();
      tq_encode_outliers(s, perm, slot, TQ_V_OUT_IDX, TQ_V_OUT_SCALE);
#endif
    }
  }
#endif
}

/* ---- attention --------------------------------------------------------- */
struct tq_attend_smem {
  float q[TQ_RQ][TQ_M];   /* rotated, scaled main part of each row */
  float qo[TQ_RQ][TQ_OW]; /* rotated (or raw) outlier part */
  float qs[TQ_RQ][TQ_M];  /* S q for QJL */
  float qsum[TQ_RQ];
  float tmp[TQ_D];
  float tmp2[TQ_D];
  float kcb[256], vcb[256], ocb[256];
  /* per key group: running max, sum and accumulators, merged at the end */
  float m[TQ_WARPS * TQ_KPW][TQ_RQ];
  float l[TQ_WARPS * TQ_KPW][TQ_RQ];
};

/* Decode and prefill: one (split, kv head x row tile, sequence) per block. */
__device__ void tq_attend(const tq_kargs &a) {
  __shared__ tq_attend_smem s;
  extern __shared__ float acc_smem[]; /* [groups][TQ_RQ][TQ_VDIM] */
  const int split = blockIdx.x, splits = a.splits, b = blockIdx.z;
  const int rows = a.n_tokens * TQ_G, tiles = (rows + TQ_RQ - 1) / TQ_RQ;
  const int h = blockIdx.y / tiles, r0 = (blockIdx.y % tiles) * TQ_RQ;
  const tq_u16 *perm = tq_perm(a, h);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = warp * TQ_KPW + lane / TQ_LPK, sub = lane % TQ_LPK;
  const int len = a.seq_lens[b];

  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
#if TQ_KB > 0
    if (i < (1 << TQ_KB)) s.kcb[i] = tq_k_cb[i];
#endif
#if !TQ_VMINMAX
    if (i < (1 << TQ_VB)) s.vcb[i] = tq_v_cb[i];
#endif
#if TQ_O > 0 && TQ_OB != 16
    if (i < (1 << TQ_OB)) s.ocb[i] = tq_out_cb[i];
#endif
  }
  /* Rotate (and scale) the block's query rows once. */
  int ctx[TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) {
    int row = r0 + r, tok = row / TQ_G, g = row % TQ_G;
    ctx[r] = row < rows ? len - a.n_tokens + tok + 1 : 0;
    if (row >= rows) {
      for (int j = threadIdx.x; j < TQ_M; j += blockDim.x) s.q[r][j] = s.qs[r][j] = 0.f;
      for (int j = threadIdx.x; j < TQ_OW; j += blockDim.x) s.qo[r][j] = 0.f;
      if (threadIdx.x == 0) s.qsum[r] = 0.f;
      continue;
    }
    size_t at = (((size_t)b * a.n_tokens + tok) * a.kv_heads * TQ_G + (size_t)h * TQ_G + g) * TQ_D;
    const tq_act *q = (const tq_act *)a.q;
    __syncthreads();
    for (int j = threadIdx.x; j < TQ_M; j += blockDim.x)
      s.tmp[j] = a.sm_scale * tq_load(q, at + tq_channel(perm, TQ_O + j));
    TQ_MAIN_ROTATE(0, s.tmp, s.q[r]);
#if TQ_O > 0
    for (int j = threadIdx.x; j < TQ_O; j += blockDim.x)
      s.tmp[j] = a.sm_scale * tq_load(q, at + tq_channel(perm, j));
#if TQ_OB == 16
    __syncthreads();
    for (int j = threadIdx.x; j < TQ_O; j += blockDim.x) s.qo[r][j] = s.tmp[j];
#else
    TQ_OUT_ROTATE(0, s.tmp, s.qo[r]);
#endif
#endif
#if TQ_QJL
    for (int k = threadIdx.x; k < TQ_M; k += blockDim.x) {
      float acc = 0.f;
      for (int j = 0; j < TQ_M; j++) acc += tq_qjl_s[k * TQ_M + j] * s.q[r][j];
      s.qs[r][k] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float sum = 0.f;
      for (int k = 0; k < TQ_M; k++) sum += s.qs[r][k];
      s.qsum[r] = sum;
    }
#endif
  }
  __syncthreads();

  /* This lane's channels: main j = sub * TQ_CPL + c, outliers likewise. */
  float qreg[TQ_RQ][TQ_CPL], acc[TQ_RQ][TQ_VCPL], mrun[TQ_RQ], lrun[TQ_RQ];
#if TQ_O > 0
  float qoreg[TQ_RQ][TQ_OCPL], acco[TQ_RQ][TQ_OCPL];
#endif
#if TQ_QJL
  float qsreg[TQ_RQ][TQ_CPL];
#endif
  for (int r = 0; r < TQ_RQ; r++) {
    mrun[r] = -TQ_INF;
    lrun[r] = 0.f;
    for (int c = 0; c < TQ_CPL; c++) {
      int j = sub * TQ_CPL + c;
      qreg[r][c] = j < TQ_M ? s.q[r][j] : 0.f;
#if TQ_QJL
      qsreg[r][c] = j < TQ_M ? s.qs[r][j] : 0.f;
#endif
    }
    for (int c = 0; c < TQ_VCPL; c++) acc[r][c] = 0.f;
#if TQ_O > 0
    for (int c = 0; c < TQ_OCPL; c++) {
      int j = sub * TQ_OCPL + c;
      qoreg[r][c] = j < TQ_O ? s.qo[r][j] : 0.f;
      acco[r][c] = 0.f;
    }
#endif
  }

  /* This split's slice of the context (the longest row sees len tokens). */
  int slice = (len + splits - 1) / splits;
  int t_begin = split * slice, t_end = min(len, t_begin + slice);
  const int ngroups = TQ_WARPS * TQ_KPW;
  /* The loop runs the same number of times in every lane of a warp (the
   * shuffles below need the whole warp); a key group past the slice's end
   * computes nothing and adds nothing. */
  for (int t00 = t_begin + warp * TQ_KPW; t00 < t_end; t00 += TQ_UNROLL * ngroups) {
    /* Scores of TQ_UNROLL tokens per key group first, so their loads are in
     * flight together; then the softmax and value updates in order. */
    float partu[TQ_UNROLL][TQ_RQ];
#pragma unroll
    for (int u = 0; u < TQ_UNROLL; u++) {
    const int t = t00 + u * ngroups + lane / TQ_LPK;
    const bool live = t < t_end;
    const tq_u8 *ks = tq_slot(a, a.k_cache, TQ_K_BYTES, b, h, live ? t : t_begin);
    float *part = partu[u];
    for (int r = 0; r < TQ_RQ; r++) part[r] = 0.f;
#if TQ_KB > 0
    {
      const tq_u32 *w = (const tq_u32 *)(ks + TQ_K_IDX);
      for (int c = 0; c < TQ_CPL; c++) {
        int j = sub * TQ_CPL + c;
        float kv = j < TQ_M ? s.kcb[tq_index(w, j, TQ_KB)] : 0.f;
        for (int r = 0; r < TQ_RQ; r++) part[r] += qreg[r][c] * kv;
      }
      float sc = tq_f32_at(ks + TQ_K_SCALE);
      for (int r = 0; r < TQ_RQ; r++) part[r] *= sc;
    }
#endif
#if TQ_QJL
    {
      const tq_u32 *w = (const tq_u32 *)(ks + TQ_K_QJL);
      float pos[TQ_RQ];
      for (int r = 0; r < TQ_RQ; r++) pos[r] = 0.f;
      for (int c = 0; c < TQ_CPL; c++) {
        int j = sub * TQ_CPL + c;
        if (j < TQ_M && tq_index(w, j, 1))
          for (int r = 0; r < TQ_RQ; r++) pos[r] += qsreg[r][c];
      }
      /* sqrt(pi/2)/m |r| <S q, 2 sign - 1>; the -sum term is added once
       * per key group (by lane sub == 0) after the reduction below. */
      float f = 1.25331413731550025f / TQ_M * tq_f32_at(ks + TQ_K_RNORM);
      for (int r = 0; r < TQ_RQ; r++)
        part[r] += f * (2.f * pos[r] - (sub == 0 ? s.qsum[r] : 0.f));
    }
#endif
#if TQ_O > 0
    {
      float osum[TQ_RQ];
      for (int r = 0; r < TQ_RQ; r++) osum[r] = 0.f;
      for (int c = 0; c < TQ_OCPL; c++) {
        int j = sub * TQ_OCPL + c;
        if (j >= TQ_O) continue;
#if TQ_OB == 16
        float kv = tq_h2f(*(const tq_u16 *)(ks + TQ_K_OUT_IDX + 2 * j));
#else
        float kv = s.ocb[tq_index((const tq_u32 *)(ks + TQ_K_OUT_IDX), j, TQ_OB)];
#endif
        for (int r = 0; r < TQ_RQ; r++) osum[r] += qoreg[r][c] * kv;
      }
#if TQ_OB == 16
      float osc = 1.f;
#else
      float osc = tq_f32_at(ks + TQ_K_OUT_SCALE);
#endif
      for (int r = 0; r < TQ_RQ; r++) part[r] += osc * osum[r];
    }
#endif
    }
#pragma unroll
    for (int u = 0; u < TQ_UNROLL; u++)
      for (int o = TQ_LPK / 2; o; o >>= 1)
        for (int r = 0; r < TQ_RQ; r++)
          partu[u][r] += __shfl_xor_sync(TQ_FULL, partu[u][r], o);
#pragma unroll
    for (int u = 0; u < TQ_UNROLL; u++) {
    const int t = t00 + u * ngroups + lane / TQ_LPK;
    const bool live = t < t_end;
    const tq_u8 *vs = tq_slot(a, a.v_cache, TQ_V_BYTES, b, h, live ? t : t_begin);
    const float *part = partu[u];
    /* Online softmax: one exp per row and token. */
    float p[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) {
      if (!live || t >= ctx[r]) {
        p[r] = 0.f;
        continue;
      }
      float sc = part[r];
      if (sc > mrun[r]) {
        float corr = __expf(mrun[r] - sc);
        lrun[r] *= corr;
        for (int c = 0; c < TQ_VCPL; c++) acc[r][c] *= corr;
#if TQ_O > 0
        for (int c = 0; c < TQ_OCPL; c++) acco[r][c] *= corr;
#endif
        mrun[r] = sc;
        p[r] = 1.f;
      } else {
        p[r] = __expf(sc - mrun[r]);
      }
      lrun[r] += p[r];
    }
#if TQ_VMINMAX
    for (int c = 0; c < TQ_VCPL; c++) {
      int j = sub * TQ_VCPL + c;
      if (j >= TQ_D) continue;
      tq_u32 gw = ((const tq_u32 *)(vs + TQ_V_GROUPS))[j / TQ_VGROUP];
      float vv = tq_h2f((tq_u16)(gw >> 16)) +
                 tq_h2f((tq_u16)gw) * (float)tq_index((const tq_u32 *)(vs + TQ_V_IDX), j, TQ_VB);
      for (int r = 0; r < TQ_RQ; r++) acc[r][c] += p[r] * vv;
    }
#else
    {
      float vsc = tq_f32_at(vs + TQ_V_SCALE);
      const tq_u32 *w = (const tq_u32 *)(vs + TQ_V_IDX);
      for (int c = 0; c < TQ_CPL; c++) {
        int j = sub * TQ_CPL + c;
        float vv = j < TQ_M ? vsc * s.vcb[tq_index(w, j, TQ_VB)] : 0.f;
        for (int r = 0; r < TQ_RQ; r++) acc[r][c] += p[r] * vv;
      }
#if TQ_O > 0
#if TQ_OB != 16
      float vosc = tq_f32_at(vs + TQ_V_OUT_SCALE);
#endif
      for (int c = 0; c < TQ_OCPL; c++) {
        int j = sub * TQ_OCPL + c;
        if (j >= TQ_O) continue;
#if TQ_OB == 16
        float vv = tq_h2f(*(const tq_u16 *)(vs + TQ_V_OUT_IDX + 2 * j));
#else
        float vv = vosc * s.ocb[tq_index((const tq_u32 *)(vs + TQ_V_OUT_IDX), j, TQ_OB)];
#endif
        for (int r = 0; r < TQ_RQ; r++) acco[r][c] += p[r] * vv;
      }
#endif
    }
#endif
    }
  }

  /* Merge the key groups of the block, then write this split's partial. */
  if (sub == 0)
    for (int r = 0; r < TQ_RQ; r++) {
      s.m[group][r] = mrun[r];
      s.l[group][r] = lrun[r];
    }
  for (int r = 0; r < TQ_RQ; r++) {
    float *dst = acc_smem + ((size_t)group * TQ_RQ + r) * TQ_VDIM;
#if TQ_VMINMAX
    for (int c = 0; c < TQ_VCPL; c++)
      if (sub * TQ_VCPL + c < TQ_D) dst[sub * TQ_VCPL + c] = acc[r][c];
#else
    for (int c = 0; c < TQ_CPL; c++)
      if (sub * TQ_CPL + c < TQ_M) dst[sub * TQ_CPL + c] = acc[r][c];
#if TQ_O > 0
    for (int c = 0; c < TQ_OCPL; c++)
      if (sub * TQ_OCPL + c < TQ_O) dst[TQ_M + sub * TQ_OCPL + c] = acco[r][c];
#endif
#endif
  }
  __syncthreads();
  float *ws = (float *)a.workspace;
  for (int r = 0; r < TQ_RQ; r++) {
    int row = r0 + r;
    if (row >= rows) break;
    float mx = -TQ_INF;
    for (int g = 0; g < ngroups; g++) mx = fmaxf(mx, s.m[g][r]);
    float *part = ws + ((((size_t)b * a.kv_heads + h) * rows + row) * splits + split) * TQ_PART;
    float l = 0.f;
    for (int g = 0; g < ngroups; g++)
      l += s.l[g][r] > 0.f ? s.l[g][r] * __expf(s.m[g][r] - mx) : 0.f;
    for (int j = threadIdx.x; j < TQ_VDIM; j += blockDim.x) {
      float v = 0.f;
      for (int g = 0; g < ngroups; g++)
        if (s.l[g][r] > 0.f)
          v += acc_smem[((size_t)g * TQ_RQ + r) * TQ_VDIM + j] * __expf(s.m[g][r] - mx);
      part[2 + j] = v;
    }
    if (threadIdx.x == 0) {
      part[0] = mx;
      part[1] = l;
    }
  }
}


/* Programmatic dependent launch (sm_90): the fast decode lets its reduce
 * start launching once every block is past its context loop (other
 * decodes let it at their blocks' exit), and the reduce waits for the
 * decode's completion and memory before reading partials.  Without the
 * launch attribute (backends/cuda.c) both are no-ops. */
__device__ __forceinline__ void tq_let_dependents_launch(void) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void tq_wait_prerequisites(void) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* ---- attention, fast path ---------------------------------------------
 * For the common variants (no outliers, no QJL, TurboQuant values, 2- or
 * 4-bit indices, head_dim 32, 64 or 128) every warp is an independent
 * flash-decoding worker: it takes chunks of 32 cache tokens of the block's
 * context slice, copies their key and value slots into its own shared
 * buffers with cp.async (coalesced, one chunk ahead of the compute), and
 *  - scores one token per lane: centroid lookups in a 16-entry table times
 *    the block's query rows, read as one broadcast float4 per channel;
 *  - keeps the softmax maximum per warp (a lane's partial sum is only
 *    rescaled), so the loop has no block barrier at all;
 *  - accumulates values with each lane owning one index word (8 or 16
 *    channels) of one token and all query rows, weights arriving by
 *    shuffle from the lane that scored the token.
 * The warps' states merge once at the end of the slice.  Shared-memory
 * traffic per token is a centroid lookup per channel for K and V plus a
 * few words, a quarter of a q x centroid table's. */
/* A value's index words must divide the warp (head_dim a power of two). */
#define TQ_FAST (TQ_O == 0 && !TQ_QJL && !TQ_VMINMAX && (TQ_KB == 2 || TQ_KB == 4) && \
                 (TQ_VB == 2 || TQ_VB == 4) && TQ_D >= 32 && TQ_D <= 128 && \
                 (TQ_D & (TQ_D - 1)) == 0 && \
                 (!TQ_PAGED || TQ_BLOCK % 32 == 0 || 32 % TQ_BLOCK == 0))
#if TQ_FAST
#if TQ_RQ != 4 || TQ_WARPS != TQ_RQ
#error "the fast path holds the block's query rows in one float4, a warp rotating each"
#endif
#define TQ_KW (TQ_D * TQ_KB / 32)  /* index words of a key */
#define TQ_VW (TQ_D * TQ_VB / 32)  /* index words of a value: lanes per token */
#define TQ_KSW (TQ_K_BYTES / 4)    /* words of a key slot */
#define TQ_VSW (TQ_V_BYTES / 4)    /* words of a value slot */
#define TQ_CHUNK 32                /* cache tokens a warp takes at a time */
#define TQ_VTPS (32 / TQ_VW)       /* value tokens a warp accumulates per step */
#define TQ_VCH (32 / TQ_VB)        /* value channels of one lane */
#define TQ_QPL (TQ_D / 32)         /* query channels a lane rotates */

/* f16 and bf16 activations take the chunk's two products through tensor
 * cores (mma.sync m16n8k16, f16 in, f32 accumulate), with the centroids
 * expanded from the index bytes straight into fragments in registers:
 *  - scores S^T = K Q^T: A (16 tokens x 16 channels) is built per lane
 *    from two tokens' index words; B holds the block's query rows as its
 *    columns (columns 4..7 zero), loaded once;
 *  - values O^T = V^T P^T: P^T as B comes from the scores' accumulators
 *    by one transpose (movmatrix) per 8 x 8 block, so the weights never
 *    leave registers; A (16 channels x 16 tokens) comes from the index
 *    words of four tokens.
 * (Scores as S = Q K^T, the query rows as A, took twice the mma for keys,
 * each of them 12 rows of zeros the compiler kept moving into registers:
 * 5-11% slower, bench/RESULTS.md.)
 * Which index feeds which mma channel is free (the same channel order for
 * q and keys leaves q.k unchanged; the output channel is recorded), so it
 * is chosen to give every lane whole words: a quarter of each key of its
 * row, an eighth of each value of its row group.  The lookup is a
 * 16-entry table of half pairs, (c, 0) for the first index of a pair and
 * (0, c) for the second: a conflict-free shared load per index, two of
 * them merged by one f16x2 add; a word's table offsets
 * come from two (4-bit) or four (2-bit) shift-and-masks for all its bytes
 * and one byte permute per index.  Everything stays in f16's
 * range whatever the inputs: q rows are divided by their largest entry
 * (the score is multiplied back in f32), and weights times value scales by
 * the chunk's largest value scale, which becomes the accumulators' running
 * unit.  Both dtypes use f16 products (11-bit significands). */
#define TQ_DMMA (TQ_DTYPE != TQ_DTYPE_F32)
#if TQ_DMMA
#define TQ_TKB (TQ_D / 16) /* mma k steps over a key's channels */
#define TQ_TMT (TQ_D / 16) /* mma m tiles over a value's channels */
#define TQ_TVB (8 / TQ_VB) /* value indices per byte */
#define TQ_TMB (TQ_TVB / 2) /* value m tiles one byte serves */
#define TQ_KBL (TQ_D * TQ_KB / 32) /* key index bytes of a lane: a quarter */
#define TQ_VBL (TQ_D * TQ_VB / 64) /* value index bytes of a row group: an eighth */
#define TQ_LW(n) (((n) + 3) / 4)   /* words holding n bytes */

/* mma.sync m16n8k16, f16 products, f32 accumulators (c += a b). */
__device__ __forceinline__ void tq_mma_h(float *c, tq_u32 a0, tq_u32 a1, tq_u32 a2, tq_u32 a3,
                                         tq_u32 b0, tq_u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ tq_u32 tq_h2(float lo, float hi) {
  tq_u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
/* Two looked-up centroids as one half pair: an entry (c, 0) of table 0
 * plus an entry (0, c') of table 1, exact, on the FMA pipe (a byte permute
 * of two (c, c) entries ran on the busier integer pipe: 3-5% slower). */
__device__ __forceinline__ tq_u32 tq_merge(tq_u32 a, tq_u32 b) {
  tq_u32 r;
  asm("add.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* The rotated channel of q and key that mma k slot e (0..3: channels 2c,
 * 2c+1, 2c+8, 2c+9 of the step) of lane quad position c takes in step kb:
 * lane c reads index bytes TQ_KBL c onwards; 4-bit, bytes 2 kb (slots 0,
 * 1) and 2 kb + 1 (slots 2, 3) of them; 2-bit, byte kb. */
__device__ __forceinline__ int tq_key_chan(int kb, int c, int e) {
#if TQ_KB == 4
  return 2 * (TQ_KBL * c + 2 * kb + (e >> 1)) + (e & 1);
#else
  return 4 * (TQ_KBL * c + kb) + e;
#endif
}
/* The rotated channel of value m tile mt, row g + 8 hi: row group g reads
 * index bytes TQ_VBL g onwards; index 2 s + hi of byte mt / TQ_TMB of
 * them, s = mt % TQ_TMB. */
__device__ __forceinline__ int tq_value_chan(int mt, int g, int hi) {
  return TQ_TVB * (TQ_VBL * g + mt / TQ_TMB) + 2 * (mt % TQ_TMB) + hi;
}
/* A lane's n index bytes from byte `at` (a multiple of n; n is 1, 2 or a
 * multiple of 4) of a slot's index words, from byte 0 of w[0]. */
template <int n>
__device__ __forceinline__ void tq_lane_words(const tq_u32 *idx, int at, tq_u32 *w) {
  if (n >= 4) {
#pragma unroll
    for (int i = 0; i < n / 4; i++) w[i] = idx[at / 4 + i];
  } else {
    w[0] = idx[at / 4] >> (8 * (at % 4));
  }
}
/* Table offsets (index * 4) of index j of each byte of x (width bits). */
__device__ __forceinline__ tq_u32 tq_offsets(tq_u32 x, int j, int bits) {
  const int sh = bits * j - 2;
  const tq_u32 mask = (((1u << bits) - 1u) << 2) * 0x01010101u;
  return (sh < 0 ? x << -sh : x >> sh) & mask;
}
/* The table entry whose offset is byte k of offs. */
__device__ __forceinline__ tq_u32 tq_look(const tq_u32 *tab, tq_u32 offs, int k) {
  return *(const tq_u32 *)((const char *)tab + __byte_perm(offs, 0u, 0x4440u + k));
}
/* The centroid pair of mma k slots 2c + 8 half and 2c + 8 half + 1 in
 * step kb, from a lane's key words w (tq_key_chan's order). */
__device__ __forceinline__ tq_u32 tq_key_pair(const tq_u32 (*tab)[1 << TQ_KB], const tq_u32 *w, int kb,
                                              int half) {
#if TQ_KB == 4
  const tq_u32 x = w[kb / 2];
  const int k = (2 * kb) % 4 + half; /* byte 2 kb + half */
  return tq_merge(tq_look(tab[0], tq_offsets(x, 0, 4), k), tq_look(tab[1], tq_offsets(x, 1, 4), k));
#else
  const tq_u32 x = w[kb / 4];
  const int k = kb % 4; /* byte kb, indices 2 half and 2 half + 1 */
  return tq_merge(tq_look(tab[0], tq_offsets(x, 2 * half, 2), k),
                  tq_look(tab[1], tq_offsets(x, 2 * half + 1, 2), k));
#endif
}
/* The transpose of an 8 x 8 matrix of halves held one pair a lane (row
 * lane / 4, columns 2 (lane % 4) and + 1), in the same layout. */
__device__ __forceinline__ tq_u32 tq_trans8(tq_u32 x) {
  tq_u32 y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}
#endif

struct tq_fast_smem {
  /* per warp, two chunks: the one computed and the one in flight.  Slot
   * words are odd in number, so lane t reading token t's word w is free of
   * bank conflicts. */
  tq_u32 k[TQ_WARPS][2][TQ_CHUNK * TQ_KSW];
  tq_u32 v[TQ_WARPS][2][TQ_CHUNK * TQ_VSW];
#if TQ_DMMA
  tq_u32 kh[2][1 << TQ_KB], vh[2][1 << TQ_VB]; /* centroids as (c, 0) and (0, c) */
  float qs[TQ_RQ];                       /* largest |q| of each row */
#else
  float4 q[TQ_D]; /* q[j]: channel j of the block's four rows */
  float kcb[1 << TQ_KB];
  float vcb[1 << TQ_VB];
#endif
  float rot[TQ_RQ][TQ_D];
  float m[TQ_WARPS][TQ_RQ];
  float l[TQ_WARPS][TQ_RQ];
};

/* The shared-memory address of a generic pointer into shared memory. */
__device__ __forceinline__ unsigned tq_smem_addr(const void *p) {
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

/* 4-byte asynchronous copy global -> shared (sm_80+), plain copy before. */
__device__ __forceinline__ void tq_cp4(tq_u32 *dst, const tq_u32 *src) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(tq_smem_addr(dst)), "l"(src)
               : "memory");
#else
  *dst = *src;
#endif
}
/* 16-byte asynchronous copy (both addresses 16-byte aligned), L2 only. */
__device__ __forceinline__ void tq_cp16(tq_u32 *dst, const tq_u32 *src) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(tq_smem_addr(dst)), "l"(src)
               : "memory");
#else
  *(uint4 *)dst = *(const uint4 *)src;
#endif
}
/* One warp copies m words src -> dst (dst 16-byte aligned): in 16-byte
 * pieces where the source is aligned too and m is whole pieces (a whole
 * chunk of a cache whose slot run starts aligned), word by word else. */
__device__ __forceinline__ void tq_copy_run(tq_u32 *dst, const tq_u32 *src, int m, int lane) {
  if ((((size_t)src & 15u) | ((unsigned)m & 3u)) == 0)
    for (int i = 4 * lane; i < m; i += 128) tq_cp16(dst + i, src + i);
  else
    for (int i = lane; i < m; i += 32) tq_cp4(dst + i, src + i);
}
__device__ __forceinline__ void tq_cp_commit(void) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
/* Waits until at most one group (the chunk in flight) is pending. */
__device__ __forceinline__ void tq_cp_wait_one(void) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

/* One warp copies the slots of tokens t0 .. t0+n-1 (t0 a multiple of 32)
 * into dst: contiguous caches and the pages of paged ones are runs of
 * whole slots, so lanes copy consecutive words. */
__device__ __forceinline__ void tq_stage(const tq_kargs &a, void *base, int words,
                                         int b, int h, int t0, int n, tq_u32 *dst) {
  const int lane = threadIdx.x & 31;
#if !TQ_PAGED || TQ_BLOCK % 32 == 0
  tq_copy_run(dst, (const tq_u32 *)tq_slot(a, base, words * 4, b, h, t0), n * words, lane);
#else
  for (int p = 0; p < n; p += TQ_BLOCK)
    tq_copy_run(dst + p * words, (const tq_u32 *)tq_slot(a, base, words * 4, b, h, t0 + p),
                min(TQ_BLOCK, n - p) * words, lane);
#endif
}

__device__ void tq_attend_fast(const tq_kargs &a) {
  __shared__ __align__(16) tq_fast_smem s;
  const int split = blockIdx.x, splits = a.splits, b = blockIdx.z;
  const int rows = a.n_tokens * TQ_G, tiles = (rows + TQ_RQ - 1) / TQ_RQ;
  const int h = blockIdx.y / tiles, r0 = (blockIdx.y % tiles) * TQ_RQ;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int len = a.seq_lens[b];
  const tq_u16 *perm = tq_perm(a, h);
  const tq_act *q = (const tq_act *)a.q;

  /* Slices are whole chunks, so chunks start on multiples of 32 (page
   * boundaries of paged caches line up with them). */
  int slice = (len + splits - 1) / splits;
  slice = (slice + TQ_CHUNK - 1) / TQ_CHUNK * TQ_CHUNK;
  const int t_begin = min(len, split * slice), t_end = min(len, t_begin + slice);
  const int chunks = (t_end - t_begin + TQ_CHUNK - 1) / TQ_CHUNK;
  /* The first chunk's copy goes out before anything else: its latency
   * passes under the query rows' rotation. */
  if (warp < chunks) {
    const int t0 = t_begin + warp * TQ_CHUNK, n = min(TQ_CHUNK, t_end - t0);
    tq_stage(a, a.k_cache, TQ_KSW, b, h, t0, n, s.k[warp][0]);
    tq_stage(a, a.v_cache, TQ_VSW, b, h, t0, n, s.v[warp][0]);
  }
  tq_cp_commit();

#if TQ_DMMA
  if (tid < (1 << TQ_KB)) {
    s.kh[0][tid] = tq_h2(tq_k_cb[tid], 0.f);
    s.kh[1][tid] = tq_h2(0.f, tq_k_cb[tid]);
  }
  if (tid < (1 << TQ_VB)) {
    s.vh[0][tid] = tq_h2(tq_v_cb[tid], 0.f);
    s.vh[1][tid] = tq_h2(0.f, tq_v_cb[tid]);
  }
#else
  if (tid < (1 << TQ_KB)) s.kcb[tid] = tq_k_cb[tid];
  if (tid < (1 << TQ_VB)) s.vcb[tid] = tq_v_cb[tid];
#endif
  /* Warp r rotates query row r (zero past the last row) on its own, no
   * block barrier: lane i holds channels TQ_QPL i onwards, so the
   * Walsh-Hadamard stages below TQ_QPL are in registers, the others one
   * shuffle each. */
  {
    const int row = r0 + warp;
    float x[TQ_QPL];
    if (row < rows) {
      const size_t at = (((size_t)b * a.n_tokens + row / TQ_G) * a.kv_heads * TQ_G +
                         (size_t)h * TQ_G + row % TQ_G) * TQ_D;
#pragma unroll
      for (int i = 0; i < TQ_QPL; i++) {
        const int j = TQ_QPL * lane + i;
        x[i] = a.sm_scale * TQ_MAIN_SIGNS[j] * tq_load(q, at + tq_channel(perm, j));
      }
    } else {
#pragma unroll
      for (int i = 0; i < TQ_QPL; i++) x[i] = 0.f;
    }
    tq_wht_lanes<TQ_QPL, 32>(x, lane);
    float mx = 0.f;
#pragma unroll
    for (int i = 0; i < TQ_QPL; i++) {
      x[i] *= rsqrtf((float)TQ_D);
      s.rot[warp][TQ_QPL * lane + i] = x[i];
      mx = fmaxf(mx, fabsf(x[i]));
    }
#if TQ_DMMA
    mx = tq_warp_max(mx); /* the row's unit in f16 (1 for a zero row) */
    if (lane == 0) s.qs[warp] = mx > 0.f ? mx : 1.f;
#endif
  }
  __syncthreads();
#if TQ_DMMA
  /* B fragments of Q^T: column g is query row g (columns past TQ_RQ zero). */
  const int g = lane >> 2, c = lane & 3;
  tq_u32 qb[TQ_TKB][2];
  for (int kb = 0; kb < TQ_TKB; kb++)
    for (int e = 0; e < 2; e++) {
      const float inv = g < TQ_RQ ? 1.f / s.qs[g] : 0.f;
      const float *qr = s.rot[g < TQ_RQ ? g : 0];
      qb[kb][e] = tq_h2(inv * qr[tq_key_chan(kb, c, 2 * e)], inv * qr[tq_key_chan(kb, c, 2 * e + 1)]);
    }
  /* The lane's score columns: query rows 2c and 2c + 1 (dead past TQ_RQ:
   * no context). */
  float qs[2];
  int ctx[2];
  for (int e = 0; e < 2; e++) {
    const int r = 2 * c + e, row = r0 + r;
    qs[e] = r < TQ_RQ ? s.qs[r] : 0.f;
    ctx[e] = r < TQ_RQ ? tq_row_context(a, len, row, rows) : 0;
  }
  /* Lane state: rows 2c and 2c + 1's maxima and partial sums, and O^T's
   * accumulators, whose unit is `unit` (the true output is o * unit). */
  float m[2] = {-TQ_INF, -TQ_INF}, l[2] = {0.f, 0.f}, unit = 0.f, o[TQ_TMT][4];
  for (int mt = 0; mt < TQ_TMT; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.f;
#else
  for (int j = tid; j < TQ_D; j += blockDim.x)
    s.q[j] = make_float4(s.rot[0][j], s.rot[1][j], s.rot[2][j], s.rot[3][j]);
  int ctx[TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) ctx[r] = tq_row_context(a, len, r0 + r, rows);
  __syncthreads();
  const int sub = lane / TQ_VW, word = lane % TQ_VW;

  float m[TQ_RQ], l[TQ_RQ], acc[TQ_VCH][TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) {
    m[r] = -TQ_INF;
    l[r] = 0.f;
    for (int k = 0; k < TQ_VCH; k++) acc[k][r] = 0.f;
  }
#endif
  int buf = 0;
  for (int chunk = warp; chunk < chunks; chunk += TQ_WARPS) {
    const int t0 = t_begin + chunk * TQ_CHUNK, n = min(TQ_CHUNK, t_end - t0);
    if (chunk + TQ_WARPS < chunks) {
      const int t1 = t0 + TQ_WARPS * TQ_CHUNK, n1 = min(TQ_CHUNK, t_end - t1);
      tq_stage(a, a.k_cache, TQ_KSW, b, h, t1, n1, s.k[warp][buf ^ 1]);
      tq_stage(a, a.v_cache, TQ_VSW, b, h, t1, n1, s.v[warp][buf ^ 1]);
    }
    tq_cp_commit();
    tq_cp_wait_one();
    __syncwarp();

#if TQ_DMMA
    const tq_u32 *kc = s.k[warp][buf], *vc = s.v[warp][buf];
    /* S^T = K Q^T, m tile mt = tokens 16 mt .. 16 mt + 15: the lane's A
     * rows are tokens 16 mt + g and 16 mt + g + 8, its accumulators their
     * scores against query rows 2c and 2c + 1. */
    float st[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
      st[mt][0] = st[mt][1] = st[mt][2] = st[mt][3] = 0.f;
      tq_u32 w0[TQ_LW(TQ_KBL)], w1[TQ_LW(TQ_KBL)];
      tq_lane_words<TQ_KBL>(kc + (16 * mt + g) * TQ_KSW + TQ_K_IDX / 4, TQ_KBL * c, w0);
      tq_lane_words<TQ_KBL>(kc + (16 * mt + g + 8) * TQ_KSW + TQ_K_IDX / 4, TQ_KBL * c, w1);
#pragma unroll
      for (int kb = 0; kb < TQ_TKB; kb++)
        tq_mma_h(st[mt], tq_key_pair(s.kh, w0, kb, 0), tq_key_pair(s.kh, w1, kb, 0),
                 tq_key_pair(s.kh, w0, kb, 1), tq_key_pair(s.kh, w1, kb, 1), qb[kb][0], qb[kb][1]);
    }
    /* Online softmax of rows 2c and 2c + 1 over the lane's four tokens and
     * those of the lanes with the same c. */
    float mx[2] = {-TQ_INF, -TQ_INF};
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int hi = 0; hi < 2; hi++) {
        const int t = 16 * mt + 8 * hi + g;
        const float ksc = __int_as_float((int)kc[t * TQ_KSW + TQ_K_SCALE / 4]);
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float x = t < n && t0 + t < ctx[e] ? st[mt][2 * hi + e] * ksc * qs[e] : -TQ_INF;
          st[mt][2 * hi + e] = x;
          mx[e] = fmaxf(mx[e], x);
        }
      }
    /* The chunk's largest value scale becomes the accumulators' unit. */
    const float vmax = tq_warp_max(lane < n ? __int_as_float((int)vc[lane * TQ_VSW + TQ_V_SCALE / 4]) : 0.f);
    const float nunit = vmax > 0.f ? vmax : unit, vinv = vmax > 0.f ? 1.f / vmax : 0.f;
    const float ufix = nunit > 0.f ? unit / nunit : 1.f;
    unit = nunit;
    float f[2]; /* O^T's factor for rows 2c and 2c + 1: its columns */
#pragma unroll
    for (int e = 0; e < 2; e++) {
      mx[e] = fmaxf(mx[e], __shfl_xor_sync(TQ_FULL, mx[e], 4));
      mx[e] = fmaxf(mx[e], __shfl_xor_sync(TQ_FULL, mx[e], 8));
      mx[e] = fmaxf(mx[e], __shfl_xor_sync(TQ_FULL, mx[e], 16));
      const float nm = fmaxf(m[e], mx[e]);
      const float corr = m[e] == -TQ_INF ? 1.f : __expf(m[e] - nm);
      m[e] = nm;
      l[e] *= corr;
      f[e] = corr * ufix;
    }
    /* P^T as B fragments, k step kk = tokens 16 kk .. 16 kk + 15: the
     * lane's weights (tokens g, g + 8; rows 2c, 2c + 1) times value scales,
     * as half pairs, are the 8 x 8 blocks of P^T's transpose. */
    tq_u32 pb[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int hi = 0; hi < 2; hi++) {
        const int t = 16 * mt + 8 * hi + g;
        const float vs = __int_as_float((int)vc[t * TQ_VSW + TQ_V_SCALE / 4]) * vinv;
        float p[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
          /* dead tokens' slots may hold anything: select, never multiply */
          p[e] = st[mt][2 * hi + e] == -TQ_INF ? 0.f : __expf(st[mt][2 * hi + e] - m[e]);
          l[e] += p[e];
          p[e] = p[e] > 0.f ? p[e] * vs : 0.f;
        }
        pb[mt][hi] = tq_trans8(tq_h2(p[0], p[1]));
      }
#pragma unroll
    for (int mt = 0; mt < TQ_TMT; mt++) {
      o[mt][0] *= f[0];
      o[mt][1] *= f[1];
      o[mt][2] *= f[0];
      o[mt][3] *= f[1];
    }
    /* O^T += V^T P^T: A rows are value channels, columns the tokens
     * 2c, 2c+1 (a0, a1) and 2c+8, 2c+9 (a2, a3) of the k step. */
#pragma unroll
    for (int kk = 0; kk < 2; kk++) {
      tq_u32 w[4][TQ_LW(TQ_VBL)]; /* tokens 2c, 2c+1, 2c+8, 2c+9 */
#pragma unroll
      for (int t = 0; t < 4; t++)
        tq_lane_words<TQ_VBL>(vc + (16 * kk + 2 * c + (t & 1) + 8 * (t >> 1)) * TQ_VSW + TQ_V_IDX / 4,
                              TQ_VBL * g, w[t]);
#pragma unroll
      for (int mt = 0; mt < TQ_TMT; mt++) {
        const int by = mt / TQ_TMB, lo = 2 * (mt % TQ_TMB), k = by % 4;
        tq_u32 e[4][2];
#pragma unroll
        for (int t = 0; t < 4; t++) {
          /* tokens 2c + 1 and 2c + 9 take the pairs' high halves */
          const tq_u32 *tab = s.vh[t & 1];
          e[t][0] = tq_look(tab, tq_offsets(w[t][by / 4], lo, TQ_VB), k);
          e[t][1] = tq_look(tab, tq_offsets(w[t][by / 4], lo + 1, TQ_VB), k);
        }
        tq_mma_h(o[mt], tq_merge(e[0][0], e[1][0]), tq_merge(e[0][1], e[1][1]),
                 tq_merge(e[2][0], e[3][0]), tq_merge(e[2][1], e[3][1]), pb[kk][0], pb[kk][1]);
      }
    }
#else
    /* Scores: lane t scores token t0 + t against the four rows. */
    const tq_u32 *kt = s.k[warp][buf] + lane * TQ_KSW;
    float4 d = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < TQ_KW; w++) {
      const tq_u32 x = kt[w];
#pragma unroll
      for (int k = 0; k < 32 / TQ_KB; k++) {
        const float cv = s.kcb[(x >> (k * TQ_KB)) & ((1u << TQ_KB) - 1u)];
        const float4 qq = s.q[w * (32 / TQ_KB) + k];
        d.x += qq.x * cv;
        d.y += qq.y * cv;
        d.z += qq.z * cv;
        d.w += qq.w * cv;
      }
    }
    const int t = t0 + lane;
    const float ksc = lane < n ? __int_as_float((int)kt[TQ_K_SCALE / 4]) : 0.f;
    const float vsc = lane < n ? __int_as_float((int)s.v[warp][buf][lane * TQ_VSW + TQ_V_SCALE / 4]) : 0.f;
    const float dot[TQ_RQ] = {d.x, d.y, d.z, d.w};
    float pv[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) {
      const float sc = lane < n && t < ctx[r] ? ksc * dot[r] : -TQ_INF;
      const float nm = fmaxf(m[r], tq_warp_max(sc));
      const float p = sc == -TQ_INF ? 0.f : __expf(sc - nm);
      const float corr = m[r] == -TQ_INF ? 1.f : __expf(m[r] - nm);
      m[r] = nm;
      l[r] = l[r] * corr + p;
      pv[r] = p * vsc;
      for (int k = 0; k < TQ_VCH; k++) acc[k][r] *= corr;
    }

    /* Values: lane (sub, word) takes word `word` of tokens sub, sub + TPS, ... */
    const tq_u32 *vt = s.v[warp][buf];
    for (int st = 0; st < n; st += TQ_VTPS) {
      const int tt = st + sub;
      const tq_u32 x = vt[tt * TQ_VSW + word];
      float p[TQ_RQ];
      for (int r = 0; r < TQ_RQ; r++) p[r] = __shfl_sync(TQ_FULL, pv[r], tt);
#pragma unroll
      for (int k = 0; k < TQ_VCH; k++) {
        const float cv = s.vcb[(x >> (k * TQ_VB)) & ((1u << TQ_VB) - 1u)];
        for (int r = 0; r < TQ_RQ; r++) acc[k][r] += p[r] * cv;
      }
    }
#endif
    __syncwarp(); /* the next iteration's copy reuses this buffer */
    buf ^= 1;
  }

  tq_let_dependents_launch();
#if TQ_DMMA
  /* Merge: the partial sums of the lanes with the same c, then the warps. */
  for (int e = 0; e < 2; e++)
    for (int x = 4; x < 32; x <<= 1) l[e] += __shfl_xor_sync(TQ_FULL, l[e], x);
  __syncthreads(); /* every warp is done with its buffers: reuse them */
  float *accw = (float *)s.k; /* [TQ_WARPS][TQ_RQ][TQ_D] */
  for (int e = 0; e < 2; e++) {
    const int r = 2 * c + e;
    if (r >= TQ_RQ) break;
    for (int mt = 0; mt < TQ_TMT; mt++)
      for (int hi = 0; hi < 2; hi++)
        accw[(warp * TQ_RQ + r) * TQ_D + tq_value_chan(mt, g, hi)] = o[mt][2 * hi + e] * unit;
  }
  if (g == 0)
    for (int e = 0; e < 2 && 2 * c + e < TQ_RQ; e++) {
      s.m[warp][2 * c + e] = m[e];
      s.l[warp][2 * c + e] = l[e];
    }
#else
  /* Merge: the token groups of a warp, then the warps. */
  for (int r = 0; r < TQ_RQ; r++) {
    l[r] = tq_warp_sum(l[r]);
    for (int o = TQ_VW; o < 32; o <<= 1)
      for (int k = 0; k < TQ_VCH; k++) acc[k][r] += __shfl_xor_sync(TQ_FULL, acc[k][r], o);
  }
  __syncthreads(); /* every warp is done with its buffers: reuse them */
  float *accw = (float *)s.k; /* [TQ_WARPS][TQ_RQ][TQ_D] */
  if (lane < TQ_VW)
    for (int r = 0; r < TQ_RQ; r++)
      for (int k = 0; k < TQ_VCH; k++)
        accw[(warp * TQ_RQ + r) * TQ_D + word * TQ_VCH + k] = acc[k][r];
  if (lane == 0)
    for (int r = 0; r < TQ_RQ; r++) {
      s.m[warp][r] = m[r];
      s.l[warp][r] = l[r];
    }
#endif
  __syncthreads();
  float *ws = (float *)a.workspace;
  for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r;
    if (row >= rows) break;
    float mx = -TQ_INF, e[TQ_WARPS], lt = 0.f;
    for (int w = 0; w < TQ_WARPS; w++) mx = fmaxf(mx, s.m[w][r]);
    for (int w = 0; w < TQ_WARPS; w++) {
      e[w] = s.m[w][r] == -TQ_INF ? 0.f : __expf(s.m[w][r] - mx);
      lt += e[w] * s.l[w][r];
    }
    float *part = ws + ((((size_t)b * a.kv_heads + h) * rows + row) * splits + split) * TQ_PART;
    if (tid == 0) {
      part[0] = mx;
      part[1] = lt;
    }
    for (int j = tid; j < TQ_D; j += blockDim.x) {
      float x = 0.f;
      for (int w = 0; w < TQ_WARPS; w++) x += e[w] * accw[(w * TQ_RQ + r) * TQ_D + j];
      part[2 + j] = x;
    }
  }
}
#endif

/* ---- prefill on tensor cores --------------------------------------------
 * Prefill of the fast-path variants in f16 or bf16: flash attention with
 * mma.sync m16n8k16 (f32 accumulators) in the rotated basis.  Grid: one
 * block per (row tile of TQ_MROWS query rows, kv head, sequence), the
 * heaviest row tiles (longest causal context) first; 256 threads, eight
 * warps of 32 rows (two m tiles each), one block an SM (255 registers;
 * dynamic shared memory about 189 KB at head_dim 128, or 155 KB and no
 * ping-pong, below, where a block may not have that much), one context
 * split, and the block rotates its output back and writes it: no
 * workspace, no reduce kernel.
 *
 * The context goes by in tiles of TQ_MTOK tokens.  The whole block expands
 * each tile once from its packed slots into shared f16/bf16 centroids (K
 * and V tiles of [token][channel]) that all eight warps read with
 * ldmatrix, so an expansion serves 256 rows.  With three tile buffers and
 * two slot buffers a tile takes one barrier: while the warps compute, the
 * block copies the slots of the tile after next (sm_90: a few bulk copies
 * issued by one warp, completion on an mbarrier; else, and for runs not
 * on 16 bytes, every thread's cp.async) and expands the next one, each
 * warp placing its expansion units between its own mma
 * (keys among the k steps of S = Q K^T, values among those of O += P V)
 * for independent ALU work under the tensor pipe's latency.  Warps 0-3
 * compute a tile as QK then softmax and PV; warps 4-7 run a step behind
 * (softmax and PV of the previous tile, then QK of this one), so on each
 * scheduler one warp's softmax meets the other's tensor work.  The key
 * scale multiplies the f32 scores, the value scale the probabilities; the
 * tiles hold plain centroids.  (Four warps a block, two blocks an SM, one
 * buffer and two barriers a tile measured 0.664 ms for the 4K prompt on
 * an H100, latency-bound: 5.2 cycles a warp between issues at 8 warps an
 * SM.  This layout measures 0.625 ms, the ping-pong worth 2% of it; a warp
 * still issues once every 6.1 cycles: bench/RESULTS.md.)
 *
 * Expansion needs no table in shared memory: the codebook's f16 high and
 * low bytes sit in eight registers, and one prmt looks up four 3-bit
 * indices at once (4-bit: both halves of the codebook, picked per byte by
 * the index's top bit through prmt's sign-replicate mode; 2-bit indices
 * are first spread to nibbles).  A 32-bit word of 4-bit indices becomes 16
 * bytes of centroids in about 20 instructions and one 16-byte store.
 *
 * Both rotations run on the tensor cores too: the block builds M = sqrt(d) R
 * (entries +-1, exact in f16/bf16) over the K/V tiles before the first
 * tile and again after the last; q R^T = q M^T / sqrt(d) takes q as it
 * is (exact products, f32 sums), the softmax scale and log2(e) folded in,
 * and stays in shared memory as halves for ldmatrix (scores are in base 2,
 * ex2); the output O R is (O / l) M / sqrt(d) with O / l rounded to halves
 * as the A fragment, like P.  (Decode through a 64-row version of this kernel,
 * splitting the context, measured 3.4x slower than the fast path at B = 8,
 * 16K: with 4 live rows a tile the expansion is not amortized; see
 * bench/RESULTS.md.) */
#define TQ_MMA (TQ_FAST && TQ_DTYPE != TQ_DTYPE_F32)
#if TQ_MMA
#define TQ_MWARPS 8 /* warps of a block, 32 query rows each */
#define TQ_MTHREADS (32 * TQ_MWARPS)
#define TQ_MROWS (32 * TQ_MWARPS) /* query rows of a block */
#define TQ_MTOK 64 /* cache tokens of a tile */
#define TQ_MLD (TQ_D + 8) /* halves per shared row: +16 bytes keeps ldmatrix rows on distinct banks */
#define TQ_MKB (TQ_D / 16) /* k steps of QK^T over the head dimension */
#define TQ_MNT (TQ_MTOK / 8) /* n tiles of scores */
#define TQ_MVT (TQ_D / 8)    /* n tiles of the output */
#define TQ_MUNITS (TQ_MTOK * TQ_D / 8) /* 8-channel runs of a tile */
#define TQ_MSTAGE (TQ_MTOK / TQ_MWARPS) /* tokens a warp copies per tile */
#define TQ_LOG2E 1.4426950408889634f

/* Dynamic shared memory; backends/cuda_plan.c (mma_shared_bytes) mirrors
 * this layout.  The third tile buffer, last, is there only where the
 * device allows it (the warps' ping-pong needs it); the kernel reads which
 * from the size it got, and traps below two buffers. */
struct tq_mma_tile {
  tq_u16 k[TQ_MTOK][TQ_MLD]; /* key centroids of a tile */
  tq_u16 v[TQ_MTOK][TQ_MLD]; /* value centroids */
};
struct tq_mma_smem {
  tq_u16 q[TQ_MROWS][TQ_MLD];    /* rotated, scaled rows */
  tq_u32 sk[2][TQ_MTOK * TQ_KSW]; /* packed key slots, one and two tiles ahead */
  tq_u32 sv[2][TQ_MTOK * TQ_VSW]; /* packed value slots */
  float ksc[3][TQ_MTOK], vsc[3][TQ_MTOK];
  tq_u32 tab[2][8]; /* keys, values: high bytes of centroids 0-15, then low bytes */
  unsigned long long bar[2]; /* sm_90: completion of the bulk copies into sk[i], sv[i] */
  tq_mma_tile kv[3]; /* tiles it - 1 (ping-pong only), it (computed), it + 1 (expanded) */
};

#if TQ_DTYPE == TQ_DTYPE_F16
__device__ __forceinline__ tq_u16 tq_to_half(float x) { return tq_f2h(x); }
__device__ __forceinline__ float tq_half_to_f(tq_u16 x) { return tq_h2f(x); }
__device__ __forceinline__ tq_u32 tq_pack2(float lo, float hi) {
  tq_u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#else
__device__ __forceinline__ tq_u16 tq_to_half(float x) { return tq_f2bf(x); }
__device__ __forceinline__ float tq_half_to_f(tq_u16 x) { return tq_bf2f(x); }
__device__ __forceinline__ tq_u32 tq_pack2(float lo, float hi) {
  tq_u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#endif

/* Four 8x8 b16 matrices from shared memory (addr: a shared-window
 * address): lanes 8i .. 8i+7 name the rows of matrix i, which lands in
 * r[i]; trans transposes each. */
__device__ __forceinline__ void tq_ldm4(tq_u32 *r, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr) : "memory");
}
__device__ __forceinline__ void tq_ldm4t(tq_u32 *r, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr) : "memory");
}

/* One k step of a warp's product over two 16-row m tiles, the A fragments
 * a0 and a1 in registers: for each of np2 pairs of 8-column n tiles, the B
 * fragments by ldmatrix from b + np * nstride (trans: stored k-major, as
 * values and M are), then four mma into acc[i][2 np + half], accumulator
 * pairs alternating so that back-to-back mma never share one.  first
 * starts the sums.  Every product of the prefill is a loop of these: q M^T
 * and Q K^T, P V and (O / l) M. */
template <int np2, bool trans>
__device__ __forceinline__ void tq_mma_kstep(float (&acc)[2][2 * np2][4], const tq_u32 *a0,
                                             const tq_u32 *a1, unsigned b, unsigned nstride,
                                             bool first) {
#pragma unroll
  for (int np = 0; np < np2; np++) {
    tq_u32 f[4];
    if (trans)
      tq_ldm4t(f, b + np * nstride);
    else
      tq_ldm4(f, b + np * nstride);
    if (first) {
      tq_mma0(acc[0][2 * np], a0, f[0], f[1]);
      tq_mma0(acc[1][2 * np], a1, f[0], f[1]);
      tq_mma0(acc[0][2 * np + 1], a0, f[2], f[3]);
      tq_mma0(acc[1][2 * np + 1], a1, f[2], f[3]);
    } else {
      tq_mma(acc[0][2 * np], a0, f[0], f[1]);
      tq_mma(acc[1][2 * np], a1, f[0], f[1]);
      tq_mma(acc[0][2 * np + 1], a0, f[2], f[3]);
      tq_mma(acc[1][2 * np + 1], a1, f[2], f[3]);
    }
  }
}

/* prmt.b32: byte k of the result is byte s[4k+2:4k] of {b, a}, or, where
 * s[4k+3] is set, that byte's top bit replicated. */
__device__ __forceinline__ tq_u32 tq_prmt(tq_u32 a, tq_u32 b, tq_u32 s) {
  tq_u32 r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
}
__device__ __forceinline__ float tq_ex2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
/* Waits for every cp.async group of this thread. */
__device__ __forceinline__ void tq_cp_wait_all(void) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

/* The lookup table of a codebook of width bits (<= 4): words 0-3 hold the
 * high bytes of the f16/bf16 centroids 0-15, four to a word, words 4-7
 * the low bytes; centroids past the codebook are 0. */
__device__ __forceinline__ void tq_mma_table(const float *cb, int bits, tq_u32 *tab) {
  for (int w = 0; w < 8; w++) tab[w] = 0u;
  for (int e = 0; e < (1 << bits); e++) {
    const tq_u32 h = tq_to_half(cb[e]);
    tab[e / 4] |= (h >> 8) << (8 * (e % 4));
    tab[4 + e / 4] |= (h & 0xFFu) << (8 * (e % 4));
  }
}

/* Eight indices, nibble k of x (4-bit, or 2-bit spread to nibbles), to
 * their centroids: 16 bytes, index k in half k. */
template <int bits>
__device__ __forceinline__ uint4 tq_mma_lookup8(tq_u32 x, const tq_u32 *t) {
  const tq_u32 s0 = x & 0x7777u, s1 = (x >> 16) & 0x7777u; /* low 3 bits, 4 a selector */
  tq_u32 h0 = tq_prmt(t[0], t[1], s0), l0 = tq_prmt(t[4], t[5], s0);
  tq_u32 h1 = tq_prmt(t[0], t[1], s1), l1 = tq_prmt(t[4], t[5], s1);
  if (bits == 4) {
    /* Bytes whose index has bit 3 set come from centroids 8-15: that bit
     * is the top bit of a byte of x (odd nibbles) or of x << 4 (even). */
    const tq_u32 xs = x << 4;
    const tq_u32 m0 = tq_prmt(xs, x, 0xD9C8u), m1 = tq_prmt(xs, x, 0xFBEAu);
    h0 = (h0 & ~m0) | (tq_prmt(t[2], t[3], s0) & m0);
    l0 = (l0 & ~m0) | (tq_prmt(t[6], t[7], s0) & m0);
    h1 = (h1 & ~m1) | (tq_prmt(t[2], t[3], s1) & m1);
    l1 = (l1 & ~m1) | (tq_prmt(t[6], t[7], s1) & m1);
  }
  uint4 r;
  r.x = tq_prmt(l0, h0, 0x5140u);
  r.y = tq_prmt(l0, h0, 0x7362u);
  r.z = tq_prmt(l1, h1, 0x5140u);
  r.w = tq_prmt(l1, h1, 0x7362u);
  return r;
}

/* Expanding a tile's packed slots (stage: TQ_MTOK slots of sw words,
 * indices from word idx) into dst, 8 channels a unit: this thread's unit
 * e of TQ_MUNITS / TQ_MTHREADS, given the codebook's table words t.  The
 * prefill loop spreads the units over its mma loops. */
#define TQ_MUPT (TQ_MUNITS / TQ_MTHREADS) /* units a thread expands per cache and tile */
template <int bits>
__device__ __forceinline__ void tq_mma_unit(const tq_u32 *stage, int sw, int idx, const tq_u32 *t,
                                            tq_u16 (*dst)[TQ_MLD], int e) {
  const int j = threadIdx.x % (TQ_D / 8);
  const int tok = threadIdx.x / (TQ_D / 8) + e * (TQ_MTHREADS / (TQ_D / 8));
  tq_u32 x;
  if (bits == 4) {
    x = stage[tok * sw + idx + j];
  } else { /* 2-bit: half a word; spread its 8 indices to nibbles */
    x = (stage[tok * sw + idx + j / 2] >> (16 * (j & 1))) & 0xFFFFu;
    x = (x | (x << 8)) & 0x00FF00FFu;
    x = (x | (x << 4)) & 0x0F0F0F0Fu;
    x = (x | (x << 2)) & 0x33333333u;
  }
  *(uint4 *)&dst[tok][8 * j] = tq_mma_lookup8<bits>(x, t);
}
__device__ __forceinline__ void tq_mma_tab(const tq_u32 *tab, tq_u32 *t) {
  *(uint4 *)&t[0] = *(const uint4 *)&tab[0];
  *(uint4 *)&t[4] = *(const uint4 *)&tab[4];
}
/* The n live tokens' scales to sc (0 past them: their slots are stale, and
 * a dead token's weight must stay a true 0). */
__device__ __forceinline__ void tq_mma_scales(const tq_u32 *stage, int sw, int scale, int n, float *sc) {
  if (threadIdx.x < TQ_MTOK)
    sc[threadIdx.x] = (int)threadIdx.x < n ? __int_as_float((int)stage[threadIdx.x * sw + scale]) : 0.f;
}
/* All of this thread's units of a tile, the table words from tab. */
template <int bits>
__device__ __forceinline__ void tq_mma_units(const tq_u32 *stage, int sw, int idx, const tq_u32 *tab,
                                             tq_u16 (*dst)[TQ_MLD]) {
  tq_u32 t[8];
  tq_mma_tab(tab, t);
#pragma unroll
  for (int e = 0; e < TQ_MUPT; e++) tq_mma_unit<bits>(stage, sw, idx, t, dst, e);
}
/* The whole tile at once, scales included. */
template <int bits>
__device__ __forceinline__ void tq_mma_expand(const tq_u32 *stage, int sw, int idx, int scale,
                                              const tq_u32 *tab, int n, tq_u16 (*dst)[TQ_MLD],
                                              float *sc) {
  tq_mma_units<bits>(stage, sw, idx, tab, dst);
  tq_mma_scales(stage, sw, scale, n, sc);
}

/* Async copies to a shared-window address. */
__device__ __forceinline__ void tq_cp4s(unsigned dst, const void *src) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void tq_cp16s(unsigned dst, const void *src) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#endif
}

/* Warp w copies the slots of tokens t0 + 16 w .. of the tile's n (t0 a
 * multiple of TQ_MTOK) to dst (a shared-window address); every thread
 * commits one cp.async group.  The slots come in runs of whole slots:
 * pages of a paged cache, 16 tokens of a contiguous one (head: slot 0 of
 * the sequence's kv head). */
#if TQ_PAGED && TQ_BLOCK < TQ_MSTAGE
#define TQ_MRUN TQ_BLOCK
#else
#define TQ_MRUN TQ_MSTAGE
#endif
template <int words>
__device__ __forceinline__ void tq_mma_stage(const tq_kargs &a, void *base, const tq_u8 *head,
                                             int b, int h, int t0, int n, unsigned dst) {
  const int s0 = TQ_MSTAGE * (threadIdx.x >> 5), lane = threadIdx.x & 31;
  const int m = min(TQ_MSTAGE, n - s0);
#pragma unroll
  for (int p = 0; p < TQ_MSTAGE; p += TQ_MRUN) {
    if (p >= m) break;
#if TQ_PAGED
    (void)head;
    const tq_u8 *src = tq_slot(a, base, words * 4, b, h, t0 + s0 + p);
#else
    (void)a, (void)base, (void)b, (void)h;
    const tq_u8 *src = head + (size_t)(t0 + s0 + p) * (words * 4);
#endif
    const unsigned to = dst + 4u * (unsigned)((s0 + p) * words);
    const int w = min(TQ_MRUN, m - p) * words; /* words of the run */
    if ((((size_t)src & 15u) | ((unsigned)w & 3u)) == 0) {
#pragma unroll
      for (int i = 0; i < (TQ_MRUN * words / 4 + 31) / 32; i++) {
        const int k = lane + 32 * i;
        if (k < w / 4) tq_cp16s(to + 16u * k, src + 16 * k);
      }
    } else {
      for (int k = lane; k < w; k += 32) tq_cp4s(to + 4u * k, src + 4 * k);
    }
  }
  tq_cp_commit();
}

/* sm_90: a tile's slots by bulk copies (cp.async.bulk, completion counted
 * on an mbarrier) instead of every thread's cp.async: a contiguous cache's
 * tile is one run of slots, a paged cache's one run a page (or 32 tokens
 * of pages of 96, 160, ...).  Runs must start and end on 16 bytes: the
 * cache's base address decides for the whole launch, the tile's length
 * for the last one, and tiles that fail take tq_mma_stage. */
#if !TQ_PAGED
#define TQ_MBULK TQ_MTOK
#elif TQ_MTOK % TQ_BLOCK == 0
#define TQ_MBULK TQ_BLOCK
#else
#define TQ_MBULK 32
#endif
#define TQ_MNRUN (TQ_MTOK / TQ_MBULK) /* runs of a tile, per cache */
#if __CUDA_ARCH__ >= 900 && TQ_MBULK >= 8
#define TQ_MTMA 1
__device__ __forceinline__ void tq_mbar_init(unsigned bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void tq_mbar_expect(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ bool tq_mbar_done(unsigned bar, unsigned parity) {
  unsigned ok;
  asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
               : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
  return ok != 0;
}
__device__ __forceinline__ void tq_bulk(unsigned dst, const void *src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void tq_mbar_fence_init(void) {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
#else
#define TQ_MTMA 0
#endif

/* Whether the runs of both caches start on 16 bytes (sm_90 bulk copies). */
__device__ __forceinline__ bool tq_mma_bulk_aligned(const tq_kargs &a, const tq_u8 *khead, const tq_u8 *vhead) {
#if TQ_PAGED
  (void)khead, (void)vhead;
  return ((((size_t)a.k_cache) | (size_t)a.v_cache) & 15u) == 0;
#else
  (void)a;
  return ((((size_t)khead) | (size_t)vhead) & 15u) == 0;
#endif
}

/* The slots of tokens t0 .. t0+n-1 of both caches to the stage buffers
 * sk, sv; the tile's mbarrier (sm_90) gets one arrival either way. */
__device__ __forceinline__ void tq_mma_stage2(const tq_kargs &a, const tq_u8 *khead, const tq_u8 *vhead,
                                              int b, int h, int t0, int n, unsigned sk, unsigned sv,
                                              unsigned bar, bool aligned) {
#if TQ_MTMA
  const int last = n - (n - 1) / TQ_MBULK * TQ_MBULK; /* slots of the last run */
  if (aligned && (last * TQ_K_BYTES) % 16 == 0 && (last * TQ_V_BYTES) % 16 == 0) {
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x, runs = (n + TQ_MBULK - 1) / TQ_MBULK;
      if (lane == 0) tq_mbar_expect(bar, (unsigned)(n * (TQ_K_BYTES + TQ_V_BYTES)));
      __syncwarp();
      if (lane < 2 * runs) {
        const int v = lane >= runs, r = lane - v * runs, m = min(TQ_MBULK, n - r * TQ_MBULK);
        const int bytes = v ? TQ_V_BYTES : TQ_K_BYTES;
#if TQ_PAGED
        const tq_u8 *src = tq_slot(a, v ? a.v_cache : a.k_cache, bytes, b, h, t0 + r * TQ_MBULK);
#else
        const tq_u8 *src = (v ? vhead : khead) + (size_t)(t0 + r * TQ_MBULK) * bytes;
#endif
        tq_bulk((v ? sv : sk) + (unsigned)(r * TQ_MBULK * bytes), src, (unsigned)(m * bytes), bar);
      }
    }
    return;
  }
  if (threadIdx.x == 0) tq_mbar_expect(bar, 0u);
#else
  (void)bar, (void)aligned;
#endif
  tq_mma_stage<TQ_KSW>(a, a.k_cache, khead, b, h, t0, n, sk);
  tq_mma_stage<TQ_VSW>(a, a.v_cache, vhead, b, h, t0, n, sv);
}
/* Waits for the bulk copies of the tile whose mbarrier is bar, the
 * (t / 2)-th use of that stage buffer. */
__device__ __forceinline__ void tq_mma_stage_wait(unsigned bar, int t) {
#if TQ_MTMA
  while (!tq_mbar_done(bar, (unsigned)(t >> 1) & 1u)) {
  }
#else
  (void)bar, (void)t;
#endif
}

/* The main rotation times sqrt(d), M[i][j] = H[i][j] d_j (H the Sylvester
 * Hadamard matrix, d the signs: R = M / sqrt(d)), as halves of +-1 in
 * TQ_D rows of dst, built by the whole block.  A thread's 8-channel runs
 * share j's block (jb) and i mod 8, so the signs of H_8 row i mod 8 and
 * of d over the run are fixed; i's higher bits flip the run as a whole. */
__device__ __forceinline__ void tq_mma_hadamard(tq_u16 (*dst)[TQ_MLD]) {
  const int jb = threadIdx.x % (TQ_D / 8), i0 = threadIdx.x / (TQ_D / 8);
  /* bit m of byte k: H_8[k][m] = -1 */
  const tq_u32 h8 = (tq_u32)(0x963C5AF066CCAA00ull >> (8 * (i0 & 7))) & 0xFFu;
  tq_u32 neg = h8; /* bit m: the sign of channel 8 jb + m in this run */
  for (int m = 0; m < 8; m++) neg ^= (TQ_MAIN_SIGNS[8 * jb + m] < 0.f ? 1u : 0u) << m;
  const tq_u32 one = (tq_u32)tq_to_half(1.f) * 0x10001u;
  tq_u32 w[4];
  for (int k = 0; k < 4; k++) w[k] = one | ((neg >> (2 * k)) & 1u) << 15 | ((neg >> (2 * k + 1)) & 1u) << 31;
#pragma unroll
  for (int e = 0; e < (TQ_D * TQ_D / 8 + TQ_MTHREADS - 1) / TQ_MTHREADS; e++) {
    const int i = i0 + e * (TQ_MTHREADS / (TQ_D / 8));
    if (i >= TQ_D) break;
    const tq_u32 flip = (tq_u32)(__popc(i & (8 * jb)) & 1) * 0x80008000u;
    *(uint4 *)&dst[i][8 * jb] = make_uint4(w[0] ^ flip, w[1] ^ flip, w[2] ^ flip, w[3] ^ flip);
  }
}

/* This warp's 32 rows of q into s.q, as they are (channel_perm applied),
 * zeros past the last row. */
__device__ __forceinline__ void tq_mma_load_q(const tq_kargs &a, tq_mma_smem &s, int b, int h,
                                              int wr0, int rows) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const tq_u16 *perm = tq_perm(a, h);
  const tq_act *q = (const tq_act *)a.q;
  const bool vec = !perm && ((size_t)q & 15u) == 0;
  for (int i = lane; i < 32 * (TQ_D / 8); i += 32) {
    const int rr = i / (TQ_D / 8), j = 8 * (i % (TQ_D / 8)), row = wr0 + rr;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (row < rows) {
      const int tok = row / TQ_G, gq = row % TQ_G;
      const tq_act *src = q + (((size_t)b * a.n_tokens + tok) * a.kv_heads * TQ_G +
                               (size_t)h * TQ_G + gq) * TQ_D;
      if (vec) {
        x = *(const uint4 *)(src + j);
      } else {
        tq_u32 w[4];
        for (int k = 0; k < 4; k++)
          w[k] = (tq_u32)src[tq_channel(perm, j + 2 * k)] | (tq_u32)src[tq_channel(perm, j + 2 * k + 1)] << 16;
        x = make_uint4(w[0], w[1], w[2], w[3]);
      }
    }
    *(uint4 *)&s.q[32 * warp + rr][j] = x;
  }
}

__device__ void tq_prefill_mma(const tq_kargs &a) {
  extern __shared__ __align__(16) unsigned char tq_dyn_smem[];
  tq_mma_smem &s = *(tq_mma_smem *)tq_dyn_smem;
  unsigned got; /* bytes of shared memory: two or three tile buffers */
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(got));
  if (got < sizeof(tq_mma_smem) - sizeof(tq_mma_tile)) __trap(); /* the plan and this layout disagree */
  const bool pp = got >= sizeof(tq_mma_smem); /* ping-pong, three buffers */
  const int nbuf = pp ? 3 : 2;
  /* Block i: row tile (heaviest first) and (sequence, kv head). */
  const int rows = a.n_tokens * TQ_G, tiles = (rows + TQ_MROWS - 1) / TQ_MROWS;
  const int heads = a.batch * a.kv_heads, bh = (int)(blockIdx.x % (unsigned)heads);
  const int b = bh / a.kv_heads, h = bh % a.kv_heads;
  const int r0 = (tiles - 1 - (int)(blockIdx.x / (unsigned)heads)) * TQ_MROWS;
  const int len = a.seq_lens[b], past = len - a.n_tokens;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const int wr0 = r0 + 32 * warp; /* this warp's first row */

  /* The context of the whole block, in tiles; start copying tiles 0, 1. */
  const int kend = past + (min(r0 + TQ_MROWS, rows) - 1) / TQ_G + 1;
  const int ntiles = (kend + TQ_MTOK - 1) / TQ_MTOK;
  const tq_u8 *khead = tq_slot(a, a.k_cache, TQ_K_BYTES, b, h, 0);
  const tq_u8 *vhead = tq_slot(a, a.v_cache, TQ_V_BYTES, b, h, 0);
  const unsigned sk = tq_smem_addr(s.sk[0]), sv = tq_smem_addr(s.sv[0]);
  const unsigned skn = sizeof s.sk[0], svn = sizeof s.sv[0]; /* bytes of a stage */
  const unsigned bar = tq_smem_addr(s.bar);
#if TQ_MTMA
  if (tid == 0) {
    tq_mbar_init(bar);
    tq_mbar_init(bar + 8);
    tq_mbar_fence_init();
  }
  __syncthreads();
#endif
  const bool aligned = tq_mma_bulk_aligned(a, khead, vhead);
  for (int t = 0; t < 2 && t < ntiles; t++)
    tq_mma_stage2(a, khead, vhead, b, h, t * TQ_MTOK, min(TQ_MTOK, kend - t * TQ_MTOK), sk + t * skn,
                  sv + t * svn, bar + 8 * t, aligned);
  if (tid == 0) tq_mma_table(tq_k_cb, TQ_KB, s.tab[0]);
  if (tid == 32) tq_mma_table(tq_v_cb, TQ_VB, s.tab[1]);
  tq_mma_hadamard(s.kv[0].k); /* M, over the first K/V tiles until tile 0 */
  tq_mma_load_q(a, s, b, h, wr0, rows);

  /* ldmatrix row addresses of this lane: q (A, m tile 0; +16 rows for 1),
   * keys (B of n tiles 2p, 2p+1 at one k step), values (B^T of n tiles
   * 2p, 2p+1 at one k step), in tile buffer 0 (+ kvn for 1).  Offsets
   * below are in bytes.  M takes the keys' addressing for q M^T and the
   * values' for O M. */
  const unsigned qrow = tq_smem_addr(&s.q[32 * warp + (lane & 15)][(lane >> 4) * 8]);
  const unsigned krow = tq_smem_addr(&s.kv[0].k[(lane >> 4) * 8 + (lane & 7)][((lane >> 3) & 1) * 8]);
  const unsigned vrow = tq_smem_addr(&s.kv[0].v[lane & 15][(lane >> 4) * 8]);
  const unsigned kvn = sizeof(tq_mma_tile);

  tq_cp_wait_all();
  __syncthreads();
  { /* q R^T = q M^T / sqrt(d) on tensor cores (exact products, f32 sums),
     * times sm_scale log2(e), back into s.q as halves. */
    float y[2][TQ_MVT][4];
#pragma unroll
    for (int kb = 0; kb < TQ_MKB; kb++) {
      tq_u32 qa[2][4];
      tq_ldm4(qa[0], qrow + 32 * kb);
      tq_ldm4(qa[1], qrow + 32 * (TQ_MLD + kb));
      tq_mma_kstep<TQ_MVT / 2, false>(y, qa[0], qa[1], krow + 32 * kb, 32 * TQ_MLD, kb == 0);
    }
    const float scale = a.sm_scale * TQ_LOG2E * rsqrtf((float)TQ_D);
    __syncwarp(); /* every lane has read its q */
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int nt = 0; nt < TQ_MVT; nt++) {
        tq_u16 *row = s.q[32 * warp + 16 * i + g];
        *(tq_u32 *)&row[nt * 8 + 2 * c] = tq_pack2(scale * y[i][nt][0], scale * y[i][nt][1]);
        *(tq_u32 *)&row[8 * TQ_MLD + nt * 8 + 2 * c] = tq_pack2(scale * y[i][nt][2], scale * y[i][nt][3]);
      }
    __syncwarp();
  }

  /* The span of the causal contexts of the warp's rows. */
  const int wmax = wr0 < rows ? past + (min(wr0 + 31, rows - 1)) / TQ_G + 1 : 0;
  const int wmin = wr0 + 31 < rows ? past + wr0 / TQ_G + 1 : 0; /* 0: some rows are dead */

  float o[2][TQ_MVT][4], m[2][2], l[2][2];
  for (int i = 0; i < 2; i++)
    for (int e = 0; e < 2; e++) {
      m[i][e] = -TQ_INF;
      l[i][e] = 0.f;
    }
  for (int i = 0; i < 2; i++)
    for (int nt = 0; nt < TQ_MVT; nt++) o[i][nt][0] = o[i][nt][1] = o[i][nt][2] = o[i][nt][3] = 0.f;

  __syncthreads(); /* M is read no more */
  tq_mma_stage_wait(bar, 0);
  tq_mma_expand<TQ_KB>(s.sk[0], TQ_KSW, TQ_K_IDX / 4, TQ_K_SCALE / 4, s.tab[0], min(TQ_MTOK, kend),
                       s.kv[0].k, s.ksc[0]);
  tq_mma_expand<TQ_VB>(s.sv[0], TQ_VSW, TQ_V_IDX / 4, TQ_V_SCALE / 4, s.tab[1], min(TQ_MTOK, kend),
                       s.kv[0].v, s.vsc[0]);
  __syncthreads();

  /* Interval it, one barrier each: the block copies the slots of tile
   * it + 2 and expands it + 1 into a free tile buffer, and the warps
   * compute in two steps, QK (S = Q K^T of a tile, times the key scales,
   * masked) and PV (softmax, O += P V).  Warps 0-3 take QK(it) then
   * PV(it).  With three buffers (ping-pong), warps 4-7 run a step behind,
   * PV(it - 1) then QK(it), keeping S across the barrier: warps w and w + 4
   * share a scheduler, so one's softmax runs beside the other's tensor
   * work; with two, they do as warps 0-3.  A warp puts its units of tile
   * it + 1 between its own mma (keys in QK, values in PV), or after them
   * when it has none. */
  const bool lag = pp && warp >= TQ_MWARPS / 2;
  float sc[2][TQ_MNT][4];
  for (int it = 0; it <= ntiles; it++) {
    if (it + 2 < ntiles) {
      const int t2 = (it + 2) * TQ_MTOK;
      tq_mma_stage2(a, khead, vhead, b, h, t2, min(TQ_MTOK, kend - t2), sk + (it & 1) * skn,
                    sv + (it & 1) * svn, bar + 8 * (it & 1), aligned);
    }
    const bool more = it + 1 < ntiles;
    if (more) tq_mma_stage_wait(bar + 8 * ((it + 1) & 1), it + 1);
    const int nb = (it + 1) % nbuf;
    const tq_u32 *nsk = s.sk[(it + 1) & 1], *nsv = s.sv[(it + 1) & 1];
    bool kdone = !more, vdone = !more;
#pragma unroll 1
    for (int ph = 0; ph < 2; ph++) {
      if ((ph == 0) != lag) {
        /* QK of tile it, with the next tile's key units (one every other
         * k step) */
        const int t = it, t0 = t * TQ_MTOK;
        if (t < ntiles && t0 < wmax) {
          const unsigned kb0 = krow + (t % nbuf) * kvn;
#pragma unroll
          for (int kb = 0; kb < TQ_MKB; kb++) {
            if (more && kb % 2 == 0) {
              tq_u32 tab[8];
              tq_mma_tab(s.tab[0], tab);
              tq_mma_unit<TQ_KB>(nsk, TQ_KSW, TQ_K_IDX / 4, tab, s.kv[nb].k, kb / 2);
            }
            tq_u32 qa[2][4];
            tq_ldm4(qa[0], qrow + 32 * kb);
            tq_ldm4(qa[1], qrow + 32 * (TQ_MLD + kb));
            tq_mma_kstep<TQ_MNT / 2, false>(sc, qa[0], qa[1], kb0 + 32 * kb, 32 * TQ_MLD, kb == 0);
          }
          kdone = true;
          /* Key scales, and the causal mask where the tile reaches past
           * a row's context (row wr0 + 16 i + 8 e + g holds
           * sc[i][.][2 e ..]). */
          const float *ks = s.ksc[t % nbuf];
#pragma unroll
          for (int nt = 0; nt < TQ_MNT; nt++) {
            const float2 k2 = *(const float2 *)&ks[nt * 8 + 2 * c];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
              for (int e = 0; e < 4; e++) sc[i][nt][e] *= e & 1 ? k2.y : k2.x;
          }
          if (t0 + TQ_MTOK > wmin) {
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
              for (int e = 0; e < 2; e++) {
                const int row = wr0 + 16 * i + 8 * e + g;
                const int lim = (row < rows ? past + row / TQ_G + 1 : 0) - t0 - 2 * c;
#pragma unroll
                for (int nt = 0; nt < TQ_MNT; nt++)
#pragma unroll
                  for (int k = 0; k < 2; k++)
                    if (nt * 8 + k >= lim) sc[i][nt][2 * e + k] = -TQ_INF;
              }
          }
        }
      } else {
        /* PV of tile it (warps 0-3) or it - 1 (4-7): online softmax in
         * base 2 (a row lives on a lane quad), then O += P V a k step at
         * a time with the next tile's value units, P (times the value
         * scales) becoming the A fragment as the scores are consumed. */
        const int t = lag ? it - 1 : it;
        if (t >= 0 && t < ntiles && t * TQ_MTOK < wmax) {
          float mx[2][2];
          mx[0][0] = mx[0][1] = mx[1][0] = mx[1][1] = -TQ_INF;
#pragma unroll
          for (int nt = 0; nt < TQ_MNT; nt++)
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
              for (int e = 0; e < 4; e++) mx[i][e >> 1] = fmaxf(mx[i][e >> 1], sc[i][nt][e]);
          float mu[2][2], corr[2][2];
          bool rescale = false;
#pragma unroll
          for (int i = 0; i < 2; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              float x = mx[i][e];
              x = fmaxf(x, __shfl_xor_sync(TQ_FULL, x, 1));
              x = fmaxf(x, __shfl_xor_sync(TQ_FULL, x, 2));
              const float nm = fmaxf(m[i][e], x);
              mu[i][e] = nm == -TQ_INF ? 0.f : nm; /* a row with nothing yet */
              corr[i][e] = tq_ex2(m[i][e] - mu[i][e]);
              rescale |= corr[i][e] != 1.f;
              m[i][e] = nm;
              l[i][e] *= corr[i][e];
            }
          if (__any_sync(TQ_FULL, rescale))
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
              for (int nt = 0; nt < TQ_MVT; nt++) {
                o[i][nt][0] *= corr[i][0];
                o[i][nt][1] *= corr[i][0];
                o[i][nt][2] *= corr[i][1];
                o[i][nt][3] *= corr[i][1];
              }
          const unsigned vb0 = vrow + (t % nbuf) * kvn;
          const float *vs = s.vsc[t % nbuf];
#pragma unroll
          for (int kk = 0; kk < TQ_MTOK / 16; kk++) {
            if (more && kk % (TQ_MTOK / 16 / TQ_MUPT) == 0) {
              tq_u32 tab[8];
              tq_mma_tab(s.tab[1], tab);
              tq_mma_unit<TQ_VB>(nsv, TQ_VSW, TQ_V_IDX / 4, tab, s.kv[nb].v, kk / (TQ_MTOK / 16 / TQ_MUPT));
            }
            tq_u32 pa[2][4];
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
              const int nt = 2 * kk + h2;
              const float2 v2 = *(const float2 *)&vs[nt * 8 + 2 * c];
#pragma unroll
              for (int i = 0; i < 2; i++) {
                float p[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                  p[e] = tq_ex2(sc[i][nt][e] - mu[i][e >> 1]);
                  l[i][e >> 1] += p[e];
                  p[e] *= e & 1 ? v2.y : v2.x;
                }
                pa[i][2 * h2 + 0] = tq_pack2(p[0], p[1]);
                pa[i][2 * h2 + 1] = tq_pack2(p[2], p[3]);
              }
            }
            tq_mma_kstep<TQ_MVT / 2, true>(o, pa[0], pa[1], vb0 + 32 * kk * TQ_MLD, 32, false);
          }
          vdone = true;
        }
      }
    }
    if (!kdone) tq_mma_units<TQ_KB>(nsk, TQ_KSW, TQ_K_IDX / 4, s.tab[0], s.kv[nb].k);
    if (!vdone) tq_mma_units<TQ_VB>(nsv, TQ_VSW, TQ_V_IDX / 4, s.tab[1], s.kv[nb].v);
    if (more) {
      const int n1 = min(TQ_MTOK, kend - (it + 1) * TQ_MTOK);
      tq_mma_scales(nsk, TQ_KSW, TQ_K_SCALE / 4, n1, s.ksc[nb]);
      tq_mma_scales(nsv, TQ_VSW, TQ_V_SCALE / 4, n1, s.vsc[nb]);
    }
    tq_cp_wait_all();
    __syncthreads();
  }

  /* Out: (O / l) R = (O / l) M / sqrt(d) on tensor cores (O / l rounded
   * to halves as the A fragment, like P), written in the original basis. */
  tq_mma_hadamard(s.kv[0].k);
  const unsigned mrow = tq_smem_addr(&s.kv[0].k[lane & 15][(lane >> 4) * 8]);
  __syncthreads();
  float f[2][2]; /* 1 / l of this lane's rows */
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      float lt = l[i][e];
      lt += __shfl_xor_sync(TQ_FULL, lt, 1);
      lt += __shfl_xor_sync(TQ_FULL, lt, 2);
      f[i][e] = lt > 0.f ? 1.f / lt : 0.f;
    }
  tq_u32 oa[2][TQ_MKB][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int kk = 0; kk < TQ_MKB; kk++) {
      oa[i][kk][0] = tq_pack2(o[i][2 * kk][0] * f[i][0], o[i][2 * kk][1] * f[i][0]);
      oa[i][kk][1] = tq_pack2(o[i][2 * kk][2] * f[i][1], o[i][2 * kk][3] * f[i][1]);
      oa[i][kk][2] = tq_pack2(o[i][2 * kk + 1][0] * f[i][0], o[i][2 * kk + 1][1] * f[i][0]);
      oa[i][kk][3] = tq_pack2(o[i][2 * kk + 1][2] * f[i][1], o[i][2 * kk + 1][3] * f[i][1]);
    }
  float x[2][TQ_MVT][4];
#pragma unroll
  for (int kk = 0; kk < TQ_MKB; kk++)
    tq_mma_kstep<TQ_MVT / 2, true>(x, oa[0][kk], oa[1][kk], mrow + 32 * kk * TQ_MLD, 32, kk == 0);
  const tq_u16 *perm = tq_perm(a, h);
  tq_act *out = (tq_act *)a.out;
  const bool pairs = !perm && ((size_t)out & 3u) == 0;
  const float sd = rsqrtf((float)TQ_D);
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const int row = wr0 + 16 * i + 8 * e + g;
      if (row >= rows) continue;
      const int tok = row / TQ_G, gq = row % TQ_G;
      const size_t at = (((size_t)b * a.n_tokens + tok) * a.kv_heads * TQ_G + (size_t)h * TQ_G + gq) * TQ_D;
#pragma unroll
      for (int nt = 0; nt < TQ_MVT; nt++) {
        const int j = 8 * nt + 2 * c;
        const tq_u16 y0 = tq_to_half(sd * x[i][nt][2 * e]), y1 = tq_to_half(sd * x[i][nt][2 * e + 1]);
        if (pairs) {
          *(tq_u32 *)&out[at + j] = (tq_u32)y0 | (tq_u32)y1 << 16;
        } else {
          out[at + tq_channel(perm, j)] = y0;
          out[at + tq_channel(perm, j + 1)] = y1;
        }
      }
    }
}
#endif

#if TQ_FAST
#define TQ_ATTEND tq_attend_fast
#else
#define TQ_ATTEND tq_attend
#endif
/* The tensor-core decode at 4 blocks an SM (128 registers; 16 bytes of
 * spills, two reloads a chunk): its natural count leaves 3 blocks, whose
 * schedulers sat idle half the time; 5 blocks (96 registers) was the best
 * before the scores became S^T and is now 0-5% slower than 4
 * (bench/RESULTS.md). */
#ifndef TQ_DECODE_BLOCKS /* TQ_NVRTC_OPTIONS=-DTQ_DECODE_BLOCKS=n tries others */
#if TQ_FAST && TQ_DMMA
#define TQ_DECODE_BLOCKS 4
#else
#define TQ_DECODE_BLOCKS 1
#endif
#endif
extern "C" __global__ void __launch_bounds__(TQ_THREADS, TQ_DECODE_BLOCKS)
{{SYM}}_decode(const tq_kargs a) { TQ_ATTEND(a); }
#if TQ_MMA
#define TQ_PREFILL_THREADS TQ_MTHREADS
#else
#define TQ_PREFILL_THREADS TQ_THREADS
#endif
extern "C" __global__ void __launch_bounds__(TQ_PREFILL_THREADS)
{{SYM}}_prefill(const tq_kargs a) {
#if TQ_MMA
  tq_prefill_mma(a);
#else
  TQ_ATTEND(a);
#endif
}

/* grid (rows, kv_heads, batch): merge the splits of one output row, rotate
 * back, write.  Splits come from the workspace written by tq_attend. */
extern "C" __global__ void {{SYM}}_reduce(const tq_kargs a) {
  __shared__ float accum[TQ_VDIM];
#if !TQ_VMINMAX
  __shared__ float rot[TQ_D];
#endif
  __shared__ float weight[64];
  __shared__ float total;
  tq_wait_prerequisites();
  const int row = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int rows = a.n_tokens * TQ_G;
  const int splits = a.splits;
  const float *part = (const float *)a.workspace +
                      (((size_t)b * a.kv_heads + h) * rows + row) * (size_t)splits * TQ_PART;
  const tq_u16 *perm = tq_perm(a, h);
  if (threadIdx.x == 0) {
    float mx = -TQ_INF, l = 0.f;
    for (int sp = 0; sp < splits; sp++) mx = fmaxf(mx, part[sp * TQ_PART]);
    for (int sp = 0; sp < splits && sp < 64; sp++) {
      float w = part[sp * TQ_PART + 1] > 0.f ? __expf(part[sp * TQ_PART] - mx) : 0.f;
      weight[sp] = w;
      l += w * part[sp * TQ_PART + 1];
    }
    total = l;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < TQ_VDIM; j += blockDim.x) {
    float v = 0.f;
    for (int sp = 0; sp < splits && sp < 64; sp++) v += weight[sp] * part[sp * TQ_PART + 2 + j];
    accum[j] = v / total;
  }
  __syncthreads();
  int tok = row / TQ_G, g = row % TQ_G;
  size_t at = (((size_t)b * a.n_tokens + tok) * a.kv_heads * TQ_G + (size_t)h * TQ_G + g) * TQ_D;
  tq_act *out = (tq_act *)a.out;
#if TQ_VMINMAX
  for (int j = threadIdx.x; j < TQ_D; j += blockDim.x) tq_store(out, at + j, accum[j]);
#else
  TQ_MAIN_ROTATE(1, accum, rot);
  for (int j = threadIdx.x; j < TQ_M; j += blockDim.x)
    tq_store(out, at + tq_channel(perm, TQ_O + j), rot[j]);
#if TQ_O > 0
#if TQ_OB == 16
  for (int j = threadIdx.x; j < TQ_O; j += blockDim.x)
    tq_store(out, at + tq_channel(perm, j), accum[TQ_M + j]);
#else
  TQ_OUT_ROTATE(1, accum + TQ_M, rot);
  for (int j = threadIdx.x; j < TQ_O; j += blockDim.x)
    tq_store(out, at + tq_channel(perm, j), rot[j]);
#endif
#endif
#endif
}

/* ---- dequantize -------------------------------------------------------- */
/* grid (n_tokens, kv_heads, batch), one warp: token t of one head. */
extern "C" __global__ void {{SYM}}_dequant(const tq_kargs a) {
  __shared__ float y[TQ_D], x[TQ_D];
#if TQ_O > 0 && TQ_OB != 16
  __shared__ float yo[TQ_O];
#endif
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const tq_u16 *perm = tq_perm(a, h);
  const size_t at = (((size_t)b * a.n_tokens + t) * a.kv_heads + h) * TQ_D;
  for (int kv = 0; kv < 2; kv++) {
    const tq_u8 *slot = tq_slot(a, kv ? a.v_cache : a.k_cache, kv ? TQ_V_BYTES : TQ_K_BYTES, b, h, t);
    tq_act *dst = (tq_act *)(kv ? a.v : a.k);
    __syncthreads();
#if TQ_VMINMAX
    if (kv) {
      for (int j = threadIdx.x; j < TQ_D; j += blockDim.x) {
        tq_u32 gw = ((const tq_u32 *)(slot + TQ_V_GROUPS))[j / TQ_VGROUP];
        tq_store(dst, at + j, tq_h2f((tq_u16)(gw >> 16)) +
                                  tq_h2f((tq_u16)gw) * (float)tq_index((const tq_u32 *)(slot + TQ_V_IDX), j, TQ_VB));
      }
      continue;
    }
#endif
    int bits = kv ? TQ_VB : TQ_KB;
#if TQ_VMINMAX
    const float *cb = tq_k_cb; /* values returned above */
#else
    const float *cb = kv ? tq_v_cb : tq_k_cb;
#endif
    float sc = bits > 0 ? tq_f32_at(slot + (kv ? TQ_V_SCALE : TQ_K_SCALE)) : 0.f;
    for (int j = threadIdx.x; j < TQ_M; j += blockDim.x)
      y[j] = bits > 0 ? sc * cb[tq_index((const tq_u32 *)(slot + (kv ? TQ_V_IDX : TQ_K_IDX)), j, bits)] : 0.f;
#if TQ_QJL
    if (!kv) {
      float c = 1.25331413731550025f / TQ_M * tq_f32_at(slot + TQ_K_RNORM);
      const tq_u32 *w = (const tq_u32 *)(slot + TQ_K_QJL);
      for (int j = threadIdx.x; j < TQ_M; j += blockDim.x) {
        float acc = 0.f;
        for (int i = 0; i < TQ_M; i++) acc += (tq_index(w, i, 1) ? c : -c) * tq_qjl_s[i * TQ_M + j];
        y[j] += acc;
      }
    }
#endif
    TQ_MAIN_ROTATE(1, y, x);
    for (int j = threadIdx.x; j < TQ_M; j += blockDim.x) tq_store(dst, at + tq_channel(perm, TQ_O + j), x[j]);
#if TQ_O > 0
    {
      int oi = kv ? TQ_V_OUT_IDX : TQ_K_OUT_IDX;
#if TQ_OB == 16
      for (int j = threadIdx.x; j < TQ_O; j += blockDim.x)
        tq_store(dst, at + tq_channel(perm, j), tq_h2f(*(const tq_u16 *)(slot + oi + 2 * j)));
#else
      float osc = tq_f32_at(slot + (kv ? TQ_V_OUT_SCALE : TQ_K_OUT_SCALE));
      __syncthreads();
      for (int j = threadIdx.x; j < TQ_O; j += blockDim.x)
        yo[j] = osc * tq_out_cb[tq_index((const tq_u32 *)(slot + oi), j, TQ_OB)];
      TQ_OUT_ROTATE(1, yo, x);
      for (int j = threadIdx.x; j < TQ_O; j += blockDim.x) tq_store(dst, at + tq_channel(perm, j), x[j]);
#endif
    }
#endif
  }
}
