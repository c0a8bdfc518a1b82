// templates/wgsl/kernel.wgsl - WebGPU compute kernels for one variant.
//
// WGSL has no preprocessor: gen/emit_wgsl.c writes the variant's constants
// (TQ_*, slot word offsets, offsets into the tables buffer) above this text
// and keeps or drops the lines between //#if KEY ... //#else ... //#endif
// (a dropped line becomes an empty line, so line N here is line N of the
// template part of every generated file).  Keys: SG (the f16 + subgroups
// flavour), FAST (the SG flavour of a variant the fast attend entry
// serves), PAGED, and the activation storage: ACT_F32, ACT_F16 (native
// f16 arrays, SG flavour only), ACT_PACKED (two 16-bit values per u32,
// ACT_BF16 telling bf16 from f16).
//
// Entry points: encode, decode, prefill, reduce, dequant, and with FAST
// attend_fast (decode and prefill on subgroup workers).  The packed cache
// is array<u32> (WGSL has no 8-bit storage); every slot and part starts on
// a word.  Codebooks, rotations and the QJL projection live in one f32
// storage buffer (TB) the runtime fills from the variant, because WGSL
// would copy a large const array into function memory on every dynamic
// index.  Everything stays in the rotated basis: q is rotated once per
// workgroup, keys are scored from codebook values, values accumulate in
// the rotated basis and reduce rotates the output back once.

struct Params {
  batch: u32,
  kv_heads: u32,
  n_tokens: u32,
  capacity: u32,
  num_blocks: u32,
  max_blocks: u32,
  sm_scale: f32,
  splits: u32,
  has_perm: u32,
  rows: u32,   // n_tokens * TQ_G: query rows per kv head
  tiles: u32,  // row tiles of TQ_RQ rows
  probe: u32,  // attend_fast: 1 reports the subgroup layout instead of attending
  // seq0[i / 4][i % 4]: the element where sequence 0 of the launch starts
  // in what binding i sees of its buffer.  A launch too large for one
  // binding runs in parts (backends/wgsl_plan.h), each binding a window of
  // the buffers indexed by sequence; a window starts at a multiple of 256
  // bytes, so up to that many before the part's first sequence.
  seq0: array<vec4<u32>, 3>,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> TB: array<f32>;
@group(0) @binding(2) var<storage, read_write> KC: array<u32>;
@group(0) @binding(3) var<storage, read_write> VC: array<u32>;
//#if PAGED
@group(0) @binding(4) var<storage, read> BT: array<i32>;
//#endif
@group(0) @binding(5) var<storage, read> LENS: array<i32>;
@group(0) @binding(6) var<storage, read> PERM: array<u32>;
@group(0) @binding(7) var<storage, read> Q: array<TQ_ACT>;
@group(0) @binding(8) var<storage, read_write> KX: array<TQ_ACT>;
@group(0) @binding(9) var<storage, read_write> VX: array<TQ_ACT>;
@group(0) @binding(10) var<storage, read_write> OUT: array<TQ_ACT>;
@group(0) @binding(11) var<storage, read_write> WS: array<f32>;

// Bindings of the buffers indexed by sequence, for base().
const B_KC: u32 = 2u;
const B_VC: u32 = 3u;
const B_BT: u32 = 4u;
const B_LENS: u32 = 5u;
const B_Q: u32 = 7u;
const B_KX: u32 = 8u;
const B_VX: u32 = 9u;
const B_OUT: u32 = 10u;
const B_WS: u32 = 11u;

// Where sequence 0 of the launch starts in the buffer at binding i.
fn base(i: u32) -> u32 { return P.seq0[i / 4u][i % 4u]; }

const NEG: f32 = -3.0e38;   // "minus infinity": WGSL has no infinities
const LIVE: f32 = -1.0e38;  // scores above this are real
const QJL_C: f32 = 1.25331413731550025; // sqrt(pi / 2)
const TQ_VDIM: u32 = select(TQ_M + TQ_O, TQ_D, TQ_VMINMAX); // accumulated value dims
const TQ_PART: u32 = 2u + TQ_VDIM;  // workspace floats per (row, split): m, l, acc
const TQ_VPT: u32 = (TQ_VDIM + TQ_WG - 1u) / TQ_WG; // value channels per thread
const TQ_OW: u32 = max(TQ_O, 1u);
const TQ_QW: u32 = select(1u, TQ_M, TQ_QJL);
const TQ_VWS: u32 = TQ_V_WORDS | 1u; // odd stride: a tile's slots on distinct banks
// One workgroup array holds every codebook: keys, values, outliers.
const CB_K: u32 = 0u;
const CB_V: u32 = CB_K + TQ_KL;
const CB_O: u32 = CB_V + TQ_VL;
const CB_N: u32 = CB_O + TQ_OL;

var<workgroup> CB: array<f32, CB_N>;
var<workgroup> rot_a: array<f32, TQ_D>;
var<workgroup> rot_b: array<f32, TQ_D>;
var<workgroup> xrow: array<f32, TQ_D>;
var<workgroup> red: array<vec4<f32>, TQ_WG>;
var<workgroup> idxs: array<u32, TQ_D>;
var<workgroup> t_lo: u32;
var<workgroup> t_hi: u32;
var<workgroup> oacc: array<f32, TQ_OW>;
//#if SG
var<workgroup> tile_max: array<atomic<u32>, 4>;
//#endif

// ---- activations ------------------------------------------------------
// f32 -> f16 bits, round to nearest even (the reference's rounding), for
// what the cache stores exactly: min-max steps and minima, raw outliers.
fn f16_bits(f: f32) -> u32 {
  let x = bitcast<u32>(f);
  let sign = (x >> 16u) & 0x8000u;
  let ex = (x >> 23u) & 0xFFu;
  var man = x & 0x7FFFFFu;
  if (ex == 0xFFu) { return sign | 0x7C00u | select(0u, 0x200u, man != 0u); }
  let e = i32(ex) - 112;
  if (e >= 31) { return sign | 0x7C00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    man |= 0x800000u;
    let shift = u32(14 - e);
    var half = man >> shift;
    let rem = man & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u) != 0u)) { half += 1u; }
    return sign | half;
  }
  var half = (u32(e) << 10u) | (man >> 13u);
  let rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u) != 0u)) { half += 1u; }
  return sign | half;
}

fn f16_val(bits: u32) -> f32 { return unpack2x16float(bits & 0xFFFFu).x; }

