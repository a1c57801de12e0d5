// Prompt and negative prompt → the UNet's text context: CLIP's last hidden states for 77-token rows, with
// optional A1111 prompt weighting (src/text/prompt_weights.ts).
//
// Long prompts: "chunk" encodes every 75-token chunk as its own row and concatenates the rows along the
// sequence (A1111); "truncate" keeps the first 75 tokens (diffusers). The side with fewer chunks is padded
// with the empty prompt's row.
//
// Weighting "a1111" scales each token's hidden state by its weight, then multiplies the whole row by
// mean(before) / mean(after), as A1111's original emphasis does per chunk: the weights change the tokens'
// share of the context without changing its overall scale, which it found avoids artifacts. With all weights
// 1 this is exactly the identity.

import type { Gpu } from "../gpu/device.ts";
import { readTensor } from "../gpu/tensor.ts";
import type { ClipTextModel } from "../models/clip/clip.ts";
import type { ClipTokenizer } from "../text/tokenizer.ts";
import {
  parsePromptWeights,
  type PromptWeighting,
  type WeightedChunks,
  weightedChunks,
} from "../text/prompt_weights.ts";

export interface TextEncoderParts {
  gpu: Gpu;
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextModel;
}

export interface TextContext {
  /** [B, tokens, C]: the negative prompt's rows first when `cfg` (as diffusers concatenates them). */
  context: Float32Array;
  /** Sequence length: chunks × 77. */
  tokens: number;
}

/** A prompt's rows and per-token weights; "none" reads the prompt as plain text (all weights 1). */
export function promptChunks(
  tokenizer: ClipTokenizer,
  prompt: string,
  mode: "chunk" | "truncate",
  weighting: PromptWeighting,
): WeightedChunks {
  if (weighting === "a1111") return weightedChunks(tokenizer, parsePromptWeights(prompt), mode);
  const { ids, truncated } = tokenizer.chunks(prompt, mode);
  return { ids, weights: ids.map((row) => row.map(() => 1)), truncated };
}

/** CLIP's last hidden states for `rows` of token ids, in one batch: [rows, L, C]. */
export async function runTextEncoder(parts: TextEncoderParts, rows: number[][]): Promise<Float32Array> {
  const { gpu, textEncoder } = parts;
  const plan = textEncoder.plan(rows.length, rows[0].length);
  gpu.device.queue.writeBuffer(plan.ids.buffer, 0, Uint32Array.from(rows.flat()));
  plan.plan.run("text encoder");
  return await readTensor(gpu, plan.lastHidden);
}

/**
 * A1111's emphasis, in place: row r of `hidden` ([rows, L, C]) has each token's C values multiplied by
 * weights[r][token], then all of the row by its mean before / its mean after. Sums are in f64 (A1111 uses
 * torch's dtype: the results differ by rounding). A row whose weighted mean is 0 keeps the weighted values,
 * where A1111 would divide by zero.
 */
export function applyPromptWeights(hidden: Float32Array, weights: number[][]): void {
  const L = weights[0].length;
  const C = hidden.length / (weights.length * L);
  if (!Number.isInteger(C)) {
    throw new Error(`${hidden.length} hidden values for ${weights.length} rows of ${L}`);
  }
  const scaled = new Float64Array(L * C);
  weights.forEach((w, r) => {
    const row = hidden.subarray(r * L * C, (r + 1) * L * C);
    let before = 0;
    let after = 0;
    for (let t = 0; t < L; t++) {
      for (let c = 0; c < C; c++) {
        const k = t * C + c;
        before += row[k];
        scaled[k] = row[k] * w[t];
        after += scaled[k];
      }
    }
    const ratio = after === 0 ? 1 : before / after;
    for (let k = 0; k < row.length; k++) row[k] = scaled[k] * ratio;
  });
}

/** The UNet's context for a prompt (and, with `cfg`, the negative prompt). */
export async function encodePrompts(
  parts: TextEncoderParts,
  o: {
    prompt: string;
    negative: string;
    cfg: boolean;
    longPrompt: "chunk" | "truncate";
    weighting: PromptWeighting;
  },
): Promise<TextContext> {
  const { tokenizer } = parts;
  const chunks = (text: string) => promptChunks(tokenizer, text, o.longPrompt, o.weighting);
  const cond = chunks(o.prompt);
  const uncond: WeightedChunks = o.cfg ? chunks(o.negative) : { ids: [], weights: [], truncated: false };
  const count = Math.max(cond.ids.length, uncond.ids.length);
  const empty = chunks("");
  for (const side of o.cfg ? [uncond, cond] : [cond]) {
    while (side.ids.length < count) {
      side.ids.push(empty.ids[0]);
      side.weights.push(empty.weights[0]);
    }
  }
  // Rows in [uncond chunks…, cond chunks…] order: the flat result is already [B, chunks·L, C].
  const hidden = await runTextEncoder(parts, [...uncond.ids, ...cond.ids]);
  if (o.weighting === "a1111") applyPromptWeights(hidden, [...uncond.weights, ...cond.weights]);
  return { context: hidden, tokens: count * tokenizer.maxLength };
}
