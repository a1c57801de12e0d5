// Shared pieces of the diffusers (0.27.2) scheduler ports: config resolution with per-class defaults, the
// float32 beta / ᾱ tables, timestep spacings, the σ table, Karras sigmas, and small numpy look-alikes.
//
// Numerics: the tables diffusers keeps in float32 (betas, ᾱ, σ, float timesteps) are rounded to float32 here
// too, so timesteps match exactly and sigmas to float32 rounding. Per-step scalar and element-wise math runs
// in float64 and is stored as float32; against diffusers' float32 arithmetic that is ≲1e-6 relative.

import type { PredictionType } from "../models/family.ts";
import type { LinearSchedule } from "./linear.ts";

// Re-exported so the scheduler ports keep one import site for their types.
export type { PredictionType };

/** A diffusers scheduler config as found in `scheduler/scheduler_config.json` (unknown keys are ignored). */
export interface SchedulerConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: "linear" | "scaled_linear" | "squaredcos_cap_v2" | string;
  trained_betas?: number[] | null;
  prediction_type?: PredictionType | string;
  timestep_spacing?: TimestepSpacing | string;
  steps_offset?: number;
  set_alpha_to_one?: boolean;
  skip_prk_steps?: boolean;
  clip_sample?: boolean;
  clip_sample_range?: number;
  thresholding?: boolean;
  rescale_betas_zero_snr?: boolean;
  variance_type?: string | null;
  use_karras_sigmas?: boolean;
  sigma_min?: number | null;
  sigma_max?: number | null;
  interpolation_type?: string;
  timestep_type?: string;
  solver_order?: number;
  algorithm_type?: string;
  solver_type?: string;
  lower_order_final?: boolean;
  euler_at_final?: boolean;
  use_lu_lambdas?: boolean;
  final_sigmas_type?: string;
  lambda_min_clipped?: number;
  predict_x0?: boolean;
  disable_corrector?: number[];
  solver_p?: unknown;
  original_inference_steps?: number;
  timestep_scaling?: number;
  [key: string]: unknown;
}

export type TimestepSpacing = "leading" | "linspace" | "trailing";

/** Result of one `step()`. `predOriginal` is diffusers' `pred_original_sample` (LCM: `denoised`). */
export interface StepResult {
  prevSample: Float32Array;
  predOriginal?: Float32Array;
}

/**
 * Draws one noise tensor the size of the sample from the pipeline's shared generator
 * (`() => generator.randn(latentShape)`), so draws interleave with the rest of the pipeline as in diffusers.
 */
export type NoiseSource = () => Float32Array;

export interface Scheduler {
  /** diffusers class name this ports (e.g. "EulerDiscreteScheduler"). */
  readonly className: string;
  /** The effective config: the class's defaults overlaid with the keys of the given config it knows. */
  readonly config: Readonly<ResolvedConfig>;
  /**
   * Timestep of each model evaluation after `setTimesteps` (diffusers' `scheduler.timesteps`). Its length is the
   * number of UNet evaluations: PNDM repeats its second timestep (N + 1 for N ≥ 2), Heun doubles all but the first
   * (2N − 1). Euler/Euler-a/Heun timesteps are float32 values (possibly fractional), the others integers.
   */
  readonly timesteps: readonly number[];
  /** σ per evaluation (+ final entry) for the schedulers that have them, else undefined. */
  readonly sigmas: readonly number[] | undefined;
  /** Multiply the initial Gaussian latents by this (after `setTimesteps`). */
  readonly initNoiseSigma: number;
  /** diffusers' `scheduler.order` (2 for Heun, 1 otherwise); img2img slices timesteps at `tStart · order`. */
  readonly order: number;
  readonly numInferenceSteps: number;
  /** Builds the schedule and resets all multistep state. */
  setTimesteps(numInferenceSteps: number): void;
  /** `scale_model_input`: input of the UNet for evaluation `stepIndex`. May return `sample` itself (identity). */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array;
  /**
   * One update from evaluation `stepIndex` (an index into `timesteps`). Call with consecutive indices, starting
   * at 0 (or the img2img start index). `noise` is called exactly as often as diffusers draws (see each class).
   */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise: NoiseSource): StepResult;
  /** img2img: noise `original` to the level of evaluation `stepIndex` (diffusers' `add_noise`). */
  addNoise(original: Float32Array, noise: Float32Array, stepIndex: number): Float32Array;
  /** addNoise's scalars at evaluation `stepIndex`: original·`original` + noise·`noise`. */
  addNoiseCoefficients(stepIndex: number): { original: number; noise: number };
  /**
   * Evaluations `startIndex`… as elementwise linear updates (linear.ts) for the GPU sampler: the same
   * scalars step() uses, in the same order of states. Pure: step()'s state is untouched.
   */
  linearSchedule(startIndex: number): LinearSchedule;
}

