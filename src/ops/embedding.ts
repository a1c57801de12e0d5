// Token + position embedding lookup (CLIP's text embeddings).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";

export interface EmbeddingParams {
  /** [B, T] u32 token ids (as an "f32"-typed 4-byte tensor holding u32 bits). */
  ids: Tensor;
  /** [V, C] f16 */
  tokenEmbedding: Tensor;
  /** [P, C] f16 with P ≥ T */
  positionEmbedding: Tensor;
  /** [B, T, C] */
  out: Tensor;
  act: ActDType;
}

export function embedding(gpu: Gpu, p: EmbeddingParams): Dispatch[] {
  const [B, T] = p.ids.shape;
  const [V, C] = p.tokenEmbedding.shape;
  if (C % 2) throw new Error(`embedding: width ${C} must be even`);
  if (p.positionEmbedding.shape[1] !== C || p.positionEmbedding.shape[0] < T) {
    throw new Error(
      `embedding: position table [${p.positionEmbedding.shape}] does not cover ${T} tokens of width ${C}`,
    );
  }
  if (p.out.shape.join() !== [B, T, C].join()) throw new Error(`embedding: out must be [${B}, ${T}, ${C}]`);
  const total = B * T * (C / 2);
  const params = gpu.uniform(new Uint32Array([T, C / 2, total, V]), "embedding params");
  const pipeline = gpu.kernel("embedding", { ACT: p.act });
  const groups = Math.ceil(total / 64);
  const x = Math.min(groups, 65535);
  return [
    gpu.dispatch(pipeline, [
      p.ids.buffer,
      p.tokenEmbedding.buffer,
      p.positionEmbedding.buffer,
      p.out.buffer,
      params,
    ], [
      x,
      Math.ceil(groups / x),
    ], "embedding"),
  ];
}
