// Prompt weighting on the tiny model (tests/fixtures/tiny_sd, f32): "none" is today's encoding (and
// diffusers'), "a1111" without brackets changes nothing, and a weighted prompt's embeddings are the
// unweighted hidden states scaled per token and restored to each chunk's mean, recomputed here on the CPU.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { testGpu } from "./util.ts";
import { readTensor } from "../src/gpu/tensor.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { parsePromptWeights, weightedChunks } from "../src/text/prompt_weights.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { decodeImage } from "../src/image/convert.ts";
import type { GenerateRequest } from "../src/pipeline/types.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;
let loaded: Promise<StableDiffusionPipeline> | undefined;
const pipeline = () =>
  loaded ??= testGpu().then((gpu) => loadPipeline(gpu, `${fixtures}tiny_sd`, { precision: "f32" }));

/** CLIP on rows of ids, one batch, as encodeText ran it before weighting existed. */
async function clipRows(p: StableDiffusionPipeline, rows: number[][]): Promise<Float32Array> {
  const { gpu, textEncoder } = p.parts;
  const plan = textEncoder.plan(rows.length, rows[0].length);
  gpu.device.queue.writeBuffer(plan.ids.buffer, 0, Uint32Array.from(rows.flat()));
  plan.plan.run("text encoder");
  return await readTensor(gpu, plan.lastHidden);
}

