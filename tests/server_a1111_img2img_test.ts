// POST /sdapi/v1/img2img against the fake engine (which applies the real mask preprocessing and keeps the
// init image's pixels outside the mask): init_images + denoising_strength, and masks A1111's way — rounded,
// inverted (inpainting_mask_invert), blurred (mask_blur) before the engine binarises them, the masked area
// filled from its surroundings (inpainting_fill 0), the output laid over the original through the mask — and
// the 422s of what cannot be done.

import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { a1111Mask } from "../src/image/mask_blur.ts";
import { preprocessMask } from "../src/image/mask.ts";
import { fakeEngineFactory, postJson, type TestServer, withServer } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE = fakeEngineFactory({ stepDelayMs: 1 });
const W = 64;
const H = 48;

// deno-lint-ignore no-explicit-any
type Json = any;

/** A gradient every pixel of which differs from the fake's painting. */
function picture(): Uint8Array {
  const rgb = new Uint8Array(W * H * 3);
  for (let p = 0; p < W * H; p++) rgb.set([((p % W) * 255) / W, (Math.floor(p / W) * 255) / H, 7], p * 3);
  return encodeImage(rgb, W, H, "png").bytes;
}

/** White (repaint) on the left half. */
function leftMask(): Uint8Array {
  const rgb = new Uint8Array(W * H * 3);
  for (let p = 0; p < W * H; p++) if (p % W < W / 2) rgb.fill(255, p * 3, p * 3 + 3);
  return encodeImage(rgb, W, H, "png").bytes;
}

async function img2img(
  s: TestServer,
  body: Record<string, unknown>,
): Promise<{ status: number; json: Json }> {
  const res = await postJson(`${s.url}/sdapi/v1/img2img`, {
    prompt: "a boat",
    seed: 3,
    steps: 4,
    width: W,
    height: H,
    init_images: [picture().toBase64()],
    ...body,
  });
  return { status: res.status, json: await res.json() };
}

function rgbOf(png: Uint8Array): Uint8Array {
  const d = decodeImage(png);
  const out = new Uint8Array(d.width * d.height * 3);
  for (let p = 0; p < d.width * d.height; p++) out.set(d.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  return out;
}

/** How many pixels of each half equal the original. */
function keptPerHalf(b64: string): { left: number; right: number } {
  const out = rgbOf(Uint8Array.fromBase64(b64));
  const orig = rgbOf(picture());
  let left = 0;
  let right = 0;
  for (let p = 0; p < W * H; p++) {
    const same = [0, 1, 2].every((k) => out[p * 3 + k] === orig[p * 3 + k]);
    if (same && p % W < W / 2) left++;
    if (same && p % W >= W / 2) right++;
  }
  return { left, right };
}

Deno.test("img2img: init image and denoising_strength reach the engine as they are", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { status, json } = await img2img(s, { denoising_strength: 0.5, batch_size: 2 });
    assertEquals(status, 200, JSON.stringify(json));
    assertEquals(json.images.length, 2, "images");
    const run = s.fake!.runs[0];
    assertEquals(run.request.initImage, picture(), "the init image's bytes");
    assertEquals(
      [run.request.strength, run.request.mask, run.stepsDone],
      [0.5, undefined, 2],
      "strength 0.5",
    );
    const info = JSON.parse(json.info);
    assertEquals([info.denoising_strength, info.all_seeds], [0.5, [3, 4]], "info");
    assertEquals([json.parameters.init_images, json.parameters.mask], [null, null], "images not echoed");
    const withImages = await img2img(s, { include_init_images: true });
    assertEquals(withImages.json.parameters.init_images.length, 1, "include_init_images echoes them");
    assertEquals(s.fake!.runs[1].request.strength, 0.75, "A1111's default strength");
  });
});

Deno.test("img2img with a mask: rounded, blurred, binarised by the engine; the output is laid over the original", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    // No blur: the right half is the original's exactly, the left half repainted.
    const sharp = await img2img(s, {
      mask: leftMask().toBase64(),
      mask_blur: 0,
      inpainting_fill: 1,
      inpaint_full_res: false,
    });
    assertEquals(sharp.status, 200, JSON.stringify(sharp.json));
    assertEquals(keptPerHalf(sharp.json.images[0]), { left: 0, right: W * H / 2 }, "kept halves");
    assertEquals(JSON.parse(sharp.json.info).warnings, [], "no warnings");
    const run = s.fake!.runs[0].request;
    assertEquals(run.strength, 0.75, "A1111's strength with a mask too");
    assertEquals(
      run.initImage,
      encodeImage(rgbOf(picture()), W, H, "png").bytes,
      "inpainting_fill 1: the original",
    );
    // Inverted: the other half.
    const inverted = await img2img(s, {
      mask: leftMask().toBase64(),
      mask_blur: 0,
      inpainting_fill: 1,
      inpainting_mask_invert: 1,
    });
    assertEquals(keptPerHalf(inverted.json.images[0]), { left: W * H / 2, right: 0 }, "inverted");
    assert(
      JSON.parse(inverted.json.info).warnings.some((w: string) => w.startsWith("inpaint_full_res")),
      "inpaint_full_res (default true) is ignored with a warning",
    );

    // Blurred: the engine gets the blurred mask; binarising it gives the same straight edge.
    const blurred = await img2img(s, { mask: leftMask().toBase64(), mask_blur: 4, inpainting_fill: 1 });
    assertEquals(blurred.status, 200, JSON.stringify(blurred.json));
    const sent = s.fake!.runs.at(-1)!.request.mask!;
    const want = a1111Mask(decodeImage(leftMask()), W, H, { blurX: 4, blurY: 4 });
    assertEquals(
      [...rgbOf(sent).filter((_, i) => i % 3 === 0)],
      [...want],
      "the blurred mask reached the engine",
    );
    assert(want.some((v) => v > 0 && v < 255), "it is blurred");
    const binary = preprocessMask(sent, W, H);
    assert(
      binary.every((v, p) => v === (p % W < W / 2 ? 1 : 0)),
      "binarised: the straight edge is unchanged",
    );
    // The fake keeps the original's pixels outside the binarised mask, so the overlay's soft band (outside the
    // edge) shows nothing here; tests/server_a1111_real_test.ts checks it on the real model.
    assertEquals(keptPerHalf(blurred.json.images[0]), { left: 0, right: W * H / 2 }, "blurred: kept halves");
  });
});

