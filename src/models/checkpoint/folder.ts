// Diffusers folders: each component in its own subfolder with config.json and safetensors weights (the
// fp16 variant preferred, sharded sets accepted), plus scheduler/ and tokenizer/.

import { type ClipTextConfig, parseClipTextConfig } from "../clip/config.ts";
import { parseUNetConfig, type UNetConfig } from "../unet/config.ts";
import { parseVaeConfig } from "../vae/config.ts";
import type { ComponentConfig, ComponentKind } from "../expected.ts";
import type { ModelFamily } from "../family.ts";
import { readJsonFile } from "../../util/json.ts";
import { ComponentSource } from "./component.ts";
import type { OpenedModel, OpenModelOptions } from "./opened.ts";
import { folderPrediction } from "./prediction.ts";
import { TensorStore } from "./store.ts";

const WEIGHT_FILES: Record<ComponentKind, string[]> = {
  unet: ["diffusion_pytorch_model"],
  vae: ["diffusion_pytorch_model"],
  text_encoder: ["model"],
};

const FOLDERS: Record<ComponentKind, string> = { unet: "unet", vae: "vae", text_encoder: "text_encoder" };

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** fp16 variant first (it is what we upload), then the plain file, then sharded indexes. */
async function findWeights(dir: string, kind: ComponentKind): Promise<string | null> {
  for (const base of WEIGHT_FILES[kind]) {
    for (
      const name of [
        `${base}.fp16.safetensors`,
        `${base}.safetensors`,
        `${base}.fp16.safetensors.index.json`,
        `${base}.safetensors.index.json`,
      ]
    ) {
      if (await exists(`${dir}/${name}`)) return `${dir}/${name}`;
    }
  }
  for (const base of WEIGHT_FILES[kind]) {
    for (const ext of ["bin", "fp16.bin", "ckpt"]) {
      if (await exists(`${dir}/${base}.${ext}`)) {
        throw new Error(
          `${dir}: only ${base}.${ext} (a pickle file) is present; safetensors weights are required`,
        );
      }
    }
  }
  return null;
}

export async function openDiffusersFolder(path: string, opts: OpenModelOptions): Promise<OpenedModel> {
  const notes: string[] = [];
  if (!await exists(`${path}/model_index.json`)) {
    notes.push("no model_index.json (components found by folder name)");
  }
  const stores: TensorStore[] = [];
  const openComponent = async <C extends ComponentConfig>(
    kind: ComponentKind,
    parse: (json: unknown, source: string) => C,
    overrides: Record<string, unknown> | undefined,
  ): Promise<ComponentSource<C> | null> => {
    const dir = `${path}/${FOLDERS[kind]}`;
    if (!await exists(dir)) {
      notes.push(`${FOLDERS[kind]}/ is missing`);
      return null;
    }
    const configPath = `${dir}/config.json`;
    if (!await exists(configPath)) throw new Error(`${configPath} is missing`);
    const json = await readJsonFile(configPath);
    const config = parse(overrides ? { ...(json as object), ...overrides } : json, configPath);
    const weights = await findWeights(dir, kind);
    if (!weights) throw new Error(`${dir}: no ${WEIGHT_FILES[kind][0]}[.fp16].safetensors`);
    const store = weights.endsWith(".index.json")
      ? await TensorStore.openIndex(weights)
      : await TensorStore.openFile(weights);
    stores.push(store);
    return new ComponentSource(kind, config, store, null, weights);
  };
  try {
    const unet = await openComponent("unet", parseUNetConfig, opts.unet);
    const vae = await openComponent("vae", parseVaeConfig, opts.vae);
    const textEncoder = await openComponent("text_encoder", parseClipTextConfig, opts.textEncoder);
    const schedulerPath = `${path}/scheduler/scheduler_config.json`;
    let scheduler: Record<string, unknown> = {};
    if (await exists(schedulerPath)) scheduler = await readJsonFile(schedulerPath) as Record<string, unknown>;
    else notes.push("scheduler/scheduler_config.json is missing");
    const prediction = folderPrediction(scheduler, schedulerPath, opts.predictionType);
    const tokenizerDir = await exists(`${path}/tokenizer/vocab.json`) ? `${path}/tokenizer` : null;
    if (!tokenizerDir) notes.push("tokenizer/vocab.json is missing");
    return {
      path,
      format: "diffusers",
      family: familyFromConfigs(unet?.config ?? null, textEncoder?.config ?? null),
      unet,
      vae,
      textEncoder,
      scheduler,
      predictionType: prediction.type,
      predictionTypeSource: prediction.source,
      tokenizerDir,
      notes,
      ignoredTensors: [],
      close: () => stores.forEach((s) => s.close()),
    };
  } catch (e) {
    stores.forEach((s) => s.close());
    throw e;
  }
}

/** SD 2.x has Linear UNet projections and a gelu text encoder; SD 1.x 1×1 convs and quick_gelu. */
function familyFromConfigs(unet: UNetConfig | null, clip: ClipTextConfig | null): ModelFamily | null {
  if (unet) return unet.use_linear_projection ? "sd2" : "sd1";
  if (clip) return clip.hidden_act === "gelu" ? "sd2" : "sd1";
  return null;
}
