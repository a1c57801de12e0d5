// The samplers this engine implements, by the names the APIs and the CLI use.

export const SAMPLER_NAMES = [
  "pndm",
  "ddim",
  "ddpm",
  "euler",
  "euler_a",
  "heun",
  "dpmpp_2m",
  "dpmpp_2m_karras",
  "unipc",
  "lcm",
] as const;
export type SamplerName = typeof SAMPLER_NAMES[number];
