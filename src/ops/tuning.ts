// The per-shape kernel choices the autotuner (autotune.ts) made on this Gpu, and the op shapes it tunes.
//
// A model's forward records one OpShape per GEMM, conv and attention (models/builder.ts), so the tuner
// sees exactly the shapes the plans will build. The ops look their shape's key up here when they build
// (resolveTiling in gemm.ts, resolveAttentionTiling in attention_tiling.ts); a shape nobody tuned keeps
// the adapter's default.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";

export type OpShape =
  | {
    kind: "linear";
    m: number;
    k: number;
    n: number;
    act: ActDType;
    geglu: boolean;
    bias: boolean;
    residual: boolean;
    activation: "none" | "gelu" | "gelu_tanh" | "quick_gelu" | "silu";
  }
  | {
    kind: "conv";
    b: number;
    h: number;
    w: number;
    cin: number;
    cout: number;
    kh: number;
    kw: number;
    stride: 1 | 2;
    padding: "same" | "vae_down";
    act: ActDType;
    bias: boolean;
    timeBias: boolean;
    residual: boolean;
    relu: boolean;
  }
  | {
    kind: "attention";
    batch: number;
    nq: number;
    nk: number;
    heads: number;
    headDim: number;
    act: ActDType;
    causal: boolean;
  };

// Keys leave the batch out: a choice that changes a kernel's summation order (split-K, workgroup tiles,
// f16 runs, attention key blocks) must be the same for one image and for a batch, or image i of a batch
// would differ in its last bits from the single run with seed + i (A1111's batch_size promises the same
// images). The arithmetic of one output element depends only on the rest of the shape.

/** Rows below which a linear counts as "few rows" (split-K territory: the time embedding's M = batch). */
const FEW_ROWS = 64;

/**
 * Tuning key of a linear or GEGLU: K, N and whether M is few (< 64, batch-sized) or many rows (tokens ×
 * batch); not the epilogue flags.
 */
export function linearKey(m: number, k: number, n: number, act: ActDType, geglu: boolean): string {
  return `${geglu ? "geglu" : "linear"} ${m < FEW_ROWS ? "few" : "many"} rows x${k}x${n} ${act}`;
}

/** Tuning key of a conv: everything but the batch. */
export function convKey(
  h: number,
  w: number,
  cin: number,
  cout: number,
  kh: number,
  stride: number,
  padding: string,
  act: ActDType,
): string {
  return `conv${kh}x${kh}/${stride}${
    padding === "same" ? "" : ` ${padding}`
  } ${h}x${w}x${cin}>${cout} ${act}`;
}

/** Tuning key of an attention: everything but the batch. */
export function attentionKey(
  nq: number,
  nk: number,
  heads: number,
  headDim: number,
  act: ActDType,
  causal: boolean,
): string {
  return `attention ${nq}x${nk} ${heads}x${headDim}${causal ? " causal" : ""} ${act}`;
}

export function opKey(s: OpShape): string {
  if (s.kind === "linear") return linearKey(s.m, s.k, s.n, s.act, s.geglu);
  if (s.kind === "conv") return convKey(s.h, s.w, s.cin, s.cout, s.kh, s.stride, s.padding, s.act);
  return attentionKey(s.nq, s.nk, s.heads, s.headDim, s.act, s.causal);
}

/** Multiply-adds × 2 of one call of the op: the tuner spends its time budget on the heaviest shapes first. */
export function opFlops(s: OpShape): number {
  if (s.kind === "linear") return 2 * s.m * s.k * s.n * (s.geglu ? 2 : 1); // GEGLU: n = D, 2·D weight rows
  if (s.kind === "conv") {
    const ho = Math.floor((s.h + (s.padding === "same" ? s.kh - 1 : 1) - s.kh) / s.stride) + 1;
    const wo = Math.floor((s.w + (s.padding === "same" ? s.kw - 1 : 1) - s.kw) / s.stride) + 1;
    return 2 * s.b * ho * wo * s.cout * s.cin * s.kh * s.kw;
  }
  return 4 * s.batch * s.heads * s.nq * s.nk * s.headDim / (s.causal ? 2 : 1);
}

const tables = new WeakMap<Gpu, Map<string, unknown>>();

/** The tuned choice for a shape key on this Gpu, if the tuner made one. */
export function tunedChoice<T>(gpu: Gpu, key: string): T | undefined {
  return tables.get(gpu)?.get(key) as T | undefined;
}

/** Installs (or, with undefined, removes) the tuned choice for a shape key. */
export function setTunedChoice(gpu: Gpu, key: string, choice: unknown): void {
  let t = tables.get(gpu);
  if (!t) tables.set(gpu, t = new Map());
  if (choice === undefined) t.delete(key);
  else t.set(key, choice);
}

/** Every tuned choice on this Gpu (reports). */
export function tunedChoices(gpu: Gpu): ReadonlyMap<string, unknown> {
  return tables.get(gpu) ?? new Map();
}
