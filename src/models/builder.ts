// The model builder: a forward is written once, one line per op (`h = b.conv("conv1", h)`), against
// symbolic activations. Recording is separate from the GPU, so the same forward
//   - compiles into a Plan (`compile`): buffers are allocated in recording order and a buffer returns to
//     the free list right after the last op that reads it, so no forward frees anything by hand;
//   - counts FLOPs without a GPU (`flops`), from the weight shapes of the declaration.
// Weight names are relative to the builder's scope (`b.at("resnets", 0)`), so they equal checkpoint names.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type DType, numel, Tensor } from "../gpu/tensor.ts";
import { conv2d, type Conv2dParams, convOutSize, convPadding } from "../ops/conv.ts";
import { type Activation, geglu, linear } from "../ops/linear.ts";
import { groupNorm, layerNorm } from "../ops/norm.ts";
import { attention, attentionFlops } from "../ops/attention.ts";
import { concatChannels, resizeNearest, upsampleNearest2x } from "../ops/layout.ts";
import { type Activation as MapActivation, map, silu } from "../ops/elementwise.ts";
import { timestepEmbedding } from "../ops/timestep.ts";
import { embedding } from "../ops/embedding.ts";
import type { OpShape } from "../ops/tuning.ts";
import type { WeightShapes } from "./declare.ts";
import { Plan } from "./plan.ts";
import type { Weights } from "./weights.ts";

/** The memory behind one or more values (a value and its reshaped views share one). */
class Storage {
  constructor(readonly bytes: number, readonly label: string) {}
}

/** A symbolic activation: a shape and an element type; its buffer exists only in a compiled plan. */
export class Value {
  constructor(
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly label: string,
  ) {}

  /** The same memory as another shape of the same element count. */
  view(shape: readonly number[]): Value {
    if (numel(shape) !== numel(this.shape)) {
      throw new Error(`cannot view ${this.label} [${this.shape}] as [${shape}]`);
    }
    return new Value(this.storage, shape, this.dtype, this.label);
  }

  /** [..., C] as rows [M, C]. */
  rows(): Value {
    const c = this.shape[this.shape.length - 1];
    return this.view([numel(this.shape) / c, c]);
  }
}

interface RecordContext {
  gpu: Gpu;
  weights: Weights;
  act: ActDType;
  tensor(v: Value): Tensor;
}

interface Node {
  reads: Value[];
  out: Value;
  flops: number;
  /** The GEMM, conv or attention shape, for the autotuner (ops/tuning.ts). */
  op?: OpShape;
  record(ctx: RecordContext): Dispatch[];
}

/** The nodes of one forward, shared by every scope of a builder. */
class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  /** Storage that outlives the forward: inputs, outputs and probes. */
  readonly pinned = new Set<Storage>();
  readonly probes = new Map<string, Value>();
  /** Every weight the forward reads (full names). */
  readonly weightsRead = new Set<string>();
  /** Weights read by a GEMM kernel, and which one: their packed layout (LoRA merges into it). */
  readonly gemmWeights = new Map<string, GemmKind>();
}

/** Which GEMM packing a weight gets: conv ([Cout, taps, Cin/8] texels) or linear ([N, K/8] texels). */
export type GemmKind = "conv" | "linear";

/** A compiled forward: the plan and the tensor of every input, output and probe. */
export interface Compiled {
  plan: Plan;
  tensor(v: Value): Tensor;
  probes: Map<string, Tensor>;
}

export class ModelBuilder {
  private constructor(
    private readonly graph: Graph,
    readonly weights: WeightShapes,
    readonly act: ActDType,
    readonly prefix: string,
    private readonly withProbes: boolean,
  ) {}

