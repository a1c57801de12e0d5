// Normalisation kernels: GroupNorm over NHWC / token maps and LayerNorm over the last dim.
//
// Activations are read in "units": UT = vec4<f32> (4 channels) when C % 4 == 0, else f32 (1 channel).
// ELEM is the storage element of one unit, UNPACK/PACK convert it to/from UT:
//   f32, vec4: ELEM vec4<f32>, UNPACK/PACK vec4<f32>
//   f16, vec4: ELEM vec2<u32> (4 packed halves), UNPACK h4, PACK pk4
//   scalar:    ELEM act, UNPACK f32, PACK act
// Statistics and accumulation are f32; variances are computed from deviations (two-pass per chunk, chunks
// merged with Chan's formula), never as E[x²] − E[x]².

fn h4(p: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}
fn pk4(v: vec4<f32>) -> vec2<u32> {
  return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
//#if VEC
fn hsum(v: vec4<f32>) -> f32 {
  return dot(v, vec4<f32>(1.0));
}
//#else
fn hsum(v: f32) -> f32 {
  return v;
}
//#endif
fn silu(y: {{UT}}) -> {{UT}} {
  return y / (1.0 + exp(-y));
}
// Channel c of an f16 weight vector read through 2-half words (works for any length).
fn wscalar2(p: wvec2, c: u32) -> f32 {
  return w2(p)[c & 1u];
}

//#if GN_CHUNKS
// Statistics of one chunk of rows of one group (channels [c0, c1) of batch item b): the chunk's first value
// (the shift), the mean of (x − shift) and the sum of squared deviations from the mean, by two passes over
// the chunk (the second from cache). Units that straddle a group boundary are masked per channel. Rows are
// counted within the bound window of x (banded: a window of whole chunks; unbanded: the whole map).
fn chunk_partial(b: u32, g: u32, chunk: u32) -> vec3<f32> {
  let c0 = g * gp.cpg;
  let c1 = c0 + gp.cpg;
  let u0 = unit_of(c0);
  let u1 = unit_of(c1 - 1u) + 1u;
  let r0 = chunk * gp.rows_per_chunk;
  let r1 = min(gp.band_rows, r0 + gp.rows_per_chunk);
  let base = b * gp.hw * gp.units;
  let shift = comp({{UNPACK}}(xin[base + r0 * gp.units + u0]), c0);
  var sum = {{UT}}(0.0);
  for (var r = r0; r < r1; r++) {
    for (var u = u0; u < u1; u++) {
      sum += select({{UT}}(0.0), {{UNPACK}}(xin[base + r * gp.units + u]) - shift, mask_of(u, c0, c1));
    }
  }
  let mean = hsum(sum) / f32((r1 - r0) * gp.cpg);
  var m2 = {{UT}}(0.0);
  for (var r = r0; r < r1; r++) {
    for (var u = u0; u < u1; u++) {
      let d = select({{UT}}(0.0), ({{UNPACK}}(xin[base + r * gp.units + u]) - shift) - mean, mask_of(u, c0, c1));
      m2 = fma(d, d, m2);
    }
  }
  return vec3<f32>(shift, mean, hsum(m2));
}
//#endif

//#if GN_MERGES
// Merge of a group's chunk statistics (cs[0..chunks), (shift, mean, m2) each) by one workgroup of 64, then the
// per-(batch, channel) table of the apply pass: y = ((x − mean_hi) − mean_lo) · scale + beta. Means are
// taken relative to the group's first value K = cs[0].shift so that they keep their precision, and
// mean_hi + mean_lo = K + mean to ~f32² precision (two-sum). Each invocation merges 4 chunks in order,
// then a fixed tree merges the 64 results (Chan et al.), so banded (GN_MERGE) and unbanded (GN_FUSED)
// statistics are the same arithmetic on the same chunk values: bit-identical.
var<workgroup> cs: array<vec3<f32>, 256>;
var<workgroup> acc: array<vec3<f32>, 64>;

// (n, mean, m2) of two disjoint sets; either may be empty.
fn chan(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
  if (b.x == 0.0) { return a; }
  if (a.x == 0.0) { return b; }
  let n = a.x + b.x;
  let delta = b.y - a.y;
  return vec3<f32>(n, a.y + delta * (b.x / n), a.z + b.z + delta * delta * (a.x * b.x / n));
}

fn merge_group(li: u32, b: u32, g: u32) {
  let k = cs[0].x;
  var a = vec3<f32>(0.0);
  for (var j = li * 4u; j < min(gp.chunks, li * 4u + 4u); j++) {
    let r0 = j * gp.rows_per_chunk;
    let count = f32((min(gp.hw, r0 + gp.rows_per_chunk) - r0) * gp.cpg);
    a = chan(a, vec3<f32>(count, (cs[j].x - k) + cs[j].y, cs[j].z));
  }
  acc[li] = a;
  for (var s = 32u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li < s) { acc[li] = chan(acc[li], acc[li + s]); }
  }
  workgroupBarrier();
  let t = acc[0];
  // Biased variance, as torch's GroupNorm. Two-sum: mean_hi + mean_lo = k + mean exactly.
  let rstd = inverseSqrt(t.z / t.x + gp.eps);
  let mean_hi = k + t.y;
  let mean_lo = t.y - (mean_hi - k);
  let c0 = g * gp.cpg;
  for (var c = c0 + li; c < c0 + gp.cpg; c += 64u) {
    var scale = rstd;
    var shift = 0.0;
//#if AFFINE
    scale = wscalar2(gamma[c >> 1u], c) * rstd;
    shift = wscalar2(beta[c >> 1u], c);
//#endif
    let i = b * 4u * gp.c + c;
    table[i] = mean_hi;
    table[i + gp.c] = mean_lo;
    table[i + 2u * gp.c] = scale;
    table[i + 3u * gp.c] = shift;
  }
}
//#endif

