/* templates/vulkan/attend_fast.comp - the fast attend stage (decode and
 * prefill) for the common variants: no outliers, no QJL, TurboQuant values,
 * 2- or 4-bit keys and values, head_dim <= 128 and a multiple of 32, paged
 * blocks a multiple or divisor of 32 (TQ_FAST, decided by the generator).
 * Compiled for one subgroup size, TQ_FAST_SG (32 on NVIDIA; lavapipe's
 * follows the CPU's vector width, 8 with AVX2); the runtime picks this
 * stage only where the device's compute subgroups have exactly that size.
 *
 * Dispatched like attend.comp: (splits, kv_heads * row tiles, batch).  The
 * workgroup is TQ_FW subgroups, and each subgroup is an independent
 * flash-decoding worker over 32-token chunks of the split's slice:
 *  - it copies the chunk's key and value slots (runs of whole slots, so
 *    consecutive words: coalesced) into its own shared buffers, with a
 *    barrier scoped to the subgroup, never the workgroup;
 *  - every lane scores 32 / TQ_FAST_SG tokens (one on a 32-wide device):
 *    centroid lookups in a 16-entry table times the tile's query rows, read
 *    as broadcast vec4s of four rows per channel;
 *  - the softmax maximum is kept per subgroup (lanes' partial sums are only
 *    rescaled), so the chunk loop has no workgroup barrier at all;
 *  - values: each lane owns index words (8 or 16 channels each) of one
 *    token at a time and all rows, the weights arriving by subgroup shuffle
 *    from the lane that scored the token.
 * The subgroups merge once at the end into the partial state (max, sum,
 * accumulators) that the reduce stage reads.  Slices are whole chunks. */
#if TQ_RQ % 4 != 0
#error "the fast attend stage holds query rows as vec4s of four rows"
#endif
#define TQ_VDIM TQ_D               /* accumulated channels (no outliers) */
#define TQ_PART (2 + TQ_VDIM)      /* workspace floats per (row, split) */
#define TQ_FW 4                    /* subgroups (workers) per workgroup */
#define TQ_S TQ_FAST_SG            /* lanes of a worker */
#define TQ_RQ4 (TQ_RQ / 4)         /* vec4s of query rows */
#define TQ_CHUNK 32                /* cache tokens a worker takes at a time */
#define TQ_TPL (TQ_CHUNK / TQ_S)   /* tokens each lane scores per chunk */
#define TQ_KW (TQ_D * TQ_KB / 32)  /* index words of a key */
#define TQ_VW (TQ_D * TQ_VB / 32)  /* index words of a value */
#define TQ_KSW (TQ_K_BYTES / 4)    /* words of a key slot */
#define TQ_VSW (TQ_V_BYTES / 4)    /* words of a value slot */
#define TQ_VCH (32 / TQ_VB)        /* value channels of one index word */
/* Value accumulation: a lane owns TQ_WPL words of one token per step and
 * TQ_TPS tokens are accumulated per step (one of the two is 1). */
#if TQ_VW > TQ_S
#define TQ_WPL (TQ_VW / TQ_S)
#define TQ_TPS 1
#else
#define TQ_WPL 1
#define TQ_TPS (TQ_S / TQ_VW)
#endif

/* Per worker, one chunk of slots.  Slot words are odd in number, so lanes
 * reading word w of consecutive tokens hit distinct banks. */
shared uint f_k[TQ_FW][TQ_CHUNK * TQ_KSW];
shared uint f_v[TQ_FW][TQ_CHUNK * TQ_VSW];
shared vec4 f_q[TQ_RQ4][TQ_D]; /* f_q[i][j]: channel j of rows 4i .. 4i+3 */
shared float f_kcb[1 << TQ_KB];
shared float f_vcb[1 << TQ_VB];
shared float f_m[TQ_FW], f_l[TQ_FW];
shared float f_acc[TQ_FW][TQ_D]; /* one row of every worker, when merging */

/* A worker copies the slots of tokens t0 .. t0+n-1 (t0 a multiple of 32)
 * of one cache into dst (words per slot: words).  Contiguous caches and
 * the pages of paged ones hold runs of whole slots. */
#define TQ_STAGE_SLOTS(cache, words, dst)                                      \
  {                                                                            \
    for (int p = 0; p < n; p += TQ_PAGE) {                                     \
      const uint src = tq_slot(b, h, t0 + p, uint(words));                     \
      const uint cnt = uint(min(TQ_PAGE, n - p) * (words));                    \
      for (uint i = lane; i < cnt; i += uint(TQ_S))                            \
        dst[uint(p * (words)) + i] = cache[src + i];                           \
    }                                                                          \
  }
#if TQ_PAGED && TQ_BLOCK < 32
#define TQ_PAGE TQ_BLOCK
#else
#define TQ_PAGE TQ_CHUNK
#endif

