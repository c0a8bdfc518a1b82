/* templates/vulkan/encode.comp - encode: one workgroup per (new token, kv
 * head, sequence), dispatched as (n_tokens, kv_heads, batch).  The key and
 * then the value row are gathered into channel order, rotated, quantized
 * and packed word by word: each word of a slot has one writer. */
shared float e_x[TQ_D];
shared uint e_idx[TQ_D];

/* Quantizes rot_out[0..n) at bits with the codebook at tab[cb_at] and
 * boundaries at tab[bnd_at]; leaves indices in e_idx, returns the scale. */
float tq_quantize(uint n, uint bits, uint cb_at, uint bnd_at) {
  float n2 = 0.0;
  for (uint j = TID; j < n; j += TQ_WG) n2 += rot_out[j] * rot_out[j];
  n2 = tq_wg_sum(n2);
  float z = n2 > 0.0 ? sqrt(float(n) / n2) : 0.0, c2 = 0.0;
  uint levels = 1u << bits;
  for (uint j = TID; j < n; j += TQ_WG) {
    float x = rot_out[j] * z;
    uint lo = 0u, hi = levels - 1u;
    while (lo < hi) {
      uint mid = (lo + hi) >> 1;
      if (x >= tab[bnd_at + mid]) lo = mid + 1u; else hi = mid;
    }
    e_idx[j] = lo;
    float c = tab[cb_at + lo];
    c2 += c * c;
  }
  c2 = tq_wg_sum(c2); /* its barriers also publish e_idx */
  float scale = sqrt(n2 / float(n));
  if (TQ_NC != 0 && c2 > 0.0) scale = sqrt(n2 / c2);
  return scale;
}

/* Word w of the bit stream of e_idx[0..n) at bits per index. */
uint tq_pack_word(uint w, uint n, uint bits) {
  uint word = 0u, end = min(32u * w + 32u, n * bits);
  for (uint bit = 32u * w; bit < end; bit++)
    word |= ((e_idx[bit / bits] >> (bit % bits)) & 1u) << (bit - 32u * w);
  return word;
}

#define TQ_PACK(cache, at, n, bits)                                   \
  for (uint w = TID; w < ((n) * (bits) + 31u) / 32u; w += TQ_WG)      \
    cache[(at) + w] = tq_pack_word(w, n, bits);

#define TQ_KW_SLOT (TQ_K_BYTES / 4)
#define TQ_VW_SLOT (TQ_V_BYTES / 4)

/* The outlier part of a slot: raw f16 pairs, or its own quantized part. */
#define TQ_ENCODE_OUTLIERS(cache, slot, idx_at, scale_at)                    \
  {                                                                          \
    barrier();                                                               \
    for (uint j = TID; j < uint(TQ_O); j += TQ_WG) rot_in[j] = e_x[tq_channel(h, j)]; \
    if (TQ_OB == 16) {                                                       \
      barrier();                                                             \
      for (uint w = TID; w < uint(TQ_O + 1) / 2u; w += TQ_WG) {              \
        uint lo = tq_f2h(rot_in[2u * w]);                                    \
        uint hi = 2u * w + 1u < uint(TQ_O) ? tq_f2h(rot_in[2u * w + 1u]) : 0u; \
        cache[slot + (idx_at) / 4u + w] = lo | (hi << 16);                   \
      }                                                                      \
    } else {                                                                 \
      tq_rotate(uint(TQ_O), TQ_T_OUT_SIGNS, TQ_T_OUT_MATRIX, false);         \
      float osc = tq_quantize(uint(TQ_O), uint(TQ_OB_Q), uint(TQ_T_OCB), uint(TQ_T_OBND)); \
      TQ_PACK(cache, slot + (idx_at) / 4u, uint(TQ_O), uint(TQ_OB_Q))        \
      if (TID == 0u) cache[slot + (scale_at) / 4u] = floatBitsToUint(osc);   \
    }                                                                        \
  }

