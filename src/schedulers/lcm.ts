// LCMScheduler (diffusers 0.27.2): latent consistency sampling on the ᾱ scale.

import { ALPHA_DEFAULTS, AlphaScheduler } from "./alpha.ts";
import {
  checkSameLength,
  checkStepIndex,
  clampInPlace,
  type NoiseSource,
  npLinspace,
  predictOriginalAlpha,
  type SchedulerConfig,
  type StepResult,
} from "./common.ts";
import { alphaX0, type LinearSchedule, type LinearStep } from "./linear.ts";

/**
 * LCMScheduler. Ignores timestep_spacing/steps_offset: picks N of the `original_inference_steps` (50) timesteps
 * 20·j − 1 from the top at an even stride (N = 4 → [999, 759, 499, 259]). Boundary-condition scalings with
 * timestep_scaling; `predOriginal` is `denoised`. Draws one noise tensor on every step except the last, whose
 * prev_sample is `denoised`.
 */
export class LcmScheduler extends AlphaScheduler {
  readonly className = "LCMScheduler";
  private readonly finalAlphaCumprod: number;

  constructor(config: SchedulerConfig) {
    super("LCMScheduler", {
      ...ALPHA_DEFAULTS,
      beta_start: 0.00085,
      beta_end: 0.012,
      beta_schedule: "scaled_linear",
      original_inference_steps: 50,
      clip_sample: false,
      clip_sample_range: 1.0,
      set_alpha_to_one: true,
      thresholding: false,
      timestep_scaling: 10.0,
      rescale_betas_zero_snr: false,
    }, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  /** `strength` < 1 shortens the original schedule as LCM's img2img pipeline does. */
  override setTimesteps(n: number, strength = 1): void {
    const originalSteps = this.config.original_inference_steps as number;
    const T = this.config.num_train_timesteps;
    if (n > T) throw new Error(`num_inference_steps ${n} > num_train_timesteps ${T}`);
    if (n > originalSteps) {
      throw new Error(`LCMScheduler: num_inference_steps ${n} > original_inference_steps ${originalSteps}`);
    }
    const k = Math.floor(T / originalSteps);
    const count = Math.floor(originalSteps * strength);
    if (Math.floor(count / n) < 1) {
      throw new Error(`LCMScheduler: ${n} steps need strength ≥ ${n / originalSteps} (got ${strength})`);
    }
    const origin = Array.from({ length: count }, (_, i) => (i + 1) * k - 1).reverse();
    this.timesteps = npLinspace(0, origin.length, n, false).map((x) => origin[Math.floor(x)]);
    this.numInferenceSteps = n;
  }

  /**
   * The scalars of evaluation `i`: denoised = cOut·x₀ + cSkip·x, then re-noised to ᾱ of the next timestep
   * (√ᾱ_prev·denoised + √(1 − ᾱ_prev)·z) except on the last step.
   */
  private coefficients(i: number) {
    const t = this.timesteps[i];
    const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1] : t;
    const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
    const sigmaData = 0.5;
    const scaled = t * (this.config.timestep_scaling as number);
    return {
      alphaProdT: this.alphasCumprod[t],
      cSkip: sigmaData ** 2 / (scaled ** 2 + sigmaData ** 2),
      cOut: scaled / Math.sqrt(scaled ** 2 + sigmaData ** 2),
      sqrtAPrev: Math.sqrt(alphaProdPrev),
      sqrtBPrev: Math.sqrt(1 - alphaProdPrev),
      last: i === this.numInferenceSteps - 1,
    };
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const { alphaProdT, cSkip, cOut, sqrtAPrev, sqrtBPrev, last } = this.coefficients(stepIndex);
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const denoised = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) denoised[i] = cOut * predOriginal[i] + cSkip * sample[i];
    if (last) return { prevSample: denoised, predOriginal: denoised };
    const z = noise();
    checkSameLength(z, sample, "noise");
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) prevSample[i] = sqrtAPrev * denoised[i] + sqrtBPrev * z[i];
    return { prevSample, predOriginal: denoised };
  }

  /** step() with y = denoised = c_out·x0 + c_skip·x; prev = denoised on the last step, else re-noised. */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const { alphaProdT, cSkip, cOut, sqrtAPrev, sqrtBPrev, last } = this.coefficients(i);
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(this.config.prediction_type, alphaProdT), clamp: this.clipRange() },
        y: { x0: cOut, x: cSkip },
        out: last ? { y: 1 } : { y: sqrtAPrev, z: sqrtBPrev },
        drawsNoise: !last,
      });
    }
    return { slots: 0, steps };
  }
}
