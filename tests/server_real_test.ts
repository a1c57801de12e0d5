// The HTTP API on the real engine: the tiny diffusers model in tests/fixtures/tiny_sd, loaded in the
// background like a real model. Native SSE (POST and GET), JSON, the official openai client (plain and
// streamed), inpainting (native mask and OpenAI images.edit against diffusers' image), cancellation on
// disconnect with the next job running, and the image equal to what the library pipeline produces for the
// same seed. (tests/server_api_test.ts runs the wider API surface — every 400, 429, auth, metrics — against a
// fast test double.)

import OpenAI from "openai";
import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { assert, psnr } from "./util.ts";
import { collectSse, postJson, readSse, startTestServer, tinyModelEngineFactory } from "./server_harness.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import { testGpu } from "./util.ts";

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

    await t.step(
      "inpainting: native white mask and OpenAI images.edit (alpha 0) give diffusers' image",
      async () => {
        // The golden case inpaint_2 (tests/fixtures/inpaint): this 4-channel model, strength 0.8, blended.
        const dir = new URL("./fixtures/inpaint/", import.meta.url).pathname;
        const image = await Deno.readFile(`${dir}inpaint_2_image.png`);
        const mask = await Deno.readFile(`${dir}inpaint_2_mask.png`);
        const fields = {
          prompt: "a photograph of an astronaut riding a horse",
          negative_prompt: "",
          steps: 8,
          guidance_scale: 7.5,
          sampler: "ddim",
          seed: 2024,
          strength: 0.8,
        };
        const native = await (await postJson(`${s.url}/v1/generate`, {
          ...fields,
          width: 128,
          height: 128,
          image: image.toBase64(),
          mask: mask.toBase64(),
        })).json();
        const got = decodeImage(Uint8Array.fromBase64(native.image));
        const want = decodeImage(await Deno.readFile(`${dir}inpaint_2.png`));
        // The server computes in f16 where the adapter can: the e2e tests' f16 bound.
        const db = psnr(got.rgba, want.rgba);
        console.log(`inpaint_2 over HTTP: PSNR ${db.toFixed(2)} dB`);
        assert(db >= 25, `PSNR ${db.toFixed(2)} dB against diffusers`);

        // OpenAI's mask: transparent where the white-repaints mask is white.
        const l = decodeImage(mask);
        const rgba = new Uint8Array(l.width * l.height * 4);
        for (let p = 0; p < l.width * l.height; p++) rgba[p * 4 + 3] = 255 - l.rgba[p * 4];
        const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
        const stream = await client.images.edit({
          image: await OpenAI.toFile(image, "image.png", { type: "image/png" }),
          mask: await OpenAI.toFile(encodeImage(rgba, l.width, l.height, "png").bytes, "mask.png"),
          size: "128x128",
          stream: true,
          partial_images: 1,
          ...fields,
        } as unknown as OpenAI.ImageEditParamsStreaming);
        const types: string[] = [];
        let edited = "";
        for await (const ev of stream) {
          types.push(ev.type);
          if (ev.type === "image_edit.completed") edited = ev.b64_json;
        }
        assert(types.join() === "image_edit.partial_image,image_edit.completed", `types ${types}`);
        assert(decodeSame(edited, Uint8Array.fromBase64(native.image)), "edits image ≠ native image");
      },
    );

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

Deno.test("server with TAESD (--taesd, --decoder taesd): previews default to TAESD, the image is TAESD's", async () => {
  const taesd = new URL("./fixtures/taesd/model", import.meta.url).pathname;
  const s = await startTestServer({
    engine: tinyModelEngineFactory({ taesd, decoder: "taesd" }),
    options: { taesd: true },
  });
  try {
    const request = { prompt: "a lighthouse", width: 64, height: 128, steps: 2, sampler: "ddim", seed: 7 };
    const previewOf = async (extra: Record<string, unknown>) => {
      const events = await collectSse(await postJson(`${s.url}/v1/generate`, { ...request, ...extra }, SSE));
      const p = events.find((e) => e.event === "preview")!.json;
      return { preview: p, image: events.at(-1)!.json.image as string };
    };
    const byDefault = await previewOf({ preview_every: 1 });
    const taesdPreview = await previewOf({ preview_every: 1, preview: "taesd" });
    const cheap = await previewOf({ preview_every: 1, preview: "cheap" });
    // TAESD previews come at half the image size, like the cheap one, but are TAESD's pixels.
    assert(byDefault.preview.width === 32 && byDefault.preview.height === 64, "preview size");
    assert(byDefault.preview.data === taesdPreview.preview.data, "the default preview is TAESD's");
    assert(byDefault.preview.data !== cheap.preview.data, "the TAESD preview is not the cheap one");
    // The final image is what the library pipeline makes with the taesd decoder (same precision).
    const gpu = await testGpu();
    const local = await loadPipeline(gpu, new URL("./fixtures/tiny_sd", import.meta.url).pathname, {
      taesd,
      decoder: "taesd",
    });
    let png: Uint8Array = new Uint8Array();
    for await (const ev of local.generate({ ...request, sampler: "ddim", guidanceScale: 7.5 })) {
      if (ev.type === "done") png = ev.image;
    }
    assert(decodeSame(byDefault.image, png), "the image equals the library's TAESD-decoded image");
  } finally {
    await s.close();
  }
});

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
