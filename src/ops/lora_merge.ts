// LoRA merging into packed GEMM weights (shaders/lora.wgsl). Conv and Linear weights live on the GPU only in
// their packed form (the f16 original is freed after packing, models/weights.ts), so the low-rank update is
// applied in that layout: rows of `rowTexels` 16-byte texels, 8 f16 values of K each —
//   Linear [N, K]            → [N, K8] texels, K8 = ceil(K/8), value k at texel k/8, lane k%8
//   conv [Cout, Cin, kh, kw] → [Cout, kh·kw, C8] texels, C8 = ceil(Cin/8), value (cin, tap) at texel
//                              tap·C8 + cin/8, lane cin%8
// (ops/gemm_weights.ts, ops/conv.ts). `packDown` puts a LoRA down matrix [r, K] (checkpoint K order) into that
// order on the host; the kernel then adds Σ_r scale·up[n, r]·down[r, k] to an untouched copy of the weight
// and writes the f16 result into the live operand that the recorded plans bind. Copies (`backupOf`,
// `copyOperand`) are plain GPU copies, so restoring the original is bit-exact.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ConvWeight } from "./conv.ts";
import type { LinearWeight } from "./gemm_weights.ts";
import { makeDispatch } from "./gemm.ts";

export type PackedWeight = ConvWeight | LinearWeight;

/** Where a packed operand's texels live: a texture (llvmpipe) or a storage buffer. */
export type OperandStore = { texture: GPUTexture; view: GPUTextureView } | { buffer: GPUBuffer };

/** Output rows and texels per row of a packed weight (see the header). */
export function packedGeometry(w: PackedWeight): { rows: number; rowTexels: number; k: number } {
  if (w.kind === "linear-weight") return { rows: w.n, rowTexels: w.k8, k: w.k };
  return { rows: w.cout, rowTexels: w.kh * w.kw * w.c8, k: w.cin * w.kh * w.kw };
}

/** The live operand of a packed weight, as a store. */
export function storeOf(w: PackedWeight): OperandStore {
  if (w.texture) return { texture: w.texture, view: w.operand as GPUTextureView };
  return { buffer: w.operand as GPUBuffer };
}

/** Bytes a store occupies (a texture: whole rows of 8192 texels). */
export function storeBytes(s: OperandStore): number {
  return "texture" in s ? s.texture.width * s.texture.height * 16 : s.buffer.size;
}

/** A new store of the same kind and size as the weight's live operand (contents undefined until copied). */
export function backupOf(gpu: Gpu, w: PackedWeight, label: string): OperandStore {
  const live = storeOf(w);
  if ("buffer" in live) return { buffer: gpu.storage(live.buffer.size, label) };
  const texture = gpu.device.createTexture({
    label,
    size: [live.texture.width, live.texture.height],
    format: live.texture.format,
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_SRC | GPUTextureUsage.COPY_DST,
  });
  return { texture, view: texture.createView({ label }) };
}

/** Encodes a whole-store copy (same kind and size). */
export function copyOperand(encoder: GPUCommandEncoder, from: OperandStore, to: OperandStore): void {
  if ("buffer" in from && "buffer" in to) {
    encoder.copyBufferToBuffer(from.buffer, 0, to.buffer, 0, from.buffer.size);
  } else if ("texture" in from && "texture" in to) {
    encoder.copyTextureToTexture({ texture: from.texture }, { texture: to.texture }, [
      from.texture.width,
      from.texture.height,
    ]);
  } else {
    throw new Error("copyOperand: a texture and a buffer cannot be copied into each other");
  }
}

export function destroyStore(s: OperandStore): void {
  if ("texture" in s) s.texture.destroy();
  else s.buffer.destroy();
}

/**
 * A LoRA down matrix [rank, K] in checkpoint order (K = Cin·kh·kw for convs, cin-major) as [rank, rowTexels·8]
 * in the weight's packed K order, zeros in the padding.
 */
export function packDown(w: PackedWeight, down: Float32Array, rank: number): Float32Array {
  const { rowTexels, k } = packedGeometry(w);
  if (down.length !== rank * k) throw new Error(`packDown: ${down.length} values for [${rank}, ${k}]`);
  const out = new Float32Array(rank * rowTexels * 8);
  for (let r = 0; r < rank; r++) {
    const src = r * k;
    const dst = r * rowTexels * 8;
    if (w.kind === "linear-weight") {
      out.set(down.subarray(src, src + k), dst);
      continue;
    }
    const taps = w.kh * w.kw;
    for (let cin = 0; cin < w.cin; cin++) {
      for (let tap = 0; tap < taps; tap++) {
        out[dst + (tap * w.c8 + (cin >> 3)) * 8 + (cin & 7)] = down[src + cin * taps + tap];
      }
    }
  }
  return out;
}

