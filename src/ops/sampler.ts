// Builders of the GPU sampler's kernels (shaders/sampler.wgsl): the UNet input from the f32 NCHW latents, and
// the fused CFG + sampler update + inpainting blend back into them. The per-step scalars are one uniform
// (`stepUniform`, rewritten with `writeStep` before each evaluation); each builder returns the dispatches of
// one UNet call (images first … first + k of the batch), built once per run.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { checkDType, checkNumel, grid, needF16, resourceOf, u, uniformOf } from "./unit.ts";

/** History slots the update kernel can keep (schedulers/linear.ts MAX_SLOTS). */
export const SAMPLER_SLOTS = 4;
/** Coefficients per linear combination: x, e, x0, z, y, h0 … h3, 3 padding. */
export const TERMS = 12;
const STEP_WORDS = 4 + 4 + 4 + TERMS + TERMS + SAMPLER_SLOTS * TERMS;

/** One evaluation's scalars, as the kernel reads them. */
export interface StepScalars {
  /** x0 = x·x + e·e, clamped to ±clamp when given. */
  x0: { x: number; e: number; clamp?: number };
  guidance: number;
  /** scale_model_input: the UNet input is x / inputDivisor. */
  inputDivisor: number;
  /** Inpainting blend: keep = original·original + noise·noise. */
  blend: { original: number; noise: number };
  /** TERMS coefficients each. */
  y: readonly number[];
  out: readonly number[];
  /** Slot k ← store[k] (TERMS coefficients), or kept when undefined. */
  store: readonly (readonly number[] | undefined)[];
}

/** The Step uniform buffer (rewritten per evaluation with writeStep). */
export function stepUniform(gpu: Gpu): GPUBuffer {
  return gpu.uniform(new Uint32Array(STEP_WORDS), "sampler step");
}

/** Queues the write of one evaluation's scalars; ordered after every command submitted before it. */
export function writeStep(gpu: Gpu, buffer: GPUBuffer, s: StepScalars): void {
  const words = new Uint32Array(STEP_WORDS);
  const f = new Float32Array(words.buffer);
  f.set([s.x0.x, s.x0.e, s.x0.clamp ?? 0, s.x0.clamp === undefined ? 0 : 1], 0);
  f.set([s.guidance, s.inputDivisor, s.blend.original, s.blend.noise], 4);
  let mask = 0;
  s.store.forEach((row, k) => {
    if (!row) return;
    mask |= 1 << k;
    f.set(checkTerms(row), 12 + 2 * TERMS + k * TERMS);
  });
  words[8] = mask;
  f.set(checkTerms(s.y), 12);
  f.set(checkTerms(s.out), 12 + TERMS);
  gpu.device.queue.writeBuffer(buffer, 0, words);
}

function checkTerms(row: readonly number[]): readonly number[] {
  if (row.length !== TERMS) throw new Error(`sampler: ${row.length} coefficients, want ${TERMS}`);
  return row;
}

/** Shapes of one UNet call. */
export interface SamplerCall {
  /** First image of the call, and its image count. */
  first: number;
  k: number;
  /** Images of the batch. */
  count: number;
  channels: number;
  height: number;
  width: number;
  /** UNet rows per image: 2 with CFG (uncond rows of the call's images first), else 1. */
  rows: number;
}

/** Built dispatches and the uniforms they own (destroy them with the run). */
export interface SamplerDispatches {
  dispatches: Dispatch[];
  uniforms: GPUBuffer[];
}

function callUniform(gpu: Gpu, c: SamplerCall, cin: number, invocations: number): GPUBuffer {
  const plane = c.height * c.width;
  return uniformOf(gpu, [
    u(c.first),
    u(c.k),
    u(plane),
    u(c.channels),
    u(cin),
    u(c.rows),
    u(c.count * c.channels * plane),
    u(invocations),
  ]);
}

function bindSparse(
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  entries: [number, GPUBuffer][],
  invocations: number,
  label: string,
): Dispatch {
  const bindGroup = gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: entries.map(([binding, buffer]) => ({ binding, resource: resourceOf(buffer) })),
  });
  return { pipeline, bindGroup, workgroups: grid(invocations), label };
}

/**
 * The UNet input of one call: `sample` NHWC [rows·k, h, w, C + Cc] (activation type) ← latents (f32 NCHW
 * [N, C, h, w]) / inputDivisor, then `condition` (f32 NCHW [N, Cc, h, w]) when given.
 */
