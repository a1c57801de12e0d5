// Tiny single-file checkpoints (A1111/ComfyUI layout) built from the tiny diffusers fixtures by renaming
// their tensors through the name maps (fusing OpenCLIP's q/k/v, reshaping the VAE attention to 1×1 convs).

import { parseClipTextConfig } from "../src/models/clip/config.ts";
import { parseUNetConfig } from "../src/models/unet/config.ts";
import { parseVaeConfig } from "../src/models/vae/config.ts";
import {
  clipNameMap,
  type NameMap,
  unetNameMap,
  vaeNameMap,
} from "../src/models/checkpoint/single_file_names.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../src/weights/safetensors.ts";

export const FIX = new URL("./fixtures/", import.meta.url).pathname;
export const TINY = `${FIX}tiny_sd`;
export const json = (p: string) => JSON.parse(Deno.readTextFileSync(p));

export const tinyUnet = () => parseUNetConfig(json(`${TINY}/unet/config.json`));
export const tinyVae = () => parseVaeConfig(json(`${TINY}/vae/config.json`));
export const tinyClip = () => parseClipTextConfig(json(`${TINY}/text_encoder/config.json`));
export const tinyClipGelu = () => parseClipTextConfig(json(`${FIX}clip/tiny_gelu/config.json`));
/** unet_sd2/manifest.json's config_passed. */
export const TINY_SD2_UNET = {
  ...json(`${TINY}/unet/config.json`),
  cross_attention_dim: 48,
  attention_head_dim: [2, 4, 4, 4],
  use_linear_projection: true,
  upcast_attention: true,
};
export const tinySd2Unet = () => parseUNetConfig(TINY_SD2_UNET);

export const TINY_FILES = {
  unet: `${TINY}/unet/diffusion_pytorch_model.fp16.safetensors`,
  unetSd2: `${FIX}unet_sd2/weights.safetensors`,
  vae: `${TINY}/vae/diffusion_pytorch_model.fp16.safetensors`,
  clip: `${TINY}/text_encoder/model.fp16.safetensors`,
  clipGelu: `${FIX}clip/tiny_gelu/model.safetensors`,
};

export const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// ---- building single files from diffusers-named tensors ----

/** Renames (and fuses / reshapes) a diffusers-named file's tensors into original single-file keys. */
export async function renamed(file: string, map: NameMap): Promise<Record<string, TensorToWrite>> {
  const out: Record<string, TensorToWrite> = {};
  using f = await SafetensorsFile.open(file);
  for (const e of map.entries) {
    const bits = await f.readF16Bits(e.name);
    if (e.rows) {
      out[e.original] ??= {
        dtype: "F16",
        shape: e.originalShape,
        data: new Uint16Array(numel(e.originalShape)),
      };
      (out[e.original].data as Uint16Array).set(bits, e.rows[0] * numel(e.originalShape.slice(1)));
    } else {
      out[e.original] = { dtype: "F16", shape: e.originalShape, data: bits.slice() };
    }
  }
  return out;
}

/** A diffusers-named file's tensors, as they are. */
export async function loadAll(file: string): Promise<Record<string, TensorToWrite>> {
  using f = await SafetensorsFile.open(file);
  const out: Record<string, TensorToWrite> = {};
  for (const n of f.names()) {
    out[n] = { dtype: "F16", shape: f.info(n).shape, data: (await f.readF16Bits(n)).slice() };
  }
  return out;
}

/** Non-model tensors real single files carry. */
export const SCHEDULER_EXTRAS: Record<string, TensorToWrite> = {
  alphas_cumprod: { dtype: "F32", shape: [1000], data: new Float32Array(1000).fill(0.5) },
  "model_ema.decay": { dtype: "F32", shape: [], data: new Float32Array([0.9999]) },
  "model_ema.num_updates": { dtype: "I32", shape: [], data: new Int32Array([1]) },
};

export async function writeTinySd1SingleFile(
  path: string,
  edit?: (t: Record<string, TensorToWrite>) => void,
) {
  const tensors: Record<string, TensorToWrite> = {
    ...await renamed(TINY_FILES.unet, unetNameMap(tinyUnet())),
    ...await renamed(TINY_FILES.vae, vaeNameMap(tinyVae())),
    ...await renamed(TINY_FILES.clip, clipNameMap(tinyClip(), "transformers")),
    ...SCHEDULER_EXTRAS,
    "cond_stage_model.transformer.text_model.embeddings.position_ids": {
      dtype: "I64",
      shape: [1, 77],
      data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)),
    },
  };
  edit?.(tensors);
  await writeSafetensors(path, tensors);
}

/** SD 2.x layout: OpenCLIP text tower with one more resblock than used, logit_scale, text_projection. */
export async function writeTinySd2SingleFile(
  path: string,
  edit?: (t: Record<string, TensorToWrite>) => void,
) {
  const clip = tinyClipGelu();
  const tensors: Record<string, TensorToWrite> = {
    ...await renamed(TINY_FILES.unetSd2, unetNameMap(tinySd2Unet())),
    ...await renamed(TINY_FILES.vae, vaeNameMap(tinyVae())),
    ...await renamed(TINY_FILES.clipGelu, clipNameMap(clip, "openclip")),
    ...SCHEDULER_EXTRAS,
    "cond_stage_model.model.logit_scale": { dtype: "F32", shape: [], data: new Float32Array([4.6]) },
    "cond_stage_model.model.text_projection": { dtype: "F16", shape: [32, 32], data: new Uint16Array(1024) },
  };
  const last = clip.num_hidden_layers - 1;
  for (const [k, v] of Object.entries(tensors)) {
    const prefix = `cond_stage_model.model.transformer.resblocks.${last}.`;
    if (k.startsWith(prefix)) {
      tensors[k.replace(prefix, `cond_stage_model.model.transformer.resblocks.${last + 1}.`)] = v;
    }
  }
  edit?.(tensors);
  await writeSafetensors(path, tensors);
}
