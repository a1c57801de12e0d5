// σ-parameterised (k-diffusion style) schedulers: Euler, Euler ancestral and Heun (diffusers 0.27.2).
// x lives on the σ scale: init_noise_sigma = σ_max (linspace/trailing) or √(σ_max² + 1) (leading), and the
// UNet input is x / √(σ² + 1). Timesteps are float32 and may be fractional (linspace: 946.42…).

import { SchedulerBase } from "./base.ts";
import {
  addNoiseSigma,
  arangeDown,
  checkSameLength,
  checkStepIndex,
  clampInPlace,
  f32,
  interpIndex,
  karrasSigmas,
  type NoiseSource,
  npLinspace,
  predictOriginalSigma,
  type SchedulerConfig,
  sigmaSchedule,
  sigmaToT,
  type StepResult,
  TRAIN_DEFAULTS,
} from "./common.ts";
import { type LinearSchedule, type LinearStep, sigmaX0, slot } from "./linear.ts";

const SIGMA_DEFAULTS = {
  ...TRAIN_DEFAULTS,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
};

abstract class SigmaScheduler extends SchedulerBase {
  readonly alphasCumprod: Float32Array;
  /** σ(t) for t = 0 … T − 1 (float32). */
  readonly trainSigmas: Float32Array;
  sigmas: number[] = [];

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    super(className, defaults, given);
    ({ alphasCumprod: this.alphasCumprod, trainSigmas: this.trainSigmas } = sigmaSchedule(this.config));
  }

  get initNoiseSigma(): number {
    const max = this.sigmas.length ? Math.max(...this.sigmas) : this.trainSigmas[this.trainSigmas.length - 1];
    return this.config.timestep_spacing === "leading" ? f32(Math.sqrt(max * max + 1)) : max;
  }

  /** x / √(σ² + 1) with σ = sigmas[stepIndex]. */
  override scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepIndex(this, stepIndex);
    const sigma = this.sigmas[stepIndex];
    const scale = Math.sqrt(sigma * sigma + 1);
    return sample.map((v) => v / scale);
  }

  /** x + noise·σ with σ = sigmas[stepIndex] (diffusers with begin_index = stepIndex). */
  addNoise(original: Float32Array, noise: Float32Array, stepIndex: number): Float32Array {
    checkStepIndex(this, stepIndex);
    return addNoiseSigma(original, noise, this.sigmas[stepIndex]);
  }

  addNoiseCoefficients(stepIndex: number): { original: number; noise: number } {
    checkStepIndex(this, stepIndex);
    return { original: 1, noise: this.sigmas[stepIndex] };
  }

  /** scale_model_input's divisor √(σ² + 1) at evaluation `stepIndex`. */
  protected inputDivisor(stepIndex: number): number {
    const sigma = this.sigmas[stepIndex];
    return Math.sqrt(sigma * sigma + 1);
  }

  /**
   * Float timesteps of the spacing (float32, as diffusers stores them) and the σ interpolated at each
   * (optionally Karras-spaced, with timesteps mapped back through log σ).
   */
  protected baseSchedule(n: number): { timesteps: number[]; sigmas: number[] } {
    const T = this.config.num_train_timesteps;
    let timesteps: number[];
    if (this.config.timestep_spacing === "linspace") {
      timesteps = npLinspace(0, T - 1, n).map(f32).reverse();
    } else if (this.config.timestep_spacing === "leading") {
      const ratio = Math.floor(T / n);
      timesteps = Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + this.config.steps_offset);
    } else {
      timesteps = arangeDown(T, T / n).map((t) => Math.round(t) - 1);
    }
    let sigmas = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    if (this.config.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map((s) => f32(Math.log(s)));
      const sigmaMin = (this.config.sigma_min as number | null) ?? sigmas[sigmas.length - 1];
      const sigmaMax = (this.config.sigma_max as number | null) ?? sigmas[0];
      sigmas = karrasSigmas(sigmaMin, sigmaMax, n);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    return { timesteps, sigmas: sigmas.map(f32) };
  }
}

/**
 * EulerDiscreteScheduler (s_churn = 0). Draws one noise tensor on EVERY step although with s_churn = 0 it is
 * never used: diffusers calls randn_tensor unconditionally, which advances the shared generator.
 */
