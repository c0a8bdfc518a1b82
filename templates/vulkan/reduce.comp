/* templates/vulkan/reduce.comp - merges the context splits of one output
 * row, rotates it back once and writes it; dispatched as (rows, kv_heads,
 * batch) after the attend stage, whose partial states it reads from the
 * workspace. */
#define TQ_VDIM (TQ_VMINMAX != 0 ? TQ_D : TQ_M + TQ_O)
#define TQ_PART (2 + TQ_VDIM)

shared float r_acc[TQ_VDIM];
shared float r_row[TQ_D]; /* the output row in channel order */

void main() {
  const int row = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), b = int(gl_WorkGroupID.z);
  const int rows = pc.n_tokens * TQ_G, splits = pc.splits;
  const uint part = ((uint(b) * uint(pc.kv_heads) + uint(h)) * uint(rows) + uint(row)) *
                    uint(splits) * uint(TQ_PART);
  /* Every invocation folds the splits' maxima and sums (a few dozen). */
  float mx = TQ_NEG, total = 0.0;
  for (int s = 0; s < splits; s++) mx = max(mx, work[part + uint(s * TQ_PART)]);
  for (int s = 0; s < splits; s++) {
    float l = work[part + uint(s * TQ_PART) + 1u];
    total += l > 0.0 ? l * exp(work[part + uint(s * TQ_PART)] - mx) : 0.0;
  }
  for (uint j = TID; j < uint(TQ_VDIM); j += TQ_WG) {
    float v = 0.0;
    for (int s = 0; s < splits; s++) {
      const uint p = part + uint(s * TQ_PART);
      if (work[p + 1u] > 0.0) v += work[p + 2u + j] * exp(work[p] - mx);
    }
    r_acc[j] = v / total;
  }
  barrier();
#if TQ_VMINMAX
  for (uint j = TID; j < uint(TQ_D); j += TQ_WG) r_row[j] = r_acc[j];
#else
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) rot_in[j] = r_acc[j];
  tq_rotate(uint(TQ_M), TQ_T_MAIN_SIGNS, TQ_T_MAIN_MATRIX, true);
  for (uint j = TID; j < uint(TQ_M); j += TQ_WG) r_row[tq_channel(h, uint(TQ_O) + j)] = rot_out[j];
#if TQ_O > 0
  barrier();
  for (uint j = TID; j < uint(TQ_O); j += TQ_WG) rot_in[j] = r_acc[uint(TQ_M) + j];
#if TQ_OB == 16
  barrier();
  for (uint j = TID; j < uint(TQ_O); j += TQ_WG) r_row[tq_channel(h, j)] = rot_in[j];
#else
  tq_rotate(uint(TQ_O), TQ_T_OUT_SIGNS, TQ_T_OUT_MATRIX, true);
  for (uint j = TID; j < uint(TQ_O); j += TQ_WG) r_row[tq_channel(h, j)] = rot_out[j];
#endif
#endif
#endif
  barrier();
  const int tok = row / TQ_G, g = row % TQ_G;
  const uint at = ((uint(b) * uint(pc.n_tokens) + uint(tok)) * uint(pc.kv_heads * TQ_G) +
                   uint(h * TQ_G + g)) * uint(TQ_D);
  for (uint w = TID; w < uint(TQ_D / 2); w += TQ_WG) TQ_STORE2(out_act, at + 2u * w, r_row[2u * w], r_row[2u * w + 1u]);
}
