// Finding and loading TAESD weights: a folder in madebyollin/taesd's layout (config.json +
// diffusion_pytorch_model[.fp16].safetensors), given explicitly or found beside the model.

import type { Gpu } from "../../gpu/device.ts";
import type { ActDType } from "../../gpu/pipelines.ts";
import { readJsonFile } from "../../util/json.ts";
import { SafetensorsFile } from "../../weights/safetensors.ts";
import { Weights } from "../weights.ts";
import { parseTaesdConfig } from "./config.ts";
import { Taesd, taesdTensorSpecs } from "./taesd.ts";

/** The weight file names tried in a TAESD folder, fp16 variant first. */
const WEIGHT_FILES = ["diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"];

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * The TAESD folder that belongs to a model when none is named: `taesd/` inside the model folder, else
 * `taesd/` next to the model (folder or single file), so `weights/taesd` serves every model in `weights/`
 * (where `deno task weights --model taesd` puts it). A folder counts only if it holds config.json.
 */
export function findTaesdBeside(modelPath: string): string | undefined {
  const model = modelPath.replace(/\/+$/, "") || "/";
  const slash = model.lastIndexOf("/");
  const parent = slash < 0 ? "." : slash === 0 ? "/" : model.slice(0, slash);
  const candidates = [`${model}/taesd`, `${parent === "/" ? "" : parent}/taesd`];
  return candidates.find((dir) => isFile(`${dir}/config.json`));
}

/** Loads a TAESD folder's decoder and encoder, checking every tensor name and shape. */
export async function loadTaesd(gpu: Gpu, dir: string, act: ActDType): Promise<Taesd> {
  const config = parseTaesdConfig(await readJsonFile(`${dir}/config.json`), `${dir}/config.json`);
  const file = WEIGHT_FILES.map((f) => `${dir}/${f}`).find(isFile);
  if (!file) throw new Error(`${dir}: no TAESD weights (${WEIGHT_FILES.join(" or ")})`);
  using source = await SafetensorsFile.open(file);
  const expected = new Map(taesdTensorSpecs(config).map((s) => [s.name, s.shape]));
  const weights = await Weights.load(gpu, "taesd", source, expected);
  return new Taesd(gpu, config, weights, act);
}
