// The denoising loop on the GPU: per evaluation, each UNet call's input is written from the GPU latents
// (scale_model_input, the inpainting condition, the CFG rows), the UNet plan runs, and the fused
// CFG + sampler step (+ inpainting blend) updates the latents in place (gpu_sampler.ts). The host only
// writes the step's scalars and timesteps and uploads the noise a step draws; nothing is read back unless
// the caller reads a step's latents (previews, tests, the final decode).

import type { Gpu } from "../gpu/device.ts";
import { writeActivation } from "../gpu/tensor.ts";
import type { UNet } from "../models/unet/unet.ts";
import type { NoiseSource, Scheduler } from "../schedulers/common.ts";
import { splitBatch } from "./batch.ts";
import { GpuSampler, type LatentBlend } from "./gpu_sampler.ts";
import { AbortError } from "./types.ts";

export interface DenoiseOptions {
  /** [B, T, C] text embeddings of one image, unconditional rows first when guidanceScale > 1. */
  context: Float32Array;
  tokens: number;
  guidanceScale: number;
  /** NCHW [N, C, h, w]: the initial latents of N images. */
  latents: Float32Array;
  /** Latent [height, width]. */
  latentSize: [number, number];
  /** After setTimesteps. */
  scheduler: Scheduler;
  startIndex?: number;
  /** NCHW [N, Cc, h, w]: appended to each image's scaled latents on every evaluation (9-channel UNet). */
  condition?: Float32Array;
  /** The 4-channel inpainting blend after every step. */
  blend?: LatentBlend;
  noise: NoiseSource;
  /** Images per UNet call (default all). */
  imagesPerCall?: number;
  signal?: AbortSignal;
}

/** One finished evaluation. */
export interface DenoiseStep {
  /** Index into scheduler.timesteps. */
  index: number;
  /** NCHW [k, C, h, w] latents of images first … first + k (default: all) after this evaluation: one
   * readback. Only until the loop goes on. */
  read(first?: number, k?: number): Promise<Float32Array>;
}

/**
 * Runs evaluations startIndex… of `o.scheduler` for the batch, yielding after each once the GPU finished it.
 * Per evaluation the images run in UNet calls of at most `imagesPerCall` images, each call one recorded plan
 * of `rows·k` rows (uncond rows of its images, then their cond rows, as diffusers batches them); the step is
 * elementwise per image, so the split changes nothing.
 */
export async function* denoiseOnGpu(gpu: Gpu, unet: UNet, o: DenoiseOptions): AsyncGenerator<DenoiseStep> {
  const cfg = o.guidanceScale > 1;
  const rows = cfg ? 2 : 1;
  const C = unet.config.out_channels;
  const inC = unet.config.in_channels;
  const [h, w] = o.latentSize;
  const n = C * h * w;
  const count = o.latents.length / n;
  if (!Number.isInteger(count) || count < 1) {
    throw new Error(`denoise: ${o.latents.length} latent values are not [N, ${C}, ${h}, ${w}]`);
  }
  if ((o.condition?.length ?? 0) !== count * (inC - C) * h * w) {
    throw new Error(
      `denoise: latents and condition give ${C + (o.condition?.length ?? 0) / (count * h * w)} of ` +
        `${inC} inputs`,
    );
  }
  const startIndex = o.startIndex ?? 0;
  const end = o.scheduler.timesteps.length;
  const sampler = new GpuSampler(gpu, {
    scheduler: o.scheduler,
    startIndex,
    latents: o.latents,
    channels: C,
    latentSize: [h, w],
    guidanceScale: o.guidanceScale,
    condition: o.condition,
    blend: o.blend,
    noise: o.noise,
    act: unet.act,
  });
  try {
    // One plan per call size, its context rows [uncond × k, cond × k] written once (calls of one size share
    // the plan and its buffers, used one call after the other in queue order).
    const rowContext = o.context.length / rows;
    let first = 0;
    const calls = splitBatch(count, o.imagesPerCall ?? count).map((k) => {
      const plan = unet.plan(rows * k, h, w, o.tokens);
      const context = new Float32Array(rows * k * rowContext);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < k; j++) {
          context.set(o.context.subarray(r * rowContext, (r + 1) * rowContext), (r * k + j) * rowContext);
        }
      }
      writeActivation(gpu, plan.context, context);
      const call = {
        plan,
        pack: sampler.pack(first, k, plan.sample),
        update: sampler.update(first, k, plan.out),
        timesteps: new Float32Array(rows * k),
      };
      first += k;
      return call;
    });
    sampler.prepare(startIndex);
    for (let i = startIndex; i < end; i++) {
      if (o.signal?.aborted) throw new AbortError();
      for (const call of calls) {
        gpu.run(call.pack, "sampler input");
        gpu.device.queue.writeBuffer(
          call.plan.timestep.buffer,
          0,
          call.timesteps.fill(o.scheduler.timesteps[i]),
        );
        await call.plan.plan.runCancellable("unet", o.signal);
        gpu.run(call.update, "sampler step");
      }
      // The next evaluation's scalars and noise draw while the GPU works (queued after this evaluation).
      if (i + 1 < end) sampler.prepare(i + 1);
      // Progress events and cancels follow the GPU, one evaluation at a time.
      await gpu.sync("denoise step");
      yield { index: i, read: (first = 0, k = count) => sampler.read(first, k) };
    }
  } finally {
    sampler.destroy();
  }
}