export interface ResolvedConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  [key: string]: unknown;
}

/** Overlays `given` onto the class defaults, keeping only keys the class knows (like `from_config`). */
export function resolveConfig(
  className: string,
  defaults: Record<string, unknown>,
  given: SchedulerConfig,
  overrides: Record<string, unknown> = {},
): ResolvedConfig {
  const out: Record<string, unknown> = { rescale_betas_zero_snr: false, ...defaults };
  for (const source of [given, overrides]) {
    for (const [key, value] of Object.entries(source)) {
      if (key in defaults && value !== undefined) out[key] = value;
    }
  }
  const config = out as ResolvedConfig;
  if (!["epsilon", "v_prediction", "sample"].includes(config.prediction_type)) {
    throw new Error(`${className}: unsupported prediction_type ${JSON.stringify(config.prediction_type)}`);
  }
  if (!["leading", "linspace", "trailing"].includes(config.timestep_spacing)) {
    throw new Error(`${className}: unsupported timestep_spacing ${JSON.stringify(config.timestep_spacing)}`);
  }
  if (config.thresholding === true) throw new Error(`${className}: thresholding is not supported`);
  return config;
}

/** diffusers' training β defaults, the start of every class's defaults. */
export const TRAIN_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
};

export const f32 = Math.fround;

/** torch.linspace(start, end, steps, dtype=float32) on CPU: halves computed from each end. */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** numpy.linspace in float64 (endpoint included unless `endpoint` is false). */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const step = div > 0 ? (stop - start) / div : 0;
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(start + i * step);
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/** numpy.round: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.interp(x, arange(len(table)), table) for ascending integer abscissae. */
export function interpIndex(x: number, table: ArrayLike<number>): number {
  const last = table.length - 1;
  if (x <= 0) return table[0];
  if (x >= last) return table[last];
  const i = Math.floor(x);
  const frac = x - i;
  return frac === 0 ? table[i] : table[i] + (table[i + 1] - table[i]) * frac;
}

/** Betas and ᾱ = cumprod(1 − β) as diffusers builds them (float32 tensors; cumprod accumulates in float64). */
export function betaSchedule(config: ResolvedConfig): { betas: Float32Array; alphasCumprod: Float32Array } {
  const T = config.num_train_timesteps;
  let betas: Float32Array;
  if (config.trained_betas) {
    betas = Float32Array.from(config.trained_betas);
  } else if (config.beta_schedule === "linear") {
    betas = torchLinspaceF32(config.beta_start, config.beta_end, T);
  } else if (config.beta_schedule === "scaled_linear") {
    // torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=float32) ** 2
    betas = torchLinspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), T).map((b) =>
      f32(b * b)
    );
  } else if (config.beta_schedule === "squaredcos_cap_v2") {
    // betas_for_alpha_bar(T, alpha_transform_type="cosine"), in Python floats
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
    betas = new Float32Array(T);
    for (let i = 0; i < T; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), 0.999);
  } else {
    throw new Error(`unsupported beta_schedule ${JSON.stringify(config.beta_schedule)}`);
  }
  if (config.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
  const alphasCumprod = new Float32Array(T);
  let acc = 1;
  for (let i = 0; i < T; i++) {
    acc *= f32(1 - betas[i]);
    alphasCumprod[i] = acc;
  }
  return { betas, alphasCumprod };
}

/** diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), float32. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const sqrtAbar = new Float32Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= f32(1 - betas[i]);
    sqrtAbar[i] = Math.sqrt(f32(acc));
  }
  const first = sqrtAbar[0];
  const last = sqrtAbar[n - 1];
  const abar = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = f32(f32(sqrtAbar[i] - last) * f32(first / f32(first - last)));
    abar[i] = f32(v * v);
  }
  const out = new Float32Array(n);
  out[0] = f32(1 - abar[0]);
  for (let i = 1; i < n; i++) out[i] = f32(1 - f32(abar[i] / abar[i - 1]));
  return out;
}

/** σ(t) = √((1 − ᾱ)/ᾱ) for every training timestep, in float32 as torch computes it. */
export function sigmaTable(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/**
 * ᾱ and σ(t) for t = 0 … T − 1 (float32) of the σ-based and multistep classes. Zero-terminal-SNR: diffusers
 * sets ᾱ_T to 2⁻²⁴ so that σ_max stays finite.
 */
export function sigmaSchedule(
  config: ResolvedConfig,
): { alphasCumprod: Float32Array; trainSigmas: Float32Array } {
  const { alphasCumprod } = betaSchedule(config);
  if (config.rescale_betas_zero_snr) alphasCumprod[alphasCumprod.length - 1] = 2 ** -24;
  return { alphasCumprod, trainSigmas: sigmaTable(alphasCumprod) };
}

/**
 * Integer timesteps for the DDIM-family spacings (diffusers' set_timesteps of DDIM/DDPM/PNDM):
 * leading: arange(N)·(T // N) reversed + offset; linspace: round(linspace(0, T − 1, N)) reversed;
 * trailing: round(arange(T, 0, −T/N)) − 1.
 */
export function spacedTimesteps(config: ResolvedConfig, n: number): number[] {
  const T = config.num_train_timesteps;
  if (n > T) throw new Error(`num_inference_steps ${n} > num_train_timesteps ${T}`);
  if (config.timestep_spacing === "linspace") {
    return npLinspace(0, T - 1, n).map(roundHalfEven).reverse();
  }
  if (config.timestep_spacing === "leading") {
    const ratio = Math.floor(T / n);
    return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + config.steps_offset);
  }
  return arangeDown(T, T / n).map((t) => roundHalfEven(t) - 1);
}

