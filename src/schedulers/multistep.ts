// Multistep exponential-integrator solvers on the VP scale: DPM-Solver++ (2M, optionally Karras) and UniPC
// (bh2, predict_x0), diffusers 0.27.2. init_noise_sigma = 1 and scale_model_input is the identity; both
// convert the model output to x₀ and keep the last `solver_order` conversions. Neither draws noise.

import {
  addNoiseSigma,
  arangeDown,
  betaSchedule,
  checkSameLength,
  checkStepIndex,
  f32,
  interpIndex,
  karrasSigmas,
  type NoiseSource,
  npLinspace,
  type PredictionType,
  resolveConfig,
  type ResolvedConfig,
  roundHalfEven,
  type Scheduler,
  type SchedulerConfig,
  sigmaTable,
  sigmaToT,
  type StepResult,
} from "./common.ts";
import { type LinearSchedule, type LinearStep, slot, type Terms } from "./linear.ts";

const BASE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
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
function alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}

/** x₀ from the model output at σ (data prediction). */
function toX0(prediction: PredictionType, modelOutput: Float32Array, sample: Float32Array, sigma: number) {
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
function x0Of(prediction: PredictionType, sigma: number): { x: number; e: number } {
  const { alpha, sigmaT } = alphaSigma(sigma);
  if (prediction === "epsilon") return { x: 1 / alpha, e: -sigmaT / alpha };
  if (prediction === "sample") return { x: 0, e: 1 };
  return { x: alpha, e: -sigmaT };
}

abstract class MultistepScheduler implements Scheduler {
  abstract readonly className: string;
  readonly config: ResolvedConfig;
  readonly alphasCumprod: Float32Array;
  readonly trainSigmas: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  readonly initNoiseSigma = 1;
  readonly order: number = 1;
  numInferenceSteps = 0;
  /** The last `solver_order` x₀ predictions, oldest first. */
  protected modelOutputs: (Float32Array | null)[] = [];
  protected lowerOrderNums = 0;

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    this.config = resolveConfig(className, defaults, given);
    this.alphasCumprod = betaSchedule(this.config).alphasCumprod;
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = sigmaTable(this.alphasCumprod);
    const order = this.config.solver_order as number;
    if (order !== 1 && order !== 2) {
      throw new Error(`${className}: solver_order ${order} unsupported (1 or 2)`);
    }
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

  abstract linearSchedule(startIndex: number): LinearSchedule;

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

/**
 * DPMSolverMultistepScheduler, algorithm_type dpmsolver++ (data prediction), solver_type midpoint or heun,
 * final_sigmas_type zero (default) or sigma_min. The first step and the last (lower_order_final with fewer than
 * 15 steps, or final σ = 0) are first order. `createScheduler` sets dpmsolver++/order 2 as SD's "DPM++ 2M".
 */
export class DpmSolverMultistepScheduler extends MultistepScheduler {
  readonly className = "DPMSolverMultistepScheduler";

  constructor(config: SchedulerConfig, overrides: Record<string, unknown> = {}) {
    super("DPMSolverMultistepScheduler", {
      ...BASE_DEFAULTS,
      algorithm_type: "dpmsolver++",
      solver_type: "midpoint",
      euler_at_final: false,
      use_lu_lambdas: false,
      final_sigmas_type: "zero",
      lambda_min_clipped: -Infinity,
      variance_type: null,
      rescale_betas_zero_snr: false,
    }, { ...config, ...overrides });
    const c = this.config;
    if (c.algorithm_type !== "dpmsolver++") {
      throw new Error(
        `DPMSolverMultistepScheduler: algorithm_type ${c.algorithm_type} unsupported (dpmsolver++)`,
      );
    }
    if (c.solver_type !== "midpoint" && c.solver_type !== "heun") {
      throw new Error(`DPMSolverMultistepScheduler: solver_type ${c.solver_type} unsupported`);
    }
    if (c.use_lu_lambdas) throw new Error("DPMSolverMultistepScheduler: use_lu_lambdas unsupported");
    if (c.final_sigmas_type !== "zero" && c.final_sigmas_type !== "sigma_min") {
      throw new Error(`DPMSolverMultistepScheduler: final_sigmas_type ${c.final_sigmas_type} unsupported`);
    }
  }

  setTimesteps(n: number): void {
    const T = this.config.num_train_timesteps;
    // last_timestep = T − searchsorted(flip(λ_t), lambda_min_clipped)
    const lambdaMin = this.config.lambda_min_clipped as number;
    let clipped = 0;
    for (let t = T - 1; t >= 0; t--) {
      const a = this.alphasCumprod[t];
      const lambda = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
      if (lambda < lambdaMin) clipped++;
      else break;
    }
    const { timesteps, sigmas } = this.baseSchedule(n, T - clipped);
    const last = this.config.final_sigmas_type === "zero" ? 0 : this.trainSigmas[0];
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, last].map(f32);
    this.numInferenceSteps = timesteps.length;
    this.resetState();
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, _noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const n = this.timesteps.length;
    const c = this.config;
    const lowerOrderFinal = stepIndex === n - 1 &&
      (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    // (diffusers' lower_order_second only chooses between orders 2 and 3; solver_order ≤ 2 here)
    const x0 = toX0(c.prediction_type, modelOutput, sample, this.sigmas[stepIndex]);
    this.pushModelOutput(x0);
    const firstOrder = c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal;
    const prevSample = firstOrder
      ? this.firstOrderUpdate(x0, stepIndex, sample)
      : this.secondOrderUpdate(stepIndex, sample);
    if (this.lowerOrderNums < (c.solver_order as number)) this.lowerOrderNums++;
    return { prevSample };
  }

  private firstOrderUpdate(x0: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    const t = alphaSigma(this.sigmas[stepIndex + 1]);
    const s = alphaSigma(this.sigmas[stepIndex]);
    const h = t.lambda - s.lambda;
    const sampleCoeff = t.sigmaT / s.sigmaT;
    const x0Coeff = t.alpha * (Math.exp(-h) - 1);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) out[i] = sampleCoeff * sample[i] - x0Coeff * x0[i];
    return out;
  }

  private secondOrderUpdate(stepIndex: number, sample: Float32Array): Float32Array {
    const t = alphaSigma(this.sigmas[stepIndex + 1]);
    const s0 = alphaSigma(this.sigmas[stepIndex]);
    const s1 = alphaSigma(this.sigmas[stepIndex - 1]);
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const h = t.lambda - s0.lambda;
    const h0 = s0.lambda - s1.lambda;
    const r0 = h0 / h;
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const expm = Math.exp(-h) - 1;
    const d0Coeff = t.alpha * expm;
    const d1Coeff = this.config.solver_type === "midpoint"
      ? 0.5 * t.alpha * expm
      : -(t.alpha * (expm / h + 1));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const d1 = (1 / r0) * (m0[i] - m1[i]);
      out[i] = sampleCoeff * sample[i] - d0Coeff * m0[i] - d1Coeff * d1;
    }
    return out;
  }

  /**
   * step()'s updates; slot 0 keeps the previous x₀. First order on the first evaluation from `startIndex`
   * (lower_order_nums 0) and the lower-order final one; otherwise y = D1 = (x₀ − previous x₀)/r0.
   */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const n = this.timesteps.length;
    const c = this.config;
    const steps: LinearStep[] = [];
    for (let i = startIndex, k = 0; i < n; i++, k++) {
      const lowerOrderFinal = i === n - 1 &&
        (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
      const firstOrder = c.solver_order === 1 || k < 1 || lowerOrderFinal;
      const t = alphaSigma(this.sigmas[i + 1]);
      const s0 = alphaSigma(this.sigmas[i]);
      const h = t.lambda - s0.lambda;
      const sampleCoeff = t.sigmaT / s0.sigmaT;
      const expm = Math.exp(-h) - 1;
      const step: LinearStep = {
        inputDivisor: 1,
        x0: x0Of(c.prediction_type, this.sigmas[i]),
        out: { x: sampleCoeff, x0: -(t.alpha * expm) },
        store: [{ x0: 1 }],
        drawsNoise: false,
      };
      if (!firstOrder) {
        const s1 = alphaSigma(this.sigmas[i - 1]);
        const r0 = (s0.lambda - s1.lambda) / h;
        const d1Coeff = c.solver_type === "midpoint" ? 0.5 * t.alpha * expm : -(t.alpha * (expm / h + 1));
        step.y = slot(0, -1 / r0, { x0: 1 / r0 });
        step.out = { x: sampleCoeff, x0: -(t.alpha * expm), y: -d1Coeff };
      }
      steps.push(step);
    }
    return { slots: 1, steps };
  }
}

