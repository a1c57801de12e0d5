// The recorded graph of a forward (models/builder.ts records it) and its compilation into a Plan.
//
// Values are symbolic activations: a shape over a Storage, which gets a GPU buffer only in a compiled plan.
// Compilation allocates buffers in recording order and returns each one to the free list right after the
// last node that reads it, unless it is pinned (inputs, outputs, probes). Two fusions change the dispatch
// list without changing a bit of the results (tests/model_fusion_test.ts):
//   - a norm or an attention whose output only the GEMM right after it reads writes that GEMM's x operand
//     instead of a buffer (ops/operand.ts): the GEMM's pack dispatch is gone;
//   - joint linears over one input are one GEMM (JointGemm, recorded by the builder), their values column
//     ranges of its output.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { type DType, numel, Tensor } from "../gpu/tensor.ts";
import type { PackedActivations } from "../ops/operand.ts";
import { Plan } from "./plan.ts";
import type { Weights } from "./weights.ts";

/** The memory behind one or more values (a value and its reshaped views share one). */
export class Storage {
  /** Grows while linears join a joint GEMM's output (ModelBuilder.linear). */
  constructor(public bytes: number, readonly label: string) {}
}

/**
 * Linears over one input recorded with `joint: true`: one GEMM over their weights packed side by side
 * (models/weights.ts), recorded where the first of them is. Its output is [rows, width]; each linear's
 * value is a column range of it.
 */
export class JointGemm {
  readonly names: string[] = [];
  width = 0;
  node?: Node;
  constructor(readonly x: Value, readonly out: Storage) {}
}

/** Columns [offset, offset + n) of a joint GEMM's [rows, width] output. */
interface ColumnSlice {
  offset: number;
  of: JointGemm;
}

/** A symbolic activation: a shape and an element type; its buffer exists only in a compiled plan. */
export class Value {
  constructor(
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly label: string,
    /** The value is these columns of a joint GEMM's output (read through ctx.columns). */
    readonly slice?: ColumnSlice,
  ) {}

