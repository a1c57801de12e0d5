// The model builder: a forward is written once, one line per op (`h = b.conv("conv1", h)`), against
// symbolic activations. Recording is separate from the GPU, so the same forward
//   - compiles into a Plan (`compile`): buffers are allocated in recording order and a buffer returns to
//     the free list right after the last op that reads it, so no forward frees anything by hand;
//   - counts FLOPs without a GPU (`flops`), from the weight shapes of the declaration.
// Weight names are relative to the builder's scope (`b.at("resnets", 0)`), so they equal checkpoint names.
// The scope's weight bookkeeping, graph edges and `compile` are in builder_base.ts, the GEMM ops (conv,
// linear, GEGLU) in builder_gemm.ts, the other ops here. Values, nodes and compilation, with the fusions that cut
// dispatches (a norm writing its GEMM's operand, joint linears as one GEMM), are in graph.ts.

import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { groupNorm, layerNorm } from "../ops/norm.ts";
import { attention, attentionFlops, attentionWritesOperand } from "../ops/attention.ts";
import { concatChannels, resizeNearest, upsampleNearest2x } from "../ops/layout.ts";
import { type Activation as MapActivation, map, silu } from "../ops/elementwise.ts";
import { timestepEmbedding } from "../ops/timestep.ts";
import { embedding } from "../ops/embedding.ts";
import type { PackedActivations } from "../ops/operand.ts";
import type { OpShape } from "../ops/tuning.ts";
import type { WeightShapes } from "./declare.ts";
import { GemmBuilder } from "./builder_gemm.ts";
import {
  type Compiled,
  type GemmKind,
  Graph,
  type GraphOptions,
  type RecordContext,
  Value,
} from "./graph.ts";

export { type Compiled, type GemmKind, type GraphOptions, Value };

export class ModelBuilder extends GemmBuilder {
  /**
   * `weights`: the loaded weights (to compile) or a declaration's shapes (to count FLOPs). `fuse: false`
   * records every op on its own, without the fusions that change the dispatch list but not a bit of the
   * results (tests compare the two; such a plan needs Weights without packed groups).
   */
  static create(weights: WeightShapes, act: ActDType, options: GraphOptions = {}): ModelBuilder {
    const graph = new Graph(options.fuse ?? true, options.maxBindingBytes ?? Infinity);
    return new ModelBuilder(graph, weights, act, "", options.probes ?? false);
  }

  /** The child module scope (`b.at("down_blocks", 0)` → weights under `down_blocks.0.`). */
  at(...path: (string | number)[]): ModelBuilder {
    return new ModelBuilder(
      this.graph,
      this.weights,
      this.act,
      `${this.prefix}${path.join(".")}.`,
      this.withProbes,
    );
  }

  // ---- ops (GEMMs in builder_gemm.ts) ----

  /** GroupNorm `name` over NHWC channels, optionally followed by SiLU in the same kernel. */
  groupNorm(name: string, x: Value, o: { groups: number; eps: number; silu: boolean }): Value {
    const out = this.value(this.prefix + name, x.shape);
    const [gamma, beta] = [this.weight(`${name}.weight`), this.weight(`${name}.bias`)];
    const run = (c: RecordContext, to: Tensor | PackedActivations) =>
      groupNorm(c.gpu, {
        x: c.tensor(x),
        gamma: c.weights.get(gamma),
        beta: c.weights.get(beta),
        out: to,
        groups: o.groups,
        eps: o.eps,
        silu: o.silu,
        act: c.act,
      });
    return this.node([x], out, 0, (c) => run(c, c.tensor(out)), {
      writesOperand: { able: () => true, record: run },
    });
  }

  /** LayerNorm `name` over the last axis. */
  layerNorm(name: string, x: Value, eps: number): Value {
    const out = this.value(this.prefix + name, x.shape);
    const [gamma, beta] = [this.weight(`${name}.weight`), this.weight(`${name}.bias`)];
    const run = (c: RecordContext, to: Tensor | PackedActivations) =>
      layerNorm(c.gpu, {
        x: c.tensor(x.rows()),
        gamma: c.weights.get(gamma),
        beta: c.weights.get(beta),
        out: to,
        eps,
        act: c.act,
      });
    return this.node([x], out, 0, (c) => run(c, c.tensor(out.rows())), {
      writesOperand: { able: () => true, record: run },
    });
  }

