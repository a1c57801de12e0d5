// End-to-end tests of the HTTP API over real loopback HTTP: the native endpoint (SSE and JSON), the OpenAI
// Images API through the official `openai` client (plain and streamed), validation (each 400), the queue
// (429, cancellation on disconnect), auth, health, models and metrics.
//
// The engine is injected: `ENGINE` below is the fake test double; pass another TestEngineFactory (e.g. the
// tiny real model) to run the same assertions on a real engine.

import OpenAI from "openai";
import { decode as decodePng } from "fast-png";
import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { nativeSchema } from "../src/server/native_schema.ts";
import { DEFAULT_LIMITS } from "../src/server/schema_fields.ts";
import {
  collectSse,
  fakeEngineFactory,
  postJson,
  readSse,
  type TestEngineFactory,
  waitFor,
  withServer,
} from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE: TestEngineFactory = fakeEngineFactory({ stepDelayMs: 2 });
const SLOW_ENGINE: TestEngineFactory = fakeEngineFactory({ stepDelayMs: 40 });

const SSE = { accept: "text/event-stream" };

Deno.test("healthz: starting/loading with progress while the model loads, then ready with adapter and f16", async () => {
  await withServer({ engine: fakeEngineFactory({ loadDelayMs: 300 }), waitReady: false }, async (s) => {
    const seen: Record<string, unknown>[] = [];
    while (true) {
      const res = await fetch(`${s.url}/healthz`);
      const body = await res.json();
      seen.push(body);
      if (body.status === "ready") {
        assertEquals(res.status, 200, "ready status code");
        break;
      }
      assertEquals(res.status, 503, "not-ready status code");
      await new Promise((r) => setTimeout(r, 10));
    }
    const loading = seen.find((h) => h.status === "loading");
    assert(loading, `never saw loading: ${JSON.stringify(seen.slice(0, 3))}`);
    assert(
      typeof loading.progress === "number" && loading.progress >= 0 && loading.progress <= 1,
      "progress",
    );
    const ready = seen.at(-1)!;
    assertEquals(typeof ready.adapter, "string", "adapter");
    assertEquals(typeof ready.f16, "boolean", "f16");
    assertEquals(ready.model, "fake-sd-test-double", "model");
  });
});

Deno.test("native SSE: ordered events with ids, previews every K steps, final PNG of the requested size", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const res = await postJson(`${s.url}/v1/generate`, {
      prompt: "a lighthouse",
      negative_prompt: "blurry",
      width: 72,
      height: 40,
      steps: 8,
      preview_every: 2,
      seed: 1234,
      sampler: "euler_a",
    }, SSE);
    assertEquals(res.status, 200, "status");
    assert(res.headers.get("content-type")?.startsWith("text/event-stream"), "content type");
    const events = await collectSse(res);
    const names = events.map((e) => e.event);
    assertEquals(names[0], "queued", "first event");
    assertEquals(names[1], "started", "second event");
    assertEquals(names.at(-1), "done", "last event");
    assertEquals(events.map((e) => Number(e.id)), events.map((_, i) => i + 1), "ids 1..n");
    const progress = events.filter((e) => e.event === "progress").map((e) => e.json);
    assertEquals(progress.map((p) => p.step), [1, 2, 3, 4, 5, 6, 7, 8], "progress steps");
    assert(progress.every((p) => p.steps === 8 && typeof p.eta_ms === "number" && p.eta_ms >= 0), "eta_ms");
    const previews = events.filter((e) => e.event === "preview").map((e) => e.json);
    assertEquals(previews.map((p) => p.step), [2, 4, 6], "preview steps");
    for (const p of previews) {
      const img = decodeImage(Uint8Array.fromBase64(p.data));
      assertEquals([img.width, img.height, img.mime], [72, 40, p.mime], "preview image");
    }
    const done = events.at(-1)!.json;
    assertEquals(done.seed, 1234, "seed");
    assertEquals(done.mime, "image/png", "mime");
    const png = decodePng(Uint8Array.fromBase64(done.image));
    assertEquals([png.width, png.height], [72, 40], "final size");
    assert(png.text.parameters?.includes("Seed: 1234"), "PNG parameters chunk");
    assert(done.parameters.includes("Negative prompt: blurry"), "parameters text");
    for (const k of ["total_ms", "text_encoder_ms", "denoise_ms", "vae_ms", "steps_per_second"]) {
      assertEquals(typeof done.timings[k], "number", `timings.${k}`);
    }
  });
});

