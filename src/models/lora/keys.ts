// LoRA tensor names → (target weight, part). Two families:
//   kohya (A1111, sd-scripts):  <lora_unet_|lora_te_><module with _>.lora_down.weight / .lora_up.weight / .alpha
//   diffusers / PEFT:           <unet.|text_encoder.><module>.lora_A.weight / .lora_B.weight (alpha/rank folded
//                               into lora_B), also diffusers' older .lora.down/.lora.up,
//                               .lora_linear_layer.down/.up and attention-processor
//                               <attn>.processor.to_q_lora.down.weight forms, and an optional <module>.alpha.
// Every key ends up in exactly one bucket: a part of a target, "skipped" (a component this model has but this
// run does not load, e.g. text-encoder keys for `component unet`), "unmatched" (a LoRA key for a module this
// model does not have: another architecture, SDXL's lora_te1_/text_encoder_2) or "unknown" (not a LoRA key
// form this engine reads: LoHa, LoKr, DoRA scales, CP-decomposed convs, stray tensors).

import type { LoraComponent, LoraTarget, TargetIndex } from "./targets.ts";

export type LoraFormat = "kohya" | "diffusers";
export type LoraPart = "down" | "up" | "alpha";

/** A key in the grammar of one family, before lookup. */
export interface ParsedKey {
  format: LoraFormat;
  /** The component the key names (also ones this engine lacks: "te1", "text_encoder_2", …). */
  component: string;
  /** Lookup key: kohya `lora_unet_…` without suffix, diffusers `unet.<module>`. */
  module: string;
  part: LoraPart;
}

const KOHYA = /^(lora_(unet|te\d*)_.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/;
const DIFFUSERS =
  /^((unet|text_encoder(?:_\d+)?)\..+?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$/;
const PROCESSOR = /^((unet)\..+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;

const PARTS: Record<string, LoraPart> = {
  "lora_down.weight": "down",
  "lora_up.weight": "up",
  "lora_A.weight": "down",
  "lora_B.weight": "up",
  "lora.down.weight": "down",
  "lora.up.weight": "up",
  "lora_linear_layer.down.weight": "down",
  "lora_linear_layer.up.weight": "up",
  alpha: "alpha",
};

/** The grammar of one key, or null when it is not a LoRA key form this engine reads. */
export function parseKey(key: string): ParsedKey | null {
  let m = KOHYA.exec(key);
  if (m) {
    const component = m[2] === "unet" ? "unet" : m[2] === "te" ? "text_encoder" : m[2];
    return { format: "kohya", component, module: m[1], part: PARTS[m[3]] };
  }
  m = PROCESSOR.exec(key);
  if (m) {
    const projection = m[3] === "to_out" ? "to_out.0" : m[3];
    return { format: "diffusers", component: m[2], module: `${m[1]}.${projection}`, part: m[4] as LoraPart };
  }
  m = DIFFUSERS.exec(key);
  if (m) return { format: "diffusers", component: m[2], module: m[1], part: PARTS[m[3]] };
  return null;
}

/** The keys of one target's low-rank pair. */
export interface KeyGroup {
  target: LoraTarget;
  format: LoraFormat;
  down?: string;
  up?: string;
  alpha?: string;
}

export interface KeyMatch {
  groups: KeyGroup[];
  /** Keys naming a component that exists in the model but is not loaded here (warned about, not applied). */
  skipped: string[];
  /** LoRA keys whose module this model does not have. */
  unmatched: string[];
  /** Keys that are no LoRA form this engine reads. */
  unknown: string[];
  /** A target named twice, a pair without its other half: always errors. */
  errors: string[];
}

const KNOWN_COMPONENTS: readonly string[] = ["unet", "text_encoder"] satisfies LoraComponent[];

/** Sorts every key of a file into target groups and the problem buckets (see the header). */
export function matchKeys(keys: readonly string[], index: TargetIndex): KeyMatch {
  const byTarget = new Map<LoraTarget, KeyGroup>();
  const out: KeyMatch = { groups: [], skipped: [], unmatched: [], unknown: [], errors: [] };
  for (const key of keys) {
    if (key === "__metadata__") continue;
    const p = parseKey(key);
    if (!p) {
      out.unknown.push(key);
      continue;
    }
    const target = (p.format === "kohya" ? index.kohya : index.diffusers).get(p.module);
    if (!target) {
      const absent = KNOWN_COMPONENTS.includes(p.component) &&
        !index.components.has(p.component as LoraComponent);
      (absent ? out.skipped : out.unmatched).push(key);
      continue;
    }
    let g = byTarget.get(target);
    if (!g) byTarget.set(target, g = { target, format: p.format });
    if (g[p.part] !== undefined) {
      out.errors.push(`${key} and ${g[p.part]} both give the ${p.part} of ${target.weight}`);
      continue;
    }
    g[p.part] = key;
  }
  for (const g of byTarget.values()) {
    if (!g.down || !g.up) {
      const has = g.down ?? g.up ?? g.alpha;
      out.errors.push(`${has}: the ${g.down ? "up" : "down"} matrix of ${g.target.weight} is missing`);
      continue;
    }
    out.groups.push(g);
  }
  return out;
}
