// Multistep exponential-integrator solvers on the VP scale (diffusers 0.27.2): their base here, DPM-Solver++
// (2M, optionally Karras) in dpm_solver.ts and UniPC (bh2, predict_x0) in unipc.ts. init_noise_sigma = 1 and
// scale_model_input is the identity; both convert the model output to x₀ and keep the last `solver_order`
// conversions. Neither draws noise.

import { SchedulerBase } from "./base.ts";
import {
  addNoiseSigma,
  arangeDown,
  checkSameLength,
  checkStepIndex,
  f32,
  interpIndex,
  karrasSigmas,
  npLinspace,
  type PredictionType,
  roundHalfEven,
  type SchedulerConfig,
  sigmaSchedule,
  sigmaToT,
  TRAIN_DEFAULTS,
} from "./common.ts";

export const MULTISTEP_DEFAULTS = {
  ...TRAIN_DEFAULTS,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  lower_order_final: true,
  use_karras_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
};

/** VP coefficients of a σ: α = 1/√(σ² + 1), σ_t = σ·α, λ = log α − log σ_t. */
export function alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}

/** x₀ from the model output at σ (data prediction). */
export function toX0(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  sigma: number,
): Float32Array {
  const { alpha, sigmaT } = alphaSigma(sigma);
  const out = new Float32Array(sample.length);
  for (let i = 0; i < out.length; i++) {
    if (prediction === "epsilon") out[i] = (sample[i] - sigmaT * modelOutput[i]) / alpha;
    else if (prediction === "sample") out[i] = modelOutput[i];
    else out[i] = alpha * sample[i] - sigmaT * modelOutput[i];
  }
  return out;
}

/** toX0's coefficients: x₀ = x·x + e·modelOutput at σ. */
export function x0Of(prediction: PredictionType, sigma: number): { x: number; e: number } {
  const { alpha, sigmaT } = alphaSigma(sigma);
  if (prediction === "epsilon") return { x: 1 / alpha, e: -sigmaT / alpha };
  if (prediction === "sample") return { x: 0, e: 1 };
  return { x: alpha, e: -sigmaT };
}

export abstract class MultistepScheduler extends SchedulerBase {
  readonly alphasCumprod: Float32Array;
  readonly trainSigmas: Float32Array;
  sigmas: number[] = [];
  readonly initNoiseSigma = 1;
  /** The last `solver_order` x₀ predictions, oldest first. */
  protected modelOutputs: (Float32Array | null)[] = [];
  protected lowerOrderNums = 0;

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    super(className, defaults, given);
    ({ alphasCumprod: this.alphasCumprod, trainSigmas: this.trainSigmas } = sigmaSchedule(this.config));
    const order = this.config.solver_order as number;
    if (order !== 1 && order !== 2) {
      throw new Error(`${className}: solver_order ${order} unsupported (1 or 2)`);
    }
  }

  /** α_σ·x + σ_σ·noise at σ = sigmas[stepIndex] (diffusers' add_noise with begin_index = stepIndex). */
  addNoise(original: Float32Array, noise: Float32Array, stepIndex: number): Float32Array {
    checkStepIndex(this, stepIndex);
    const { alpha, sigmaT } = alphaSigma(this.sigmas[stepIndex]);
    checkSameLength(original, noise, "addNoise");
    return addNoiseSigma(original.map((v) => v * alpha), noise, sigmaT);
  }

  addNoiseCoefficients(stepIndex: number): { original: number; noise: number } {
    checkStepIndex(this, stepIndex);
    const { alpha, sigmaT } = alphaSigma(this.sigmas[stepIndex]);
    return { original: alpha, noise: sigmaT };
  }

  /**
   * Integer timesteps (linspace: round(linspace(0, last − 1, N + 1)) reversed without the final 0; leading:
   * arange(N + 1)·(last // (N + 1)) reversed without 0, + offset; trailing: round(arange(T, 0, −T/N)) − 1)
   * and their σ: interpolated, or Karras-spaced with timesteps rounded from log-σ interpolation.
   */
  protected baseSchedule(n: number, lastTimestep: number): { timesteps: number[]; sigmas: number[] } {
    const T = this.config.num_train_timesteps;
    let timesteps: number[];
    if (this.config.timestep_spacing === "linspace") {
      timesteps = npLinspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (this.config.timestep_spacing === "leading") {
      const ratio = Math.floor(lastTimestep / (n + 1));
      timesteps = Array.from({ length: n + 1 }, (_, i) => (n - i) * ratio).slice(0, -1)
        .map((t) => t + this.config.steps_offset);
    } else {
      timesteps = arangeDown(lastTimestep, T / n).map((t) => roundHalfEven(t) - 1);
    }
    let sigmas: number[];
    if (this.config.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map((s) => f32(Math.log(s)));
      // in_sigmas = flipped σ table: σ_min = σ(0), σ_max = σ(T − 1) (config sigma_min/max if the class has them)
      const sigmaMin = (this.config.sigma_min as number | null | undefined) ?? this.trainSigmas[0];
      const sigmaMax = (this.config.sigma_max as number | null | undefined) ?? this.trainSigmas[T - 1];
      sigmas = karrasSigmas(sigmaMin, sigmaMax, n);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    }
    return { timesteps, sigmas };
  }

  protected resetState(): void {
    this.modelOutputs = new Array(this.config.solver_order as number).fill(null);
    this.lowerOrderNums = 0;
  }

  protected pushModelOutput(x0: Float32Array): void {
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);
  }
}
