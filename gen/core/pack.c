/* pack.c - bit packing of 1..8-bit indices, half-precision conversion and
 * typed activation access. */
#include <string.h>

#include "core.h"

int tqg_packed_bytes(int n, int bits) { return ((n * bits + 31) / 32) * 4; }

void tqg_pack(const uint8_t *idx, int n, int bits, uint8_t *out) {
  memset(out, 0, (size_t)tqg_packed_bytes(n, bits));
  for (int i = 0; i < n; i++) {
    unsigned v = idx[i] & ((1u << bits) - 1);
    int bit = i * bits;
    for (int k = 0; k < bits; k++, bit++)
      if (v >> k & 1) out[bit >> 3] |= (uint8_t)(1u << (bit & 7));
  }
}

unsigned tqg_unpack_one(const uint8_t *in, int i, int bits) {
  int bit = i * bits;
  /* At most two bytes hold an index of <= 8 bits. */
  unsigned w = in[bit >> 3];
  if ((bit & 7) + bits > 8) w |= (unsigned)in[(bit >> 3) + 1] << 8;
  return (w >> (bit & 7)) & ((1u << bits) - 1);
}

void tqg_unpack(const uint8_t *in, int n, int bits, uint8_t *idx) {
  for (int i = 0; i < n; i++) idx[i] = (uint8_t)tqg_unpack_one(in, i, bits);
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t tqg_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xFF, man = x & 0x7FFFFFu;
  if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7C00u);
  if (e <= 0) { /* subnormal or zero */
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;
  return (uint16_t)(sign | half);
}

float tqg_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FFu;
  if (exp == 0) {
    if (!man) return bits_f32(sign);
    float f = (float)man * 0x1.0p-24f;
    return sign ? -f : f;
  }
  if (exp == 31) return bits_f32(sign | 0x7F800000u | (man << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t tqg_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

float tqg_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

double tqg_load(const void *p, tq_dtype t, size_t i) {
  switch (t) {
    case TQ_F16: return tqg_f16_to_f32(((const uint16_t *)p)[i]);
    case TQ_BF16: return tqg_bf16_to_f32(((const uint16_t *)p)[i]);
    case TQ_F32: return ((const float *)p)[i];
  }
  return 0;
}

void tqg_store(void *p, tq_dtype t, size_t i, double x) {
  switch (t) {
    case TQ_F16: ((uint16_t *)p)[i] = tqg_f32_to_f16((float)x); break;
    case TQ_BF16: ((uint16_t *)p)[i] = tqg_f32_to_bf16((float)x); break;
    case TQ_F32: ((float *)p)[i] = (float)x; break;
  }
}
