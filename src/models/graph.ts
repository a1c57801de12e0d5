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
import type { OpShape } from "../ops/tuning.ts";
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
  /** Its shape for the autotuner (n = width, bias if any member has one). */
  op?: Extract<OpShape, { kind: "linear" }>;
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
  /** The GEMM, conv or attention shape, for the autotuner (ops/tuning.ts). */
  op?: OpShape;
  record(ctx: RecordContext): Dispatch[];
  /** A producer (norm, attention) that can write its output straight into the x operand of the GEMM after it. */
  writesOperand?: {
    /** Whether it can at this precision (pure: plans are sized ahead with it). */
    able(act: ActDType): boolean;
    record(ctx: RecordContext, out: PackedActivations): Dispatch[];
  };
  /** A GEMM that can read `x` already packed (ops/operand.ts). */
  gemmInput?: {
    x: Value;
    /** Whether it packs x as a whole on this adapter, so that a producer should write it (pure). */
    accepts(gpu: Gpu, act: ActDType): boolean;
    /** Where the producer writes it. */
    operand(ctx: RecordContext): PackedActivations;
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

/**
 * The nodes i whose output node i + 1 (a GEMM) reads as an operand they write: nothing else reads it and it
 * is not pinned. Without a GPU (sizing without an adapter) nothing is fused.
 */
function fusedPairs(graph: Graph, gpu: Gpu | undefined, act: ActDType): Set<number> {
  const fused = new Set<number>();
  if (!graph.fuse || !gpu) return fused;
  const readers = new Map<Storage, number>();
  for (const n of graph.nodes) {
    for (const s of new Set(n.reads.map((v) => v.storage))) {
      readers.set(s, (readers.get(s) ?? 0) + 1);
    }
  }
  graph.nodes.forEach((n, i) => {
    const next = graph.nodes[i + 1];
    if (
      n.writesOperand?.able(act) && next?.gemmInput && next.gemmInput.x.storage === n.out.storage &&
      !graph.pinned.has(n.out.storage) && readers.get(n.out.storage) === 1 && next.gemmInput.accepts(gpu, act)
    ) fused.add(i);
  });
  return fused;
}

/**
 * The allocation order of a plan, shared by compileGraph and planBytes so that sizing ahead gives the bytes
 * the plan will hold: inputs first, then per node its output (a fused producer's output gets none), the
 * node's dispatches, and the release of every buffer whose last reader it was.
 */
function walkPlan(
  graph: Graph,
  fused: ReadonlySet<number>,
  on: {
    allocate(s: Storage): void;
    release(s: Storage): void;
    record(n: Node): void;
    /** A producer writing the operand of `gemm`, then (after the producer's releases) `gemm` itself. */
    recordProducer(n: Node, gemm: Node): void;
    recordGemm(gemm: Node): void;
  },
): void {
  const { nodes, inputs, pinned } = graph;
  const lastRead = new Map<Storage, number>();
  nodes.forEach((n, i) => n.reads.forEach((v) => lastRead.set(v.storage, i)));
  const live = new Set<Storage>();
  const allocate = (s: Storage) => (live.add(s), on.allocate(s));
  const releaseAfter = (n: Node, i: number) => {
    for (const s of new Set([...n.reads.map((v) => v.storage), n.out.storage])) {
      if (live.has(s) && !pinned.has(s) && (lastRead.get(s) ?? -1) <= i) {
        live.delete(s);
        on.release(s);
      }
    }
  };
  for (const v of inputs) allocate(v.storage);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    if (fused.has(i)) {
      const gemm = nodes[i + 1];
      on.recordProducer(n, gemm);
      releaseAfter(n, i);
      allocate(gemm.out.storage);
      on.recordGemm(gemm);
      releaseAfter(gemm, ++i);
      continue;
    }
    allocate(n.out.storage);
    on.record(n);
    releaseAfter(n, i);
  }
}

/**
 * The activation bytes compileGraph would allocate (its Plan.bytes) for this adapter, without GPU work: the
 * same walk, sizes and reuse of released buffers.
 */
export function planBytes(graph: Graph, gpu: Gpu | undefined, act: ActDType): number {
  const sizes: number[] = [];
  const free = new Map<number, number[]>();
  const ids = new Map<Storage, number>();
  walkPlan(graph, fusedPairs(graph, gpu, act), {
    allocate(s) {
      const size = Plan.roundSize(s.bytes);
      ids.set(s, free.get(size)?.pop() ?? sizes.push(size) - 1);
    },
    release(s) {
      const id = ids.get(s)!;
      const list = free.get(sizes[id]) ?? [];
      if (!list.includes(id)) list.push(id);
      free.set(sizes[id], list);
    },
    record() {},
    recordProducer() {},
    recordGemm() {},
  });
  return sizes.reduce((a, b) => a + b, 0);
}

/** Compiles a recorded graph (see the header). */
export function compileGraph(graph: Graph, gpu: Gpu, weights: Weights, act: ActDType): Compiled {
  const plan = new Plan(gpu, act);
  const buffers = new Map<Storage, GPUBuffer>();
  const buffer = (s: Storage): GPUBuffer => {
    const b = buffers.get(s);
    if (!b) throw new Error(`model builder: ${s.label} is used before it is computed`);
    return b;
  };
  const columns = (v: Value): Columns => {
    const n = v.shape[v.shape.length - 1];
    const width = v.slice?.of.width ?? n;
    const tensor = new Tensor(buffer(v.storage), [...v.shape.slice(0, -1), width], v.dtype, v.storage.label);
    return { tensor, offset: v.slice?.offset ?? 0, rowStride: width };
  };
  const tensor = (v: Value): Tensor => {
    if (v.slice && v.slice.of.width !== v.shape[v.shape.length - 1]) {
      throw new Error(`model builder: ${v.label} is a column slice of a joint GEMM; read it as columns`);
    }
    return new Tensor(buffer(v.storage), v.shape, v.dtype, v.label);
  };
  const ctx: RecordContext = { gpu, weights, act, tensor, columns, buffer };
  let operand: PackedActivations | undefined;
  walkPlan(graph, fusedPairs(graph, gpu, act), {
    allocate: (s) => buffers.set(s, plan.allocate(s.bytes, s.label)),
    release: (s) => plan.release(buffers.get(s)!),
    record: (n) => plan.add(n.record(ctx)),
    // The producer's output never gets a buffer: it exists only as the GEMM's x operand.
    recordProducer: (n, gemm) => {
      operand = gemm.gemmInput!.operand(ctx);
      plan.add(n.writesOperand!.record(ctx, operand));
    },
    recordGemm: (gemm) => plan.add(gemm.gemmInput!.record(ctx, operand!)),
  });
  const probes = new Map([...graph.probes].map(([name, v]) => [name, tensor(v)]));
  return { plan, tensor, probes };
}
