// Synthetic full-size weights: a complete diffusers model folder (configs, tokenizer, F16 safetensors with the
// real names and shapes), or a TAESD folder, filled with seeded random values, for load / memory / speed
// testing without a trained checkpoint.
//
// Values follow the golden fixtures' convention so activations stay O(1) through the whole network:
// conv / linear weights N(0,1)/√fan_in, biases 0.1·N(0,1), norm weights 1 + 0.1·N(0,1), norm biases
// 0.1·N(0,1), token embeddings 0.5·N(0,1), position embeddings 0.2·N(0,1).
//
// Speed: each (mean, std) gets a 65536-entry table of f16 bits holding the normal distribution's quantiles;
// every 32-bit output of a counter-based hash (murmur3's finaliser) picks two entries. No per-element
// transcendental math or f32→f16 conversion, so the ~1.1 G values of SD 1.5 take seconds, and tensors are
// streamed to disk one at a time (memory stays at the largest tensor).

import { f32ToF16 } from "../gpu/device.ts";
import type { ClipTextConfig } from "./clip/config.ts";
import { clipTextConfigJson, unetConfigJson, vaeConfigJson } from "./presets.ts";
import type { UNetConfig } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";
import { clipTensorSpecs, type TensorSpec, unetTensorSpecs, vaeTensorSpecs } from "./expected.ts";
import { writeSafetensorsStreaming } from "../weights/safetensors.ts";
import { parseTaesdConfig, TAESD_CONFIG_JSON } from "./taesd/config.ts";
import { taesdTensorSpecs } from "./taesd/taesd.ts";

export interface SynthConfigs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: Record<string, unknown>;
}

export interface SynthOptions {
  seed?: number;
  /** Folder with vocab.json, merges.txt (+ tokenizer.json, configs) to copy into tokenizer/; null: none. */
  tokenizerDir?: string | null;
  /** SD 2.x pads with "!" (id 0) instead of <|endoftext|>; written into the tokenizer configs. */
  tokenizerPadToken?: string;
  log?: (line: string) => void;
}

export interface SynthFileReport {
  path: string;
  bytes: number;
  tensors: number;
  parameters: number;
}

export interface SynthReport {
  dir: string;
  files: SynthFileReport[];
  /** Total bytes of the weight files. */
  bytes: number;
  seconds: number;
}

// ---- random values ----

/** Init distribution of a tensor: mean + std · N(0,1). */
export function initFor(spec: TensorSpec): { mean: number; std: number } {
  switch (spec.role) {
    case "weight":
      return { mean: 0, std: 1 / Math.sqrt(spec.fanIn) };
    case "bias":
      return { mean: 0, std: 0.1 };
    case "norm_weight":
      return { mean: 1, std: 0.1 };
    case "norm_bias":
      return { mean: 0, std: 0.1 };
    case "token_embedding":
      return { mean: 0, std: 0.5 };
    case "position_embedding":
      return { mean: 0, std: 0.2 };
  }
}

/** Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  const a = [
    -3.969683028665376e1,
    2.209460984245205e2,
    -2.759285104469687e2,
    1.38357751867269e2,
    -3.066479806614716e1,
    2.506628277459239,
  ];
  const b = [
    -5.447609879822406e1,
    1.615858368580409e2,
    -1.556989798598866e2,
    6.680131188771972e1,
    -1.328068155288572e1,
  ];
  const c = [
    -7.784894002430293e-3,
    -3.223964580411365e-1,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
  ];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - low) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

const tables = new Map<string, Uint16Array>();

/** f16 bits of mean + std · Φ⁻¹((k + 0.5) / 65536), k = 0..65535. */
function quantileTable(mean: number, std: number): Uint16Array {
  const key = `${mean}:${std}`;
  let t = tables.get(key);
  if (!t) {
    t = new Uint16Array(65536);
    for (let k = 0; k < 65536; k++) t[k] = f32ToF16(mean + std * normalQuantile((k + 0.5) / 65536));
    tables.set(key, t);
  }
  return t;
}

/** FNV-1a of the name, mixed with the seed: each tensor's stream depends only on (seed, name). */
function tensorSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h | 0;
}

/** Fills `out` (f16 bits) with the tensor's values. */
export function fillSynthTensor(spec: TensorSpec, seed: number, out: Uint16Array): void {
  const { mean, std } = initFor(spec);
  const table = quantileTable(mean, std);
  let state = tensorSeed(spec.name, seed);
  const hash = () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const pairs = out.length >>> 1;
  if (out.byteOffset % 4 === 0) {
    // Two f16 values per 32-bit word (little-endian: element 2i in the low half).
    const words = new Uint32Array(out.buffer, out.byteOffset, pairs);
    for (let i = 0; i < pairs; i++) {
      state = (state + 0x9e3779b9) | 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      z ^= z >>> 16;
      words[i] = table[z & 0xffff] | (table[z >>> 16] << 16);
    }
  } else {
    for (let i = 0; i < pairs; i++) {
      const z = hash();
      out[2 * i] = table[z & 0xffff];
      out[2 * i + 1] = table[z >>> 16];
    }
  }
  if (out.length & 1) out[out.length - 1] = table[hash() & 0xffff];
}

export function synthTensorBits(spec: TensorSpec, seed: number): Uint16Array {
  const out = new Uint16Array(spec.shape.reduce((a, b) => a * b, 1));
  fillSynthTensor(spec, seed, out);
  return out;
}

