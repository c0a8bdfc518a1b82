/* templates/vulkan/attend.comp - decode and prefill attention, one split of
 * the context per workgroup, dispatched as (splits, kv_heads * row tiles,
 * batch).  A workgroup owns one kv head, TQ_RQ query rows (token, q head)
 * and one slice of the context, which it walks in tiles of TQ_WG tokens:
 *   1. one token per invocation: its key slot is scored against every row
 *      straight from codebook values (q rotated once, so no dequantized K),
 *   2. the tile's softmax maximum per row (subgroup operations when the
 *      device has them, else a tree in shared memory),
 *   3. one value channel per invocation: the tile's values are accumulated
 *      in the rotated basis, read straight from the packed slots.
 * The split's partial state (max, sum, accumulators) goes to the workspace;
 * the reduce stage merges the splits and rotates the output back once. */
#define TQ_VDIM (TQ_VMINMAX != 0 ? TQ_D : TQ_M + TQ_O) /* accumulated channels */
#define TQ_VCPL ((TQ_VDIM + TQ_WG - 1) / TQ_WG)          /* per invocation */
#define TQ_PART (2 + TQ_VDIM) /* workspace floats per (row, split) */

shared float a_q[TQ_RQ][TQ_M];   /* rotated, scaled main part of each row */
#if TQ_O > 0
shared float a_qo[TQ_RQ][TQ_O];  /* rotated (or raw) outlier part */
#endif
#if TQ_QJL
shared float a_qs[TQ_RQ][TQ_M];  /* S q, for the QJL term */
shared float a_qsum[TQ_RQ];
#endif
shared float a_kcb[1 << TQ_KB];
#if TQ_VMINMAX == 0
shared float a_vcb[1 << TQ_VB];
#endif
#if TQ_O > 0 && TQ_OB != 16
shared float a_ocb[1 << TQ_OB];
#endif
shared float a_p[TQ_RQ][TQ_WG];  /* weights of the tile's tokens */
shared uint a_vslot[TQ_WG];      /* value slot (word offset) of each token */
shared float a_max[TQ_RQ][TQ_WG];

/* Every invocation gets the maximum over the workgroup of x[r], per row. */
void tq_tile_max(inout float x[TQ_RQ]) {
#if TQ_SUBGROUPS
  for (int r = 0; r < TQ_RQ; r++) {
    float m = subgroupMax(x[r]);
    if (subgroupElect()) a_max[r][gl_SubgroupID] = m;
  }
  barrier();
  for (int r = 0; r < TQ_RQ; r++) {
    float m = a_max[r][0];
    for (uint s = 1u; s < gl_NumSubgroups; s++) m = max(m, a_max[r][s]);
    x[r] = m;
  }
  barrier();
#else
  for (int r = 0; r < TQ_RQ; r++) a_max[r][TID] = x[r];
  barrier();
  for (uint s = TQ_WG / 2u; s > 0u; s >>= 1) {
    if (TID < s)
      for (int r = 0; r < TQ_RQ; r++) a_max[r][TID] = max(a_max[r][TID], a_max[r][TID + s]);
    barrier();
  }
  for (int r = 0; r < TQ_RQ; r++) x[r] = a_max[r][0];
  barrier();
#endif
}

