// Batches: several images from one request, denoised together.
//
// Random draws. "diffusers" mode is diffusers' `num_images_per_prompt`: one generator makes every draw, and
// each draw covers the whole batch at once (`randn([N, 4, h, w])` for the initial latents and for every
// sampler noise; the VAE posterior samples of img2img and inpainting stay `[1, …]`, the image being encoded
// once and repeated). "per-image" mode gives image i its own generator seeded with `seed + i`, so image i is
// exactly the single-image run with that seed (A1111's batches; OpenAI's `n`).
//
// Memory. The UNet runs `rows = N × (CFG ? 2 : 1)` rows per evaluation. The images are split into calls of at
// most `imagesPerCall` images, the largest count whose UNet plan activation bytes (`UNet.planBytes`, exactly
// what the plan allocates) fit in the batch budget (`batchBudgetBytes`, default 1 GiB; at least one image per
// call whatever the budget). The split is only of the UNet evaluation: the sampler's step is elementwise per
// image (on the GPU, after each call), so a split batch gives the same images as an unsplit one.

import { TorchGenerator } from "../schedulers/rng.ts";
import type { LoopStart } from "./inpaint.ts";
import type { SeedMode } from "./types.ts";

/** Default activation budget of one UNet evaluation of a batch: 1 GiB (SD 1.5 at 512² in f16 with CFG
 * holds about 170 MiB per image, at 768² about 381 MiB). */
export const DEFAULT_BATCH_BUDGET_BYTES = 1024 * 2 ** 20;

/** The batch's generators: one ("diffusers") or one per image ("per-image"). */
export class BatchRandom {
  readonly generators: TorchGenerator[];

  constructor(readonly mode: SeedMode, readonly seed: number, readonly count: number) {
    this.generators = mode === "per-image"
      ? Array.from({ length: count }, (_, i) => new TorchGenerator(seed + i))
      : [new TorchGenerator(seed)];
  }

  /** Each image's seed: `seed + i` per image, or the one seed repeated. */
  get seeds(): number[] {
    return Array.from(
      { length: this.count },
      (_, i) => this.mode === "per-image" ? this.seed + i : this.seed,
    );
  }

  /** One draw for the whole batch: `[count, ...perImage[1:]]` (perImage is `[1, C, h, w]`). */
  randn(perImage: readonly number[]): Float32Array {
    if (this.mode === "diffusers") return this.generators[0].randn([this.count, ...perImage.slice(1)]);
    return concat(this.generators.map((g) => g.randn(perImage)));
  }
}

/** Per-image starts (each from its own generator) as one batch start. */
export function combineStarts(starts: LoopStart[]): LoopStart {
  if (starts.length === 1) return starts[0];
  const blends = starts.map((s) => s.blend);
  const conditions = starts.map((s) => s.condition);
  return {
    latents: concat(starts.map((s) => s.latents)),
    startIndex: starts[0].startIndex,
    condition: conditions.every((c) => c !== undefined) ? concat(conditions as Float32Array[]) : undefined,
    // Each image's own original and noise; the mask is the request's.
    blend: blends.every((b) => b !== undefined)
      ? {
        original: concat(blends.map((b) => b!.original)),
        noise: concat(blends.map((b) => b!.noise)),
        mask: blends[0]!.mask,
      }
      : undefined,
  };
}

/** `x` repeated `count` times (an image's latents or condition for every image of the batch). */
export function repeat(x: Float32Array, count: number): Float32Array {
  if (count === 1) return x;
  const out = new Float32Array(x.length * count);
  for (let i = 0; i < count; i++) out.set(x, i * x.length);
  return out;
}

export function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/**
 * The largest number of images per UNet call (1..count) whose plan fits `budgetBytes`, given the plan bytes
 * of `rows` rows: at least 1.
 */
export function imagesPerCall(
  count: number,
  rowsPerImage: number,
  budgetBytes: number,
  planBytes: (rows: number) => number,
): number {
  const perImage = planBytes(rowsPerImage);
  let k = Math.max(1, Math.min(count, Math.floor(budgetBytes / Math.max(1, perImage))));
  while (k > 1 && planBytes(rowsPerImage * k) > budgetBytes) k--;
  return k;
}

/** `count` images in calls of at most `per`, as evenly as possible: 5 by 4 → [3, 2]. */
export function splitBatch(count: number, per: number): number[] {
  const calls = Math.ceil(count / Math.max(1, per));
  const base = Math.floor(count / calls);
  return Array.from({ length: calls }, (_, i) => base + (i < count % calls ? 1 : 0));
}
