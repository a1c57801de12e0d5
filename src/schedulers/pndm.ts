// PNDMScheduler (diffusers 0.27.2) with skip_prk_steps: PLMS, a linear multistep method on the ᾱ scale.

import { ALPHA_DEFAULTS, AlphaScheduler } from "./alpha.ts";
import {
  checkSameLength,
  checkStepIndex,
  type NoiseSource,
  type SchedulerConfig,
  spacedTimesteps,
  type StepResult,
} from "./common.ts";
import { type LinearSchedule, type LinearStep, slot, type Terms } from "./linear.ts";

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
    super("PNDMScheduler", { ...ALPHA_DEFAULTS, skip_prk_steps: false, set_alpha_to_one: false }, config);
    if (!this.config.skip_prk_steps) {
      throw new Error(
        "PNDMScheduler: only skip_prk_steps = true (PLMS, as every Stable Diffusion config sets) is supported",
      );
    }
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  override setTimesteps(n: number): void {
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
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
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
    const prevSample = this.prevSample(base, stepIndex, eps);
    this.counter++;
    return { prevSample };
  }

  /**
   * The scalars of evaluation `i` at counter `c` (evaluations since the run started): prev =
   * sampleCoeff·x − outCoeff·ε from t to t − T // N; at c = 1 it redoes t + T // N → t.
   */
  private coefficients(i: number, c: number) {
    if (this.config.prediction_type === "sample") throw new Error("PNDMScheduler: prediction_type sample");
    const stride = this.stride();
    const t = c === 1 ? this.timesteps[i] + stride : this.timesteps[i];
    const prevT = c === 1 ? this.timesteps[i] : t - stride;
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProd(prevT, this.finalAlphaCumprod);
    const betaProdT = 1 - alphaProdT;
    const denom = alphaProdT * Math.sqrt(1 - alphaProdPrev) +
      Math.sqrt(alphaProdT * betaProdT * alphaProdPrev);
    return {
      alphaProdT,
      betaProdT,
      sampleCoeff: Math.sqrt(alphaProdPrev / alphaProdT),
      outCoeff: (alphaProdPrev - alphaProdT) / denom,
    };
  }

  private prevSample(sample: Float32Array, stepIndex: number, modelOutput: Float32Array): Float32Array {
    const { alphaProdT, betaProdT, sampleCoeff, outCoeff } = this.coefficients(stepIndex, this.counter);
    const vPred = this.config.prediction_type === "v_prediction";
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
      // prev = sampleCoeff·base − outCoeff·ε', ε' = ε (or √ᾱ·ε + √(1 − ᾱ)·base for v-prediction)
      const { alphaProdT, betaProdT, sampleCoeff, outCoeff } = this.coefficients(i, c);
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

/** Σ weights[k]·arrays[k], element-wise. */
function combine(arrays: Float32Array[], weights: number[]): Float32Array {
  const out = new Float32Array(arrays[0].length);
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (let k = 0; k < arrays.length; k++) acc += weights[k] * arrays[k][i];
    out[i] = acc;
  }
  return out;
}
