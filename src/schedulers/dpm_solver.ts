// DPMSolverMultistepScheduler (diffusers 0.27.2), dpmsolver++: SD's "DPM++ 2M" (and its Karras variant).

import {
  checkSameLength,
  checkStepIndex,
  f32,
  type NoiseSource,
  type SchedulerConfig,
  type StepResult,
} from "./common.ts";
import { type LinearSchedule, type LinearStep, slot } from "./linear.ts";
import { alphaSigma, MULTISTEP_DEFAULTS, MultistepScheduler, toX0, x0Of } from "./multistep.ts";

/**
 * DPMSolverMultistepScheduler, algorithm_type dpmsolver++ (data prediction), solver_type midpoint or heun,
 * final_sigmas_type zero (default) or sigma_min. The first step and the last (lower_order_final with fewer than
 * 15 steps, or final σ = 0) are first order. `createScheduler` sets dpmsolver++/order 2 as SD's "DPM++ 2M".
 */
export class DpmSolverMultistepScheduler extends MultistepScheduler {
  readonly className = "DPMSolverMultistepScheduler";

  constructor(config: SchedulerConfig, overrides: Record<string, unknown> = {}) {
    super("DPMSolverMultistepScheduler", {
      ...MULTISTEP_DEFAULTS,
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

  /**
   * Whether evaluation `i` updates at second order, given `earlier` x₀ predictions before its own. First
   * order: solver_order 1, the first evaluation, and the lower-order final one. (diffusers'
   * lower_order_second only chooses between orders 2 and 3; solver_order ≤ 2 here.)
   */
  private secondOrder(i: number, earlier: number): boolean {
    const n = this.timesteps.length;
    const c = this.config;
    const lowerOrderFinal = i === n - 1 &&
      (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    return !(c.solver_order === 1 || earlier < 1 || lowerOrderFinal);
  }

  /**
   * The scalars of evaluation `i`: prev = sampleCoeff·x − x0Coeff·x₀, at second order also − d1Coeff·D1 with
   * D1 = (x₀ − previous x₀)/r0.
   */
  private coefficients(i: number, secondOrder: boolean) {
    const t = alphaSigma(this.sigmas[i + 1]);
    const s0 = alphaSigma(this.sigmas[i]);
    const h = t.lambda - s0.lambda;
    const expm = Math.exp(-h) - 1;
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const x0Coeff = t.alpha * expm;
    if (!secondOrder) return { sampleCoeff, x0Coeff, d1Coeff: 0, r0: 1 };
    const r0 = (s0.lambda - alphaSigma(this.sigmas[i - 1]).lambda) / h;
    const d1Coeff = this.config.solver_type === "midpoint"
      ? 0.5 * t.alpha * expm
      : -(t.alpha * (expm / h + 1));
    return { sampleCoeff, x0Coeff, d1Coeff, r0 };
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, _noise: NoiseSource): StepResult {
    checkStepIndex(this, stepIndex);
    checkSameLength(modelOutput, sample, "step");
    const c = this.config;
    const x0 = toX0(c.prediction_type, modelOutput, sample, this.sigmas[stepIndex]);
    this.pushModelOutput(x0);
    const secondOrder = this.secondOrder(stepIndex, this.lowerOrderNums);
    const { sampleCoeff, x0Coeff, d1Coeff, r0 } = this.coefficients(stepIndex, secondOrder);
    const prevSample = new Float32Array(sample.length);
    if (!secondOrder) {
      for (let i = 0; i < sample.length; i++) prevSample[i] = sampleCoeff * sample[i] - x0Coeff * x0[i];
    } else {
      const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
      for (let i = 0; i < sample.length; i++) {
        const d1 = (1 / r0) * (x0[i] - m1[i]);
        prevSample[i] = sampleCoeff * sample[i] - x0Coeff * x0[i] - d1Coeff * d1;
      }
    }
    if (this.lowerOrderNums < (c.solver_order as number)) this.lowerOrderNums++;
    return { prevSample };
  }

  /**
   * step()'s updates; slot 0 keeps the previous x₀. First order on the first evaluation from `startIndex`
   * (lower_order_nums 0) and the lower-order final one; otherwise y = D1 = (x₀ − previous x₀)/r0.
   */
  linearSchedule(startIndex: number): LinearSchedule {
    checkStepIndex(this, startIndex);
    const steps: LinearStep[] = [];
    for (let i = startIndex, k = 0; i < this.timesteps.length; i++, k++) {
      const secondOrder = this.secondOrder(i, k);
      const { sampleCoeff, x0Coeff, d1Coeff, r0 } = this.coefficients(i, secondOrder);
      const step: LinearStep = {
        inputDivisor: 1,
        x0: x0Of(this.config.prediction_type, this.sigmas[i]),
        out: { x: sampleCoeff, x0: -x0Coeff },
        store: [{ x0: 1 }],
        drawsNoise: false,
      };
      if (secondOrder) {
        step.y = slot(0, -1 / r0, { x0: 1 / r0 });
        step.out = { x: sampleCoeff, x0: -x0Coeff, y: -d1Coeff };
      }
      steps.push(step);
    }
    return { slots: 1, steps };
  }
}
