// The model builder: a forward is written once, one line per op (`h = b.conv("conv1", h)`), against
// symbolic activations. Recording is separate from the GPU, so the same forward
//   - compiles into a Plan (`compile`): buffers are allocated in recording order and a buffer returns to
//     the free list right after the last op that reads it, so no forward frees anything by hand;
//   - counts FLOPs without a GPU (`flops`), from the weight shapes of the declaration.
// Weight names are relative to the builder's scope (`b.at("resnets", 0)`), so they equal checkpoint names.
// Values, nodes and compilation, with the fusions that cut dispatches (a norm writing its GEMM's operand,
// joint linears as one GEMM), are in graph.ts.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type DType, numel, Tensor } from "../gpu/tensor.ts";
import {
  conv2d,
  type Conv2dParams,
  type ConvInput,
  convInputOperand,
  convOutSize,
  convPadding,
  convTakesPackedInput,
} from "../ops/conv.ts";
import { type Activation, geglu, linear } from "../ops/linear.ts";
import { groupNorm, layerNorm } from "../ops/norm.ts";
import { attention, attentionFlops, attentionWritesOperand } from "../ops/attention.ts";
import { concatChannels, resizeNearest, upsampleNearest2x } from "../ops/layout.ts";
import { type Activation as MapActivation, map, silu } from "../ops/elementwise.ts";
import { timestepEmbedding } from "../ops/timestep.ts";
import { embedding } from "../ops/embedding.ts";
import { linearInputOperand, linearTakesPackedInput, type PackedActivations } from "../ops/operand.ts";
import type { OpShape } from "../ops/tuning.ts";
import type { WeightShapes } from "./declare.ts";
import {
  type Compiled,
  compileGraph,
  type GemmKind,
  Graph,
  type GraphOptions,
  JointGemm,
  type Node,
  planBytes,
  type RecordContext,
  Storage,
  Value,
} from "./graph.ts";
import type { Weights } from "./weights.ts";

export { type Compiled, type GemmKind, type GraphOptions, Value };

export class ModelBuilder {
  private constructor(
    private readonly graph: Graph,
    readonly weights: WeightShapes,
    readonly act: ActDType,
    readonly prefix: string,
    private readonly withProbes: boolean,
  ) {}

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

  /** Shape of the weight `name` in this scope. */
  shapeOf(name: string): readonly number[] {
    return this.weights.shape(this.prefix + name);
  }

  has(name: string): boolean {
    return this.weights.has(this.prefix + name);
  }

  /** Weights the forward recorded so far reads: a test checks them against the declaration. */
  weightsRead(): ReadonlySet<string> {
    return this.graph.weightsRead;
  }

  /** Weights the forward recorded so far reads through the conv or the linear GEMM (full names). */
  gemmWeights(): ReadonlyMap<string, GemmKind> {
    return this.graph.gemmWeights;
  }

  /** The full name of a weight this scope reads; a forward naming an undeclared weight fails here. */
  private weight(name: string, gemm?: GemmKind): string {
    const full = this.prefix + name;
    if (!this.weights.has(full)) throw new Error(`model builder: weight "${full}" is not declared`);
    this.graph.weightsRead.add(full);
    if (gemm) this.graph.gemmWeights.set(full, gemm);
    return full;
  }

  /** `name.bias` when the module has one. */
  private optionalBias(name: string): string | undefined {
    return this.has(`${name}.bias`) ? this.weight(`${name}.bias`) : undefined;
  }

  // ---- graph edges ----

  input(label: string, shape: readonly number[], dtype: DType = this.act): Value {
    const v = this.value(label, shape, dtype);
    this.graph.inputs.push(v);
    this.graph.pinned.add(v.storage);
    return v;
  }

  /** Keeps the value's buffer for the caller to read after a run. */
  output(v: Value): Value {
    this.graph.pinned.add(v.storage);
    return v;
  }

  /** Keeps an intermediate activation under a fixture hook name (absolute, not scoped) when probing. */
  probe(name: string, v: Value): void {
    if (!this.withProbes) return;
    this.graph.probes.set(name, v);
    this.graph.pinned.add(v.storage);
  }

  /** The GEMM, conv and attention shapes recorded so far, in order (the autotuner tunes these). */
  opShapes(): OpShape[] {
    return this.graph.nodes.flatMap((n) => (n.op ? [n.op] : []));
  }

  /** Sum of the GEMM-like work recorded so far (convs, linears, attention; a multiply-add = 2 FLOPs). */
  flops(): number {
    return this.graph.nodes.reduce((a, n) => a + n.flops, 0);
  }

  // ---- ops ----

