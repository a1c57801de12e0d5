// Start-up checks of device features before any kernel relies on them: f16 storage and arithmetic, and
// subgroup reductions (a subgroup-reducing kernel is trusted only after subgroupAdd has been seen to give
// the right sums on this device).
//
// Deno 2.9's wgpu (naga) rejects WGSL's `enable subgroups;` ("not yet implemented in Naga") but accepts the
// subgroup builtins without it once the device has the feature, so kernels use them without the directive.

/**
 * Runs subgroupAdd over a 64-invocation workgroup, on a scalar and on a vec4 (the split-K GEMM reduces
 * vec4 accumulators). Returns false when the results are wrong (or the kernel does not compile), else the
 * subgroup size kernels may rely on: `fixedSize` (the adapter's min = max subgroup size) when every
 * invocation saw exactly that size, null when the size varies or is unknown.
 */
export async function subgroupSelfTest(
  device: GPUDevice,
  fixedSize: number | null,
): Promise<number | null | false> {
  const code = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> outp: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) size: u32,
  @builtin(subgroup_invocation_id) lane: u32) {
  let s = f32(size);
  let v = subgroupAdd(vec4<f32>(1.0, f32(lane), 0.5 * f32(lane % 2u), 0.0));
  let w = subgroupAdd(f32(lane) * 2.0);
  // Zero where the sums are right; the subgroup size last.
  outp[i] = vec4<f32>(v.x - s, v.y - s * (s - 1.0) / 2.0 + w - s * (s - 1.0), v.z - 0.25 * s, s);
}`;
  const got = await runProbe(device, code, [], 64 * 16);
  if (!got) return false;
  const sums = new Float32Array(got);
  const sizes = new Set<number>();
  for (let i = 0; i < 64; i++) {
    if (sums[4 * i] !== 0 || sums[4 * i + 1] !== 0 || sums[4 * i + 2] !== 0) return false;
    sizes.add(sums[4 * i + 3]);
  }
  return fixedSize !== null && sizes.size === 1 && sizes.has(fixedSize) ? fixedSize : null;
}

/**
 * Proves that f16 storage and f16 arithmetic give correct results. An earlier Deno returned zeros from
 * f16 shaders silently; this catches that class of failure before any weights are trusted to f16.
 */
export async function f16SelfTest(device: GPUDevice): Promise<boolean> {
  const code = /* wgsl */ `
enable f16;
@group(0) @binding(0) var<storage, read> a: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read_write> outp: array<vec4<f16>>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let x = a[i];
  let h = f16(0.5);
  outp[i] = x * x * h + vec4<f16>(f16(i), f16(1.0), -x.z, h) + exp(-x * x);
}`;
  const input = new Float32Array(16).map((_, i) => (i - 7.5) * 0.375);
  const expected = new Float32Array(16);
  for (let i = 0; i < 4; i++) {
    for (let c = 0; c < 4; c++) {
      const x = input[i * 4 + c];
      const extra = [i, 1, -input[i * 4 + 2], 0.5][c];
      expected[i * 4 + c] = x * x * 0.5 + extra + Math.exp(-x * x);
    }
  }
  try {
    const bytes = await runProbe(device, code, [Float16Array.from(input)], 32);
    if (!bytes) return false;
    const got = Float32Array.from(new Float16Array(bytes));
    return got.every((v, i) => Math.abs(v - expected[i]) <= 2e-3 * Math.max(1, Math.abs(expected[i])));
  } catch {
    return false; // a runtime without Float16Array
  }
}

/**
 * Runs `code`'s `main` as one workgroup: `inputs` (written from the host) bound at 0.., an output of
 * `outBytes` bound after them. Returns the output's bytes, or null on a validation error or a throw.
 */
async function runProbe(
  device: GPUDevice,
  code: string,
  inputs: ArrayBufferView<ArrayBuffer>[],
  outBytes: number,
): Promise<ArrayBuffer | null> {
  device.pushErrorScope("validation");
  try {
    const module = device.createShaderModule({ code });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const inBufs = inputs.map((data) => {
      const buf = device.createBuffer({
        size: data.byteLength,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
      device.queue.writeBuffer(buf, 0, data);
      return buf;
    });
    const out = device.createBuffer({
      size: outBytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    });
    const staging = device.createBuffer({
      size: outBytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [...inBufs, out].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    enc.copyBufferToBuffer(out, 0, staging, 0, outBytes);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const got = staging.getMappedRange().slice(0);
    staging.unmap();
    for (const b of [...inBufs, out, staging]) b.destroy();
    if (await device.popErrorScope()) return null;
    return got;
  } catch {
    await device.popErrorScope().catch(() => null);
    return null;
  }
}
