// Elementwise and data-movement kernels. One define selects the entry point's block.
//
// Vectorised ops work in "units": UT = vec4<f32> (4 elements) when the caller guarantees alignment, else f32.
// ELEM is the storage element of one unit and UNPACK/PACK convert it to/from UT:
//   f32, vec4: ELEM vec4<f32>, UNPACK/PACK vec4<f32>
//   f16, vec4: ELEM vec2<u32> (4 packed halves), UNPACK h4, PACK pk4
//   scalar:    ELEM act, UNPACK f32, PACK act
// Ops whose input and output types may differ (cast, layout, cfg) use scalar IN_T / OUT_T instead.
// Flat indices come from a 2-D grid (x fastest) so that big tensors stay under 65535 workgroups per dimension.

fn h4(p: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}
fn pk4(v: vec4<f32>) -> vec2<u32> {
  return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// ---- activations (f32 math) ----
fn act_silu(x: {{UT}}) -> {{UT}} {
  return x / (1.0 + exp(-x));
}
fn act_quick_gelu(x: {{UT}}) -> {{UT}} {
  return x / (1.0 + exp(-1.702 * x));
}
// erf(x) for x ≥ 0 by Abramowitz & Stegun 7.1.26: |error| ≤ 1.5e-7, about f32 resolution at gelu's scale
// (WGSL has no erf).
fn erf_pos(x: {{UT}}) -> {{UT}} {
  let t = 1.0 / (1.0 + 0.3275911 * x);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return 1.0 - poly * exp(-x * x);
}
fn act_gelu(x: {{UT}}) -> {{UT}} {
  let z = abs(x) * 0.70710678118654752;
  return 0.5 * x * (1.0 + sign(x) * erf_pos(z));
}
fn act_gelu_tanh(x: {{UT}}) -> {{UT}} {
  // tanh(u) = 1 − 2 / (exp(2u) + 1), clamped so exp cannot overflow.
  let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), {{UT}}(-15.0), {{UT}}(15.0));
  return 0.5 * x * (2.0 - 2.0 / (exp(2.0 * u) + 1.0));
}
// tanh(x) = 1 − 2 / (exp(2x) + 1), clamped so exp cannot overflow (tanh(15) is 1 in f32). Near 0 the
// subtraction leaves an absolute error of about 1e-7, which is all TAESD's soft clamp needs.
fn act_tanh(x: {{UT}}) -> {{UT}} {
  let u = clamp(x, {{UT}}(-15.0), {{UT}}(15.0));
  return 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
}

//#if ADD
// out = a · alpha + b · beta   (residual add; diffusers' "(x + h) / output_scale_factor" is alpha = beta = 1/s)
struct AddParams { n: u32, alpha: f32, beta: f32, _pad: u32 }
//#if INPLACE
@group(0) @binding(1) var<storage, read> bsrc: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read_write> outp: array<{{ELEM}}>;
//#else
@group(0) @binding(0) var<storage, read> asrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read> bsrc: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
@group(0) @binding(3) var<uniform> params: AddParams;

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
//#if INPLACE
  let a = {{UNPACK}}(outp[i]);
//#else
  let a = {{UNPACK}}(asrc[i]);
//#endif
  outp[i] = {{PACK}}(a * params.alpha + {{UNPACK}}(bsrc[i]) * params.beta);
}
//#endif

//#if ADD_BROADCAST
// out[b, t, c] = x[b, t, c] + y[b, c]   (e.g. a ResBlock's time-embedding projection added to every pixel)
struct BroadcastParams { n: u32, units: u32, per_batch: u32, _pad: u32 }
//#if INPLACE
@group(0) @binding(2) var<storage, read_write> outp: array<{{ELEM}}>;
//#else
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
@group(0) @binding(1) var<storage, read> ysrc: array<{{ELEM}}>;
@group(0) @binding(3) var<uniform> params: BroadcastParams;

@compute @workgroup_size(256)
fn add_broadcast(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let yi = (i / params.per_batch) * params.units + i % params.units;
//#if INPLACE
  let x = {{UNPACK}}(outp[i]);
//#else
  let x = {{UNPACK}}(xsrc[i]);
//#endif
  outp[i] = {{PACK}}(x + {{UNPACK}}(ysrc[yi]));
}
//#endif

