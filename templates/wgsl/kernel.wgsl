// templates/wgsl/kernel.wgsl - WebGPU compute kernels for one variant.
//
// WGSL has no preprocessor: gen/emit_wgsl.c writes the variant's constants
// (TQ_*, slot word offsets, offsets into the tables buffer) above this text
// and keeps or drops the lines between //#if KEY ... //#else ... //#endif
// (a dropped line becomes an empty line, so line N here is line N of the
// template part of every generated file).  Keys: SG (the f16 + subgroups
// flavour), PAGED, and the activation storage: ACT_F32, ACT_F16 (native
// f16 arrays, SG flavour only), ACT_PACKED (two 16-bit values per u32,
// ACT_BF16 telling bf16 from f16).
//
// Entry points: encode, decode, prefill, reduce, dequant.  The packed cache
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
  pad: u32,
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
// First word of the slot of token t of (sequence b, kv head h).
fn slot_word(b: u32, h: u32, t: u32, words: u32) -> u32 {
//#if PAGED
  let blk = u32(BT[b * P.max_blocks + t / TQ_BLOCK]);
  return ((blk * P.kv_heads + h) * TQ_BLOCK + t % TQ_BLOCK) * words;
//#else
  return ((b * P.kv_heads + h) * P.capacity + t) * words;
//#endif
}

// Channel i of kv head h's order (docs/FORMAT.md: outliers first).
fn chan(h: u32, i: u32) -> u32 {
  if (P.has_perm == 0u) { return i; }
  let e = h * TQ_D + i;
  return (PERM[e >> 1u] >> (16u * (e & 1u))) & 0xFFFFu;
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
fn load_codebooks(lid: u32) {
  for (var i = lid; i < TQ_KL; i += TQ_WG) { CB[CB_K + i] = TB[TB_KCB + i]; }
  for (var i = lid; i < TQ_VL; i += TQ_WG) { CB[CB_V + i] = TB[TB_VCB + i]; }
  for (var i = lid; i < TQ_OL; i += TQ_WG) { CB[CB_O + i] = TB[TB_OCB + i]; }
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
  let t = u32(LENS[b]) - P.n_tokens + i;
  let at = ((b * P.n_tokens + i) * P.kv_heads + h) * TQ_D;
  // ---- key
  let ks = slot_word(b, h, t, TQ_K_WORDS);
  for (var j = lid; j < TQ_D; j += TQ_WG) { xrow[j] = ld_kx(at + j); }
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
  let vs = slot_word(b, h, t, TQ_V_WORDS);
  for (var j = lid; j < TQ_D; j += TQ_WG) { xrow[j] = ld_vx(at + j); }
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

// Rotates (and scales) the workgroup's four query rows into q4, qo4, qs4.
fn prepare_rows(b: u32, h: u32, r0: u32, lid: u32) {
  for (var r = 0u; r < 4u; r++) {
    let row = r0 + r;
    let live = row < P.rows;
    let tok = row / TQ_G;
    let at = ((b * P.n_tokens + tok) * P.kv_heads * TQ_G + h * TQ_G + row % TQ_G) * TQ_D;
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
  load_codebooks(lid);
  prepare_rows(b, h, r0, lid);
  let len = u32(LENS[b]);
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
      sv[tt * TQ_VWS + e % TQ_V_WORDS] = VC[slot_word(b, h, tile + tt, TQ_V_WORDS) + e % TQ_V_WORDS];
    }
    var sc = vec4<f32>(NEG);
    let t = tile + lid;
    if (lid < n) {
      let s = score(slot_word(b, h, t, TQ_K_WORDS));
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
      let at = ((((b * P.kv_heads + h) * P.rows + row) * P.splits) + split) * TQ_PART;
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
  let base = ((b * P.kv_heads + h) * P.rows + row) * P.splits * TQ_PART;
  var mx = NEG;
  for (var s = 0u; s < P.splits; s++) { mx = max(mx, WS[base + s * TQ_PART]); }
  var total = 0.0;
  for (var s = 0u; s < P.splits; s++) {
    let ls = WS[base + s * TQ_PART + 1u];
    total += select(0.0, ls * exp(WS[base + s * TQ_PART] - mx), ls > 0.0);
  }
  let f = 1.0 / total;
  for (var j = lid; j < TQ_VDIM; j += TQ_WG) {
    var v = 0.0;
    for (var s = 0u; s < P.splits; s++) {
      let ls = WS[base + s * TQ_PART + 1u];
      v += select(0.0, WS[base + s * TQ_PART + 2u + j] * exp(WS[base + s * TQ_PART] - mx), ls > 0.0);
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
  store_out(((b * P.n_tokens + tok) * P.kv_heads * TQ_G + h * TQ_G + row % TQ_G) * TQ_D, lid);
}

// ---- dequantize -------------------------------------------------------
// grid (n_tokens, kv_heads, batch): token t of head h of sequence b.
@compute @workgroup_size(TQ_WG)
fn dequant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  let h = wid.y;
  let b = wid.z;
  let at = ((b * P.n_tokens + t) * P.kv_heads + h) * TQ_D;
  load_codebooks(lid);
  // ---- key: main part (plus the QJL term), then outliers
  let ks = slot_word(b, h, t, TQ_K_WORDS);
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
  store_kx(at, lid);
  // ---- value
  let vs = slot_word(b, h, t, TQ_V_WORDS);
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
  store_vx(at, lid);
}
