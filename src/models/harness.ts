// Runs one network (UNet, VAE decoder/encoder, CLIP text encoder, TAESD decoder/encoder) on host tensors
// with the fixtures' names and NCHW layout. Shared by `deno task component` and the model tests.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { readNchw, readTensor, type Tensor, writeActivation } from "../gpu/tensor.ts";
import { type HostTensor, nchwToNhwc } from "../util/host_tensor.ts";
import { type ClipTextConfig, parseClipTextConfig } from "./clip/config.ts";
import { parseUNetConfig, type UNetConfig } from "./unet/config.ts";
import { parseVaeConfig, type VaeConfig } from "./vae/config.ts";
import { expectedTensors, isIgnorableTensor } from "./expected.ts";
import { Weights, type WeightSource } from "./weights.ts";
import { UNet } from "./unet/unet.ts";
import { Vae } from "./vae/vae.ts";
import { ClipTextModel } from "./clip/clip.ts";
import { parseTaesdConfig } from "./taesd/config.ts";
import { Taesd, taesdTensorSpecs } from "./taesd/taesd.ts";

/** One network call the harness runs: the "component" CLI's first argument. */
export type NetworkEntry = "unet" | "vae-decode" | "vae-encode" | "clip" | "taesd-decode" | "taesd-encode";
export const NETWORK_ENTRIES: readonly NetworkEntry[] = [
  "unet",
  "vae-decode",
  "vae-encode",
  "clip",
  "taesd-decode",
  "taesd-encode",
];

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InputError";
  }
}

// ---- loading ----

export type AnyModel = UNet | Vae | ClipTextModel | Taesd;

/** Loads the network a component needs from a config dict and a weight source with diffusers names. */
export async function loadModel(
  gpu: Gpu,
  component: NetworkEntry,
  configJson: unknown,
  source: WeightSource,
  act: ActDType,
): Promise<AnyModel> {
  if (act === "f16" && !gpu.f16) {
    throw new InputError("--precision f16 needs shader-f16, which this adapter lacks");
  }
  if (component === "unet") {
    const config = parseUNetConfig(configJson);
    const weights = await Weights.load(gpu, "unet", source, expectedTensors("unet", config), {
      allowExtra: (n) => isIgnorableTensor("unet", n),
    });
    return new UNet(gpu, config, weights, act);
  }
  if (component === "vae-decode" || component === "vae-encode") {
    const config = parseVaeConfig(configJson);
    const weights = await Weights.load(gpu, "vae", source, expectedTensors("vae", config), {
      allowExtra: (n) => isIgnorableTensor("vae", n),
    });
    return new Vae(gpu, config, weights, act);
  }
  if (component === "taesd-decode" || component === "taesd-encode") {
    const config = parseTaesdConfig(configJson);
    const expected = new Map(taesdTensorSpecs(config).map((s) => [s.name, s.shape]));
    return new Taesd(gpu, config, await Weights.load(gpu, "taesd", source, expected), act);
  }
  const config = parseClipTextConfig(configJson);
  const weights = await Weights.load(gpu, "text_encoder", source, expectedTensors("text_encoder", config), {
    allowExtra: (n) => isIgnorableTensor("text_encoder", n),
  });
  return new ClipTextModel(gpu, config, weights, act);
}

function need(inputs: Map<string, HostTensor>, name: string, rank: number, component: string): HostTensor {
  const t = inputs.get(name);
  if (!t) throw new InputError(`${component}: missing input tensor "${name}"`);
  if (t.shape.length !== rank) {
    throw new InputError(`${component}: input "${name}" has shape [${t.shape}], expected ${rank} dimensions`);
  }
  return t;
}

export interface ComponentResult {
  outputs: Map<string, HostTensor>;
  /** Intermediate activations (NCHW where 4-D), when asked for. */
  probes: Map<string, HostTensor>;
}

