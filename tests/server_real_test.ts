// The HTTP API on the real engine: the tiny diffusers model in tests/fixtures/tiny_sd, loaded in the
// background like a real model. Native SSE (POST and GET), JSON, the official openai client (plain and
// streamed), cancellation on disconnect with the next job running, and the image equal to what the
// library pipeline produces for the same seed. (tests/server_api_test.ts runs the wider API surface —
// every 400, 429, auth, metrics — against a fast test double.)

import OpenAI from "openai";
import { decodeImage } from "../src/image/codec.ts";
import { collectSse, postJson, readSse, startTestServer, tinyModelEngineFactory } from "./server_harness.ts";

function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

const SSE = { accept: "text/event-stream" };

Deno.test("server on the tiny real model", async (t) => {
  const s = await startTestServer({ engine: tinyModelEngineFactory(), options: { maxSteps: 500 } });
  try {
    const health = await (await fetch(`${s.url}/healthz`)).json();
    assert(
      health.status === "ready" && typeof health.adapter === "string",
      `healthz ${JSON.stringify(health)}`,
    );

    let nativePng = new Uint8Array();
    await t.step(
      "native SSE POST: queued, started, progress, previews, done with a PNG of the requested size",
      async () => {
        const res = await postJson(`${s.url}/v1/generate`, {
          prompt: "a lighthouse at dusk",
          negative_prompt: "blurry",
          width: 64,
          height: 128,
          steps: 4,
          sampler: "ddim",
          seed: 7,
          preview_every: 1,
          preview: "cheap",
        }, SSE);
        assert(res.status === 200, `status ${res.status}`);
        const events = await collectSse(res);
        const names = events.map((e) => e.event);
        assert(names[0] === "queued" && names[1] === "started" && names.at(-1) === "done", `events ${names}`);
        assert(events.every((e, i) => Number(e.id) === i + 1), "ids 1..n");
        const progress = events.filter((e) => e.event === "progress").map((e) => e.json.step);
        assert(progress.join() === "1,2,3,4", `progress ${progress}`);
        const previews = events.filter((e) => e.event === "preview");
        assert(previews.length >= 2, `${previews.length} previews`);
        for (const p of previews) decodeImage(Uint8Array.fromBase64(p.json.data));
        const done = events.at(-1)!.json;
        nativePng = Uint8Array.fromBase64(done.image);
        const img = decodeImage(nativePng);
        assert(img.width === 64 && img.height === 128, `image ${img.width}×${img.height}`);
        assert(img.text.parameters?.includes("Seed: 7"), "parameters chunk");
      },
    );

    await t.step("the same request as GET (EventSource) and as plain JSON gives the same image", async () => {
      const q = new URLSearchParams({
        prompt: "a lighthouse at dusk",
        negative_prompt: "blurry",
        width: "64",
        height: "128",
        steps: "4",
        sampler: "ddim",
        seed: "7",
        preview_every: "0",
      });
      const events = await collectSse(await fetch(`${s.url}/v1/generate?${q}`, { headers: SSE }));
      const done = events.find((e) => e.event === "done")!.json;
      assert(decodeSame(done.image, nativePng), "GET image");
      const body = { ...Object.fromEntries(q), width: 64, height: 128, steps: 4, seed: 7, preview_every: 0 };
      const json = await (await postJson(`${s.url}/v1/generate`, body)).json();
      assert(decodeSame(json.image, nativePng), "JSON image");
    });

    await t.step("openai client: plain and streamed", async () => {
      const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const plain = await client.images.generate(
        { prompt: "a red fox", size: "64x64", n: 1, steps: 2 } as never,
      );
      const img = decodeImage(Uint8Array.fromBase64(plain.data![0].b64_json!));
      assert(img.width === 64 && img.height === 64, "plain size");
      const stream = await client.images.generate({
        prompt: "a red fox",
        size: "64x64",
        stream: true,
        partial_images: 2,
        steps: 4,
      } as OpenAI.ImageGenerateParamsStreaming);
      const types: string[] = [];
      for await (const ev of stream) {
        types.push(ev.type);
        decodeImage(Uint8Array.fromBase64(ev.b64_json));
      }
      assert(types.at(-1) === "image_generation.completed", `types ${types}`);
      assert(types.filter((x) => x === "image_generation.partial_image").length === 2, `types ${types}`);
    });

    await t.step("a disconnected client's job stops within a step and the next job completes", async () => {
      const client = new AbortController();
      const first = await fetch(`${s.url}/v1/generate`, {
        method: "POST",
        headers: { "content-type": "application/json", ...SSE },
        body: JSON.stringify({ prompt: "long", width: 64, height: 64, steps: 200, preview_every: 0 }),
        signal: client.signal,
      });
      const second = await postJson(`${s.url}/v1/generate`, {
        prompt: "next",
        width: 64,
        height: 64,
        steps: 2,
        sampler: "ddim",
      }, SSE);
      try {
        for await (const ev of readSse(first.body!)) {
          if (ev.event === "progress" && JSON.parse(ev.data).step >= 2) client.abort();
        }
      } catch {
        // the abort ends the stream
      }
      const events = await collectSse(second);
      assert(events.at(-1)?.event === "done", `next job: ${events.at(-1)?.event}`);
      const progress = events.filter((e) => e.event === "progress").length;
      assert(progress === 2, `next job ran ${progress} steps`);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert(/sd_jobs_total\{outcome="cancelled"\} 1/.test(metrics), `cancelled not counted:\n${metrics}`);
    });
  } finally {
    await s.close();
  }
});

/** Two encodings of the same generation decode to identical pixels. */
function decodeSame(b64: string, png: Uint8Array): boolean {
  const a = decodeImage(Uint8Array.fromBase64(b64));
  const b = decodeImage(png);
  return a.width === b.width && a.height === b.height && a.rgba.every((v, i) => v === b.rgba[i]);
}

Deno.test("server on the tiny real model with a LoRA folder: the worker merges per job and restores between jobs", async () => {
  const { LoraLibrary } = await import("../src/models/lora/library.ts");
  const loraDir = new URL("./fixtures/lora", import.meta.url).pathname;
  const s = await startTestServer({
    engine: tinyModelEngineFactory({ loraDir }),
    options: { loras: new LoraLibrary(loraDir) },
  });
  try {
    const generate = async (extra: Record<string, unknown>) => {
      const body = {
        prompt: "a lighthouse",
        width: 64,
        height: 64,
        steps: 2,
        sampler: "ddim",
        seed: 3,
        ...extra,
      };
      const res = await postJson(`${s.url}/v1/generate`, body);
      const json = await res.json();
      assert(res.status === 200, `${JSON.stringify(extra)}: ${res.status} ${JSON.stringify(json)}`);
      return json.image as string;
    };
    const plain = await generate({});
    const listed = await generate({ loras: [{ name: "style_kohya", scale: 0.8 }] });
    assert(!decodeSame(listed, Uint8Array.fromBase64(plain)), "the LoRA does not change the image");
    const tagged = await generate({ prompt: "a lighthouse <lora:style_kohya:0.8>" });
    assert(decodeSame(tagged, Uint8Array.fromBase64(listed)), "a prompt tag differs from the loras list");
    const again = await generate({});
    assert(decodeSame(again, Uint8Array.fromBase64(plain)), "a job without LoRA after one with differs");
  } finally {
    await s.close();
  }
});
