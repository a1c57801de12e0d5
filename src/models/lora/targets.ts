// What a LoRA may change: every weight the UNet or the text encoder reads through a GEMM kernel (conv or
// Linear), found by recording the model's own forward over its declared shapes (no GPU), so a LoRA key maps
// to a name the code declares, never to a guess. Each target is reachable under the names LoRA files use:
//   kohya      lora_unet_<diffusers module, "." → "_">   lora_unet_down_blocks_0_attentions_0_proj_in
//              lora_unet_<LDM module, "." → "_">         lora_unet_input_blocks_1_1_proj_in (older files)
//              lora_te_<transformers module, "." → "_">  lora_te_text_model_encoder_layers_0_mlp_fc1
//   diffusers  unet.<module>, text_encoder.<module>      unet.down_blocks.0.attentions.0.proj_in
// kohya's "_" joins are ambiguous in general (to_out_0 vs a module named out_0); looking the joined form up in
// a table built from the declared names resolves them exactly.

import type { GemmKind } from "../builder.ts";
import { declaredShapes } from "../declare.ts";
import { clipTensorSpecs, unetTensorSpecs } from "../expected.ts";
import { unetGraph } from "../unet/unet.ts";
import { clipGraph } from "../clip/clip.ts";
import type { UNetConfig } from "../unet/config.ts";
import type { ClipTextConfig } from "../clip/config.ts";
import { unetOriginalNamer } from "../checkpoint/single_file_names.ts";

export type LoraComponent = "unet" | "text_encoder";

/** One weight a LoRA can update. */
export interface LoraTarget {
  component: LoraComponent;
  /** The declared (checkpoint) name: `down_blocks.0.attentions.0.proj_in.weight`. */
  weight: string;
  /** Which packing the GEMM that reads it uses. */
  kind: GemmKind;
  /** Checkpoint shape: [N, K] or [Cout, Cin, kh, kw]. */
  shape: readonly number[];
}

/** The UNet's GEMM weights (any latent size reads the same weights: record the smallest one). */
export function unetTargets(c: UNetConfig): LoraTarget[] {
  const specs = unetTensorSpecs(c);
  const m = 2 ** (c.block_out_channels.length - 1);
  const { b } = unetGraph(c, declaredShapes(specs), "f32", {
    batch: 1,
    height: m,
    width: m,
    contextTokens: 1,
  });
  return targetsOf("unet", b.gemmWeights(), specs);
}

/** The text encoder's GEMM weights. */
export function clipTargets(c: ClipTextConfig): LoraTarget[] {
  const specs = clipTensorSpecs(c);
  const { b } = clipGraph(c, declaredShapes(specs), "f32", 1, 1);
  return targetsOf("text_encoder", b.gemmWeights(), specs);
}

function targetsOf(
  component: LoraComponent,
  kinds: ReadonlyMap<string, GemmKind>,
  specs: readonly { name: string; shape: number[] }[],
): LoraTarget[] {
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  return [...kinds].map(([weight, kind]) => ({ component, weight, kind, shape: shapes.get(weight)! }));
}

const KOHYA_PREFIX: Record<LoraComponent, string> = { unet: "lora_unet_", text_encoder: "lora_te_" };

/** Module names of one model → targets, in both key families. */
export class TargetIndex {
  /** `lora_unet_down_blocks_0_…` (no suffix) → target. */
  readonly kohya = new Map<string, LoraTarget>();
  /** `unet.down_blocks.0.…` (no suffix) → target. */
  readonly diffusers = new Map<string, LoraTarget>();
  /** Components this index covers (a LoRA key of another known component is skipped, not unmatched). */
  readonly components: ReadonlySet<LoraComponent>;

  constructor(targets: readonly LoraTarget[], aliases: (t: LoraTarget) => string[] = () => []) {
    this.components = new Set(targets.map((t) => t.component));
    for (const t of targets) {
      const module = t.weight.replace(/\.weight$/, "");
      this.diffusers.set(`${t.component}.${module}`, t);
      for (const name of [module, ...aliases(t)]) {
        const key = KOHYA_PREFIX[t.component] + name.replaceAll(".", "_");
        const other = this.kohya.get(key);
        if (other && other !== t) {
          throw new Error(`LoRA targets: ${key} names ${other.weight} and ${t.weight}`);
        }
        this.kohya.set(key, t);
      }
    }
  }

  /** The index of a model's UNet and/or text encoder (components absent from `models` are not covered). */
  static of(models: { unet?: UNetConfig; textEncoder?: ClipTextConfig }): TargetIndex {
    const targets = [
      ...(models.unet ? unetTargets(models.unet) : []),
      ...(models.textEncoder ? clipTargets(models.textEncoder) : []),
    ];
    const ldm = models.unet ? unetOriginalNamer(models.unet) : undefined;
    return new TargetIndex(targets, (t) => {
      if (t.component !== "unet" || !ldm) return [];
      // Older kohya files name UNet modules as the single-file (LDM) checkpoint does.
      return [ldm(t.weight).replace(/\.weight$/, "")];
    });
  }
}
