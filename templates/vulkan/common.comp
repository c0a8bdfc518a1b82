/* templates/vulkan/common.comp - what every stage of a Vulkan variant shares:
 * bindings, push constants, f16/bf16 by hand, slot addressing, packed
 * indices, workgroup reductions and rotations in shared memory.
 *
 * The emitter puts the variant's TQ_* defines and the offsets of its
 * constant tables above this text; the compiler's preamble selects one
 * stage (TQ_STAGE) and whether subgroup operations may be used
 * (TQ_SUBGROUPS).  Caches, activations and the table buffer are plain
 * 32-bit words or floats: no optional device feature is needed. */
layout(local_size_x = TQ_WG, local_size_y = 1, local_size_z = 1) in;

#if TQ_DTYPE == TQ_DTYPE_F32
#define TQ_ACT float
#else
#define TQ_ACT uint /* two f16 or bf16 per word */
#endif

/* Storage bindings: what backends/vulkan.c binds, in this order. */
layout(std430, binding = 0) buffer KCache { uint k_cache[]; };
layout(std430, binding = 1) buffer VCache { uint v_cache[]; };
layout(std430, binding = 2) readonly buffer BlockTable { int block_table[]; };
layout(std430, binding = 3) readonly buffer SeqLens { int seq_lens[]; };
layout(std430, binding = 4) readonly buffer ChannelPerm { uint perm_words[]; };
layout(std430, binding = 5) readonly buffer Q { TQ_ACT q_act[]; };
layout(std430, binding = 6) buffer K { TQ_ACT k_act[]; };
layout(std430, binding = 7) buffer V { TQ_ACT v_act[]; };
layout(std430, binding = 8) buffer Out { TQ_ACT out_act[]; };
layout(std430, binding = 9) buffer Work { float work[]; };
layout(std430, binding = 10) readonly buffer Tables { float tab[]; };

/* The scalars of tq_kargs, plus has_perm (channel_perm given). */
layout(push_constant) uniform Args {
  int batch, kv_heads, n_tokens, capacity, num_blocks, max_blocks;
  float sm_scale;
  int splits, has_perm;
} pc;

#define TID gl_LocalInvocationID.x
#define TQ_NEG (-3.0e38) /* "no score yet": finite, so no inf arithmetic */

/* ---- activations ------------------------------------------------------ */
float tq_h2f(uint h) { return unpackHalf2x16(h).x; }

/* f32 -> f16, round to nearest even (the reference's rounding; the GLSL
 * builtin leaves rounding to the implementation). */
uint tq_f2h(float f) {
  uint x = floatBitsToUint(f), sign = (x >> 16) & 0x8000u;
  uint e8 = (x >> 23) & 0xFFu, man = x & 0x7FFFFFu;
  if (e8 == 0xFFu) return sign | 0x7C00u | (man != 0u ? 0x200u : 0u);
  int e = int(e8) - 112;
  if (e >= 31) return sign | 0x7C00u;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000u;
    uint shift = uint(14 - e), half_ = man >> shift;
    uint rem = man & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half_ & 1u) != 0u)) half_++;
    return sign | half_;
  }
  uint half_ = (uint(e) << 10) | (man >> 13), rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half_ & 1u) != 0u)) half_++;
  return sign | half_;
}

float tq_bf2f(uint h) { return uintBitsToFloat(h << 16); }

uint tq_f2bf(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (x >> 16) | 0x40u;
  x += 0x7FFFu + ((x >> 16) & 1u);
  return x >> 16;
}

/* Element i of an activation buffer; a pair (i even) written as one word,
 * so no two invocations ever write the same word. */
#if TQ_DTYPE == TQ_DTYPE_F32
#define TQ_LOAD(buf, i) (buf[i])
#define TQ_STORE2(buf, i, x0, x1) { buf[i] = (x0); buf[(i) + 1u] = (x1); }
#elif TQ_DTYPE == TQ_DTYPE_F16
#define TQ_LOAD(buf, i) tq_h2f((buf[(i) >> 1] >> (((i) & 1u) << 4)) & 0xFFFFu)
#define TQ_STORE2(buf, i, x0, x1) buf[(i) >> 1] = tq_f2h(x0) | (tq_f2h(x1) << 16)
#else
#define TQ_LOAD(buf, i) tq_bf2f((buf[(i) >> 1] >> (((i) & 1u) << 4)) & 0xFFFFu)
#define TQ_STORE2(buf, i, x0, x1) buf[(i) >> 1] = tq_f2bf(x0) | (tq_f2bf(x1) << 16)
#endif

