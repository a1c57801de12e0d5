// Every sampler step as an elementwise linear update, for the GPU sampler (pipeline/gpu_sampler.ts): the host
// computes the per-step scalars (σ, ᾱ, multistep weights) here in float64, exactly as each class's step()
// does, and one kernel applies them to every latent element in float32. step() stays the host reference.
//
// Per element, with x the sample, e the model output (after CFG), z the step's noise and h[k] history slots
// (earlier samples, model outputs, x₀ predictions or derivatives, whatever the sampler keeps):
//   x0  = clamp(x0.x·x + x0.e·e, ±x0.clamp)        diffusers' pred_original_sample (clamped: clip_sample)
//   y   = Σ y.terms                                 an intermediate (UniPC's corrected sample, Euler's
//                                                   derivative, LCM's denoised), when the step has one
//   out = Σ out.terms (may read y)                  prev_sample
//   h[k] ← Σ store[k].terms (may read y)            every read happens before any write
// Samplers keep at most MAX_SLOTS history slots.

import type { PredictionType } from "./common.ts";

export const MAX_SLOTS = 4;

/** Coefficients of the terms of a linear combination (absent: 0). `h[k]` multiplies history slot k. */
export interface Terms {
  x?: number;
  e?: number;
  x0?: number;
  z?: number;
  y?: number;
  h?: readonly (number | undefined)[];
}

/** One evaluation's update. */
export interface LinearStep {
  /** scale_model_input: the UNet input is x / inputDivisor. */
  inputDivisor: number;
  x0: { x: number; e: number; clamp?: number };
  y?: Terms;
  out: Terms;
  /** History slot k ← store[k] (absent: kept). */
  store?: readonly (Terms | undefined)[];
  /** diffusers draws one noise tensor in this step (advancing the generator even where z is unused). */
  drawsNoise: boolean;
}

/** The updates of evaluations startIndex, startIndex + 1, … (steps[c] is evaluation startIndex + c). */
export interface LinearSchedule {
  /** History slots used (0 … MAX_SLOTS). */
  slots: number;
  steps: LinearStep[];
}

/** x₀ from an ᾱ-parameterised model output (as predictOriginalAlpha). */
export function alphaX0(prediction: PredictionType, alphaProdT: number): { x: number; e: number } {
  const sqrtA = Math.sqrt(alphaProdT);
  const sqrtB = Math.sqrt(1 - alphaProdT);
  if (prediction === "epsilon") return { x: 1 / sqrtA, e: -sqrtB / sqrtA };
  if (prediction === "sample") return { x: 0, e: 1 };
  return { x: sqrtA, e: -sqrtB };
}

/** x₀ in σ-parameterisation (as predictOriginalSigma; `sigmaHat` for ε, `sigma` for v). */
export function sigmaX0(
  prediction: PredictionType,
  sigma: number,
  sigmaHat = sigma,
): { x: number; e: number } {
  if (prediction === "epsilon") return { x: 1, e: -sigmaHat };
  if (prediction === "sample") return { x: 0, e: 1 };
  const s2 = sigma * sigma + 1;
  return { x: 1 / s2, e: -sigma / Math.sqrt(s2) };
}

/** Terms with history slot `slot` set to `value` (a sparse `h`). */
export function slot(slotIndex: number, value: number, terms: Terms = {}): Terms {
  const h = [...(terms.h ?? [])];
  h[slotIndex] = (h[slotIndex] ?? 0) + value;
  return { ...terms, h };
}

/** The 12 coefficients of `terms` in the kernel's order: x, e, x0, z, y, h0 … h3, then padding. */
export function packTerms(terms: Terms | undefined): number[] {
  const t = terms ?? {};
  const h = t.h ?? [];
  if (h.length > MAX_SLOTS) throw new Error(`linear step: ${h.length} history slots > ${MAX_SLOTS}`);
  return [
    t.x ?? 0,
    t.e ?? 0,
    t.x0 ?? 0,
    t.z ?? 0,
    t.y ?? 0,
    ...Array.from({ length: MAX_SLOTS }, (_, k) => h[k] ?? 0),
    0,
    0,
    0,
  ];
}

/** Whether the step's noise enters the result (not only drawn). */
export function usesNoise(step: LinearStep): boolean {
  return (step.out.z ?? 0) !== 0 || (step.y?.z ?? 0) !== 0 ||
    (step.store ?? []).some((s) => (s?.z ?? 0) !== 0);
}
