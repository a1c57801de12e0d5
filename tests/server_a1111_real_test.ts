// The A1111 routes on the real engine (the tiny diffusers model in tests/fixtures/tiny_sd, in its worker):
// a batch follows A1111's seed rule — image i of batch_size 2 is the single run of seed + i, decoded and
// compared pixel for pixel — and img2img with a blurred mask is the native API's inpainting of that mask
// (binarised by the engine) laid over the original through the doubled blurred mask.

import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { a1111Mask } from "../src/image/mask_blur.ts";
import { resizeLanczos } from "../src/image/resize.ts";
import { postJson, startTestServer, tinyModelEngineFactory } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

function rgbOf(png: Uint8Array): { width: number; height: number; rgb: Uint8Array } {
  const d = decodeImage(png);
  const rgb = new Uint8Array(d.width * d.height * 3);
  for (let p = 0; p < d.width * d.height; p++) rgb.set(d.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  return { width: d.width, height: d.height, rgb };
}

function samePixels(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

Deno.test("A1111 routes on the tiny real model", async (t) => {
  const s = await startTestServer({ engine: tinyModelEngineFactory() });
  const post = async (path: string, body: unknown): Promise<Json> => {
    const res = await postJson(`${s.url}${path}`, body);
    const json = await res.json();
    assert(res.status === 200, `${path}: ${res.status} ${JSON.stringify(json).slice(0, 400)}`);
    return json;
  };
  try {
    await t.step(
      "txt2img batch_size 2 gives the images of two single runs with seed and seed + 1",
      async () => {
        const body = {
          prompt: "a lighthouse at dusk",
          negative_prompt: "blurry",
          steps: 3,
          width: 64,
          height: 64,
          cfg_scale: 7.5,
          sampler_name: "Euler a",
          seed: 11,
        };
        const batch = await post("/sdapi/v1/txt2img", { ...body, batch_size: 2 });
        const first = await post("/sdapi/v1/txt2img", body);
        const second = await post("/sdapi/v1/txt2img", { ...body, seed: 12 });
        assertEquals(batch.images.length, 2, "batch images");
        const px = (b64: string) => rgbOf(Uint8Array.fromBase64(b64)).rgb;
        assert(samePixels(px(batch.images[0]), px(first.images[0])), "image 0 = the run of seed 11");
        assert(samePixels(px(batch.images[1]), px(second.images[0])), "image 1 = the run of seed 12");
        assert(!samePixels(px(batch.images[0]), px(batch.images[1])), "the two images differ");
        const info = JSON.parse(batch.info);
        assertEquals(info.all_seeds, [11, 12], "all_seeds");
        assert(
          info.infotexts[1].includes("Seed: 12,") && info.infotexts[1].includes("Sampler: Euler a,"),
          `infotext ${info.infotexts[1]}`,
        );
        assertEquals(info.infotexts[1], JSON.parse(second.info).infotexts[0], "the same infotext as alone");
      },
    );

    await t.step(
      "img2img with mask + mask_blur: the native inpainting of the blurred mask, overlaid",
      async () => {
        const dir = new URL("./fixtures/inpaint/", import.meta.url).pathname;
        const image = await Deno.readFile(`${dir}inpaint_2_image.png`);
        const size = 64;
        // White (repaint) on the left half, at the image's 128².
        const maskRgb = new Uint8Array(128 * 128 * 3);
        for (let p = 0; p < 128 * 128; p++) if (p % 128 < 64) maskRgb.fill(255, p * 3, p * 3 + 3);
        const mask = encodeImage(maskRgb, 128, 128, "png").bytes;
        const fields = { prompt: "a photograph of an astronaut riding a horse", steps: 4, seed: 5 };
        const a1111 = await post("/sdapi/v1/img2img", {
          ...fields,
          init_images: [image.toBase64()],
          mask: mask.toBase64(),
          mask_blur: 4,
          inpainting_fill: 1,
          inpaint_full_res: false,
          denoising_strength: 0.8,
          sampler_name: "DDIM",
          cfg_scale: 7.5,
          width: size,
          height: size,
        });
        assertEquals(JSON.parse(a1111.info).warnings, [], "no warnings");

        // What the route prepares, by hand: the image resized to 64², the mask blurred (σ 4 at 128 px = 2 here).
        const original = resizeLanczos(rgbOf(image).rgb, 128, 128, 3, size, size);
        const blurred = a1111Mask(decodeImage(mask), size, size, { blurX: 4, blurY: 4 });
        const grey = new Uint8Array(size * size * 3);
        for (let p = 0; p < size * size; p++) grey.fill(blurred[p], p * 3, p * 3 + 3);
        const native = await post("/v1/generate", {
          ...fields,
          image: encodeImage(original, size, size, "png").bytes.toBase64(),
          mask: encodeImage(grey, size, size, "png").bytes.toBase64(),
          strength: 0.8,
          sampler: "ddim",
          guidance_scale: 7.5,
          width: size,
          height: size,
          prompt_weighting: "a1111",
        });
        const generated = rgbOf(Uint8Array.fromBase64(native.image)).rgb;
        const got = rgbOf(Uint8Array.fromBase64(a1111.images[0]));
        assertEquals([got.width, got.height], [size, size], "size");
        // A1111's overlay, written out: the mask doubled and clipped mixes generated over original.
        let band = 0;
        for (let p = 0; p < size * size; p++) {
          const m = Math.min(255, 2 * blurred[p]);
          for (let c = 0; c < 3; c++) {
            const o = p * 3 + c;
            const want = Math.round((generated[o] * m + original[o] * (255 - m)) / 255);
            assert(got.rgb[o] === want, `pixel ${p}.${c}: ${got.rgb[o]}, want ${want} (mask ${blurred[p]})`);
          }
          if (m > 0 && m < 255 && generated[p * 3] !== original[p * 3]) band++;
        }
        assert(band > 0, "the blur's soft band mixes the two somewhere");
        // Outside the blurred mask the original's pixels, inside the engine's.
        assert(
          [0, 1, 2].every((c) => got.rgb[(10 * size + 60) * 3 + c] === original[(10 * size + 60) * 3 + c]),
          "far right: the original",
        );
        assert(!samePixels(generated, original), "the engine repainted something");
      },
    );
  } finally {
    await s.close();
  }
});
