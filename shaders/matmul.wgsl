// GEMM family: y[M, N] = epilogue(x[M, K] · W[N, K]ᵀ), GEGLU, operand packing and a simple batched matmul.
// Built by src/ops/linear.ts and src/ops/gemm_weights.ts, which select one entry point per pipeline through a
// define (GEMM, PACK_ROWS, PACK_WEIGHT, BMM); src/ops/gemm_tile.ts generates the register-tile body.
//
// Operands are streams of 16-byte "texels" (vec4<u32>), K padded with zeros to a multiple of 8:
//   weights  [N, K8] texels, each holding 8 f16 values along K        (packed once by `pack_weight`)
//   x (f32)  [M, 2·K8] texels, each holding 4 f32 bit patterns         (packed per call by `pack_rows`,
//   x (f16)  [M, K8] texels, each holding 8 f16 values                   or bound directly when K % 8 == 0)
// One k-step consumes 8 values of K: two x texels (f32) or one (f16) per row, one weight texel per column.
//
// Tiling (TM rows × TN columns per invocation, WG invocations per workgroup) is chosen per adapter
// in src/ops/gemm.ts (gemmTiling). The reasoning, from measurements on Mesa lavapipe (llvmpipe, 8 SIMD lanes,
// one invocation per lane, 2 cores):
//   * Every storage-buffer load becomes a scalar loop over the 8 lanes (~50-120 cycles per vec4 load), and
//     that loop splits the hot loop into many basic blocks. Texture loads (TEX) are straight-line gathers:
//     with BOTH operands in textures the same kernel ran 1.5× faster (26 → 40+ GFLOP/s per 2 cores).
//     So on llvmpipe the operands live in rgba32uint textures of width 8192 (linear texel index
//     t → (t & 8191, t >> 13)), and only full 16-byte texels are ever loaded.
//   * Loads, not FMAs, dominate: per k-step an invocation loads 2·TM (f32) or TM (f16) x texels plus TN
//     weight texels and performs 8·TM·TN FMAs, so big register tiles amortise loads (8×16: 26-32, 16×16:
//     42-44 GFLOP/s of CPU time). Beyond 16×16 the accumulators (TM·TN scalars × 8 lanes) spill to the
//     stack and LLVM's cold compile time explodes (≈3.5 s at 16×16, 13-20 s at 16×32 or 32×16) for
//     ≤10% gain, so 16×16 it is (GEGLU, with two accumulator sets, uses 16×8). Mesa's on-disk shader
//     cache makes later runs compile nothing. f16 activations halve the x texels (+10-25% measured).
//   * Barriers are coroutine switches in llvmpipe and workgroup-memory loads are as slow as buffer loads
//     (measured 81 vs 48 cycles), so no workgroup memory: every invocation is independent, and WG = 8 keeps
//     one workgroup = one SIMD row of lanes. Lanes take adjacent column tiles, so all 8 lanes read the
//     same x rows (cache hits) while each streams its own weight rows.
//   * WGSL loops over local arrays were not unrolled into registers (2-7 GFLOP/s), so the tile body is
//     generated as straight-line code with one named variable per accumulator.
// Other adapters use gemm_shared below (mode "shared": classic workgroup-memory tiling from storage buffers,
// which NVIDIA-class GPUs reward). Mode "buffer" runs the generated register-tile body on storage buffers
// (no barriers; the fallback where workgroup memory is too small). Only lavapipe was available to measure:
// the shared kernel's 64×64 block / 4×4-per-thread / K-tile 32 shape is the textbook choice; the autotuner
// (src/ops/autotune.ts) times it against other block heights, register tiles and split-K on the adapter in
// use. SPLITK (texture or buffer operands, subgroups feature): one subgroup per tile, lanes split K and
// subgroupAdd reduces; any path can be forced with SD_GPU_FORCE (src/gpu/choices.ts).

