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
 * flash-decoding worker over chunks of TQ_FAST_SG tokens (one per lane) of
 * the split's slice:
 *  - keys and values are read straight from the caches into registers, with
 *    no shared-memory staging and no barrier in the chunk loop: a lane loads
 *    the index words and scales of the token it scores and the value index
 *    words it accumulates.  The loads run one chunk ahead: the next chunk's
 *    are issued (constant trip counts, so all are in flight at once) before
 *    the current chunk is computed from the registers loaded a round
 *    earlier, which hides their latency; the first chunk's go out before
 *    the query rotation;
 *  - every lane scores its token: centroid lookups in a 16-entry table
 *    times the tile's query rows, read as broadcast vec4s of four rows per
 *    channel;
 *  - the softmax maximum is kept per subgroup (lanes' partial sums are only
 *    rescaled);
 *  - values: each lane owns index words (8 or 16 channels each) of one
 *    token at a time and all rows, the weights arriving by subgroup shuffle
 *    from the lane that scored the token.
 * A chunk of one token per lane keeps the registers a lane carries (and the
 * code) the same at every subgroup size.  Every loop that indexes a
 * register array has a constant trip count and is unrolled, and no branch
 * inside such a loop holds another loop (spirv-opt then unrolls it), so
 * every index is a constant: NVIDIA's compiler moves arrays indexed
 * otherwise into local memory.  The subgroups merge once at the end into
 * the partial state (max, sum, accumulators) that the reduce stage reads. */
#if TQ_RQ % 4 != 0
#error "the fast attend stage holds query rows as vec4s of four rows"
#endif
#define TQ_VDIM TQ_D               /* accumulated channels (no outliers) */
#define TQ_PART (2 + TQ_VDIM)      /* workspace floats per (row, split) */
#define TQ_FW 4                    /* subgroups (workers) per workgroup */
#define TQ_S TQ_FAST_SG            /* lanes of a worker, tokens of a chunk */
#define TQ_RQ4 (TQ_RQ / 4)         /* vec4s of query rows */
#define TQ_ALIGN 32                /* slices are whole multiples of this */
#define TQ_KW (TQ_D * TQ_KB / 32)  /* index words of a key */
#define TQ_VW (TQ_D * TQ_VB / 32)  /* index words of a value */
#define TQ_KSW (TQ_K_BYTES / 4)    /* words of a key slot */
#define TQ_VSW (TQ_V_BYTES / 4)    /* words of a value slot */
#define TQ_VCH (32 / TQ_VB)        /* value channels of one index word */
/* Value accumulation: a lane owns TQ_WPL words of one token per step and
 * TQ_TPS tokens are accumulated per step (one of the two is 1), in TQ_VST
 * steps a chunk: TQ_VST * TQ_WPL = TQ_VW words a lane loads per chunk. */
#if TQ_VW > TQ_S
#define TQ_WPL (TQ_VW / TQ_S)
#define TQ_TPS 1
#else
#define TQ_WPL 1
#define TQ_TPS (TQ_S / TQ_VW)
#endif
#define TQ_VST (TQ_S / TQ_TPS)
/* Chunks start on multiples of S and pages are powers of two (a divisor or
 * a multiple of 32), so a chunk's slots are one run at a stride where pages
 * are at least S tokens (and in a contiguous cache), else one run per page
 * of TQ_PAGE tokens. */
#if TQ_PAGED && TQ_BLOCK < TQ_S
#define TQ_PAGE TQ_BLOCK
#else
#define TQ_PAGE TQ_S
#endif

shared vec4 f_q[TQ_RQ4][TQ_D]; /* f_q[i][j]: channel j of rows 4i .. 4i+3 */
shared float f_kcb[1 << TQ_KB];
shared float f_vcb[1 << TQ_VB];
shared float f_m[TQ_FW], f_l[TQ_FW];
shared float f_acc[TQ_FW][TQ_D]; /* one row of every worker, when merging */

/* Issues the loads of what lane needs of the chunk of tokens t0 .. t0+n-1
 * (t0 a multiple of S, 0 < n <= S) of sequence b, kv head h: the key index
 * words kx and the key and value scales sc of token t0 + lane, and the
 * value index words vx it accumulates (step s: word `word` + y * S of
 * token s * TPS + sub).  Lanes and steps past n take token n - 1, so every
 * address is a slot of the sequence; their weights are 0.  Key and value
 * slots share their slot index. */