Deno.test("native GET for EventSource; a reconnect carrying Last-Event-ID starts no second job", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const res = await fetch(`${s.url}/v1/generate?prompt=hi&width=32&height=24&steps=4&preview_every=1`);
    const events = await collectSse(res);
    assertEquals(events.filter((e) => e.event === "preview").length, 3, "previews at steps 1..3");
    const done = events.at(-1)!;
    assertEquals(done.event, "done", "done");
    const img = decodeImage(Uint8Array.fromBase64(done.json.image));
    assertEquals([img.width, img.height], [32, 24], "size");
    const again = await fetch(`${s.url}/v1/generate?prompt=hi`, { headers: { "last-event-id": done.id! } });
    assertEquals(again.status, 204, "reconnect");
    await again.body?.cancel();
    assertEquals(s.fake!.runs.length, 1, "engine runs");
  });
});

Deno.test("native POST without Accept: text/event-stream answers JSON once done (JPEG output)", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const res = await postJson(`${s.url}/v1/generate`, {
      prompt: "x",
      width: 48,
      height: 64,
      steps: 3,
      output_format: "jpeg",
      seed: 7,
    });
    assertEquals(res.status, 200, "status");
    const body = await res.json();
    assertEquals(body.mime, "image/jpeg", "mime");
    assertEquals(body.seed, 7, "seed");
    const img = decodeImage(Uint8Array.fromBase64(body.image));
    assertEquals([img.width, img.height, img.mime], [48, 64, "image/jpeg"], "image");
  });
});

Deno.test("img2img: a base64 init image with strength runs strength × steps", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const init = encodeImage(new Uint8Array(16 * 16 * 3).fill(200), 16, 16, "png").bytes;
    const res = await postJson(`${s.url}/v1/generate`, {
      prompt: "x",
      width: 32,
      height: 32,
      steps: 10,
      image: `data:image/png;base64,${init.toBase64()}`,
      strength: 0.5,
    }, SSE);
    const events = await collectSse(res);
    assertEquals(events.find((e) => e.event === "started")?.json.steps, 5, "img2img steps");
    assertEquals(events.at(-1)?.event, "done", "done");
  });
});

Deno.test("OpenAI client: plain images.generate (n=2, size, b64_json) decodes to the requested size", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const result = await client.images.generate({
      model: "anything",
      prompt: "a red fox",
      n: 2,
      size: "64x48",
      response_format: "b64_json",
      // Extensions (not in OpenAI's types).
      steps: 3,
      seed: 99,
    } as OpenAI.ImageGenerateParamsNonStreaming);
    assertEquals(result.data?.length, 2, "images");
    assertEquals(result.size, "64x48", "size");
    assertEquals(result.output_format, "png", "output_format");
    for (const [k, image] of result.data!.entries()) {
      const png = decodePng(Uint8Array.fromBase64(image.b64_json!));
      assertEquals([png.width, png.height], [64, 48], "decoded size");
      assert(png.text.parameters?.includes(`Seed: ${99 + k}`), `image ${k} seed`);
    }
    assert(typeof result.usage?.total_tokens === "number", "usage");
  });
});

Deno.test("OpenAI client: stream: true yields partial_image events then image_generation.completed", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.images.generate({
      prompt: "a red fox",
      size: "40x32",
      stream: true,
      partial_images: 2,
      output_format: "png",
      steps: 9,
    } as OpenAI.ImageGenerateParamsStreaming);
    const events: OpenAI.ImageGenStreamEvent[] = [];
    for await (const ev of stream) events.push(ev);
    assertEquals(
      events.map((e) => e.type),
      ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"],
      "event types",
    );
    const partials = events.filter((e) => e.type === "image_generation.partial_image");
    assertEquals(partials.map((p) => p.partial_image_index), [0, 1], "partial_image_index");
    for (const ev of events) {
      assertEquals([ev.size, ev.output_format, ev.background], ["40x32", "png", "opaque"], "common fields");
      assert(typeof ev.created_at === "number" && typeof ev.quality === "string", "created_at/quality");
      const png = decodePng(Uint8Array.fromBase64(ev.b64_json));
      assertEquals([png.width, png.height], [40, 32], `${ev.type} size`);
    }
    const completed = events.at(-1) as OpenAI.ImageGenCompletedEvent;
    assert(typeof completed.usage.input_tokens === "number", "usage");

    // Without partial_images: just the completed event.
    const plain = await client.images.generate(
      { prompt: "y", size: "16x16", stream: true, steps: 2 } as never,
    );
    const types: string[] = [];
    for await (const ev of plain as unknown as AsyncIterable<OpenAI.ImageGenStreamEvent>) types.push(ev.type);
    assertEquals(types, ["image_generation.completed"], "no partials");
  });
});

