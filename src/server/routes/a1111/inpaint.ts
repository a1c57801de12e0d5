// img2img with a mask, A1111's way: the engine does the pixel work (src/pipeline/a1111_inpaint.ts: the mask
// rounded, inverted, blurred; inpainting_fill 0's fill; the overlay of each output on the original), in its
// worker, from the request's `a1111Inpaint` options. Decoding, blurring and re-encoding images costs tens of
// milliseconds of CPU at 512² and far more for large inputs, which would hold up every other request on the
// HTTP thread; here only what the PNG/JPEG headers show is checked, for 422s that name the field.
//
// inpainting_fill 1 ("original") is the engine's own behaviour; 2 (latent noise) and 3 (latent nothing) are
// accepted with denoising_strength 1, where the masked area starts from pure noise (schema.ts refuses them
// below 1).

import { a1111InputProblem } from "../../../pipeline/a1111_inpaint.ts";
import type { A1111Inpaint } from "../../../pipeline/types.ts";
import { issue, type ValidationIssue } from "./errors.ts";
import type { A1111Request } from "./schema.ts";

/** The 422's issues of a masked request's init image and mask, from their headers (none: fine). */
export function checkInpaintImages(r: A1111Request): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  for (const [bytes, path] of [[r.initImage!, ["init_images", 0]], [r.mask!, ["mask"]]] as const) {
    const problem = a1111InputProblem(bytes);
    if (problem) issues.push(issue([...path], `cannot be decoded: ${problem}`));
  }
  return issues;
}

/** The engine's A1111 mask options of a masked request. */
export function a1111InpaintOf(r: A1111Request): A1111Inpaint {
  return {
    blurX: r.maskBlurX,
    blurY: r.maskBlurY,
    round: r.maskRound,
    invert: r.maskInvert,
    fill: r.inpaintingFill as A1111Inpaint["fill"],
    overlay: true,
  };
}
