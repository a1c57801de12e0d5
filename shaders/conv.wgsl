// conv2d as an implicit GEMM over NHWC activations, built by src/ops/conv.ts.
//   rows    m = (b, oy, ox)             M = B·Ho·Wo output pixels
//   columns n = output channel           N = Cout
//   K       = (ky, kx, cin)              taps = kh·kw, cin zero-padded to a multiple of 8 (CinP)
// Operands are 16-byte texels exactly as in matmul.wgsl (same tiling rationale, see its header):
//   input  [B·H·W pixels, xPix texels]   f32: 2 texels per 8 channels, f16: 1 texel per 8 channels
//   weight [Cout, taps, CinP/8] texels   8 f16 channels each (repacked once by `pack_conv_weight`)
// Per tap, each row's input pixel (oy·stride + ky − padTop, ox·stride + kx − padLeft) is computed once and
// then the channel loop streams texels; taps that fall into the zero padding load texel 0 and select zero,
// so there is no divergent control flow in the hot loop.
// Row bands (maps larger than one storage binding, batch 1): a dispatch computes output rows
// [oy0, oy0 + M/Wo) into a window of out, reading an operand that starts at global input texel xTex0 (a
// window of x, or the band's input rows packed from texel 0). Coordinates and padding tests stay global, so
// padding applies only at the real image border and every output sums the same terms in the same order.
//
// Tile: TM output pixels × TN output channels per invocation, WG invocations per workgroup. On
// llvmpipe (TEX) 16×16 / WG 8 as for matmul: the per-tap address setup is ~10 vector ops per row, negligible
// against Cin/8 k-steps of 8·TM·TN FMAs for Cin ≥ 64. Small Cin (conv_in: 3 or 4 channels) pads to 8 and
// pays for it, which is acceptable for layers that run once per step.