export class EulerScheduler extends SigmaScheduler {
  readonly className = "EulerDiscreteScheduler";

  constructor(config: SchedulerConfig) {
    super("EulerDiscreteScheduler", {
      ...SIGMA_DEFAULTS,
      interpolation_type: "linear",
      use_karras_sigmas: false,
      sigma_min: null,
      sigma_max: null,
      timestep_type: "discrete",
      rescale_betas_zero_snr: false,
    }, config);
    if (this.config.interpolation_type !== "linear") {
      throw new Error(
        `EulerDiscreteScheduler: interpolation_type ${this.config.interpolation_type} unsupported`,
      );
    }
    if (this.config.timestep_type !== "discrete") {
      throw new Error(`EulerDiscreteScheduler: timestep_type ${this.config.timestep_type} unsupported`);
    }
  }

  setTimesteps(n: number): void {
    const { timesteps, sigmas } = this.baseSchedule(n);
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, 0];
    this.numInferenceSteps = n;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const sigma = this.sigmas[stepIndex];
    noise(); // s_churn = 0 → gamma = 0: drawn (generator advances) but unused
    const sigmaHat = sigma;
    const predOriginal = predictOriginalSigma(
      this.config.prediction_type,
      modelOutput,
      sample,
      sigma,
      sigmaHat,
    );
    const dt = this.sigmas[stepIndex + 1] - sigmaHat;
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const derivative = (sample[i] - predOriginal[i]) / sigmaHat;
      prevSample[i] = sample[i] + derivative * dt;
    }
    return { prevSample, predOriginal };
  }

  /** step() with y = the derivative (x − x0)/σ: prev = x + dt·y (the noise is drawn, unused). */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const sigma = this.sigmas[i];
      steps.push({
        inputDivisor: this.inputDivisor(i),
        x0: sigmaX0(this.config.prediction_type, sigma),
        y: { x: 1 / sigma, x0: -1 / sigma },
        out: { x: 1, y: this.sigmas[i + 1] - sigma },
        drawsNoise: true,
      });
    }
    return { slots: 0, steps };
  }
}

/** EulerAncestralDiscreteScheduler. Draws one noise tensor per step (added with σ_up; σ_up = 0 at the end). */
export class EulerAncestralScheduler extends SigmaScheduler {
  readonly className = "EulerAncestralDiscreteScheduler";

  constructor(config: SchedulerConfig) {
    super("EulerAncestralDiscreteScheduler", { ...SIGMA_DEFAULTS, rescale_betas_zero_snr: false }, config);
  }

  setTimesteps(n: number): void {
    const { timesteps, sigmas } = this.baseSchedule(n);
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, 0];
    this.numInferenceSteps = n;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const sigmaFrom = this.sigmas[stepIndex];
    const sigmaTo = this.sigmas[stepIndex + 1];
    const predOriginal = predictOriginalSigma(this.config.prediction_type, modelOutput, sample, sigmaFrom);
    const sigmaUp = Math.sqrt((sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2);
    const sigmaDown = Math.sqrt(sigmaTo ** 2 - sigmaUp ** 2);
    const dt = sigmaDown - sigmaFrom;
    const z = noise();
    checkSameLength(z, sample, "noise");
    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const derivative = (sample[i] - predOriginal[i]) / sigmaFrom;
      prevSample[i] = sample[i] + derivative * dt + z[i] * sigmaUp;
    }
    return { prevSample, predOriginal };
  }

  /** step() with y = the derivative (x − x0)/σ: prev = x + dt·y + σ_up·z. */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex; i < this.timesteps.length; i++) {
      const sigmaFrom = this.sigmas[i];
      const sigmaTo = this.sigmas[i + 1];
      const sigmaUp = Math.sqrt((sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2);
      const sigmaDown = Math.sqrt(sigmaTo ** 2 - sigmaUp ** 2);
      steps.push({
        inputDivisor: this.inputDivisor(i),
        x0: sigmaX0(this.config.prediction_type, sigmaFrom),
        y: { x: 1 / sigmaFrom, x0: -1 / sigmaFrom },
        out: { x: 1, y: sigmaDown - sigmaFrom, z: sigmaUp },
        drawsNoise: true,
      });
    }
    return { slots: 0, steps };
  }
}