void main() {
  const int i = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), b = int(gl_WorkGroupID.z);
  const int t = seq_lens[b] - pc.n_tokens + i;
  const uint at = ((uint(b) * uint(pc.n_tokens) + uint(i)) * uint(pc.kv_heads) + uint(h)) * uint(TQ_D);

  /* ---- key ---- */
  uint slot = tq_slot(b, h, t, uint(TQ_KW_SLOT));
  for (uint j = TID; j < uint(TQ_D); j += TQ_WG) e_x[j] = TQ_LOAD(k_act, at + j);
  barrier();
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) rot_in[j] = e_x[tq_channel(h, uint(TQ_O) + j)];
  tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, false);
  float sc = tq_quantize(uint(TQ_M), uint(TQ_KB), uint(TQ_T_KCB), uint(TQ_T_KBND));
  TQ_PACK(k_cache, slot + uint(TQ_K_IDX / 4), uint(TQ_M), uint(TQ_KB))
  if (TID == 0u) k_cache[slot + uint(TQ_K_SCALE / 4)] = floatBitsToUint(sc);
#if TQ_QJL
  {
    /* Residual r = y - scale c[idx] (kept in rot_in), its norm, and the
     * signs of S r. */
    barrier();
    float rn2 = 0.0;
    for (uint j = TID; j < uint(TQ_M); j += TQ_WG) {
      float r = rot_out[j] - sc * tab[uint(TQ_T_KCB) + e_idx[j]];
      rot_in[j] = r;
      rn2 += r * r;
    }
    rn2 = tq_wg_sum(rn2);
    for (uint k = TID; k < uint(TQ_M); k += TQ_WG) {
      float acc = 0.0;
      for (uint j = 0u; j < uint(TQ_M); j++) acc += tab[uint(TQ_T_QJL) + k * uint(TQ_M) + j] * rot_in[j];
      e_idx[k] = acc >= 0.0 ? 1u : 0u;
    }
    barrier();
    TQ_PACK(k_cache, slot + uint(TQ_K_QJL / 4), uint(TQ_M), 1u)
    if (TID == 0u) k_cache[slot + uint(TQ_K_RNORM / 4)] = floatBitsToUint(sqrt(rn2));
  }
#endif
#if TQ_O > 0
  TQ_ENCODE_OUTLIERS(k_cache, slot, uint(TQ_K_OUT_IDX), uint(TQ_K_OUT_SCALE))
#endif

  /* ---- value ---- */
  barrier();
  slot = tq_slot(b, h, t, uint(TQ_VW_SLOT));
  for (uint j = TID; j < uint(TQ_D); j += TQ_WG) e_x[j] = TQ_LOAD(v_act, at + j);
  barrier();
#if TQ_VMINMAX
  {
    /* Per group: f16 step and minimum, then indices against the rounded
     * values (docs/FORMAT.md). */
    const uint top = (1u << TQ_VB) - 1u;
    for (uint g = TID; g < uint(TQ_D / TQ_VGROUP); g += TQ_WG) {
      float mn = e_x[g * uint(TQ_VGROUP)], mx = mn;
      for (uint j = 1u; j < uint(TQ_VGROUP); j++) {
        mn = min(mn, e_x[g * uint(TQ_VGROUP) + j]);
        mx = max(mx, e_x[g * uint(TQ_VGROUP) + j]);
      }
      uint hs = tq_f2h((mx - mn) / float(top)), hm = tq_f2h(mn);
      float st = tq_h2f(hs), lo = tq_h2f(hm);
      v_cache[slot + uint(TQ_V_GROUPS / 4) + g] = hs | (hm << 16);
      for (uint j = 0u; j < uint(TQ_VGROUP); j++) {
        float q = st > 0.0 ? floor((e_x[g * uint(TQ_VGROUP) + j] - lo) / st + 0.5) : 0.0;
        e_idx[g * uint(TQ_VGROUP) + j] = uint(clamp(q, 0.0, float(top)));
      }
    }
    barrier();
    TQ_PACK(v_cache, slot + uint(TQ_V_IDX / 4), uint(TQ_D), uint(TQ_VB))
  }
#else
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) rot_in[j] = e_x[tq_channel(h, uint(TQ_O) + j)];
  tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, false);
  sc = tq_quantize(uint(TQ_M), uint(TQ_VB), uint(TQ_T_VCB), uint(TQ_T_VBND));
  TQ_PACK(v_cache, slot + uint(TQ_V_IDX / 4), uint(TQ_M), uint(TQ_VB))
  if (TID == 0u) v_cache[slot + uint(TQ_V_SCALE / 4)] = floatBitsToUint(sc);
#if TQ_O > 0
  TQ_ENCODE_OUTLIERS(v_cache, slot, uint(TQ_V_OUT_IDX), uint(TQ_V_OUT_SCALE))
#endif
#endif
}
