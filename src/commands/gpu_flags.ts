// The GPU flags shared by the commands that create a Gpu: `--gpu-choices SPEC` (forced choices, over the
// SD_GPU_FORCE environment variable key by key; see src/gpu/choices.ts) and `--retune` (measure the tile
// autotuning again instead of reusing the cached results).

import { formatGpuChoices, type GpuChoices, resolveGpuChoices } from "../gpu/choices.ts";
export { tuneLine } from "../ops/autotune.ts";

export const GPU_FLAGS = {
  "gpu-choices": { type: "string" },
  retune: { type: "boolean" },
} as const;

export const GPU_FLAGS_USAGE =
  `  --gpu-choices SPEC  force GPU choices, e.g. tiling=workgroup,f16=off (env SD_GPU_FORCE; see README)
  --retune            measure the kernel-tile autotuning again (results are cached per adapter)`;

export interface GpuFlags {
  choices: GpuChoices;
  /** What loading does about autotuning: the forced tune= choice, --retune, else auto. */
  tune: "auto" | "retune" | "off";
}

export function gpuFlags(values: { "gpu-choices"?: string; retune?: boolean }): GpuFlags {
  const choices = resolveGpuChoices(values["gpu-choices"]);
  const tune = values.retune ? "retune" : choices.tune ?? "auto";
  return { choices, tune };
}

export function choicesLine(c: GpuChoices): string | null {
  const spec = formatGpuChoices(c);
  return spec ? `forced GPU choices: ${spec}` : null;
}