void main() {
  const int split = int(gl_WorkGroupID.x), b = int(gl_WorkGroupID.z);
  const int rows = pc.n_tokens * TQ_G, tiles = (rows + TQ_RQ - 1) / TQ_RQ;
  const int h = int(gl_WorkGroupID.y) / tiles, r0 = (int(gl_WorkGroupID.y) % tiles) * TQ_RQ;
  const int len = seq_lens[b];
  const uint w = gl_SubgroupID, lane = gl_SubgroupInvocationID;

  /* The runtime checked the size; should a driver still split the
   * workgroup otherwise, the rows' partial states become NaN (a loud
   * failure in the reduce stage) instead of indexing past the buffers. */
  if (gl_SubgroupSize != uint(TQ_S) || gl_NumSubgroups != uint(TQ_FW)) {
    for (int r = 0; r < TQ_RQ && TID == 0u; r++) {
      const int row = r0 + r;
      if (row >= rows) break;
      const uint part = (((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(rows) + uint(row)) *
                             uint(pc.splits) + uint(split)) * uint(TQ_PART);
      work[part] = uintBitsToFloat(0x7FC00000u);
      work[part + 1u] = uintBitsToFloat(0x7FC00000u);
    }
    return;
  }

  for (uint i = TID; i < uint(1 << TQ_KB); i += TQ_WG) f_kcb[i] = tab[uint(TQ_T_KCB) + i];
  for (uint i = TID; i < uint(1 << TQ_VB); i += TQ_WG) f_vcb[i] = tab[uint(TQ_T_VCB) + i];

  /* Rotate and scale the tile's query rows once (zero past the last row). */
  int ctx[TQ_RQ];
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r, tok = row / TQ_G, g = row % TQ_G;
    ctx[r] = row < rows ? len - pc.n_tokens + tok + 1 : 0;
    const uint at = row < rows ? ((uint(b) * uint(pc.n_tokens) + uint(tok)) * uint(pc.kv_heads * TQ_G) +
                                  uint(h * TQ_G + g)) * uint(TQ_D) : 0u;
    barrier();
    for (uint j = TID; j < uint(TQ_D); j += TQ_WG)
      rot_in[j] = row < rows ? pc.sm_scale * TQ_LOAD(q_act, at + tq_channel(h, j)) : 0.0;
    tq_rotate(uint(TQ_D), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, false);
    for (uint j = TID; j < uint(TQ_D); j += TQ_WG) f_q[r >> 2][j][r & 3] = rot_out[j];
  }
  barrier();

  /* Slices are whole chunks, so chunks start on multiples of 32 (pages of
   * a paged cache line up with them). */
  int slice = (len + pc.splits - 1) / pc.splits;
  slice = (slice + TQ_CHUNK - 1) / TQ_CHUNK * TQ_CHUNK;
  const int t_begin = min(len, split * slice), t_end = min(len, t_begin + slice);
  const int chunks = (t_end - t_begin + TQ_CHUNK - 1) / TQ_CHUNK;
  const uint sub = lane / uint(TQ_VW), word = lane % uint(TQ_VW); /* TQ_TPS > 1 */

  float m[TQ_RQ], l[TQ_RQ];
  vec4 acc[TQ_WPL * TQ_VCH][TQ_RQ4];
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
    m[r] = TQ_NEG;
    l[r] = 0.0;
  }
  [[unroll]] for (int k = 0; k < TQ_WPL * TQ_VCH; k++)
    [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[k][i] = vec4(0.0);

  for (int c = int(w); c < chunks; c += TQ_FW) {
    const int t0 = t_begin + c * TQ_CHUNK, n = min(TQ_CHUNK, t_end - t0);
    TQ_STAGE_SLOTS(k_cache, TQ_KSW, f_k[w])
    TQ_STAGE_SLOTS(v_cache, TQ_VSW, f_v[w])
    subgroupMemoryBarrierShared();
    subgroupBarrier();

    /* Scores: lane scores tokens lane, lane + S, ... of the chunk. */
    vec4 pv[TQ_TPL][TQ_RQ4]; /* weight x value scale of each scored token */
    float sc[TQ_TPL][TQ_RQ];
    bool in_chunk[TQ_TPL];
    float vsc[TQ_TPL];
    float mx[TQ_RQ];
    [[unroll]] for (int r = 0; r < TQ_RQ; r++) mx[r] = TQ_NEG;
    [[unroll]] for (int e = 0; e < TQ_TPL; e++) {
      const uint tt = lane + uint(e * TQ_S), kt = tt * uint(TQ_KSW) + uint(TQ_K_IDX / 4);
      vec4 d[TQ_RQ4];
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++) d[i] = vec4(0.0);
      [[unroll]] for (uint x = 0u; x < uint(TQ_KW); x++) {
        const uint bits = f_k[w][kt + x];
        [[unroll]] for (uint k = 0u; k < uint(32 / TQ_KB); k++) {
          const float cv = f_kcb[(bits >> (k * uint(TQ_KB))) & uint((1 << TQ_KB) - 1)];
          [[unroll]] for (int i = 0; i < TQ_RQ4; i++) d[i] += f_q[i][x * uint(32 / TQ_KB) + k] * cv;
        }
      }
      in_chunk[e] = int(tt) < n;
      const float ksc = in_chunk[e] ? uintBitsToFloat(f_k[w][tt * uint(TQ_KSW) + uint(TQ_K_SCALE / 4)]) : 0.0;
      vsc[e] = in_chunk[e] ? uintBitsToFloat(f_v[w][tt * uint(TQ_VSW) + uint(TQ_V_SCALE / 4)]) : 0.0;
      [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
        const bool live = in_chunk[e] && t0 + int(tt) < ctx[r];
        sc[e][r] = live ? ksc * d[r >> 2][r & 3] : TQ_NEG;
        mx[r] = max(mx[r], sc[e][r]);
      }
    }
    float corr[TQ_RQ];
    [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
      const float nm = max(m[r], subgroupMax(mx[r]));
      corr[r] = exp(m[r] - nm);
      m[r] = nm;
      l[r] *= corr[r];
      [[unroll]] for (int e = 0; e < TQ_TPL; e++) {
        const float p = sc[e][r] > TQ_NEG ? exp(sc[e][r] - nm) : 0.0;
        l[r] += p;
        pv[e][r >> 2][r & 3] = p * vsc[e];
      }
    }
    [[unroll]] for (int k = 0; k < TQ_WPL * TQ_VCH; k++)
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++)
        acc[k][i] *= vec4(corr[4 * i], corr[4 * i + 1], corr[4 * i + 2], corr[4 * i + 3]);

    /* Values: per step, TQ_TPS tokens of TQ_WPL words per lane.  Tokens
     * past n carry weight 0 (their lanes saw no live score). */
    for (int st = 0; st < n; st += TQ_TPS) {
#if TQ_TPS > 1
      const uint tt = uint(st) + sub;
#else
      const uint tt = uint(st);
#endif
      const int e = st / TQ_S; /* the same for every lane of the step */
      vec4 p[TQ_RQ4];
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++) p[i] = subgroupShuffle(pv[e][i], tt % uint(TQ_S));
      [[unroll]] for (int y = 0; y < TQ_WPL; y++) {
#if TQ_TPS > 1
        const uint x = f_v[w][tt * uint(TQ_VSW) + uint(TQ_V_IDX / 4) + word];
#else
        const uint x = f_v[w][tt * uint(TQ_VSW) + uint(TQ_V_IDX / 4) + lane + uint(y * TQ_S)];
#endif
        [[unroll]] for (int k = 0; k < TQ_VCH; k++) {
          const float cv = f_vcb[(x >> (uint(k) * uint(TQ_VB))) & uint((1 << TQ_VB) - 1)];
          [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[y * TQ_VCH + k][i] += p[i] * cv;
        }
      }
    }
    subgroupBarrier(); /* the next chunk's copy reuses this worker's buffers */
  }

  /* Merge the lanes: sums over the subgroup; token groups of a word. */
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) l[r] = subgroupAdd(l[r]);
#if TQ_TPS > 1
  [[unroll]] for (uint o = uint(TQ_VW); o < uint(TQ_S); o <<= 1)
    [[unroll]] for (int k = 0; k < TQ_VCH; k++)
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[k][i] += subgroupShuffleXor(acc[k][i], o);
#endif

  /* Merge the workers, one row at a time, into this split's partial. */
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r;
    if (row >= rows) break;
    barrier();
    if (lane == 0u) {
      f_m[w] = m[r];
      f_l[w] = l[r];
    }
