/* templates/vulkan/dequant.comp - packed cache -> activations: one
 * workgroup per (token, kv head, sequence), dispatched as (n_tokens,
 * kv_heads, batch).  Each part is decoded in the rotated basis, rotated
 * back and scattered into channel order in shared memory; the row is then
 * written a word at a time. */
shared float d_row[TQ_D];

#define TQ_KW_SLOT (TQ_K_BYTES / 4)
#define TQ_VW_SLOT (TQ_V_BYTES / 4)

/* The outlier part at idx_at / scale_at of the slot at word offset s into
 * d_row: raw f16, or decoded and rotated back. */
#define TQ_DEQUANT_OUTLIERS(cache, s, idx_at, scale_at)                          \
  {                                                                              \
    barrier();                                                                   \
    if (TQ_OB == 16) {                                                           \
      for (uint j = TID; j < uint(TQ_O); j += TQ_WG)                             \
        d_row[tq_channel(h, j)] = tq_h2f((cache[s + (idx_at) / 4u + (j >> 1)] >> ((j & 1u) << 4)) & 0xFFFFu); \
    } else {                                                                     \
      float osc = uintBitsToFloat(cache[s + (scale_at) / 4u]);                   \
      for (uint j = TID; j < uint(TQ_O); j += TQ_WG) {                           \
        uint bit = j * uint(TQ_OB_Q), w = s + (idx_at) / 4u + (bit >> 5), sh = bit & 31u; \
        uint x = cache[w] >> sh;                                                 \
        if (sh + uint(TQ_OB_Q) > 32u) x |= cache[w + 1u] << (32u - sh);          \
        rot_in[j] = osc * tab[uint(TQ_T_OCB) + (x & ((1u << uint(TQ_OB_Q)) - 1u))]; \
      }                                                                          \
      tq_rotate(uint(TQ_O), TQ_T_OUT_SIGNS, TQ_T_OUT_MATRIX, true);              \
      for (uint j = TID; j < uint(TQ_O); j += TQ_WG) d_row[tq_channel(h, j)] = rot_out[j]; \
    }                                                                            \
  }

void main() {
  const int t = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), b = int(gl_WorkGroupID.z);
  const uint at = ((uint(b) * uint(pc.n_tokens) + uint(t)) * uint(pc.kv_heads) + uint(h)) * uint(TQ_D);

  /* ---- key ---- */
  uint s = tq_slot(b, h, t, uint(TQ_KW_SLOT));
  float sc = uintBitsToFloat(k_cache[s + uint(TQ_K_SCALE / 4)]);
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG)
    rot_in[j] = sc * tab[uint(TQ_T_KCB) + tq_k_index(s + uint(TQ_K_IDX / 4), j, uint(TQ_KB))];
#if TQ_QJL
  {
    /* The QJL part dequantizes to sqrt(pi/2)/m |r| S^T sign. */
    float c = 1.25331413731550025 / float(TQ_M) * uintBitsToFloat(k_cache[s + uint(TQ_K_RNORM / 4)]);
    for (uint j = TID; j < uint(TQ_M); j += TQ_WG) {
      float acc = 0.0;
      for (uint i = 0u; i < uint(TQ_M); i++)
        acc += (tq_k_index(s + uint(TQ_K_QJL / 4), i, 1u) != 0u ? c : -c) * tab[uint(TQ_T_QJL) + i * uint(TQ_M) + j];
      rot_in[j] += acc;
    }
  }
#endif
  tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, true);
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) d_row[tq_channel(h, uint(TQ_O) + j)] = rot_out[j];
#if TQ_O > 0
  TQ_DEQUANT_OUTLIERS(k_cache, s, uint(TQ_K_OUT_IDX), uint(TQ_K_OUT_SCALE))
#endif
  barrier();
  for (uint w = TID; w < uint(TQ_D / 2); w += TQ_WG) TQ_STORE2(k_act, at + 2u * w, d_row[2u * w], d_row[2u * w + 1u]);

  /* ---- value ---- */
  barrier();
  s = tq_slot(b, h, t, uint(TQ_VW_SLOT));
#if TQ_VMINMAX
  for (uint j = TID; j < uint(TQ_D); j += TQ_WG) {
    uint gw = v_cache[s + uint(TQ_V_GROUPS / 4) + j / uint(TQ_VGROUP)];
    d_row[j] = tq_h2f(gw >> 16) + tq_h2f(gw & 0xFFFFu) * float(tq_v_index(s + uint(TQ_V_IDX / 4), j, uint(TQ_VB)));
  }
#else
  sc = uintBitsToFloat(v_cache[s + uint(TQ_V_SCALE / 4)]);
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG)
    rot_in[j] = sc * tab[uint(TQ_T_VCB) + tq_v_index(s + uint(TQ_V_IDX / 4), j, uint(TQ_VB))];
  tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, true);
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) d_row[tq_channel(h, uint(TQ_O) + j)] = rot_out[j];
#if TQ_O > 0
  TQ_DEQUANT_OUTLIERS(v_cache, s, uint(TQ_V_OUT_IDX), uint(TQ_V_OUT_SCALE))
#endif
#endif
  barrier();
  for (uint w = TID; w < uint(TQ_D / 2); w += TQ_WG) TQ_STORE2(v_act, at + 2u * w, d_row[2u * w], d_row[2u * w + 1u]);
}