/* ---- slots, channels, packed indices ---------------------------------- */
/* Word offset of the slot of token t (sequence b, kv head h). */
uint tq_slot(int b, int h, int t, uint slot_words) {
#if TQ_PAGED
  uint block = uint(block_table[b * pc.max_blocks + t / TQ_BLOCK]);
  return ((block * uint(pc.kv_heads) + uint(h)) * uint(TQ_BLOCK) + uint(t % TQ_BLOCK)) * slot_words;
#else
  return ((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(pc.capacity) + uint(t)) * slot_words;
#endif
}

/* Entry i of kv head h's channel order (identity without channel_perm). */
uint tq_channel(int h, uint i) {
  if (pc.has_perm == 0) return i;
  uint at = uint(h) * uint(TQ_D) + i;
  return (perm_words[at >> 1] >> ((at & 1u) << 4)) & 0xFFFFu;
}

/* Index j of width bits in the bit stream starting at word base
 * (docs/FORMAT.md).  The word after an index block always exists inside
 * the slot: a scale or norm follows every block. */
uint tq_k_index(uint base, uint j, uint bits) {
  uint bit = j * bits, w = base + (bit >> 5), sh = bit & 31u;
  uint x = k_cache[w] >> sh;
  if (sh + bits > 32u) x |= k_cache[w + 1u] << (32u - sh);
  return x & ((1u << bits) - 1u);
}

uint tq_v_index(uint base, uint j, uint bits) {
  uint bit = j * bits, w = base + (bit >> 5), sh = bit & 31u;
  uint x = v_cache[w] >> sh;
  if (sh + bits > 32u) x |= v_cache[w + 1u] << (32u - sh);
  return x & ((1u << bits) - 1u);
}

/* ---- workgroup reductions --------------------------------------------- */
shared float tq_red[TQ_WG];

/* Sum of v over the workgroup; every invocation gets it. */
float tq_wg_sum(float v) {
  barrier();
  tq_red[TID] = v;
  barrier();
  for (uint s = TQ_WG / 2u; s > 0u; s >>= 1) {
    if (TID < s) tq_red[TID] += tq_red[TID + s];
    barrier();
  }
  float r = tq_red[0];
  barrier();
  return r;
}

/* ---- rotations in shared memory ---------------------------------------- */
shared float rot_in[TQ_D];
shared float rot_out[TQ_D];

/* rot_out = R rot_in (inverse false) or R^T rot_in, over n channels.  R is
 * a randomized Hadamard (signs at tab[signs_at]) or a dense row-major
 * matrix at tab[matrix_at]; the absent one is -1. */
void tq_rotate(uint n, int signs_at, int matrix_at, bool inverse) {
  barrier();
  if (signs_at >= 0) {
    float s = 1.0 / sqrt(float(n));
    for (uint i = TID; i < n; i += TQ_WG)
      rot_out[i] = inverse ? rot_in[i] : rot_in[i] * tab[uint(signs_at) + i];
    for (uint h = 1u; h < n; h <<= 1) {
      barrier();
      for (uint p = TID; p < n / 2u; p += TQ_WG) {
        uint i = (p / h) * 2u * h + p % h;
        float u = rot_out[i], v = rot_out[i + h];
        rot_out[i] = u + v;
        rot_out[i + h] = u - v;
      }
    }
    barrier();
    for (uint i = TID; i < n; i += TQ_WG)
      rot_out[i] *= inverse ? s * tab[uint(signs_at) + i] : s;
  } else {
    for (uint i = TID; i < n; i += TQ_WG) {
      float acc = 0.0;
      for (uint k = 0u; k < n; k++)
        acc += (inverse ? tab[uint(matrix_at) + k * n + i]
                        : tab[uint(matrix_at) + i * n + k]) * rot_in[k];
      rot_out[i] = acc;
    }
  }
  barrier();
}
