// TAESD in the pipeline: previews, and the draft decoder of the final image (`--decoder taesd`). TAESD
// takes the UNet's latents as they are (its scaling factor is 1), unlike the VAE (latents / 0.18215).
//
// Previews decode the latents mean-pooled 2×2, so they come out at half the image size (the cheap preview's
// size): a full-size TAESD decode is 141 GFLOP at 512² (33 convs of 64 channels, most of them at 256² and
// 512²), 8.8 % of a batch-2 SD 1.5 UNet step (1607 GFLOP), and measured 9.9 % on lavapipe; pooled it is a
// quarter of that, 2.2 % by FLOPs and 1.2 % measured (2.3 s against 192 s, `deno task bench:models`, f16).
// A preview is a glimpse of where the run is going, and averaging neighbouring latents is close to encoding
// a downscaled image, so the picture stays right.

import type { Gpu } from "../gpu/device.ts";
import { readTensor, writeActivation } from "../gpu/tensor.ts";
import { decodedToRgb, type RgbImage } from "../image/convert.ts";
import type { Taesd } from "../models/taesd/taesd.ts";
import { nchwToNhwc, nhwcToNchw } from "../util/host_tensor.ts";

/** NCHW latents [1, C, h, w] → NCHW image [1, 3, 8h, 8w] in about [−1, 1] (one plan per size, cached);
 * `signal` stops it between command buffers (the final decode, cancelled with its job). */
export async function taesdDecode(
  gpu: Gpu,
  taesd: Taesd,
  latents: Float32Array,
  h: number,
  w: number,
  signal?: AbortSignal,
): Promise<Float32Array> {
  const c = taesd.config.latent_channels;
  if (latents.length !== c * h * w) {
    throw new Error(`taesd decode: ${latents.length} latent values for [1, ${c}, ${h}, ${w}]`);
  }
  const p = taesd.decodePlan(h, w);
  writeActivation(gpu, p.latents, nchwToNhwc({ shape: [1, c, h, w], data: latents }).data);
  await p.plan.runCancellable("taesd decode", signal);
  return nhwcToNchw({ shape: [...p.image.shape], data: await readTensor(gpu, p.image) }).data;
}

/** The latent size a preview of an h×w latent decodes: halved when both sides are even. */
export function previewLatentSize(h: number, w: number): [number, number] {
  return h % 2 === 0 && w % 2 === 0 ? [h / 2, w / 2] : [h, w];
}

/** Mean of each 2×2 block of NCHW latents [c, h, w] (h, w even) → [c, h/2, w/2], in f32 as torch would. */
export function poolLatents2x(latents: Float32Array, c: number, h: number, w: number): Float32Array {
  const [ph, pw] = [h / 2, w / 2];
  const out = new Float32Array(c * ph * pw);
  for (let k = 0; k < c; k++) {
    for (let y = 0; y < ph; y++) {
      for (let x = 0; x < pw; x++) {
        const i = (k * h + 2 * y) * w + 2 * x;
        const sum = Math.fround(
          Math.fround(Math.fround(latents[i] + latents[i + 1]) + latents[i + w]) + latents[i + w + 1],
        );
        out[(k * ph + y) * pw + x] = Math.fround(sum * 0.25);
      }
    }
  }
  return out;
}

/** A TAESD preview of NCHW latents [1, C, h, w]: 8-bit RGB at 4 pixels per latent (8 for odd sides). */
export async function taesdPreview(
  gpu: Gpu,
  taesd: Taesd,
  latents: Float32Array,
  h: number,
  w: number,
): Promise<RgbImage> {
  const [ph, pw] = previewLatentSize(h, w);
  const c = taesd.config.latent_channels;
  const input = ph === h && pw === w ? latents : poolLatents2x(latents, c, h, w);
  return decodedToRgb(await taesdDecode(gpu, taesd, input, ph, pw), 8 * ph, 8 * pw);
}
