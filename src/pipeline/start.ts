// Where a run's denoising loop starts, for a batch: txt2img noise, the encoded and noised init image
// (img2img), or inpainting's start with its per-step additions (inpaint.ts). "diffusers" seeds draw the
// whole batch from the one generator; "per-image" seeds build each image's start on its own generator and
// join them (batch.ts).

import { decodeImage, resizeRgb, rgbToNchw } from "../image/convert.ts";
import { img2imgSchedule, type Scheduler } from "../schedulers/index.ts";
import type { TorchGenerator } from "../schedulers/rng.ts";
import { type BatchRandom, combineStarts, repeat } from "./batch.ts";
import { type InpaintHost, inpaintingStart, type LoopStart, type UNetKind } from "./inpaint.ts";
import { type GenerateRequest, RequestError } from "./types.ts";

/** The batch's start (request already validated). */
export async function batchStart(
  host: InpaintHost,
  kind: UNetKind,
  req: GenerateRequest,
  scheduler: Scheduler,
  random: BatchRandom,
): Promise<LoopStart> {
  if (random.mode === "diffusers" || random.count === 1) {
    return await loopStart(host, kind, req, scheduler, random.generators[0], random.count);
  }
  // One after another: GPU work and each generator's draws keep their order.
  const starts: LoopStart[] = [];
  for (const g of random.generators) starts.push(await loopStart(host, kind, req, scheduler, g, 1));
  return combineStarts(starts);
}

/** The start of `count` images drawn from `generator` (diffusers' `num_images_per_prompt`). */
async function loopStart(
  host: InpaintHost,
  kind: UNetKind,
  req: GenerateRequest,
  scheduler: Scheduler,
  generator: TorchGenerator,
  count: number,
): Promise<LoopStart> {
  const shape = [count, host.latentChannels, req.height / 8, req.width / 8];
  if (req.mask || req.maskAll) return await inpaintingStart(host, kind, req, scheduler, generator, count);
  if (req.initImage) {
    let img;
    try {
      img = decodeImage(req.initImage);
    } catch (e) {
      throw new RequestError("image", `cannot decode the init image: ${(e as Error).message}`);
    }
    const clean = await host.encodeLatents(
      rgbToNchw(resizeRgb(img, req.width, req.height)),
      req.height,
      req.width,
      generator,
    );
    const { startIndex } = img2imgSchedule(scheduler, req.steps, req.strength!);
    return {
      latents: scheduler.addNoise(repeat(clean, count), generator.randn(shape), startIndex),
      startIndex,
    };
  }
  const noise = generator.randn(shape);
  return { latents: noise.map((v) => Math.fround(v * scheduler.initNoiseSigma)), startIndex: 0 };
}
