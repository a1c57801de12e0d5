// The diffusers scheduler fixtures (tests/fixtures/schedulers, see the golden README) shared by the host and
// GPU sampler tests: the manifest, the common tensors (x_T, betas, ᾱ) and the trajectory files.

import type { SamplerName } from "../src/schedulers/index.ts";
import { f32 as tensorF32, type FixtureTensor, readSafetensors } from "./sampling_fixtures.ts";

const dir = new URL("./fixtures/schedulers/", import.meta.url).pathname;
// Python's json writes -Infinity (lambda_min_clipped); -1e999 parses to the same value.
export const manifest = JSON.parse(
  Deno.readTextFileSync(dir + "manifest.json").replaceAll("-Infinity", "-1e999"),
);
export const common = readSafetensors(dir + "common.safetensors");
/** The initial latents [1, 4, 8, 8] every trajectory starts from (times init_noise_sigma). */
export const xT = tensorF32(common.get("x_T"), "x_T");

/** Trajectory files (`<file>.safetensors`) and the sampler each was recorded with. */
export const FILES: [string, SamplerName][] = [
  ["ddim", "ddim"],
  ["pndm", "pndm"],
  ["ddpm", "ddpm"],
  ["euler", "euler"],
  ["euler_ancestral", "euler_a"],
  ["dpmpp_2m", "dpmpp_2m"],
  ["dpmpp_2m_karras", "dpmpp_2m_karras"],
  ["lcm", "lcm"],
  ["unipc", "unipc"],
  ["heun", "heun"],
  ["ddim_vpred", "ddim"],
  ["euler_vpred", "euler"],
];

/** A trajectory file's tensors (`n<N>.x`, `n<N>.noise`, …; the golden README lists them). */
export function trajectories(file: string): Map<string, FixtureTensor> {
  return readSafetensors(`${dir}${file}.safetensors`);
}
