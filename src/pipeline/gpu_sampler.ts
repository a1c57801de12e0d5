// The sampler's state on the GPU for one run: the batch's latents (f32 NCHW [N, C, h, w], as the host
// schedulers hold them), the history slots multistep samplers keep (f32 [slots, N, C, h, w]), this step's
// noise, the inpainting condition and blend inputs. The host computes each evaluation's scalars
// (Scheduler.linearSchedule: σ, ᾱ, multistep weights, in float64 as step() does) and writes them into one
// uniform; ops/sampler.ts's kernels build the UNet input from the latents and apply CFG + the step + the
// blend in place. Nothing is read back between steps: `read` is for previews, tests and the final decode.
//
// Random draws stay torch-exact: the noise an ancestral/DDPM/LCM step needs is drawn on the host from the
// run's generator (in diffusers' order: one draw per step that draws) and uploaded.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { emptyTensor, type Tensor, uploadTensor, writeActivation } from "../gpu/tensor.ts";
import { type SamplerCall, samplerPack, samplerUpdate, stepUniform, writeStep } from "../ops/sampler.ts";
import type { NoiseSource, Scheduler } from "../schedulers/common.ts";
import { type LinearSchedule, packTerms, usesNoise } from "../schedulers/linear.ts";

/** Inpainting with a 4-channel UNet: after each step, outside the mask, the original noised to the next
 * step (clean after the last). */
export interface LatentBlend {
  /** NCHW [N, C, h, w]: the image's latents (each image's own posterior sample under per-image seeds). */
  original: Float32Array;
  /** NCHW [N, C, h, w]: the noise they are noised with (the run's initial noise). */
  noise: Float32Array;
  /** [h, w]: 1 repaints, 0 keeps. */
  mask: Float32Array;
}

export interface GpuSamplerOptions {
  /** After setTimesteps. */
  scheduler: Scheduler;
  startIndex: number;
  /** NCHW [N, C, h, w]: the initial latents. */
  latents: Float32Array;
  channels: number;
  /** [h, w] */
  latentSize: [number, number];
  /** CFG when > 1 (the UNet's output then has 2 rows per image, unconditional first). */
  guidanceScale: number;
  /** NCHW [N, Cc, h, w], appended to each row of the UNet input (9-channel inpainting). */
  condition?: Float32Array;
  blend?: LatentBlend;
  noise: NoiseSource;
  /** The UNet's activation type (its input and output tensors). */
  act: ActDType;
}

export class GpuSampler {
  readonly count: number;
  /** UNet rows per image: 2 with CFG. */
  readonly rows: number;
  private readonly plane: number;
  private readonly schedule: LinearSchedule;
  private readonly latents: Tensor;
  private readonly history?: Tensor;
  private readonly noise?: Tensor;
  private readonly condition?: Tensor;
  private readonly blend?: { original: Tensor; noise: Tensor; mask: Tensor };
  private readonly step: GPUBuffer;
  private readonly owned: { destroy(): void }[] = [];

  constructor(readonly gpu: Gpu, private readonly o: GpuSamplerOptions) {
    const [h, w] = o.latentSize;
    this.plane = h * w;
    const n = o.channels * this.plane;
    this.count = o.latents.length / n;
    if (!Number.isInteger(this.count) || this.count < 1) {
      throw new Error(`GpuSampler: ${o.latents.length} latent values are not [N, ${o.channels}, ${h}, ${w}]`);
    }
    this.rows = o.guidanceScale > 1 ? 2 : 1;
    this.schedule = o.scheduler.linearSchedule(o.startIndex);
    const shape = [this.count, o.channels, h, w];
    const own = <T extends { destroy(): void }>(t: T): T => {
      this.owned.push(t);
      return t;
    };
    this.latents = own(uploadTensor(gpu, o.latents, shape, "f32", "sampler latents"));
    // New buffers are zero-filled: slots read before their first write (with coefficient 0) stay finite.
    const slots = this.schedule.slots;
    if (slots > 0) {
      this.history = own(emptyTensor(gpu, [slots, ...shape], "f32", "sampler history"));
    }
    if (this.schedule.steps.some(usesNoise)) {
      this.noise = own(emptyTensor(gpu, shape, "f32", "sampler noise"));
    }
    if (o.condition) {
      const cc = o.condition.length / (this.count * this.plane);
      this.condition = own(uploadTensor(gpu, o.condition, [this.count, cc, h, w], "f32", "condition"));
    }
    if (o.blend) {
      this.blend = {
        original: own(uploadTensor(gpu, o.blend.original, shape, "f32", "blend original")),
        noise: own(uploadTensor(gpu, o.blend.noise, shape, "f32", "blend noise")),
        mask: own(uploadTensor(gpu, o.blend.mask, [h, w], "f32", "blend mask")),
      };
    }
    this.step = own(stepUniform(gpu));
  }

