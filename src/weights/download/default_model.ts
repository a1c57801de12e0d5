// The model a server or `generate` uses when none is named: SD-Turbo in `<weights dir>/sd-turbo`, downloaded
// there first (resumably, src/weights/download/) when it is missing or was left incomplete.

import { HUB_MODELS, type HubModelName } from "./hub.ts";
import { LOCK_FILE } from "./lock.ts";

export const DEFAULT_MODEL: HubModelName = "sd-turbo";

export type ModelChoice =
  /** A folder to load as it is. */
  | { kind: "path"; path: string }
  /** Fetch (or finish, or just check against its lock: no network when complete) `model` into `path`. */
  | { kind: "download"; model: HubModelName; dir: string; path: string };

/**
 * `<dir>/sd-turbo`: as it is when present without a lock (a folder copied by hand), through the downloader
 * when it has a lock (complete: nothing is fetched; interrupted: it resumes) or is absent.
 */
export async function chooseDefaultModel(dir: string): Promise<ModelChoice> {
  const clean = dir.replace(/\/+$/, "") || ".";
  const path = `${clean}/${DEFAULT_MODEL}`;
  const present = await exists(path);
  if (present && !(await exists(`${path}/${LOCK_FILE}`))) return { kind: "path", path };
  return { kind: "download", model: DEFAULT_MODEL, dir: clean, path };
}

/** What to tell the user when the default model cannot be downloaded. */
export function downloadAdvice(choice: { model: HubModelName; dir: string }, error: string): string {
  const dirFlag = choice.dir === "weights" ? "" : ` --dir ${choice.dir}`;
  return `no --model given and ${choice.dir}/${choice.model} could not be downloaded from ` +
    `${
      HUB_MODELS[choice.model].repo
    } (${error}). Run \`deno task weights --model ${choice.model}${dirFlag}\` ` +
    `where the Hugging Face Hub is reachable, or start with --model DIR (a diffusers folder or a .safetensors ` +
    `checkpoint)`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