Deno.test("OpenAI client: unsupported options raise BadRequestError naming the parameter", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ response_format: "url" }, "response_format", /not supported.*b64_json/],
      [{ output_format: "webp" }, "output_format", /png or jpeg/],
      [{ size: "100x100" }, "size", /multiple of 8/],
      [{ size: "4096x4096" }, "size", /outside/],
      [{ n: 50 }, "n", /between 1 and 4/],
      [{ partial_images: 5, stream: true }, "partial_images", /between 0 and 3/],
      [{ sampler: "magic" }, "sampler", /unknown sampler/],
    ];
    for (const [extra, param, message] of cases) {
      try {
        await client.images.generate({ prompt: "p", ...extra } as never);
        throw new Error(`${param}: no error`);
      } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, `${param}: got ${e}`);
        assertEquals(e.param, param, "param");
        assert(message.test(e.message), `${param}: message ${e.message}`);
      }
    }
  });
});

/** [request init, expected status, expected param, message pattern]. */
type BadCase = [string, RequestInit & { path?: string }, number, string, RegExp];

const long = "x".repeat(10_001);
const BAD_REQUESTS: BadCase[] = [
  ["missing prompt", { body: JSON.stringify({ steps: 4 }) }, 400, "prompt", /required/],
  ["empty prompt", { body: JSON.stringify({ prompt: "   " }) }, 400, "prompt", /empty/],
  ["prompt not a string", { body: JSON.stringify({ prompt: 5 }) }, 400, "prompt", /string/],
  ["prompt too long", { body: JSON.stringify({ prompt: long }) }, 400, "prompt", /longer than/],
  [
    "unknown sampler",
    { body: JSON.stringify({ prompt: "p", sampler: "magic" }) },
    400,
    "sampler",
    /unknown sampler/,
  ],
  [
    "width not multiple of 8",
    { body: JSON.stringify({ prompt: "p", width: 100 }) },
    400,
    "width",
    /multiple of 8/,
  ],
  ["height over limit", { body: JSON.stringify({ prompt: "p", height: 4096 }) }, 400, "height", /between/],
  ["width negative", { body: JSON.stringify({ prompt: "p", width: -64 }) }, 400, "width", /between/],
  ["width a string", { body: JSON.stringify({ prompt: "p", width: "64" }) }, 400, "width", /number/],
  ["steps zero", { body: JSON.stringify({ prompt: "p", steps: 0 }) }, 400, "steps", /between 1 and 150/],
  [
    "steps too many",
    { body: JSON.stringify({ prompt: "p", steps: 151 }) },
    400,
    "steps",
    /between 1 and 150/,
  ],
  ["steps fractional", { body: JSON.stringify({ prompt: "p", steps: 2.5 }) }, 400, "steps", /integer/],
  ["steps huge", { body: '{"prompt":"p","steps":1e400}' }, 400, "steps", /number/],
  [
    "guidance out of range",
    { body: JSON.stringify({ prompt: "p", guidance_scale: 99 }) },
    400,
    "guidance_scale",
    /0/,
  ],
  ["seed negative", { body: JSON.stringify({ prompt: "p", seed: -5 }) }, 400, "seed", /between/],
  [
    "preview mode",
    { body: JSON.stringify({ prompt: "p", preview: "fancy" }) },
    400,
    "preview",
    /cheap, vae, taesd/,
  ],
  [
    "preview taesd without TAESD weights",
    { body: JSON.stringify({ prompt: "p", preview: "taesd" }) },
    400,
    "preview",
    /TAESD weights.*--taesd DIR/,
  ],
  [
    "query: preview taesd without TAESD weights (SSE answers 400 before streaming)",
    { method: "GET", path: "/v1/generate?prompt=p&preview=taesd" },
    400,
    "preview",
    /TAESD weights/,
  ],
  [
    "output format",
    { body: JSON.stringify({ prompt: "p", output_format: "gif" }) },
    400,
    "output_format",
    /png/,
  ],
  ["image not base64", { body: JSON.stringify({ prompt: "p", image: "%%%" }) }, 400, "image", /base64/],
  [
    "image not an image",
    { body: JSON.stringify({ prompt: "p", image: btoa("hello") }) },
    400,
    "image",
    /PNG/,
  ],
  [
    "strength without image",
    { body: JSON.stringify({ prompt: "p", strength: 0.5 }) },
    400,
    "strength",
    /init/,
  ],
  [
    "unknown field",
    { body: JSON.stringify({ prompt: "p", stepz: 4 }) },
    400,
    "stepz",
    /unknown field; the fields are prompt, negative_prompt/,
  ],
  ["JSON array", { body: "[1,2]" }, 400, "body", /object/],
  ["JSON null", { body: "null" }, 400, "body", /object/],
  ["not JSON", { body: "{prompt: 'p'" }, 400, "body", /not valid JSON/],
  ["empty body", { body: "" }, 400, "body", /not valid JSON/],
  ["invalid UTF-8", { body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }, 400, "body", /UTF-8|JSON/],
  ["NUL in prompt", { body: JSON.stringify({ prompt: "a\u0000b" }) }, 400, "prompt", /NUL/],
  [
    "wrong content type",
    { body: "prompt=p", headers: { "content-type": "application/x-www-form-urlencoded" } },
    400,
    "body",
    /Content-Type/,
  ],
  [
    "query: steps not a number",
    { method: "GET", path: "/v1/generate?prompt=p&steps=abc" },
    400,
    "steps",
    /number/,
  ],
  ["query: missing prompt", { method: "GET", path: "/v1/generate?steps=4" }, 400, "prompt", /required/],
  [
    "query: unknown sampler",
    { method: "GET", path: "/v1/generate?prompt=p&sampler=x" },
    400,
    "sampler",
    /unknown/,
  ],
  [
    "query: width not multiple of 8",
    { method: "GET", path: "/v1/generate?prompt=p&width=9" },
    400,
    "width",
    /8/,
  ],
  ["openai: missing prompt", { path: "/v1/images/generations", body: "{}" }, 400, "prompt", /required/],
  [
    "openai: bad size",
    { path: "/v1/images/generations", body: '{"prompt":"p","size":"big"}' },
    400,
    "size",
    /WIDTHxHEIGHT/,
  ],
  [
    "openai: url",
    { path: "/v1/images/generations", body: '{"prompt":"p","response_format":"url"}' },
    400,
    "response_format",
    /b64_json/,
  ],
  [
    "openai: n wrong type",
    { path: "/v1/images/generations", body: '{"prompt":"p","n":"2"}' },
    400,
    "n",
    /number/,
  ],
  [
    "unknown prompt weighting",
    { body: JSON.stringify({ prompt: "p", prompt_weighting: "sdxl" }) },
    400,
    "prompt_weighting",
    /none or a1111/,
  ],
];

