// Inpainting as diffusers 0.27.2's StableDiffusionInpaintPipeline does it, for both kinds of UNet:
//
// - an inpainting UNet (in_channels 9 = latents 4 + mask 1 + masked-image latents 4) gets
//   cat([scale_model_input(latents), mask, masked_image_latents]) on every evaluation;
// - an ordinary UNet (in_channels 4) denoises the whole latent, and after every step the area to keep is
//   replaced by the original image's latents noised to the next timestep (clean after the last step): the
//   GPU sampler does it in its update (gpu_sampler.ts, `LatentBlend`).
//
// Random draws, from the run's one generator, in diffusers' order:
//   1. the image's VAE posterior sample     (4-channel UNet, or strength < 1)
//   2. the initial noise                    (latents = strength 1 ? noise·σ_init : add_noise(image, noise))
//   3. the masked image's posterior sample  (drawn for a 4-channel UNet too, which never uses it)
// then whatever the sampler draws per step.

import { decodeImage, encodeImage, resizeRgb, rgbToNchw } from "../image/convert.ts";
import { imageSize } from "../image/codec.ts";
import { maskSizeProblem, preprocessMask } from "../image/mask.ts";
import { checkA1111Inpaint } from "./a1111_inpaint.ts";
import { img2imgSchedule, type Scheduler } from "../schedulers/index.ts";
import type { TorchGenerator } from "../schedulers/rng.ts";
import { repeat } from "./batch.ts";
import type { LatentBlend } from "./gpu_sampler.ts";
import { type GenerateRequest, RequestError } from "./types.ts";

/** What the UNet's input channels say about it: an ordinary denoiser or an inpainting one. */
export type UNetKind = "plain" | "inpainting";

export function unetKind(inChannels: number, latentChannels: number): UNetKind {
  if (inChannels === latentChannels) return "plain";
  if (inChannels === 2 * latentChannels + 1) return "inpainting";
  throw new Error(
    `UNet in_channels ${inChannels} is neither ${latentChannels} (text-to-image) nor ` +
      `${2 * latentChannels + 1} (inpainting: latents, mask, masked-image latents)`,
  );
}

/** The request rules of inpainting (RequestError naming the field); cheap: images are not decoded, only
 * their headers read. */
export function checkInpaintRequest(req: GenerateRequest, kind: UNetKind): void {
  const masked = req.mask !== undefined || req.maskAll === true;
  if (req.mask && req.maskAll) {
    throw new RequestError("mask", "mask: give a mask or repaint everything, not both");
  }
  if (masked && !req.initImage) {
    throw new RequestError("mask", "mask: only applies with an image (the picture to repaint)");
  }
  if (kind === "inpainting" && !masked) {
    throw new RequestError(
      "mask",
      "mask: required, this is an inpainting model (its UNet takes 9 input channels: latents, mask, " +
        "masked image): it needs an image and a mask (white repaints)",
    );
  }
  // A1111's mask is stretched to the output whatever its shape (a1111_inpaint.ts).
  if (req.a1111Inpaint) return checkA1111Inpaint(req);
  if (!req.mask || !req.initImage) return;
  const image = imageSize(req.initImage);
  if (!image) throw new RequestError("image", "image: not a readable PNG or JPEG");
  const mask = imageSize(req.mask);
  if (!mask) throw new RequestError("mask", "mask: not a readable PNG or JPEG");
  const problem = maskSizeProblem(mask, image);
  if (problem) throw new RequestError("mask", `mask: ${problem}`);
}

/**
 * The pixel mask `[H·W]` at latent size `[(H/8)·(W/8)]`: torch's `F.interpolate(mask, size)` in its default
 * "nearest" mode takes source pixel floor(i·8) for output i.
 */
export function latentMask(pixelMask: Float32Array, width: number, height: number): Float32Array {
  const w = width / 8;
  const h = height / 8;
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[y * w + x] = pixelMask[y * 8 * width + x * 8];
  return out;
}

