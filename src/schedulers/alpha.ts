// ᾱ-parameterised schedulers on integer timesteps: DDIM, DDPM, PNDM (PLMS) and LCM (diffusers 0.27.2).
// They work on the VP scale: init_noise_sigma = 1 and scale_model_input is the identity.

import {
  addNoiseAlpha,
  betaSchedule,
  checkSameLength,
  checkStepIndex,
  clampInPlace,
  f32,
  type NoiseSource,
  npLinspace,
  predictOriginalAlpha,
  resolveConfig,
  type ResolvedConfig,
  type Scheduler,
  type SchedulerConfig,
  spacedTimesteps,
  type StepResult,
} from "./common.ts";
import { alphaX0, type LinearSchedule, type LinearStep, slot, type Terms } from "./linear.ts";

const BASE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
};

abstract class AlphaScheduler implements Scheduler {
  abstract readonly className: string;
  readonly config: ResolvedConfig;
  readonly alphasCumprod: Float32Array;
  readonly betas: Float32Array;
  timesteps: number[] = [];
  readonly sigmas = undefined;
  readonly initNoiseSigma = 1;
  readonly order: number = 1;
  numInferenceSteps = 0;

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    this.config = resolveConfig(className, defaults, given);
    ({ betas: this.betas, alphasCumprod: this.alphasCumprod } = betaSchedule(this.config));
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(
    modelOutput: Float32Array,
    stepIndex: number,
    sample: Float32Array,
    noise: NoiseSource,
  ): StepResult;

  scaleModelInput(sample: Float32Array, _stepIndex: number): Float32Array {
    return sample;
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

  abstract linearSchedule(startIndex: number): LinearSchedule;

  /** clip_sample's range, when the config clips x₀. */
  protected clipRange(): number | undefined {
    return this.config.clip_sample ? this.config.clip_sample_range as number : undefined;
  }

  /** ᾱ of an integer timestep; negative timesteps (before the first) give `final`. */
  protected alphaProd(t: number, final: number): number {
    return t >= 0 ? this.alphasCumprod[t] : final;
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
      ...BASE_DEFAULTS,
      clip_sample: true,
      clip_sample_range: 1.0,
      set_alpha_to_one: true,
      thresholding: false,
      rescale_betas_zero_snr: false,
    }, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(n: number): void {
    this.timesteps = spacedTimesteps(this.config, n);
    this.numInferenceSteps = n;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const t = this.timesteps[stepIndex];
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
    const betaProdT = 1 - alphaProdT;
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    const sqrtA = Math.sqrt(alphaProdT);
    const sqrtB = Math.sqrt(betaProdT);
    // pred_epsilon before clipping (use_clipped_model_output = False)
    const predEpsilon = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      if (this.config.prediction_type === "epsilon") predEpsilon[i] = modelOutput[i];
      else if (this.config.prediction_type === "sample") {
        predEpsilon[i] = (sample[i] - sqrtA * predOriginal[i]) / sqrtB;
      } else predEpsilon[i] = sqrtA * modelOutput[i] + sqrtB * sample[i];
    }
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const variance = ((1 - alphaProdPrev) / betaProdT) * (1 - alphaProdT / alphaProdPrev);
    const stdDev = this.eta * Math.sqrt(variance);
    const dirCoeff = Math.sqrt(1 - alphaProdPrev - stdDev * stdDev);
    const sqrtAPrev = Math.sqrt(alphaProdPrev);
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
      const t = this.timesteps[i];
      const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
      const alphaProdT = this.alphasCumprod[t];
      const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
      const betaProdT = 1 - alphaProdT;
      const sqrtA = Math.sqrt(alphaProdT);
      const sqrtB = Math.sqrt(betaProdT);
      // pred_epsilon from the unclipped x₀ (use_clipped_model_output = False)
      const eps = prediction === "epsilon"
        ? { x: 0, e: 1 }
        : prediction === "sample"
        ? { x: 1 / sqrtB, e: -sqrtA / sqrtB }
        : { x: sqrtB, e: sqrtA };
      const variance = ((1 - alphaProdPrev) / betaProdT) * (1 - alphaProdT / alphaProdPrev);
      const stdDev = this.eta * Math.sqrt(variance);
      const dirCoeff = Math.sqrt(1 - alphaProdPrev - stdDev * stdDev);
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(prediction, alphaProdT), clamp: this.clipRange() },
        out: {
          x0: Math.sqrt(alphaProdPrev),
          x: dirCoeff * eps.x,
          e: dirCoeff * eps.e,
          z: this.eta > 0 ? stdDev : 0,
        },
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
      ...BASE_DEFAULTS,
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