Deno.test("every bad field answers 400 JSON naming it", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    for (const [name, init, status, param, message] of BAD_REQUESTS) {
      const { path = "/v1/generate", ...req } = init;
      const res = await fetch(`${s.url}${path}`, {
        method: req.method ?? "POST",
        ...req,
        headers: { "content-type": "application/json", ...(req.headers as Record<string, string>) },
      });
      const body = await res.json();
      assertEquals(res.status, status, `${name}: status (${JSON.stringify(body)})`);
      assertEquals(body.error?.param, param, `${name}: param`);
      assert(message.test(body.error.message), `${name}: message ${JSON.stringify(body.error.message)}`);
      assert(body.error.message.startsWith(`${param}:`), `${name}: message names the field`);
    }
    assertEquals(s.fake!.runs.length, 0, "no bad request reached the engine");
  });
});

Deno.test("default preview: cheap without TAESD, taesd with it (native and OpenAI partial images)", async () => {
  for (const taesd of [false, true]) {
    await withServer({ engine: ENGINE, options: { taesd } }, async (s) => {
      const native = await postJson(`${s.url}/v1/generate`, { prompt: "p", steps: 2, preview_every: 1 }, SSE);
      await collectSse(native);
      const explicit = await postJson(`${s.url}/v1/generate`, { prompt: "p", steps: 2, preview: "vae" });
      await explicit.json();
      const openai = await postJson(`${s.url}/v1/images/generations`, {
        prompt: "p",
        steps: 2,
        stream: true,
        partial_images: 1,
      });
      await collectSse(openai);
      const want = taesd ? "taesd" : "cheap";
      assertEquals(s.fake!.runs.map((r) => r.request.preview), [want, "vae", want], `taesd ${taesd}`);
    });
  }
});

Deno.test("a body over the size limit answers 400 naming the body", async () => {
  await withServer({ engine: ENGINE, options: { maxBodyBytes: 10_000 } }, async (s) => {
    const big = JSON.stringify({ prompt: "p", image: "A".repeat(20_000) });
    const res = await postJson(`${s.url}/v1/generate`, big);
    const body = await res.json();
    assertEquals(
      [res.status, body.error.param, body.error.code],
      [400, "body", "payload_too_large"],
      "declared length",
    );
    // Chunked (no Content-Length): the limit applies while reading.
    const chunked = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const res2 = await fetch(`${s.url}/v1/images/generations`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked,
    });
    const body2 = await res2.json();
    assertEquals(
      [res2.status, body2.error.param, body2.error.code],
      [400, "body", "payload_too_large"],
      "streamed body",
    );
  });
});