  /** Multi-head attention of q [B, Nq, H·D] over k, v [B, Nk, H·D] (flash-style: no Nq×Nk matrix). */
  attention(q: Value, k: Value, v: Value, o: { heads: number; headDim: number; causal?: boolean }): Value {
    const [B, nq] = q.shape;
    const nk = k.shape[1];
    const out = this.value(`${this.prefix}attn`, q.shape);
    const flops = attentionFlops(B, o.heads, nq, nk, o.headDim) / (o.causal ? 2 : 1);
    const run = (c: RecordContext, to: Tensor | PackedActivations) =>
      attention(c.gpu, {
        q: c.columns(q),
        k: c.columns(k),
        v: c.columns(v),
        out: to,
        heads: o.heads,
        headDim: o.headDim,
        causal: o.causal,
        act: c.act,
      });
    const op: OpShape = {
      kind: "attention",
      batch: B,
      nq,
      nk,
      heads: o.heads,
      headDim: o.headDim,
      act: this.act,
      causal: o.causal ?? false,
    };
    return this.node([q, k, v], out, flops, (c) => run(c, c.tensor(out)), {
      op,
      writesOperand: { able: (act) => attentionWritesOperand(o.heads, o.headDim, act), record: run },
    });
  }

  /** Elementwise activation(x · scale + bias) · outScale, one kernel (ops/elementwise.ts `map`). */
  map(
    label: string,
    x: Value,
    o: { scale?: number; bias?: number; activation?: MapActivation; outScale?: number },
  ): Value {
    const out = this.value(this.prefix + label, x.shape);
    return this.node(
      [x],
      out,
      0,
      (c) => map(c.gpu, { x: c.tensor(x), out: c.tensor(out), act: c.act, ...o }),
    );
  }

  silu(x: Value, label = "silu"): Value {
    const out = this.value(this.prefix + label, x.shape);
    return this.node([x], out, 0, (c) => silu(c.gpu, { x: c.tensor(x), out: c.tensor(out), act: c.act }));
  }

  /** Nearest-neighbour ×2 upsampling, NHWC. */
  upsample2x(x: Value): Value {
    const [B, H, W, C] = x.shape;
    const out = this.value(`${this.prefix}upsample`, [B, 2 * H, 2 * W, C]);
    return this.node(
      [x],
      out,
      0,
      (c) => upsampleNearest2x(c.gpu, { x: c.tensor(x), out: c.tensor(out), act: c.act }),
    );
  }

  /** Nearest upsampling NHWC to [h, w] (diffusers' Upsample2D given an output size; ×2 takes upsample2x's kernel). */
  upsampleTo(x: Value, h: number, w: number): Value {
    const [B, , , C] = x.shape;
    const out = this.value(`${this.prefix}upsample`, [B, h, w, C]);
    return this.node(
      [x],
      out,
      0,
      (c) => resizeNearest(c.gpu, { x: c.tensor(x), out: c.tensor(out), act: c.act }),
    );
  }

  /** Channel concatenation [B, H, W, Ca] ++ [B, H, W, Cb]. */
  concat(a: Value, b: Value): Value {
    const [B, H, W, ca] = a.shape;
    const out = this.value(`${this.prefix}cat`, [B, H, W, ca + b.shape[3]]);
    return this.node(
      [a, b],
      out,
      0,
      (c) => concatChannels(c.gpu, { a: c.tensor(a), b: c.tensor(b), out: c.tensor(out), act: c.act }),
    );
  }

  /** diffusers' Timesteps: sinusoidal features [B, dim] of f32 timesteps [B]. */
  timestepFeatures(t: Value, o: { dim: number; flipSinToCos: boolean; freqShift: number }): Value {
    const out = this.value(`${this.prefix}time_proj`, [t.shape[0], o.dim]);
    return this.node([t], out, 0, (c) =>
      timestepEmbedding(c.gpu, {
        timesteps: c.tensor(t),
        out: c.tensor(out),
        flipSinToCos: o.flipSinToCos,
        freqShift: o.freqShift,
        act: c.act,
      }));
  }

  /** Token + position embedding lookup: ids [B, T] → [B, T, C]. */
  embedding(ids: Value, tokenTable: string, positionTable: string): Value {
    const [B, T] = ids.shape;
    const [token, position] = [this.weight(tokenTable), this.weight(positionTable)];
    const C = this.weights.shape(token)[1];
    const out = this.value(`${this.prefix}embeddings`, [B, T, C]);
    return this.node([ids], out, 0, (c) =>
      embedding(c.gpu, {
        ids: c.tensor(ids),
        tokenEmbedding: c.weights.get(token),
        positionEmbedding: c.weights.get(position),
        out: c.tensor(out),
        act: c.act,
      }));
  }
}
