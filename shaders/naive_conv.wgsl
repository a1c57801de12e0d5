struct ConvP { B: u32, H: u32, W: u32, Cin: u32, Ho: u32, Wo: u32, Cout: u32, stride: u32, padT: u32, padL: u32, k: u32, flags: u32 }
@group(0) @binding(0) var<storage, read> x: array<act>;
@group(0) @binding(1) var<storage, read> w: array<wvec2>;
@group(0) @binding(2) var<storage, read> b: array<wvec2>;
@group(0) @binding(3) var<storage, read> res: array<act>;
@group(0) @binding(4) var<storage, read> tb: array<act>;
@group(0) @binding(5) var<storage, read_write> outp: array<act>;
@group(0) @binding(6) var<uniform> p: ConvP;
fn wat(i: u32) -> f32 { return w2(w[i / 2u])[i % 2u]; }
fn bat(i: u32) -> f32 { return w2(b[i / 2u])[i % 2u]; }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let total = p.B * p.Ho * p.Wo * p.Cout;
  if (i >= total) { return; }
  let co = i % p.Cout; let pix = i / p.Cout;
  let ox = pix % p.Wo; let oy = (pix / p.Wo) % p.Ho; let bb = pix / (p.Wo * p.Ho);
  var acc = 0.0;
  for (var ky = 0u; ky < p.k; ky++) {
    let iy = i32(oy * p.stride + ky) - i32(p.padT);
    if (iy < 0 || iy >= i32(p.H)) { continue; }
    for (var kx = 0u; kx < p.k; kx++) {
      let ix = i32(ox * p.stride + kx) - i32(p.padL);
      if (ix < 0 || ix >= i32(p.W)) { continue; }
      let base = ((bb * p.H + u32(iy)) * p.W + u32(ix)) * p.Cin;
      for (var ci = 0u; ci < p.Cin; ci++) {
        acc += f32(x[base + ci]) * wat(((co * p.Cin + ci) * p.k + ky) * p.k + kx);
      }
    }
  }
  if ((p.flags & 1u) != 0u) { acc += bat(co); }
  if ((p.flags & 4u) != 0u) { acc += f32(tb[bb * p.Cout + co]); }
  if ((p.flags & 2u) != 0u) { acc += f32(res[i]); }
  outp[i] = act(acc);
}