  /**
   * Conv2d `name` (`name.weight` [Cout, Cin, k, k], `name.bias`), NHWC [B, H, W, Cin] → [B, Ho, Wo, Cout],
   * with the fused epilogue relu?((conv + bias + timeBias + residual) / outputScaleFactor + outputShift).
   */
  conv(
    name: string,
    x: Value,
    o: {
      stride?: 1 | 2;
      padding?: Conv2dParams["padding"];
      timeBias?: Value;
      residual?: Value;
      outputScaleFactor?: number;
      outputShift?: number;
      relu?: boolean;
    } = {},
  ): Value {
    const w = this.weight(`${name}.weight`, "conv");
    const [cout, cin, kh, kw] = this.weights.shape(w);
    const stride = o.stride ?? 1;
    const padding = o.padding ?? "same";
    const pad = convPadding(padding, kh, kw);
    const [B, H, W] = x.shape;
    const ho = convOutSize(H, kh, stride, pad.top, pad.bottom);
    const wo = convOutSize(W, kw, stride, pad.left, pad.right);
    const out = this.value(this.prefix + name, [B, ho, wo, cout]);
    const bias = this.optionalBias(name);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      conv2d(c.gpu, {
        x: input,
        weight: c.weights.conv(w),
        bias: bias ? c.weights.get(bias) : undefined,
        timeBias: o.timeBias && c.columns(o.timeBias),
        residual: o.residual && c.tensor(o.residual),
        out: c.tensor(out),
        stride,
        padding,
        outputScaleFactor: o.outputScaleFactor,
        outputShift: o.outputShift,
        relu: o.relu,
        act: c.act,
      });
    const op: OpShape = {
      kind: "conv",
      b: B,
      h: H,
      w: W,
      cin,
      cout,
      kh,
      kw,
      stride,
      padding,
      act: this.act,
      bias: !!bias,
      timeBias: !!o.timeBias,
      residual: !!o.residual,
      relu: !!o.relu,
    };
    const input = (act: ActDType): ConvInput => ({
      x: x.shape,
      weight: [cout, cin, kh, kw],
      stride,
      padding,
      residual: !!o.residual,
      act,
    });
    return this.node(
      [x, o.timeBias, o.residual],
      out,
      2 * numel(out.shape) * cin * kh * kw,
      (c) => run(c, c.tensor(x)),
      {
        op,
        gemmInput: {
          x,
          accepts: (gpu, act) => convTakesPackedInput(gpu, input(act)),
          operand: (c) => convInputOperand(c.gpu, input(c.act)),
          record: run,
        },
      },
    );
  }

