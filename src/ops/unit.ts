// Helpers shared by the builders of the elementwise.wgsl and norm.wgsl kernels (elementwise.ts, layout.ts,
// timestep.ts, norm.ts): the "unit" access scheme, workgroup grids, uniform buffers and argument checks.

import type { Binding, Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import type { DType, Tensor } from "../gpu/tensor.ts";

/** Workgroup grid for `n` invocations at `wgSize` per workgroup: x up to 65535, the rest in y. */
export function grid(n: number, wgSize = 256): [number, number, number] {
  const groups = Math.max(1, Math.ceil(n / wgSize));
  const x = Math.min(groups, 65535);
  return [x, Math.ceil(groups / x), 1];
}

/**
 * Defines for the "unit" access scheme of elementwise.wgsl / norm.wgsl: 4 elements per unit (vec4<f32>, or
 * 4 packed halves for f16) when `vec`, else one scalar element.
 */
export function unitDefines(act: ActDType, vec: boolean): ShaderDefines {
  if (!vec) return { ACT: act, VEC: false, UT: "f32", ELEM: "act", UNPACK: "f32", PACK: "act" };
  return act === "f32"
    ? { ACT: act, VEC: true, UT: "vec4<f32>", ELEM: "vec4<f32>", UNPACK: "vec4<f32>", PACK: "vec4<f32>" }
    : { ACT: act, VEC: true, UT: "vec4<f32>", ELEM: "vec2<u32>", UNPACK: "h4", PACK: "pk4" };
}

export function checkDType(t: Tensor, act: DType, what: string): void {
  if (t.dtype !== act) throw new Error(`${what}: tensor ${t.label || "?"} is ${t.dtype}, expected ${act}`);
}

/** A bind group resource for a whole buffer or a window of one. */
export function resourceOf(b: Binding): GPUBufferBinding {
  return b instanceof GPUBuffer ? { buffer: b } : { buffer: b.buffer, offset: b.offset, size: b.size };
}

export function checkNumel(t: Tensor, n: number, what: string): void {
  if (t.numel !== n) {
    throw new Error(`${what}: tensor ${t.label || "?"} [${t.shape}] should have ${n} elements`);
  }
}

/** A uniform buffer from 32-bit words, each given as [value, "u"] (u32) or [value, "f"] (f32). */
export function uniformOf(gpu: Gpu, words: ([number, "u"] | [number, "f"])[]): GPUBuffer {
  const data = new Uint32Array(Math.max(4, Math.ceil(words.length / 4) * 4));
  const f = new Float32Array(data.buffer);
  words.forEach(([value, kind], i) => {
    if (kind === "u") {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`bad u32 ${value}`);
      data[i] = value;
    } else {
      f[i] = value;
    }
  });
  return gpu.uniform(data);
}

/** Uniform words for uniformOf: u32 and f32. */
export const u = (v: number): [number, "u"] => [v, "u"];
export const f = (v: number): [number, "f"] => [v, "f"];

/** The WGSL scalar type of a tensor dtype. */
export function scalarType(d: DType): string {
  return d === "f32" ? "f32" : "f16";
}

/** Throws when a tensor is f16 and the device lacks shader-f16. */
export function needF16(gpu: Gpu, tensors: Tensor[], what: string): void {
  if (!gpu.f16 && tensors.some((t) => t.dtype === "f16")) {
    throw new Error(`${what}: f16 tensors need shader-f16, which this device lacks`);
  }
}