//#if ACT_F32
fn ld_q(i: u32) -> f32 { return Q[i]; }
fn ld_kx(i: u32) -> f32 { return KX[i]; }
fn ld_vx(i: u32) -> f32 { return VX[i]; }
// Pairs (i even): the packed form writes whole words, so every form does.
fn st2_kx(i: u32, a: f32, b: f32) { KX[i] = a; KX[i + 1u] = b; }
fn st2_vx(i: u32, a: f32, b: f32) { VX[i] = a; VX[i + 1u] = b; }
fn st2_out(i: u32, a: f32, b: f32) { OUT[i] = a; OUT[i + 1u] = b; }
//#endif
//#if ACT_F16
fn ld_q(i: u32) -> f32 { return f32(Q[i]); }
fn ld_kx(i: u32) -> f32 { return f32(KX[i]); }
fn ld_vx(i: u32) -> f32 { return f32(VX[i]); }
fn st2_kx(i: u32, a: f32, b: f32) { KX[i] = f16(a); KX[i + 1u] = f16(b); }
fn st2_vx(i: u32, a: f32, b: f32) { VX[i] = f16(a); VX[i + 1u] = f16(b); }
fn st2_out(i: u32, a: f32, b: f32) { OUT[i] = f16(a); OUT[i + 1u] = f16(b); }
//#endif
//#if ACT_PACKED
//#if ACT_BF16
fn unpack_act(w: u32, k: u32) -> f32 { return bitcast<f32>(((w >> (16u * k)) & 0xFFFFu) << 16u); }
fn bf16_bits(f: f32) -> u32 {
  var x = bitcast<u32>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) { return (x >> 16u) | 0x40u; }
  x += 0x7FFFu + ((x >> 16u) & 1u);
  return x >> 16u;
}
fn pack_act(a: f32, b: f32) -> u32 { return bf16_bits(a) | (bf16_bits(b) << 16u); }
//#else
fn unpack_act(w: u32, k: u32) -> f32 { return f16_val(w >> (16u * k)); }
fn pack_act(a: f32, b: f32) -> u32 { return f16_bits(a) | (f16_bits(b) << 16u); }
//#endif
fn ld_q(i: u32) -> f32 { return unpack_act(Q[i >> 1u], i & 1u); }
fn ld_kx(i: u32) -> f32 { return unpack_act(KX[i >> 1u], i & 1u); }
fn ld_vx(i: u32) -> f32 { return unpack_act(VX[i >> 1u], i & 1u); }
fn st2_kx(i: u32, a: f32, b: f32) { KX[i >> 1u] = pack_act(a, b); }
fn st2_vx(i: u32, a: f32, b: f32) { VX[i >> 1u] = pack_act(a, b); }
fn st2_out(i: u32, a: f32, b: f32) { OUT[i >> 1u] = pack_act(a, b); }
//#endif

// ---- slots ------------------------------------------------------------
// Indices taken from buffer contents (seq_lens, block_table, channel_perm)
// are clamped to the shapes the runtime checked the buffers against, so
// every access stays in its buffer whatever they hold: the runtime builds
// its modules without wgpu's bounds checks (backends/wgsl.c).

// Tokens sequence b's cache holds.
fn capacity() -> u32 {
//#if PAGED
  return P.max_blocks * TQ_BLOCK;
//#else
  return P.capacity;
//#endif
}

// Tokens of sequence b, at most the capacity: loops over the context end.
fn seq_len(b: u32) -> u32 { return min(u32(LENS[base(B_LENS) + b]), capacity()); }

// First word of the slot of token t of (sequence b, kv head h) in the
// cache at binding `cache`, slots of `words` words.  A paged cache's pool
// is bound whole (its base is 0).
fn slot_word(b: u32, h: u32, t: u32, words: u32, cache: u32) -> u32 {
  let tc = min(t, capacity() - 1u);
//#if PAGED
  let blk = min(u32(BT[base(B_BT) + b * P.max_blocks + tc / TQ_BLOCK]), P.num_blocks - 1u);
  return ((blk * P.kv_heads + h) * TQ_BLOCK + tc % TQ_BLOCK) * words;
//#else
  return base(cache) + ((b * P.kv_heads + h) * P.capacity + tc) * words;
//#endif
}
fn key_slot(b: u32, h: u32, t: u32) -> u32 { return slot_word(b, h, t, TQ_K_WORDS, B_KC); }
fn value_slot(b: u32, h: u32, t: u32) -> u32 { return slot_word(b, h, t, TQ_V_WORDS, B_VC); }

// Channel i of kv head h's order (docs/FORMAT.md: outliers first).  Kept
// below TQ_D whatever the buffer holds: it indexes workgroup arrays.
fn chan(h: u32, i: u32) -> u32 {
  if (P.has_perm == 0u) { return i; }
  let e = h * TQ_D + i;
  return min((PERM[e >> 1u] >> (16u * (e & 1u))) & 0xFFFFu, TQ_D - 1u);
}

// Index j of width bits from a packed block starting at word w of KC / VC.
fn kc_index(w: u32, j: u32, bits: u32) -> u32 {
  let bit = j * bits;
  let k = w + (bit >> 5u);
  let sh = bit & 31u;
  var v = KC[k] >> sh;
  if (sh + bits > 32u) { v |= KC[k + 1u] << (32u - sh); }
  return v & ((1u << bits) - 1u);
}
fn vc_index(w: u32, j: u32, bits: u32) -> u32 {
  let bit = j * bits;
  let k = w + (bit >> 5u);
  let sh = bit & 31u;
  var v = VC[k] >> sh;
  if (sh + bits > 32u) { v |= VC[k + 1u] << (32u - sh); }
  return v & ((1u << bits) - 1u);
}

// ---- workgroup helpers ------------------------------------------------
// nt: invocations of the workgroup (TQ_WG, or attend_fast's TQ_FWG).
fn load_codebooks(lid: u32, nt: u32) {
  for (var i = lid; i < TQ_KL; i += nt) { CB[CB_K + i] = TB[TB_KCB + i]; }
  for (var i = lid; i < TQ_VL; i += nt) { CB[CB_V + i] = TB[TB_VCB + i]; }
  for (var i = lid; i < TQ_OL; i += nt) { CB[CB_O + i] = TB[TB_OCB + i]; }
  workgroupBarrier();
}

fn wg_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var s = TQ_WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn wg_sum(v: f32, lid: u32) -> f32 { return wg_sum4(vec4<f32>(v, 0.0, 0.0, 0.0), lid).x; }

// Orderable bits of a float: unsigned order of ord(x) is the order of x.
fn ord(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}
fn unord(u: u32) -> f32 {
  return bitcast<f32>(select(~u, u & 0x7FFFFFFFu, (u & 0x80000000u) != 0u));
}