//#if MAP
// out = activation(x · scale + bias) · out_scale, optionally clamped. ACTIVATION is one of the act_* functions
// or empty.
struct MapParams { n: u32, scale: f32, bias: f32, out_scale: f32, lo: f32, hi: f32, _p1: u32, _p2: u32 }
//#if INPLACE
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#else
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
//#endif
@group(0) @binding(2) var<uniform> params: MapParams;

@compute @workgroup_size(256)
fn map(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
//#if INPLACE
  let x = {{UNPACK}}(outp[i]);
//#else
  let x = {{UNPACK}}(xsrc[i]);
//#endif
  var y = {{ACTIVATION}}(x * params.scale + params.bias) * params.out_scale;
//#if CLAMP
  y = clamp(y, {{UT}}(params.lo), {{UT}}(params.hi));
//#endif
  outp[i] = {{PACK}}(y);
}
//#endif

//#if GEGLU
// x [M, 2F] → out [M, F] = x[:, :F] · gelu(x[:, F:])   (diffusers GEGLU, exact erf gelu)
struct GegluParams { n: u32, units: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
@group(0) @binding(2) var<uniform> params: GegluParams;

@compute @workgroup_size(256)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let row = i / params.units;
  let u = i % params.units;
  let base = row * 2u * params.units + u;
  let hidden = {{UNPACK}}(xsrc[base]);
  let gate = {{UNPACK}}(xsrc[base + params.units]);
  outp[i] = {{PACK}}(hidden * act_gelu(gate));
}
//#endif

//#if COPY_CHANNELS
// out[r, dst_start + c] = x[r, src_start + c] for c < count, every row r (units of UT).
// Concatenation along channels is two of these; slicing is one.
struct CopyParams { n: u32, count: u32, src_stride: u32, src_start: u32, dst_stride: u32, dst_start: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
@group(0) @binding(2) var<uniform> params: CopyParams;

@compute @workgroup_size(256)
fn copy_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let row = i / params.count;
  let c = i % params.count;
  outp[row * params.dst_stride + params.dst_start + c] = xsrc[row * params.src_stride + params.src_start + c];
}
//#endif

//#if UPSAMPLE2X
// Nearest ×2 upsampling of NHWC [B, H, W, C] → [B, 2H, 2W, C] (one invocation per output unit).
struct UpParams { n: u32, units: u32, w: u32, h: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
@group(0) @binding(2) var<uniform> params: UpParams;

@compute @workgroup_size(256)
fn upsample2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let u = i % params.units;
  let pixel = i / params.units;
  let ox = pixel % (2u * params.w);
  let rest = pixel / (2u * params.w);
  let oy = rest % (2u * params.h);
  let b = rest / (2u * params.h);
  outp[i] = xsrc[((b * params.h + oy / 2u) * params.w + ox / 2u) * params.units + u];
}
//#endif

//#if RESIZE_NEAREST
// Nearest resize of NHWC [B, H, W, C] → [B, OH, OW, C] to any size, as torch's F.interpolate(size=…,
// mode="nearest") computes it: source index min(floor(o · (in/out)), in − 1) with f32 scale and product.
// diffusers' UNet upsamples this way when the latent is not a multiple of 2^(levels−1).
struct ResizeParams { n: u32, units: u32, w: u32, h: u32, ow: u32, oh: u32, sx: f32, sy: f32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{ELEM}}>;
@group(0) @binding(2) var<uniform> params: ResizeParams;

@compute @workgroup_size(256)
fn resize_nearest(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let u = i % params.units;
  let pixel = i / params.units;
  let ox = pixel % params.ow;
  let rest = pixel / params.ow;
  let oy = rest % params.oh;
  let b = rest / params.oh;
  let x = min(u32(floor(f32(ox) * params.sx)), params.w - 1u);
  let y = min(u32(floor(f32(oy) * params.sy)), params.h - 1u);
  outp[i] = xsrc[((b * params.h + y) * params.w + x) * params.units + u];
}
//#endif