#if TQ_TPS > 1
    if (sub == 0u)
      [[unroll]] for (int k = 0; k < TQ_VCH; k++) f_acc[w][word * uint(TQ_VCH) + uint(k)] = acc[k][r >> 2][r & 3];
#else
    [[unroll]] for (int y = 0; y < TQ_WPL; y++)
      [[unroll]] for (int k = 0; k < TQ_VCH; k++)
        f_acc[w][(lane + uint(y * TQ_S)) * uint(TQ_VCH) + uint(k)] = acc[y * TQ_VCH + k][r >> 2][r & 3];
#endif
    barrier();
    float mt = TQ_NEG, lt = 0.0, e[TQ_FW];
    [[unroll]] for (int x = 0; x < TQ_FW; x++) mt = max(mt, f_m[x]);
    [[unroll]] for (int x = 0; x < TQ_FW; x++) {
      e[x] = f_l[x] > 0.0 ? exp(f_m[x] - mt) : 0.0;
      lt += e[x] * f_l[x];
    }
    const uint part = (((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(rows) + uint(row)) *
                           uint(pc.splits) + uint(split)) * uint(TQ_PART);
    if (TID == 0u) {
      work[part] = mt;
      work[part + 1u] = lt;
    }
    for (uint j = TID; j < uint(TQ_D); j += TQ_WG) {
      float x = 0.0;
      [[unroll]] for (int y = 0; y < TQ_FW; y++) x += e[y] * f_acc[y][j];
      work[part + 2u + j] = x;
    }
  }
}
