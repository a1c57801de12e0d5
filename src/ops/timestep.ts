// diffusers' sinusoidal timestep embedding (get_timestep_embedding) as one elementwise.wgsl kernel, with
// torch's f32 frequency table computed on the host.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { checkDType, checkNumel, f, grid, needF16, scalarType, u, uniformOf, unitDefines } from "./unit.ts";

export interface TimestepEmbeddingParams {
  /** f32 [B] */
  timesteps: Tensor;
  /** [B, dim], f32 or f16 */
  out: Tensor;
  flipSinToCos: boolean;
  /** diffusers' downscale_freq_shift (UNet2DConditionModel's freq_shift) */
  freqShift: number;
  scale?: number;
  maxPeriod?: number;
  act?: ActDType;
}

/**
 * torch's f32 frequency table of get_timestep_embedding: exp(-ln(maxPeriod) · i / (half − shift)), every
 * step rounded to f32 as torch computes it (scalar operands are cast to f32 first).
 */
export function timestepFrequencies(dim: number, freqShift: number, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(half);
  const logPeriod = Math.fround(-Math.log(maxPeriod));
  const divisor = Math.fround(half - freqShift);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(i * logPeriod) / divisor);
    out[i] = Math.fround(Math.exp(exponent));
  }
  return out;
}

/** diffusers get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift, scale, max_period). */
export function timestepEmbedding(gpu: Gpu, p: TimestepEmbeddingParams): Dispatch[] {
  checkDType(p.timesteps, "f32", "timestepEmbedding timesteps");
  if (p.out.shape.length !== 2) {
    throw new Error(`timestepEmbedding: out must be [B, dim], got [${p.out.shape}]`);
  }
  const [batch, dim] = p.out.shape;
  checkNumel(p.timesteps, batch, "timestepEmbedding timesteps");
  needF16(gpu, [p.out], "timestepEmbedding");
  const half = Math.floor(dim / 2);
  const freqs = uploadTensor(
    gpu,
    half > 0 ? timestepFrequencies(dim, p.freqShift, p.maxPeriod) : new Float32Array(1),
    [
      Math.max(1, half),
    ],
    "f32",
    "timestep freqs",
  );
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines("f32", false),
    TIMESTEP_EMBEDDING: true,
    OUT_T: scalarType(p.out.dtype),
  }, "timestep_embedding");
  const params = uniformOf(gpu, [
    u(batch * dim),
    u(dim),
    u(half),
    u(p.flipSinToCos ? 1 : 0),
    f(p.scale ?? 1),
  ]);
  return [
    gpu.dispatch(
      pipeline,
      [p.timesteps.buffer, freqs.buffer, p.out.buffer, params],
      grid(batch * dim),
      "time_proj",
    ),
  ];
}