/** Streams one F16 safetensors file of synthetic tensors; returns its size in bytes. */
export async function writeSynthWeights(
  path: string,
  specs: TensorSpec[],
  seed: number,
  metadata: Record<string, string> = {},
): Promise<number> {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const largest = Math.max(0, ...specs.map((s) => s.shape.reduce((a, b) => a * b, 1)));
  // One scratch buffer reused for every tensor: the writer finishes each write before asking for the next.
  const scratch = new Uint16Array(largest + 1);
  await writeSafetensorsStreaming(
    path,
    specs.map((s) => ({ name: s.name, dtype: "F16" as const, shape: s.shape })),
    (name) => {
      const spec = byName.get(name)!;
      const out = scratch.subarray(0, spec.shape.reduce((a, b) => a * b, 1));
      fillSynthTensor(spec, seed, out);
      return out;
    },
    { format: "pt", note: `synthetic random weights (seed ${seed}), not a trained model`, ...metadata },
  );
  return (await Deno.stat(path)).size;
}

// ---- model folder ----

const TOKENIZER_FILES = [
  "vocab.json",
  "merges.txt",
  "special_tokens_map.json",
  "tokenizer_config.json",
  "tokenizer.json",
];

async function copyTokenizer(from: string, to: string, padToken: string | undefined): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for (const f of ["vocab.json", "merges.txt"]) {
    try {
      await Deno.stat(`${from}/${f}`);
    } catch {
      throw new Error(`tokenizer folder ${from} has no ${f}`);
    }
  }
  for (const f of TOKENIZER_FILES) {
    let text: string;
    try {
      text = await Deno.readTextFile(`${from}/${f}`);
    } catch {
      continue; // optional file
    }
    if (padToken !== undefined && (f === "special_tokens_map.json" || f === "tokenizer_config.json")) {
      const json = JSON.parse(text);
      json.pad_token = padToken;
      text = JSON.stringify(json, null, 2) + "\n";
    }
    await Deno.writeTextFile(`${to}/${f}`, text);
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2) + "\n");
}

/**
 * Writes a diffusers folder: model_index.json, {unet,vae}/config.json + diffusion_pytorch_model.safetensors,
 * text_encoder/config.json + model.safetensors, scheduler/scheduler_config.json, tokenizer/ (copied).
 */
export async function synthModelFolder(
  dir: string,
  configs: SynthConfigs,
  opts: SynthOptions = {},
): Promise<SynthReport> {
  const seed = opts.seed ?? 0;
  const log = opts.log ?? (() => {});
  const start = performance.now();
  for (const sub of ["unet", "vae", "text_encoder", "scheduler"]) {
    await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
  }
  const schedulerClass = typeof configs.scheduler._class_name === "string"
    ? configs.scheduler._class_name
    : "PNDMScheduler";
  await writeJson(`${dir}/model_index.json`, {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: "0.27.2",
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", schedulerClass],
    text_encoder: [
      "transformers",
      configs.textEncoder.with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel",
    ],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  });
  await writeJson(`${dir}/unet/config.json`, unetConfigJson(configs.unet));
  await writeJson(`${dir}/vae/config.json`, vaeConfigJson(configs.vae));
  await writeJson(`${dir}/text_encoder/config.json`, clipTextConfigJson(configs.textEncoder));
  await writeJson(`${dir}/scheduler/scheduler_config.json`, {
    _class_name: schedulerClass,
    ...configs.scheduler,
  });
  if (opts.tokenizerDir) await copyTokenizer(opts.tokenizerDir, `${dir}/tokenizer`, opts.tokenizerPadToken);

  const parts: [string, TensorSpec[]][] = [
    [`${dir}/unet/diffusion_pytorch_model.safetensors`, unetTensorSpecs(configs.unet)],
    [`${dir}/vae/diffusion_pytorch_model.safetensors`, vaeTensorSpecs(configs.vae)],
    [`${dir}/text_encoder/model.safetensors`, clipTensorSpecs(configs.textEncoder)],
  ];
  const files: SynthFileReport[] = [];
  for (const [path, specs] of parts) {
    const t0 = performance.now();
    const bytes = await writeSynthWeights(path, specs, seed);
    const parameters = specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    files.push({ path, bytes, tensors: specs.length, parameters });
    log(
      `${path}: ${specs.length} tensors, ${parameters.toLocaleString("en-US")} parameters, ` +
        `${(bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }
  return {
    dir,
    files,
    bytes: files.reduce((n, f) => n + f.bytes, 0),
    seconds: (performance.now() - start) / 1000,
  };
}

/** A TAESD folder as madebyollin/taesd lays it out (config.json + diffusion_pytorch_model.safetensors, the
 * real config and shapes), filled with synthetic weights: for benchmarks without a download. */
export async function synthTaesdFolder(dir: string, opts: { seed?: number } = {}): Promise<SynthReport> {
  const start = performance.now();
  await Deno.mkdir(dir, { recursive: true });
  await writeJson(`${dir}/config.json`, TAESD_CONFIG_JSON);
  const specs = taesdTensorSpecs(parseTaesdConfig(TAESD_CONFIG_JSON));
  const path = `${dir}/diffusion_pytorch_model.safetensors`;
  const bytes = await writeSynthWeights(path, specs, opts.seed ?? 0);
  const parameters = specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  return {
    dir,
    files: [{ path, bytes, tensors: specs.length, parameters }],
    bytes,
    seconds: (performance.now() - start) / 1000,
  };
}
