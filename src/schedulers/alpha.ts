// ᾱ-parameterised schedulers on integer timesteps (diffusers 0.27.2): their base, DDIM and DDPM here, PNDM
// (PLMS) in pndm.ts and LCM in lcm.ts. They work on the VP scale: init_noise_sigma = 1 and
// scale_model_input is the identity.

import { SchedulerBase } from "./base.ts";
import {
  addNoiseAlpha,
  betaSchedule,
  checkSameLength,
  checkStepIndex,
  clampInPlace,
  f32,
  type NoiseSource,
  predictOriginalAlpha,
  type SchedulerConfig,
  spacedTimesteps,
  type StepResult,
  TRAIN_DEFAULTS,
} from "./common.ts";
import { alphaX0, type LinearSchedule, type LinearStep } from "./linear.ts";

export const ALPHA_DEFAULTS = {
  ...TRAIN_DEFAULTS,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
};

export abstract class AlphaScheduler extends SchedulerBase {
  readonly alphasCumprod: Float32Array;
  readonly betas: Float32Array;
  readonly sigmas = undefined;
  readonly initNoiseSigma = 1;

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    super(className, defaults, given);
    ({ betas: this.betas, alphasCumprod: this.alphasCumprod } = betaSchedule(this.config));
  }

  /** The DDIM-family spacing (DDIM, DDPM; PNDM reorders it, LCM has its own). */
  setTimesteps(n: number): void {
    this.timesteps = spacedTimesteps(this.config, n);
    this.numInferenceSteps = n;
  }

  /** √ᾱ_t·x + √(1 − ᾱ_t)·noise with t = timesteps[stepIndex]. */
  addNoise(original: Float32Array, noise: Float32Array, stepIndex: number): Float32Array {
    checkStepIndex(this, stepIndex);
    return addNoiseAlpha(this.alphasCumprod, original, noise, this.timesteps[stepIndex]);
  }

  addNoiseCoefficients(stepIndex: number): { original: number; noise: number } {
    checkStepIndex(this, stepIndex);
    const a = this.alphasCumprod[this.timesteps[stepIndex]];
    return { original: f32(Math.sqrt(a)), noise: f32(Math.sqrt(f32(1 - a))) };
  }

  /** ᾱ of an integer timestep; negative timesteps (before the first) give `final`. */
  protected alphaProd(t: number, final: number): number {
    return t >= 0 ? this.alphasCumprod[t] : final;
  }

  /** T // N: a timestep minus this is the previous one. */
  protected stride(): number {
    return Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
  }
}

/**
 * DDIMScheduler. `eta` (default 0, as the SD pipelines pass) > 0 adds σ_t·noise and then draws one noise
 * tensor per step; with eta = 0 it draws nothing. Previous timestep = t − T // N; before timestep 0 it uses
 * `final_alpha_cumprod` = 1 if set_alpha_to_one else ᾱ[0].
 */
export class DdimScheduler extends AlphaScheduler {
  readonly className = "DDIMScheduler";
  private readonly finalAlphaCumprod: number;

  constructor(config: SchedulerConfig, readonly eta = 0) {
    super("DDIMScheduler", {
      ...ALPHA_DEFAULTS,
      clip_sample: true,
      clip_sample_range: 1.0,
      set_alpha_to_one: true,
      thresholding: false,
      rescale_betas_zero_snr: false,
    }, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  /** The scalars of evaluation `i`: prev = √ᾱ_prev·x₀ + dirCoeff·pred_epsilon (+ stdDev·z). */
  private coefficients(i: number) {
    const t = this.timesteps[i];
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(t - this.stride(), this.finalAlphaCumprod);
    const betaProdT = 1 - alphaProdT;
    const variance = ((1 - alphaProdPrev) / betaProdT) * (1 - alphaProdT / alphaProdPrev);
    const stdDev = this.eta * Math.sqrt(variance);
    return {
      alphaProdT,
      sqrtA: Math.sqrt(alphaProdT),
      sqrtB: Math.sqrt(betaProdT),
      sqrtAPrev: Math.sqrt(alphaProdPrev),
      stdDev,
      dirCoeff: Math.sqrt(1 - alphaProdPrev - stdDev * stdDev),
    };
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const { alphaProdT, sqrtA, sqrtB, sqrtAPrev, stdDev, dirCoeff } = this.coefficients(stepIndex);
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    // pred_epsilon before clipping (use_clipped_model_output = False)
    const predEpsilon = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      if (this.config.prediction_type === "epsilon") predEpsilon[i] = modelOutput[i];
      else if (this.config.prediction_type === "sample") {
        predEpsilon[i] = (sample[i] - sqrtA * predOriginal[i]) / sqrtB;
      } else predEpsilon[i] = sqrtA * modelOutput[i] + sqrtB * sample[i];
    }
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      prevSample[i] = sqrtAPrev * predOriginal[i] + dirCoeff * predEpsilon[i];
    }
    if (this.eta > 0) {
      const z = noise();
      checkSameLength(z, sample, "noise");
      for (let i = 0; i < sample.length; i++) prevSample[i] += stdDev * z[i];
    }
    return { prevSample, predOriginal };
  }