void tq_fetch(int b, int h, int t0, int n, uint lane, uint sub, uint word, out uint kx[TQ_KW],
              out vec2 sc, out uint vx[TQ_VST][TQ_WPL]) {
  const uint slot = tq_slot(b, h, t0 + min(int(lane), n - 1), 1u);
  const uint ka = slot * uint(TQ_KSW), va = slot * uint(TQ_VSW);
  [[unroll]] for (int x = 0; x < TQ_KW; x++) kx[x] = k_cache[ka + uint(TQ_K_IDX / 4 + x)];
  sc = vec2(uintBitsToFloat(k_cache[ka + uint(TQ_K_SCALE / 4)]),
            uintBitsToFloat(v_cache[va + uint(TQ_V_SCALE / 4)]));
#if TQ_PAGE == TQ_S
  const uint v0 = tq_slot(b, h, t0, uint(TQ_VSW)) + uint(TQ_V_IDX / 4) + word;
#endif
  [[unroll]] for (int s = 0; s < TQ_VST; s++) {
    const uint tt = uint(s * TQ_TPS) + sub;
#if TQ_PAGE == TQ_S
    const uint at = v0 + min(tt, uint(n - 1)) * uint(TQ_VSW);
#else
    /* The slot's address from the lane that scored the token. */
    const uint at = subgroupShuffle(va, tt) + uint(TQ_V_IDX / 4) + word;
#endif
    [[unroll]] for (int y = 0; y < TQ_WPL; y++) vx[s][y] = v_cache[at + uint(y * TQ_S)];
  }
}

