// Sampler registry and img2img helpers over the diffusers 0.27.2 scheduler ports in ./schedulers/.
//
// Pipeline loop (StableDiffusionPipeline, text-to-image):
//   scheduler.setTimesteps(steps)
//   latents = generator.randn([B, 4, h, w]) · scheduler.initNoiseSigma
//   for (i = 0; i < scheduler.timesteps.length; i++):
//     x = scheduler.scaleModelInput(latents, i); eps = unet(x, scheduler.timesteps[i]) (+ CFG)
//     latents = scheduler.step(eps, i, latents, () => generator.randn([B, 4, h, w])).prevSample
// Noise draws inside step() (all from the same generator as the initial latents, in this order):
//   ddim (eta 0), pndm, heun, dpmpp_2m(_karras), unipc: none
//   ddpm: one per step with timestep > 0 (every step of a leading schedule, including t = 1)
//   euler: one per step, unused (s_churn = 0) but it advances the generator
//   euler_a: one per step
//   lcm: one per step except the last

import { DdimScheduler, DdpmScheduler } from "./alpha.ts";
import type { Scheduler, SchedulerConfig } from "./common.ts";
import { DpmSolverMultistepScheduler } from "./dpm_solver.ts";
import { LcmScheduler } from "./lcm.ts";
import { PndmScheduler } from "./pndm.ts";
import { EulerAncestralScheduler, EulerScheduler, HeunScheduler } from "./sigma.ts";
import { UniPcMultistepScheduler } from "./unipc.ts";
import { SAMPLER_NAMES, type SamplerName } from "./names.ts";

export { SAMPLER_NAMES, type SamplerName };

export type {
  NoiseSource,
  PredictionType,
  ResolvedConfig,
  Scheduler,
  SchedulerConfig,
  StepResult,
  TimestepSpacing,
} from "./common.ts";
export { betaSchedule, sigmaTable } from "./common.ts";
export {
  DdimScheduler,
  DdpmScheduler,
  DpmSolverMultistepScheduler,
  EulerAncestralScheduler,
  EulerScheduler,
  HeunScheduler,
  LcmScheduler,
  PndmScheduler,
  UniPcMultistepScheduler,
};

export function isSamplerName(name: string): name is SamplerName {
  return (SAMPLER_NAMES as readonly string[]).includes(name);
}

/**
 * Builds a scheduler from a diffusers scheduler config (e.g. a model's scheduler_config.json), like
 * `Class.from_config(config)`: keys the class doesn't know are ignored, missing ones take the class defaults
 * (notably timestep_spacing: leading for ddim/pndm/ddpm/lcm, linspace for the rest). dpmpp_2m forces
 * algorithm_type dpmsolver++, solver_order 2 and use_karras_sigmas false; dpmpp_2m_karras sets it true.
 * `eta` is DDIM's step(eta=…) (0 as the SD pipelines pass).
 */
export function createScheduler(
  name: SamplerName,
  config: SchedulerConfig,
  options: { eta?: number } = {},
): Scheduler {
  switch (name) {
    case "pndm":
      return new PndmScheduler(config);
    case "ddim":
      return new DdimScheduler(config, options.eta ?? 0);
    case "ddpm":
      return new DdpmScheduler(config);
    case "euler":
      return new EulerScheduler(config);
    case "euler_a":
      return new EulerAncestralScheduler(config);
    case "heun":
      return new HeunScheduler(config);
    case "dpmpp_2m":
    case "dpmpp_2m_karras":
      return new DpmSolverMultistepScheduler(config, {
        algorithm_type: "dpmsolver++",
        solver_order: 2,
        use_karras_sigmas: name === "dpmpp_2m_karras",
      });
    case "unipc":
      return new UniPcMultistepScheduler(config);
    case "lcm":
      return new LcmScheduler(config);
    default:
      throw new Error(`unknown sampler ${JSON.stringify(name)}; one of ${SAMPLER_NAMES.join(", ")}`);
  }
}

/**
 * Number of UNet evaluations (per CFG batch) for `steps` inference steps: `timesteps.length` after
 * setTimesteps — N for most, N + 1 for PNDM (N ≥ 2; it repeats a timestep), 2N − 1 for Heun.
 */
export function countModelEvaluations(name: SamplerName, config: SchedulerConfig, steps: number): number {
  const scheduler = createScheduler(name, config);
  scheduler.setTimesteps(steps);
  return scheduler.timesteps.length;
}

/** The img2img part of a schedule: evaluate `timesteps[startIndex..]`, noising the init latents at `startIndex`. */
export interface Img2ImgSchedule {
  /** First evaluation index into `scheduler.timesteps` (= t_start · order); pass indices from here to step(). */
  startIndex: number;
  /** `scheduler.timesteps.slice(startIndex)`. */
  timesteps: number[];
  /** diffusers' num_inference_steps − t_start (what the pipeline reports as the step count). */
  inferenceSteps: number;
}

/**
 * diffusers' StableDiffusionImg2ImgPipeline.get_timesteps, after `scheduler.setTimesteps(steps)`:
 * init_timestep = min(int(steps·strength), steps); t_start = max(steps − init_timestep, 0);
 * timesteps = timesteps[t_start·order:]. Then: `latents = scheduler.addNoise(initLatents, noise, startIndex)`
 * (noise = generator.randn(shape), drawn after the VAE encode's sample) and loop i from startIndex.
 * With strength such that no step remains (`timesteps` empty) the pipeline would fail; this throws.
 */
export function img2imgSchedule(scheduler: Scheduler, steps: number, strength: number): Img2ImgSchedule {
  if (!(strength >= 0 && strength <= 1)) throw new RangeError(`strength ${strength} outside [0, 1]`);
  if (scheduler.numInferenceSteps !== steps) {
    throw new Error(`img2imgSchedule: call scheduler.setTimesteps(${steps}) first`);
  }
  const initTimestep = Math.min(Math.floor(steps * strength), steps);
  const tStart = Math.max(steps - initTimestep, 0);
  const startIndex = tStart * scheduler.order;
  const timesteps = scheduler.timesteps.slice(startIndex);
  if (timesteps.length === 0) {
    throw new RangeError(`img2img: strength ${strength} with ${steps} steps leaves no denoising step`);
  }
  return { startIndex, timesteps, inferenceSteps: steps - tStart };
}
