// Multi-head attention builder (self and cross), flash style: the score matrix is never stored.
//
//   out[b, i, h·D + d] = Σ_j softmax_j(scale · q[b, i, h·D:(h+1)·D] · k[b, j, h·D:(h+1)·D]) · v[b, j, h·D + d]
//                        (+ residual[b, i, h·D + d])
//
// Q, K, V are token-major with heads interleaved in channels ([B, N, H·D], as Linear outputs give them) or
// slices of a fused buffer (e.g. [B, N, 3·H·D] with offsets 0, H·D, 2·H·D: pass `{tensor, offset, rowStride}`).
//
// Two dispatches: Q, K and V are first copied into rgba32f storage textures (cheap loads on lavapipe; see
// shaders/attention.wgsl), all three by one dispatch (attention_pack.ts), then the attention kernel runs,
// its unrolled bodies generated here for the tiling of attention_tiling.ts. The textures are scratch shared
// by every attention built on the same Gpu with the same texture shape: safe because dispatches run in
// order and each attention's two dispatches stay together (run the returned array as one unit).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { PackedActivations } from "./operand.ts";
import { attentionKey } from "./tuning.ts";
import { type AttentionTiling, resolveAttentionTiling } from "./attention_tiling.ts";
import {
  operandView,
  packTokens,
  scratchTexture,
  textureDispatch,
  type TokenSlice,
  view,
} from "./attention_pack.ts";

export interface AttentionParams {
  /** [B, Nq, H·D] (or a slice) */
  q: Tensor | TokenSlice;
  /** [B, Nk, H·D] (or a slice) */
  k: Tensor | TokenSlice;
  /** [B, Nk, H·D] (or a slice) */
  v: Tensor | TokenSlice;
  /**
   * [B, Nq, H·D] (or a slice). May share q/k/v's buffer (they are copied to textures first), not residual's.
   * Or the x operand of the projection after it (ops/operand.ts; H·D % 8 == 0 and f16 D % 8 == 0, see
   * `attentionWritesOperand`): stored as its texels, without a residual.
   */
  out: Tensor | TokenSlice | PackedActivations;
  heads: number;
  /** Head dim D; default: out's last dim / heads (pass it when out is a slice of a wider tensor). */
  headDim?: number;
  /** Default D^-0.5. */
  scale?: number;
  /** Mask keys j > i (CLIP's causal self-attention). */
  causal?: boolean;
  /** out = attention + residual; same layout (offset, strides) as out. */
  residual?: Tensor | TokenSlice;
  act: ActDType;
  /** Overrides the tiling (tests, the autotuner). */
  tiling?: AttentionTiling;
}

/**
 * Whether attention can store [B, N, heads·D] as GEMM x texels: whole 16-byte units per head row (f16:
 * D % 8 == 0; f32: D % 4 == 0) and rows without padding (heads·D % 8 == 0).
 */
export function attentionWritesOperand(heads: number, headDim: number, act: ActDType): boolean {
  return (heads * headDim) % 8 === 0 && headDim % (act === "f16" ? 8 : 4) === 0;
}

/** How out/residual rows are read and written: the views must be aligned to the mode's unit. */
type Mode = "v4f32" | "p8f16" | "p4f16" | "scalar";

