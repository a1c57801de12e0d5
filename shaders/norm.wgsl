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

//#if GN_PARTIAL
// Pass 1: per (batch, chunk of rows, channel unit): the chunk's mean and sum of squared deviations, by two
// passes over the chunk (the second from cache). Sums are taken relative to the chunk's first row so that a
// large common offset does not eat the f32 mantissa. Workgroup 8 units × 8 chunks: small C still fills it.
// Banded (maps larger than one binding, B = 1): `xin` is a window of whole chunks starting at chunk
// `chunk_base`; unbanded, the window is the whole map (band_rows = hw, band_chunks = chunks, chunk_base = 0).
struct PartialParams {
  hw: u32,
  units: u32,
  rows_per_chunk: u32,
  chunks: u32,
  // element offset (in UT units) of the M2 half of `stats`: B · chunks · units
  m2_offset: u32,
  // rows and chunks in the bound window of x; global index of its first chunk
  band_rows: u32,
  band_chunks: u32,
  chunk_base: u32,
}
@group(0) @binding(0) var<storage, read> xin: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> stats: array<{{UT}}>; // [2][B][chunks][units]
@group(0) @binding(2) var<uniform> pp: PartialParams;

@compute @workgroup_size(8, 8)
fn gn_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let u = gid.x;
  let chunk = gid.y;
  let b = gid.z;
  if (u >= pp.units || chunk >= pp.band_chunks) { return; }
  let r0 = chunk * pp.rows_per_chunk; // rows within the window
  let r1 = min(pp.band_rows, r0 + pp.rows_per_chunk);
  let base = b * pp.hw * pp.units + u;
  let shift = {{UNPACK}}(xin[base + r0 * pp.units]);
  var sum = {{UT}}(0.0);
  for (var r = r0 + 1u; r < r1; r++) { sum += {{UNPACK}}(xin[base + r * pp.units]) - shift; }
  let n = f32(r1 - r0);
  let mean_shifted = sum / n;
  var m2 = {{UT}}(0.0);
  for (var r = r0; r < r1; r++) {
    let d = ({{UNPACK}}(xin[base + r * pp.units]) - shift) - mean_shifted;
    m2 = fma(d, d, m2);
  }
  let slot = (b * pp.chunks + pp.chunk_base + chunk) * pp.units + u;
  stats[slot] = shift + mean_shifted;
  stats[pp.m2_offset + slot] = m2;
}
//#endif

//#if GN_STATS
// Pass 2: per (batch, group): merge the chunk statistics of the group's channels (Chan et al., on means taken
// relative to the group's first chunk mean K so that the running mean keeps its precision), then write per
// (batch, channel) the table used by pass 3: y = ((x − mean_hi) − mean_lo) · scale + beta, where
// mean_hi + mean_lo is the group mean to ~f32² precision and scale = gamma · rstd.
struct StatsParams {
  hw: u32,
  c: u32,
  rows_per_chunk: u32,
  chunks: u32,
  m2_offset: u32,
  groups: u32,
  channels_per_group: u32,
  eps: f32,
}
@group(0) @binding(0) var<storage, read> stats: array<f32>; // [2][B][chunks][C]
@group(0) @binding(1) var<storage, read_write> table: array<f32>; // [B][4][C]: mean_hi, mean_lo, scale, beta
@group(0) @binding(2) var<uniform> sp: StatsParams;
//#if AFFINE
@group(0) @binding(3) var<storage, read> gamma: array<wvec2>;
@group(0) @binding(4) var<storage, read> beta: array<wvec2>;
//#endif

@compute @workgroup_size(64)
fn gn_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
  let g = gid.x;
  let b = gid.y;
  if (g >= sp.groups) { return; }
  let c0 = g * sp.channels_per_group;
  let c1 = c0 + sp.channels_per_group;
  let k = stats[b * sp.chunks * sp.c + c0];
  var n = 0.0;
  var mean = 0.0; // relative to k
  var m2 = 0.0;
  for (var chunk = 0u; chunk < sp.chunks; chunk++) {
    let r0 = chunk * sp.rows_per_chunk;
    let count = f32(min(sp.hw, r0 + sp.rows_per_chunk) - r0);
    let row = (b * sp.chunks + chunk) * sp.c;
    for (var c = c0; c < c1; c++) {
      let mean_b = stats[row + c] - k;
      let m2_b = stats[sp.m2_offset + row + c];
      let total = n + count;
      let delta = mean_b - mean;
      mean += delta * (count / total);
      m2 += m2_b + delta * delta * (n * count / total);
      n = total;
    }
  }
  // Biased variance, as torch's GroupNorm. Two-sum: mean_hi + mean_lo = k + mean exactly (|k| ≥ |mean| or
  // both tiny).
  let rstd = inverseSqrt(m2 / n + sp.eps);
  let mean_hi = k + mean;
  let mean_lo = mean - (mean_hi - k);
  for (var c = c0; c < c1; c++) {
    var scale = rstd;
    var shift = 0.0;
//#if AFFINE
    scale = wscalar2(gamma[c >> 1u], c) * rstd;
    shift = wscalar2(beta[c >> 1u], c);
//#endif
    let t = b * 4u * sp.c + c;
    table[t] = mean_hi;
    table[t + sp.c] = mean_lo;
    table[t + 2u * sp.c] = scale;
    table[t + 3u * sp.c] = shift;
  }
}
//#endif

//#if GN_APPLY
// Pass 3: y = ((x − mean_hi) − mean_lo) · scale + beta (+ SiLU). Each invocation handles one channel unit over
// a block of rows, so its four table values are loaded once. Workgroup 8 units × 8 row blocks.
// Banded (B = 1), xin/outp are windows of band_rows rows; unbanded, band_rows = hw.
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
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
@group(0) @binding(2) var<storage, read> table: array<{{UT}}>; // [B][4][units]
@group(0) @binding(3) var<uniform> ap: ApplyParams;

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

//#if LAYER_NORM
// LayerNorm over the last dim of [M, C]: one invocation per row (two passes over the row for mean and
// variance, a third to write). Rows are independent, so no barriers; 2-D grid for many rows.
struct LnParams {
  rows: u32,
  units: u32,
  c: u32,
  eps: f32,
}
@group(0) @binding(0) var<storage, read> xin: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
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
  for (var u = 0u; u < lp.units; u++) {
    var y = ({{UNPACK}}(xin[base + u]) - mean) * rstd;
//#if AFFINE
    y = fma(y, gamma_at(u), beta_at(u));
//#endif
    outp[base + u] = {{PACK}}(y);
  }
}
//#endif
