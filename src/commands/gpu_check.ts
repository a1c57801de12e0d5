// `gpu-check [--no-f16] [--gpu-choices SPEC]`: the adapter report plus one real kernel, proving the shaders
// are embedded and the device computes (the compile test runs it on the built binary). The report says
// which choices were forced and which GEMM tiling the ops take.

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { emptyTensor, readTensor, uploadTensor } from "../gpu/tensor.ts";
import { gemmTiling } from "../ops/gemm.ts";
import { GPU_FLAGS, gpuFlags } from "./gpu_flags.ts";

export async function gpuCheckCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { "no-f16": { type: "boolean" }, ...GPU_FLAGS } });
  const gpu = await Gpu.create({ disableF16: values["no-f16"], choices: gpuFlags(values).choices });
  const n = 1028;
  const a = uploadTensor(gpu, Float32Array.from({ length: n }, (_, i) => i), [n], "f32", "a");
  const w = uploadTensor(gpu, Float32Array.from({ length: n }, (_, i) => (i % 7) * 0.25), [n], "f16", "w");
  const out = emptyTensor(gpu, [n], "f32", "out");
  const pipeline = gpu.kernel("selftest", { ACT: "f32" });
  gpu.run([gpu.dispatch(pipeline, [a.buffer, w.buffer, out.buffer], [Math.ceil(n / 64)])], "gpu-check");
  const got = await readTensor(gpu, out);
  const ok = got.every((v, i) => v === i * 2 + (i % 7) * 0.25);
  const tiling = gemmTiling(gpu);
  console.log(JSON.stringify({ ...gpu.report, gemmTiling: tiling, kernelCheck: ok ? "pass" : "fail" }));
  return ok ? 0 : 1;
}