//#if GEMM
struct Params {
  M: u32,
  N: u32,        // output columns (GEGLU: D, half of the weight rows)
  K8: u32,       // k-steps (K padded to a multiple of 8, divided by 8)
  tilesN: u32,   // ceil(N / TN)
  tiles: u32,    // tilesN · ceil(M / TM)
  xRow: u32,     // texels per x row (K8 for f16 x, 2·K8 for f32 x)
  gate: u32,     // GEGLU: texel offset of the gate half of the weight (D · K8)
  wOff: u32,     // texel of the weight's row 0: a member of a packed group (gemm_weights.ts), else 0
  bOff: u32,     // element of the bias's column 0 (the member's place in its group's bias), else 0
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

//#include gemm_io

// erf with |error| < 1.2e-7 (Numerical Recipes' Chebyshev fit of erfc; erfc keeps full relative
// precision in the tails, so gelu(x) = 0.5·x·erfc(-x/√2) is accurate for large negative x too).
fn erfc_pos(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(-z * z + poly);
}
fn gelu_erf(x: f32) -> f32 {
  // 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(-x/√2)
  let z = x * 0.70710678118654752;
  let c = erfc_pos(abs(z));
  return 0.5 * x * select(c, 2.0 - c, z > 0.0);
}
// x·sigmoid(s·x) written as x / (1 + exp(-s·x)): no cancellation, exact limits (exp overflow gives -0).
fn x_sigmoid(x: f32, s: f32) -> f32 { return x / (1.0 + exp(-s * x)); }

fn bias_at(n: u32) -> f32 {
//#if HAS_BIAS
  let i = p.bOff + n;
  return unpack2x16float(bias[i >> 1u])[i & 1u];
//#else
  return 0.0;
//#endif
}

// Bias, GEGLU gate and activation for one output column.
fn finish(col: u32, a: f32, g: f32) -> f32 {
  var v = a + bias_at(col);
//#if GEGLU
  v = v * gelu_erf(g + bias_at(p.N + col));
//#endif
//#if GELU
  v = gelu_erf(v);
//#endif
//#if GELU_TANH
  // 0.5·v·(1 + tanh(u)) = v·sigmoid(2u), u = √(2/π)·(v + 0.044715·v³)
  v = v / (1.0 + exp(-1.5957691216057308 * (v + 0.044715 * v * v * v)));
//#endif
//#if QUICK_GELU
  v = x_sigmoid(v, 1.702);
//#endif
//#if SILU
  v = x_sigmoid(v, 1.0);
//#endif
  return v;
}

fn store1(row: u32, col: u32, a: f32, g: f32) {
  if (row >= p.M || col >= p.N) { return; }
  let i = row * p.N + col;
  var v = finish(col, a, g);
//#if HAS_RESIDUAL
//#if !VEC_OUT
  v += f32(residual[i]);
//#endif
//#endif
//#if !VEC_OUT
  out[i] = act(v);
//#endif
}

// Four adjacent columns (N % 4 == 0 and TN % 4 == 0, so the group is entirely inside or outside).
fn store4(row: u32, col: u32, a: vec4<f32>, g: vec4<f32>) {
  if (row >= p.M || col >= p.N) { return; }
  let i = (row * p.N + col) / 4u;
  var v = vec4<f32>(finish(col, a.x, g.x), finish(col + 1u, a.y, g.y), finish(col + 2u, a.z, g.z),
    finish(col + 3u, a.w, g.w));
//#if HAS_RESIDUAL
//#if VEC_OUT
  v += vec4<f32>(residual[i]);
//#endif
//#endif
//#if VEC_OUT
  out[i] = act4(v);
//#endif
}

// Four adjacent columns from one vec4 per accumulator set, as one vector store or four scalar ones.
fn store_group(row: u32, col: u32, a: vec4<f32>, g: vec4<f32>) {
//#if VEC_OUT
  store4(row, col, a, g);
//#else
  store1(row, col, a.x, g.x);
  store1(row, col + 1u, a.y, g.y);
  store1(row, col + 2u, a.z, g.z);
  store1(row, col + 3u, a.w, g.w);
//#endif
}

//#if SHARED
// Workgroup-memory tiling for discrete GPUs (mode "shared"; operands in storage buffers): 16×16 threads,
// each owning TM rows × 4 columns (one vec4 accumulator per row), so a workgroup computes a (16·TM) × 64
// block. Per K tile of 32 values the workgroup stages x (transposed, [k][m]) and W ([k][n]) in workgroup
// memory with coalesced 16-byte loads, then every thread does 32·TM vec4 FMAs from it. The classic shape
// for NVIDIA-class GPUs, which reward on-chip reuse; on llvmpipe barriers are costly, hence TEX there.
// STAGE: f32, or f16 with ACC16 (f16 x only: staging is exact, products are summed in f16 over runs of 8
// k values, each run added into the f32 accumulators).
var<workgroup> As: array<{{STAGE}}, {{SHARED_A}}>;   // [32][16·TM + 1] (+1: conflict-free transposed writes)
var<workgroup> Bs: array<{{STAGE}}, 2080>;           // [32][65]
//#if GEGLU
var<workgroup> Gs: array<{{STAGE}}, 2080>;           // gate weights [32][65]
//#endif

fn stage_w(dst_gate: bool, li: u32, col0: u32, kt: u32) {
  // 64 columns × 4 k-steps = 256 texels, one per thread; 4 adjacent threads read 64 bytes of one row.
  let q = li % 4u;
  let n = li / 4u;
  let k8 = kt * 4u + q;
  var v = vec4<u32>();
  if (k8 < p.K8) {
    let row = min(col0 + n, p.N - 1u);
    v = load_w(p.wOff + select(0u, p.gate, dst_gate) + row * p.K8 + k8);
  }
  let a = lo8(v);
  let b = hi8(v);
  let base = 8u * q * 65u + n;
  for (var c = 0u; c < 4u; c++) {
//#if GEGLU
    if (dst_gate) {
      Gs[base + c * 65u] = {{STAGE}}(a[c]);
      Gs[base + (c + 4u) * 65u] = {{STAGE}}(b[c]);
      continue;
    }
//#endif
    Bs[base + c * 65u] = {{STAGE}}(a[c]);
    Bs[base + (c + 4u) * 65u] = {{STAGE}}(b[c]);
  }
}

@compute @workgroup_size(16, 16)
fn gemm_shared(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>) {
  let bm = 16u * {{TM}}u;
  let sa = bm + 1u;   // As row stride
  let col0 = wid.x * 64u;
  let row0 = wid.y * bm;
  var acc: array<vec4<f32>, {{TM}}>;
  var accg: array<vec4<f32>, {{TM}}>;
  let kTiles = (p.K8 + 3u) / 4u;
  for (var kt = 0u; kt < kTiles; kt++) {
//#if XF16
    // bm rows × 4 k-steps, one texel (8 halves) each.
    for (var e = li; e < bm * 4u; e += 256u) {
      let r = e / 4u;
      let q = e % 4u;
      let k8 = kt * 4u + q;
      var v = vec4<u32>();
      if (k8 < p.K8) { v = load_x(min(row0 + r, p.M - 1u) * p.xRow + k8); }
      let a = lo8(v);
      let b = hi8(v);
      for (var c = 0u; c < 4u; c++) {
        As[(8u * q + c) * sa + r] = {{STAGE}}(a[c]);
        As[(8u * q + c + 4u) * sa + r] = {{STAGE}}(b[c]);
      }
    }
//#else
    // bm rows × 4 k-steps × 2 texels of 4 f32.
    for (var e = li; e < bm * 8u; e += 256u) {
      let r = e / 8u;
      let q = e % 8u;
      let k8 = kt * 4u + q / 2u;
      var v = vec4<f32>();
      if (k8 < p.K8) { v = bitcast<vec4<f32>>(load_x(min(row0 + r, p.M - 1u) * p.xRow + 2u * k8 + q % 2u)); }
      for (var c = 0u; c < 4u; c++) { As[(4u * q + c) * sa + r] = v[c]; }
    }
//#endif
    stage_w(false, li, col0, kt);
//#if GEGLU
    stage_w(true, li, col0, kt);
//#endif
    workgroupBarrier();
//#if ACC16
    for (var k0 = 0u; k0 < 32u; k0 += 8u) {
      // Zeroed explicitly: without it the runs carried over from one K tile to the next (naga, lavapipe).
      var run: array<vec4<f16>, {{TM}}>;
      var rung: array<vec4<f16>, {{TM}}>;
      for (var i = 0u; i < {{TM}}u; i++) {
        run[i] = vec4<f16>();
        rung[i] = vec4<f16>();
      }
      for (var kk = k0; kk < k0 + 8u; kk++) {
        let bo = kk * 65u + lid.x * 4u;
        let b = vec4<f16>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
//#if GEGLU
        let g = vec4<f16>(Gs[bo], Gs[bo + 1u], Gs[bo + 2u], Gs[bo + 3u]);
//#endif
        for (var i = 0u; i < {{TM}}u; i++) {
          let a = As[kk * sa + lid.y * {{TM}}u + i];
          run[i] += a * b;
//#if GEGLU
          rung[i] += a * g;
//#endif
        }
      }
      for (var i = 0u; i < {{TM}}u; i++) {
        acc[i] += vec4<f32>(run[i]);
        accg[i] += vec4<f32>(rung[i]);
      }
    }
//#else
    for (var kk = 0u; kk < 32u; kk++) {
      let bo = kk * 65u + lid.x * 4u;
      let b = vec4<f32>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
//#if GEGLU
      let g = vec4<f32>(Gs[bo], Gs[bo + 1u], Gs[bo + 2u], Gs[bo + 3u]);
//#endif
      for (var i = 0u; i < {{TM}}u; i++) {
        let a = As[kk * sa + lid.y * {{TM}}u + i];
        acc[i] += a * b;
//#if GEGLU
        accg[i] += a * g;
//#endif
      }
    }
//#endif
    workgroupBarrier();
  }
  for (var i = 0u; i < {{TM}}u; i++) {
    let row = row0 + lid.y * {{TM}}u + i;
    let col = col0 + lid.x * 4u;
    store_group(row, col, acc[i], accg[i]);
  }
}
//#else
//#if SPLITK
// Split-K (linear/GEGLU with few rows and long K, e.g. the time embedding's M = 2, K = 1280): one workgroup
// is one subgroup (WG = the adapter's fixed subgroup size, checked at start-up by gpu/self_tests.ts) and
// computes one TM×TN tile; lane l takes k-steps l, l + WG, …, and subgroupAdd sums the accumulators, so
// every lane works even when the tile count is small. The early return is uniform (one tile per
// workgroup), as subgroup operations need. Results match the register tile up to summation order.
@compute @workgroup_size({{WG}})
fn gemm(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  let col0 = (tile % p.tilesN) * {{TN}}u;
  let row0 = (tile / p.tilesN) * {{TM}}u;
{{SETUP}}
  for (var k = li; k < p.K8; k += {{WG}}u) {
{{STEP}}
  }
  var o: array<vec4<f32>, {{TILE_VEC4S}}>;
  var og: array<vec4<f32>, {{TILE_VEC4S}}>;
{{COLLECT}}
  for (var q = 0u; q < {{TILE_VEC4S}}u; q++) {
    o[q] = subgroupAdd(o[q]);
//#if GEGLU
    og[q] = subgroupAdd(og[q]);
//#endif
  }
  // Lane l stores the groups of 4 columns q ≡ l (mod WG).
  for (var q = li; q < {{TILE_VEC4S}}u; q += {{WG}}u) {
    let row = row0 + q / {{TN4}}u;
    let col = col0 + (q % {{TN4}}u) * 4u;
    store_group(row, col, o[q], og[q]);
  }
}
//#else
@compute @workgroup_size({{WG}})
fn gemm(
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let tile = (wid.x + wid.y * nwg.x) * {{WG}}u + li;
  if (tile >= p.tiles) { return; }
  // Adjacent invocations (SIMD lanes) take adjacent column tiles of the same rows.
  let col0 = (tile % p.tilesN) * {{TN}}u;
  let row0 = (tile / p.tilesN) * {{TM}}u;
  // Generated: per-row x offsets xr_i (rows clamped to M-1), per-column weight offsets wr_j (clamped to
  // N-1), accumulators a_i_j (and gate accumulators g_i_j for GEGLU).
{{SETUP}}
  for (var k = 0u; k < p.K8; k++) {
    // Generated: load TM x texels (×2 for f32) and TN weight texels, then TM·TN 8-term dot products.
{{STEP}}
  }
  // The epilogue is a loop over groups of 4 columns, not unrolled: each store is a per-lane loop on
  // llvmpipe and unrolling TM·TN of them made LLVM compile for tens of seconds.
  var o: array<vec4<f32>, {{TILE_VEC4S}}>;
  var og: array<vec4<f32>, {{TILE_VEC4S}}>;
  // Generated: o[q] = (a_i_4c, …, a_i_4c+3) for q = i·TN/4 + c (og likewise for GEGLU).
{{COLLECT}}
  for (var q = 0u; q < {{TILE_VEC4S}}u; q++) {
    let row = row0 + q / {{TN4}}u;
    let col = col0 + (q % {{TN4}}u) * 4u;
    store_group(row, col, o[q], og[q]);
  }
}
//#endif
//#endif
//#endif

//#if PACK_ROWS
// Rows of a row-major act matrix [rows, K] → operand texels [rows, xRow] (K zero-padded to xRow texels).
struct PackParams {
  K: u32,
  xRow: u32,
  total: u32,   // rows · xRow
  srcOff: u32,  // where row 0 starts in src (texels if ALIGNED, else elements): row-banded conv windows
}
//#if ALIGNED
// K % 8 == 0: the texels are the row bytes unchanged.
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
//#else
@group(0) @binding(0) var<storage, read> src: array<act>;
//#endif
//#if TEX
@group(0) @binding(1) var dst: texture_storage_2d<rgba32uint, write>;
//#else
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
//#endif
@group(0) @binding(2) var<uniform> pp: PackParams;

//#if !ALIGNED
fn src_at(row: u32, k: u32) -> f32 {
  return select(0.0, f32(src[pp.srcOff + row * pp.K + min(k, pp.K - 1u)]), k < pp.K);
}
//#endif

@compute @workgroup_size(64)
fn pack_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= pp.total) { return; }
//#if ALIGNED
  let v = src[pp.srcOff + t];
