// The candidate kernel tilings the autotuner (autotune.ts) times on the adapter in use, and the one op
// builder it and the candidate test (tests/ops_tuning_test.ts) share: every candidate listed here is run
// against the CPU reference on op shapes by that test before any adapter can pick it.
//
// What the candidates cover, and what they do not:
//   - workgroup sizes 64-256: register tiles on storage buffers at 64, 128 and 256 invocations; the
//     workgroup-memory kernel is 256 threads with block heights 32, 64 and 128 (tm 2, 4, 8).
//   - subgroup reductions: split-K linear/GEGLU (one subgroup per tile, subgroupAdd) where the adapter has
//     the subgroups feature with a fixed subgroup size (gpu/self_tests.ts checks it at start-up).
//   - vec4 loads: not a candidate, every kernel already loads whole 16-byte texels (vec4<u32>: 8 f16
//     weights or 4 f32 activations per load) in every mode.
//   - f16 accumulators (GemmTiling.f16Acc), for f16 activations on adapters with shader-f16: products
//     summed in f16 over runs of 8 k values, each run added into f32 (the error of a full f16 sum would grow
//     with the whole sum's size, a run's stays at 8 terms' size). "Where exact enough": the tuner
//     keeps one only if its output equals the f32-accumulating default's within an f16 rounding step or
//     two (autotune.ts), and accumulate=f32 (gpu/choices.ts) removes them.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { emptyTensor, type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { attention } from "./attention.ts";
import { type AttentionTiling, attentionTiling } from "./attention_tiling.ts";
import { conv2d, type ConvWeight, prepareConvWeight } from "./conv.ts";
import { fitShared, type GemmTiling, gemmTiling, storageOf } from "./gemm.ts";
import { type LinearWeight, prepareLinearWeight } from "./gemm_weights.ts";
import { geglu, linear } from "./linear.ts";
import type { OpShape } from "./tuning.ts";

export const NOT_TUNED = {
  vec4Loads: "always on: every GEMM, conv and attention kernel loads whole 16-byte texels",
} as const;

export type Candidate =
  | { kind: "gemm"; label: string; tiling: GemmTiling }
  | { kind: "attention"; label: string; tiling: AttentionTiling };

export function gemmLabel(t: GemmTiling): string {
  const acc = t.f16Acc ? " f16acc" : "";
  if (t.mode === "shared") return `workgroup tm${t.tm} (${16 * t.tm}x64 blocks)${acc}`;
  const tile = `${t.tm}x${t.tn}/${t.wg}`;
  return t.splitK
    ? `splitk ${tile} (${t.mode})${acc}`
    : `${t.mode === "texture" ? "texture" : "registers"} ${tile}${acc}`;
}

export function attentionLabel(t: AttentionTiling): string {
  return `attention ${t.qpi}x${t.kb}/${t.wg}`;
}

/** The register tile GEGLU uses by default (two accumulator sets: half the columns of a linear's tile). */
export function gegluDefault(t: GemmTiling): GemmTiling {
  return t.mode === "shared" || t.splitK ? t : { ...t, tn: Math.max(4, 4 * Math.floor(t.tn / 8)) };
}

/** Register-tile candidates per operand storage, the adapter's default first. */
const REGISTER_TILES: Record<"texture" | "buffer", GemmTiling[]> = {
  // llvmpipe: 16×16/8 was measured best (shaders/matmul.wgsl header); smaller tiles compile faster and give
  // more tiles to small shapes.
  texture: [
    { mode: "texture", tm: 16, tn: 16, wg: 8 },
    { mode: "texture", tm: 8, tn: 16, wg: 8 },
    { mode: "texture", tm: 8, tn: 8, wg: 8 },
  ],
  // Discrete GPUs: workgroup-memory blocks of three heights, and barrier-free register tiles at 64, 128
  // and 256 invocations.
  buffer: [
    { mode: "shared", tm: 4, tn: 4, wg: 256 },
    { mode: "shared", tm: 2, tn: 4, wg: 256 },
    { mode: "shared", tm: 8, tn: 4, wg: 256 },
    { mode: "buffer", tm: 4, tn: 4, wg: 64 },
    { mode: "buffer", tm: 4, tn: 8, wg: 128 },
    { mode: "buffer", tm: 8, tn: 8, wg: 256 },
  ],
};