Deno.test("a full queue answers 429 with Retry-After; accepted jobs all complete", async () => {
  await withServer({ engine: SLOW_ENGINE, options: { maxQueued: 2 } }, async (s) => {
    const body = { prompt: "p", width: 16, height: 16, steps: 4 };
    // One runs, two wait; the fourth is refused.
    const accepted = [0, 1, 2].map(() => postJson(`${s.url}/v1/generate`, body, SSE));
    const opened = await Promise.all(accepted);
    await waitFor(() => s.sd.queue.waiting === 2, 5_000, "two waiting");
    const refused = await postJson(`${s.url}/v1/generate`, body, SSE);
    const err = await refused.json();
    assertEquals(refused.status, 429, "status");
    assertEquals(err.error.code, "queue_full", "code");
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
    const streams = await Promise.all(opened.map((r) => collectSse(r)));
    const positions = streams.map((events) => events.find((e) => e.event === "queued")?.json.position);
    assertEquals(positions, [0, 1, 2], "queue positions");
    // The waiting jobs are told when they move up (then "started" when their turn comes).
    assertEquals(
      streams[2].filter((e) => e.event === "queued").map((e) => e.json.position),
      [2, 1],
      "position updates",
    );
    assert(streams.every((events) => events.at(-1)?.event === "done"), "all done");
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    assert(metrics.includes('sd_jobs_total{outcome="rejected"} 1'), "rejected counted");
    assert(metrics.includes('sd_jobs_total{outcome="completed"} 3'), "completed counted");
  });
});

Deno.test("a client that disconnects has its job cancelled within one step, and the next job starts", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const fake = s.fake!;
    const client = new AbortController();
    const first = await fetch(`${s.url}/v1/generate`, {
      method: "POST",
      headers: { "content-type": "application/json", ...SSE },
      body: JSON.stringify({ prompt: "long", width: 16, height: 16, steps: 150 }),
      signal: client.signal,
    });
    const second = await postJson(
      `${s.url}/v1/generate`,
      { prompt: "next", width: 16, height: 16, steps: 3 },
      SSE,
    );
    let abortedAt = 0;
    try {
      for await (const ev of readSse(first.body!)) {
        if (ev.event === "progress" && JSON.parse(ev.data).step >= 3) {
          abortedAt = performance.now();
          client.abort();
        }
      }
    } catch (e) {
      assert(client.signal.aborted, `stream failed before the abort: ${e}`);
    }
    assert(abortedAt > 0, "aborted");
    await waitFor(() => fake.runs[0]?.outcome === "aborted", 5_000, "first run aborted");
    const run = fake.runs[0];
    assert(run.stepsDone < 150, "stopped early");
    const stopMs = run.endedAt! - abortedAt;
    assert(stopMs < fake.stepDelayMs + 100, `stopped ${stopMs.toFixed(0)} ms after the disconnect`);
    const events = await collectSse(second);
    assertEquals(events.at(-1)?.event, "done", "next job completed");
    assertEquals(fake.runs[1].outcome, "done", "second run");
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    assert(metrics.includes('sd_jobs_total{outcome="cancelled"} 1'), "cancelled counted");
  });
});