Deno.test("img2img inpainting_fill: 0 fills the masked area from around it; 2 and 3 need strength 1", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const filled = await img2img(s, { mask: leftMask().toBase64(), mask_blur: 0, inpainting_fill: 0 });
    assertEquals(filled.status, 200, JSON.stringify(filled.json));
    const start = rgbOf(s.fake!.runs[0].request.initImage!);
    const orig = rgbOf(picture());
    for (let p = 0; p < W * H; p++) {
      const x = p % W;
      const same = [0, 1, 2].every((k) => start[p * 3 + k] === orig[p * 3 + k]);
      if (x >= W / 2) assert(same, `kept pixel ${p} unchanged`);
      // The red channel ramps with x: filled pixels take the colours of the kept (right) half.
      else if (x < W / 4) assert(start[p * 3] >= 120, `filled pixel ${p}: ${start[p * 3]}`);
    }
    const noise = await img2img(s, {
      mask: leftMask().toBase64(),
      inpainting_fill: 2,
      denoising_strength: 1,
    });
    assertEquals(noise.status, 200, "latent noise at strength 1");
    for (const fill of [2, 3]) {
      const refused = await img2img(s, {
        mask: leftMask().toBase64(),
        inpainting_fill: fill,
        denoising_strength: 0.6,
      });
      assertEquals(
        [refused.status, refused.json.detail[0].loc],
        [422, ["body", "inpainting_fill"]],
        `fill ${fill}`,
      );
    }
  });
});

Deno.test("img2img 422s: missing or bad images, strength out of range, several init images", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const locs = async (body: Record<string, unknown>) => {
      const { status, json } = await img2img(s, body);
      assertEquals(status, 422, `${JSON.stringify(body).slice(0, 60)}: ${JSON.stringify(json)}`);
      return json.detail.map((d: Json) => [d.loc.join("."), d.type]);
    };
    assertEquals(await locs({ init_images: null }), [["body.init_images", "value_error.missing"]], "missing");
    assertEquals(
      await locs({ init_images: ["not base64!"] }),
      [["body.init_images.0", "value_error"]],
      "bad base64",
    );
    assertEquals(
      await locs({ init_images: [btoa("plain text")] }),
      [["body.init_images.0", "value_error"]],
      "not an image",
    );
    assertEquals(await locs({ init_images: ["https://example.com/a.png"] }), [[
      "body.init_images.0",
      "value_error",
    ]], "URL");
    assertEquals(await locs({ init_images: [picture().toBase64(), picture().toBase64()] }), [[
      "body.init_images",
      "value_error",
    ]], "two images");
    assertEquals(await locs({ denoising_strength: 0 }), [[
      "body.denoising_strength",
      "value_error.number.not_gt",
    ]], "strength 0");
    assertEquals(await locs({ mask: "AAAA" }), [["body.mask", "value_error"]], "bad mask");
    assertEquals(await locs({ mask_blur: 65 }), [["body.mask_blur", "value_error.number.not_le"]], "blur");
    // Sizes come from the headers on the HTTP thread: a mask claiming 5000×5000 is refused undecoded.
    const huge = leftMask();
    new DataView(huge.buffer).setUint32(16, 5000);
    new DataView(huge.buffer).setUint32(20, 5000);
    assertEquals(await locs({ mask: huge.toBase64() }), [["body.mask", "value_error"]], "too large");
    assertEquals(s.fake!.runs.length, 0, "nothing ran");
    // Pixels are decoded in the engine: a mask whose header reads but whose data does not is its 422.
    const corrupt = leftMask();
    corrupt.fill(0, 40, corrupt.length - 12);
    assertEquals(await locs({ mask: corrupt.toBase64() }), [["body.mask", "value_error"]], "undecodable");
    // A data: URL is an image too.
    const dataUrl = await img2img(s, {
      init_images: [`data:image/png;base64,${picture().toBase64()}`],
      steps: 2,
    });
    assertEquals(dataUrl.status, 200, "data: URL");
  });
});