// Per-row maximum over the workgroup.  The SG flavour takes each
// subgroup's maximum with one operation and merges the subgroups through
// workgroup atomics (order-free, so any subgroup size and layout works);
// the core flavour reduces a tree through workgroup memory.
fn wg_max4(v: vec4<f32>, lid: u32, sgi: u32) -> vec4<f32> {
//#if SG
  if (lid < 4u) { atomicStore(&tile_max[lid], 0u); }
  workgroupBarrier();
  let m = subgroupMax(v);
  if (sgi == 0u) {
    atomicMax(&tile_max[0], ord(m.x));
    atomicMax(&tile_max[1], ord(m.y));
    atomicMax(&tile_max[2], ord(m.z));
    atomicMax(&tile_max[3], ord(m.w));
  }
  workgroupBarrier();
  let r = vec4<f32>(unord(atomicLoad(&tile_max[0])), unord(atomicLoad(&tile_max[1])),
                    unord(atomicLoad(&tile_max[2])), unord(atomicLoad(&tile_max[3])));
  workgroupBarrier();
  return r;
//#else
  red[lid] = v;
  workgroupBarrier();
  for (var s = TQ_WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
//#endif
}

// ---- rotations in workgroup memory ------------------------------------
// rot_b = R rot_a (inv false) or R^T rot_a (inv true), n channels.  R is a
// randomized Hadamard (signs at TB[signs]) or a dense row-major matrix.
fn rotate(n: u32, wht: bool, signs: u32, mat: u32, inv: bool, lid: u32) {
  workgroupBarrier();
  if (wht) {
    let s = 1.0 / sqrt(f32(n));
    for (var i = lid; i < n; i += TQ_WG) {
      rot_b[i] = select(rot_a[i] * TB[signs + i], rot_a[i], inv);
    }
    for (var h = 1u; h < n; h <<= 1u) {
      workgroupBarrier();
      for (var p = lid; p < n / 2u; p += TQ_WG) {
        let i = (p / h) * 2u * h + p % h;
        let u = rot_b[i];
        let v = rot_b[i + h];
        rot_b[i] = u + v;
        rot_b[i + h] = u - v;
      }
    }
    workgroupBarrier();
    for (var i = lid; i < n; i += TQ_WG) {
      rot_b[i] *= select(s, s * TB[signs + i], inv);
    }
  } else if (inv) {
    for (var i = lid; i < n; i += TQ_WG) {
      var acc = 0.0;
      for (var k = 0u; k < n; k++) { acc += TB[mat + k * n + i] * rot_a[k]; }
      rot_b[i] = acc;
    }
  } else {
    for (var i = lid; i < n; i += TQ_WG) {
      var acc = 0.0;
      for (var k = 0u; k < n; k++) { acc += TB[mat + i * n + k] * rot_a[k]; }
      rot_b[i] = acc;
    }
  }
  workgroupBarrier();
}

fn rotate_main(inv: bool, lid: u32) { rotate(TQ_M, TQ_MAIN_WHT, TB_MSIGNS, TB_MMAT, inv, lid); }
fn rotate_out(inv: bool, lid: u32) { rotate(TQ_OW, TQ_OUT_WHT, TB_OSIGNS, TB_OMAT, inv, lid); }

// ---- encode -----------------------------------------------------------
// Quantizes rot_b (n channels) at bits into idxs; returns the scale
// (docs/FORMAT.md).  Boundaries are searched in TB.
fn quantize(n: u32, bits: u32, cb: u32, bnd: u32, lid: u32) -> f32 {
  var n2 = 0.0;
  for (var j = lid; j < n; j += TQ_WG) { n2 += rot_b[j] * rot_b[j]; }
  n2 = wg_sum(n2, lid);
  let z = select(0.0, sqrt(f32(n) / n2), n2 > 0.0);
  var c2 = 0.0;
  for (var j = lid; j < n; j += TQ_WG) {
    let x = rot_b[j] * z;
    var lo = 0u;
    var hi = (1u << bits) - 1u;
    while (lo < hi) {
      let mid = (lo + hi) >> 1u;
      if (x >= TB[bnd + mid]) { lo = mid + 1u; } else { hi = mid; }
    }
    idxs[j] = lo;
    c2 += TB[cb + lo] * TB[cb + lo];
  }
  c2 = wg_sum(c2, lid); // its barriers also publish idxs
  var scale = sqrt(n2 / f32(n));
  if (TQ_NC && c2 > 0.0) { scale = sqrt(n2 / c2); }
  return scale;
}

// Writes idxs[0..n) at bits as packed words from word w of the cache.
fn pack_k(w: u32, n: u32, bits: u32, lid: u32) {
  for (var k = lid; k < (n * bits + 31u) / 32u; k += TQ_WG) {
    var word = 0u;
    for (var bit = 32u * k; bit < min(32u * k + 32u, n * bits); bit++) {
      word |= ((idxs[bit / bits] >> (bit % bits)) & 1u) << (bit - 32u * k);
    }
    KC[w + k] = word;
  }
}
fn pack_v(w: u32, n: u32, bits: u32, lid: u32) {
  for (var k = lid; k < (n * bits + 31u) / 32u; k += TQ_WG) {
    var word = 0u;
    for (var bit = 32u * k; bit < min(32u * k + 32u, n * bits); bit++) {
      word |= ((idxs[bit / bits] >> (bit % bits)) & 1u) << (bit - 32u * k);
    }
    VC[w + k] = word;
  }
}

// The outlier channels of xrow (order of kv head h) into rot_a, and
// rotated into rot_b when they are quantized rather than kept as f16.
fn outliers_prepare(h: u32, lid: u32) {
  workgroupBarrier();
  for (var j = lid; j < TQ_O; j += TQ_WG) { rot_a[j] = xrow[chan(h, j)]; }
  if (TQ_OB != 16u) { rotate_out(false, lid); }
  workgroupBarrier();
}

fn raw_word(j2: u32) -> u32 {
  let hi = select(0u, f16_bits(rot_a[2u * j2 + 1u]), 2u * j2 + 1u < TQ_O);
  return f16_bits(rot_a[2u * j2]) | (hi << 16u);
}

// grid (n_tokens, kv_heads, batch): token i of head h of sequence b.
@compute @workgroup_size(TQ_WG)
fn encode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x;
  let h = wid.y;
  let b = wid.z;
  let t = u32(LENS[base(B_LENS) + b]) - P.n_tokens + i;
  let x0 = ((b * P.n_tokens + i) * P.kv_heads + h) * TQ_D; // the token's k and v
  // ---- key
  let ks = key_slot(b, h, t);
  for (var j = lid; j < TQ_D; j += TQ_WG) { xrow[j] = ld_kx(base(B_KX) + x0 + j); }
  workgroupBarrier();
  for (var j = lid; j < TQ_M; j += TQ_WG) { rot_a[j] = xrow[chan(h, TQ_O + j)]; }
  rotate_main(false, lid);
  let ksc = quantize(TQ_M, TQ_KB, TB_KCB, TB_KBND, lid);
  pack_k(ks + TQ_K_IDX, TQ_M, TQ_KB, lid);
  if (lid == 0u) { KC[ks + TQ_K_SCALE] = bitcast<u32>(ksc); }
  if (TQ_QJL) {
    // r = y - scale c[idx]: the residual, rotated basis; signs of S r.
    var rn2 = 0.0;
    for (var j = lid; j < TQ_M; j += TQ_WG) {
      let r = rot_b[j] - ksc * TB[TB_KCB + idxs[j]];
      rot_a[j] = r;
      rn2 += r * r;
    }
    rn2 = wg_sum(rn2, lid);
    for (var k = lid; k < TQ_M; k += TQ_WG) {
      var acc = 0.0;
      for (var j = 0u; j < TQ_M; j++) { acc += TB[TB_QJL + k * TQ_M + j] * rot_a[j]; }
      idxs[k] = select(0u, 1u, acc >= 0.0);
    }
    workgroupBarrier();
    pack_k(ks + TQ_K_QJL, TQ_M, 1u, lid);
    if (lid == 0u) { KC[ks + TQ_K_RNORM] = bitcast<u32>(sqrt(rn2)); }
  }
  if (TQ_O > 0u) {
    outliers_prepare(h, lid);
    if (TQ_OB == 16u) {
      for (var k = lid; k < (TQ_O + 1u) / 2u; k += TQ_WG) { KC[ks + TQ_K_OUT_IDX + k] = raw_word(k); }
    } else {
      let osc = quantize(TQ_OW, TQ_OBQ, TB_OCB, TB_OBND, lid);
      pack_k(ks + TQ_K_OUT_IDX, TQ_OW, TQ_OBQ, lid);
      if (lid == 0u) { KC[ks + TQ_K_OUT_SCALE] = bitcast<u32>(osc); }
    }
  }
  // ---- value
  workgroupBarrier();
  let vs = value_slot(b, h, t);
  for (var j = lid; j < TQ_D; j += TQ_WG) { xrow[j] = ld_vx(base(B_VX) + x0 + j); }
  workgroupBarrier();
  if (TQ_VMINMAX) {
    let top = f32((1u << TQ_VB) - 1u);
    for (var g = lid; g < TQ_D / TQ_VGROUP; g += TQ_WG) {
      var mn = xrow[g * TQ_VGROUP];
      var mx = mn;
      for (var j = 1u; j < TQ_VGROUP; j++) {
        mn = min(mn, xrow[g * TQ_VGROUP + j]);
        mx = max(mx, xrow[g * TQ_VGROUP + j]);
      }
      let hs = f16_bits((mx - mn) / top);
      let hm = f16_bits(mn);
      let st = f16_val(hs);
      let lo = f16_val(hm);
      VC[vs + TQ_V_GROUPS + g] = hs | (hm << 16u);
      for (var j = 0u; j < TQ_VGROUP; j++) {
        let q = select(0.0, floor((xrow[g * TQ_VGROUP + j] - lo) / st + 0.5), st > 0.0);
        idxs[g * TQ_VGROUP + j] = u32(clamp(q, 0.0, top));
      }
    }
    workgroupBarrier();
    pack_v(vs + TQ_V_IDX, TQ_D, TQ_VB, lid);
  } else {
    for (var j = lid; j < TQ_M; j += TQ_WG) { rot_a[j] = xrow[chan(h, TQ_O + j)]; }
    rotate_main(false, lid);
    let vsc = quantize(TQ_M, TQ_VB, TB_VCB, TB_VBND, lid);
    pack_v(vs + TQ_V_IDX, TQ_M, TQ_VB, lid);
    if (lid == 0u) { VC[vs + TQ_V_SCALE] = bitcast<u32>(vsc); }
    if (TQ_O > 0u) {
      outliers_prepare(h, lid);
      if (TQ_OB == 16u) {
        for (var k = lid; k < (TQ_O + 1u) / 2u; k += TQ_WG) { VC[vs + TQ_V_OUT_IDX + k] = raw_word(k); }
      } else {
        let osc = quantize(TQ_OW, TQ_OBQ, TB_OCB, TB_OBND, lid);
        pack_v(vs + TQ_V_OUT_IDX, TQ_OW, TQ_OBQ, lid);
        if (lid == 0u) { VC[vs + TQ_V_OUT_SCALE] = bitcast<u32>(osc); }
      }
    }
  }
}