  /** step() as sqrtAPrev·x0 + dirCoeff·pred_epsilon (+ σ_t·z); pred_epsilon is linear in x and e. */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const prediction = this.config.prediction_type;
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const { alphaProdT, sqrtA, sqrtB, sqrtAPrev, stdDev, dirCoeff } = this.coefficients(i);
      // pred_epsilon from the unclipped x₀ (use_clipped_model_output = False)
      const eps = prediction === "epsilon"
        ? { x: 0, e: 1 }
        : prediction === "sample"
        ? { x: 1 / sqrtB, e: -sqrtA / sqrtB }
        : { x: sqrtB, e: sqrtA };
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(prediction, alphaProdT), clamp: this.clipRange() },
        out: { x0: sqrtAPrev, x: dirCoeff * eps.x, e: dirCoeff * eps.e, z: this.eta > 0 ? stdDev : 0 },
        drawsNoise: this.eta > 0,
      });
    }
    return { slots: 0, steps };
  }
}

/**
 * DDPMScheduler (ancestral sampling). Draws one noise tensor on every step whose timestep is > 0 — including
 * the last one of a leading schedule (t = 1). Before timestep 0 it uses ᾱ = 1 (not set_alpha_to_one).
 * variance_type: fixed_small (default), fixed_small_log, fixed_large.
 */
export class DdpmScheduler extends AlphaScheduler {
  readonly className = "DDPMScheduler";

  constructor(config: SchedulerConfig) {
    super("DDPMScheduler", {
      ...ALPHA_DEFAULTS,
      variance_type: "fixed_small",
      clip_sample: true,
      clip_sample_range: 1.0,
      thresholding: false,
      rescale_betas_zero_snr: false,
    }, config);
    const v = this.config.variance_type;
    if (!["fixed_small", "fixed_small_log", "fixed_large"].includes(v as string)) {
      throw new Error(`DDPMScheduler: unsupported variance_type ${JSON.stringify(v)}`);
    }
  }

  /** The scalars of evaluation `i`: prev = originalCoeff·x₀ + sampleCoeff·x + std·z (std = 0 at t = 0). */
  private coefficients(i: number) {
    const t = this.timesteps[i];
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(t - this.stride(), 1);
    const betaProdT = 1 - alphaProdT;
    const betaProdPrev = 1 - alphaProdPrev;
    const currentAlphaT = alphaProdT / alphaProdPrev;
    const currentBetaT = 1 - currentAlphaT;
    let variance = Math.max((betaProdPrev / betaProdT) * currentBetaT, 1e-20);
    if (this.config.variance_type === "fixed_large") variance = currentBetaT;
    return {
      t,
      alphaProdT,
      originalCoeff: (Math.sqrt(alphaProdPrev) * currentBetaT) / betaProdT,
      sampleCoeff: (Math.sqrt(currentAlphaT) * betaProdPrev) / betaProdT,
      // fixed_small: √variance; fixed_small_log: exp(0.5·log variance) — the same std
      std: t > 0 ? Math.sqrt(variance) : 0,
    };
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const { t, alphaProdT, originalCoeff, sampleCoeff, std } = this.coefficients(stepIndex);
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      prevSample[i] = originalCoeff * predOriginal[i] + sampleCoeff * sample[i];
    }
    if (t > 0) {
      const z = noise();
      checkSameLength(z, sample, "noise");
      for (let i = 0; i < sample.length; i++) prevSample[i] += std * z[i];
    }
    return { prevSample, predOriginal };
  }

  /** step() as originalCoeff·x0 + sampleCoeff·x (+ std·z where t > 0). */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const { t, alphaProdT, originalCoeff, sampleCoeff, std } = this.coefficients(i);
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(this.config.prediction_type, alphaProdT), clamp: this.clipRange() },
        out: { x0: originalCoeff, x: sampleCoeff, z: std },
        drawsNoise: t > 0,
      });
    }
    return { slots: 0, steps };
  }
}
