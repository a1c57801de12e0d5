// What opening a checkpoint gives: the components found, the scheduler config and the prediction type,
// with notes on everything assumed or missing. Shared by the diffusers-folder and single-file openers.

import type { ClipTextConfig } from "../clip/config.ts";
import type { UNetConfig } from "../unet/config.ts";
import type { VaeConfig } from "../vae/config.ts";
import type { ModelFamily, PredictionType } from "../family.ts";
import type { ComponentSource } from "./component.ts";

export interface OpenModelOptions {
  /** Overrides the scheduler config / detection (the only way to know it for single files). */
  predictionType?: PredictionType;
  /** Config overrides (diffusers / transformers JSON keys), merged over config.json or the inferred config. */
  unet?: Record<string, unknown>;
  vae?: Record<string, unknown>;
  textEncoder?: Record<string, unknown>;
}

export interface OpenedModel {
  path: string;
  format: "diffusers" | "single-file";
  /** SD 1.x (CLIP ViT-L, 768-wide context, conv proj_in) or SD 2.x (OpenCLIP ViT-H, 1024, Linear proj_in). */
  family: ModelFamily | null;
  unet: ComponentSource<UNetConfig> | null;
  vae: ComponentSource<VaeConfig> | null;
  textEncoder: ComponentSource<ClipTextConfig> | null;
  /** scheduler_config.json (diffusers), or the family's default scheduler config (single files). */
  scheduler: Record<string, unknown>;
  predictionType: PredictionType;
  /** Where predictionType came from, in words (a guess is said to be one). */
  predictionTypeSource: string;
  /** Folder with vocab.json / merges.txt (diffusers layout); null for single files. */
  tokenizerDir: string | null;
  notes: string[];
  /** Single files: keys outside all components (alphas_cumprod, model_ema.*, ...), ignored. */
  ignoredTensors: string[];
  close(): void;
}
