// The loaded model as A1111's checkpoint list describes it (GET /sdapi/v1/sd-models, sd_model_checkpoint),
// and the LoRA folder as A1111's Lora extension lists it (GET /sdapi/v1/loras).
//
// This server serves the one model it loaded (a diffusers folder or a single file): the list has that
// entry. Its `hash` and `sha256` are null: A1111 hashes one checkpoint file, and hashing gigabytes on the
// HTTP thread to fill them is not worth it (A1111 leaves them null until computed, too).

import { basename, join, resolve } from "node:path";
import type { EngineHost } from "../../engine_host.ts";
import type { LoraCatalog } from "../../../models/lora/library.ts";
import { SafetensorsFile } from "../../../weights/safetensors.ts";

export interface CheckpointInfo {
  title: string;
  model_name: string;
  hash: string | null;
  sha256: string | null;
  filename: string;
  config: string | null;
}

const EXTENSION = /\.(safetensors|ckpt|pt|bin)$/i;

/** The loaded (or loading) model, or undefined without one. */
export function loadedCheckpoint(host: EngineHost): CheckpointInfo | undefined {
  const name = host.current?.modelName;
  const path = host.modelPath;
  if (name === undefined && path === undefined) return undefined;
  const file = path !== undefined ? basename(path.replace(/\/+$/, "")) : name!;
  return {
    title: file,
    model_name: file.replace(EXTENSION, ""),
    hash: null,
    sha256: null,
    filename: path !== undefined ? resolve(path) : file,
    config: null,
  };
}

/** Whether `name` (a title, "title [hash]", a model name or the file's path) names the loaded model;
 * undefined when there is no model to compare with. */
export function isLoadedCheckpoint(host: EngineHost, name: string): boolean | undefined {
  const cp = loadedCheckpoint(host);
  if (!cp) return undefined;
  const bare = name.replace(/\s*\[[0-9a-f]{8,64}\]\s*$/i, "").trim();
  return [cp.title, cp.model_name, cp.filename].includes(bare) ||
    (cp.filename.endsWith(`/${bare}`) && bare.length > 0);
}

export interface A1111Lora {
  name: string;
  /** Prompt tags name LoRAs by file stem here, so the alias is the name (A1111 may prefer the metadata's
   * ss_output_name). */
  alias: string;
  path: string;
  metadata: Record<string, unknown>;
}

/** The LoRA folder's files with their safetensors metadata (JSON values parsed, as A1111 shows them). */
export async function listLoras(catalog: LoraCatalog | undefined): Promise<A1111Lora[]> {
  if (!catalog) return [];
  const out: A1111Lora[] = [];
  for (const info of await catalog.list()) {
    const path = catalog.dir ? resolve(join(catalog.dir, `${info.name}.safetensors`)) : info.name;
    let metadata: Record<string, unknown> = {};
    try {
      using file = await SafetensorsFile.open(path);
      metadata = Object.fromEntries(Object.entries(file.metadata).map(([k, v]) => [k, parseMaybeJson(v)]));
    } catch {
      // Listed by the catalog, unreadable now: no metadata.
    }
    out.push({ name: info.name, alias: info.name, path, metadata });
  }
  return out;
}

/** kohya stores objects (ss_tag_frequency, …) as JSON text; A1111 returns them parsed. */
function parseMaybeJson(v: string): unknown {
  if (!/^\s*[[{]/.test(v)) return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}