/** Runs a loaded network on named inputs. Extra inputs are ignored. */
export async function runComponent(
  gpu: Gpu,
  component: NetworkEntry,
  model: AnyModel,
  inputs: Map<string, HostTensor>,
  options: { probes?: boolean } = {},
): Promise<ComponentResult> {
  const outputs = new Map<string, HostTensor>();
  const probes = new Map<string, HostTensor>();
  const collect = async (p: Map<string, Tensor>) => {
    for (const [name, t] of p) probes.set(name, await readNchw(gpu, t));
  };
  if (component === "unet") {
    const unet = model as UNet;
    const cfg: UNetConfig = unet.config;
    const sample = need(inputs, "sample", 4, component);
    const [B, C, H, W] = sample.shape;
    if (C !== cfg.in_channels) {
      throw new InputError(`unet: "sample" has ${C} channels, the config says ${cfg.in_channels}`);
    }
    const ctx = need(inputs, "encoder_hidden_states", 3, component);
    const crossDim = Array.isArray(cfg.cross_attention_dim)
      ? cfg.cross_attention_dim[0]
      : cfg.cross_attention_dim;
    if (ctx.shape[0] !== B || ctx.shape[2] !== crossDim) {
      throw new InputError(
        `unet: "encoder_hidden_states" has shape [${ctx.shape}], expected [${B}, T, ${crossDim}]`,
      );
    }
    const ts = inputs.get("timestep");
    if (!ts) throw new InputError(`unet: missing input tensor "timestep"`);
    if (ts.data.length !== 1 && ts.data.length !== B) {
      throw new InputError(`unet: "timestep" must be a scalar or have ${B} entries, got [${ts.shape}]`);
    }
    const timesteps = ts.data.length === 1 ? new Float32Array(B).fill(ts.data[0]) : ts.data;
    const p = unet.plan(B, H, W, ctx.shape[1], options.probes);
    writeActivation(gpu, p.sample, nchwToNhwc(sample).data);
    gpu.device.queue.writeBuffer(p.timestep.buffer, 0, Float32Array.from(timesteps));
    writeActivation(gpu, p.context, ctx.data);
    p.plan.run("unet");
    outputs.set("out", await readNchw(gpu, p.out));
    await collect(p.probes);
  } else if (component === "vae-decode") {
    const vae = model as Vae;
    const cfg: VaeConfig = vae.config;
    const z = need(inputs, "z", 4, component);
    if (z.shape[0] !== 1) {
      throw new InputError(`vae-decode: batch ${z.shape[0]} not supported; decode one latent at a time`);
    }
    if (z.shape[1] !== cfg.latent_channels) {
      throw new InputError(`vae-decode: "z" must have ${cfg.latent_channels} channels`);
    }
    const p = vae.decodePlan(z.shape[2], z.shape[3], options.probes);
    writeActivation(gpu, p.z, nchwToNhwc(z).data);
    p.plan.run("vae decode");
    outputs.set("image", await readNchw(gpu, p.image));
    await collect(p.probes);
  } else if (component === "vae-encode") {
    const vae = model as Vae;
    const cfg: VaeConfig = vae.config;
    const image = need(inputs, "image", 4, component);
    if (image.shape[0] !== 1) throw new InputError(`vae-encode: batch ${image.shape[0]} not supported`);
    if (image.shape[1] !== cfg.in_channels) {
      throw new InputError(`vae-encode: "image" must have ${cfg.in_channels} channels`);
    }
    const p = vae.encodePlan(image.shape[2], image.shape[3], options.probes);
    writeActivation(gpu, p.image, nchwToNhwc(image).data);
    p.plan.run("vae encode");
    const moments = await readNchw(gpu, p.moments);
    const [, C2, h, w] = moments.shape;
    const half = (C2 / 2) * h * w;
    outputs.set("mean", { shape: [1, C2 / 2, h, w], data: moments.data.slice(0, half) });
    outputs.set("logvar", {
      shape: [1, C2 / 2, h, w],
      data: moments.data.slice(half).map((v) => Math.min(20, Math.max(-30, v))),
    });
    await collect(p.probes);
  } else if (component === "taesd-decode") {
    // The fixtures' names: `latents` (the UNet's, unscaled) → `image` in about [−1, 1].
    const taesd = model as Taesd;
    const latents = need(inputs, "latents", 4, component);
    if (latents.shape[0] !== 1) throw new InputError(`${component}: batch ${latents.shape[0]} not supported`);
    if (latents.shape[1] !== taesd.config.latent_channels) {
      throw new InputError(`${component}: "latents" must have ${taesd.config.latent_channels} channels`);
    }
    const p = taesd.decodePlan(latents.shape[2], latents.shape[3], options.probes);
    writeActivation(gpu, p.latents, nchwToNhwc(latents).data);
    p.plan.run("taesd decode");
    outputs.set("image", await readNchw(gpu, p.image));
    await collect(p.probes);
  } else if (component === "taesd-encode") {
    const taesd = model as Taesd;
    const image = need(inputs, "image", 4, component);
    const [B, C, H, W] = image.shape;
    if (B !== 1) throw new InputError(`${component}: batch ${B} not supported`);
    if (C !== taesd.config.in_channels) {
      throw new InputError(`${component}: "image" must have ${taesd.config.in_channels} channels`);
    }
    if (H % 8 || W % 8) {
      throw new InputError(`${component}: "image" is ${H}×${W}; both must be multiples of 8`);
    }
    const p = taesd.encodePlan(H, W, options.probes);
    writeActivation(gpu, p.image, nchwToNhwc(image).data);
    p.plan.run("taesd encode");
    outputs.set("latents", await readNchw(gpu, p.latents));
    await collect(p.probes);
  } else {
    const clip = model as ClipTextModel;
    const cfg: ClipTextConfig = clip.config;
    const ids = need(inputs, "input_ids", 2, component);
    for (const v of ids.data) {
      if (!Number.isInteger(v) || v < 0 || v >= cfg.vocab_size) {
        throw new InputError(`clip: token id ${v} outside the vocabulary (0..${cfg.vocab_size - 1})`);
      }
    }
    const p = clip.plan(ids.shape[0], ids.shape[1]);
    gpu.device.queue.writeBuffer(p.ids.buffer, 0, Uint32Array.from(ids.data));
    p.plan.run("clip");
    outputs.set("last_hidden_state", {
      shape: [...p.lastHidden.shape],
      data: await readTensor(gpu, p.lastHidden),
    });
    outputs.set("penultimate_hidden_state", {
      shape: [...p.penultimate.shape],
      data: await readTensor(gpu, p.penultimate),
    });
    outputs.set("penultimate_hidden_state_final_ln", {
      shape: [...p.penultimateFinalLn.shape],
      data: await readTensor(gpu, p.penultimateFinalLn),
    });
  }
  return { outputs, probes };
}