  /** `weights`: the loaded weights (to compile) or a declaration's shapes (to count FLOPs). */
  static create(weights: WeightShapes, act: ActDType, options: { probes?: boolean } = {}): ModelBuilder {
    return new ModelBuilder(new Graph(), weights, act, "", options.probes ?? false);
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
    return this.node(
      [x, o.timeBias, o.residual],
      out,
      2 * numel(out.shape) * cin * kh * kw,
      (c) =>
        conv2d(c.gpu, {
          x: c.tensor(x),
          weight: c.weights.conv(w),
          bias: bias ? c.weights.get(bias) : undefined,
          timeBias: o.timeBias && c.tensor(o.timeBias),
          residual: o.residual && c.tensor(o.residual),
          out: c.tensor(out),
          stride,
          padding,
          outputScaleFactor: o.outputScaleFactor,
          outputShift: o.outputShift,
          relu: o.relu,
          act: c.act,
        }),
      op,
    );
  }

  /**
   * Linear `name` over the last axis: [..., K] → [..., N], with `name.bias` when the module has one, an
   * optional fused activation and residual. A 1×1 conv weight [N, K, 1, 1] works as one (proj_in of SD 1.x).
   */
  linear(name: string, x: Value, o: { activation?: Activation; residual?: Value } = {}): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const [n, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n]);
    const bias = this.optionalBias(name);
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
    return this.node([x, o.residual], out, 2 * rows * k * n, (c) =>
      linear(c.gpu, {
        x: c.tensor(x.rows()),
        weight: c.weights.linear(w),
        bias: bias ? c.weights.get(bias) : undefined,
        residual: o.residual && c.tensor(o.residual.rows()),
        activation: o.activation,
        out: c.tensor(out.rows()),
        act: c.act,
      }), op);
  }

  /** GEGLU projection `name` ([2D, K] weight: value and gate halves) in one kernel: [..., K] → [..., D]. */
  geglu(name: string, x: Value): Value {
    const w = this.weight(`${name}.weight`, "linear");
    const bias = this.weight(`${name}.bias`);
    const [n2, k] = this.weights.shape(w);
    const rows = numel(x.shape) / k;
    const out = this.value(this.prefix + name, [...x.shape.slice(0, -1), n2 / 2]);
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
    return this.node([x], out, 2 * rows * k * n2, (c) =>
      geglu(c.gpu, {
        x: c.tensor(x.rows()),
        weight: c.weights.linear(w),
        bias: c.weights.get(bias),
        out: c.tensor(out.rows()),
        act: c.act,
      }), op);
  }

  /** GroupNorm `name` over NHWC channels, optionally followed by SiLU in the same kernel. */
  groupNorm(name: string, x: Value, o: { groups: number; eps: number; silu: boolean }): Value {
    const out = this.value(this.prefix + name, x.shape);
    const [gamma, beta] = [this.weight(`${name}.weight`), this.weight(`${name}.bias`)];
    return this.node([x], out, 0, (c) =>
      groupNorm(c.gpu, {
        x: c.tensor(x),
        gamma: c.weights.get(gamma),
        beta: c.weights.get(beta),
        out: c.tensor(out),
        groups: o.groups,
        eps: o.eps,
        silu: o.silu,
        act: c.act,
      }));
  }

  /** LayerNorm `name` over the last axis. */
  layerNorm(name: string, x: Value, eps: number): Value {
    const out = this.value(this.prefix + name, x.shape);
    const [gamma, beta] = [this.weight(`${name}.weight`), this.weight(`${name}.bias`)];
    return this.node([x], out, 0, (c) =>
      layerNorm(c.gpu, {
        x: c.tensor(x.rows()),
        gamma: c.weights.get(gamma),
        beta: c.weights.get(beta),
        out: c.tensor(out.rows()),
        eps,
        act: c.act,
      }));
  }

  /** Multi-head attention of q [B, Nq, H·D] over k, v [B, Nk, H·D] (flash-style: no Nq×Nk matrix). */
  attention(q: Value, k: Value, v: Value, o: { heads: number; headDim: number; causal?: boolean }): Value {
    const [B, nq] = q.shape;
    const nk = k.shape[1];
    const out = this.value(`${this.prefix}attn`, q.shape);
    const flops = attentionFlops(B, o.heads, nq, nk, o.headDim) / (o.causal ? 2 : 1);
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
    return this.node([q, k, v], out, flops, (c) =>
      attention(c.gpu, {
        q: c.tensor(q),
        k: c.tensor(k),
        v: c.tensor(v),
        out: c.tensor(out),
        heads: o.heads,
        headDim: o.headDim,
        causal: o.causal,
        act: c.act,
      }), op);
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

  /**
   * Records every dispatch once. A buffer is released right after the last node that reads any view of
   * it, unless it is pinned (inputs, outputs, probes); the next node of that size then reuses it.
   */
  compile(gpu: Gpu, weights: Weights): Compiled {
    const { nodes, inputs, pinned } = this.graph;
    const plan = new Plan(gpu, this.act);
    const buffers = new Map<Storage, GPUBuffer>();
    const lastRead = new Map<Storage, number>();
    nodes.forEach((n, i) => n.reads.forEach((v) => lastRead.set(v.storage, i)));
    const tensor = (v: Value): Tensor => {
      const buffer = buffers.get(v.storage);
      if (!buffer) throw new Error(`model builder: ${v.label} is used before it is computed`);
      return new Tensor(buffer, v.shape, v.dtype, v.label);
    };
    const allocate = (v: Value) => buffers.set(v.storage, plan.allocate(v.storage.bytes, v.storage.label));
    for (const v of inputs) allocate(v);
    const ctx: RecordContext = { gpu, weights, act: this.act, tensor };
    nodes.forEach((n, i) => {
      allocate(n.out);
      plan.add(n.record(ctx));
      for (const s of new Set([...n.reads.map((v) => v.storage), n.out.storage])) {
        if (!pinned.has(s) && (lastRead.get(s) ?? -1) <= i) plan.release(buffers.get(s)!);
      }
    });
    const probes = new Map([...this.graph.probes].map(([name, v]) => [name, tensor(v)]));
    return { plan, tensor, probes };
  }

  /**
   * The activation bytes `compile` would allocate (its `Plan.bytes`), without a GPU: the same walk over the
   * nodes with the same size rounding and reuse of released buffers.
   */
  activationBytes(): number {
    const { nodes, inputs, pinned } = this.graph;
    const sizes: number[] = [];
    const free = new Map<number, number[]>();
    const buffers = new Map<Storage, number>();
    const lastRead = new Map<Storage, number>();
    nodes.forEach((n, i) => n.reads.forEach((v) => lastRead.set(v.storage, i)));
    const allocate = (s: Storage) => {
      const size = Math.max(16, Math.ceil(s.bytes / 16) * 16);
      const id = free.get(size)?.pop() ?? sizes.push(size) - 1;
      buffers.set(s, id);
    };
    const release = (s: Storage) => {
      const id = buffers.get(s)!;
      const list = free.get(sizes[id]) ?? [];
      if (!list.includes(id)) list.push(id);
      free.set(sizes[id], list);
    };
    for (const v of inputs) allocate(v.storage);
    nodes.forEach((n, i) => {
      allocate(n.out.storage);
      for (const s of new Set([...n.reads.map((v) => v.storage), n.out.storage])) {
        if (!pinned.has(s) && (lastRead.get(s) ?? -1) <= i) release(s);
      }
    });
    return sizes.reduce((a, b) => a + b, 0);
  }

  private value(label: string, shape: readonly number[], dtype: DType = this.act): Value {
    return new Value(new Storage(numel(shape) * bytesPerElement(dtype), label), shape, dtype, label);
  }

  private node(
    reads: (Value | undefined)[],
    out: Value,
    flops: number,
    record: (ctx: RecordContext) => Dispatch[],
    op?: OpShape,
  ): Value {
    this.graph.nodes.push({
      reads: reads.filter((v): v is Value => v !== undefined),
      out,
      flops,
      record,
      op,
    });
    return out;
  }
}