/** A mid-grey 8×8 PNG: an image for warm-up runs (it is resized like any other). */
export function greyPng(): Uint8Array {
  return encodeImage({ width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(128) }, "png");
}

/** What the pipeline needs from itself: the VAE encode with its posterior draw. */
export interface InpaintHost {
  latentChannels: number;
  /** NCHW [1, 3, H, W] in [-1, 1] → scaling · (mean + std · randn), the draw from `generator`. */
  encodeLatents(image: Float32Array, height: number, width: number, g: TorchGenerator): Promise<Float32Array>;
}

/** Where the denoising loop starts and what it adds to each evaluation. */
export interface LoopStart {
  /** NCHW [N, C, h, w]: one row per image of the batch. */
  latents: Float32Array;
  startIndex: number;
  /** NCHW [N, Cc, h, w], image i's appended to its scaled latents on every UNet evaluation (mask, masked
   * latents). */
  condition?: Float32Array;
  /** Blended into the latents after each scheduler step (4-channel inpainting). */
  blend?: LatentBlend;
}

/**
 * The initial latents and per-step hooks of an inpainting run (request already validated), for `count`
 * images from the one generator as diffusers' `num_images_per_prompt` draws them: the posterior samples are
 * of the one image (repeated), the noise `[count, C, h, w]` at once.
 */
export async function inpaintingStart(
  host: InpaintHost,
  kind: UNetKind,
  req: GenerateRequest,
  scheduler: Scheduler,
  generator: TorchGenerator,
  count = 1,
): Promise<LoopStart> {
  const { width, height } = req;
  const C = host.latentChannels;
  const plane = (width / 8) * (height / 8);
  const shape = [1, C, height / 8, width / 8];
  let image: Float32Array;
  try {
    image = rgbToNchw(resizeRgb(decodeImage(req.initImage!), width, height));
  } catch (e) {
    throw new RequestError("image", `image: cannot be decoded (${(e as Error).message})`);
  }
  let pixelMask: Float32Array;
  try {
    pixelMask = req.maskAll
      ? new Float32Array(width * height).fill(1)
      : preprocessMask(req.mask!, width, height, req.maskChannel);
  } catch (e) {
    throw new RequestError("mask", `mask: cannot be decoded (${(e as Error).message})`);
  }
  const strength = req.strength ?? 1;
  const { startIndex } = img2imgSchedule(scheduler, req.steps, strength);
  // diffusers' is_strength_max: start from pure noise, not from the noised image.
  const fromNoise = strength === 1;

  // 1–2. Image latents and the initial latents.
  const encoded = kind === "plain" || !fromNoise
    ? await host.encodeLatents(image, height, width, generator)
    : undefined;
  const imageLatents = encoded && repeat(encoded, count);
  const noise = generator.randn([count, ...shape.slice(1)]);
  const latents = fromNoise
    ? noise.map((v) => Math.fround(v * scheduler.initNoiseSigma))
    : scheduler.addNoise(imageLatents!, noise, startIndex);

  // 3. The masked image (`image * (mask < 0.5)`: the area to repaint set to 0, mid-grey) → latents.
  const mask = latentMask(pixelMask, width, height);
  if (kind === "plain") {
    generator.randn(shape); // diffusers encodes it (and draws) even though this UNet never reads it
    // (1 − m)·add_noise(image_latents, noise, t_next) + m·latents after every step.
    return { latents, startIndex, blend: { original: imageLatents!, noise, mask } };
  }
  const masked = new Float32Array(image.length);
  const pixels = width * height;
  for (let k = 0; k < image.length; k++) masked[k] = pixelMask[k % pixels] < 0.5 ? image[k] : 0;
  const maskedLatents = await host.encodeLatents(masked, height, width, generator);
  // [1, 1 + C, h, w]: the mask channel, then the masked image's latents.
  const condition = new Float32Array((1 + C) * plane);
  condition.set(mask, 0);
  condition.set(maskedLatents, plane);
  return { latents, startIndex, condition: repeat(condition, count) };
}