/* Scores of the key at word offset ks against every row (unmasked). */
void tq_score(uint ks, out float sc[TQ_RQ]) {
  float dot[TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) dot[r] = 0.0;
  const uint base = ks + uint(TQ_K_IDX / 4);
#if 32 % TQ_KB == 0
  /* Whole indices per word: one load per word, then shifts. */
  for (uint w = 0u; w < uint(TQ_M * TQ_KB / 32); w++) {
    uint word = k_cache[base + w];
    for (uint k = 0u; k < uint(32 / TQ_KB); k++) {
      float kv = a_kcb[(word >> (k * uint(TQ_KB))) & uint((1 << TQ_KB) - 1)];
      uint j = w * uint(32 / TQ_KB) + k;
      for (int r = 0; r < TQ_RQ; r++) dot[r] += a_q[r][j] * kv;
    }
  }
  /* Indices past the last whole word (m * bits not a multiple of 32). */
  for (uint j = uint(TQ_M * TQ_KB / 32) * uint(32 / TQ_KB); j < uint(TQ_M); j++) {
    float kv = a_kcb[tq_k_index(base, j, uint(TQ_KB))];
    for (int r = 0; r < TQ_RQ; r++) dot[r] += a_q[r][j] * kv;
  }
#else
  for (uint j = 0u; j < uint(TQ_M); j++) {
    float kv = a_kcb[tq_k_index(base, j, uint(TQ_KB))];
    for (int r = 0; r < TQ_RQ; r++) dot[r] += a_q[r][j] * kv;
  }
#endif
  float ksc = uintBitsToFloat(k_cache[ks + uint(TQ_K_SCALE / 4)]);
  for (int r = 0; r < TQ_RQ; r++) sc[r] = ksc * dot[r];
#if TQ_QJL
  {
    /* sqrt(pi/2) / m * |r| * <S q, 2 sign - 1> */
    float pos[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) pos[r] = 0.0;
    for (uint w = 0u; w < uint((TQ_M + 31) / 32); w++) {
      uint word = k_cache[ks + uint(TQ_K_QJL / 4) + w];
      for (uint k = 0u; k < 32u && 32u * w + k < uint(TQ_M); k++)
        if (((word >> k) & 1u) != 0u)
          for (int r = 0; r < TQ_RQ; r++) pos[r] += a_qs[r][32u * w + k];
    }
    float f = 1.25331413731550025 / float(TQ_M) * uintBitsToFloat(k_cache[ks + uint(TQ_K_RNORM / 4)]);
    for (int r = 0; r < TQ_RQ; r++) sc[r] += f * (2.0 * pos[r] - a_qsum[r]);
  }
#endif
#if TQ_O > 0
  {
    float osum[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) osum[r] = 0.0;
    for (uint j = 0u; j < uint(TQ_O); j++) {
#if TQ_OB == 16
      uint word = k_cache[ks + uint(TQ_K_OUT_IDX / 4) + (j >> 1)];
      float kv = tq_h2f((word >> ((j & 1u) << 4)) & 0xFFFFu);
#else
      float kv = a_ocb[tq_k_index(ks + uint(TQ_K_OUT_IDX / 4), j, uint(TQ_OB))];
#endif
      for (int r = 0; r < TQ_RQ; r++) osum[r] += a_qo[r][j] * kv;
    }
#if TQ_OB == 16
    const float osc = 1.0;
#else
    const float osc = uintBitsToFloat(k_cache[ks + uint(TQ_K_OUT_SCALE / 4)]);
#endif
    for (int r = 0; r < TQ_RQ; r++) sc[r] += osc * osum[r];
  }
#endif
}

/* Value channel j (accumulator order) of the value slot at word offset vs. */
float tq_value(uint vs, uint j) {
#if TQ_VMINMAX
  uint gw = v_cache[vs + uint(TQ_V_GROUPS / 4) + j / uint(TQ_VGROUP)];
  return tq_h2f(gw >> 16) + tq_h2f(gw & 0xFFFFu) * float(tq_v_index(vs + uint(TQ_V_IDX / 4), j, uint(TQ_VB)));
#else
  if (j < uint(TQ_M))
    return uintBitsToFloat(v_cache[vs + uint(TQ_V_SCALE / 4)]) *
           a_vcb[tq_v_index(vs + uint(TQ_V_IDX / 4), j, uint(TQ_VB))];
#if TQ_O > 0
  j -= uint(TQ_M);
#if TQ_OB == 16
  return tq_h2f((v_cache[vs + uint(TQ_V_OUT_IDX / 4) + (j >> 1)] >> ((j & 1u) << 4)) & 0xFFFFu);
#else
  return uintBitsToFloat(v_cache[vs + uint(TQ_V_OUT_SCALE / 4)]) *
         a_ocb[tq_v_index(vs + uint(TQ_V_OUT_IDX / 4), j, uint(TQ_OB))];
#endif
#else
  return 0.0;
#endif
#endif
}

void main() {
  const int split = int(gl_WorkGroupID.x), b = int(gl_WorkGroupID.z);
  const int rows = pc.n_tokens * TQ_G, tiles = (rows + TQ_RQ - 1) / TQ_RQ;
  const int h = int(gl_WorkGroupID.y) / tiles, r0 = (int(gl_WorkGroupID.y) % tiles) * TQ_RQ;
  const int len = seq_lens[b];

  for (uint i = TID; i < uint(1 << TQ_KB); i += TQ_WG) a_kcb[i] = tab[uint(TQ_T_KCB) + i];
#if TQ_VMINMAX == 0
  for (uint i = TID; i < uint(1 << TQ_VB); i += TQ_WG) a_vcb[i] = tab[uint(TQ_T_VCB) + i];
#endif
#if TQ_O > 0 && TQ_OB != 16
  for (uint i = TID; i < uint(1 << TQ_OB); i += TQ_WG) a_ocb[i] = tab[uint(TQ_T_OCB) + i];
#endif

  /* Rotate and scale the workgroup's query rows once. */
  int ctx[TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r, tok = row / TQ_G, g = row % TQ_G;
    ctx[r] = row < rows ? len - pc.n_tokens + tok + 1 : 0;
    const uint at = row < rows ? ((uint(b) * uint(pc.n_tokens) + uint(tok)) * uint(pc.kv_heads * TQ_G) +
                                  uint(h * TQ_G + g)) * uint(TQ_D) : 0u;
    barrier();
    for (uint j = TID; j < uint(TQ_M); j += TQ_WG)
      rot_in[j] = row < rows ? pc.sm_scale * TQ_LOAD(q_act, at + tq_channel(h, uint(TQ_O) + j)) : 0.0;
    tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, false);
    for (uint j = TID; j < uint(TQ_M); j += TQ_WG) a_q[r][j] = rot_out[j];
#if TQ_O > 0
    barrier();
    for (uint j = TID; j < uint(TQ_O); j += TQ_WG)
      rot_in[j] = row < rows ? pc.sm_scale * TQ_LOAD(q_act, at + tq_channel(h, j)) : 0.0;
#if TQ_OB == 16
    barrier();
    for (uint j = TID; j < uint(TQ_O); j += TQ_WG) a_qo[r][j] = rot_in[j];
#else
    tq_rotate(uint(TQ_O), TQ_T_OUT_SIGNS, TQ_T_OUT_MATRIX, false);
    for (uint j = TID; j < uint(TQ_O); j += TQ_WG) a_qo[r][j] = rot_out[j];
#endif
#endif
  }
  barrier();