//#if GN_STATS_ANY
// Statistics passes. Chunks of rows_per_chunk rows (≤ 256 chunks per map); per (batch, group):
//   GN_FUSED (maps of a few MiB): one workgroup computes its chunks' statistics and merges them, one
//     dispatch;
//   GN_PARTIAL + GN_MERGE (larger maps; row bands): one dispatch per band writes chunk statistics to
//     `stats`, then one merge dispatch. Same functions, so the same table bit for bit.
struct GnParams {
  hw: u32,
  units: u32,
  c: u32,
  groups: u32,
  cpg: u32,
  rows_per_chunk: u32,
  chunks: u32,
  eps: f32,
  // rows and chunks in the bound window of x; global index of its first chunk (GN_PARTIAL)
  band_rows: u32,
  band_chunks: u32,
  chunk_base: u32,
  _pad: u32,
}
//#if VEC
fn unit_of(c: u32) -> u32 { return c >> 2u; }
fn comp(v: vec4<f32>, c: u32) -> f32 { return v[c & 3u]; }
fn mask_of(u: u32, c0: u32, c1: u32) -> vec4<bool> {
  let c = vec4<u32>(4u * u) + vec4<u32>(0u, 1u, 2u, 3u);
  return (c >= vec4<u32>(c0)) & (c < vec4<u32>(c1));
}
//#else
fn unit_of(c: u32) -> u32 { return c; }
fn comp(v: f32, c: u32) -> f32 { return v; }
fn mask_of(u: u32, c0: u32, c1: u32) -> bool { return true; }
//#endif
//#if !GN_MERGE
@group(0) @binding(0) var<storage, read> xin: array<{{ELEM}}>;
//#endif
//#if !GN_PARTIAL
@group(0) @binding(1) var<storage, read_write> table: array<f32>; // [B][4][C]: mean_hi, mean_lo, scale, beta
//#endif
@group(0) @binding(2) var<uniform> gp: GnParams;
//#if AFFINE
@group(0) @binding(3) var<storage, read> gamma: array<wvec2>;
@group(0) @binding(4) var<storage, read> beta: array<wvec2>;
//#endif
//#if !GN_FUSED
@group(0) @binding(5) var<storage, read_write> stats: array<vec4<f32>>; // [B][groups][chunks]: shift, mean, m2
//#endif
//#endif

//#if GN_FUSED
@compute @workgroup_size(64)
fn gn_fused(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.x;
  let b = wg.y;
  for (var j = li; j < gp.chunks; j += 64u) { cs[j] = chunk_partial(b, g, j); }
  workgroupBarrier();
  merge_group(li, b, g);
}
//#endif