  setTimesteps(n: number): void {
    this.timesteps = spacedTimesteps(this.config, n);
    this.numInferenceSteps = n;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const t = this.timesteps[stepIndex];
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(prevT, 1);
    const betaProdT = 1 - alphaProdT;
    const betaProdPrev = 1 - alphaProdPrev;
    const currentAlphaT = alphaProdT / alphaProdPrev;
    const currentBetaT = 1 - currentAlphaT;
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const originalCoeff = (Math.sqrt(alphaProdPrev) * currentBetaT) / betaProdT;
    const sampleCoeff = (Math.sqrt(currentAlphaT) * betaProdPrev) / betaProdT;
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      prevSample[i] = originalCoeff * predOriginal[i] + sampleCoeff * sample[i];
    }
    if (t > 0) {
      const z = noise();
      checkSameLength(z, sample, "noise");
      let variance = Math.max((betaProdPrev / betaProdT) * currentBetaT, 1e-20);
      if (this.config.variance_type === "fixed_large") variance = currentBetaT;
      // fixed_small: √variance; fixed_small_log: exp(0.5·log variance) — the same std
      const std = Math.sqrt(variance);
      for (let i = 0; i < sample.length; i++) prevSample[i] += std * z[i];
    }
    return { prevSample, predOriginal };
  }

  /** step() as originalCoeff·x0 + sampleCoeff·x (+ std·z where t > 0). */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const t = this.timesteps[i];
      const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
      const alphaProdT = this.alphasCumprod[t];
      const alphaProdPrev = this.alphaProd(prevT, 1);
      const betaProdT = 1 - alphaProdT;
      const betaProdPrev = 1 - alphaProdPrev;
      const currentAlphaT = alphaProdT / alphaProdPrev;
      const currentBetaT = 1 - currentAlphaT;
      let variance = Math.max((betaProdPrev / betaProdT) * currentBetaT, 1e-20);
      if (this.config.variance_type === "fixed_large") variance = currentBetaT;
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(this.config.prediction_type, alphaProdT), clamp: this.clipRange() },
        out: {
          x0: (Math.sqrt(alphaProdPrev) * currentBetaT) / betaProdT,
          x: (Math.sqrt(currentAlphaT) * betaProdPrev) / betaProdT,
          z: t > 0 ? Math.sqrt(variance) : 0,
        },
        drawsNoise: t > 0,
      });
    }
    return { slots: 0, steps };
  }
}

/**
 * PNDMScheduler with skip_prk_steps (PLMS; all SD configs set it). The schedule repeats its second timestep:
 * N = 4 → [751, 501, 501, 251, 1]. The first two evaluations form a 2nd-order warm-up; then
 * linear multistep with up to 4 stored model outputs. Draws no noise. Gives no pred_original.
 */
export class PndmScheduler extends AlphaScheduler {
  readonly className = "PNDMScheduler";
  private readonly finalAlphaCumprod: number;
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | null = null;

