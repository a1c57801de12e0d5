// "Looks like": when a component's tensors don't fit its config, a structural signature of the file's
// tensors against the config's says which model the file is instead (SD 1.x vs 2.x UNet, CLIP width, ...).

import { type ClipTextConfig, parseClipTextConfig } from "../clip/config.ts";
import { referenceConfigJson } from "../presets.ts";
import type { ReferenceModel } from "../presets.ts";
import { parseUNetConfig, type UNetConfig } from "../unet/config.ts";
import { parseVaeConfig, type VaeConfig } from "../vae/config.ts";
import { expectedTensors } from "../expected.ts";
import { type ComponentSource, sameShape } from "./component.ts";

type ShapeList = [string, number[]][];

function fileShapes(component: ComponentSource): ShapeList {
  const keys = component.map
    ? [
      ...component.map.entries.filter((e) => component.has(e.name)).map((e) => e.name),
      ...component.unknownKeys(),
    ]
    : component.names();
  return keys.map((k) => {
    try {
      // unknown single-file keys: only their raw shape is known
      return [k, component.has(k) ? component.tensor(k).shape : component.fileInfo(k).shape];
    } catch {
      return [k, []];
    }
  });
}

function unetSignature(shapes: ShapeList): string | null {
  const toK = shapes.find(([k]) => /attn2\.to_k\.weight$/.test(k))?.[1];
  const projIn = shapes.find(([k]) => /proj_in\.weight$/.test(k))?.[1];
  const convIn = shapes.find(([k]) => /^(conv_in|input_blocks\.0\.0)\.weight$/.test(k))?.[1];
  if (!toK || !projIn) return null;
  return unetSignatureOf(projIn.length === 2, toK[1], convIn?.[0]);
}

function unetSignatureOf(linear: boolean, crossDim: number, width: number | undefined): string {
  const style = linear && crossDim === 1024
    ? "SD 2.x"
    : !linear && crossDim === 768
    ? "SD 1.x"
    : linear
    ? "SD 2.x-style"
    : "SD 1.x-style";
  return `${style} UNet (${
    linear ? "Linear" : "1×1 conv"
  } proj_in/proj_out, cross-attention context width ${crossDim}` +
    `${width ? `, base width ${width}` : ""})`;
}

function clipSignature(shapes: ShapeList): string | null {
  const tok = shapes.find(([k]) => /token_embedding\.weight$/.test(k))?.[1];
  if (!tok) return null;
  let layers = 0;
  for (const [k] of shapes) {
    const m = k.match(/(?:layers|resblocks)\.(\d+)\./);
    if (m) layers = Math.max(layers, +m[1] + 1);
  }
  return clipSignatureOf(tok[1], layers);
}

function clipSignatureOf(width: number, layers: number): string {
  const style = width === 768
    ? "SD 1.x's CLIP ViT-L/14"
    : width === 1024
    ? "SD 2.x's OpenCLIP ViT-H/14"
    : "a CLIP";
  return `${style} text encoder (width ${width}, ${layers} layers)`;
}

function vaeSignature(shapes: ShapeList): string | null {
  const widths: number[] = [];
  for (const [k, s] of shapes) {
    const m = k.match(/^encoder\.down_blocks\.(\d+)\.resnets\.0\.conv2\.weight$/);
    if (m) widths[+m[1]] = s[0];
  }
  const latent = shapes.find(([k]) => k === "decoder.conv_in.weight")?.[1]?.[1];
  if (widths.length === 0 || latent === undefined) return null;
  return `VAE with widths [${widths}] and ${latent} latent channels`;
}

export function describeMismatch(component: ComponentSource): string | null {
  const shapes = fileShapes(component);
  let file: string | null;
  let config: string;
  switch (component.kind) {
    case "unet": {
      const c = component.config as UNetConfig;
      file = unetSignature(shapes);
      const cross = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
      config = unetSignatureOf(c.use_linear_projection, cross, c.block_out_channels[0]);
      break;
    }
    case "vae": {
      const c = component.config as VaeConfig;
      file = vaeSignature(shapes);
      config = `VAE with widths [${c.block_out_channels}] and ${c.latent_channels} latent channels`;
      break;
    }
    case "text_encoder": {
      const c = component.config as ClipTextConfig;
      file = clipSignature(shapes);
      config = clipSignatureOf(c.hidden_size, c.num_hidden_layers);
      break;
    }
  }
  for (const family of ["sd15", "sd21"] as ReferenceModel[]) {
    if (matchesFamily(component, family)) {
      return `the file's tensors match ${
        REFERENCE_NAMES[family]
      }'s ${component.kind} exactly, but the config describes ${config}`;
    }
  }
  if (file && file !== config) return `the file looks like ${file}, but the config describes ${config}`;
  return null;
}

const REFERENCE_NAMES: Record<ReferenceModel, string> = {
  sd15: "Stable Diffusion 1.5",
  sd21: "Stable Diffusion 2.1",
};

/** True when the component's diffusers-named tensors equal a reference model's (and the config is another). */
function matchesFamily(component: ComponentSource, family: ReferenceModel): boolean {
  if (component.map) return false; // single files: configs are inferred from the file itself
  const json = referenceConfigJson(family);
  let expected: Map<string, number[]>;
  switch (component.kind) {
    case "unet":
      expected = expectedTensors("unet", parseUNetConfig(json.unet));
      break;
    case "vae":
      expected = expectedTensors("vae", parseVaeConfig(json.vae));
      break;
    case "text_encoder":
      expected = expectedTensors("text_encoder", parseClipTextConfig(json.text_encoder));
      break;
  }
  const names = component.names();
  if (names.length !== expected.size) return false;
  const own = component.expectedTensors();
  if (own.size === expected.size && [...own].every(([k, s]) => sameShape(expected.get(k) ?? [], s))) {
    return false;
  }
  return names.every((n) => {
    const s = expected.get(n);
    return s !== undefined && sameShape(component.tensor(n).shape, s);
  });
}