//#if GN_PARTIAL
// Lanes take adjacent groups of the same chunk, so a SIMD row reads contiguous channels of each row
// (a workgroup per group, as gn_fused, reads a strided slice of every row: fine in cache, not beyond).
@compute @workgroup_size(8, 8)
fn gn_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let g = gid.x;
  let chunk = gid.y;
  let b = gid.z;
  if (g >= gp.groups || chunk >= gp.band_chunks) { return; }
  stats[(b * gp.groups + g) * gp.chunks + gp.chunk_base + chunk] = vec4<f32>(chunk_partial(b, g, chunk), 0.0);
}
//#endif

//#if GN_MERGE
@compute @workgroup_size(64)
fn gn_merge(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.x;
  let b = wg.y;
  for (var j = li; j < gp.chunks; j += 64u) { cs[j] = stats[(b * gp.groups + g) * gp.chunks + j].xyz; }
  workgroupBarrier();
  merge_group(li, b, g);
}
//#endif

//#if OPERAND
// Output written straight into a GEMM's x operand (GN apply and LayerNorm before a conv or linear, see
// src/ops/operand.ts): texel t of the operand holds 8 f16 (f16) or 4 f32 (f32) values of row t / texels, the
// same bytes the GEMM's own pack pass would copy from a [rows, C] buffer (C % 8 == 0), so results are
// bit-identical and the pack dispatch is gone. UPT: units (4 channels) per texel, 2 for f16, 1 for f32.
//#if TEX
@group(0) @binding(1) var dst: texture_storage_2d<rgba32uint, write>;
fn store_texel(t: u32, v: vec4<u32>) { textureStore(dst, vec2<u32>(t & 8191u, t >> 13u), v); }
//#else
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
fn store_texel(t: u32, v: vec4<u32>) { dst[t] = v; }
//#endif
//#if XF16
const UPT: u32 = 2u;
fn texel_of(y0: vec4<f32>, y1: vec4<f32>) -> vec4<u32> { return vec4<u32>(pk4(y0), pk4(y1)); }
//#else
const UPT: u32 = 1u;
fn texel_of(y0: vec4<f32>, y1: vec4<f32>) -> vec4<u32> { return bitcast<vec4<u32>>(y0); }
//#endif
//#endif

//#if GN_APPLY
// Pass 3: y = ((x − mean_hi) − mean_lo) · scale + beta (+ SiLU). Each invocation handles one channel unit over
// a block of rows, so its four table values are loaded once. Workgroup 8 units × 8 row blocks.
// Banded (B = 1), xin/outp are windows of band_rows rows; unbanded, band_rows = hw.
// OPERAND: one invocation per operand texel column (UPT units) instead, written to `dst`.
struct ApplyParams {
  hw: u32,
  units: u32,
  rows_per_block: u32,
  blocks: u32,
  band_rows: u32,
}
//#if INPLACE
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#else
@group(0) @binding(0) var<storage, read> xin: array<{{ELEM}}>;
//#if !OPERAND
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
//#endif
@group(0) @binding(2) var<storage, read> table: array<{{UT}}>; // [B][4][units]
@group(0) @binding(3) var<uniform> ap: ApplyParams;

// The normalised unit u of row r of batch item b (table index t = b · 4 · units + u).
fn gn_norm(x: {{UT}}, t: u32) -> {{UT}} {
  var y = fma((x - table[t]) - table[t + ap.units], table[t + 2u * ap.units], table[t + 3u * ap.units]);
//#if SILU
  y = silu(y);
//#endif
  return y;
}

