// A model's own defaults for what a request leaves out: steps, guidance, sampler and size, read from its
// folder when it loads.
//
//   1. diffusers' StableDiffusionPipeline defaults: 50 steps, guidance 7.5, size = UNet sample_size × the VAE's
//      scale factor (2^(levels − 1)): SD 1.x 512², SD 2.x 768-v 768², SD 2.x base 512²; the folder's scheduler.
//   2. SD-Turbo (a distilled model): 1 step, guidance 0, 512², when a name says "turbo":
//      the folder or file name, model_index.json's `_name_or_path`, or the `repo` that `weights` recorded in
//      weights.lock.json (stabilityai/sd-turbo). The scheduler config alone does not tell: "trailing"
//      timestep spacing is what SD-Turbo ships, but other models use it too; and SD-Turbo's UNet config
//      inherits SD 2.1's sample_size, so the size is set rather than derived.
//   3. An optional `sd-webgpu.json` in the folder overrides any of them:
//      {"steps": 4, "guidance_scale": 1.5, "sampler": "euler_a", "width": 640, "height": 512}.
//
// The server's explicit flags (--default-steps, --default-size) override these in turn (src/server/defaults.ts).

import { readJsonFile } from "../util/json.ts";
import { SAMPLER_NAMES, type SamplerName } from "./types.ts";

export interface ModelDefaults {
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  /** The folder's scheduler (or sd-webgpu.json's sampler). */
  sampler?: SamplerName;
  /** Where these came from, in words (for /v1/models and the log). */
  source: string;
}

export const DEFAULTS_FILE = "sd-webgpu.json";

/** diffusers' StableDiffusionPipeline.__call__ defaults. */
export const DIFFUSERS_STEPS = 50;
export const DIFFUSERS_GUIDANCE = 7.5;

/** What SD-Turbo's model card runs: one step without guidance at 512². */
export const TURBO_DEFAULTS = { width: 512, height: 512, steps: 1, guidanceScale: 0 } as const;

export interface ModelFacts {
  /** UNet `sample_size` (latent pixels), a number or [height, width]. */
  sampleSize: number | readonly number[] | undefined;
  /** The VAE's `block_out_channels` length (scale factor 2^(n − 1)). */
  vaeLevels: number;
  defaultSampler: SamplerName;
}

/** The defaults of the model at `path` (a diffusers folder or a single file). */
export async function readModelDefaults(path: string, facts: ModelFacts): Promise<ModelDefaults> {
  const scale = 2 ** Math.max(0, facts.vaeLevels - 1);
  const sample = facts.sampleSize;
  const [sh, sw] = Array.isArray(sample) ? sample : [sample ?? 64, sample ?? 64];
  let d: ModelDefaults = {
    width: Number(sw) * scale,
    height: Number(sh) * scale,
    steps: DIFFUSERS_STEPS,
    guidanceScale: DIFFUSERS_GUIDANCE,
    sampler: facts.defaultSampler,
    source: "diffusers' pipeline defaults",
  };
  const turbo = await turboName(path);
  if (turbo) d = { ...d, ...TURBO_DEFAULTS, source: `distilled turbo model (${turbo})` };
  const file = await readDefaultsFile(path);
  if (file) d = { ...d, ...file, source: `${d.source}, ${DEFAULTS_FILE}` };
  return d;
}

/** The name that says "turbo", if one does. */
export async function turboName(path: string): Promise<string | undefined> {
  const clean = path.replace(/\/+$/, "");
  const names: [string, string | undefined][] = [["name", clean.split("/").pop()]];
  if (await isDir(clean)) {
    const index = await readJson(`${clean}/model_index.json`);
    names.push(["model_index.json", str(index?._name_or_path)]);
    const lock = await readJson(`${clean}/weights.lock.json`);
    names.push(["weights.lock.json", str(lock?.repo)]);
  }
  for (const [where, name] of names) if (name && /turbo/i.test(name)) return `${where}: ${name}`;
  return undefined;
}

/** The folder's sd-webgpu.json, checked field by field; undefined when there is none. */
export async function readDefaultsFile(path: string): Promise<Partial<ModelDefaults> | undefined> {
  const file = `${path.replace(/\/+$/, "")}/${DEFAULTS_FILE}`;
  if (!(await isFile(file))) return undefined;
  let raw: unknown;
  try {
    raw = await readJsonFile(file);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`${file}: not an object`);
  }
  const v = raw as Record<string, unknown>;
  const known = ["steps", "guidance_scale", "sampler", "width", "height", "size"];
  for (const key of Object.keys(v)) {
    if (!known.includes(key)) {
      throw new Error(`${file}: unknown field "${key}"; the fields are ${known.join(", ")}`);
    }
  }
  const out: Partial<ModelDefaults> = {};
  const int = (key: string, min: number, multipleOf = 1) => {
    const n = v[key];
    if (typeof n !== "number" || !Number.isInteger(n) || n < min || n % multipleOf) {
      throw new Error(
        `${file}: ${key} must be an integer ≥ ${min}${multipleOf > 1 ? `, a multiple of ${multipleOf}` : ""}`,
      );
    }
    return n;
  };
  if (v.steps !== undefined) out.steps = int("steps", 1);
  if (v.guidance_scale !== undefined) {
    if (typeof v.guidance_scale !== "number" || !(v.guidance_scale >= 0)) {
      throw new Error(`${file}: guidance_scale must be a number ≥ 0`);
    }
    out.guidanceScale = v.guidance_scale;
  }
  if (v.sampler !== undefined) {
    if (!SAMPLER_NAMES.includes(v.sampler as SamplerName)) {
      throw new Error(`${file}: sampler must be one of ${SAMPLER_NAMES.join(", ")}`);
    }
    out.sampler = v.sampler as SamplerName;
  }
  if (v.size !== undefined) out.width = out.height = int("size", 8, 8);
  if (v.width !== undefined) out.width = int("width", 8, 8);
  if (v.height !== undefined) out.height = int("height", 8, 8);
  return out;
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    const v = await readJsonFile(path);
    return v && typeof v === "object" ? v as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
