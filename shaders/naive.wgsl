// SCRATCH (not for commit): naive reference kernels used while the tuned GEMMs are written.
struct LinP { M: u32, N: u32, K: u32, flags: u32 }
@group(0) @binding(0) var<storage, read> x: array<act>;
@group(0) @binding(1) var<storage, read> w: array<wvec2>;
@group(0) @binding(2) var<storage, read> b: array<wvec2>;
@group(0) @binding(3) var<storage, read> res: array<act>;
@group(0) @binding(4) var<storage, read_write> outp: array<act>;
@group(0) @binding(5) var<uniform> p: LinP;
fn wat(i: u32) -> f32 { return w2(w[i / 2u])[i % 2u]; }
fn bat(i: u32) -> f32 { return w2(b[i / 2u])[i % 2u]; }
fn gelu(v: f32) -> f32 { return 0.5 * v * (1.0 + erf_(v * 0.70710678118654752)); }
fn erf_(x: f32) -> f32 {
  // erf via high-precision rational approximation (W. J. Cody style, max rel err ~1e-7)
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.5 * a);
  let y = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(-(1.0 - y), 1.0 - y, x >= 0.0);
}
fn epi(v: f32, kind: u32) -> f32 {
  switch kind {
    case 1u: { return gelu(v); }
    case 2u: { return 0.5 * v * (1.0 + tanh(0.7978845608 * (v + 0.044715 * v * v * v))); }
    case 3u: { return v / (1.0 + exp(-1.702 * v)); }
    case 4u: { return v / (1.0 + exp(-v)); }
    default: { return v; }
  }
}
@compute @workgroup_size(64)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.M * p.N) { return; }
  let m = i / p.N; let n = i % p.N;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) { acc += f32(x[m * p.K + k]) * wat(n * p.K + k); }
  if ((p.flags & 1u) != 0u) { acc += bat(n); }
  acc = epi(acc, (p.flags >> 4u) & 15u);
  if ((p.flags & 2u) != 0u) { acc += f32(res[i]); }
  outp[i] = act(acc);
}
@compute @workgroup_size(64)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.M * p.N) { return; }
  let m = i / p.N; let n = i % p.N;
  var a = 0.0; var g = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let xv = f32(x[m * p.K + k]);
    a += xv * wat(n * p.K + k);
    g += xv * wat((n + p.N) * p.K + k);
  }
  a += bat(n); g += bat(n + p.N);
  _ = res[0];
  outp[i] = act(a * gelu(g));
}
