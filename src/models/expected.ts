// The tensors a component's state dict must hold, computed from its config by the models' own weight
// declarations (declareUNet, declareVae, declareClip): diffusers / transformers names, shapes and roles, in
// state-dict order. The loader checks checkpoints against these lists; synthetic weights and the single-file
// name map are generated from them.

import { declarationOf, type TensorSpec } from "./declare.ts";
import { declareUNet } from "./unet/unet.ts";
import { declareVae } from "./vae/vae.ts";
import { declareClip } from "./clip/clip.ts";
import type { UNetConfig } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";
import type { ClipTextConfig } from "./clip/config.ts";

export type { ParamRole, TensorSpec } from "./declare.ts";

/** One of the three networks of a checkpoint. */
export type ComponentKind = "unet" | "vae" | "text_encoder";

export const unetTensorSpecs = (c: UNetConfig): TensorSpec[] => declarationOf(declareUNet, c);
export const vaeTensorSpecs = (c: VaeConfig): TensorSpec[] => declarationOf(declareVae, c);
export const clipTensorSpecs = (c: ClipTextConfig): TensorSpec[] => declarationOf(declareClip, c);

export type ComponentConfig = UNetConfig | VaeConfig | ClipTextConfig;

export function tensorSpecs(component: "unet", config: UNetConfig): TensorSpec[];
export function tensorSpecs(component: "vae", config: VaeConfig): TensorSpec[];
export function tensorSpecs(component: "text_encoder", config: ClipTextConfig): TensorSpec[];
export function tensorSpecs(component: ComponentKind, config: ComponentConfig): TensorSpec[];
export function tensorSpecs(component: ComponentKind, config: ComponentConfig): TensorSpec[] {
  switch (component) {
    case "unet":
      return unetTensorSpecs(config as UNetConfig);
    case "vae":
      return vaeTensorSpecs(config as VaeConfig);
    case "text_encoder":
      return clipTensorSpecs(config as ClipTextConfig);
  }
}

/** name → shape, in state-dict order (diffusers / transformers names). */
export function expectedTensors(component: "unet", config: UNetConfig): Map<string, number[]>;
export function expectedTensors(component: "vae", config: VaeConfig): Map<string, number[]>;
export function expectedTensors(component: "text_encoder", config: ClipTextConfig): Map<string, number[]>;
export function expectedTensors(component: ComponentKind, config: ComponentConfig): Map<string, number[]>;
export function expectedTensors(component: ComponentKind, config: ComponentConfig): Map<string, number[]> {
  return new Map(tensorSpecs(component, config).map((t) => [t.name, t.shape]));
}

export function parameterCount(shapes: Iterable<readonly number[]>): number {
  let n = 0;
  for (const s of shapes) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Buffers that checkpoints may carry next to the parameters but that are not weights (diffusers names).
 * transformers' CLIP `position_ids` is the only one in SD's components.
 */
export function isIgnorableTensor(component: ComponentKind, name: string): boolean {
  return component === "text_encoder" && name === "text_model.embeddings.position_ids";
}