//#if CONV
struct Params {
  M: u32,
  N: u32,
  C8: u32,       // k-steps per tap (CinP / 8)
  tilesN: u32,
  tiles: u32,
  xPix: u32,     // texels per input pixel
  taps: u32,
  kw: u32,
  H: u32,
  W: u32,
  Wo: u32,
  HWo: u32,      // Ho · Wo
  stride: u32,
  padTop: u32,
  padLeft: u32,
  outScale: f32, // 1 / output_scale_factor
  oy0: u32,      // global output row of this dispatch's first row (row bands; else 0)
  xTex0: u32,    // global input texel at which the x operand starts (row bands; else 0)
  outShift: f32, // added after outScale
  tbOff: u32,    // time bias: element of (batch 0, channel 0) and elements per batch item
  tbStride: u32, //   (a slice of one GEMM's output over every resnet's time_emb_proj, models/builder.ts)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

//#include gemm_io

// Bias, time-embedding bias of the row's batch item, for one output channel.
fn finish(batch: u32, col: u32, a: f32) -> f32 {
  var v = a;
//#if HAS_BIAS
  v += unpack2x16float(bias[col >> 1u])[col & 1u];
//#endif
//#if HAS_TIME_BIAS
  v += f32(time_bias[p.tbOff + batch * p.tbStride + col]);
//#endif
  return v;
}

// Output scale and shift, then the fused ReLU (TAESD).
fn post1(v: f32) -> f32 {
//#if RELU
  return max(v * p.outScale + p.outShift, 0.0);
//#else
  return v * p.outScale + p.outShift;
//#endif
}
fn post4(v: vec4<f32>) -> vec4<f32> {
//#if RELU
  return max(v * p.outScale + p.outShift, vec4<f32>(0.0));
//#else
  return v * p.outScale + p.outShift;
//#endif
}

fn store1(row: u32, batch: u32, col: u32, a: f32) {
  if (row >= p.M || col >= p.N) { return; }
  let i = row * p.N + col;
  var v = finish(batch, col, a);
//#if HAS_RESIDUAL
//#if !VEC_OUT
  v += f32(residual[i]);
//#endif
//#endif
//#if !VEC_OUT
  out[i] = act(post1(v));
//#endif
}

fn store4(row: u32, batch: u32, col: u32, a: vec4<f32>) {
  if (row >= p.M || col >= p.N) { return; }
  let i = (row * p.N + col) / 4u;
  var v = vec4<f32>(finish(batch, col, a.x), finish(batch, col + 1u, a.y), finish(batch, col + 2u, a.z),
    finish(batch, col + 3u, a.w));
//#if HAS_RESIDUAL
//#if VEC_OUT
  v += vec4<f32>(residual[i]);
//#endif
//#endif
//#if VEC_OUT
  out[i] = act4(post4(v));
//#endif
}

// Four adjacent channels from one vec4, as one vector store or four scalar ones.
fn store_group(row: u32, batch: u32, col: u32, a: vec4<f32>) {
//#if VEC_OUT
  store4(row, batch, col, a);
//#else
  store1(row, batch, col, a.x);
  store1(row, batch, col + 1u, a.y);
  store1(row, batch, col + 2u, a.z);
  store1(row, batch, col + 3u, a.w);
//#endif
}

//#if SHARED
// Workgroup-memory tiling for discrete GPUs (mode "shared"), as gemm_shared in matmul.wgsl: 16×16 threads,
// TM rows × 4 channels each, K tiles of 32 = 4 k-steps gathered im2col-style into workgroup memory.
// STAGE: f32, or f16 with ACC16 (as in matmul.wgsl: runs of 8 k values summed in f16, added into f32).
var<workgroup> As: array<{{STAGE}}, {{SHARED_A}}>;   // [32][16·TM + 1] (+1: conflict-free transposed writes)
var<workgroup> Bs: array<{{STAGE}}, 2080>;           // [32][65]

// First texel of k-step k8 (tap, 8-channel chunk) for output pixel m, or none when it is zero padding.
fn im2col_texel(m: u32, k8: u32) -> vec2<u32> {
  let tap = k8 / p.C8;
  let c8 = k8 % p.C8;
  let r = m % p.HWo;
  let y = i32(r / p.Wo + p.oy0) * i32(p.stride) - i32(p.padTop) + i32(tap / p.kw);
  let x = i32(r % p.Wo) * i32(p.stride) - i32(p.padLeft) + i32(tap % p.kw);
  let ok = k8 < p.taps * p.C8 && y >= 0 && y < i32(p.H) && x >= 0 && x < i32(p.W);
  let pix = (m / p.HWo) * p.H * p.W + u32(y) * p.W + u32(x);
  return vec2<u32>(select(0u, pix * p.xPix + c8 * (p.xPix / p.C8) - p.xTex0, ok), u32(ok));
}

@compute @workgroup_size(16, 16)
fn conv_shared(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>) {
  let bm = 16u * {{TM}}u;
  let sa = bm + 1u;   // As row stride
  let col0 = wid.x * 64u;
  let row0 = wid.y * bm;
  let k8s = p.taps * p.C8;
  var acc: array<vec4<f32>, {{TM}}>;
  for (var kt = 0u; kt < (k8s + 3u) / 4u; kt++) {
//#if XF16
    for (var e = li; e < bm * 4u; e += 256u) {
      let r = e / 4u;
      let q = e % 4u;
      let t = im2col_texel(min(row0 + r, p.M - 1u), kt * 4u + q);
      var v = vec4<u32>();
      if (t.y != 0u) { v = load_x(t.x); }
      let a = lo8(v);
      let b = hi8(v);
      for (var c = 0u; c < 4u; c++) {
        As[(8u * q + c) * sa + r] = {{STAGE}}(a[c]);
        As[(8u * q + c + 4u) * sa + r] = {{STAGE}}(b[c]);
      }
    }
//#else
    for (var e = li; e < bm * 8u; e += 256u) {
      let r = e / 8u;
      let q = e % 8u;
      let t = im2col_texel(min(row0 + r, p.M - 1u), kt * 4u + q / 2u);
      var v = vec4<f32>();
      if (t.y != 0u) { v = bitcast<vec4<f32>>(load_x(t.x + q % 2u)); }
      for (var c = 0u; c < 4u; c++) { As[(4u * q + c) * sa + r] = v[c]; }
    }
//#endif
    {
      // Weights [Cout, k8s] texels: 64 channels × 4 k-steps, one texel per thread.
      let q = li % 4u;
      let n = li / 4u;
      let k8 = kt * 4u + q;
      var v = vec4<u32>();
      if (k8 < k8s) { v = load_w(min(col0 + n, p.N - 1u) * k8s + k8); }
      let a = lo8(v);
      let b = hi8(v);
      for (var c = 0u; c < 4u; c++) {
        Bs[(8u * q + c) * 65u + n] = {{STAGE}}(a[c]);
        Bs[(8u * q + c + 4u) * 65u + n] = {{STAGE}}(b[c]);
      }
    }
    workgroupBarrier();
//#if ACC16
    for (var k0 = 0u; k0 < 32u; k0 += 8u) {
      // Zeroed explicitly: without it the runs carried over from one K tile to the next (naga, lavapipe).
      var run: array<vec4<f16>, {{TM}}>;
      for (var i = 0u; i < {{TM}}u; i++) { run[i] = vec4<f16>(); }
      for (var kk = k0; kk < k0 + 8u; kk++) {
        let bo = kk * 65u + lid.x * 4u;
        let b = vec4<f16>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
        for (var i = 0u; i < {{TM}}u; i++) { run[i] += As[kk * sa + lid.y * {{TM}}u + i] * b; }
      }
      for (var i = 0u; i < {{TM}}u; i++) { acc[i] += vec4<f32>(run[i]); }
    }
//#else
    for (var kk = 0u; kk < 32u; kk++) {
      let bo = kk * 65u + lid.x * 4u;
      let b = vec4<f32>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
      for (var i = 0u; i < {{TM}}u; i++) { acc[i] += As[kk * sa + lid.y * {{TM}}u + i] * b; }
    }
//#endif
    workgroupBarrier();
  }
  for (var i = 0u; i < {{TM}}u; i++) {
    let row = row0 + lid.y * {{TM}}u + i;
    let col = col0 + lid.x * 4u;
    let batch = min(row, p.M - 1u) / p.HWo;
    store_group(row, batch, col, acc[i]);
  }
}
//#else
@compute @workgroup_size({{WG}})
fn conv(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let tile = (wid.x + wid.y * nwg.x) * {{WG}}u + li;
  if (tile >= p.tiles) { return; }
  let col0 = (tile % p.tilesN) * {{TN}}u;
  let row0 = (tile / p.tilesN) * {{TM}}u;
  // Generated: per row i its image base pixel pb_i and top-left input coordinate (iy_i, ix_i);
  // per column j its weight offset wr_j; accumulators a_i_j.
{{SETUP}}
  for (var tap = 0u; tap < p.taps; tap++) {
    let ky = i32(tap / p.kw);
    let kx = i32(tap % p.kw);
    let wt = tap * p.C8;
    // Generated: per row, the input pixel's first texel xr_i and whether it is inside the image ok_i.
{{TAP}}
    for (var c = 0u; c < p.C8; c++) {
      // Generated: TM (×2 for f32) input texels and TN weight texels, then TM·TN 8-term dot products.
{{STEP}}
    }
  }
  // Epilogue as a loop over groups of 4 channels (see matmul.wgsl for why it is not unrolled).
  var o: array<vec4<f32>, {{TILE_VEC4S}}>;
{{COLLECT}}
  for (var q = 0u; q < {{TILE_VEC4S}}u; q++) {
    let row = row0 + q / {{TN4}}u;
    let col = col0 + (q % {{TN4}}u) * 4u;
    let batch = min(row, p.M - 1u) / p.HWo;
    store_group(row, batch, col, o[q]);
  }
}
//#endif
//#endif

//#if PACK_CONV_WEIGHT
// Checkpoint weight [Cout, Cin, kh, kw] f16 → texels [Cout, taps, CinP/8], channel-padded with zeros.
struct PackParams {
  Cin: u32,
  taps: u32,
  C8: u32,
  total: u32,   // Cout · taps · C8
}
@group(0) @binding(0) var<storage, read> src: array<u32>;
//#if TEX
@group(0) @binding(1) var dst: texture_storage_2d<rgba32uint, write>;
//#else
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
//#endif
@group(0) @binding(2) var<uniform> pp: PackParams;

fn half_bits(n: u32, cin: u32, tap: u32) -> u32 {
  if (cin >= pp.Cin) { return 0u; }
  let e = (n * pp.Cin + cin) * pp.taps + tap;
  return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
}
fn pair(n: u32, cin: u32, tap: u32) -> u32 { return half_bits(n, cin, tap) | (half_bits(n, cin + 1u, tap) << 16u); }

@compute @workgroup_size(64)
fn pack_conv_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= pp.total) { return; }
  let c8 = t % pp.C8;
  let tap = (t / pp.C8) % pp.taps;
  let n = t / (pp.C8 * pp.taps);
  let cin = c8 * 8u;
  let v = vec4<u32>(pair(n, cin, tap), pair(n, cin + 2u, tap), pair(n, cin + 4u, tap), pair(n, cin + 6u, tap));
//#if TEX
  textureStore(dst, vec2<u32>(t & 8191u, t >> 13u), v);
//#else
  dst[t] = v;
//#endif
}
//#endif
