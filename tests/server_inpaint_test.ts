// Inpainting over HTTP on the fake engine (tests/server_fake_engine.ts, which applies the real request rules
// and mask preprocessing and keeps the init image's pixels outside the mask): the native API's `mask`
// (white repaints), OpenAI's POST /v1/images/edits through the official client (alpha 0 repaints; no mask:
// everywhere; streamed image_edit.* events), and every 400 naming its field. tests/server_real_test.ts runs
// the edits route on the real tiny model.

import OpenAI from "openai";
import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { collectSse, fakeEngineFactory, postJson, withServer } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE = fakeEngineFactory({ stepDelayMs: 2 });
const INPAINTING_ENGINE = fakeEngineFactory({ stepDelayMs: 2, unetKind: "inpainting" });

/** A W×H picture: a red-green gradient (every pixel different from the fake's scene). */
function picture(w: number, h: number): Uint8Array {
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) rgb.set([(x * 255) / w, (y * 255) / h, 7], (y * w + x) * 3);
  }
  return encodeImage(rgb, w, h, "png").bytes;
}

/** A white-repaints mask: the left half white. */
function leftHalfWhite(w: number, h: number): Uint8Array {
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w / 2; x++) rgb.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3);
  }
  return encodeImage(rgb, w, h, "png").bytes;
}

/** OpenAI's mask: the left half transparent (alpha 0, edited), the rest opaque black (kept). */
function leftHalfTransparent(w: number, h: number): Uint8Array {
  const rgba = new Uint8Array(w * h * 4);
  for (let p = 0; p < w * h; p++) rgba[p * 4 + 3] = p % w < w / 2 ? 0 : 255;
  return encodeImage(rgba, w, h, "png").bytes;
}

/** Which halves of `out` equal `init` pixel for pixel. */
function keptHalves(out: Uint8Array, init: Uint8Array): { left: boolean; right: boolean } {
  const a = decodeImage(out);
  const b = decodeImage(init);
  assert(a.width === b.width && a.height === b.height, `sizes ${a.width}x${a.height} ${b.width}x${b.height}`);
  let left = true;
  let right = true;
  for (let p = 0; p < a.width * a.height; p++) {
    const same = [0, 1, 2].every((k) => Math.abs(a.rgba[p * 4 + k] - b.rgba[p * 4 + k]) <= 1);
    if (p % a.width < a.width / 2) left &&= same;
    else right &&= same;
  }
  return { left, right };
}

Deno.test("native API: image + mask repaints the white area only; /v1/jobs takes the same fields", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const image = picture(64, 64);
    const body = {
      prompt: "a boat",
      width: 64,
      height: 64,
      steps: 4,
      image: image.toBase64(),
      mask: leftHalfWhite(64, 64).toBase64(),
    };
    const json = await (await postJson(`${s.url}/v1/generate`, body)).json();
    const kept = keptHalves(Uint8Array.fromBase64(json.image), image);
    assertEquals(kept, { left: false, right: true }, "kept halves");
    const run = s.fake!.runs.at(-1)!;
    assertEquals(run.request.strength, 1, "inpainting's default strength");
    assertEquals(run.stepsDone, 4, "steps at strength 1");

    const job = await (await postJson(`${s.url}/v1/jobs`, { ...body, strength: 0.5 })).json();
    let status;
    do status = await (await fetch(`${s.url}${job.url}`)).json(); while (
      status.status === "queued" || status.status === "running"
    );
    assertEquals(status.status, "succeeded", "job");
    assertEquals(s.fake!.runs.at(-1)!.stepsDone, 2, "strength 0.5 runs half the steps");
  });
});

Deno.test("native API 400s: a mask without an image, of another aspect ratio, not an image; an inpainting model without a mask", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const image = picture(64, 64).toBase64();
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ mask: leftHalfWhite(64, 64).toBase64() }, "mask", /only applies with an image/],
      [{ image, mask: leftHalfWhite(64, 32).toBase64() }, "mask", /aspect ratio/],
      [{ image, mask: btoa("not an image at all") }, "mask", /PNG or JPEG/],
    ];
    for (const [extra, param, message] of cases) {
      for (const path of ["/v1/generate", "/v1/jobs"]) {
        const res = await postJson(`${s.url}${path}`, { prompt: "p", width: 64, height: 64, ...extra });
        const body = await res.json();
        assertEquals(res.status, 400, `${path} ${param}: status (${JSON.stringify(body)})`);
        assertEquals(body.error.param, param, "param");
        assert(
          message.test(body.error.message) && body.error.message.startsWith(`${param}:`),
          body.error.message,
        );
      }
    }
    assertEquals(s.fake!.runs.length, 0, "no bad request reached the engine");
  });
  // The model decides this one: a 400 naming the mask for a plain request, an error event in a stream.
  await withServer({ engine: INPAINTING_ENGINE }, async (s) => {
    const res = await postJson(`${s.url}/v1/generate`, { prompt: "p", width: 64, height: 64, steps: 2 });
    const body = await res.json();
    assertEquals([res.status, body.error.param], [400, "mask"], "plain request");
    assert(/inpainting model/.test(body.error.message), body.error.message);
    const events = await collectSse(
      await postJson(`${s.url}/v1/generate`, { prompt: "p", width: 64, height: 64, steps: 2 }, {
        accept: "text/event-stream",
      }),
    );
    const error = events.at(-1)!;
    assertEquals(
      [error.event, error.json.code, error.json.param],
      ["error", "invalid_request", "mask"],
      "event",
    );
  });
});

