// The LoRA flags shared by `generate` and `component`:
//   --lora FILE[:SCALE]      a LoRA file at a scale (default 1); repeatable, one scale each
//   --lora-dir DIR           (env LORA_DIR) folder whose files prompt tags <lora:NAME:SCALE> name by file stem
//   --lora-strict=false      skip LoRA keys that match nothing in the model with a warning (default: an error)

import type { LoraRequest } from "../models/lora/tags.ts";

export const LORA_USAGE =
  `[--lora FILE[:SCALE] ...] [--lora-dir DIR (env LORA_DIR)] [--lora-strict=true|false]`;

export const LORA_OPTIONS = {
  lora: { type: "string", multiple: true },
  "lora-dir": { type: "string" },
  "lora-strict": { type: "string" },
} as const;

export interface LoraArgs {
  /** The files, each named by its stem. */
  files: string[];
  /** The files' LoRAs as a request names them. */
  requests: LoraRequest[];
  dir?: string;
  strict: boolean;
}

/** `path/x.safetensors:0.7` → path and scale (a suffix after the last ":" that is a number is the scale). */
export function parseLoraFlag(arg: string): { file: string; scale: number } {
  const colon = arg.lastIndexOf(":");
  const suffix = colon > 0 ? arg.slice(colon + 1) : "";
  if (suffix && !/[/\\]/.test(suffix) && !suffix.endsWith(".safetensors")) {
    const scale = Number(suffix);
    if (!Number.isFinite(scale)) throw new Error(`--lora ${arg}: the scale after ":" must be a number`);
    return { file: arg.slice(0, colon), scale };
  }
  return { file: arg, scale: 1 };
}

export function parseLoraArgs(
  values: { lora?: string[]; "lora-dir"?: string; "lora-strict"?: string },
  env: Record<string, string | undefined> = Deno.env.toObject(),
): LoraArgs {
  const strictText = values["lora-strict"] ?? "true";
  if (strictText !== "true" && strictText !== "false") {
    throw new Error(`--lora-strict must be true or false, got ${JSON.stringify(strictText)}`);
  }
  const files: string[] = [];
  const requests: LoraRequest[] = [];
  const stems = new Map<string, string>();
  for (const arg of values.lora ?? []) {
    const { file, scale } = parseLoraFlag(arg);
    if (!file.endsWith(".safetensors")) throw new Error(`--lora ${arg}: not a .safetensors file`);
    const name = file.replace(/^.*[/\\]/, "").slice(0, -".safetensors".length);
    const other = stems.get(name);
    if (other !== undefined && other !== file) {
      throw new Error(`--lora: ${other} and ${file} are both named ${name}`);
    }
    stems.set(name, file);
    if (other === undefined) files.push(file);
    requests.push({ name, scale });
  }
  const dir = values["lora-dir"] ?? (env.LORA_DIR || undefined);
  return { files, requests, dir, strict: strictText === "true" };
}