/**
 * The LoRA up matrices of one weight, concatenated along the rank: up [N, rank] (row-major, one block per LoRA)
 * as [R, ceil(N/4)·4], the kernel's transposed layout.
 */
export function transposeUp(rows: number, blocks: { up: Float32Array; rank: number }[]): Float32Array {
  const R = blocks.reduce((a, b) => a + b.rank, 0);
  const n4 = Math.ceil(rows / 4) * 4;
  const out = new Float32Array(R * n4);
  let r0 = 0;
  for (const { up, rank } of blocks) {
    if (up.length !== rows * rank) throw new Error(`transposeUp: ${up.length} values for [${rows}, ${rank}]`);
    for (let n = 0; n < rows; n++) {
      for (let r = 0; r < rank; r++) out[(r0 + r) * n4 + n] = up[n * rank + r];
    }
    r0 += rank;
  }
  return out;
}

export interface LoraMergeParams {
  weight: PackedWeight;
  /** The untouched original, same store kind as the weight's operand. */
  base: OperandStore;
  /** [R, ceil(N/4)·4] (transposeUp). */
  upT: Float32Array;
  /** [R, rowTexels·8] (packDown, blocks concatenated in the same order as upT). */
  down: Float32Array;
  /** [R]: each rank's scale (user scale · alpha / rank of its LoRA). */
  scales: Float32Array;
  label?: string;
}

/**
 * The merge dispatch, and the buffers it reads (destroy them once the queue has run it). Writes the weight's
 * live operand: f16(base + Σ_r scales[r]·up[:, r]·down[r, :]) in f32.
 */
export function loraMerge(gpu: Gpu, p: LoraMergeParams): { dispatch: Dispatch; buffers: GPUBuffer[] } {
  const op = `loraMerge${p.label ? ` ${p.label}` : ""}`;
  const { rows, rowTexels } = packedGeometry(p.weight);
  const R = p.scales.length;
  const groups = Math.ceil(rows / 4);
  if (R < 1) throw new Error(`${op}: no ranks to merge`);
  if (p.upT.length !== R * groups * 4) {
    throw new Error(`${op}: up has ${p.upT.length} values, not ${R}×${groups * 4}`);
  }
  if (p.down.length !== R * rowTexels * 8) {
    throw new Error(`${op}: down has ${p.down.length} values, not ${R}×${rowTexels * 8}`);
  }
  const live = storeOf(p.weight);
  if (("texture" in live) !== ("texture" in p.base)) {
    throw new Error(`${op}: base and weight differ in storage`);
  }
  const upload = (data: Float32Array, what: string) => {
    const b = gpu.storage(data.byteLength, `${op} ${what}`);
    gpu.device.queue.writeBuffer(b, 0, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    return b;
  };
  const buffers = [upload(p.upT, "up"), upload(p.down, "down"), upload(p.scales, "scales")];
  const params = gpu.uniform(new Uint32Array([rows, rowTexels, R, groups]), `${op} params`);
  buffers.push(params);
  const tex = "texture" in live;
  const pipeline = gpu.kernel("lora", { TEX: tex }, "lora_merge");
  const resources = [
    "texture" in p.base ? p.base.view : p.base.buffer,
    "texture" in live ? live.view : live.buffer,
    ...buffers,
  ];
  const dispatch = makeDispatch(gpu, pipeline, resources, Math.ceil((groups * rowTexels) / 64), op);
  return { dispatch, buffers };
}

/** The packed texels of a weight's live operand (rows·rowTexels·16 bytes), read back: tests compare them. */
export async function readPacked(gpu: Gpu, w: PackedWeight): Promise<Uint8Array> {
  const { rows, rowTexels } = packedGeometry(w);
  const bytes = rows * rowTexels * 16;
  const live = storeOf(w);
  if ("buffer" in live) {
    return new Uint8Array(await gpu.readBytes(live.buffer, bytes, 0, "read packed weight"));
  }
  const { width, height } = live.texture;
  const staging = gpu.device.createBuffer({
    size: width * height * 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = gpu.device.createCommandEncoder({ label: "read packed weight" });
  encoder.copyTextureToBuffer({ texture: live.texture }, { buffer: staging, bytesPerRow: width * 16 }, [
    width,
    height,
  ]);
  gpu.device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint8Array(staging.getMappedRange().slice(0, bytes));
  staging.unmap();
  staging.destroy();
  gpu.assertHealthy("read packed weight");
  return out;
}