// ---- attention --------------------------------------------------------
// A workgroup owns one kv head, TQ_RQ = 4 query rows (one per vec4 lane)
// and one slice of the context.  Per tile of TQ_TILE cache tokens: every
// thread scores one token from its key slot for all four rows; the tile's
// value slots are staged in workgroup memory; then every thread owns value
// channels and accumulates the tile's weighted values.  Softmax is online;
// the split's partial state goes to the workspace for reduce.
var<workgroup> q4: array<vec4<f32>, TQ_M>;   // rotated, scaled main part of q
var<workgroup> qo4: array<vec4<f32>, TQ_OW>; // rotated (or raw) outlier part
var<workgroup> qs4: array<vec4<f32>, TQ_QW>; // S q, for QJL
var<workgroup> sv: array<u32, TQ_TILE * TQ_VWS>;
var<workgroup> p4: array<vec4<f32>, TQ_TILE>;

// Score of the key slot at word ks for the four rows (unscaled by masks).
fn score(ks: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  if (32u % TQ_KB == 0u) {
    // Widths that divide 32 (1, 2, 4, 8 bits): whole words, constant
    // shifts; the inner loop has a constant trip count to unroll.
    const PER: u32 = 32u / TQ_KB;
    let mask = (1u << TQ_KB) - 1u;
    var dot = vec4<f32>(0.0);
    for (var w = 0u; w < (TQ_M + PER - 1u) / PER; w++) {
      let word = KC[ks + TQ_K_IDX + w];
      for (var k = 0u; k < PER; k++) {
        let j = w * PER + k;
        if (j < TQ_M) { dot += q4[j] * CB[CB_K + ((word >> (k * TQ_KB)) & mask)]; }
      }
    }
    acc = dot * bitcast<f32>(KC[ks + TQ_K_SCALE]);
  } else {
    // Other widths: a two-word window slides over the packed indices.
    let mask = (1u << TQ_KB) - 1u;
    var w = ks + TQ_K_IDX;
    var cur = KC[w];
    var sh = 0u;
    var dot = vec4<f32>(0.0);
    for (var j = 0u; j < TQ_M; j++) {
      var v = cur >> sh;
      if (sh + TQ_KB > 32u) { v |= KC[w + 1u] << (32u - sh); }
      dot += q4[j] * CB[CB_K + (v & mask)];
      sh += TQ_KB;
      if (sh >= 32u) { sh -= 32u; w += 1u; cur = KC[w]; }
    }
    acc = dot * bitcast<f32>(KC[ks + TQ_K_SCALE]);
  }
  if (TQ_QJL) {
    var pos = vec4<f32>(0.0);
    var sum = vec4<f32>(0.0);
    for (var j = 0u; j < TQ_M; j++) {
      let bit = (KC[ks + TQ_K_QJL + (j >> 5u)] >> (j & 31u)) & 1u;
      pos += select(vec4<f32>(0.0), qs4[j], bit != 0u);
      sum += qs4[j];
    }
    acc += (QJL_C / f32(TQ_M)) * bitcast<f32>(KC[ks + TQ_K_RNORM]) * (2.0 * pos - sum);
  }
  if (TQ_O > 0u) {
    var dot = vec4<f32>(0.0);
    if (TQ_OB == 16u) {
      for (var j = 0u; j < TQ_O; j++) {
        dot += qo4[j] * f16_val(KC[ks + TQ_K_OUT_IDX + (j >> 1u)] >> (16u * (j & 1u)));
      }
    } else {
      for (var j = 0u; j < TQ_O; j++) {
        dot += qo4[j] * CB[CB_O + kc_index(ks + TQ_K_OUT_IDX, j, TQ_OBQ)];
      }
      dot *= bitcast<f32>(KC[ks + TQ_K_OUT_SCALE]);
    }
    acc += dot;
  }
  return acc;
}

// Value channel j of the staged slot of tile token tt (decoded, scaled).
fn value_at(tt: u32, j: u32) -> f32 {
  let base = tt * TQ_VWS;
  if (TQ_VMINMAX) {
    let bit = j * TQ_VB;
    let k = base + TQ_V_IDX + (bit >> 5u);
    let sh = bit & 31u;
    var v = sv[k] >> sh;
    if (sh + TQ_VB > 32u) { v |= sv[k + 1u] << (32u - sh); }
    let g = unpack2x16float(sv[base + TQ_V_GROUPS + j / TQ_VGROUP]);
    return g.y + g.x * f32(v & ((1u << TQ_VB) - 1u));
  }
  if (j < TQ_M) {
    let bit = j * TQ_VB;
    let k = base + TQ_V_IDX + (bit >> 5u);
    let sh = bit & 31u;
    var v = sv[k] >> sh;
    if (sh + TQ_VB > 32u) { v |= sv[k + 1u] << (32u - sh); }
    return bitcast<f32>(sv[base + TQ_V_SCALE]) * CB[CB_V + (v & ((1u << TQ_VB) - 1u))];
  }
  let jo = j - TQ_M;
  if (TQ_OB == 16u) {
    return f16_val(sv[base + TQ_V_OUT_IDX + (jo >> 1u)] >> (16u * (jo & 1u)));
  }
  let bit = jo * TQ_OBQ;
  let k = base + TQ_V_OUT_IDX + (bit >> 5u);
  let sh = bit & 31u;
  var v = sv[k] >> sh;
  if (sh + TQ_OBQ > 32u) { v |= sv[k + 1u] << (32u - sh); }
  return bitcast<f32>(sv[base + TQ_V_OUT_SCALE]) * CB[CB_O + (v & ((1u << TQ_OBQ) - 1u))];
}

