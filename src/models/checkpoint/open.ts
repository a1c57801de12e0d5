// Opening a Stable Diffusion model by path: a diffusers folder (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/) or a single-file checkpoint (.safetensors in the original LDM
// layout). Pickle checkpoints are refused: loading them can run code.

import { openDiffusersFolder } from "./folder.ts";
import type { OpenedModel, OpenModelOptions } from "./opened.ts";
import { openSingleFile } from "./single_file.ts";

export async function openModel(path: string, opts: OpenModelOptions = {}): Promise<OpenedModel> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (e) {
    throw new Error(`${path}: cannot open model (${(e as Error).message})`);
  }
  if (stat.isDirectory) return await openDiffusersFolder(path, opts);
  if (/\.safetensors$/i.test(path)) return await openSingleFile(path, opts);
  if (/\.(ckpt|pt|pth|bin)$/i.test(path)) {
    throw new Error(
      `${path}: pickle checkpoints are not supported (they can run code); convert to .safetensors`,
    );
  }
  throw new Error(`${path}: not a diffusers model folder or a .safetensors checkpoint`);
}