/**
 * UniPCMultistepScheduler, bh2 (or bh1), predict_x0: a predictor (UniP) each step and a corrector (UniC) that
 * first refines the incoming sample with the new model output (from the second step on, except indices in
 * disable_corrector). The last σ is σ(t = 0), not 0.
 */
export class UniPcMultistepScheduler extends MultistepScheduler {
  readonly className = "UniPCMultistepScheduler";
  private lastSample: Float32Array | null = null;
  private thisOrder = 1;

  constructor(config: SchedulerConfig) {
    super("UniPCMultistepScheduler", {
      ...BASE_DEFAULTS,
      predict_x0: true,
      solver_type: "bh2",
      disable_corrector: [],
      solver_p: null,
    }, config);
    const c = this.config;
    if (!c.predict_x0) throw new Error("UniPCMultistepScheduler: predict_x0 = false unsupported");
    if (c.solver_type !== "bh1" && c.solver_type !== "bh2") {
      throw new Error(`UniPCMultistepScheduler: solver_type ${c.solver_type} unsupported`);
    }
    if (c.solver_p) throw new Error("UniPCMultistepScheduler: solver_p unsupported");
  }

  setTimesteps(n: number): void {
    const T = this.config.num_train_timesteps;
    const { timesteps, sigmas } = this.baseSchedule(n, T);
    const last = this.config.use_karras_sigmas ? sigmas[sigmas.length - 1] : this.trainSigmas[0];
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, last].map(f32);
    this.numInferenceSteps = timesteps.length;
    this.resetState();
    this.lastSample = null;
    this.thisOrder = 1;
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, _noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const c = this.config;
    const disabled = c.disable_corrector as number[];
    const useCorrector = stepIndex > 0 && !disabled.includes(stepIndex - 1) && this.lastSample !== null;
    const x0 = toX0(c.prediction_type, modelOutput, sample, this.sigmas[stepIndex]);
    let base = sample;
    if (useCorrector) base = this.corrector(x0, this.lastSample!, stepIndex, this.thisOrder);
    this.pushModelOutput(x0);
    const solverOrder = c.solver_order as number;
    const order = c.lower_order_final
      ? Math.min(solverOrder, this.timesteps.length - stepIndex)
      : solverOrder;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.lastSample = base;
    const prevSample = this.predictor(base, stepIndex, this.thisOrder);
    if (this.lowerOrderNums < solverOrder) this.lowerOrderNums++;
    return { prevSample };
  }

  /** hh = −h, φ₁ = expm1(hh), B(h) (bh1: hh, bh2: expm1(hh)) and the b vector for `order`. */
  private coefficients(h: number, order: number) {
    const hh = -h;
    const hPhi1 = Math.expm1(hh);
    const bH = this.config.solver_type === "bh1" ? hh : Math.expm1(hh);
    let hPhiK = hPhi1 / hh - 1;
    let factorial = 1;
    const b: number[] = [];
    for (let i = 1; i <= order; i++) {
      b.push((hPhiK * factorial) / bH);
      factorial *= i + 1;
      hPhiK = hPhiK / hh - 1 / factorial;
    }
    return { hPhi1, bH, b };
  }

  private predictor(x: Float32Array, stepIndex: number, order: number): Float32Array {
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const t = alphaSigma(this.sigmas[stepIndex + 1]);
    const s0 = alphaSigma(this.sigmas[stepIndex]);
    const h = t.lambda - s0.lambda;
    const { hPhi1, bH } = this.coefficients(h, order);
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const m0Coeff = t.alpha * hPhi1;
    const out = new Float32Array(x.length);
    if (order === 1) {
      for (let i = 0; i < out.length; i++) out[i] = sampleCoeff * x[i] - m0Coeff * m0[i];
      return out;
    }
    // order 2: rhos_p = [0.5], D1 = (m1 − m0) / r1
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const rk = (alphaSigma(this.sigmas[stepIndex - 1]).lambda - s0.lambda) / h;
    const resCoeff = t.alpha * bH * 0.5;
    for (let i = 0; i < out.length; i++) {
      const d1 = (m1[i] - m0[i]) / rk;
      out[i] = sampleCoeff * x[i] - m0Coeff * m0[i] - resCoeff * d1;
    }
    return out;
  }

  /** UniC: corrects `thisSample` (the incoming x at stepIndex) using its x₀ `modelT`, from `lastSample`. */
  private corrector(
    modelT: Float32Array,
    lastSample: Float32Array,
    stepIndex: number,
    order: number,
  ): Float32Array {
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const t = alphaSigma(this.sigmas[stepIndex]);
    const s0 = alphaSigma(this.sigmas[stepIndex - 1]);
    const h = t.lambda - s0.lambda;
    const { hPhi1, bH, b } = this.coefficients(h, order);
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const m0Coeff = t.alpha * hPhi1;
    const out = new Float32Array(lastSample.length);
    if (order === 1) {
      const rho = 0.5;
      for (let i = 0; i < out.length; i++) {
        out[i] = sampleCoeff * lastSample[i] - m0Coeff * m0[i] - t.alpha * bH * (rho * (modelT[i] - m0[i]));
      }
      return out;
    }
    // order 2: solve [[1, 1], [rk, 1]]·ρ = b
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const rk = (alphaSigma(this.sigmas[stepIndex - 2]).lambda - s0.lambda) / h;
    const rho0 = (b[0] - b[1]) / (1 - rk);
    const rho1 = b[0] - rho0;
    for (let i = 0; i < out.length; i++) {
      const d1 = (m1[i] - m0[i]) / rk;
      const corr = rho0 * d1 + rho1 * (modelT[i] - m0[i]);
      out[i] = sampleCoeff * lastSample[i] - m0Coeff * m0[i] - t.alpha * bH * corr;
    }
    return out;
  }

  /**
   * step()'s updates. Slots: 0 the last corrected sample (last_sample), 1 the previous x₀, 2 the one before.
   * y = the corrector's sample (UniC; x itself on the first evaluation from `startIndex` or where disabled),
   * out = the predictor from y. this_order carries over from one evaluation to the next as in step().
   */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const c = this.config;
    const n = this.timesteps.length;
    const solverOrder = c.solver_order as number;
    const disabled = c.disable_corrector as number[];
    const steps: LinearStep[] = [];
    let lowerOrderNums = 0;
    let thisOrder = 1;
    for (let i = startIndex, k = 0; i < n; i++, k++) {
      const y = k > 0 && !disabled.includes(i - 1) ? this.correctorTerms(i, thisOrder) : { x: 1 };
      const order = c.lower_order_final ? Math.min(solverOrder, n - i) : solverOrder;
      thisOrder = Math.min(order, lowerOrderNums + 1);
      steps.push({
        inputDivisor: 1,
        x0: x0Of(c.prediction_type, this.sigmas[i]),
        y,
        out: this.predictorTerms(i, thisOrder),
        store: [{ y: 1 }, { x0: 1 }, slot(1, 1)],
        drawsNoise: false,
      });
      if (lowerOrderNums < solverOrder) lowerOrderNums++;
    }
    return { slots: 3, steps };
  }

  /** predictor() from y with m0 = x₀ and m1 = slot 1. */
  private predictorTerms(stepIndex: number, order: number): Terms {
    const t = alphaSigma(this.sigmas[stepIndex + 1]);
    const s0 = alphaSigma(this.sigmas[stepIndex]);
    const h = t.lambda - s0.lambda;
    const { hPhi1, bH } = this.coefficients(h, order);
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const m0Coeff = t.alpha * hPhi1;
    if (order === 1) return { y: sampleCoeff, x0: -m0Coeff };
    // D1 = (m1 − m0)/rk
    const rk = (alphaSigma(this.sigmas[stepIndex - 1]).lambda - s0.lambda) / h;
    const res = t.alpha * bH * 0.5 / rk;
    return slot(1, -res, { y: sampleCoeff, x0: -m0Coeff + res });
  }

  /** corrector() of x₀ from last_sample (slot 0), m0 = slot 1, m1 = slot 2. */
  private correctorTerms(stepIndex: number, order: number): Terms {
    const t = alphaSigma(this.sigmas[stepIndex]);
    const s0 = alphaSigma(this.sigmas[stepIndex - 1]);
    const h = t.lambda - s0.lambda;
    const { hPhi1, bH, b } = this.coefficients(h, order);
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const m0Coeff = t.alpha * hPhi1;
    const a = t.alpha * bH;
    if (order === 1) return { h: [sampleCoeff, -m0Coeff + 0.5 * a], x0: -0.5 * a };
    // corr = ρ0·(m1 − m0)/rk + ρ1·(x₀ − m0)
    const rk = (alphaSigma(this.sigmas[stepIndex - 2]).lambda - s0.lambda) / h;
    const rho0 = (b[0] - b[1]) / (1 - rk);
    const rho1 = b[0] - rho0;
    return { h: [sampleCoeff, -m0Coeff + a * (rho0 / rk + rho1), -a * rho0 / rk], x0: -a * rho1 };
  }
}