// First element of query row `row` (token row / TQ_G, q head h * TQ_G +
// row % TQ_G) of sequence b in Q.
fn q_at(b: u32, h: u32, row: u32) -> u32 {
  let tok = row / TQ_G;
  return base(B_Q) + ((b * P.n_tokens + tok) * P.kv_heads * TQ_G + h * TQ_G + row % TQ_G) * TQ_D;
}

// Rotates (and scales) the workgroup's four query rows into q4, qo4, qs4.
fn prepare_rows(b: u32, h: u32, r0: u32, lid: u32) {
  for (var r = 0u; r < 4u; r++) {
    let row = r0 + r;
    let live = row < P.rows;
    let at = q_at(b, h, row);
    workgroupBarrier();
    for (var j = lid; j < TQ_M; j += TQ_WG) {
      rot_a[j] = select(0.0, P.sm_scale * ld_q(at + chan(h, TQ_O + j)), live);
    }
    rotate_main(false, lid);
    for (var j = lid; j < TQ_M; j += TQ_WG) { q4[j][r] = rot_b[j]; }
    if (TQ_O > 0u) {
      workgroupBarrier();
      for (var j = lid; j < TQ_O; j += TQ_WG) {
        rot_a[j] = select(0.0, P.sm_scale * ld_q(at + chan(h, j)), live);
      }
      if (TQ_OB == 16u) {
        workgroupBarrier();
        for (var j = lid; j < TQ_O; j += TQ_WG) { qo4[j][r] = rot_a[j]; }
      } else {
        rotate_out(false, lid);
        for (var j = lid; j < TQ_O; j += TQ_WG) { qo4[j][r] = rot_b[j]; }
      }
    }
  }
  workgroupBarrier();
  if (TQ_QJL) {
    for (var i = lid; i < TQ_M; i += TQ_WG) {
      var acc = vec4<f32>(0.0);
      for (var j = 0u; j < TQ_M; j++) { acc += TB[TB_QJL + i * TQ_M + j] * q4[j]; }
      qs4[i] = acc;
    }
    workgroupBarrier();
  }
}

fn attend(wid: vec3<u32>, lid: u32, sgi: u32) {
  let split = wid.x;
  let b = wid.z;
  let h = wid.y / P.tiles;
  let r0 = (wid.y % P.tiles) * 4u;
  load_codebooks(lid, TQ_WG);
  prepare_rows(b, h, r0, lid);
  let len = seq_len(b);
  // Query row r sees tokens 0 .. ctx[r] - 1 (0 for rows past the end).
  var ctx = vec4<u32>(0u);
  for (var r = 0u; r < 4u; r++) {
    let row = r0 + r;
    ctx[r] = select(0u, len - P.n_tokens + row / TQ_G + 1u, row < P.rows);
  }
  let slice = (len + P.splits - 1u) / P.splits;
  if (lid == 0u) {
    t_lo = min(len, split * slice);
    t_hi = min(len, split * slice + slice);
  }
  let t_begin = workgroupUniformLoad(&t_lo);
  let t_end = workgroupUniformLoad(&t_hi);

  var m = vec4<f32>(NEG);
  var l = vec4<f32>(0.0);
  var acc: array<vec4<f32>, TQ_VPT>;
  for (var c = 0u; c < TQ_VPT; c++) { acc[c] = vec4<f32>(0.0); }
  for (var tile = t_begin; tile < t_end; tile += TQ_TILE) {
    let n = min(TQ_TILE, t_end - tile);
    // Stage the tile's value slots (consecutive words: coalesced reads).
    for (var e = lid; e < n * TQ_V_WORDS; e += TQ_WG) {
      let tt = e / TQ_V_WORDS;
      sv[tt * TQ_VWS + e % TQ_V_WORDS] = VC[value_slot(b, h, tile + tt) + e % TQ_V_WORDS];
    }
    var sc = vec4<f32>(NEG);
    let t = tile + lid;
    if (lid < n) {
      let s = score(key_slot(b, h, t));
      sc = select(vec4<f32>(NEG), s, vec4<u32>(t) < ctx);
    }
    let mx = wg_max4(sc, lid, sgi);
    let nm = max(m, mx);
    let p = select(vec4<f32>(0.0), exp(sc - nm), sc > vec4<f32>(LIVE));
    let corr = exp(m - nm);
    m = nm;
    l = l * corr + p;
    if (lid < TQ_TILE) { p4[lid] = p; }
    workgroupBarrier();
    for (var c = 0u; c < TQ_VPT; c++) {
      let j = lid + c * TQ_WG;
      if (j < TQ_VDIM) {
        var a = acc[c] * corr;
        for (var tt = 0u; tt < n; tt++) { a += p4[tt] * value_at(tt, j); }
        acc[c] = a;
      }
    }
    workgroupBarrier();
  }
  let lsum = wg_sum4(l, lid);
  for (var r = 0u; r < 4u; r++) {
    let row = r0 + r;
    if (row < P.rows) {
      let at = base(B_WS) + ((((b * P.kv_heads + h) * P.rows + row) * P.splits) + split) * TQ_PART;
      if (lid == 0u) {
        WS[at] = m[r];
        WS[at + 1u] = lsum[r];
      }
      for (var c = 0u; c < TQ_VPT; c++) {
        let j = lid + c * TQ_WG;
        if (j < TQ_VDIM) { WS[at + 2u + j] = acc[c][r]; }
      }
    }
  }
}

// grid (splits, kv_heads * row tiles, batch)
@compute @workgroup_size(TQ_WG)
//#if SG
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
          @builtin(subgroup_invocation_id) sgi: u32) { attend(wid, lid, sgi); }
//#else
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) { attend(wid, lid, 0u); }
//#endif

@compute @workgroup_size(TQ_WG)
//#if SG
fn prefill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(subgroup_invocation_id) sgi: u32) { attend(wid, lid, sgi); }
//#else
fn prefill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) { attend(wid, lid, 0u); }
//#endif