  constructor(config: SchedulerConfig) {
    super("PNDMScheduler", { ...BASE_DEFAULTS, skip_prk_steps: false, set_alpha_to_one: false }, config);
    if (!this.config.skip_prk_steps) {
      throw new Error(
        "PNDMScheduler: only skip_prk_steps = true (PLMS, as every Stable Diffusion config sets) is supported",
      );
    }
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(n: number): void {
    const ascending = spacedTimesteps(this.config, n).reverse();
    // concat(_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:]) reversed
    const plms = [...ascending.slice(0, -1), ...ascending.slice(-2, -1), ...ascending.slice(-1)];
    this.timesteps = plms.reverse();
    this.numInferenceSteps = n;
    this.ets = [];
    this.counter = 0;
    this.curSample = null;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, _noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const stride = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let timestep = this.timesteps[stepIndex];
    let prevTimestep = timestep - stride;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      prevTimestep = timestep;
      timestep = timestep + stride;
    }
    const ets = this.ets;
    const n = ets.length;
    let eps: Float32Array;
    let base = sample;
    if (n === 1 && this.counter === 0) {
      eps = modelOutput;
      this.curSample = sample;
    } else if (n === 1 && this.counter === 1) {
      eps = combine([modelOutput, ets[0]], [0.5, 0.5]);
      base = this.curSample!;
      this.curSample = null;
    } else if (n === 2) {
      eps = combine([ets[1], ets[0]], [3 / 2, -1 / 2]);
    } else if (n === 3) {
      eps = combine([ets[2], ets[1], ets[0]], [23 / 12, -16 / 12, 5 / 12]);
    } else {
      eps = combine([ets[3], ets[2], ets[1], ets[0]], [55 / 24, -59 / 24, 37 / 24, -9 / 24]);
    }
    const prevSample = this.prevSample(base, timestep, prevTimestep, eps);
    this.counter++;
    return { prevSample };
  }

  private prevSample(
    sample: Float32Array,
    t: number,
    prevT: number,
    modelOutput: Float32Array,
  ): Float32Array {
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
    const betaProdT = 1 - alphaProdT;
    const betaProdPrev = 1 - alphaProdPrev;
    const sampleCoeff = Math.sqrt(alphaProdPrev / alphaProdT);
    const denom = alphaProdT * Math.sqrt(betaProdPrev) + Math.sqrt(alphaProdT * betaProdT * alphaProdPrev);
    const outCoeff = (alphaProdPrev - alphaProdT) / denom;
    const vPred = this.config.prediction_type === "v_prediction";
    if (this.config.prediction_type === "sample") throw new Error("PNDMScheduler: prediction_type sample");
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const eps = vPred
        ? Math.sqrt(alphaProdT) * modelOutput[i] + Math.sqrt(betaProdT) * sample[i]
        : modelOutput[i];
      out[i] = sampleCoeff * sample[i] - outCoeff * eps;
    }
    return out;
  }

  /**
   * step()'s states by counter c = evaluation − startIndex. Slot 0 holds cur_sample (c = 0, read at c = 1);
   * slots 1–3 are a ring of the earlier model outputs in `ets` (push p in slot 1 + p mod 3): c = 0 pushes,
   * c = 1 does not, every later evaluation pushes and combines up to 4 (its own and 3 in the ring).
   */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    if (this.config.prediction_type === "sample") throw new Error("PNDMScheduler: prediction_type sample");
    const stride = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const vPred = this.config.prediction_type === "v_prediction";
    const weights: Record<number, number[]> = { // oldest first, the current output last
      1: [1],
      2: [-1 / 2, 3 / 2],
      3: [5 / 12, -16 / 12, 23 / 12],
      4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24],
    };
    const ring = (p: number) => 1 + (p % 3);
    const steps: LinearStep[] = [];
    let pushes = 0;
    for (let i = startIndex, c = 0; i < this.timesteps.length; i++, c++) {
      let t = this.timesteps[i];
      let prevT = t - stride;
      if (c === 1) {
        prevT = t;
        t = t + stride;
      }
      // prev = sampleCoeff·base − outCoeff·ε', ε' = ε (or √ᾱ·ε + √(1 − ᾱ)·base for v-prediction)
      const alphaProdT = this.alphasCumprod[t];
      const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
      const betaProdT = 1 - alphaProdT;
      const sampleCoeff = Math.sqrt(alphaProdPrev / alphaProdT);
      const denom = alphaProdT * Math.sqrt(1 - alphaProdPrev) +
        Math.sqrt(alphaProdT * betaProdT * alphaProdPrev);
      const outCoeff = (alphaProdPrev - alphaProdT) / denom;
      const baseCoeff = sampleCoeff - (vPred ? outCoeff * Math.sqrt(betaProdT) : 0);
      const epsCoeff = -outCoeff * (vPred ? Math.sqrt(alphaProdT) : 1);
      let out: Terms;
      const store: (Terms | undefined)[] = [];
      if (c === 1) {
        // ε = (e + ets[0]) / 2 from cur_sample
        out = slot(ring(0), 0.5 * epsCoeff, slot(0, baseCoeff, { e: 0.5 * epsCoeff }));
      } else {
        const q = pushes++;
        const n = c === 0 ? 1 : Math.min(q + 1, 4);
        const w = weights[n];
        out = { x: baseCoeff, e: w[n - 1] * epsCoeff };
        for (let k = 0; k < n - 1; k++) out = slot(ring(q - n + 1 + k), w[k] * epsCoeff, out);
        store[ring(q)] = { e: 1 };
        if (c === 0) store[0] = { x: 1 };
      }
      steps.push({ inputDivisor: 1, x0: { x: 0, e: 0 }, out, store, drawsNoise: false });
    }
    return { slots: 4, steps };
  }
}

