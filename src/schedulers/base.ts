// The base of the three scheduler families (alpha.ts, sigma.ts, multistep.ts): the resolved config and the
// schedule state. Each family adds its scale (ᾱ or σ), noising and the per-class steps.

import {
  type NoiseSource,
  resolveConfig,
  type ResolvedConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepResult,
} from "./common.ts";
import type { LinearSchedule } from "./linear.ts";

export abstract class SchedulerBase implements Scheduler {
  abstract readonly className: string;
  readonly config: ResolvedConfig;
  timesteps: number[] = [];
  abstract readonly sigmas: readonly number[] | undefined;
  abstract readonly initNoiseSigma: number;
  readonly order: number = 1;
  numInferenceSteps = 0;

  constructor(className: string, defaults: Record<string, unknown>, given: SchedulerConfig) {
    this.config = resolveConfig(className, defaults, given);
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(
    modelOutput: Float32Array,
    stepIndex: number,
    sample: Float32Array,
    noise: NoiseSource,
  ): StepResult;
  abstract addNoise(original: Float32Array, noise: Float32Array, stepIndex: number): Float32Array;
  abstract addNoiseCoefficients(stepIndex: number): { original: number; noise: number };
  abstract linearSchedule(startIndex: number): LinearSchedule;

  /** clip_sample's range, when the config clips x₀ (DDIM, DDPM, LCM, Heun). */
  protected clipRange(): number | undefined {
    return this.config.clip_sample ? this.config.clip_sample_range as number : undefined;
  }

  /** The identity on the VP scale (ᾱ and multistep classes); the σ classes divide by √(σ² + 1). */
  scaleModelInput(sample: Float32Array, _stepIndex: number): Float32Array {
    return sample;
  }
}
