// SCRATCH (not for commit)
struct P { a: u32, b: u32, c: u32, d: u32, e: f32, f: u32, g: u32, h: u32 }
@group(0) @binding(0) var<storage, read> x: array<act>;
@group(0) @binding(1) var<storage, read> y: array<act>;
@group(0) @binding(2) var<storage, read> gam: array<wvec2>;
@group(0) @binding(3) var<storage, read> bet: array<wvec2>;
@group(0) @binding(4) var<storage, read_write> outp: array<act>;
@group(0) @binding(5) var<uniform> p: P;
@group(0) @binding(6) var<storage, read> ts: array<f32>;
fn touch() { if (p.h == 0xFFFFFFFFu) { outp[0] = act(f32(x[0]) + f32(y[0]) + w2(gam[0]).x + w2(bet[0]).x + ts[0]); } }
fn gat(i: u32) -> f32 { return w2(gam[i / 2u])[i % 2u]; }
fn bat(i: u32) -> f32 { return w2(bet[i / 2u])[i % 2u]; }
fn idx(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 64u; }
// group norm: a=B, b=HW, c=C, d=groups, e=eps, f=silu
@compute @workgroup_size(64)
fn groupnorm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let i = idx(gid, nwg);
  if (i >= p.a * p.d) { return; }
  let bb = i / p.d; let g = i % p.d; let cg = p.c / p.d;
  var s = 0.0; let n = f32(p.b * cg);
  for (var q = 0u; q < p.b; q++) { for (var c = 0u; c < cg; c++) { s += f32(x[(bb * p.b + q) * p.c + g * cg + c]); } }
  let mean = s / n; var v = 0.0;
  for (var q = 0u; q < p.b; q++) { for (var c = 0u; c < cg; c++) { let d = f32(x[(bb * p.b + q) * p.c + g * cg + c]) - mean; v += d * d; } }
  let rstd = inverseSqrt(v / n + p.e);
  for (var q = 0u; q < p.b; q++) { for (var c = 0u; c < cg; c++) {
    let ch = g * cg + c; let k = (bb * p.b + q) * p.c + ch;
    var o = (f32(x[k]) - mean) * rstd * gat(ch) + bat(ch);
    if (p.f != 0u) { o = o / (1.0 + exp(-o)); }
    outp[k] = act(o);
  } }
}
// layer norm: a=M rows, c=C, e=eps
@compute @workgroup_size(64)
fn layernorm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let r = idx(gid, nwg);
  if (r >= p.a) { return; }
  var s = 0.0;
  for (var c = 0u; c < p.c; c++) { s += f32(x[r * p.c + c]); }
  let mean = s / f32(p.c); var v = 0.0;
  for (var c = 0u; c < p.c; c++) { let d = f32(x[r * p.c + c]) - mean; v += d * d; }
  let rstd = inverseSqrt(v / f32(p.c) + p.e);
  for (var c = 0u; c < p.c; c++) { outp[r * p.c + c] = act((f32(x[r * p.c + c]) - mean) * rstd * gat(c) + bat(c)); }
}
// silu: a = n
@compute @workgroup_size(64)
fn silu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let i = idx(gid, nwg); if (i >= p.a) { return; }
  let v = f32(x[i]); outp[i] = act(v / (1.0 + exp(-v)));
}
// concat: a = pixels, b = C1, c = C2
@compute @workgroup_size(64)
fn concat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let i = idx(gid, nwg); let C = p.b + p.c; if (i >= p.a * C) { return; }
  let px = i / C; let ch = i % C;
  if (ch < p.b) { outp[i] = x[px * p.b + ch]; } else { outp[i] = y[px * p.c + ch - p.b]; }
}
// upsample: a=B, b=H, c=W, d=C
@compute @workgroup_size(64)
fn upsample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let i = idx(gid, nwg); let total = p.a * p.b * 2u * p.c * 2u * p.d; if (i >= total) { return; }
  let ch = i % p.d; let pix = i / p.d; let ox = pix % (2u * p.c); let oy = (pix / (2u * p.c)) % (2u * p.b); let bb = pix / (4u * p.b * p.c);
  outp[i] = x[((bb * p.b + oy / 2u) * p.c + ox / 2u) * p.d + ch];
}
// timestep embedding: a = B, b = dim, c = flip, e = freq_shift
@compute @workgroup_size(64)
fn tproj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  touch();
  let i = idx(gid, nwg); if (i >= p.a * p.b) { return; }
  let bb = i / p.b; let j = i % p.b; let half = p.b / 2u;
  let k = j % half;
  let expo = -log(10000.0) * f32(k) / (f32(half) - p.e);
  let arg = ts[bb] * exp(expo);
  var first_sin = j < half;
  if (p.c != 0u) { first_sin = !first_sin; }
  outp[i] = act(select(cos(arg), sin(arg), first_sin));
}