/**
 * f16-accumulating candidates per operand storage (f16 activations with shader-f16 only): the f32 tiles
 * GPUs are likeliest to pick, again (packed f16 FMAs can double the arithmetic rate; f16 staging halves a
 * block's workgroup memory; f16 loads need no unpacking). None on textures: there texels must be unpacked
 * to f32 and converted, and llvmpipe has no faster f16 arithmetic (forcing accumulate=f16 still runs it).
 */
const F16_ACC_TILES: Record<"texture" | "buffer", GemmTiling[]> = {
  texture: [],
  buffer: [
    { mode: "shared", tm: 4, tn: 4, wg: 256, f16Acc: true },
    { mode: "shared", tm: 8, tn: 4, wg: 256, f16Acc: true },
    { mode: "buffer", tm: 4, tn: 8, wg: 128, f16Acc: true },
  ],
};

/** Split-K tile: 2 rows cover the time embedding (M = 2) and CFG pairs; 8 columns per lane group. */
const SPLIT_K: Omit<GemmTiling, "mode" | "wg"> = { tm: 2, tn: 8, splitK: true };

/**
 * GEMM candidates for one op kind on `gpu`, for `storage` (default: the storage the adapter's weights are
 * packed for) and activations `act`: the default first, then the others, each as it will effectively run
 * (a workgroup-memory tile that does not fit becomes the register tile fitShared gives), without
 * duplicates. f16-accumulating ones only for f16 activations, unless accumulate=f32 is forced.
 */
export function gemmCandidates(
  gpu: Gpu,
  op: "linear" | "geglu" | "conv",
  storage = storageOf(gemmTiling(gpu).tiling.mode),
  act: ActDType = "f32",
): Candidate[] {
  const adapter = gemmTiling(gpu).tiling;
  const first = storageOf(adapter.mode) === storage ? adapter : REGISTER_TILES[storage][0];
  const list = [first, ...REGISTER_TILES[storage]];
  if (op !== "conv" && gpu.report.subgroupSize !== null) {
    list.push({ ...SPLIT_K, mode: storage, wg: gpu.report.subgroupSize });
  }
  if (act === "f16" && gpu.f16 && gpu.choices.accumulate !== "f32") list.push(...F16_ACC_TILES[storage]);
  const seen = new Set<string>();
  const out: Candidate[] = [];
  for (const t of list) {
    const tiling = fitShared(gpu, op === "geglu" ? gegluDefault(t) : t, op === "geglu" ? 2 : 1);
    const id = JSON.stringify(tiling);
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ kind: "gemm", label: gemmLabel(tiling), tiling });
  }
  return out;
}

/**
 * Attention candidates for a head dim: the default (queries per invocation from a register budget, one
 * SIMD row of 8 lanes), half the queries per invocation, and wider workgroups with fewer queries each (what
 * GPUs with 32/64-wide SIMD and more registers per lane may prefer).
 */
export function attentionCandidates(headDim: number): Candidate[] {
  const d = attentionTiling(headDim);
  const list: AttentionTiling[] = [
    d,
    { qpi: Math.max(1, Math.ceil(d.qpi / 2)), kb: 1, wg: 8 },
    { qpi: 2, kb: 2, wg: 64 },
    { qpi: 1, kb: 2, wg: 128 },
  ];
  const seen = new Set<string>();
  return list.filter((t) => !seen.has(JSON.stringify(t)) && seen.add(JSON.stringify(t))).map((t) => ({
    kind: "attention",
    label: attentionLabel(t),
    tiling: t,
  }));
}

export function candidatesFor(gpu: Gpu, s: OpShape): Candidate[] {
  if (s.kind === "attention") return attentionCandidates(s.headDim);
  return gemmCandidates(gpu, s.kind === "conv" ? "conv" : s.geglu ? "geglu" : "linear", undefined, s.act);
}

/** Deterministic values in [-scale, scale) without a slow host loop: a pattern repeated. */
export function patternArray(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  const period = Math.min(n, 4099);
  for (let i = 0; i < period; i++) {
    a[i] = ((((i + seed * 7919) * 2654435761) >>> 0) / 4294967296 - 0.5) * 2 * scale;
  }
  for (let i = period; i < n; i *= 2) a.copyWithin(i, 0, Math.min(i, n - i));
  return a;
}

/** Inputs of one op shape on the GPU (weights packed once for `storage`), reused by every candidate. */
export interface OpInputs {
  shape: OpShape;
  out: Tensor;
  build(c: Candidate): Dispatch[];
  destroy(): void;
}

