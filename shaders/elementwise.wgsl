// Elementwise kernels. Vectorised by 4 where the caller guarantees numel % 4 == 0 (VEC4 define);
// scalar otherwise. One invocation per element (or per 4 elements).

struct Params { n: u32, scale: f32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> a: array<act>;
@group(0) @binding(1) var<storage, read> b: array<act>;
@group(0) @binding(2) var<storage, read_write> outp: array<act>;
@group(0) @binding(3) var<uniform> params: Params;

// out = a + b * scale   (residual add with optional scale)
@compute @workgroup_size(256)
fn add_scaled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= params.n) { return; }
  outp[i] = act(f32(a[i]) + f32(b[i]) * params.scale);
}