//#else
  let row = t / pp.xRow;
  let c = t % pp.xRow;
//#if XF16
  let k = c * 8u;
  let v = vec4<u32>(
    pack2x16float(vec2<f32>(src_at(row, k), src_at(row, k + 1u))),
    pack2x16float(vec2<f32>(src_at(row, k + 2u), src_at(row, k + 3u))),
    pack2x16float(vec2<f32>(src_at(row, k + 4u), src_at(row, k + 5u))),
    pack2x16float(vec2<f32>(src_at(row, k + 6u), src_at(row, k + 7u))),
  );
//#else
  let k = c * 4u;
  let v = bitcast<vec4<u32>>(vec4<f32>(src_at(row, k), src_at(row, k + 1u), src_at(row, k + 2u), src_at(row, k + 3u)));
//#endif
//#endif
//#if TEX
  textureStore(dst, vec2<u32>(t & 8191u, t >> 13u), v);
//#else
  dst[t] = v;
//#endif
}
//#endif

//#if PACK_WEIGHT
// f16 weight [rows, K] (raw halves) → texels [rows, K8], K zero-padded. Bit-exact (no float conversion).
// dstOff: first texel written (a weight packed beside others into one operand, gemm_weights.ts).
struct PackParams {
  K: u32,
  K8: u32,
  total: u32,   // rows · K8
  dstOff: u32,
}
@group(0) @binding(0) var<storage, read> src: array<u32>;
//#if TEX
@group(0) @binding(1) var dst: texture_storage_2d<rgba32uint, write>;
//#else
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
//#endif
@group(0) @binding(2) var<uniform> pp: PackParams;

