// Single-file checkpoints (A1111 / ComfyUI keep them: the original LDM layout in one .safetensors file):
// configs inferred from the shapes, tensors read through the name maps, the prediction type guessed.

import { type ClipTextConfig, parseClipTextConfig } from "../clip/config.ts";
import { referenceConfigJson } from "../presets.ts";
import { parseUNetConfig, type UNetConfig } from "../unet/config.ts";
import { parseVaeConfig, type VaeConfig } from "../vae/config.ts";
import { ComponentSource } from "./component.ts";
import { inferSingleFileConfigJson } from "./infer_config.ts";
import type { OpenedModel, OpenModelOptions } from "./opened.ts";
import { singleFilePrediction } from "./prediction.ts";
import {
  clipNameMap,
  UNET_ORIGINAL_PREFIX,
  unetNameMap,
  VAE_ORIGINAL_PREFIX,
  vaeNameMap,
} from "./single_file_names.ts";
import { TensorStore } from "./store.ts";

export async function openSingleFile(path: string, opts: OpenModelOptions): Promise<OpenedModel> {
  const store = await TensorStore.openFile(path);
  try {
    const shapes = new Map(store.keys().map((k) => [k, store.info(k).shape]));
    const inferred = inferSingleFileConfigJson(shapes);
    const notes = [...inferred.notes];
    const pred = singleFilePrediction(path, store.metadata, inferred.family, opts.predictionType);
    const scheduler: Record<string, unknown> = {
      ...referenceConfigJson(inferred.family === "sd2" ? "sd21" : "sd15").scheduler,
      prediction_type: pred.type,
    };
    let unet: ComponentSource<UNetConfig> | null = null;
    if (inferred.unet) {
      const json = { ...inferred.unet, ...opts.unet };
      if (json.sample_size === undefined) {
        json.sample_size = inferred.family === "sd2" && pred.type === "v_prediction" ? 96 : 64;
      }
      const config = parseUNetConfig(json, `${path} (inferred unet config)`);
      unet = new ComponentSource(
        "unet",
        config,
        store,
        unetNameMap(config),
        `${path} [${UNET_ORIGINAL_PREFIX}*]`,
        notes.filter((n) => n.startsWith("unet")),
      );
    } else notes.push(`no UNet (${UNET_ORIGINAL_PREFIX}*) in the file`);
    let vae: ComponentSource<VaeConfig> | null = null;
    if (inferred.vae) {
      const config = parseVaeConfig({ ...inferred.vae, ...opts.vae }, `${path} (inferred vae config)`);
      vae = new ComponentSource(
        "vae",
        config,
        store,
        vaeNameMap(config),
        `${path} [${VAE_ORIGINAL_PREFIX}*]`,
        notes.filter((n) => n.startsWith("vae")),
      );
    } else notes.push(`no VAE (${VAE_ORIGINAL_PREFIX}*) in the file`);
    let textEncoder: ComponentSource<ClipTextConfig> | null = null;
    if (inferred.textEncoder && inferred.clipLayout) {
      const config = parseClipTextConfig(
        { ...inferred.textEncoder, ...opts.textEncoder },
        `${path} (inferred text encoder config)`,
      );
      const map = clipNameMap(config, inferred.clipLayout, {
        withoutTextModelLevel: inferred.clipWithoutTextModelLevel,
      });
      textEncoder = new ComponentSource(
        "text_encoder",
        config,
        store,
        map,
        `${path} [${map.prefix}*]`,
        notes.filter((n) => n.startsWith("text encoder")),
      );
    } else notes.push("no text encoder (cond_stage_model.*) in the file");
    const prefixes = [UNET_ORIGINAL_PREFIX, VAE_ORIGINAL_PREFIX, "cond_stage_model."];
    const ignoredTensors = store.keys().filter((k) => !prefixes.some((p) => k.startsWith(p)));
    return {
      path,
      format: "single-file",
      family: inferred.family,
      unet,
      vae,
      textEncoder,
      scheduler,
      predictionType: pred.type,
      predictionTypeSource: pred.source,
      tokenizerDir: null,
      notes,
      ignoredTensors,
      close: () => store.close(),
    };
  } catch (e) {
    store.close();
    throw e;
  }
}