  /**
   * Linear `name` over the last axis: [..., K] → [..., N], with `name.bias` when the module has one, an
   * optional fused activation and residual. A 1×1 conv weight [N, K, 1, 1] works as one (proj_in of SD 1.x).
   * `joint`: every joint linear over the same input value is one GEMM over their weights packed side by side
   * (q/k/v of a self-attention; k/v of every cross-attention over the context; every resnet's
   * time_emb_proj), recorded where the first one is; each result is its column range of that GEMM's output,
   * the same values as on its own. Plain linears only (no activation or residual), N % 4 == 0.
   */
  linear(
    name: string,
    x: Value,
    o: { activation?: Activation; residual?: Value; joint?: boolean } = {},
  ): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const [n, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const bias = this.optionalBias(name);
    if (o.joint && this.graph.fuse && n % 4 === 0 && !o.activation && !o.residual) {
      return this.jointLinear(name, w, x, [n, k]);
    }
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n]);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      linear(c.gpu, {
        x: input,
        weight: c.weights.linear(w),
        bias: bias ? c.weights.get(bias) : undefined,
        residual: o.residual && c.tensor(o.residual.rows()),
        activation: o.activation,
        out: c.tensor(out.rows()),
        act: c.act,
      });
    const op: OpShape = {
      kind: "linear",
      m: rows,
      k,
      n,
      act: this.act,
      geglu: false,
      bias: !!bias,
      residual: !!o.residual,
      activation: o.activation ?? "none",
    };
    return this.node([x, o.residual], out, 2 * rows * k * n, (c) => run(c, c.tensor(x.rows())), {
      op,
      gemmInput: this.linearInput(x, run),
    });
  }

  /** How a linear or GEGLU over x reads x written as its operand by the producer before it. */
  private linearInput(x: Value, record: (c: RecordContext, input: PackedActivations) => Dispatch[]) {
    return {
      x,
      accepts: (gpu: Gpu) => linearTakesPackedInput(gpu, x.rows().shape),
      operand: (c: RecordContext) => linearInputOperand(c.gpu, x.rows().shape, c.act),
      record,
    };
  }

  /** Weight names each joint GEMM of two or more linears reads: the model declares them to its Weights. */
  linearGroups(): string[][] {
    return [...this.graph.joint.values()].flat().filter((g) => g.names.length > 1).map((g) => [...g.names]);
  }

  private jointLinear(
    name: string,
    w: string,
    x: Value,
    [n, k]: readonly number[],
  ): Value {
    const rows = numel(x.shape) / k;
    const bpe = bytesPerElement(this.act);
    const same = this.graph.joint.get(x.storage) ?? [];
    this.graph.joint.set(x.storage, same);
    // Only the latest joint GEMM over x takes more columns, while its output fits one storage binding; then a
    // new one starts. Each keeps consecutive members of the weight group (Weights.linearGroup).
    let g: JointGemm | undefined = same.findLast((j) => j.x.shape.join() === x.shape.join());
    if (g && rows * (g.width + n) * bpe > this.graph.maxBindingBytes) g = undefined;
    if (!g) {
      const gemm = g = new JointGemm(x, new Storage(0, `${this.prefix}${name} (joint)`));
      same.push(gemm);
      const run = (c: RecordContext, input: Tensor | PackedActivations) =>
        linear(c.gpu, {
          x: input,
          weight: c.weights.linearGroup(gemm.names),
          bias: c.weights.groupBias(gemm.names),
          out: new Tensor(c.buffer(gemm.out), [rows, gemm.width], c.act, gemm.out.label),
          act: c.act,
        });
      // The autotuner tunes the joint GEMM's shape: n grows with the members below.
      gemm.op = {
        kind: "linear",
        m: rows,
        k,
        n: 0,
        act: this.act,
        geglu: false,
        bias: false,
        residual: false,
        activation: "none",
      };
      this.node(
        [x],
        new Value(gemm.out, [rows, n], this.act, gemm.out.label),
        0,
        (c) => run(c, c.tensor(x.rows())),
        {
          op: gemm.op,
          gemmInput: this.linearInput(x, run),
        },
      );
      gemm.node = this.graph.nodes[this.graph.nodes.length - 1];
    }
    const offset = g.width;
    g.names.push(w);
    g.width += n;
    g.out.bytes = rows * g.width * bytesPerElement(this.act);
    g.node!.flops += 2 * rows * k * n;
    g.op!.n = g.width;
    g.op!.bias ||= this.has(`${name}.bias`);
    return new Value(g.out, [...x.shape.slice(0, -1), n], this.act, this.prefix + name, { offset, of: g });
  }

  /** GEGLU projection `name` ([2D, K] weight: value and gate halves) in one kernel: [..., K] → [..., D]. */
  geglu(name: string, x: Value): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const bias = this.weight(`${name}.bias`);
    const [n2, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n2 / 2]);
    const run = (c: RecordContext, input: Tensor | PackedActivations) =>
      geglu(c.gpu, {
        x: input,
        weight: c.weights.linear(w),
        bias: c.weights.get(bias),
        out: c.tensor(out.rows()),
        act: c.act,
      });
    const op: OpShape = {
      kind: "linear",
      m: rows,
      k,
      n: n2 / 2,
      act: this.act,
      geglu: true,
      bias: true,
      residual: false,
      activation: "none",
    };
    return this.node([x], out, 2 * rows * k * n2, (c) => run(c, c.tensor(x.rows())), {
      op,
      gemmInput: this.linearInput(x, run),
    });
  }

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

  // ---- compilation ----

  /** The plan: every dispatch recorded once, buffers reused after their last read (models/graph.ts). */
  compile(gpu: Gpu, weights: Weights): Compiled {
    return compileGraph(this.graph, gpu, weights, this.act);
  }

  /**
   * The activation bytes `compile` would allocate on `gpu` (its `Plan.bytes`), without GPU work: the same
   * walk over the nodes, sizes and reuse of released buffers. Without a GPU, as if nothing were fused.
   */
  activationBytes(gpu?: Gpu): number {
    return planBytes(this.graph, gpu, this.act);
  }

  private value(label: string, shape: readonly number[], dtype: DType = this.act): Value {
    return new Value(new Storage(numel(shape) * bytesPerElement(dtype), label), shape, dtype, label);
  }

  private node(
    reads: (Value | undefined)[],
    out: Value,
    flops: number,
    record: (ctx: RecordContext) => Dispatch[],
    extra: Pick<Node, "op" | "writesOperand" | "gemmInput"> = {},
  ): Value {
    this.graph.nodes.push({
      reads: reads.filter((v): v is Value => v !== undefined),
      out,
      flops,
      record,
      ...extra,
    });
    return out;
  }
}
