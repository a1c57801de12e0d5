// Inpainting masks: which sizes fit an image, and diffusers 0.27.2's mask preprocessing
// (`VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True).preprocess(mask,
// height, width)`, what StableDiffusionInpaintPipeline calls): Pillow Lanczos resize to the output size,
// grayscale, /255, binarise at 0.5.

import * as codec from "./codec.ts";
import { resizeLanczos } from "./resize.ts";

/** Which channel of a mask says "repaint": white (diffusers, the native API, the CLI) or transparent
 * (OpenAI's /v1/images/edits: repaint where alpha is 0). */
export type MaskChannel = "luminance" | "alpha";

export interface Size {
  width: number;
  height: number;
}

/** Relative aspect-ratio difference a mask may have from its image (a few pixels of rounding at any
 * size); beyond it the mask was drawn for another picture. */
export const MASK_ASPECT_TOLERANCE = 0.01;

/** Why a mask of size `mask` cannot be fitted to an image of size `image`, or undefined when it can: the
 * mask is stretched to the image, so only its aspect ratio must agree. */
export function maskSizeProblem(mask: Size, image: Size): string | undefined {
  const ratio = (mask.width / mask.height) / (image.width / image.height);
  if (Math.abs(ratio - 1) <= MASK_ASPECT_TOLERANCE) return undefined;
  return `the mask is ${mask.width}x${mask.height} but the image is ${image.width}x${image.height}: a mask must ` +
    `have the image's aspect ratio (within ${
      MASK_ASPECT_TOLERANCE * 100
    } %), it is then resized to the image`;
}

/**
 * An encoded PNG/JPEG mask → `[height · width]` of 0 (keep) and 1 (repaint), as diffusers prepares it:
 * Pillow-Lanczos resize to width × height, then grayscale (`convert("L")`: (19595·R + 38470·G + 7471·B +
 * 2¹⁵) >> 16), then v/255 ≥ 0.5 → 1. Resizing before the grayscale conversion is diffusers' order; for a
 * grey mask either order gives the same bytes. With `channel` "alpha" the value is 255 − alpha instead.
 */
export function preprocessMask(
  bytes: Uint8Array,
  width: number,
  height: number,
  channel: MaskChannel = "luminance",
): Float32Array {
  const d = codec.decodeImage(bytes);
  const n = d.width * d.height;
  const out = new Float32Array(width * height);
  if (channel === "alpha") {
    const a = new Uint8Array(n);
    for (let p = 0; p < n; p++) a[p] = 255 - d.rgba[p * 4 + 3];
    const r = resizeLanczos(a, d.width, d.height, 1, width, height);
    for (let p = 0; p < r.length; p++) out[p] = binarize(r[p]);
    return out;
  }
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(d.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const r = resizeLanczos(rgb, d.width, d.height, 3, width, height);
  for (let p = 0; p < width * height; p++) {
    const l = (r[p * 3] * 19595 + r[p * 3 + 1] * 38470 + r[p * 3 + 2] * 7471 + 0x8000) >>> 16;
    out[p] = binarize(l);
  }
  return out;
}

/** diffusers: `mask[mask < 0.5] = 0; mask[mask >= 0.5] = 1` on float32(v) / 255, i.e. v ≥ 128. */
function binarize(v: number): number {
  return Math.fround(v / 255) < 0.5 ? 0 : 1;
}