  private call(first: number, k: number): SamplerCall {
    const [height, width] = this.o.latentSize;
    return { first, k, count: this.count, channels: this.o.channels, height, width, rows: this.rows };
  }

  /** The dispatches that write images first … first + k into a UNet call's `sample` (NHWC
   * [rows·k, h, w, inC]: their scaled latents, then the condition; unconditional rows first). */
  pack(first: number, k: number, sample: Tensor): Dispatch[] {
    const built = samplerPack(this.gpu, {
      call: this.call(first, k),
      latents: this.latents,
      condition: this.condition,
      sample,
      step: this.step,
      act: this.o.act,
    });
    this.owned.push(...built.uniforms);
    return built.dispatches;
  }

  /** The dispatches that step images first … first + k from a UNet call's `out` (NHWC [rows·k, h, w, C]). */
  update(first: number, k: number, out: Tensor): Dispatch[] {
    const built = samplerUpdate(this.gpu, {
      call: this.call(first, k),
      latents: this.latents,
      model: out,
      history: this.history,
      noise: this.noise,
      blend: this.blend,
      step: this.step,
      act: this.o.act,
    });
    this.owned.push(...built.uniforms);
    return built.dispatches;
  }

  /**
   * Evaluation `index`'s scalars and its noise draw (if diffusers draws in that step), queued for the
   * dispatches submitted after this call: so it may run while the previous evaluation is still on the GPU.
   * Call once per evaluation, in order.
   */
  prepare(index: number): void {
    const { scheduler, startIndex } = this.o;
    const step = this.schedule.steps[index - startIndex];
    if (!step) throw new RangeError(`GpuSampler: evaluation ${index} outside ${startIndex}…`);
    if (step.drawsNoise) {
      const z = this.o.noise();
      if (usesNoise(step)) writeActivation(this.gpu, this.noise!, z);
    }
    const last = index === scheduler.timesteps.length - 1;
    const blend = !this.blend
      ? { original: 0, noise: 0 }
      : last
      ? { original: 1, noise: 0 }
      : scheduler.addNoiseCoefficients(index + 1);
    writeStep(this.gpu, this.step, {
      x0: step.x0,
      guidance: this.o.guidanceScale,
      inputDivisor: step.inputDivisor,
      blend,
      y: packTerms(step.y),
      out: packTerms(step.out),
      store: (step.store ?? []).map((s) => s && packTerms(s)),
    });
  }

  /** NCHW [k, C, h, w]: images first … first + k of the latents after the submitted work (one readback). */
  async read(first = 0, k = this.count): Promise<Float32Array> {
    const n = this.o.channels * this.plane;
    if (!(first >= 0 && k >= 1 && first + k <= this.count)) {
      throw new RangeError(`GpuSampler.read: images ${first}…${first + k} of ${this.count}`);
    }
    return new Float32Array(
      await this.gpu.readBytes(this.latents.buffer, k * n * 4, first * n * 4, "latents"),
    );
  }

  /** Frees the run's buffers (work already submitted still completes). */
  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
  }
}