fn half_bits(row: u32, k: u32) -> u32 {
  if (k >= pp.K) { return 0u; }
  let e = row * pp.K + k;
  return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
}
fn pair(row: u32, k: u32) -> u32 { return half_bits(row, k) | (half_bits(row, k + 1u) << 16u); }

@compute @workgroup_size(64)
fn pack_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= pp.total) { return; }
  let row = t / pp.K8;
  let k = (t % pp.K8) * 8u;
  let v = vec4<u32>(pair(row, k), pair(row, k + 2u), pair(row, k + 4u), pair(row, k + 6u));
  let o = pp.dstOff + t;
//#if TEX
  textureStore(dst, vec2<u32>(o & 8191u, o >> 13u), v);
//#else
  dst[o] = v;
//#endif
}
//#endif

//#if BMM
// Batched act × act matmul: out[b, m, n] = alpha · Σ_k A[b, m, k] · B[b, k, n], with arbitrary element
// strides for A and B (so transposed operands need no copy). Simple 4×4 register tile, scalar loads:
// meant for small, rare products, not for the hot path.
struct BmmParams {
  M: u32,
  N: u32,
  K: u32,
  alpha: f32,
  aBatch: u32,
  aRow: u32,   // stride of m
  aCol: u32,   // stride of k
  bBatch: u32,
  bRow: u32,   // stride of k
  bCol: u32,   // stride of n
  _p0: u32,
  _p1: u32,
}
@group(0) @binding(0) var<storage, read> a: array<act>;
@group(0) @binding(1) var<storage, read> b: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;
@group(0) @binding(3) var<uniform> bp: BmmParams;