const ELEM: Record<Mode, string> = {
  v4f32: "vec4<f32>",
  p8f16: "vec4<u32>",
  p4f16: "vec2<u32>",
  scalar: "act",
};

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Statements `let NAME(v) = <vec4<f32>: elements 4v..4v+3 of the head row starting at element BASE>`. */
function emitLoad(
  mode: Mode,
  buf: string,
  base: string,
  headDim: number,
  name: (v: number) => string,
): string {
  const dv = Math.ceil(headDim / 4);
  const lines: string[] = [];
  if (mode === "v4f32" || mode === "p4f16") {
    lines.push(`let ${name(0)}_u = (${base}) >> 2u;`);
    for (const v of range(dv)) {
      const raw = `${buf}[${name(0)}_u + ${v}u]`;
      lines.push(`let ${name(v)} = ${mode === "v4f32" ? raw : `h4(${raw})`};`);
    }
  } else if (mode === "p8f16") {
    lines.push(`let ${name(0)}_u = (${base}) >> 3u;`);
    for (const u of range(dv / 2)) {
      lines.push(`let ${name(2 * u)}_p = ${buf}[${name(0)}_u + ${u}u];`);
      lines.push(`let ${name(2 * u)} = h4(${name(2 * u)}_p.xy);`);
      lines.push(`let ${name(2 * u + 1)} = h4(${name(2 * u)}_p.zw);`);
    }
  } else {
    lines.push(`let ${name(0)}_e = ${base};`);
    for (const v of range(dv)) {
      const c = range(4).map((
        x,
      ) => (4 * v + x < headDim ? `f32(${buf}[${name(0)}_e + ${4 * v + x}u])` : "0.0"));
      lines.push(`let ${name(v)} = vec4<f32>(${c.join(", ")});`);
    }
  }
  return lines.join("\n");
}

/** Statements storing VALUE(v) (vec4<f32> expressions) to the head row of `obuf` starting at element BASE. */
function emitStore(mode: Mode, base: string, headDim: number, value: (v: number) => string): string {
  const dv = Math.ceil(headDim / 4);
  const lines: string[] = [];
  if (mode === "v4f32" || mode === "p4f16") {
    lines.push(`let out_u = (${base}) >> 2u;`);
    for (const v of range(dv)) {
      lines.push(`store_out(out_u + ${v}u, ${mode === "v4f32" ? value(v) : `pk4(${value(v)})`});`);
    }
  } else if (mode === "p8f16") {
    lines.push(`let out_u = (${base}) >> 3u;`);
    for (const u of range(dv / 2)) {
      lines.push(`store_out(out_u + ${u}u, vec4<u32>(pk4(${value(2 * u)}), pk4(${value(2 * u + 1)})));`);
    }
  } else {
    lines.push(`let out_e = ${base};`);
    for (const v of range(dv)) {
      lines.push(`{`, `  let value = ${value(v)};`);
      for (const x of range(4)) {
        if (4 * v + x < headDim) lines.push(`  obuf[out_e + ${4 * v + x}u] = act(value[${x}]);`);
      }
      lines.push("}");
    }
  }
  return lines.join("\n");
}