/**
 * HeunDiscreteScheduler (2nd order, order = 2). The schedule doubles every timestep but the first:
 * N = 4 → [999, 666, 666, 333, 333, 0, 0] (2N − 1 evaluations), sigmas [σ0, σ1, σ1, σ2, σ2, σ3, σ3, 0].
 * Even evaluations take an Euler step and store its derivative; odd ones average the derivatives and redo the
 * step from the stored sample. Draws no noise.
 */
export class HeunScheduler extends SigmaScheduler {
  readonly className = "HeunDiscreteScheduler";
  override readonly order = 2;
  private prevDerivative: Float32Array | null = null;
  private dt: number | null = null;
  private storedSample: Float32Array | null = null;

  constructor(config: SchedulerConfig) {
    super("HeunDiscreteScheduler", {
      ...SIGMA_DEFAULTS,
      beta_start: 0.00085,
      beta_end: 0.012,
      use_karras_sigmas: false,
      clip_sample: false,
      clip_sample_range: 1.0,
    }, config);
  }

  setTimesteps(n: number): void {
    const { timesteps, sigmas } = this.baseSchedule(n);
    this.sigmas = [sigmas[0], ...sigmas.slice(1).flatMap((s) => [s, s]), 0];
    this.timesteps = [timesteps[0], ...timesteps.slice(1).flatMap((t) => [t, t])];
    this.numInferenceSteps = n;
    this.prevDerivative = null;
    this.dt = null;
    this.storedSample = null;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, _noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const firstOrder = this.dt === null;
    const sigma = firstOrder ? this.sigmas[stepIndex] : this.sigmas[stepIndex - 1];
    const sigmaNext = firstOrder ? this.sigmas[stepIndex + 1] : this.sigmas[stepIndex];
    const sigmaHat = sigma; // gamma = 0
    const sigmaInput = firstOrder ? sigmaHat : sigmaNext;
    const predOriginal = predictOriginalSigma(this.config.prediction_type, modelOutput, sample, sigmaInput);
    if (this.config.clip_sample) clampInPlace(predOriginal, this.config.clip_sample_range as number);
    const prevSample = new Float32Array(sample.length);
    if (firstOrder) {
      const derivative = new Float32Array(sample.length);
      const dt = sigmaNext - sigmaHat;
      for (let i = 0; i < sample.length; i++) {
        derivative[i] = (sample[i] - predOriginal[i]) / sigmaHat;
        prevSample[i] = sample[i] + derivative[i] * dt;
      }
      this.prevDerivative = derivative;
      this.dt = dt;
      this.storedSample = sample;
    } else {
      const prev = this.prevDerivative!;
      const base = this.storedSample!;
      const dt = this.dt!;
      for (let i = 0; i < sample.length; i++) {
        const derivative = (f32((sample[i] - predOriginal[i]) / sigmaNext) + prev[i]) / 2;
        prevSample[i] = base[i] + derivative * dt;
      }
      this.prevDerivative = null;
      this.dt = null;
      this.storedSample = null;
    }
    return { prevSample, predOriginal };
  }

  /**
   * step()'s two states alternate from `startIndex`: an Euler step that keeps its derivative (slot 0) and
   * its sample (slot 1), then the average of both derivatives from that sample. y = the derivative.
   */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex, c = 0; i < this.timesteps.length; i++, c++) {
      const firstOrder = c % 2 === 0;
      const sigma = firstOrder ? this.sigmas[i] : this.sigmas[i - 1];
      const sigmaNext = firstOrder ? this.sigmas[i + 1] : this.sigmas[i];
      const sigmaInput = firstOrder ? sigma : sigmaNext;
      const dt = sigmaNext - sigma;
      const x0 = { ...sigmaX0(this.config.prediction_type, sigmaInput), clamp: this.clipRange() };
      const y = { x: 1 / sigmaInput, x0: -1 / sigmaInput };
      steps.push(
        firstOrder
          ? {
            inputDivisor: this.inputDivisor(i),
            x0,
            y,
            out: { x: 1, y: dt },
            store: [{ y: 1 }, { x: 1 }],
            drawsNoise: false,
          }
          : {
            inputDivisor: this.inputDivisor(i),
            x0,
            y,
            out: slot(1, 1, slot(0, dt / 2, { y: dt / 2 })),
            drawsNoise: false,
          },
      );
    }
    return { slots: 2, steps };
  }
}