Deno.test("a waiting job whose client disconnects leaves the queue (SSE and JSON clients)", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const running = await postJson(
      `${s.url}/v1/generate`,
      { prompt: "a", width: 16, height: 16, steps: 10 },
      SSE,
    );
    const sseClient = new AbortController();
    const jsonClient = new AbortController();
    const waitingSse = await fetch(`${s.url}/v1/generate`, {
      method: "POST",
      headers: { "content-type": "application/json", ...SSE },
      body: JSON.stringify({ prompt: "b", width: 16, height: 16, steps: 10 }),
      signal: sseClient.signal,
    });
    const waitingJson = fetch(`${s.url}/v1/generate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "c", width: 16, height: 16, steps: 10 }),
      signal: jsonClient.signal,
    }).catch((e) => e);
    await waitFor(() => s.sd.queue.waiting === 2, 5_000, "two waiting");
    sseClient.abort();
    jsonClient.abort();
    await waitingSse.body?.cancel().catch(() => {});
    await waitingJson;
    await waitFor(() => s.sd.queue.waiting === 0, 5_000, "queue emptied");
    assertEquals((await collectSse(running)).at(-1)?.event, "done", "running job unaffected");
    assertEquals(s.fake!.runs.map((r) => r.request.prompt), ["a"], "only the first ran");
  });
});

Deno.test("DELETE /v1/jobs/:id cancels a job by the id from its first event", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const res = await postJson(
      `${s.url}/v1/generate`,
      { prompt: "a", width: 16, height: 16, steps: 100 },
      SSE,
    );
    const events: { event: string; json: Record<string, unknown> }[] = [];
    for await (const ev of readSse(res.body!)) {
      const json = JSON.parse(ev.data);
      events.push({ event: ev.event, json });
      if (ev.event === "progress" && json.step === 2) {
        const id = events[0].json.job_id as string;
        const del = await fetch(`${s.url}/v1/jobs/${id}`, { method: "DELETE" });
        assertEquals([del.status, (await del.json()).state], [200, "running"], "DELETE");
      }
    }
    const last = events.at(-1)!;
    assertEquals([last.event, last.json.code], ["error", "cancelled"], "stream ends cancelled");
    assert(s.fake!.runs[0].stepsDone < 10, "stopped early");
    // A finished job is retained (for GET /v1/jobs/:id), so cancelling it is a conflict, not a 404.
    const again = await fetch(`${s.url}/v1/jobs/${events[0].json.job_id}`, { method: "DELETE" });
    assertEquals([again.status, (await again.json()).error.code], [409, "job_finished"], "finished job");
    const unknown = await fetch(`${s.url}/v1/jobs/job-nope`, { method: "DELETE" });
    assertEquals([unknown.status, (await unknown.json()).error.param], [404, "id"], "unknown job");
  });
});

Deno.test("engine errors: RequestError answers 400, a crash ends the stream with an error, serving goes on", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const refused = await postJson(`${s.url}/v1/generate`, { prompt: "[fake:request-error]", steps: 2 });
    const err = await refused.json();
    assertEquals([refused.status, err.error.param], [400, "prompt"], "RequestError");
    const consoleError = console.error;
    console.error = () => {}; // The server logs the crash; keep the test output clean.
    try {
      const crashed = await postJson(`${s.url}/v1/generate`, { prompt: "[fake:crash]", steps: 4 }, SSE);
      const events = await collectSse(crashed);
      const last = events.at(-1)!;
      assertEquals([last.event, last.json.code], ["error", "engine_error"], "crash event");
    } finally {
      console.error = consoleError;
    }
    const ok = await postJson(`${s.url}/v1/generate`, { prompt: "fine", width: 16, height: 16, steps: 2 });
    assertEquals(ok.status, 200, "still serving");
    await ok.body?.cancel();
  });
});

Deno.test("bearer token: every API route answers 401 without it; the page and /healthz stay open", async () => {
  await withServer({ engine: ENGINE, options: { token: "s3cret" } }, async (s) => {
    const routes: [string, string, string?][] = [
      ["POST", "/v1/generate", '{"prompt":"p"}'],
      ["GET", "/v1/generate?prompt=p"],
      ["POST", "/v1/images/generations", '{"prompt":"p"}'],
      ["GET", "/v1/models"],
      ["GET", "/metrics"],
      ["GET", "/v1/nothing-here"],
      ["DELETE", "/v1/jobs/job-x"],
    ];
    for (const auth of [undefined, "Bearer wrong", "Basic s3cret", "Bearer s3cret"]) {
      for (const [method, path, body] of routes) {
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (auth) headers.authorization = auth;
        const res = await fetch(`${s.url}${path}`, { method, headers, body });
        await res.text();
        if (auth === "Bearer s3cret") {
          assert(res.status !== 401, `${method} ${path} with the token: ${res.status}`);
        } else {
          assertEquals(res.status, 401, `${method} ${path} with ${auth}`);
          assert(res.headers.get("www-authenticate")?.startsWith("Bearer"), "WWW-Authenticate");
        }
      }
    }
    const viaQuery = await fetch(
      `${s.url}/v1/generate?prompt=p&steps=1&width=16&height=16&access_token=s3cret`,
    );
    assertEquals(viaQuery.status, 200, "EventSource token in the query");
    await collectSse(viaQuery);
    for (const open of ["/", "/healthz"]) {
      const res = await fetch(`${s.url}${open}`);
      await res.text();
      assertEquals(res.status, 200, open);
    }
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    const failed = await client.images.generate({ prompt: "p" }).catch((e) => e);
    assert(failed instanceof OpenAI.AuthenticationError, `openai client: ${failed}`);
  });
});

Deno.test("without a model: /healthz is ready with model null and generation answers 503", async () => {
  await withServer({}, async (s) => {
    const health = await (await fetch(`${s.url}/healthz`)).json();
    assertEquals([health.status, health.model], ["ready", null], "health");
    const res = await postJson(`${s.url}/v1/generate`, { prompt: "p" });
    const body = await res.json();
    assertEquals([res.status, body.error.code], [503, "unavailable"], "503");
    assert(/--model/.test(body.error.message), "message says how to fix it");
  });
});

Deno.test("a model that fails to load: /healthz failed with the reason, generation 503", async () => {
  const failing: TestEngineFactory = () => ({
    engine: () => Promise.reject(new Error("unet/config.json: missing")),
  });
  await withServer({ engine: failing, waitReady: false }, async (s) => {
    await waitFor(() => s.sd.engineHost.status().status === "failed", 2_000, "failed");
    const res = await fetch(`${s.url}/healthz`);
    const health = await res.json();
    assertEquals([res.status, health.status], [503, "failed"], "health");
    assert(health.reason.includes("unet/config.json"), "reason");
    const gen = await postJson(`${s.url}/v1/generate`, { prompt: "p" });
    await gen.body?.cancel();
    assertEquals(gen.status, 503, "generation");
  });
});

Deno.test("/v1/models, /metrics, the page, 404 and 405 answers", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const models = await (await fetch(`${s.url}/v1/models`)).json();
    assertEquals(models.object, "list", "models object");
    assertEquals(models.data.map((m: { id: string }) => m.id), ["fake-sd-test-double"], "model ids");
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const listed = [];
    for await (const m of client.models.list()) listed.push(m.id);
    assertEquals(listed, ["fake-sd-test-double"], "openai client models");

    const metricsRes = await fetch(`${s.url}/metrics`);
    assert(metricsRes.headers.get("content-type")?.startsWith("text/plain"), "metrics content type");
    const metrics = await metricsRes.text();
    const names = ["sd_queue_length", "sd_jobs_total", "sd_steps_per_second", "sd_gpu_bytes"];
    for (const name of [...names, "process_resident_memory_bytes"]) {
      assert(new RegExp(`^# TYPE ${name} `, "m").test(metrics), `metric ${name}`);
    }
    assert(/^sd_gpu_bytes 123456789$/m.test(metrics), "gpu bytes from the engine");
    const rss = Number(/^process_resident_memory_bytes (\d+)$/m.exec(metrics)?.[1]);
    assert(rss > 1e6 && rss < 2 ** 40, `resident memory ${rss}`);

    const page = await fetch(`${s.url}/`);
    const html = await page.text();
    assert(page.headers.get("content-type")?.startsWith("text/html"), "page content type");
    assert(html.includes('id="prompt"') && html.includes("<script"), "page content");

    const missing = await fetch(`${s.url}/v2/nothing`);
    assertEquals([missing.status, (await missing.json()).error.code], [404, "not_found"], "404");
    const wrong = await fetch(`${s.url}/v1/images/generations`);
    assertEquals([wrong.status, (await wrong.json()).error.code], [405, "method_not_allowed"], "405");
    assertEquals(wrong.headers.get("allow"), "POST", "Allow header");
  });
});

