// Inpainting AUTOMATIC1111's way (GenerateRequest.a1111Inpaint), as steps around an ordinary inpainting run:
//
//   before: the init image and the mask are decoded and stretched to the output size (A1111's resize mode 0,
//     "Just resize"); the mask is rounded, inverted and blurred (image/mask_blur.ts); with fill 0 the area to
//     repaint is painted from its surroundings (image/inpaint_fill.ts). The run then gets both as PNGs of
//     the output size — exactly a native inpainting request, so its resize is the identity and it binarises
//     the blurred mask at 0.5, as diffusers does.
//   after: each image is laid over the original through the mask (A1111's overlay), so the kept area is the
//     original's pixels exactly and a blurred mask gives a soft edge; a PNG keeps its parameters chunk.
//
// This is pixel work of tens of milliseconds at 512² (more for inputs up to A1111_INPUT_MEGAPIXELS): it runs
// in the engine's thread (the server's engine worker), never on the thread that serves HTTP, which checks
// only what the headers show (`a1111InputProblem`).

import { decodeImage, type ImageFormat, imageSize, readPngText } from "../image/codec.ts";
import { encodeImage, mimeOf } from "../image/convert.ts";
import { fillMasked, overlayMasked } from "../image/inpaint_fill.ts";
import { a1111Mask } from "../image/mask_blur.ts";
import { resizeLanczos } from "../image/resize.ts";
import { type GenerateRequest, type GenerationEvent, RequestError } from "./types.ts";

/** The largest init image or mask decoded for A1111 inpainting. */
export const A1111_INPUT_MEGAPIXELS = 16;
/** The largest blur σ (A1111's mask_blur slider ends at 64). */
export const A1111_MAX_BLUR = 64;

/** Why `bytes` cannot be an A1111 init image or mask, from its header alone (no pixel is decoded), or
 * undefined when it may be. */
export function a1111InputProblem(bytes: Uint8Array): string | undefined {
  const size = imageSize(bytes);
  if (!size) return "not a readable PNG or JPEG header";
  if (size.width < 1 || size.height < 1) return `empty image (${size.width}x${size.height})`;
  if (size.width * size.height > A1111_INPUT_MEGAPIXELS * 1e6) {
    return `image too large (${size.width}x${size.height}, over ${A1111_INPUT_MEGAPIXELS} megapixels)`;
  }
  return undefined;
}

/** The request rules of `a1111Inpaint` (RequestError naming the A1111 field); cheap: headers only. */
export function checkA1111Inpaint(req: GenerateRequest): void {
  const o = req.a1111Inpaint;
  if (!o) return;
  if (!req.mask || req.maskAll) {
    throw new RequestError("mask", "mask: A1111 inpainting needs a mask (not a repaint-everything one)");
  }
  if (!req.initImage) {
    throw new RequestError("mask", "mask: only applies with an image (the picture to repaint)");
  }
  for (const [field, v] of [["mask_blur_x", o.blurX], ["mask_blur_y", o.blurY]] as const) {
    if (v !== undefined && !(v >= 0 && v <= A1111_MAX_BLUR)) {
      throw new RequestError(field, `${field} must be a number from 0 to ${A1111_MAX_BLUR}`);
    }
  }
  const fill = o.fill ?? 1;
  if (![0, 1, 2, 3].includes(fill)) {
    throw new RequestError("inpainting_fill", "inpainting_fill must be 0, 1, 2 or 3");
  }
  if (fill >= 2 && (req.strength ?? 1) !== 1) {
    throw new RequestError(
      "inpainting_fill",
      `inpainting_fill ${fill} needs strength 1 (the masked area then starts from pure noise)`,
    );
  }
  for (const [field, bytes] of [["image", req.initImage], ["mask", req.mask]] as const) {
    const problem = a1111InputProblem(bytes);
    if (problem) throw new RequestError(field, `${field}: ${problem}`);
  }
}

/** What the overlay needs after the run. */
export interface A1111Prepared {
  /** The native inpainting request: image and mask as PNGs of the output size; PNG output when overlaid
   * (lossless, re-encoded in the asked format after the overlay). */
  request: GenerateRequest;
  /** The stretched init image (8-bit RGB) and A1111's mask (255 repaints), at the output size. */
  original: Uint8Array;
  mask: Uint8Array;
}

/** The "before" steps of a checked request (checkA1111Inpaint). */
export function prepareA1111Inpaint(req: GenerateRequest): A1111Prepared {
  const o = req.a1111Inpaint!;
  const { width, height } = req;
  const image = decodeInput("image", req.initImage!);
  const n = image.width * image.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(image.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const original = resizeLanczos(rgb, image.width, image.height, 3, width, height);
  const mask = a1111Mask(decodeInput("mask", req.mask!), width, height, {
    round: o.round,
    invert: o.invert,
    blurX: o.blurX,
    blurY: o.blurY,
  });
  const start = o.fill === 0 ? fillMasked(original, mask, width, height) : original;
  const grey = new Uint8Array(width * height * 3);
  for (let p = 0; p < mask.length; p++) grey.fill(mask[p], p * 3, p * 3 + 3);
  const request: GenerateRequest = {
    ...req,
    initImage: encodeImage({ width, height, data: start }, "png"),
    mask: encodeImage({ width, height, data: grey }, "png"),
    ...(o.overlay !== false ? { outputFormat: "png" as const } : {}),
  };
  // The prepared mask is white-repaints and opaque: the run reads it the native way.
  delete request.a1111Inpaint;
  delete request.maskChannel;
  return { request, original, mask };
}

/** One generated PNG laid over the original through the mask, encoded as `format` (a PNG keeps the
 * parameters chunk). */
export function overlayA1111(
  png: Uint8Array,
  prep: A1111Prepared,
  format: ImageFormat = "png",
): Uint8Array {
  const out = decodeImage(png);
  const n = out.width * out.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(out.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const merged = overlayMasked(rgb, prep.original, prep.mask, out.width, out.height);
  return encodeImage(
    { width: out.width, height: out.height, data: merged },
    format,
    readPngText(png).parameters,
  );
}

/**
 * `run` (an engine's own generation) with the A1111 steps around it when the request asks for them, else
 * `run` as it is. The done event's images are the overlaid ones; its totalMs includes the steps.
 */
export async function* withA1111Inpaint(
  req: GenerateRequest,
  run: (req: GenerateRequest) => AsyncIterable<GenerationEvent>,
): AsyncGenerator<GenerationEvent> {
  if (!req.a1111Inpaint) return yield* run(req);
  checkA1111Inpaint(req);
  const t0 = performance.now();
  const prep = prepareA1111Inpaint(req);
  let ownMs = performance.now() - t0;
  const overlay = req.a1111Inpaint.overlay !== false;
  const format = req.outputFormat ?? "png";
  for await (const event of run(prep.request)) {
    if (event.type !== "done" || !overlay) {
      yield event;
      continue;
    }
    const t1 = performance.now();
    const images = (event.images ?? [event.image]).map((png) => overlayA1111(png, prep, format));
    ownMs += performance.now() - t1;
    yield {
      ...event,
      image: images[0],
      ...(event.images ? { images } : {}),
      mime: mimeOf(format),
      timings: { ...event.timings, totalMs: event.timings.totalMs + ownMs },
    };
  }
}

function decodeInput(field: "image" | "mask", bytes: Uint8Array) {
  try {
    return decodeImage(bytes, A1111_INPUT_MEGAPIXELS);
  } catch (e) {
    throw new RequestError(field, `${field}: cannot be decoded (${(e as Error).message})`);
  }
}
