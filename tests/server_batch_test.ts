// Batches and model defaults over HTTP, on the fake engine: `num_images` answers with `images` (JSON and the
// SSE `done` alike, no `image`), OpenAI's `n` is one batched job with per-image seeds, `--max-images` bounds
// both; fields a request leaves out get the model's defaults when its job starts, the server's explicit
// defaults win, and /v1/models and /healthz show them.

import OpenAI from "openai";
import { decode as decodePng } from "fast-png";
import { collectSse, fakeEngineFactory, postJson, withServer } from "./server_harness.ts";
import type { ModelDefaults } from "../src/pipeline/types.ts";
import { assert, assertEquals } from "./util.ts";

const TURBO: ModelDefaults = {
  width: 64,
  height: 48,
  steps: 2,
  guidanceScale: 0,
  sampler: "euler",
  source: "test double",
};

const seedOf = (b64: string) =>
  /Seed: (\d+)/.exec(decodePng(Uint8Array.fromBase64(b64)).text.parameters)?.[1];

Deno.test("native num_images: one job, `images` in batch order (JSON and SSE done), no `image`", async () => {
  await withServer({ engine: fakeEngineFactory({ stepDelayMs: 1 }) }, async (s) => {
    const body = { prompt: "boats", width: 32, height: 32, steps: 2, seed: 7, num_images: 3 };
    const res = await postJson(`${s.url}/v1/generate`, { ...body, seed_mode: "per-image" });
    assertEquals(res.status, 200, "status");
    const json = await res.json();
    assertEquals(s.fake!.runs.length, 1, "one engine run");
    assertEquals(json.image, undefined, "no image field for a batch");
    assertEquals(json.images.length, 3, "images");
    assertEquals(json.seeds, [7, 8, 9], "seeds");
    assertEquals(json.images.map(seedOf), ["7", "8", "9"], "each PNG's own seed");
    // Image i of a per-image batch is the single image of seed + i.
    const single = await (await postJson(`${s.url}/v1/generate`, { ...body, num_images: 1, seed: 8 })).json();
    assertEquals(single.images, undefined, "one image: no images array");
    assertEquals(single.image, json.images[1], "image 1 = seed 8's image");

    const events = await collectSse(
      await postJson(`${s.url}/v1/generate`, body, { accept: "text/event-stream" }),
    );
    const started = events.find((e) => e.event === "started")!.json;
    assertEquals(started.num_images, 3, "started says how many");
    const done = events.at(-1)!;
    assertEquals(done.event, "done", "last event");
    assertEquals([done.json.image, done.json.images.length], [undefined, 3], "SSE done carries images");
    assertEquals(done.json.seeds, [7, 7, 7], "diffusers mode: one seed");
    assertEquals(s.fake!.runs.at(-1)!.request.seedMode, undefined, "diffusers mode is the engine's default");

    // The job API's result is the same payload.
    const job = await (await postJson(`${s.url}/v1/jobs`, body)).json();
    let result;
    while (!(result = (await (await fetch(`${s.url}/v1/jobs/${job.id}`)).json()).result)) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals([result.image, result.images.length], [undefined, 3], "job result");
  });
});

Deno.test("num_images and n: bounded by --max-images; seed_mode checked", async () => {
  await withServer({ engine: fakeEngineFactory(), options: { maxImages: 2 } }, async (s) => {
    for (
      const [path, body, param] of [
        ["/v1/generate", { prompt: "x", num_images: 3 }, "num_images"],
        ["/v1/generate", { prompt: "x", num_images: 0 }, "num_images"],
        ["/v1/generate", { prompt: "x", seed_mode: "a1111" }, "seed_mode"],
        ["/v1/images/generations", { prompt: "x", n: 3 }, "n"],
      ] as const
    ) {
      const res = await postJson(`${s.url}${path}`, body);
      const err = await res.json();
      assertEquals([res.status, err.error.param], [400, param], `${JSON.stringify(body)}`);
    }
    assertEquals(s.fake!.runs.length, 0, "nothing ran");
  });
});