/** The rows encodeText builds from two sides' chunks: uncond first, the shorter side padded. */
function batchRows(uncond: number[][], cond: number[][], empty: number[]): number[][] {
  const n = Math.max(uncond.length, cond.length);
  const pad = (rows: number[][]) => [...rows, ...new Array(n - rows.length).fill(empty)];
  return uncond.length ? [...pad(uncond), ...pad(cond)] : pad(cond);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assertEquals(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const LONG = "a highly detailed photograph of an astronaut riding a white horse across the surface of the " +
  "moon: the earth rising over the horizon, dramatic rim lighting, volumetric dust; shot on a medium " +
  "format film camera with an 80mm lens, shallow depth of field, sharp focus on the visor reflection, " +
  "award winning composition, intricate spacesuit stitching, muted colour palette, cinematic grain";

Deno.test("prompt weighting none: the default, bit-identical to plain chunks through CLIP, and to diffusers", async () => {
  const p = await pipeline();
  const tok = p.parts.tokenizer;
  const empty = tok.chunks("", "truncate").ids[0];
  const prompt = `(a red fox:1.5) [in the snow] BREAK ${LONG}`;
  const negative = "((blurry)), low quality";
  for (const mode of ["chunk", "truncate"] as const) {
    const rows = batchRows(tok.chunks(negative, mode).ids, tok.chunks(prompt, mode).ids, empty);
    const want = await clipRows(p, rows);
    const byDefault = await p.encodeText(prompt, negative, true, mode);
    const none = await p.encodeText(prompt, negative, true, mode, "none");
    assertEquals(byDefault.tokens, rows.length / 2 * 77);
    assertEquals(maxAbsDiff(byDefault.context, want), 0, `${mode}: default`);
    assertEquals(maxAbsDiff(none.context, want), 0, `${mode}: none`);
  }
  // diffusers' embeddings for an e2e case (the pipeline tests' tolerance at f32).
  using f = await SafetensorsFile.open(`${fixtures}e2e/case_2.safetensors`);
  const want = Float32Array.from([
    ...await f.readF32("negative_prompt_embeds"),
    ...await f.readF32("prompt_embeds"),
  ]);
  const got = await p.encodeText(
    "a photograph of an astronaut riding a horse",
    "blurry, low quality",
    true,
    "truncate",
    "none",
  );
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert(maxAbsDiff(got.context, want) <= 1e-4 * scale, "none matches diffusers");
});

Deno.test("prompt weighting a1111 without brackets gives exactly the embeddings of none", async () => {
  const p = await pipeline();
  for (const [prompt, negative] of [[LONG, "blurry, low quality: 2"], ["a cat", ""], ["", "x"]]) {
    for (const mode of ["chunk", "truncate"] as const) {
      for (const cfg of [true, false]) {
        const none = await p.encodeText(prompt, negative, cfg, mode, "none");
        const a1111 = await p.encodeText(prompt, negative, cfg, mode, "a1111");
        assertEquals(a1111.tokens, none.tokens);
        assertEquals(maxAbsDiff(a1111.context, none.context), 0, `${mode} cfg=${cfg}: ${prompt}`);
      }
    }
  }
});

Deno.test("prompt weighting a1111: each token scaled by its weight, each chunk's mean restored", async () => {
  const p = await pipeline();
  const tok = p.parts.tokenizer;
  const prompt = "a photo of a (red:1.5) [fox] in the snow BREAK ((sunset)), (birds:0.5)";
  const negative = "(blurry:1.3), low quality";
  const cond = weightedChunks(tok, parsePromptWeights(prompt));
  const uncond = weightedChunks(tok, parsePromptWeights(negative));
  assertEquals([cond.ids.length, uncond.ids.length], [2, 1]);
  const ones = new Array(77).fill(1);
  const weights = [...uncond.weights, ones, ...cond.weights];
  const unweighted = await clipRows(p, batchRows(uncond.ids, cond.ids, tok.chunks("", "truncate").ids[0]));

  // The CPU reference: per row, h·w, then × mean(h) / mean(h·w).
  const C = unweighted.length / (4 * 77);
  const want = new Float32Array(unweighted.length);
  const ratios: number[] = [];
  weights.forEach((w, r) => {
    let before = 0;
    let after = 0;
    for (let t = 0; t < 77; t++) {
      for (let c = 0; c < C; c++) {
        const h = unweighted[(r * 77 + t) * C + c];
        before += h;
        after += h * w[t];
      }
    }
    ratios.push(before / after);
    for (let t = 0; t < 77; t++) {
      for (let c = 0; c < C; c++) {
        const k = (r * 77 + t) * C + c;
        want[k] = unweighted[k] * w[t] * (before / after);
      }
    }
  });
  const got = await p.encodeText(prompt, negative, true, "chunk", "a1111");
  assertEquals(got.tokens, 2 * 77);
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const err = maxAbsDiff(got.context, want);
  console.log(`  weighted vs CPU reference: max |Δ| ${err.toExponential(2)} (scale ${scale.toFixed(3)})`);
  assert(err <= 1e-6 * scale, `max |Δ| ${err} > 1e-6 × ${scale}`);

  // What the reference predicts, checked on the result itself: the weighting is visible (far above the
  // tolerance), the padding row is untouched, each row keeps its mean, and "red" moved 1.5× as much as "a".
  assert(maxAbsDiff(got.context, unweighted) > 1e-3 * scale, "weights change the embeddings");
  assertEquals(
    maxAbsDiff(got.context.subarray(77 * C, 2 * 77 * C), unweighted.subarray(77 * C, 2 * 77 * C)),
    0,
  );
  const row = (a: Float32Array, r: number) => a.subarray(r * 77 * C, (r + 1) * 77 * C);
  for (let r = 0; r < 4; r++) {
    const [s0, s1] = [row(unweighted, r), row(got.context, r)].map((x) => x.reduce((s, v) => s + v, 0));
    const size = row(unweighted, r).reduce((s, v) => s + Math.abs(v), 0);
    assert(Math.abs(s1 - s0) <= 1e-6 * size, `row ${r}: sum ${s1}, was ${s0}`);
  }
  const redAt = 1 + tok.contentIds("a photo of a").length; // the "red" token of the first cond row
  assertEquals(cond.weights[0][redAt], 1.5);
  const factor = (t: number, c: number) =>
    got.context[((2 * 77) + t) * C + c] / unweighted[((2 * 77) + t) * C + c];
  for (let c = 0; c < C; c++) {
    assert(Math.abs(factor(1, c) - ratios[2]) <= 1e-5 * ratios[2], `"a" scaled by the mean ratio (${c})`);
    assert(
      Math.abs(factor(redAt, c) - 1.5 * ratios[2]) <= 1e-5 * ratios[2],
      `"red" scaled by 1.5 × ratio (${c})`,
    );
  }
  assert(Math.abs(ratios[2] - 1) > 1e-4, "the mean restore does something");
});

Deno.test("generate: promptWeighting reaches the encoder (a1111 ≠ none for brackets, equal without)", async () => {
  const p = await pipeline();
  const run = async (prompt: string, promptWeighting: "none" | "a1111") => {
    const req: GenerateRequest = {
      prompt,
      negativePrompt: "blurry",
      width: 64,
      height: 64,
      steps: 2,
      guidanceScale: 7.5,
      sampler: "ddim",
      seed: 5,
      promptWeighting,
    };
    for await (const ev of p.generate(req)) if (ev.type === "done") return decodeImage(ev.image).data;
    throw new Error("no image");
  };
  const plain = "a red fox in the snow";
  assertEquals(await run(plain, "a1111"), await run(plain, "none"));
  const weighted = "a (red fox:1.8) in the snow";
  assert(
    JSON.stringify(await run(weighted, "a1111")) !== JSON.stringify(await run(weighted, "none")),
    "weighting changes the image",
  );
});