/**
 * Uploads inputs for `shape` and returns a builder of its dispatches per candidate. Data are a fixed
 * pattern (timing does not depend on values; outputs of candidates are compared with each other).
 */
export function opInputs(gpu: Gpu, shape: OpShape, storage: "texture" | "buffer"): OpInputs {
  const tensors: Tensor[] = [];
  const act = (shapeOf: number[], seed: number, dtype: ActDType = shape.act, scale = 1) => {
    const t = uploadTensor(
      gpu,
      patternArray(shapeOf.reduce((a, b) => a * b, 1), seed, scale),
      shapeOf,
      dtype,
    );
    tensors.push(t);
    return t;
  };
  if (shape.kind === "linear") {
    const { m, k, n } = shape;
    const rows = shape.geglu ? 2 * n : n;
    const w = act([rows, k], 2, "f16", 1 / Math.sqrt(k));
    const weight: LinearWeight = prepareLinearWeight(gpu, w, storage);
    const x = act([m, k], 1);
    const bias = shape.bias ? act([rows], 3, "f16", 0.5) : undefined;
    const residual = shape.residual && !shape.geglu ? act([m, n], 4) : undefined;
    const out = emptyTensor(gpu, [m, n], shape.act, "tune out");
    tensors.push(out);
    return {
      shape,
      out,
      build: (c) => {
        if (c.kind !== "gemm") throw new Error("a GEMM shape needs a GEMM candidate");
        return shape.geglu
          ? geglu(gpu, { x, weight, bias, out, act: shape.act, tiling: c.tiling })
          : linear(gpu, {
            x,
            weight,
            bias,
            residual,
            out,
            activation: shape.activation,
            act: shape.act,
            tiling: c.tiling,
          });
      },
      destroy: () => {
        if (weight.texture) weight.texture.destroy();
        else if (weight.operand instanceof GPUBuffer && weight.operand !== w.buffer) weight.operand.destroy();
        for (const t of tensors) t.destroy();
      },
    };
  }
  if (shape.kind === "conv") {
    const { b, h, w: width, cin, cout, kh, kw, stride, padding } = shape;
    const pad = padding === "same" ? [(kh - 1) / 2, (kh - 1) / 2] : [0, 1];
    const ho = Math.floor((h + pad[0] + pad[1] - kh) / stride) + 1;
    const wo = Math.floor((width + pad[0] + pad[1] - kw) / stride) + 1;
    const wt = act([cout, cin, kh, kw], 2, "f16", 1 / Math.sqrt(cin * kh * kw));
    const weight: ConvWeight = prepareConvWeight(gpu, wt, storage);
    wt.destroy();
    const x = act([b, h, width, cin], 1);
    const bias = shape.bias ? act([cout], 3, "f16", 0.5) : undefined;
    const timeBias = shape.timeBias ? act([b, cout], 5) : undefined;
    const residual = shape.residual ? act([b, ho, wo, cout], 4) : undefined;
    const out = emptyTensor(gpu, [b, ho, wo, cout], shape.act, "tune out");
    tensors.push(out);
    return {
      shape,
      out,
      build: (c) => {
        if (c.kind !== "gemm") throw new Error("a conv shape needs a GEMM candidate");
        return conv2d(gpu, {
          x,
          weight,
          bias,
          timeBias,
          residual,
          out,
          stride,
          padding,
          relu: shape.relu,
          act: shape.act,
          tiling: c.tiling,
        });
      },
      destroy: () => {
        if (weight.texture) weight.texture.destroy();
        else if (weight.operand instanceof GPUBuffer) weight.operand.destroy();
        for (const t of tensors) t.destroy();
      },
    };
  }
  const { batch, nq, nk, heads, headDim } = shape;
  const q = act([batch, nq, heads * headDim], 1, shape.act, 2);
  const k = act([batch, nk, heads * headDim], 2);
  const v = act([batch, nk, heads * headDim], 3);
  const out = emptyTensor(gpu, [batch, nq, heads * headDim], shape.act, "tune out");
  tensors.push(out);
  return {
    shape,
    out,
    build: (c) => {
      if (c.kind !== "attention") throw new Error("an attention shape needs an attention candidate");
      return attention(gpu, {
        q,
        k,
        v,
        out,
        heads,
        headDim,
        causal: shape.causal,
        act: shape.act,
        tiling: c.tiling,
      });
    },
    destroy: () => {
      for (const t of tensors) t.destroy();
    },
  };
}