//#if FAST
// ---- fast attend ------------------------------------------------------
// The design of the CUDA fast path (tq_attend_fast in
// templates/cuda/kernel.cu), for the variants it serves: no outliers, no
// QJL, TurboQuant values, 2- or 4-bit keys and values, head_dim a power of
// two 32..128, pages a multiple or divisor of 32.  The pipeline is built
// for one subgroup size TQ_SG (8, 16 or 32: an override constant the
// runtime sets to what the device runs, after checking it with the
// entry's own probe) and the workgroup is TQ_FW subgroups.  Each subgroup
// is an independent flash-decoding worker over chunks of TQ_SG tokens:
//  - every lane scores one token, reading its key slot straight from the
//    cache, against the four query rows, read as broadcast vec4s, from the
//    4- or 16-entry codebook;
//  - the softmax maximum is the subgroup's (lanes' sums are only rescaled);
//  - values are read straight from the cache too: a lane owns index words
//    (8 or 16 channels each) of one token at a time and all four rows, the
//    weights arriving by subgroup shuffle from the lane that scored it.
// The chunk loop has no workgroup barrier.  (WGSL has no subgroup barrier:
// copying each chunk's key slots into workgroup memory, as the CUDA kernel
// does, needs two workgroup barriers a round, and measured slower on an
// H100 than these direct reads.)  The workers merge once at the end into
// the partial state reduce reads.  No register array is indexed by a loop
// counter (naga unrolls nothing; such an array would live in memory).
const TQ_FW: u32 = 4u;                 // workers (subgroups) per workgroup
const TQ_KW: u32 = TQ_D * TQ_KB / 32u; // index words of a key
const TQ_VW: u32 = TQ_D * TQ_VB / 32u; // index words of a value
const TQ_VCH: u32 = 32u / TQ_VB;       // value channels of one index word
override TQ_SG: u32 = 32u;             // lanes of a worker, tokens of a chunk
override TQ_FWG: u32 = TQ_FW * TQ_SG;  // invocations per workgroup
// Values: per step a lane takes TQ_VWPL words of one token and the
// subgroup TQ_VTPS tokens (one of the two is 1; TQ_VWPL is at most 2 on
// subgroups of 8 or more).  Its channels: 8 in fa0, and 8 more in fa1 for
// 2-bit values (16 a word) or a second word.
override TQ_VTPS: u32 = max(1u, TQ_SG / TQ_VW);
override TQ_VWPL: u32 = max(1u, TQ_VW / TQ_SG);
override TQ_FA1: bool = TQ_VB == 2u || TQ_VWPL == 2u;
//#if PAGED
override TQ_FRUN: u32 = min(TQ_BLOCK, TQ_SG); // slots of a chunk in one page
//#else
override TQ_FRUN: u32 = TQ_SG;
//#endif

var<workgroup> f_acc: array<f32, TQ_FW * TQ_D>; // one row of every worker, merging
var<workgroup> f_m: array<vec4<f32>, TQ_FW>; // each worker's maximum and sum
var<workgroup> f_l: array<vec4<f32>, TQ_FW>;
var<workgroup> f_misfit: u32;

// Scores of 8 key channels (index width TQ_KB from bit 0 of x) against
// query channels j .. j + 7 of the four rows.
fn fast_kdot8(x: u32, j: u32) -> vec4<f32> {
  const M = (1u << TQ_KB) - 1u;
  return q4[j] * CB[CB_K + (x & M)] + q4[j + 1u] * CB[CB_K + ((x >> TQ_KB) & M)] +
         q4[j + 2u] * CB[CB_K + ((x >> (2u * TQ_KB)) & M)] +
         q4[j + 3u] * CB[CB_K + ((x >> (3u * TQ_KB)) & M)] +
         q4[j + 4u] * CB[CB_K + ((x >> (4u * TQ_KB)) & M)] +
         q4[j + 5u] * CB[CB_K + ((x >> (5u * TQ_KB)) & M)] +
         q4[j + 6u] * CB[CB_K + ((x >> (6u * TQ_KB)) & M)] +
         q4[j + 7u] * CB[CB_K + ((x >> (7u * TQ_KB)) & M)];
}

// Scores of key index word x, the channels from j.
fn fast_kdot(x: u32, j: u32) -> vec4<f32> {
  if (TQ_KB == 2u) { return fast_kdot8(x, j) + fast_kdot8(x >> 16u, j + 8u); }
  return fast_kdot8(x, j);
}

// Eight value channels of the four rows.  Accumulators pass by value,
// never through pointers: as plain values they stay in registers, where an
// array behind a function's pointer argument can be left in memory.
struct Acc8 {
  c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
  c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
}

// a + p * the value centroids of x (8 indices of width TQ_VB from bit 0).
fn fast_vacc8(a: Acc8, x: u32, p: vec4<f32>) -> Acc8 {
  const M = (1u << TQ_VB) - 1u;
  return Acc8(a.c0 + p * CB[CB_V + (x & M)], a.c1 + p * CB[CB_V + ((x >> TQ_VB) & M)],
              a.c2 + p * CB[CB_V + ((x >> (2u * TQ_VB)) & M)],
              a.c3 + p * CB[CB_V + ((x >> (3u * TQ_VB)) & M)],
              a.c4 + p * CB[CB_V + ((x >> (4u * TQ_VB)) & M)],
              a.c5 + p * CB[CB_V + ((x >> (5u * TQ_VB)) & M)],
              a.c6 + p * CB[CB_V + ((x >> (6u * TQ_VB)) & M)],
              a.c7 + p * CB[CB_V + ((x >> (7u * TQ_VB)) & M)]);
}

fn fast_scale8(a: Acc8, c: vec4<f32>) -> Acc8 {
  return Acc8(a.c0 * c, a.c1 * c, a.c2 * c, a.c3 * c, a.c4 * c, a.c5 * c, a.c6 * c, a.c7 * c);
}

// a plus lane ^ o's accumulators (the same channels, other tokens).
fn fast_xor8(a: Acc8, o: u32) -> Acc8 {
  return Acc8(a.c0 + subgroupShuffleXor(a.c0, o), a.c1 + subgroupShuffleXor(a.c1, o),
              a.c2 + subgroupShuffleXor(a.c2, o), a.c3 + subgroupShuffleXor(a.c3, o),
              a.c4 + subgroupShuffleXor(a.c4, o), a.c5 + subgroupShuffleXor(a.c5, o),
              a.c6 + subgroupShuffleXor(a.c6, o), a.c7 + subgroupShuffleXor(a.c7, o));
}

// Row r of a into f_acc from at.
fn fast_put8(a: Acc8, r: u32, at: u32) {
  f_acc[at] = a.c0[r];
  f_acc[at + 1u] = a.c1[r];
  f_acc[at + 2u] = a.c2[r];
  f_acc[at + 3u] = a.c3[r];
  f_acc[at + 4u] = a.c4[r];
  f_acc[at + 5u] = a.c5[r];
  f_acc[at + 6u] = a.c6[r];
  f_acc[at + 7u] = a.c7[r];
}

// The workgroup's four query rows, scaled and rotated, as q4[j] (channel
// j of the four rows): one randomized Hadamard transform of vec4s.
fn fast_rows(b: u32, h: u32, r0: u32, lid: u32) {
  for (var j = lid; j < TQ_D; j += TQ_FWG) {
    var x = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
      if (r0 + r < P.rows) { x[r] = P.sm_scale * ld_q(q_at(b, h, r0 + r) + chan(h, j)); }
    }
    q4[j] = x * TB[TB_MSIGNS + j];
  }
  for (var s = 1u; s < TQ_D; s <<= 1u) {
    workgroupBarrier();
    for (var p = lid; p < TQ_D / 2u; p += TQ_FWG) {
      let i = (p / s) * 2u * s + p % s;
      let u = q4[i];
      let v = q4[i + s];
      q4[i] = u + v;
      q4[i + s] = u - v;
    }
  }
  workgroupBarrier();
  for (var j = lid; j < TQ_D; j += TQ_FWG) { q4[j] *= 1.0 / sqrt(f32(TQ_D)); }
  workgroupBarrier();
}

