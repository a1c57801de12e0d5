// CLIPTextModel (transformers) from its config: token + position embeddings, pre-LN encoder layers with
// causal self-attention and a quick_gelu (SD 1.x) or gelu (SD 2.x) MLP, final layer norm. Weight names
// are transformers' (`text_model.encoder.layers.0.self_attn.q_proj.weight`).

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { clipHeadDim, type ClipTextConfig } from "./clip/config.ts";
import { Plan, type Weights } from "./graph.ts";
import { linear } from "../ops/linear.ts";
import { layerNorm } from "../ops/norm.ts";
import { attention } from "../ops/attention.ts";
import { embedding } from "../ops/embedding.ts";

export interface ClipPlan {
  plan: Plan;
  /** [B, T] u32 token ids */
  ids: Tensor;
  /** final_layer_norm(h_L): [B, T, C] */
  lastHidden: Tensor;
  /** h_{L-1} (hidden_states[-2]), without and with the final layer norm (clip skip 2 / SD 2.x style). */
  penultimate: Tensor;
  penultimateFinalLn: Tensor;
}

export class ClipTextModel {
  private readonly plans = new Map<string, ClipPlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: ClipTextConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {}

  plan(batch: number, tokens: number): ClipPlan {
    const key = `${batch}x${tokens}`;
    let p = this.plans.get(key);
    if (!p) {
      p = this.build(batch, tokens);
      this.plans.set(key, p);
    }
    return p;
  }

  dropPlans(): void {
    for (const p of this.plans.values()) p.plan.destroy();
    this.plans.clear();
  }

  private build(B: number, T: number): ClipPlan {
    const c = this.config;
    if (T > c.max_position_embeddings) {
      throw new Error(`CLIP: ${T} tokens exceed max_position_embeddings ${c.max_position_embeddings}`);
    }
    const C = c.hidden_size;
    const gpu = this.gpu;
    const act = this.act;
    const w = this.weights;
    const plan = new Plan(gpu, act);
    const P = "text_model";
    const ids = plan.tensorOf([B, T], "f32", "input_ids");
    const flat = (t: Tensor) => t.view([B * T, t.shape[t.shape.length - 1]]);
    let h = plan.tensor([B, T, C], "embeddings");
    plan.add(embedding(gpu, {
      ids,
      tokenEmbedding: w.get(`${P}.embeddings.token_embedding.weight`),
      positionEmbedding: w.get(`${P}.embeddings.position_embedding.weight`),
      out: h,
      act,
    }));
    const lin = (
      x: Tensor,
      name: string,
      out: Tensor,
      opts: { residual?: Tensor; activation?: "quick_gelu" | "gelu" } = {},
    ) =>
      plan.add(linear(gpu, {
        x: flat(x),
        weight: w.linear(`${name}.weight`),
        bias: w.get(`${name}.bias`),
        residual: opts.residual ? flat(opts.residual) : undefined,
        activation: opts.activation,
        out: flat(out),
        act,
      }));
    const norm = (x: Tensor, name: string, out: Tensor) =>
      plan.add(layerNorm(gpu, {
        x: flat(x),
        gamma: w.get(`${name}.weight`),
        beta: w.get(`${name}.bias`),
        out: flat(out),
        eps: c.layer_norm_eps,
        act,
      }));

    let penultimate: Tensor | null = null;
    for (let l = 0; l < c.num_hidden_layers; l++) {
      if (l === c.num_hidden_layers - 1) penultimate = h;
      const L = `${P}.encoder.layers.${l}`;
      const n1 = plan.tensor([B, T, C], `${L}.layer_norm1`);
      norm(h, `${L}.layer_norm1`, n1);
      const q = plan.tensor([B, T, C], `${L}.q`);
      const k = plan.tensor([B, T, C], `${L}.k`);
      const v = plan.tensor([B, T, C], `${L}.v`);
      lin(n1, `${L}.self_attn.q_proj`, q);
      lin(n1, `${L}.self_attn.k_proj`, k);
      lin(n1, `${L}.self_attn.v_proj`, v);
      plan.release(n1);
      const a = plan.tensor([B, T, C], `${L}.attn`);
      plan.add(
        attention(gpu, {
          q,
          k,
          v,
          out: a,
          heads: c.num_attention_heads,
          headDim: clipHeadDim(c),
          causal: true,
          act,
        }),
      );
      plan.release(q, k, v);
      const h1 = plan.tensor([B, T, C], `${L}.self_attn`);
      lin(a, `${L}.self_attn.out_proj`, h1, { residual: h });
      plan.release(a);
      if (h !== penultimate) plan.release(h);
      const n2 = plan.tensor([B, T, C], `${L}.layer_norm2`);
      norm(h1, `${L}.layer_norm2`, n2);
      const m = plan.tensor([B, T, c.intermediate_size], `${L}.mlp.fc1`);
      lin(n2, `${L}.mlp.fc1`, m, { activation: c.hidden_act });
      plan.release(n2);
      const h2 = plan.tensor([B, T, C], L);
      lin(m, `${L}.mlp.fc2`, h2, { residual: h1 });
      plan.release(m, h1);
      h = h2;
    }
    penultimate ??= h;
    const lastHidden = plan.tensor([B, T, C], "last_hidden_state");
    norm(h, `${P}.final_layer_norm`, lastHidden);
    const penultimateFinalLn = plan.tensor([B, T, C], "penultimate_hidden_state_final_ln");
    norm(penultimate, `${P}.final_layer_norm`, penultimateFinalLn);
    return { plan, ids, lastHidden, penultimate, penultimateFinalLn };
  }
}