void main() {
  const int split = int(gl_WorkGroupID.x), b = int(gl_WorkGroupID.z);
  const int rows = pc.n_tokens * TQ_G, tiles = (rows + TQ_RQ - 1) / TQ_RQ;
  const int h = int(gl_WorkGroupID.y) / tiles, r0 = (int(gl_WorkGroupID.y) % tiles) * TQ_RQ;
  const int len = seq_lens[b];
  const uint w = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  /* Values: the lane's token of a step (0 where a token's words span the
   * subgroup; a constant then, so step tokens are constants too) and its
   * first index word of that token. */
  const uint sub = TQ_TPS > 1 ? lane / uint(TQ_VW) : 0u;
  const uint word = TQ_TPS > 1 ? lane % uint(TQ_VW) : lane;

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

  /* Slices are whole multiples of 32 tokens, so chunks start on multiples
   * of S and pages of a paged cache line up with them.  Worker w takes
   * chunks w, w + FW, ... and loads its first before the queries are
   * rotated. */
  int slice = (len + pc.splits - 1) / pc.splits;
  slice = (slice + TQ_ALIGN - 1) / TQ_ALIGN * TQ_ALIGN;
  const int t_begin = min(len, split * slice), t_end = min(len, t_begin + slice);
  const int chunks = (t_end - t_begin + TQ_S - 1) / TQ_S;
  uint kx[TQ_KW], vx[TQ_VST][TQ_WPL]; /* the next chunk's words, in flight */
  vec2 sx;
  if (int(w) < chunks) {
    const int t0 = t_begin + int(w) * TQ_S;
    tq_fetch(b, h, t0, min(TQ_S, t_end - t0), lane, sub, word, kx, sx, vx);
  }

  for (uint i = TID; i < uint(1 << TQ_KB); i += TQ_WG) f_kcb[i] = tab[uint(TQ_T_KCB) + i];
  for (uint i = TID; i < uint(1 << TQ_VB); i += TQ_WG) f_vcb[i] = tab[uint(TQ_T_VCB) + i];

  /* Each row's context: the cache tokens its query sees (none past the
   * last row). */
  int ctx[TQ_RQ];
  [[unroll]] for (int r = 0; r < TQ_RQ; r++)
    ctx[r] = r0 + r < rows ? len - pc.n_tokens + (r0 + r) / TQ_G + 1 : 0;

  /* Rotate and scale the tile's query rows once (zero past the last row). */
  for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r, tok = row / TQ_G, g = row % TQ_G;
    const uint at = row < rows ? ((uint(b) * uint(pc.n_tokens) + uint(tok)) * uint(pc.kv_heads * TQ_G) +
                                  uint(h * TQ_G + g)) * uint(TQ_D) : 0u;
    barrier();
    for (uint j = TID; j < uint(TQ_D); j += TQ_WG)
      rot_in[j] = row < rows ? pc.sm_scale * TQ_LOAD(q_act, at + tq_channel(h, j)) : 0.0;
    tq_rotate(uint(TQ_D), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, false);
    for (uint j = TID; j < uint(TQ_D); j += TQ_WG) f_q[r >> 2][j][r & 3] = rot_out[j];
  }
  barrier();

  float m[TQ_RQ], l[TQ_RQ];
  vec4 acc[TQ_WPL * TQ_VCH][TQ_RQ4];
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
    m[r] = TQ_NEG;
    l[r] = 0.0;
  }
  [[unroll]] for (int k = 0; k < TQ_WPL * TQ_VCH; k++)
    [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[k][i] = vec4(0.0);

  for (int c = int(w); c < chunks; c += TQ_FW) {
    const int t0 = t_begin + c * TQ_S, n = min(TQ_S, t_end - t0);
    /* This chunk's words, loaded a round ago; then the next chunk's loads
     * go out, to land while this one computes. */
    const uint kc[TQ_KW] = kx, vc[TQ_VST][TQ_WPL] = vx;
    const vec2 scale = sx;
    if (c + TQ_FW < chunks) {
      const int t1 = t0 + TQ_FW * TQ_S;
      tq_fetch(b, h, t1, min(TQ_S, t_end - t1), lane, sub, word, kx, sx, vx);
    }

    /* Scores: lane scores token t0 + lane against every row. */
    vec4 d[TQ_RQ4];
    [[unroll]] for (int i = 0; i < TQ_RQ4; i++) d[i] = vec4(0.0);
    [[unroll]] for (uint x = 0u; x < uint(TQ_KW); x++) {
      [[unroll]] for (uint k = 0u; k < uint(32 / TQ_KB); k++) {
        const float cv = f_kcb[(kc[x] >> (k * uint(TQ_KB))) & uint((1 << TQ_KB) - 1)];
        [[unroll]] for (int i = 0; i < TQ_RQ4; i++) d[i] += f_q[i][x * uint(32 / TQ_KB) + k] * cv;
      }
    }
    const bool in_chunk = int(lane) < n;
    vec4 pv[TQ_RQ4]; /* weight x value scale of the lane's token */
    float corr[TQ_RQ];
    [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
      const float sc = in_chunk && t0 + int(lane) < ctx[r] ? scale.x * d[r >> 2][r & 3] : TQ_NEG;
      const float nm = max(m[r], subgroupMax(sc));
      const float p = sc > TQ_NEG ? exp(sc - nm) : 0.0;
      corr[r] = exp(m[r] - nm);
      m[r] = nm;
      l[r] = l[r] * corr[r] + p;
      pv[r >> 2][r & 3] = p * scale.y;
    }
    [[unroll]] for (int k = 0; k < TQ_WPL * TQ_VCH; k++)
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++)
        acc[k][i] *= vec4(corr[4 * i], corr[4 * i + 1], corr[4 * i + 2], corr[4 * i + 3]);

    /* Values: step s takes token s * TPS + sub (TPS tokens a step), its
     * weights shuffled from the lane that scored it.  The whole chunk:
     * tokens past n carry weight 0 (their words are token n - 1's). */
    [[unroll]] for (int s = 0; s < TQ_VST; s++) {
      const uint tt = uint(s * TQ_TPS) + sub;
      vec4 p[TQ_RQ4];
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++) p[i] = subgroupShuffle(pv[i], tt);
      [[unroll]] for (int y = 0; y < TQ_WPL; y++) {
        [[unroll]] for (int k = 0; k < TQ_VCH; k++) {
          const float cv = f_vcb[(vc[s][y] >> (uint(k) * uint(TQ_VB))) & uint((1 << TQ_VB) - 1)];
          [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[y * TQ_VCH + k][i] += p[i] * cv;
        }
      }
    }
  }

  /* Merge the lanes: sums over the subgroup; the token groups of a word
   * (none where a token's words span the subgroup). */
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) l[r] = subgroupAdd(l[r]);
  [[unroll]] for (uint o = uint(TQ_VW); o < uint(TQ_S); o <<= 1)
    [[unroll]] for (int k = 0; k < TQ_VCH; k++)
      [[unroll]] for (int i = 0; i < TQ_RQ4; i++) acc[k][i] += subgroupShuffleXor(acc[k][i], o);

  /* Merge the workers, one row at a time, into this split's partial.  So
   * that the loop unrolls (and m, l and acc keep constant indices) no
   * branch in it holds a loop: rows past the last are merged too, only not
   * written, and lanes past the head's channels read channel 0. */
  [[unroll]] for (int r = 0; r < TQ_RQ; r++) {
    const bool row_ok = r0 + r < rows;
    barrier();
    if (lane == 0u) {
      f_m[w] = m[r];
      f_l[w] = l[r];
    }
    [[unroll]] for (int y = 0; y < TQ_WPL; y++)
      [[unroll]] for (int k = 0; k < TQ_VCH; k++)
        if (sub == 0u)
          f_acc[w][(word + uint(y * TQ_S)) * uint(TQ_VCH) + uint(k)] =
              acc[y * TQ_VCH + k][r >> 2][r & 3];
    barrier();
    float mt = TQ_NEG, lt = 0.0, e[TQ_FW];
    [[unroll]] for (int x = 0; x < TQ_FW; x++) mt = max(mt, f_m[x]);
    [[unroll]] for (int x = 0; x < TQ_FW; x++) {
      e[x] = f_l[x] > 0.0 ? exp(f_m[x] - mt) : 0.0;
      lt += e[x] * f_l[x];
    }
    const uint part = (((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(rows) + uint(r0 + r)) *
                           uint(pc.splits) + uint(split)) * uint(TQ_PART);
    if (row_ok && TID == 0u) {
      work[part] = mt;
      work[part + 1u] = lt;
    }
    [[unroll]] for (uint q = 0u; q < (uint(TQ_D) + TQ_WG - 1u) / TQ_WG; q++) {
      const uint j = TID + q * TQ_WG, jc = j < uint(TQ_D) ? j : 0u;
      float x = 0.0;
      [[unroll]] for (int y = 0; y < TQ_FW; y++) x += e[y] * f_acc[y][jc];
      if (row_ok && j < uint(TQ_D)) work[part + 2u + j] = x;
    }
  }
}