/** The unrolled bodies of the attention kernel for one (mode, head dim, tiling, masking, residual). */
function generateBodies(
  mode: Mode,
  headDim: number,
  tiling: { qpi: number; kb: number; wg: number },
  causal: boolean,
  residual: boolean,
): { Q_INIT: string; KEY_BLOCK: string; STORE: string } {
  const dv = Math.ceil(headDim / 4);
  const Q = range(tiling.qpi);
  const V = range(dv);
  const J = range(tiling.kb);

  const init: string[] = [];
  for (const i of Q) {
    init.push(`let qrow${i} = first_query + ${i * tiling.wg}u + lane;`);
    init.push(`let qtexrow${i} = min(qrow${i}, nq - 1u);`);
    for (const v of V) {
      init.push(
        `let q${i}_${v} = textureLoad(qtex, vec2<u32>(tx + ${v}u, qtexrow${i}), b) * params.scale_log2;`,
      );
    }
    for (const v of V) init.push(`var o${i}_${v} = vec4<f32>(0.0);`);
    init.push(`var m${i} = MASKED;`, `var l${i} = 0.0;`);
  }

  const block: string[] = [];
  // Scores, one key at a time so that only one key row is live.
  for (const j of J) {
    block.push(`let key${j} = j0 + ${j}u;`, `let row${j} = min(key${j}, nk - 1u);`);
    for (const v of V) block.push(`let k${j}_${v} = textureLoad(ktex, vec2<u32>(tx + ${v}u, row${j}), b);`);
    for (const i of Q) {
      block.push(`let a${i}_${j}_0 = q${i}_0 * k${j}_0;`);
      for (const v of V.slice(1)) {
        block.push(`let a${i}_${j}_${v} = fma(q${i}_${v}, k${j}_${v}, a${i}_${j}_${v - 1});`);
      }
      const masked = causal ? `key${j} >= nk || key${j} > qrow${i}` : `key${j} >= nk`;
      block.push(`let s${i}_${j} = select(dot(a${i}_${j}_${dv - 1}, vec4<f32>(1.0)), MASKED, ${masked});`);
    }
  }
  // Online softmax: new running max, rescale of the old sum and accumulator, block probabilities.
  for (const i of Q) {
    const blockMax = J.map((j) => `s${i}_${j}`).reduce((a, b) => `max(${a}, ${b})`);
    block.push(`let mx${i} = max(m${i}, ${blockMax});`);
    block.push(`let c${i} = exp2(m${i} - mx${i});`);
    block.push(`m${i} = mx${i};`);
    for (const j of J) block.push(`let p${i}_${j} = exp2(s${i}_${j} - mx${i});`);
    block.push(`l${i} = fma(l${i}, c${i}, ${J.map((j) => `p${i}_${j}`).join(" + ")});`);
    for (const v of V) block.push(`o${i}_${v} *= c${i};`);
  }
  // P·V
  for (const j of J) {
    for (const v of V) {
      block.push(`let v${j}_${v} = textureLoad(vtex, vec2<u32>(tx + ${v}u, row${j}), b);`);
      for (const i of Q) block.push(`o${i}_${v} = fma(vec4<f32>(p${i}_${j}), v${j}_${v}, o${i}_${v});`);
    }
  }

  const store: string[] = [];
  for (const i of Q) {
    store.push(`if (qrow${i} < nq) {`);
    const base = `params.o.x + b * params.o.z + qrow${i} * params.o.y + h * D`;
    store.push(`let inv${i} = 1.0 / l${i};`);
    if (residual) {
      store.push(emitLoad(mode, "rbuf", base, headDim, (v) => `r${i}_${v}`));
      store.push(emitStore(mode, base, headDim, (v) => `fma(o${i}_${v}, vec4<f32>(inv${i}), r${i}_${v})`));
    } else {
      store.push(emitStore(mode, base, headDim, (v) => `o${i}_${v} * inv${i}`));
    }
    store.push("}");
  }
  return { Q_INIT: init.join("\n"), KEY_BLOCK: block.join("\n"), STORE: store.join("\n") };
}

