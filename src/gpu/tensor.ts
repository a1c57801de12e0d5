// A GPU tensor: a storage buffer plus shape and element type. Row-major.
// Activations inside the engine are NHWC ([B, H, W, C]) or token-major ([B, T, C]); weights keep the
// checkpoint's layout and stay f16.

import { f16ToF32Array, f32ToF16Array, type Gpu } from "./device.ts";
import { type HostTensor, nhwcToNchw } from "../util/host_tensor.ts";

export type DType = "f32" | "f16";

export const bytesPerElement = (d: DType): number => (d === "f32" ? 4 : 2);

export class Tensor {
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly label = "",
  ) {}

  get numel(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return this.numel * bytesPerElement(this.dtype);
  }

  /** Same buffer, another shape of the same element count. */
  view(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.numel) {
      throw new Error(`cannot view ${this.label || "tensor"} [${this.shape}] as [${shape}]`);
    }
    return new Tensor(this.buffer, shape, this.dtype, this.label);
  }

  destroy(): void {
    this.buffer.destroy();
  }
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function emptyTensor(gpu: Gpu, shape: readonly number[], dtype: DType, label = ""): Tensor {
  return new Tensor(gpu.storage(numel(shape) * bytesPerElement(dtype), label), shape, dtype, label);
}

/** Writes host bytes, padding the tail to a multiple of 4 bytes as writeBuffer requires. */
export function writeBytes(gpu: Gpu, buffer: GPUBuffer, bytes: Uint8Array, offset = 0): void {
  const aligned = bytes.byteLength & ~3;
  if (aligned > 0) {
    gpu.device.queue.writeBuffer(buffer, offset, bytes.buffer as ArrayBuffer, bytes.byteOffset, aligned);
  }
  if (aligned < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(aligned));
    gpu.device.queue.writeBuffer(buffer, offset + aligned, tail);
  }
}

/** Uploads f32 host data as a tensor of `dtype` (converted to f16 bits when asked). */
export function uploadTensor(
  gpu: Gpu,
  data: Float32Array,
  shape: readonly number[],
  dtype: DType = "f32",
  label = "",
): Tensor {
  if (data.length !== numel(shape)) throw new Error(`${label}: ${data.length} values for shape [${shape}]`);
  const t = emptyTensor(gpu, shape, dtype, label);
  const src = dtype === "f32" ? data : f32ToF16Array(data);
  writeBytes(gpu, t.buffer, new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
  return t;
}

/** Uploads raw f16 bits (weights). */
export function uploadF16Bits(gpu: Gpu, bits: Uint16Array, shape: readonly number[], label = ""): Tensor {
  if (bits.length !== numel(shape)) throw new Error(`${label}: ${bits.length} values for shape [${shape}]`);
  const t = emptyTensor(gpu, shape, "f16", label);
  writeBytes(gpu, t.buffer, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
  return t;
}

/** Reads a tensor back as f32 (awaits the queue). */
export async function readTensor(gpu: Gpu, t: Tensor): Promise<Float32Array> {
  const bytes = await gpu.readBytes(t.buffer, t.byteLength, 0, `read ${t.label}`);
  return t.dtype === "f32" ? new Float32Array(bytes) : f16ToF32Array(new Uint16Array(bytes));
}

/** Writes f32 host values into an activation tensor (converting to f16 bits when it is f16). */
export function writeActivation(gpu: Gpu, t: Tensor, data: Float32Array): void {
  if (data.length !== t.numel) throw new RangeError(`${t.label}: ${data.length} values for [${t.shape}]`);
  const src = t.dtype === "f32" ? data : f32ToF16Array(data);
  writeBytes(gpu, t.buffer, new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
}

export async function readNchw(gpu: Gpu, t: Tensor): Promise<HostTensor> {
  const data = await readTensor(gpu, t);
  if (t.shape.length !== 4) return { shape: [...t.shape], data };
  return nhwcToNchw({ shape: [...t.shape], data });
}
