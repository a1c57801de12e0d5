// Floating-point operation counts of one model call (multiply-add = 2 FLOPs), for "effective GFLOP/s"
// figures in benchmarks. Only GEMM-like work is counted (convs, linears, attention), as is customary; norms
// and elementwise ops are a rounding error. Each count is the model's own forward, recorded by the model
// builder over the declared weight shapes (no GPU), so it cannot drift from what runs.

import { declaredShapes } from "./declare.ts";
import { clipTensorSpecs, unetTensorSpecs, vaeTensorSpecs } from "./expected.ts";
import type { UNetConfig } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";
import type { ClipTextConfig } from "./clip/config.ts";
import { unetGraph } from "./unet/unet.ts";
import { vaeDecoderGraph } from "./vae/vae.ts";
import { clipGraph } from "./clip/clip.ts";
import type { TaesdConfig } from "./taesd/config.ts";
import { taesdDecoderGraph, taesdTensorSpecs } from "./taesd/taesd.ts";

export function unetFlops(c: UNetConfig, batch: number, height: number, width: number, contextTokens = 77) {
  const shape = { batch, height, width, contextTokens };
  return unetGraph(c, declaredShapes(unetTensorSpecs(c)), "f32", shape).b.flops();
}

/** One decode of an h×w latent. */
export function vaeDecodeFlops(c: VaeConfig, h: number, w: number): number {
  return vaeDecoderGraph(c, declaredShapes(vaeTensorSpecs(c)), "f32", h, w).b.flops();
}

export function clipFlops(c: ClipTextConfig, batch: number, tokens: number): number {
  return clipGraph(c, declaredShapes(clipTensorSpecs(c)), "f32", batch, tokens).b.flops();
}

/** One TAESD decode of an h×w latent. */
export function taesdDecodeFlops(c: TaesdConfig, h: number, w: number): number {
  return taesdDecoderGraph(c, declaredShapes(taesdTensorSpecs(c)), "f32", h, w).b.flops();
}
