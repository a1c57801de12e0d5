// `component <unet|vae-decode|vae-encode|clip|taesd-decode|taesd-encode|randn>`: runs one network on a file
// of inputs, with the golden fixtures' tensor names (taesd-decode: latents → image; taesd-encode: image →
// latents; NCHW).
//   deno task component unet --config CONFIG.json --weights W.safetensors --in IN.safetensors --out OUT.safetensors
//     [--precision f32|f16] [--lora FILE[:SCALE] ...] [--lora-strict=false]   (LoRAs: unet and clip)
//   deno task component randn --seed S --shape 1,4,64,64 --out F.safetensors

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { gpuFlags } from "./gpu_flags.ts";
import { SafetensorsFile, writeSafetensors } from "../weights/safetensors.ts";
import { readJsonFile } from "../util/json.ts";
import { loadModel, NETWORK_ENTRIES, type NetworkEntry, runComponent } from "../models/harness.ts";
import type { HostTensor } from "../util/host_tensor.ts";
import { TorchGenerator } from "../schedulers/rng.ts";
import type { UNet } from "../models/unet/unet.ts";
import type { ClipTextModel } from "../models/clip/clip.ts";
import { LoraAdapters } from "../models/lora/adapters.ts";
import { LoraLibrary } from "../models/lora/library.ts";
import { LORA_OPTIONS, parseLoraArgs } from "./lora_args.ts";

const USAGE =
  `usage: component <${NETWORK_ENTRIES.join("|")}> --config CONFIG.json --weights WEIGHTS.safetensors ` +
  "--in INPUTS.safetensors --out OUTPUTS.safetensors [--precision f32|f16] [--gpu-choices SPEC]\n" +
  "       [--lora FILE[:SCALE] ...] [--lora-strict=true|false]   (unet and clip: LoRAs merged first)\n" +
  "       component randn --seed S --shape 1,4,64,64 --out F.safetensors";

export async function componentCommand(args: string[]): Promise<number> {
  const [which, ...rest] = args;
  if (which === "randn") return await randnCommand(rest);
  if (!NETWORK_ENTRIES.includes(which as NetworkEntry)) {
    console.error(`unknown component ${JSON.stringify(which ?? "")}\n${USAGE}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: "string" },
      weights: { type: "string" },
      in: { type: "string" },
      out: { type: "string" },
      precision: { type: "string", default: "f32" },
      "no-f16": { type: "boolean" },
      "gpu-choices": { type: "string" },
      lora: LORA_OPTIONS.lora,
      "lora-strict": LORA_OPTIONS["lora-strict"],
    },
  });
  for (const k of ["config", "weights", "in", "out"] as const) {
    if (!values[k]) {
      console.error(`missing --${k}\n${USAGE}`);
      return 2;
    }
  }
  const precision = values.precision;
  if (precision !== "f32" && precision !== "f16") {
    throw new Error(`--precision must be f32 or f16, got ${precision}`);
  }
  const config = await readJsonFile(values.config!);
  // A manifest holds the config under config_full / config_passed; a config.json is the dict itself.
  const configDict = (config as Record<string, unknown>).config_full ?? config;
  const gpu = await Gpu.create({ disableF16: values["no-f16"], choices: gpuFlags(values).choices });
  using weights = await SafetensorsFile.open(values.weights!);
  const model = await loadModel(gpu, which as NetworkEntry, configDict, weights, precision);
  const loras = parseLoraArgs(values, {});
  if (loras.requests.length) {
    if (which !== "unet" && which !== "clip") {
      throw new Error(`--lora applies to unet and clip, not ${which}`);
    }
    const models = which === "unet" ? { unet: model as UNet } : { textEncoder: model as ClipTextModel };
    const adapters = new LoraAdapters(gpu, models, new LoraLibrary(undefined, loras.files), {
      strict: loras.strict,
      warn: (m) => console.error(`warning: ${m}`),
    });
    const s = await adapters.use(loras.requests);
    console.log(
      `merged ${loras.requests.map((l) => `${l.name} × ${l.scale}`).join(", ")} into ` +
        `${s.merged.unet + s.merged.text_encoder} weights in ${s.ms.toFixed(0)} ms`,
    );
  }
  using input = await SafetensorsFile.open(values.in!);
  const inputs = new Map<string, HostTensor>();
  for (const name of input.names()) {
    const info = input.info(name);
    if (
      info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "I64" && info.dtype !== "I32" &&
      info.dtype !== "BF16"
    ) {
      throw new Error(`input "${name}" has unsupported dtype ${info.dtype}`);
    }
    inputs.set(name, { shape: info.shape, data: await input.readF32(name) });
  }
  const { outputs } = await runComponent(gpu, which as NetworkEntry, model, inputs);
  const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of outputs) out[name] = { dtype: "F32", shape: t.shape, data: t.data };
  await writeSafetensors(values.out!, out, { component: which, precision });
  console.log(`wrote ${[...outputs.keys()].join(", ")} to ${values.out}`);
  return 0;
}

async function randnCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { seed: { type: "string" }, shape: { type: "string" }, out: { type: "string" } },
  });
  if (!values.seed || !values.shape || !values.out) {
    console.error(USAGE);
    return 2;
  }
  if (!/^-?\d+$/.test(values.seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
  const shape = values.shape.split(",").map((s) => Number(s.trim()));
  if (!shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`--shape must be positive integers, got ${values.shape}`);
  }
  const data = new TorchGenerator(BigInt(values.seed)).randn(shape);
  await writeSafetensors(values.out, { latents: { dtype: "F32", shape, data } });
  console.log(`wrote latents [${shape}] to ${values.out}`);
  return 0;
}
