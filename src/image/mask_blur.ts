// Inpainting masks the way AUTOMATIC1111's img2img prepares them, before the pipeline sees them:
//
//   1. the mask's grey levels: its alpha channel when it has transparent pixels, else its luminance;
//   2. rounding (A1111's `mask_round`, on by default): above 128 → 255, else 0;
//   3. inverting (`inpainting_mask_invert`);
//   4. a Gaussian blur of σ = `mask_blur` pixels per axis (`mask_blur_x`, `mask_blur_y`), OpenCV's
//      GaussianBlur as A1111 calls it: 2·⌊2.5σ + 0.5⌋ + 1 taps, edges reflected without repeating the edge
//      pixel (BORDER_REFLECT_101).
//
// The pipeline then binarises the blurred mask at 0.5, as diffusers does (src/image/mask.ts): a blur moves
// that edge only where the mask is curved or thinner than a few σ. The soft edge A1111 users see comes from
// the final composite over the original (src/image/inpaint_fill.ts, `overlayMasked`).

import type { DecodedImage } from "./codec.ts";
import { resizeLanczos } from "./resize.ts";

/** A1111's kernel radius for a blur of σ pixels: ⌊2.5σ + 0.5⌋ taps each side. */
export function gaussianRadius(sigma: number): number {
  return Math.floor(2.5 * sigma + 0.5);
}

/** The normalised 1-D Gaussian of σ over [−r, r] (r = gaussianRadius(σ)); σ ≤ 0: the identity [1]. */
export function gaussianKernel(sigma: number): Float64Array {
  if (!(sigma > 0)) return Float64Array.of(1);
  const r = gaussianRadius(sigma);
  const k = new Float64Array(2 * r + 1);
  let sum = 0;
  for (let i = -r; i <= r; i++) {
    k[i + r] = Math.exp(-(i * i) / (2 * sigma * sigma));
    sum += k[i + r];
  }
  for (let i = 0; i < k.length; i++) k[i] /= sum;
  return k;
}

/** Index `i` reflected into [0, n) without repeating the edge (…2 1 | 0 1 2 … n−2 n−1 | n−2 …). */
export function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * n - 2;
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - j;
  return j;
}

/**
 * Blurs an 8-bit single-channel `[height · width]` plane with a separable Gaussian of `sigmaX` (along rows)
 * and `sigmaY` (along columns); a σ of 0 leaves that axis alone. Rounded to the nearest integer.
 */
export function blurMask(
  mask: Uint8Array,
  width: number,
  height: number,
  sigmaX: number,
  sigmaY: number = sigmaX,
): Uint8Array {
  if (mask.length !== width * height) {
    throw new Error(`blurMask: ${mask.length} values are not ${width}x${height}`);
  }
  let plane: Float64Array = Float64Array.from(mask);
  if (sigmaX > 0) plane = convolve(plane, width, height, gaussianKernel(sigmaX), 1, width);
  if (sigmaY > 0) plane = convolve(plane, width, height, gaussianKernel(sigmaY), width, height);
  const out = new Uint8Array(plane.length);
  for (let p = 0; p < plane.length; p++) out[p] = Math.min(255, Math.max(0, Math.round(plane[p])));
  return out;
}

/** One pass along an axis: `step` between neighbours, `n` values along it. */
function convolve(
  src: Float64Array,
  width: number,
  height: number,
  kernel: Float64Array,
  step: number,
  n: number,
): Float64Array {
  const r = (kernel.length - 1) / 2;
  const out = new Float64Array(src.length);
  const lines = step === 1 ? height : width;
  const lineStride = step === 1 ? width : 1;
  for (let line = 0; line < lines; line++) {
    const base = line * lineStride;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let t = -r; t <= r; t++) s += kernel[t + r] * src[base + reflect101(i + t, n) * step];
      out[base + i * step] = s;
    }
  }
  return out;
}

export interface A1111MaskOptions {
  /** Round the mask to 0/255 first (A1111's `mask_round`, default true). */
  round?: boolean;
  /** Repaint where the mask is black instead (`inpainting_mask_invert`). */
  invert?: boolean;
  /** Blur σ in the mask's own pixels along x and y (A1111 blurs before resizing; this blurs after, with σ
   * scaled to the output, so a large mask costs what the output does). */
  blurX?: number;
  blurY?: number;
}

/**
 * A decoded mask → A1111's mask at `width` × `height`: grey levels (alpha where the mask is transparent
 * anywhere, else luminance), rounded, resized (Pillow's Lanczos), inverted, blurred. 255 repaints.
 */
export function a1111Mask(
  mask: DecodedImage,
  width: number,
  height: number,
  options: A1111MaskOptions = {},
): Uint8Array {
  const n = mask.width * mask.height;
  const rgba = mask.rgba;
  let transparent = false;
  for (let p = 0; p < n && !transparent; p++) transparent = rgba[p * 4 + 3] !== 255;
  const grey = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    const o = p * 4;
    // Pillow's convert("L"): (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16.
    const v = transparent
      ? rgba[o + 3]
      : (rgba[o] * 19595 + rgba[o + 1] * 38470 + rgba[o + 2] * 7471 + 0x8000) >>> 16;
    grey[p] = options.round === false ? v : v > 128 ? 255 : 0;
  }
  const out = resizeLanczos(grey, mask.width, mask.height, 1, width, height);
  if (options.invert) { for (let p = 0; p < out.length; p++) out[p] = 255 - out[p]; }
  const sx = (options.blurX ?? 0) * (width / mask.width);
  const sy = (options.blurY ?? 0) * (height / mask.height);
  return sx > 0 || sy > 0 ? blurMask(out, width, height, sx, sy) : out;
}