export function attention(gpu: Gpu, p: AttentionParams): Dispatch[] {
  const q = view(p.q, "q");
  const k = view(p.k, "k");
  const v = view(p.v, "v");
  const packedOut = "operand" in p.out ? p.out : null;
  const out = packedOut
    ? operandView(packedOut, q.batch, q.tokens)
    : view(p.out as Tensor | TokenSlice, "out");
  const residual = p.residual ? view(p.residual, "residual") : null;
  const heads = p.heads;
  const headDim = p.headDim ?? out.shape[2] / heads;
  if (!Number.isInteger(headDim) || headDim <= 0) throw new Error(`attention: bad head dim ${headDim}`);
  const batch = q.batch;
  const nq = q.tokens;
  const nk = k.tokens;
  if (k.batch !== batch || v.batch !== batch || out.batch !== batch) {
    throw new Error(`attention: batch mismatch q ${q.batch}, k ${k.batch}, v ${v.batch}, out ${out.batch}`);
  }
  if (v.tokens !== nk || out.tokens !== nq) {
    throw new Error(`attention: token mismatch q ${nq}, k ${nk}, v ${v.tokens}, out ${out.tokens}`);
  }
  for (const t of [q, k, v, out, ...(residual ? [residual] : [])]) {
    if (t.dtype !== p.act) throw new Error(`attention: tensor ${t.label} is ${t.dtype}, act is ${p.act}`);
  }
  if (
    packedOut &&
    (residual || !attentionWritesOperand(heads, headDim, p.act) || out.shape[2] !== heads * headDim)
  ) {
    throw new Error(
      `attention: ${heads}×${headDim} (${p.act}${
        residual ? ", residual" : ""
      }) cannot be written as GEMM texels`,
    );
  }
  if (packedOut && packedOut.operand.texels * (p.act === "f16" ? 8 : 4) < out.numel) {
    throw new Error(`attention: operand of ${packedOut.operand.texels} texels cannot hold [${out.shape}]`);
  }
  if (residual?.resource === out.resource) {
    throw new Error("attention: out must not share a buffer with residual");
  }
  if (
    residual && (residual.tokens !== nq || residual.batch !== batch || residual.offset !== out.offset ||
      residual.rowStride !== out.rowStride || residual.batchStride !== out.batchStride)
  ) {
    throw new Error("attention: residual must have out's shape, offset and strides");
  }

  for (const [t, what] of [[q, "q"], [k, "k"], [v, "v"], [out, "out"]] as const) {
    const last = t.offset + (t.batch - 1) * t.batchStride + (t.tokens - 1) * t.rowStride + heads * headDim;
    if (last > t.numel || t.offset < 0) {
      throw new Error(
        `attention: ${what} slice (offset ${t.offset}, strides ${t.rowStride}/${t.batchStride}) ` +
          `exceeds its tensor [${t.shape}]`,
      );
    }
  }

  // 1. Q, K, V → textures [batch][token][heads · dv texels].
  const dv = Math.ceil(headDim / 4);
  const width = heads * dv;
  if (3 * batch > gpu.device.limits.maxComputeWorkgroupsPerDimension) {
    throw new Error(`attention: batch ${batch} exceeds the pack grid`);
  }
  const packed = packTokens(
    gpu,
    [q, k, v],
    [
      scratchTexture(gpu, "q", width, nq, batch),
      scratchTexture(gpu, "k", width, nk, batch),
      scratchTexture(gpu, "v", width, nk, batch),
    ],
    headDim,
    width,
    p.act,
  );

  // 2. Attention.
  const aligned = (n: number) =>
    headDim % n === 0 && out.offset % n === 0 && out.rowStride % n === 0 && out.batchStride % n === 0;
  const mode: Mode = p.act === "f32"
    ? (aligned(4) ? "v4f32" : "scalar")
    : aligned(8)
    ? "p8f16"
    : aligned(4)
    ? "p4f16"
    : "scalar";
  const causal = p.causal ?? false;
  const key = attentionKey(nq, nk, heads, headDim, p.act, causal);
  const tiling = resolveAttentionTiling(gpu, headDim, key, p.tiling);
  const pipeline = gpu.kernel("attention", {
    ACT: p.act,
    ELEM: ELEM[mode],
    D: headDim,
    DV: dv,
    WG: tiling.wg,
    QBLOCK: tiling.wg * tiling.qpi,
    KB: tiling.kb,
    CAUSAL: causal,
    RESIDUAL: residual !== null,
    OPERAND: !!packedOut,
    TEX: packedOut?.operand.storage === "texture",
    ...generateBodies(mode, headDim, tiling, causal, residual !== null),
  });
  const params = new Uint32Array(8);
  params[0] = nq;
  params[1] = nk;
  new Float32Array(params.buffer)[2] = (p.scale ?? 1 / Math.sqrt(headDim)) * Math.LOG2E;
  params.set([out.offset, out.rowStride, out.batchStride, 0], 4);
  const resources: (GPUBuffer | GPUTextureView)[] = [
    ...packed.views,
    out.resource,
    gpu.uniform(params),
  ];
  if (residual) resources.push(residual.resource);
  const attend = textureDispatch(
    gpu,
    pipeline,
    resources,
    [Math.ceil(nq / (tiling.wg * tiling.qpi)), heads, batch],
    `attention ${nq}×${nk}×${heads}h×${headDim}`,
  );
  return [packed.dispatch, attend];
}

/** Floating-point operations of one attention call (QKᵀ and PV, a multiply-add counted as 2). */
export function attentionFlops(
  batch: number,
  heads: number,
  nq: number,
  nk: number,
  headDim: number,
): number {
  return 4 * batch * heads * nq * nk * headDim;
}
