// LoRA merge family (src/ops/lora_merge.ts): a low-rank update written straight into a weight that is already
// packed for the GEMM kernels (8 f16 values of K per rgba32uint texel, `rowTexels` texels per output row:
// [N, K8] for Linear, [Cout, taps, Cin8] for conv; see the headers of matmul.wgsl and conv.wgsl):
//
//   dst[n, k] = f16(base[n, k] + Σ_r scale[r] · up[n, r] · down[r, k])      (f32 arithmetic, one rounding)
//
// `base` is an untouched copy of the original packed weight that the caller keeps, so merging a new set never
// compounds on an earlier one, and restoring the original is a plain copy (bit-exact). Several LoRAs on one
// weight arrive concatenated along r, each block with its own scale. `down` comes already in the packed K
// order (8 f32 per texel, zeros where K or Cin is padded), so the padding lanes of dst stay exactly zero.
//
// One invocation owns 4 rows × 1 texel (32 outputs). `up` is transposed to [R, ceil(N/4)] vec4, so per rank
// an invocation loads one scale, one up vec4 and two down vec4 for 32 FMAs; adjacent lanes take adjacent
// texels of the same 4 rows (down loads contiguous, up loads shared). Storage-buffer loads dominate on
// llvmpipe, hence the 4-row reuse; the merge is a few dispatches per weight, not the hot path.

struct Params {
  rows: u32,       // N (output rows of the weight)
  rowTexels: u32,  // texels per row
  rank: u32,       // R, summed over the LoRAs merged into this weight
  groups: u32,     // ceil(N / 4)
}

//#if TEX
@group(0) @binding(0) var base: texture_2d<u32>;
@group(0) @binding(1) var dst: texture_storage_2d<rgba32uint, write>;
fn load_base(t: u32) -> vec4<u32> { return textureLoad(base, vec2<u32>(t & 8191u, t >> 13u), 0); }
fn store_dst(t: u32, v: vec4<u32>) { textureStore(dst, vec2<u32>(t & 8191u, t >> 13u), v); }
//#else
@group(0) @binding(0) var<storage, read> base: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
fn load_base(t: u32) -> vec4<u32> { return base[t]; }
fn store_dst(t: u32, v: vec4<u32>) { dst[t] = v; }
//#endif
@group(0) @binding(2) var<storage, read> up_t: array<vec4<f32>>;   // [R, groups]: rows 4g..4g+3 of column r
@group(0) @binding(3) var<storage, read> down: array<vec4<f32>>;   // [R, rowTexels, 2]: 8 values of K per texel
@group(0) @binding(4) var<storage, read> scales: array<f32>;       // [R]: LoRA scale · alpha / rank
@group(0) @binding(5) var<uniform> p: Params;

// The original texel plus the update (K offsets 0-3 in lo, 4-7 in hi), rounded to f16 once.
fn merged(t: u32, lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {
  let b = load_base(t);
  let a = vec4<f32>(unpack2x16float(b.x), unpack2x16float(b.y)) + lo;
  let c = vec4<f32>(unpack2x16float(b.z), unpack2x16float(b.w)) + hi;
  return vec4<u32>(pack2x16float(a.xy), pack2x16float(a.zw), pack2x16float(c.xy), pack2x16float(c.zw));
}

@compute @workgroup_size(64)
fn lora_merge(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.groups * p.rowTexels) { return; }
  let j = i % p.rowTexels;
  let g = i / p.rowTexels;
  var lo0 = vec4<f32>(); var hi0 = vec4<f32>();
  var lo1 = vec4<f32>(); var hi1 = vec4<f32>();
  var lo2 = vec4<f32>(); var hi2 = vec4<f32>();
  var lo3 = vec4<f32>(); var hi3 = vec4<f32>();
  for (var r = 0u; r < p.rank; r++) {
    let u = up_t[r * p.groups + g] * scales[r];
    let d = (r * p.rowTexels + j) * 2u;
    let dl = down[d];
    let dh = down[d + 1u];
    lo0 += u.x * dl; hi0 += u.x * dh;
    lo1 += u.y * dl; hi1 += u.y * dh;
    lo2 += u.z * dl; hi2 += u.z * dh;
    lo3 += u.w * dl; hi3 += u.w * dh;
  }
  let n = g * 4u;
  store_dst(n * p.rowTexels + j, merged(n * p.rowTexels + j, lo0, hi0));
  if (n + 1u < p.rows) { store_dst((n + 1u) * p.rowTexels + j, merged((n + 1u) * p.rowTexels + j, lo1, hi1)); }
  if (n + 2u < p.rows) { store_dst((n + 2u) * p.rowTexels + j, merged((n + 2u) * p.rowTexels + j, lo2, hi2)); }
  if (n + 3u < p.rows) { store_dst((n + 3u) * p.rowTexels + j, merged((n + 3u) * p.rowTexels + j, lo3, hi3)); }
}
