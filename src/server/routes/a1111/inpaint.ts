// img2img with a mask, A1111's way, around the engine's inpainting (src/pipeline/inpaint.ts):
//
//   before: the init image and the mask are decoded and resized to the output size (A1111's resize mode 0,
//     "Just resize"); the mask is rounded, inverted and blurred (src/image/mask_blur.ts); with
//     inpainting_fill 0 ("fill") the area to repaint is painted from its surroundings
//     (src/image/inpaint_fill.ts). The engine gets both as PNGs of the output size and binarises the mask at
//     0.5, as diffusers does.
//   after: each image is laid over the original through the mask (A1111's overlay), so the kept area is the
//     original's pixels exactly and a blurred mask gives a soft edge; the PNG keeps its parameters.
//
// inpainting_fill 1 ("original") is the engine's own behaviour; 2 (latent noise) and 3 (latent nothing) are
// accepted with denoising_strength 1, where the masked area starts from pure noise (schema.ts refuses them
// below 1). This runs on the HTTP thread: the inputs are bounded by INPUT_MEGAPIXELS and the work by the
// output size.

import { decodeImage, encodeImage, readPngText } from "../../../image/codec.ts";
import { a1111Mask } from "../../../image/mask_blur.ts";
import { fillMasked, overlayMasked } from "../../../image/inpaint_fill.ts";
import { resizeLanczos } from "../../../image/resize.ts";
import { issue, type ValidationIssue } from "./errors.ts";
import type { A1111Request } from "./schema.ts";

/** The largest init image or mask decoded here. */
export const INPUT_MEGAPIXELS = 16;

export interface PreparedInpaint {
  width: number;
  height: number;
  /** For the engine: PNGs of the output size. */
  image: Uint8Array;
  mask: Uint8Array;
  /** The resized init image (RGB) and the processed mask, for the overlay. */
  original: Uint8Array;
  overlayMask: Uint8Array;
}

/** The engine's image and mask for a masked img2img request at `width` × `height`, or the 422's issues. */
export function prepareInpaint(
  r: A1111Request,
  width: number,
  height: number,
): PreparedInpaint | ValidationIssue[] {
  const image = decodeOrIssue(r.initImage!, ["init_images", 0]);
  const mask = decodeOrIssue(r.mask!, ["mask"]);
  const issues = [image, mask].filter((x): x is ValidationIssue => "loc" in x);
  if (issues.length) return issues;
  const img = image as ReturnType<typeof decodeImage>;
  const n = img.width * img.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(img.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const original = resizeLanczos(rgb, img.width, img.height, 3, width, height);
  const m = a1111Mask(mask as ReturnType<typeof decodeImage>, width, height, {
    round: r.maskRound,
    invert: r.maskInvert,
    blurX: r.maskBlurX,
    blurY: r.maskBlurY,
  });
  const start = r.inpaintingFill === 0 ? fillMasked(original, m, width, height) : original;
  const grey = new Uint8Array(width * height * 3);
  for (let p = 0; p < m.length; p++) grey.fill(m[p], p * 3, p * 3 + 3);
  return {
    width,
    height,
    image: encodeImage(start, width, height, "png").bytes,
    mask: encodeImage(grey, width, height, "png").bytes,
    original,
    overlayMask: m,
  };
}

/** One generated PNG laid over the original through the mask; its parameters chunk is kept. */
export function applyOverlay(png: Uint8Array, prep: PreparedInpaint): Uint8Array {
  const out = decodeImage(png);
  if (out.width !== prep.width || out.height !== prep.height) return png;
  const n = out.width * out.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(out.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const merged = overlayMasked(rgb, prep.original, prep.overlayMask, prep.width, prep.height);
  const parameters = readPngText(png).parameters;
  return encodeImage(merged, prep.width, prep.height, "png", { parameters }).bytes;
}

function decodeOrIssue(bytes: Uint8Array, path: (string | number)[]) {
  try {
    return decodeImage(bytes, INPUT_MEGAPIXELS);
  } catch (e) {
    return issue(path, `cannot be decoded: ${(e as Error).message}`);
  }
}