/** numpy.arange(start, 0, −step) for a positive float step. */
export function arangeDown(start: number, step: number): number[] {
  const count = Math.ceil(start / step);
  return Array.from({ length: count }, (_, i) => start - i * step);
}

/** Karras et al. (2022) σ schedule between `sigmaMin` and `sigmaMax`, ρ = 7 (diffusers' _convert_to_karras). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

/** diffusers' _sigma_to_t: fractional timestep whose log σ interpolates `logSigmas` (ascending in t). */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low];
  const hi = logSigmas[low + 1];
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/** Element-wise clamp to ±range (clip_sample). */
export function clampInPlace(x: Float32Array, range: number): void {
  for (let i = 0; i < x.length; i++) x[i] = Math.min(Math.max(x[i], -range), range);
}

export function checkStepIndex(scheduler: Scheduler, stepIndex: number): void {
  if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= scheduler.timesteps.length) {
    throw new RangeError(
      `${scheduler.className}: step index ${stepIndex} outside 0..${scheduler.timesteps.length - 1}` +
        (scheduler.timesteps.length === 0 ? " (call setTimesteps first)" : ""),
    );
  }
}

export function checkSameLength(a: Float32Array, b: Float32Array, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
}

/** Alpha-based add_noise: √ᾱ_t·x + √(1 − ᾱ_t)·noise at integer timestep t. */
export function addNoiseAlpha(
  alphasCumprod: Float32Array,
  original: Float32Array,
  noise: Float32Array,
  timestep: number,
): Float32Array {
  checkSameLength(original, noise, "addNoise");
  const a = alphasCumprod[timestep];
  const sqrtA = f32(Math.sqrt(a));
  const sqrtOneMinusA = f32(Math.sqrt(f32(1 - a)));
  const out = new Float32Array(original.length);
  for (let i = 0; i < out.length; i++) out[i] = sqrtA * original[i] + sqrtOneMinusA * noise[i];
  return out;
}

/** Sigma-based add_noise (Euler family): x + noise·σ. */
export function addNoiseSigma(original: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  checkSameLength(original, noise, "addNoise");
  const out = new Float32Array(original.length);
  for (let i = 0; i < out.length; i++) out[i] = original[i] + noise[i] * sigma;
  return out;
}

/** x₀ prediction from an ᾱ-parameterised model output (DDIM/DDPM/LCM formulas). */
export function predictOriginalAlpha(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alphaProdT: number,
): Float32Array {
  const out = new Float32Array(sample.length);
  const sqrtA = Math.sqrt(alphaProdT);
  const sqrtB = Math.sqrt(1 - alphaProdT);
  for (let i = 0; i < out.length; i++) {
    if (prediction === "epsilon") out[i] = (sample[i] - sqrtB * modelOutput[i]) / sqrtA;
    else if (prediction === "sample") out[i] = modelOutput[i];
    else out[i] = sqrtA * sample[i] - sqrtB * modelOutput[i];
  }
  return out;
}

/** x₀ prediction in σ-parameterisation (Euler family; `sigmaHat` for ε, `sigma` for v). */
export function predictOriginalSigma(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  sigma: number,
  sigmaHat = sigma,
): Float32Array {
  const out = new Float32Array(sample.length);
  const s2 = sigma * sigma + 1;
  const vScale = -sigma / Math.sqrt(s2);
  for (let i = 0; i < out.length; i++) {
    if (prediction === "epsilon") out[i] = sample[i] - sigmaHat * modelOutput[i];
    else if (prediction === "sample") out[i] = modelOutput[i];
    else out[i] = modelOutput[i] * vScale + sample[i] / s2;
  }
  return out;
}