fn a_at(base: u32, m: u32, k: u32) -> f32 { return f32(a[base + min(m, bp.M - 1u) * bp.aRow + k * bp.aCol]); }
fn b_at(base: u32, k: u32, n: u32) -> vec4<f32> {
  let r = base + k * bp.bRow;
  let last = bp.N - 1u;
  return vec4<f32>(f32(b[r + min(n, last) * bp.bCol]), f32(b[r + min(n + 1u, last) * bp.bCol]),
    f32(b[r + min(n + 2u, last) * bp.bCol]), f32(b[r + min(n + 3u, last) * bp.bCol]));
}
fn bmm_store(base: u32, m: u32, n: u32, v: vec4<f32>) {
  if (m >= bp.M) { return; }
  let r = base + m * bp.N;
  for (var j = 0u; j < 4u; j++) {
    if (n + j < bp.N) { out[r + n + j] = act(v[j] * bp.alpha); }
  }
}

@compute @workgroup_size(8, 8)
fn bmm(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x * 4u;
  let m = gid.y * 4u;
  let batch = gid.z;
  if (n >= bp.N || m >= bp.M) { return; }
  let ab = batch * bp.aBatch;
  let bb = batch * bp.bBatch;
  var c0 = vec4<f32>(0.0);
  var c1 = vec4<f32>(0.0);
  var c2 = vec4<f32>(0.0);
  var c3 = vec4<f32>(0.0);
  for (var k = 0u; k < bp.K; k++) {
    let bv = b_at(bb, k, n);
    c0 += a_at(ab, m, k) * bv;
    c1 += a_at(ab, m + 1u, k) * bv;
    c2 += a_at(ab, m + 2u, k) * bv;
    c3 += a_at(ab, m + 3u, k) * bv;
  }
  let ob = batch * bp.M * bp.N;
  bmm_store(ob, m, n, c0);
  bmm_store(ob, m + 1u, n, c1);
  bmm_store(ob, m + 2u, n, c2);
  bmm_store(ob, m + 3u, n, c3);
}
//#endif
