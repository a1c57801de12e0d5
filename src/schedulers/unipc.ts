// UniPCMultistepScheduler (diffusers 0.27.2): a predictor-corrector multistep solver, bh2 (or bh1), predict_x0.

import {
  checkSameLength,
  checkStepIndex,
  f32,
  type NoiseSource,
  type SchedulerConfig,
  type StepResult,
} from "./common.ts";
import { type LinearSchedule, type LinearStep, slot, type Terms } from "./linear.ts";
import { alphaSigma, MULTISTEP_DEFAULTS, MultistepScheduler, toX0, x0Of } from "./multistep.ts";

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
      ...MULTISTEP_DEFAULTS,
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

  /**
   * The scalars of an update from σ index `from` to `from + 1` (the predictor's from its step, the corrector's
   * from the step before): sampleCoeff = σ_t/σ_s0, m0Coeff = α_t·φ₁ with hh = −h and φ₁ = expm1(hh),
   * a = α_t·B(h) (bh1: hh, bh2: expm1(hh)), the b vector for `order`, and at order 2 rk, the older x₀'s step
   * (λ(σ[from − 1]) − λ_s0)/h.
   */
  private coefficients(from: number, order: number) {
    const t = alphaSigma(this.sigmas[from + 1]);
    const s0 = alphaSigma(this.sigmas[from]);
    const h = t.lambda - s0.lambda;
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
    return {
      sampleCoeff: t.sigmaT / s0.sigmaT,
      m0Coeff: t.alpha * hPhi1,
      a: t.alpha * bH,
      b,
      rk: order === 2 ? (alphaSigma(this.sigmas[from - 1]).lambda - s0.lambda) / h : 1,
    };
  }

  private predictor(x: Float32Array, stepIndex: number, order: number): Float32Array {
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const { sampleCoeff, m0Coeff, a, rk } = this.coefficients(stepIndex, order);
    const out = new Float32Array(x.length);
    if (order === 1) {
      for (let i = 0; i < out.length; i++) out[i] = sampleCoeff * x[i] - m0Coeff * m0[i];
      return out;
    }
    // order 2: rhos_p = [0.5], D1 = (m1 − m0) / r1
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const resCoeff = a * 0.5;
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
    const { sampleCoeff, m0Coeff, a, b, rk } = this.coefficients(stepIndex - 1, order);
    const out = new Float32Array(lastSample.length);
    if (order === 1) {
      const rho = 0.5;
      for (let i = 0; i < out.length; i++) {
        out[i] = sampleCoeff * lastSample[i] - m0Coeff * m0[i] - a * (rho * (modelT[i] - m0[i]));
      }
      return out;
    }
    // order 2: solve [[1, 1], [rk, 1]]·ρ = b
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const rho0 = (b[0] - b[1]) / (1 - rk);
    const rho1 = b[0] - rho0;
    for (let i = 0; i < out.length; i++) {
      const d1 = (m1[i] - m0[i]) / rk;
      const corr = rho0 * d1 + rho1 * (modelT[i] - m0[i]);
      out[i] = sampleCoeff * lastSample[i] - m0Coeff * m0[i] - a * corr;
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
    const { sampleCoeff, m0Coeff, a, rk } = this.coefficients(stepIndex, order);
    if (order === 1) return { y: sampleCoeff, x0: -m0Coeff };
    // D1 = (m1 − m0)/rk
    const res = a * 0.5 / rk;
    return slot(1, -res, { y: sampleCoeff, x0: -m0Coeff + res });
  }

  /** corrector() of x₀ from last_sample (slot 0), m0 = slot 1, m1 = slot 2. */
  private correctorTerms(stepIndex: number, order: number): Terms {
    const { sampleCoeff, m0Coeff, a, b, rk } = this.coefficients(stepIndex - 1, order);
    if (order === 1) return { h: [sampleCoeff, -m0Coeff + 0.5 * a], x0: -0.5 * a };
    // corr = ρ0·(m1 − m0)/rk + ρ1·(x₀ − m0)
    const rho0 = (b[0] - b[1]) / (1 - rk);
    const rho1 = b[0] - rho0;
    return { h: [sampleCoeff, -m0Coeff + a * (rho0 / rk + rho1), -a * rho0 / rk], x0: -a * rho1 };
  }
}
