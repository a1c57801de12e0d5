// CLIPTextModel (transformers) from its config: token + position embeddings, pre-LN encoder layers with
// causal self-attention and a quick_gelu (SD 1.x) or gelu (SD 2.x) MLP, final layer norm. Weight names
// are transformers' (`text_model.encoder.layers.0.self_attn.q_proj.weight`).

import type { Gpu } from "../../gpu/device.ts";
import type { ActDType } from "../../gpu/pipelines.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import { type GraphOptions, ModelBuilder, type Value } from "../builder.ts";
import type { WeightDecl, WeightShapes } from "../declare.ts";
import { compilePlan } from "../model_plan.ts";
import { type Plan, PlanCache, planKey } from "../plan.ts";
import type { Weights } from "../weights.ts";
import { attention, CLIP_ATTENTION, declareAttention } from "../blocks/attention.ts";
import { clipHeadDim, type ClipTextConfig } from "./config.ts";

/** The text encoder's tensors in state-dict order. */
export function declareClip(d: WeightDecl, c: ClipTextConfig): void {
  const h = c.hidden_size;
  const model = d.at("text_model");
  model.add("embeddings.token_embedding.weight", [c.vocab_size, h], "token_embedding");
  model.add("embeddings.position_embedding.weight", [c.max_position_embeddings, h], "position_embedding");
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const layer = model.at("encoder.layers", l);
    declareAttention(layer.at("self_attn"), CLIP_ATTENTION, h);
    layer.norm("layer_norm1", h);
    layer.linear("mlp.fc1", c.intermediate_size, h);
    layer.linear("mlp.fc2", h, c.intermediate_size);
    layer.norm("layer_norm2", h);
  }
  model.norm("final_layer_norm", h);
  if (c.with_projection) d.linear("text_projection", c.projection_dim, h, false);
}

export interface ClipOutputs {
  /** final_layer_norm(h_L): [B, T, C] */
  lastHidden: Value;
  /** h_{L-1} (hidden_states[-2]), without and with the final layer norm (clip skip 2 / SD 2.x style). */
  penultimate: Value;
  penultimateFinalLn: Value;
}

/** ids [B, T] (f32 token ids) → the hidden states SD conditions on. */
export function clipForward(b: ModelBuilder, c: ClipTextConfig, ids: Value): ClipOutputs {
  const [, T] = ids.shape;
  if (T > c.max_position_embeddings) {
    throw new Error(`CLIP: ${T} tokens exceed max_position_embeddings ${c.max_position_embeddings}`);
  }
  const model = b.at("text_model");
  const eps = c.layer_norm_eps;
  let h = model.embedding(ids, "embeddings.token_embedding.weight", "embeddings.position_embedding.weight");
  let penultimate = h;
  for (let l = 0; l < c.num_hidden_layers; l++) {
    if (l === c.num_hidden_layers - 1) penultimate = h;
    const layer = model.at("encoder.layers", l);
    h = attention(layer.at("self_attn"), layer.layerNorm("layer_norm1", h, eps), {
      layout: CLIP_ATTENTION,
      heads: c.num_attention_heads,
      headDim: clipHeadDim(c),
      causal: true,
      residual: h,
    });
    const m = layer.linear("mlp.fc1", layer.layerNorm("layer_norm2", h, eps), { activation: c.hidden_act });
    h = layer.linear("mlp.fc2", m, { residual: h });
  }
  return {
    lastHidden: model.layerNorm("final_layer_norm", h, eps),
    penultimate,
    penultimateFinalLn: model.layerNorm("final_layer_norm", penultimate, eps),
  };
}

export function clipGraph(
  c: ClipTextConfig,
  weights: WeightShapes,
  act: ActDType,
  batch: number,
  tokens: number,
  options: GraphOptions = {},
) {
  const b = ModelBuilder.create(weights, act, options);
  const ids = b.input("input_ids", [batch, tokens], "f32");
  const out = clipForward(b, c, ids);
  b.output(out.lastHidden);
  b.output(out.penultimate);
  b.output(out.penultimateFinalLn);
  return { b, ids, out };
}

export interface ClipPlan {
  plan: Plan;
  /** [B, T] token ids (f32) */
  ids: Tensor;
  lastHidden: Tensor;
  penultimate: Tensor;
  penultimateFinalLn: Tensor;
}

export class ClipTextModel {
  private readonly plans = new PlanCache<ClipPlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: ClipTextConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {
    // q/k/v of each layer are packed side by side, before a plan or a LoRA packs any of them.
    weights.defineLinearGroups(clipGraph(config, weights, "f32", 1, 1).b.linearGroups());
  }

  plan(batch: number, tokens: number): ClipPlan {
    return this.plans.get(planKey([batch, tokens]), () => {
      const { b, ids, out } = clipGraph(this.config, this.weights, this.act, batch, tokens, {
        maxBindingBytes: this.gpu.maxBinding,
      });
      return compilePlan(b, { ids, ...out }, this.gpu, this.weights);
    });
  }

  dropPlans(): void {
    this.plans.clear();
  }
}