// grid (splits, kv_heads * row tiles, batch), like decode and prefill.
@compute @workgroup_size(TQ_FWG)
fn attend_fast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
  let split = wid.x;
  let b = wid.z;
  let h = wid.y / P.tiles;
  let r0 = (wid.y % P.tiles) * 4u;
  let w = lid / TQ_SG; // the worker
  // The layout everything below relies on: subgroups of TQ_SG lanes, each
  // one aligned run of local indices.  The runtime checked it (probe);
  // should a driver still lay the workgroup out otherwise, the partial
  // state becomes NaN, a loud failure, rather than indexing past f_acc.
  let aligned = subgroupAll(w == subgroupBroadcastFirst(w)); // unconditional: uniform flow
  let fits = sgs == TQ_SG && aligned;
  if (lid == 0u) { atomicStore(&tile_max[0], 0u); }
  workgroupBarrier();
  if (!fits) { atomicOr(&tile_max[0], 1u); }
  workgroupBarrier();
  if (lid == 0u) { f_misfit = atomicLoad(&tile_max[0]); }
  let misfit = workgroupUniformLoad(&f_misfit);
  if (P.probe != 0u) {
    if (lid == 0u) {
      WS[0] = f32(sgs);
      WS[1] = f32(misfit);
    }
    return;
  }
  if (misfit != 0u) {
    let nan = bitcast<f32>(0x7FC00000u | misfit); // not a constant: WGSL has no NaN literal
    for (var r = lid; r < 4u; r += TQ_FWG) {
      if (r0 + r < P.rows) {
        let at = base(B_WS) + ((((b * P.kv_heads + h) * P.rows + r0 + r) * P.splits) + split) * TQ_PART;
        WS[at] = nan;
        WS[at + 1u] = nan;
      }
    }
    return;
  }
  load_codebooks(lid, TQ_FWG);
  fast_rows(b, h, r0, lid);
  let len = seq_len(b);
  // Query row r sees tokens 0 .. ctx[r] - 1 (0 for rows past the end).
  var ctx = vec4<u32>(0u);
  for (var r = 0u; r < 4u; r++) {
    let row = r0 + r;
    ctx[r] = select(0u, len - P.n_tokens + row / TQ_G + 1u, row < P.rows);
  }
  // Slices are whole chunks, so chunks start on multiples of TQ_SG and a
  // paged chunk is one page or whole pages.
  var slice = (len + P.splits - 1u) / P.splits;
  slice = (slice + TQ_SG - 1u) / TQ_SG * TQ_SG;
  if (lid == 0u) {
    t_lo = min(len, split * slice);
    t_hi = min(len, split * slice + slice);
  }
  let t_begin = workgroupUniformLoad(&t_lo);
  let t_end = workgroupUniformLoad(&t_hi);
  let chunks = (t_end - t_begin + TQ_SG - 1u) / TQ_SG;
  let sub = lane / TQ_VW;  // values: the step's token of this lane
  let word = lane % TQ_VW; // and its index word

  var m = vec4<f32>(NEG);
  var l = vec4<f32>(0.0); // this lane's share of the sum
  var fa0 = Acc8();
  var fa1 = Acc8();
  for (var c0 = 0u; c0 < chunks; c0 += TQ_FW) {
    let c = c0 + w;
    let t0 = t_begin + c * TQ_SG;
    let n = select(0u, min(TQ_SG, t_end - t0), c < chunks);
    // Scores: lane scores token t0 + lane (past n: weight 0, and key_slot
    // reads a slot of the cache that no weight uses).
    let live = lane < n;
    let t = t0 + lane;
    let kt = key_slot(b, h, t);
    var d = vec4<f32>(0.0);
    for (var x = 0u; x < TQ_KW; x++) { d += fast_kdot(KC[kt + TQ_K_IDX + x], x * (32u / TQ_KB)); }
    let ksc = bitcast<f32>(KC[kt + TQ_K_SCALE]);
    let vslot = value_slot(b, h, t);
    let vsc = select(0.0, bitcast<f32>(VC[vslot + TQ_V_SCALE]), live);
    let sc = select(vec4<f32>(NEG), ksc * d, vec4<bool>(live) & (vec4<u32>(t) < ctx));
    let nm = max(m, subgroupMax(sc));
    let corr = exp(m - nm);
    m = nm;
    let p = select(vec4<f32>(0.0), exp(sc - nm), sc > vec4<f32>(LIVE));
    l = l * corr + p;
    let pv = p * vsc;
    fa0 = fast_scale8(fa0, corr);
    if (TQ_FA1) { fa1 = fast_scale8(fa1, corr); }
    // Values: step st takes tokens st .. st + TQ_VTPS - 1, lane's token
    // st + sub; every lane runs every step (shuffles need them all), and
    // tokens past n carry weight 0, with no branch around the loads.  A
    // chunk in one run of slots (a contiguous cache, pages of TQ_SG tokens
    // or more) has its slots at a stride (tokens past n read the last:
    // every address stays in the cache); else each slot's address comes
    // from the lane that scored it.
    let v0 = subgroupBroadcastFirst(vslot) + TQ_V_IDX + word;
    let vlast = max(n, 1u) - 1u;
    for (var st = 0u; st < TQ_SG; st += TQ_VTPS) {
      let tt = st + sub;
      let pw = subgroupShuffle(pv, tt);
      var src = v0 + min(tt, vlast) * TQ_V_WORDS;
      if (TQ_FRUN < TQ_SG) { src = subgroupShuffle(vslot, tt) + TQ_V_IDX + word; }
      let x = VC[src];
      fa0 = fast_vacc8(fa0, x, pw);
      if (TQ_VB == 2u) {
        fa1 = fast_vacc8(fa1, x >> 16u, pw);
      } else if (TQ_VWPL == 2u) {
        fa1 = fast_vacc8(fa1, VC[src + TQ_SG], pw);
      }
    }
  }

  // Merge the lanes: sums over the subgroup; the token groups of a word.
  l = subgroupAdd(l);
  for (var o = TQ_VW; o < TQ_SG; o <<= 1u) {
    fa0 = fast_xor8(fa0, o);
    if (TQ_FA1) { fa1 = fast_xor8(fa1, o); }
  }
  if (lane == 0u) {
    f_m[w] = m;
    f_l[w] = l;
  }
  // Merge the workers, one row at a time, through f_acc.
  let ch0 = word * TQ_VCH;
  let ch1 = select((word + TQ_SG) * TQ_VCH, word * TQ_VCH + 8u, TQ_VB == 2u);
  for (var r = 0u; r < 4u; r++) {
    workgroupBarrier();
    if (sub == 0u) {
      fast_put8(fa0, r, w * TQ_D + ch0);
      if (TQ_FA1) { fast_put8(fa1, r, w * TQ_D + ch1); }
    }
    workgroupBarrier();
    let row = r0 + r;
    if (row < P.rows) {
      let mw = vec4<f32>(f_m[0][r], f_m[1][r], f_m[2][r], f_m[3][r]);
      let lw = vec4<f32>(f_l[0][r], f_l[1][r], f_l[2][r], f_l[3][r]);
      let mt = max(max(mw.x, mw.y), max(mw.z, mw.w));
      let e = select(vec4<f32>(0.0), exp(mw - mt), lw > vec4<f32>(0.0));
      let at = base(B_WS) + ((((b * P.kv_heads + h) * P.rows + row) * P.splits) + split) * TQ_PART;
      if (lid == 0u) {
        WS[at] = mt;
        WS[at + 1u] = dot(e, lw);
      }
      for (var j = lid; j < TQ_D; j += TQ_FWG) {
        let x = vec4<f32>(f_acc[j], f_acc[TQ_D + j], f_acc[2u * TQ_D + j], f_acc[3u * TQ_D + j]);
        WS[at + 2u + j] = dot(e, x);
      }
    }
  }
}
//#endif