//#if TIMESTEP_EMBEDDING
// diffusers get_timestep_embedding: out[b] = cat(sin(t_b · f), cos(t_b · f)) (cos first when flipped), zero
// padded to an odd dim. The frequency table f (f32, computed on the host exactly as torch does in f32) and the
// f32 product t·f match torch bit for bit; sin/cos use an accurate range reduction because the arguments reach
// ~1000 rad, where a GPU's built-in sin may be far less accurate.
struct TimeParams { n: u32, dim: u32, half: u32, flip: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(0) @binding(2) var<storage, read_write> outp: array<{{OUT_T}}>;
@group(0) @binding(3) var<uniform> params: TimeParams;

// π/2 split in three so that k · PIO2_A and k · PIO2_B are exact for k < 2^12 (arguments up to ~6400).
const PIO2_A: f32 = 1.5703125;
const PIO2_B: f32 = 4.837512969970703125e-4;
const PIO2_C: f32 = 7.54978995489188216e-8;

// (sin x, cos x) with ~1 ulp error for |x| < 6400 (Cody–Waite reduction, Cephes minimax polynomials).
fn sincos(x: f32) -> vec2<f32> {
  let k = round(x * 0.63661977236758134);
  let r = ((x - k * PIO2_A) - k * PIO2_B) - k * PIO2_C;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let q = u32(i32(k) & 3);
  switch q {
    case 0u: { return vec2<f32>(s, c); }
    case 1u: { return vec2<f32>(c, -s); }
    case 2u: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}

@compute @workgroup_size(256)
fn timestep_embedding(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let b = i / params.dim;
  let j = i % params.dim;
  var value = 0.0;
  if (j < 2u * params.half) {
    let first_half = j < params.half;
    let f = select(j - params.half, j, first_half);
    let arg = timesteps[b] * freqs[f] * params.scale;
    let sc = sincos(arg);
    // Unflipped: [sin | cos]; flipped: [cos | sin].
    value = select(sc.y, sc.x, first_half != (params.flip != 0u));
  }
  outp[i] = {{OUT_T}}(value);
}
//#endif

//#if LAYOUT
// NCHW ↔ NHWC (with an optional f32 ↔ f16 conversion). One invocation per output element.
struct LayoutParams { n: u32, c: u32, h: u32, w: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{IN_T}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{OUT_T}}>;
@group(0) @binding(2) var<uniform> params: LayoutParams;

@compute @workgroup_size(256)
fn nchw_to_nhwc(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  // i indexes [B, H, W, C]
  let c = i % params.c;
  let pixel = i / params.c;
  let hw = params.h * params.w;
  let b = pixel / hw;
  let p = pixel % hw;
  outp[i] = {{OUT_T}}(xsrc[(b * params.c + c) * hw + p]);
}

@compute @workgroup_size(256)
fn nhwc_to_nchw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  // i indexes [B, C, H, W]
  let hw = params.h * params.w;
  let p = i % hw;
  let bc = i / hw;
  let c = bc % params.c;
  let b = bc / params.c;
  outp[i] = {{OUT_T}}(xsrc[(b * hw + p) * params.c + c]);
}
//#endif

//#if CAST
struct CastParams { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{IN_T}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{OUT_T}}>;
@group(0) @binding(2) var<uniform> params: CastParams;

@compute @workgroup_size(256)
fn cast_dtype(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  outp[i] = {{OUT_T}}(xsrc[i]);
}
//#endif

//#if CFG
// Classifier-free guidance over the two batch halves of x [2B, …] (unconditional first, as diffusers'
// noise_pred.chunk(2)): out [B, …] = u + g · (c − u). g comes from a storage scalar so it can change per
// request without rebuilding the plan.
struct CfgParams { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<storage, read> xsrc: array<{{IN_T}}>;
@group(0) @binding(1) var<storage, read_write> outp: array<{{OUT_T}}>;
@group(0) @binding(2) var<storage, read> guidance: array<f32>;
@group(0) @binding(3) var<uniform> params: CfgParams;

@compute @workgroup_size(256)
fn cfg(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= params.n) { return; }
  let u = f32(xsrc[i]);
  let c = f32(xsrc[i + params.n]);
  outp[i] = {{OUT_T}}(u + guidance[0] * (c - u));
}
//#endif