Deno.test("prompt_weighting: none unless the request (or the route's default) says a1111; GET takes it too", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    for (const body of [{ prompt: "(x)" }, { prompt: "(x)", prompt_weighting: "a1111" }]) {
      const res = await postJson(`${s.url}/v1/generate`, { ...body, steps: 1, width: 16, height: 16 });
      assertEquals(res.status, 200, "status");
      await res.text();
    }
    const get = await fetch(
      `${s.url}/v1/generate?prompt=x&steps=1&width=16&height=16&prompt_weighting=a1111`,
    );
    assertEquals(get.status, 200, "GET status");
    await get.text();
    const runs = s.fake!.runs.map((r) => r.request.promptWeighting);
    assertEquals(runs, ["none", "a1111", "a1111"], "engine requests");
  });
  const a1111Route = nativeSchema(DEFAULT_LIMITS, false, { promptWeighting: "a1111" });
  assertEquals(a1111Route.parse({ prompt: "p" }).request.promptWeighting, "a1111", "route default");
  assertEquals(
    a1111Route.parse({ prompt: "p", prompt_weighting: "none" }).request.promptWeighting,
    "none",
    "request over route default",
  );
});

Deno.test("LoRAs: GET /v1/loras lists the folder; loras and prompt tags reach the engine; bad names are 400s naming them", async () => {
  const { LoraLibrary } = await import("../src/models/lora/library.ts");
  const dir = await Deno.makeTempDir();
  const lora = new URL("./fixtures/lora/", import.meta.url).pathname;
  await Deno.copyFile(`${lora}style_kohya.safetensors`, `${dir}/style.safetensors`);
  await Deno.copyFile(`${lora}style_diffusers.safetensors`, `${dir}/style.v2.safetensors`);
  await Deno.writeTextFile(`${dir}/notes.txt`, "not a LoRA");
  try {
    await withServer({ engine: ENGINE }, async (s) => {
      const none = await (await fetch(`${s.url}/v1/loras`)).json();
      assertEquals(none, { object: "list", data: [] }, "no LoRA folder");
      const res = await postJson(`${s.url}/v1/generate`, { prompt: "p", loras: [{ name: "style" }] });
      const body = await res.json();
      assertEquals([res.status, body.error.param], [400, "loras.0.name"], "no folder: 400");
      assert(/no LoRA folder/.test(body.error.message), body.error.message);
    });
    await withServer({ engine: ENGINE, options: { loras: new LoraLibrary(dir) } }, async (s) => {
      const list = await (await fetch(`${s.url}/v1/loras`)).json();
      assertEquals(
        list.data.map((l: Record<string, unknown>) => [l.name, l.keys, l.format]),
        [["style", 783, "kohya"], ["style.v2", 522, "diffusers"]],
        "listing",
      );
      assertEquals(list.data[0].size, (await Deno.stat(`${dir}/style.safetensors`)).size, "size");

      const ok = await postJson(`${s.url}/v1/generate`, {
        prompt: "a fox <lora:style.v2:0.3>",
        steps: 2,
        width: 16,
        height: 16,
        loras: [{ name: "style", scale: 0.5 }, { name: "style.v2" }],
      });
      assertEquals(ok.status, 200, "valid LoRAs");
      const run = s.fake!.runs.at(-1)!.request;
      assertEquals(
        run.loras,
        [{ name: "style", scale: 0.5 }, { name: "style.v2", scale: 1 }],
        "loras passed on",
      );
      assertEquals(run.prompt, "a fox <lora:style.v2:0.3>", "tags stay in the prompt for the engine");

      const cases: [Record<string, unknown>, string, RegExp][] = [
        [{ loras: [{ name: "nope" }] }, "loras.0.name", /unknown LoRA "nope"; GET \/v1\/loras/],
        [{ loras: [{ name: "style" }, { name: "../style" }] }, "loras.1.name", /without path separators/],
        [{ loras: [{ name: "sub/style" }] }, "loras.0.name", /without path separators/],
        [{ loras: [{ name: ".." }] }, "loras.0.name", /without path separators/],
        [{ loras: [{ name: "style", scale: 11 }] }, "loras.0.scale", /between -10 and 10/],
        [{ loras: [{ name: "style", weight: 1 }] }, "loras.0.weight", /unknown|unrecognized/i],
        [{ loras: "style" }, "loras", /list/],
        [{ prompt: "a fox <lora:nope:0.5>" }, "prompt", /unknown LoRA "nope".*<lora:…> tag/],
        [{ prompt: "a fox <lora:../style>" }, "prompt", /path separators/],
        [{ prompt: "a fox <lora:style:lots>" }, "prompt", /scale must be a number/],
      ];
      for (const [extra, param, message] of cases) {
        const r = await postJson(`${s.url}/v1/generate`, { prompt: "p", ...extra });
        const b = await r.json();
        assertEquals([r.status, b.error?.param], [400, param], `${JSON.stringify(extra)}`);
        assert(message.test(b.error.message), `${JSON.stringify(extra)}: ${b.error.message}`);
      }
      // Query strings (EventSource) carry LoRAs as prompt tags; jobs and the OpenAI route validate the same.
      const q = await fetch(`${s.url}/v1/generate?${new URLSearchParams({ prompt: "x <lora:nope>" })}`);
      assertEquals([q.status, (await q.json()).error.param], [400, "prompt"], "query tag");
      const job = await postJson(`${s.url}/v1/jobs`, { prompt: "p", loras: [{ name: "nope" }] });
      assertEquals([job.status, (await job.json()).error.param], [400, "loras.0.name"], "jobs");
      const openai = await postJson(`${s.url}/v1/images/generations`, {
        prompt: "p",
        loras: [{ name: "nope" }],
      });
      assertEquals([openai.status, (await openai.json()).error.param], [400, "loras.0.name"], "openai");
      const good = await postJson(`${s.url}/v1/images/generations`, {
        prompt: "p",
        size: "16x16",
        steps: 1,
        loras: [{ name: "style", scale: -1 }],
      });
      assertEquals(good.status, 200, "openai with a LoRA");
      assertEquals(s.fake!.runs.at(-1)!.request.loras, [{ name: "style", scale: -1 }], "openai loras");
      // The multipart edits form names LoRAs by prompt tag, checked the same way.
      const form = new FormData();
      const png = encodeImage(new Uint8Array(16 * 16 * 3).fill(200), 16, 16, "png").bytes;
      form.append("image", new Blob([png.slice()], { type: "image/png" }), "i.png");
      form.append("prompt", "a red door <lora:nope>");
      const edit = await fetch(`${s.url}/v1/images/edits`, { method: "POST", body: form });
      assertEquals([edit.status, (await edit.json()).error.param], [400, "prompt"], "edits tag");
      assertEquals((await fetch(`${s.url}/v1/loras`, { method: "POST" })).status, 405, "POST /v1/loras");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