function combine(arrays: Float32Array[], weights: number[]): Float32Array {
  const out = new Float32Array(arrays[0].length);
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (let k = 0; k < arrays.length; k++) acc += weights[k] * arrays[k][i];
    out[i] = acc;
  }
  return out;
}

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
      ...BASE_DEFAULTS,
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
  setTimesteps(n: number, strength = 1): void {
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

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const t = this.timesteps[stepIndex];
    const prevT = stepIndex + 1 < this.timesteps.length ? this.timesteps[stepIndex + 1] : t;
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
    const sigmaData = 0.5;
    const scaled = t * (this.config.timestep_scaling as number);
    const cSkip = sigmaData ** 2 / (scaled ** 2 + sigmaData ** 2);
    const cOut = scaled / Math.sqrt(scaled ** 2 + sigmaData ** 2);
    const predOriginal = predictOriginalAlpha(this.config.prediction_type, modelOutput, sample, alphaProdT);
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const denoised = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) denoised[i] = cOut * predOriginal[i] + cSkip * sample[i];
    if (stepIndex === this.numInferenceSteps - 1) return { prevSample: denoised, predOriginal: denoised };
    const z = noise();
    checkSameLength(z, sample, "noise");
    const sqrtAPrev = Math.sqrt(alphaProdPrev);
    const sqrtBPrev = Math.sqrt(1 - alphaProdPrev);
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) prevSample[i] = sqrtAPrev * denoised[i] + sqrtBPrev * z[i];
    return { prevSample, predOriginal: denoised };
  }

  /** step() with y = denoised = c_out·x0 + c_skip·x; prev = denoised on the last step, else re-noised. */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const t = this.timesteps[i];
      const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1] : t;
      const alphaProdT = this.alphasCumprod[t];
      const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
      const sigmaData = 0.5;
      const scaled = t * (this.config.timestep_scaling as number);
      const cSkip = sigmaData ** 2 / (scaled ** 2 + sigmaData ** 2);
      const cOut = scaled / Math.sqrt(scaled ** 2 + sigmaData ** 2);
      const last = i === this.numInferenceSteps - 1;
      steps.push({
        inputDivisor: 1,
        x0: { ...alphaX0(this.config.prediction_type, alphaProdT), clamp: this.clipRange() },
        y: { x0: cOut, x: cSkip },
        out: last ? { y: 1 } : { y: Math.sqrt(alphaProdPrev), z: Math.sqrt(1 - alphaProdPrev) },
        drawsNoise: !last,
      });
    }
    return { slots: 0, steps };
  }
}