  /** The same memory as another shape of the same element count. */
  view(shape: readonly number[]): Value {
    if (this.slice) throw new Error(`${this.label} is a column slice of a joint GEMM; it has no other shape`);
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

/** Columns of a [..., width] tensor: the value's elements are tensor[..., offset + j], j < its last dim. */
interface Columns {
  tensor: Tensor;
  offset: number;
  rowStride: number;
}

export interface RecordContext {
  gpu: Gpu;
  weights: Weights;
  act: ActDType;
  /** The value's tensor; a column slice only when it spans its whole storage. */
  tensor(v: Value): Tensor;
  /** The value as columns of its storage's tensor (a plain value: all of them). */
  columns(v: Value): Columns;
  buffer(s: Storage): GPUBuffer;
}

export interface Node {
  reads: Value[];
  out: Value;
  flops: number;
  record(ctx: RecordContext): Dispatch[];
  /**
   * A producer (norm, attention) that can write its output straight into the x operand of the GEMM after
   * it (ops/operand.ts); null where it cannot for this shape.
   */
  packInto?(ctx: RecordContext, out: PackedActivations): Dispatch[] | null;
  /** A GEMM that can read `x` already packed: where it wants it (null: no pack to save), and its dispatches. */
  gemmInput?: {
    x: Value;
    operand(ctx: RecordContext): PackedActivations | null;
    record(ctx: RecordContext, x: PackedActivations): Dispatch[];
  };
}

/** The nodes of one forward, shared by every scope of a builder. */
export class Graph {
  /**
   * `fuse`: whether ops may be fused across nodes (norm → GEMM operand; linears over one input as one GEMM).
   * `maxBindingBytes`: the largest joint GEMM output (one storage binding).
   */
  constructor(readonly fuse: boolean, readonly maxBindingBytes: number) {}
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  /** Storage that outlives the forward: inputs, outputs and probes. */
  readonly pinned = new Set<Storage>();
  readonly probes = new Map<string, Value>();
  /** Every weight the forward reads (full names). */
  readonly weightsRead = new Set<string>();
  /** Weights read by a GEMM kernel, and which one: their packed layout (LoRA merges into it). */
  readonly gemmWeights = new Map<string, GemmKind>();
  /** Joint GEMMs by input storage. */
  readonly joint = new Map<Storage, JointGemm[]>();
}

/** How a model's graph is recorded: with probes (fixture hooks kept), and with fusions (default on). */
export interface GraphOptions {
  probes?: boolean;
  fuse?: boolean;
  /**
   * The device's storage binding limit (gpu.maxBinding): a joint GEMM stops taking linears before its output
   * outgrows it, so a large batch or image splits a group rather than failing. Unlimited when counting.
   */
  maxBindingBytes?: number;
}

/** Which GEMM packing a weight gets: conv ([Cout, taps, Cin/8] texels) or linear ([N, K/8] texels). */
export type GemmKind = "conv" | "linear";

/** A compiled forward: the plan and the tensor of every input, output and probe. */
export interface Compiled {
  plan: Plan;
  tensor(v: Value): Tensor;
  probes: Map<string, Tensor>;
}

/** Compiles a recorded graph (see the header). */
export function compileGraph(graph: Graph, gpu: Gpu, weights: Weights, act: ActDType): Compiled {
  const { nodes, inputs, pinned } = graph;
  const plan = new Plan(gpu, act);
  const buffers = new Map<Storage, GPUBuffer>();
  const lastRead = new Map<Storage, number>();
  const readers = new Map<Storage, Set<number>>();
  nodes.forEach((n, i) =>
    n.reads.forEach((v) => {
      lastRead.set(v.storage, i);
      readers.set(v.storage, (readers.get(v.storage) ?? new Set()).add(i));
    })
  );
  const buffer = (s: Storage): GPUBuffer => {
    const b = buffers.get(s);
    if (!b) throw new Error(`model builder: ${s.label} is used before it is computed`);
    return b;
  };
  const columns = (v: Value): Columns => {
    const n = v.shape[v.shape.length - 1];
    const width = v.slice?.of.width ?? n;
    const tensor = new Tensor(
      buffer(v.storage),
      [...v.shape.slice(0, -1), width],
      v.dtype,
      v.storage.label,
    );
    return { tensor, offset: v.slice?.offset ?? 0, rowStride: width };
  };
  const tensor = (v: Value): Tensor => {
    if (v.slice && v.slice.of.width !== v.shape[v.shape.length - 1]) {
      throw new Error(`model builder: ${v.label} is a column slice of a joint GEMM; read it as columns`);
    }
    return new Tensor(buffer(v.storage), v.shape, v.dtype, v.label);
  };
  const allocate = (v: Value) => buffers.set(v.storage, plan.allocate(v.storage.bytes, v.storage.label));
  const releaseAfter = (n: Node, i: number) => {
    for (const s of new Set([...n.reads.map((v) => v.storage), n.out.storage])) {
      const buffer = buffers.get(s);
      if (buffer && !pinned.has(s) && (lastRead.get(s) ?? -1) <= i) plan.release(buffer);
    }
  };
  for (const v of inputs) allocate(v);
  const ctx: RecordContext = { gpu, weights, act: act, tensor, columns, buffer };
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    const next = nodes[i + 1];
    const packed = graph.fuse && n.packInto && next?.gemmInput &&
        next.gemmInput.x.storage === n.out.storage && !pinned.has(n.out.storage) &&
        readers.get(n.out.storage)?.size === 1
      ? next.gemmInput.operand(ctx)
      : null;
    const producer = packed && n.packInto!(ctx, packed);
    if (packed && producer) {
      // n's output never gets a buffer: it exists only as next's x operand.
      plan.add(producer);
      releaseAfter(n, i);
      allocate(next.out);
      plan.add(next.gemmInput!.record(ctx, packed));
      releaseAfter(next, ++i);
      continue;
    }
    allocate(n.out);
    plan.add(n.record(ctx));
    releaseAfter(n, i);
  }
  const probes = new Map([...graph.probes].map(([name, v]) => [name, tensor(v)]));
  return { plan, tensor, probes };
}