export function samplerPack(gpu: Gpu, p: {
  call: SamplerCall;
  latents: Tensor;
  condition?: Tensor;
  sample: Tensor;
  step: GPUBuffer;
  act: ActDType;
}): SamplerDispatches {
  const c = p.call;
  const plane = c.height * c.width;
  const cin = p.sample.shape[p.sample.shape.length - 1];
  checkDType(p.latents, "f32", "samplerPack latents");
  checkDType(p.sample, p.act, "samplerPack sample");
  checkNumel(p.latents, c.count * c.channels * plane, "samplerPack latents");
  checkNumel(p.sample, c.rows * c.k * plane * cin, "samplerPack sample");
  if (p.condition) checkNumel(p.condition, c.count * (cin - c.channels) * plane, "samplerPack condition");
  else if (cin !== c.channels) throw new Error(`samplerPack: ${cin} input channels need a condition`);
  needF16(gpu, [p.sample], "samplerPack");
  const invocations = p.sample.numel;
  const pipeline = gpu.kernel("sampler", { ACT: p.act, PACK: true, COND: !!p.condition }, "pack");
  const params = callUniform(gpu, c, cin, invocations);
  const entries: [number, GPUBuffer][] = [[0, p.latents.buffer], [2, p.sample.buffer], [3, params], [
    4,
    p.step,
  ]];
  if (p.condition) entries.push([1, p.condition.buffer]);
  return {
    dispatches: [bindSparse(gpu, pipeline, entries, invocations, "sampler pack")],
    uniforms: [params],
  };
}

/**
 * One call's update, in place on `latents` (f32 NCHW [N, C, h, w]) for images first … first + k: the UNet
 * output `model` (NHWC [rows·k, h, w, C]) combined by CFG when rows = 2, then the step of `writeStep`'s
 * scalars with `history` (f32 [slots, N, C, h, w]) and `noise` (f32 [N, C, h, w], this step's draw), then
 * the blend toward `blend.original`/`blend.noise` (f32 [N, C, h, w]) outside `blend.mask` (f32 [h, w]).
 */
export function samplerUpdate(gpu: Gpu, p: {
  call: SamplerCall;
  latents: Tensor;
  model: Tensor;
  history?: Tensor;
  noise?: Tensor;
  blend?: { original: Tensor; noise: Tensor; mask: Tensor };
  step: GPUBuffer;
  act: ActDType;
}): SamplerDispatches {
  const c = p.call;
  const plane = c.height * c.width;
  const total = c.count * c.channels * plane;
  checkDType(p.latents, "f32", "samplerUpdate latents");
  checkDType(p.model, p.act, "samplerUpdate model");
  checkNumel(p.latents, total, "samplerUpdate latents");
  checkNumel(p.model, c.rows * c.k * plane * c.channels, "samplerUpdate model");
  if (c.rows !== 1 && c.rows !== 2) throw new Error(`samplerUpdate: ${c.rows} rows per image`);
  const slots = p.history ? p.history.numel / total : 0;
  if (!Number.isInteger(slots) || slots > SAMPLER_SLOTS) {
    throw new Error(`samplerUpdate: history [${p.history?.shape}] is not [≤ ${SAMPLER_SLOTS}, …${total}]`);
  }
  if (p.noise) checkNumel(p.noise, total, "samplerUpdate noise");
  if (p.blend) {
    checkNumel(p.blend.original, total, "samplerUpdate blend original");
    checkNumel(p.blend.noise, total, "samplerUpdate blend noise");
    checkNumel(p.blend.mask, plane, "samplerUpdate blend mask");
  }
  needF16(gpu, [p.model], "samplerUpdate");
  const invocations = c.k * c.channels * plane;
  const pipeline = gpu.kernel("sampler", {
    ACT: p.act,
    PACK: false,
    CFG: c.rows === 2,
    HISTORY: slots > 0,
    SLOTS: slots,
    NOISE: !!p.noise,
    BLEND: !!p.blend,
  }, "update");
  const params = callUniform(gpu, c, c.channels, invocations);
  const entries: [number, GPUBuffer][] = [[0, p.latents.buffer], [1, p.model.buffer], [7, params], [
    8,
    p.step,
  ]];
  if (p.history && slots > 0) entries.push([2, p.history.buffer]);
  if (p.noise) entries.push([3, p.noise.buffer]);
  if (p.blend) {
    entries.push([4, p.blend.original.buffer], [5, p.blend.noise.buffer], [6, p.blend.mask.buffer]);
  }
  return {
    dispatches: [bindSparse(gpu, pipeline, entries, invocations, "sampler update")],
    uniforms: [params],
  };
}
