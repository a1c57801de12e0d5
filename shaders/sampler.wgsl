// The sampler on the GPU (ops/sampler.ts, pipeline/gpu_sampler.ts): the latents stay in one f32 buffer,
// NCHW [N, C, h, w] as the host schedulers and torch hold them, for the whole loop. Two entry points, one
// per compile (PACK or not):
//   pack:   latents (and the inpainting condition) → the UNet's input, NHWC [rows·k, h, w, cin] in the
//           activation type: x / √(σ² + 1) (scale_model_input) then the condition channels, every image's
//           row repeated for the unconditional and conditional halves (rows = 2 with CFG).
//   update: the UNet's output (NHWC [rows·k, h, w, c]) → CFG (u + g·(c − u)) → the sampler's step as the
//           linear update of schedulers/linear.ts → the inpainting blend (1 − m)·keep + m·x, in place.
// The per-step scalars live in one uniform (Step) the host rewrites before each evaluation; the per-call
// shapes in another (Call). Everything is f32 math; one invocation per element, so reads of an element's
// history happen before its writes.
//
// Measured on lavapipe (gpu.profile, 512², one image with CFG, 64×64×4 latents): pack 0.45 ms, update
// 0.3 ms (euler_a) to 0.55 ms (unipc, 3 history slots), f16 or f32 alike; a step of the tiny test UNet
// takes 3–4 s there, of SD 1.5 minutes. Scalar (not vec4) access keeps one kernel for every shape.

struct Step {
  // x0 = x0.x·x + x0.y·e, clamped to ±x0.z when x0.w ≠ 0 (clip_sample)
  x0: vec4<f32>,
  // guidance scale, scale_model_input's divisor, blend: keep = misc.z·original + misc.w·noise
  misc: vec4<f32>,
  // x: bit k set = history slot k is written this step
  flags: vec4<u32>,
  // Coefficients over t0 = (x, e, x0, z), t1 = (y, h0, h1, h2), t2 = (h3, 0, 0, 0)
  y: array<vec4<f32>, 3>,
  out: array<vec4<f32>, 3>,
  // slot k: store[3k], store[3k + 1], store[3k + 2]
  store: array<vec4<f32>, 12>,
}

struct Call {
  first: u32,  // first image of this UNet call
  k: u32,      // images in the call
  plane: u32,  // h·w
  c: u32,      // latent channels
  cin: u32,    // UNet input channels: c, or c + condition channels (inpainting)
  rows: u32,   // UNet rows per image: 2 with CFG
  total: u32,  // latent elements of the whole batch (a history slot's stride)
  count: u32,  // invocations
}

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

//#if PACK
@group(0) @binding(0) var<storage, read> lat: array<f32>;
//#if COND
@group(0) @binding(1) var<storage, read> cond: array<f32>;
//#endif
@group(0) @binding(2) var<storage, read_write> sample: array<act>;
@group(0) @binding(3) var<uniform> call: Call;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(256)
fn pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= call.count) { return; }
  let ch = i % call.cin;
  let q = i / call.cin;
  let p = q % call.plane;
  let img = call.first + (q / call.plane) % call.k;
  var v = 0.0;
  if (ch < call.c) {
    v = lat[(img * call.c + ch) * call.plane + p] / step.misc.y;
  } else {
//#if COND
    let cc = call.cin - call.c;
    v = cond[(img * cc + ch - call.c) * call.plane + p];
//#endif
  }
  sample[i] = act(v);
}
//#else
@group(0) @binding(0) var<storage, read_write> lat: array<f32>;
@group(0) @binding(1) var<storage, read> model: array<act>;
//#if HISTORY
@group(0) @binding(2) var<storage, read_write> hist: array<f32>;
//#endif
//#if NOISE
@group(0) @binding(3) var<storage, read> noise: array<f32>;
//#endif
//#if BLEND
@group(0) @binding(4) var<storage, read> original: array<f32>;
@group(0) @binding(5) var<storage, read> noise0: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<f32>;
//#endif
@group(0) @binding(7) var<uniform> call: Call;
@group(0) @binding(8) var<uniform> step: Step;

fn comb(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>) -> f32 {
  return dot(a, t0) + dot(b, t1) + dot(c, t2);
}

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= call.count) { return; }
  let n = call.c * call.plane;
  let j = i / n;
  let r = i - j * n;
  let ch = r / call.plane;
  let p = r - ch * call.plane;
  let g = call.first * n + i;
  let u = f32(model[(j * call.plane + p) * call.c + ch]);
//#if CFG
  let cnd = f32(model[((call.k + j) * call.plane + p) * call.c + ch]);
  let e = u + step.misc.x * (cnd - u);
//#else
  let e = u;
//#endif
  let x = lat[g];
  var x0 = step.x0.x * x + step.x0.y * e;
  if (step.x0.w != 0.0) { x0 = clamp(x0, -step.x0.z, step.x0.z); }
  var z = 0.0;
//#if NOISE
  z = noise[g];
//#endif
  var h = vec4<f32>(0.0);
//#if HISTORY
  for (var s = 0u; s < {{SLOTS}}u; s++) { h[s] = hist[s * call.total + g]; }
//#endif
  let t0 = vec4<f32>(x, e, x0, z);
  var t1 = vec4<f32>(0.0, h.x, h.y, h.z);
  let t2 = vec4<f32>(h.w, 0.0, 0.0, 0.0);
  t1.x = comb(step.y[0], step.y[1], step.y[2], t0, t1, t2);
  var out = comb(step.out[0], step.out[1], step.out[2], t0, t1, t2);
//#if HISTORY
  for (var s = 0u; s < {{SLOTS}}u; s++) {
    if (((step.flags.x >> s) & 1u) != 0u) {
      hist[s * call.total + g] = comb(step.store[3u * s], step.store[3u * s + 1u], step.store[3u * s + 2u], t0, t1, t2);
    }
  }
//#endif
//#if BLEND
  // Inpainting with a 4-channel UNet: outside the mask, the original noised to the next step.
  let m = mask[p];
  let keep = step.misc.z * original[g] + step.misc.w * noise0[g];
  out = (1.0 - m) * keep + m * out;
//#endif
  lat[g] = out;
}
//#endif