Deno.test("OpenAI images.edit: alpha 0 repaints, the rest is kept; no mask edits everywhere; size auto follows the image", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const image = picture(64, 64);
    const res = await client.images.edit({
      image: await OpenAI.toFile(image, "in.png", { type: "image/png" }),
      mask: await OpenAI.toFile(leftHalfTransparent(64, 64), "mask.png", { type: "image/png" }),
      prompt: "a boat",
      n: 2,
      size: "64x64",
      response_format: "b64_json",
      steps: 3,
      seed: 5,
    } as never);
    assertEquals(res.data!.length, 2, "n");
    assertEquals(res.size, "64x64", "size");
    for (const d of res.data!) {
      assertEquals(
        keptHalves(Uint8Array.fromBase64(d.b64_json!), image),
        { left: false, right: true },
        "halves",
      );
    }
    // n = 2: one batched job, image k of seed 5 + k.
    const a = s.fake!.runs.at(-1)!.request;
    assertEquals(
      [a.seed, a.numImages, a.seedMode, a.maskChannel, a.strength],
      [5, 2, "per-image", "alpha", 1],
      "request",
    );

    // No mask: the whole image is edited, guided by it (strength 0.75); auto size: rounded down to 64s.
    const whole = await client.images.edit({
      image: await OpenAI.toFile(picture(200, 130), "in.png", { type: "image/png" }),
      prompt: "a boat",
      steps: 4,
    } as never);
    const out = decodeImage(Uint8Array.fromBase64(whole.data![0].b64_json!));
    assertEquals([out.width, out.height, whole.size], [192, 128, "192x128"], "auto size");
    const r = s.fake!.runs.at(-1)!.request;
    assertEquals([r.maskAll, r.mask === undefined, r.strength], [true, true, 0.75], "whole-image edit");
  });
});

Deno.test("OpenAI images.edit streamed: image_edit.partial_image events, then image_edit.completed", async () => {
  await withServer({ engine: INPAINTING_ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.images.edit({
      image: await OpenAI.toFile(picture(64, 64), "in.png", { type: "image/png" }),
      prompt: "a boat",
      stream: true,
      partial_images: 2,
      steps: 6,
    } as OpenAI.ImageEditParamsStreaming);
    const types: string[] = [];
    for await (const ev of stream) {
      types.push(ev.type);
      decodeImage(Uint8Array.fromBase64(ev.b64_json));
      if (ev.type === "image_edit.partial_image") {
        assertEquals(ev.partial_image_index, types.length - 1, "index");
      }
    }
    assertEquals(
      types,
      ["image_edit.partial_image", "image_edit.partial_image", "image_edit.completed"],
      "types",
    );
  });
});

Deno.test("OpenAI images.edit errors: 400 naming image, mask, size, response_format, body", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const file = (bytes: Uint8Array, name = "x.png") => OpenAI.toFile(bytes, name, { type: "image/png" });
    const image = picture(64, 64);
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ mask: await file(leftHalfTransparent(32, 64)) }, "mask", /aspect ratio/],
      [{ mask: await file(new TextEncoder().encode("GIF89a")) }, "mask", /PNG or JPEG/],
      [{ image: await file(new TextEncoder().encode("nope")) }, "image", /PNG or JPEG/],
      [{ image: [await file(image), await file(image)] }, "image", /only one image/],
      [{ size: "100x64" }, "size", /multiple of 8/],
      [{ response_format: "url" }, "response_format", /b64_json/],
      [{ n: 9 }, "n", /between 1 and 4/],
      [{ strength: 0 }, "strength", /\(0, 1\]/],
    ];
    for (const [extra, param, message] of cases) {
      try {
        await client.images.edit({ image: await file(image), prompt: "p", ...extra } as never);
        throw new Error(`${param}: no error`);
      } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, `${param}: got ${e}`);
        assertEquals(e.param, param, "param");
        assert(message.test(e.message), `${param}: message ${e.message}`);
      }
    }
    // Without any image (the client requires one, so a plain form), and not a form at all.
    const form = new FormData();
    form.append("prompt", "p");
    const noImage = await (await fetch(`${s.url}/v1/images/edits`, { method: "POST", body: form })).json();
    assertEquals([noImage.error.param, noImage.error.message], ["image", "image: required"], "no image");
    const json = await postJson(`${s.url}/v1/images/edits`, { prompt: "p" });
    assertEquals([json.status, (await json.json()).error.param], [400, "body"], "JSON body");
    const get = await fetch(`${s.url}/v1/images/edits`);
    assertEquals(get.status, 405, "GET");
    await get.body?.cancel();
    assertEquals(s.fake!.runs.length, 0, "no bad request reached the engine");
  });
});