Deno.test("OpenAI n: one batched job, image k of seed + k; streamed: one completed event per image", async () => {
  await withServer({ engine: fakeEngineFactory({ stepDelayMs: 1 }) }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const result = await client.images.generate({
      prompt: "a red fox",
      n: 2,
      size: "32x32",
      steps: 2,
      seed: 11,
    } as OpenAI.ImageGenerateParamsNonStreaming);
    assertEquals(s.fake!.runs.length, 1, "one job");
    const r = s.fake!.runs[0].request;
    assertEquals([r.numImages, r.seedMode, r.seed], [2, "per-image", 11], "batched request");
    assertEquals(result.data!.map((d) => seedOf(d.b64_json!)), ["11", "12"], "seeds");

    const stream = await client.images.generate({
      prompt: "a red fox",
      n: 2,
      size: "32x32",
      steps: 4,
      stream: true,
      partial_images: 1,
    } as OpenAI.ImageGenerateParamsStreaming);
    const types: string[] = [];
    for await (const ev of stream) types.push(ev.type);
    assertEquals(
      types,
      ["image_generation.partial_image", "image_generation.completed", "image_generation.completed"],
      "events",
    );
    assertEquals(s.fake!.runs.length, 2, "one more job");
  });
});

Deno.test("model defaults: missing fields get the model's when the job starts; explicit server defaults win", async () => {
  await withServer({ engine: fakeEngineFactory({ stepDelayMs: 1, defaults: TURBO }) }, async (s) => {
    const json = await (await postJson(`${s.url}/v1/generate`, { prompt: "a fox" })).json();
    assertEquals([json.width, json.height], [64, 48], "size");
    const r = s.fake!.runs[0].request;
    assertEquals([r.steps, r.guidanceScale, r.width, r.height], [2, 0, 64, 48], "request");
    // Given fields win; a streamed request's previews spread over the model's steps.
    await collectSse(
      await postJson(`${s.url}/v1/generate`, { prompt: "a fox", steps: 8, guidance_scale: 3 }, {
        accept: "text/event-stream",
      }),
    );
    const r2 = s.fake!.runs[1].request;
    assertEquals([r2.steps, r2.guidanceScale, r2.previewEvery], [8, 3, 2], "given fields");
    // OpenAI: no size → the model's, echoed back; quality scales the model's steps.
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const res = await client.images.generate({ prompt: "x", quality: "high" });
    assertEquals(res.size, "64x48", "OpenAI size");
    assertEquals(s.fake!.runs[2].request.steps, 3, "high quality: 1.5 × 2 steps");

    const models = await (await fetch(`${s.url}/v1/models`)).json();
    assertEquals(
      models.data[0].defaults,
      { width: 64, height: 48, steps: 2, guidance_scale: 0, sampler: "euler", source: "test double" },
      "/v1/models",
    );
    const health = await (await fetch(`${s.url}/healthz`)).json();
    assertEquals(health.defaults.steps, 2, "/healthz defaults");
  });
  await withServer({
    engine: fakeEngineFactory({ stepDelayMs: 1, defaults: TURBO }),
    options: { defaultSteps: 5, defaultSize: 40 },
  }, async (s) => {
    await (await postJson(`${s.url}/v1/generate`, { prompt: "a fox" })).json();
    const r = s.fake!.runs[0].request;
    assertEquals([r.steps, r.guidanceScale, r.width, r.height], [5, 0, 40, 40], "server overrides");
    const models = await (await fetch(`${s.url}/v1/models`)).json();
    assertEquals(models.data[0].defaults.source, "test double, --default-size, --default-steps", "source");
  });
  // An engine without defaults: the server's fallback (512², 20 steps, 7.5).
  await withServer({ engine: fakeEngineFactory({ stepDelayMs: 0 }) }, async (s) => {
    const models = await (await fetch(`${s.url}/v1/models`)).json();
    const d = models.data[0].defaults;
    assertEquals([d.width, d.height, d.steps, d.guidance_scale], [512, 512, 20, 7.5], "fallback");
    assert(s.fake!.runs.length === 0, "nothing ran");
  });
});