//#if OPERAND
@compute @workgroup_size(8, 8)
fn gn_apply(@builtin(global_invocation_id) gid: vec3<u32>) {
  let tc = gid.x;
  let block = gid.y;
  let b = gid.z;
  let texels = ap.units / UPT;
  if (tc >= texels || block >= ap.blocks) { return; }
  let u = tc * UPT;
  let t = b * 4u * ap.units + u;
  let r0 = block * ap.rows_per_block;
  let r1 = min(ap.band_rows, r0 + ap.rows_per_block);
  for (var r = r0; r < r1; r++) {
    let i = (b * ap.hw + r) * ap.units + u;
    let y0 = gn_norm({{UNPACK}}(xin[i]), t);
//#if XF16
    let y1 = gn_norm({{UNPACK}}(xin[i + 1u]), t + 1u);
//#else
    let y1 = y0;
//#endif
    store_texel((b * ap.hw + r) * texels + tc, texel_of(y0, y1));
  }
}
//#else
@compute @workgroup_size(8, 8)
fn gn_apply(@builtin(global_invocation_id) gid: vec3<u32>) {
  let u = gid.x;
  let block = gid.y;
  let b = gid.z;
  if (u >= ap.units || block >= ap.blocks) { return; }
  let t = b * 4u * ap.units + u;
  let mean_hi = table[t];
  let mean_lo = table[t + ap.units];
  let scale = table[t + 2u * ap.units];
  let shift = table[t + 3u * ap.units];
  let r0 = block * ap.rows_per_block;
  let r1 = min(ap.band_rows, r0 + ap.rows_per_block);
  let base = b * ap.hw * ap.units + u;
  for (var r = r0; r < r1; r++) {
    let i = base + r * ap.units;
//#if INPLACE
    let x = {{UNPACK}}(outp[i]);
//#else
    let x = {{UNPACK}}(xin[i]);
//#endif
    var y = fma((x - mean_hi) - mean_lo, scale, shift);
//#if SILU
    y = silu(y);
//#endif
    outp[i] = {{PACK}}(y);
  }
}
//#endif
//#endif

//#if LAYER_NORM
// LayerNorm over the last dim of [M, C]: one invocation per row (two passes over the row for mean and
// variance, a third to write). Rows are independent, so no barriers; 2-D grid for many rows.
// OPERAND: the third pass writes the row's operand texels to `dst` instead of `outp`.
struct LnParams {
  rows: u32,
  units: u32,
  c: u32,
  eps: f32,
}
@group(0) @binding(0) var<storage, read> xin: array<{{ELEM}}>;
//#if !OPERAND
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
@group(0) @binding(2) var<uniform> lp: LnParams;
//#if AFFINE
//#if VEC
@group(0) @binding(3) var<storage, read> gamma: array<wvec4>;
@group(0) @binding(4) var<storage, read> beta: array<wvec4>;
fn gamma_at(u: u32) -> vec4<f32> { return w4(gamma[u]); }
fn beta_at(u: u32) -> vec4<f32> { return w4(beta[u]); }
//#else
@group(0) @binding(3) var<storage, read> gamma: array<wvec2>;
@group(0) @binding(4) var<storage, read> beta: array<wvec2>;
fn gamma_at(u: u32) -> f32 { return wscalar2(gamma[u >> 1u], u); }
fn beta_at(u: u32) -> f32 { return wscalar2(beta[u >> 1u], u); }
//#endif
//#endif

fn ln_norm(base: u32, u: u32, mean: f32, rstd: f32) -> {{UT}} {
  var y = ({{UNPACK}}(xin[base + u]) - mean) * rstd;
//#if AFFINE
  y = fma(y, gamma_at(u), beta_at(u));
//#endif
  return y;
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= lp.rows) { return; }
  let base = row * lp.units;
  var sum = {{UT}}(0.0);
  for (var u = 0u; u < lp.units; u++) { sum += {{UNPACK}}(xin[base + u]); }
  let mean = hsum(sum) / f32(lp.c);
  var m2 = {{UT}}(0.0);
  for (var u = 0u; u < lp.units; u++) {
    let d = {{UNPACK}}(xin[base + u]) - mean;
    m2 = fma(d, d, m2);
  }
  let rstd = inverseSqrt(hsum(m2) / f32(lp.c) + lp.eps);
//#if OPERAND
  let texels = lp.units / UPT;
  for (var u = 0u; u < lp.units; u += UPT) {
    let y0 = ln_norm(base, u, mean, rstd);
//#if XF16
    let y1 = ln_norm(base, u + 1u, mean, rstd);
//#else
    let y1 = y0;
//#endif
    store_texel(row * texels + u / UPT, texel_of(y0, y1));
  }
//#else
  for (var u = 0u; u < lp.units; u++) { outp[base + u] = {{PACK}}(ln_norm(base, u, mean, rstd)); }
//#endif
}
//#endif