#if TQ_QJL
  for (int r = 0; r < TQ_RQ; r++)
    for (uint k = TID; k < uint(TQ_M); k += TQ_WG) {
      float acc = 0.0;
      for (uint j = 0u; j < uint(TQ_M); j++) acc += tab[uint(TQ_T_QJL) + k * uint(TQ_M) + j] * a_q[r][j];
      a_qs[r][k] = acc;
    }
  barrier();
  if (TID < uint(TQ_RQ)) {
    float sum = 0.0;
    for (uint k = 0u; k < uint(TQ_M); k++) sum += a_qs[TID][k];
    a_qsum[TID] = sum;
  }
  barrier();
#endif

  float acc[TQ_RQ][TQ_VCPL], m[TQ_RQ], l[TQ_RQ];
  for (int r = 0; r < TQ_RQ; r++) {
    m[r] = TQ_NEG;
    l[r] = 0.0;
    for (int c = 0; c < TQ_VCPL; c++) acc[r][c] = 0.0;
  }
  /* This split's slice of the context (the longest row sees len tokens). */
  const int slice = (len + pc.splits - 1) / pc.splits;
  const int t_begin = split * slice, t_end = min(len, t_begin + slice);
  for (int tile = t_begin; tile < t_end; tile += int(TQ_WG)) {
    const int t = tile + int(TID);
    float sc[TQ_RQ];
    if (t < t_end) {
      tq_score(tq_slot(b, h, t, uint(TQ_K_BYTES / 4)), sc);
      a_vslot[TID] = tq_slot(b, h, t, uint(TQ_V_BYTES / 4));
    }
    bool live[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) {
      live[r] = t < t_end && t < ctx[r];
      if (!live[r]) sc[r] = TQ_NEG;
    }
    float mx[TQ_RQ] = sc;
    tq_tile_max(mx);
    float corr[TQ_RQ];
    for (int r = 0; r < TQ_RQ; r++) {
      float nm = max(m[r], mx[r]);
      corr[r] = exp(m[r] - nm);
      m[r] = nm;
      a_p[r][TID] = live[r] ? exp(sc[r] - nm) : 0.0;
    }
    barrier();
    const int n = min(int(TQ_WG), t_end - tile);
    for (int r = 0; r < TQ_RQ; r++) {
      l[r] *= corr[r];
      for (int c = 0; c < TQ_VCPL; c++) acc[r][c] *= corr[r];
    }
    for (int tt = 0; tt < n; tt++) {
      const uint vs = a_vslot[tt];
      for (int r = 0; r < TQ_RQ; r++) l[r] += a_p[r][tt];
      for (int c = 0; c < TQ_VCPL; c++) {
        const uint j = TID + uint(c) * TQ_WG;
        if (j < uint(TQ_VDIM)) {
          float v = tq_value(vs, j);
          for (int r = 0; r < TQ_RQ; r++) acc[r][c] += a_p[r][tt] * v;
        }
      }
    }
    barrier();
  }

  /* This split's partial state of each row. */
  for (int r = 0; r < TQ_RQ; r++) {
    const int row = r0 + r;
    if (row >= rows) break;
    const uint part = (((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(rows) + uint(row)) *
                           uint(pc.splits) + uint(split)) * uint(TQ_PART);
    if (TID == 0u) {
      work[part] = m[r];
      work[part + 1u] = l[r];
    }
    for (int c = 0; c < TQ_VCPL; c++) {
      const uint j = TID + uint(c) * TQ_WG;
      if (j < uint(TQ_VDIM)) work[part + 2u + j] = acc[r][c];
    }
  }
}
