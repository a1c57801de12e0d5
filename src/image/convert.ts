// Images in and out of the pipeline: the diffusers-exact float → 8-bit conversion, img2img input
// preparation, the cheap latent → RGB preview and A1111's parameters text (codecs in src/image/codec.ts).

import * as codec from "./codec.ts";
import type { ImageFormat } from "./codec.ts";
import { resizeLanczos } from "./resize.ts";

/** 8-bit RGB pixels, row-major HWC. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export function mimeOf(format: ImageFormat): string {
  return codec.MIME_BY_FORMAT[format];
}

/** Encodes RGB pixels; PNGs carry `parameters` (A1111's chunk: tEXt, or iTXt when not Latin-1). */
export function encodeImage(img: RgbImage, format: ImageFormat, parameters?: string): Uint8Array {
  return codec.encodeImage(img.data, img.width, img.height, format, { parameters, quality: 90 }).bytes;
}

/** Decodes a PNG or JPEG to 8-bit RGB; alpha is dropped. */
export function decodeImage(bytes: Uint8Array): RgbImage {
  const d = codec.decodeImage(bytes);
  const data = new Uint8Array(d.width * d.height * 3);
  for (let p = 0, q = 0; p < data.length; p += 3, q += 4) {
    data[p] = d.rgba[q];
    data[p + 1] = d.rgba[q + 1];
    data[p + 2] = d.rgba[q + 2];
  }
  return { width: d.width, height: d.height, data };
}

/** diffusers' output: NCHW [1, 3, H, W] in about [-1, 1] → clamp(x/2 + 0.5, 0, 1) → round(·255). */
export function decodedToRgb(nchw: Float32Array, height: number, width: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  const plane = width * height;
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      const v = Math.min(1, Math.max(0, Math.fround(Math.fround(nchw[c * plane + p] / 2) + 0.5)));
      data[p * 3 + c] = roundHalfEven(Math.fround(v * 255));
    }
  }
  return { width, height, data };
}

/** numpy's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** img2img input: 8-bit RGB → NCHW [1, 3, H, W] in [-1, 1] (x/255·2 − 1, as diffusers' VaeImageProcessor). */
export function rgbToNchw(img: RgbImage): Float32Array {
  const plane = img.width * img.height;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      out[c * plane + p] = Math.fround(Math.fround(img.data[p * 3 + c] / 255) * 2 - 1);
    }
  }
  return out;
}

/** Fits an img2img / inpainting input to the requested size as diffusers' VaeImageProcessor does (Pillow's
 * Lanczos; src/image/resize.ts). */
export function resizeRgb(img: RgbImage, width: number, height: number): RgbImage {
  if (img.width === width && img.height === height) return img;
  return { width, height, data: resizeLanczos(img.data, img.width, img.height, 3, width, height) };
}

/**
 * A1111's "Approx cheap" latent → RGB map for SD 1.x/2.x latents (rows: latent channels 0..3, columns R, G, B):
 * rgb = Σ_c latent[c]·coef[c], then (rgb + 1)/2 clamped to [0, 1].
 */
export const LATENT_RGB_FACTORS: readonly (readonly [number, number, number])[] = [
  [0.298, 0.207, 0.208],
  [0.187, 0.286, 0.173],
  [-0.158, 0.189, 0.264],
  [-0.184, -0.271, -0.473],
];

/** Cheap preview of NCHW latents [1, 4, h, w], upscaled `scale`× by pixel replication. */
export function latentPreview(latents: Float32Array, h: number, w: number, scale = 4): RgbImage {
  const plane = h * w;
  const W = w * scale;
  const H = h * scale;
  const data = new Uint8Array(W * H * 3);
  const px = new Uint8Array(3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < 3; k++) {
        let v = 0;
        for (let c = 0; c < 4; c++) v += latents[c * plane + y * w + x] * LATENT_RGB_FACTORS[c][k];
        px[k] = Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
      }
      for (let dy = 0; dy < scale; dy++) {
        let o = ((y * scale + dy) * W + x * scale) * 3;
        for (let dx = 0; dx < scale; dx++, o += 3) data.set(px, o);
      }
    }
  }
  return { width: W, height: H, data };
}

const A1111_SAMPLER_NAMES: Record<string, string> = {
  pndm: "PLMS",
  ddim: "DDIM",
  ddpm: "DDPM",
  euler: "Euler",
  euler_a: "Euler a",
  heun: "Heun",
  dpmpp_2m: "DPM++ 2M",
  dpmpp_2m_karras: "DPM++ 2M Karras",
  unipc: "UniPC",
  lcm: "LCM",
};

/** The generation parameters in A1111's text format (the PNG's "parameters" chunk). */
export function a1111Parameters(p: {
  prompt: string;
  negativePrompt?: string;
  steps: number;
  sampler: string;
  guidanceScale: number;
  seed: number | bigint;
  width: number;
  height: number;
  model?: string;
  strength?: number;
}): string {
  const fields = [
    `Steps: ${p.steps}`,
    `Sampler: ${A1111_SAMPLER_NAMES[p.sampler] ?? p.sampler}`,
    `CFG scale: ${p.guidanceScale}`,
    `Seed: ${p.seed}`,
    `Size: ${p.width}x${p.height}`,
  ];
  if (p.model) fields.push(`Model: ${p.model.replaceAll(",", " ")}`);
  if (p.strength !== undefined) fields.push(`Denoising strength: ${p.strength}`);
  fields.push("Version: sd-webgpu");
  const lines = [p.prompt];
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  lines.push(fields.join(", "));
  return lines.join("\n");
}
