// A one-kernel check used by `gpu-check` (and the compile smoke test): out[i] = a[i] * 2 + w[i],
// reading an f16 weight through the prelude's w2() helper, so both weight paths are exercised.

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<wvec2>;
@group(0) @binding(2) var<storage, read_write> outp: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= arrayLength(&outp)) { return; }
  outp[i] = a[i] * 2.0 + w2(w[i / 2u])[i % 2u];
}