// Writes xrow (channel order) as activations from element `at`, two
// channels per thread; one function per buffer, so an entry point binds
// only what it writes.
fn store_kx(at: u32, lid: u32) {
  workgroupBarrier();
  for (var j = 2u * lid; j < TQ_D; j += 2u * TQ_WG) { st2_kx(at + j, xrow[j], xrow[j + 1u]); }
}
fn store_vx(at: u32, lid: u32) {
  workgroupBarrier();
  for (var j = 2u * lid; j < TQ_D; j += 2u * TQ_WG) { st2_vx(at + j, xrow[j], xrow[j + 1u]); }
}
fn store_out(at: u32, lid: u32) {
  workgroupBarrier();
  for (var j = 2u * lid; j < TQ_D; j += 2u * TQ_WG) { st2_out(at + j, xrow[j], xrow[j + 1u]); }
}

// The rotated main part in rot_a back into xrow (channel order of kv head
// h), times f; unrotate_out does the same for the outlier part.
fn unrotate_main(h: u32, f: f32, lid: u32) {
  rotate_main(true, lid);
  for (var j = lid; j < TQ_M; j += TQ_WG) { xrow[chan(h, TQ_O + j)] = rot_b[j] * f; }
}
fn unrotate_out(h: u32, f: f32, lid: u32) {
  if (TQ_OB == 16u) {
    workgroupBarrier();
    for (var j = lid; j < TQ_O; j += TQ_WG) { xrow[chan(h, j)] = rot_a[j] * f; }
  } else {
    rotate_out(true, lid);
    for (var j = lid; j < TQ_O; j += TQ_WG) { xrow[chan(h, j)] = rot_b[j] * f; }
  }
}

// grid (rows, kv_heads, batch): merges the splits of one output row,
// rotates it back and writes it.
@compute @workgroup_size(TQ_WG)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  let h = wid.y;
  let b = wid.z;
  let ws = base(B_WS) + ((b * P.kv_heads + h) * P.rows + row) * P.splits * TQ_PART;
  var mx = NEG;
  for (var s = 0u; s < P.splits; s++) { mx = max(mx, WS[ws + s * TQ_PART]); }
  var total = 0.0;
  for (var s = 0u; s < P.splits; s++) {
    let ls = WS[ws + s * TQ_PART + 1u];
    total += select(0.0, ls * exp(WS[ws + s * TQ_PART] - mx), ls > 0.0);
  }
  let f = 1.0 / total;
  for (var j = lid; j < TQ_VDIM; j += TQ_WG) {
    var v = 0.0;
    for (var s = 0u; s < P.splits; s++) {
      let ls = WS[ws + s * TQ_PART + 1u];
      v += select(0.0, WS[ws + s * TQ_PART + 2u + j] * exp(WS[ws + s * TQ_PART] - mx), ls > 0.0);
    }
    if (TQ_VMINMAX) { xrow[j] = v * f; }
    else if (j < TQ_M) { rot_a[j] = v; }
    else { oacc[j - TQ_M] = v; }
  }
  if (!TQ_VMINMAX) {
    unrotate_main(h, f, lid);
    if (TQ_O > 0u) {
      workgroupBarrier();
      for (var j = lid; j < TQ_O; j += TQ_WG) { rot_a[j] = oacc[j]; }
      unrotate_out(h, f, lid);
    }
  }
  let tok = row / TQ_G;
  store_out(base(B_OUT) + ((b * P.n_tokens + tok) * P.kv_heads * TQ_G + h * TQ_G + row % TQ_G) * TQ_D, lid);
}

// ---- dequantize -------------------------------------------------------
// grid (n_tokens, kv_heads, batch): token t of head h of sequence b.
@compute @workgroup_size(TQ_WG)
fn dequant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  let h = wid.y;
  let b = wid.z;
  let x0 = ((b * P.n_tokens + t) * P.kv_heads + h) * TQ_D; // the token's k and v
  load_codebooks(lid, TQ_WG);
  // ---- key: main part (plus the QJL term), then outliers
  let ks = key_slot(b, h, t);
  let ksc = bitcast<f32>(KC[ks + TQ_K_SCALE]);
  for (var j = lid; j < TQ_M; j += TQ_WG) {
    var y = ksc * CB[CB_K + kc_index(ks + TQ_K_IDX, j, TQ_KB)];
    if (TQ_QJL) {
      // The QJL part dequantizes to sqrt(pi/2)/m |r| S^T sign.
      let c = QJL_C / f32(TQ_M) * bitcast<f32>(KC[ks + TQ_K_RNORM]);
      var acc = 0.0;
      for (var i = 0u; i < TQ_M; i++) {
        let bit = (KC[ks + TQ_K_QJL + (i >> 5u)] >> (i & 31u)) & 1u;
        acc += select(-c, c, bit != 0u) * TB[TB_QJL + i * TQ_M + j];
      }
      y += acc;
    }
    rot_a[j] = y;
  }
  unrotate_main(h, 1.0, lid);
  if (TQ_O > 0u) {
    workgroupBarrier();
    for (var j = lid; j < TQ_O; j += TQ_WG) {
      if (TQ_OB == 16u) {
        rot_a[j] = f16_val(KC[ks + TQ_K_OUT_IDX + (j >> 1u)] >> (16u * (j & 1u)));
      } else {
        rot_a[j] = bitcast<f32>(KC[ks + TQ_K_OUT_SCALE]) * CB[CB_O + kc_index(ks + TQ_K_OUT_IDX, j, TQ_OBQ)];
      }
    }
    unrotate_out(h, 1.0, lid);
  }
  store_kx(base(B_KX) + x0, lid);
  // ---- value
  let vs = value_slot(b, h, t);
  workgroupBarrier();
  if (TQ_VMINMAX) {
    for (var j = lid; j < TQ_D; j += TQ_WG) {
      let g = unpack2x16float(VC[vs + TQ_V_GROUPS + j / TQ_VGROUP]);
      xrow[j] = g.y + g.x * f32(vc_index(vs + TQ_V_IDX, j, TQ_VB));
    }
  } else {
    let vsc = bitcast<f32>(VC[vs + TQ_V_SCALE]);
    for (var j = lid; j < TQ_M; j += TQ_WG) {
      rot_a[j] = vsc * CB[CB_V + vc_index(vs + TQ_V_IDX, j, TQ_VB)];
    }
    unrotate_main(h, 1.0, lid);
    if (TQ_O > 0u) {
      workgroupBarrier();
      for (var j = lid; j < TQ_O; j += TQ_WG) {
        if (TQ_OB == 16u) {
          rot_a[j] = f16_val(VC[vs + TQ_V_OUT_IDX + (j >> 1u)] >> (16u * (j & 1u)));
        } else {
          rot_a[j] = bitcast<f32>(VC[vs + TQ_V_OUT_SCALE]) * CB[CB_O + vc_index(vs + TQ_V_OUT_IDX, j, TQ_OBQ)];
        }
      }
      unrotate_out(h, 1.0, lid);
    }
  }
  store_vx(base(B_VX) + x0, lid);
}
