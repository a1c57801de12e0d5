// The A1111-compatible generation routes over real loopback HTTP against the fake engine: requests and
// answers shaped as A1111's API documents them (StableDiffusionTxt2ImgProcessingAPI, TextToImageResponse
// {images, parameters, info}), A1111's seed rule (image i of iteration k is seed + k·batch_size + i, noise per
// image), unknown fields as warnings in info, FastAPI's 422s, and A1111's sampler names.
// tests/server_a1111_status_test.ts covers progress, interrupt, skip, models, options, LoRAs and auth;
// tests/server_a1111_img2img_test.ts img2img and masks; tests/server_a1111_real_test.ts the real model.

import { decodeImage } from "../src/image/codec.ts";
import { fakeEngineFactory, postJson, type TestServer, withServer } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE = fakeEngineFactory({ stepDelayMs: 1 });

// deno-lint-ignore no-explicit-any
type Json = any;

async function txt2img(s: TestServer, body: unknown): Promise<{ status: number; json: Json }> {
  const res = await postJson(`${s.url}/sdapi/v1/txt2img`, body);
  return { status: res.status, json: await res.json() };
}

function pixels(b64: string): Uint8Array {
  return decodeImage(Uint8Array.fromBase64(b64)).rgba;
}

Deno.test("txt2img: {images, parameters, info}; batch_size × n_iter images with seeds seed + k·batch_size + i", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { status, json } = await txt2img(s, {
      prompt: "a (lighthouse:1.2) at dusk",
      negative_prompt: "blurry",
      seed: 1234,
      steps: 4,
      width: 64,
      height: 48,
      cfg_scale: 5,
      sampler_name: "Euler a",
      batch_size: 2,
      n_iter: 2,
    });
    assertEquals(status, 200, `status ${JSON.stringify(json)}`);
    assertEquals(Object.keys(json).sort(), ["images", "info", "parameters"], "answer keys");
    assertEquals(json.images.length, 4, "images");
    for (const b64 of json.images) {
      const img = decodeImage(Uint8Array.fromBase64(b64));
      assertEquals([img.width, img.height, img.mime], [64, 48, "image/png"], "image");
    }
    // parameters: the request echoed with A1111's names and defaults.
    const p = json.parameters;
    assertEquals([p.prompt, p.seed, p.steps, p.sampler_name, p.batch_size, p.n_iter], [
      "a (lighthouse:1.2) at dusk",
      1234,
      4,
      "Euler a",
      2,
      2,
    ], "parameters");
    assertEquals(
      [p.enable_hr, p.restore_faces, p.send_images, p.subseed],
      [false, null, true, -1],
      "defaults",
    );
    assertEquals(typeof json.info, "string", "info is a JSON string");
    const info = JSON.parse(json.info);
    assertEquals(
      [info.seed, info.all_seeds, info.prompt, info.negative_prompt],
      [1234, [1234, 1235, 1236, 1237], "a (lighthouse:1.2) at dusk", "blurry"],
      "seeds and prompts",
    );
    assertEquals(info.all_prompts, Array(4).fill("a (lighthouse:1.2) at dusk"), "all_prompts");
    assertEquals(typeof info.subseed, "number", "subseed drawn");
    assertEquals(info.all_subseeds, [0, 1, 2, 3].map((i) => info.subseed + i), "all_subseeds");
    assertEquals(
      [info.width, info.height, info.sampler_name, info.cfg_scale, info.steps, info.batch_size, info.n_iter],
      [64, 48, "Euler a", 5, 4, 2, 2],
      "info fields",
    );
    assertEquals(info.infotexts.length, 4, "infotexts");
    info.infotexts.forEach((t: string, i: number) => {
      assert(t.includes(`Seed: ${1234 + i},`) && t.startsWith("a (lighthouse:1.2) at dusk"), `infotext ${t}`);
    });
    assertEquals(info.warnings, [], "no warnings");

    // Two jobs of two images, per-image seeds, A1111's prompt syntax, previews for /progress.
    const runs = s.fake!.runs;
    assertEquals(runs.length, 2, "jobs (n_iter)");
    assertEquals(runs.map((r) => [r.request.seed, r.request.numImages, r.request.seedMode]), [
      [1234, 2, "per-image"],
      [1236, 2, "per-image"],
    ], "iterations");
    const req = runs[0].request;
    assertEquals(
      [req.promptWeighting, req.sampler, req.guidanceScale, req.negativePrompt, req.previewFormat],
      ["a1111", "euler_a", 5, "blurry", "png"],
      "engine request",
    );
    assert((req.previewEvery ?? 0) > 0, "previews requested");

    // Image i is the image a single request with seed + i gives.
    const single = await txt2img(s, {
      prompt: "a (lighthouse:1.2) at dusk",
      negative_prompt: "blurry",
      seed: 1237,
      steps: 4,
      width: 64,
      height: 48,
      cfg_scale: 5,
      sampler_name: "Euler a",
    });
    assertEquals(single.json.images.length, 1, "single image");
    assertEquals(pixels(single.json.images[0]), pixels(json.images[3]), "image 3 = seed 1237 alone");
    assert(
      pixels(json.images[2]).some((v, i) => v !== pixels(json.images[3])[i]),
      "images of different seeds differ",
    );
    assertEquals(s.fake!.runs.at(-1)!.request.numImages, undefined, "batch_size 1: one image, no batch");
  });
});

Deno.test("txt2img: seed -1 draws one; left-out fields are the model's defaults, reported in info and parameters", async () => {
  const engine = fakeEngineFactory({
    stepDelayMs: 1,
    defaults: { width: 32, height: 40, steps: 3, guidanceScale: 2, source: "test" },
  });
  await withServer({ engine }, async (s) => {
    const { status, json } = await txt2img(s, { prompt: "a fox", seed: -1, batch_size: 2 });
    assertEquals(status, 200, JSON.stringify(json));
    const info = JSON.parse(json.info);
    const run = s.fake!.runs[0].request;
    assert(Number.isInteger(info.seed) && info.seed >= 0, `seed ${info.seed}`);
    assertEquals(run.seed, info.seed, "the drawn seed ran");
    assertEquals(info.all_seeds, [info.seed, info.seed + 1], "consecutive");
    assertEquals(json.parameters.seed, -1, "parameters echo the request");
    assertEquals([run.width, run.height, run.steps, run.guidanceScale], [32, 40, 3, 2], "model defaults ran");
    assertEquals([info.width, info.height, info.steps, info.cfg_scale], [32, 40, 3, 2], "info says them");
    const p = json.parameters;
    assertEquals([p.width, p.height, p.steps, p.cfg_scale], [32, 40, 3, 2], "parameters say them");
    // The fake's default sampler is pndm: A1111 calls it PLMS.
    assertEquals([info.sampler_name, p.sampler_name], ["PLMS", "PLMS"], "sampler");
    const png = decodeImage(Uint8Array.fromBase64(json.images[1]));
    assertEquals([png.width, png.height], [32, 40], "size");
  });
});

Deno.test("txt2img: unknown and unsupported fields are ignored with warnings in info; A1111's loose types pass", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { status, json } = await txt2img(s, {
      prompt: "x",
      width: 32,
      height: 32,
      enable_hr: true,
      hr_scale: 3, // does nothing without enable_hr
      restore_faces: false, // the default behaviour
      not_an_a1111_field: 1,
      styles: [],
      override_settings: { CLIP_stop_at_last_layers: 2, sd_model_checkpoint: "fake-sd-test-double" },
      // pydantic 1 coerces these.
      steps: "3",
      cfg_scale: "2.5",
      seed: 7.9,
      send_images: "yes",
      sampler_index: "DDIM",
    });
    assertEquals(status, 200, JSON.stringify(json));
    const warnings = JSON.parse(json.info).warnings;
    assertEquals(
      [...warnings].sort(),
      [
        "ignored field: enable_hr",
        "ignored field: not_an_a1111_field",
        "ignored field: override_settings.CLIP_stop_at_last_layers",
      ],
      "warnings",
    );
    const run = s.fake!.runs[0].request;
    assertEquals(
      [run.steps, run.guidanceScale, run.seed, run.sampler],
      [3, 2.5, 7, "ddim"],
      "coerced values ran",
    );
    assertEquals(json.images.length, 1, "send_images yes");
    const none = await txt2img(s, { prompt: "x", width: 32, height: 32, steps: 1, send_images: false });
    assertEquals([none.status, none.json.images], [200, []], "send_images false: no images");
    assertEquals(JSON.parse(none.json.info).infotexts.length, 1, "but the image ran");
  });
});

Deno.test("422s in FastAPI's shape: every problem listed with loc, msg and type; nothing runs", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const cases: [unknown, Json[]][] = [
      [{ steps: "abc" }, [{
        loc: ["body", "steps"],
        msg: "value is not a valid integer",
        type: "type_error.integer",
      }]],
      [{ steps: 0 }, [{
        loc: ["body", "steps"],
        msg: "ensure this value is greater than or equal to 1",
        type: "value_error.number.not_ge",
        ctx: { limit_value: 1 },
      }]],
      [{ steps: 151, width: "wide" }, [
        { loc: ["body", "width"], msg: "value is not a valid integer", type: "type_error.integer" },
        {
          loc: ["body", "steps"],
          msg: "ensure this value is less than or equal to 150",
          type: "value_error.number.not_le",
          ctx: { limit_value: 150 },
        },
      ]],
      [{ cfg_scale: "high" }, [{
        loc: ["body", "cfg_scale"],
        msg: "value is not a valid float",
        type: "type_error.float",
      }]],
      [{ send_images: "maybe" }, [{
        loc: ["body", "send_images"],
        msg: "value could not be parsed to a boolean",
        type: "type_error.bool",
      }]],
      [{ prompt: ["a"] }, [{ loc: ["body", "prompt"], msg: "str type expected", type: "type_error.str" }]],
      [{ styles: "none" }, [{
        loc: ["body", "styles"],
        msg: "value is not a valid list",
        type: "type_error.list",
      }]],
      [{ width: 65 }, [{ loc: ["body", "width"], msg: "must be a multiple of 8", type: "value_error" }]],
      [{ batch_size: 5 }, [{
        loc: ["body", "batch_size"],
        msg: "ensure this value is less than or equal to 4",
        type: "value_error.number.not_le",
        ctx: { limit_value: 4 },
      }]],
    ];
    for (const [body, detail] of cases) {
      const { status, json } = await txt2img(s, body);
      assertEquals([status, json], [422, { detail }], JSON.stringify(body));
    }
    const locOf = async (body: unknown, path = "txt2img") => {
      const res = await postJson(`${s.url}/sdapi/v1/${path}`, body);
      const json = await res.json();
      assertEquals(res.status, 422, `${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(json)}`);
      for (const d of json.detail) {
        assert(typeof d.msg === "string" && typeof d.type === "string", "msg, type");
      }
      return json.detail.map((d: Json) => d.loc.join("."));
    };
    assertEquals(await locOf({ sampler_name: "Nope" }), ["body.sampler_name"], "unknown sampler");
    assertEquals(await locOf({ sampler_index: "Nope" }), ["body.sampler_index"], "unknown sampler_index");
    assertEquals(
      await locOf({ sampler_name: "Euler", scheduler: "Karras" }),
      ["body.scheduler"],
      "Karras only for DPM++ 2M",
    );
    assertEquals(
      await locOf({ sampler_name: "DDIM", scheduler: "Exponential" }),
      ["body.scheduler"],
      "unknown schedule",
    );
    assertEquals(await locOf({ n_iter: 100 }), ["body.n_iter"], "n_iter beyond the queue");
    assertEquals(await locOf({ prompt: "a\u0000b" }), ["body.prompt"], "NUL");
    assertEquals(await locOf({ prompt: "<lora:missing:1>" }), ["body.prompt"], "unknown LoRA tag");
    assertEquals(
      await locOf({ override_settings: { sd_model_checkpoint: "other.safetensors" } }),
      ["body.override_settings.sd_model_checkpoint"],
      "another checkpoint",
    );
    assertEquals(await locOf([1, 2]), ["body"], "not an object");
    assertEquals(await locOf("{"), ["body.0"], "not JSON");
    const notJson = await (await postJson(`${s.url}/sdapi/v1/txt2img`, "{")).json();
    assertEquals(notJson.detail[0].type, "value_error.jsondecode", "JSON decode type");
    assertEquals(s.fake!.runs.length, 0, "nothing ran");

    // What only the engine can tell (here: the fake refuses a prompt) is a 422 naming the field too.
    const refused = await txt2img(s, { prompt: "[fake:request-error]", width: 32, height: 32, steps: 1 });
    assertEquals(refused.status, 422, "engine refusal");
    assertEquals(refused.json.detail[0].loc, ["body", "prompt"], "engine refusal's field");
    // An engine crash keeps A1111's exception shape.
    const crashed = await txt2img(s, { prompt: "[fake:crash]", width: 32, height: 32, steps: 2 });
    assertEquals(crashed.status, 500, "crash");
    assertEquals(
      Object.keys(crashed.json).sort(),
      ["body", "detail", "error", "errors"],
      "A1111's error keys",
    );
  });
});

Deno.test("samplers: A1111's list, and each name (old, new, alias, ours) with its scheduler runs ours", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const list = await (await fetch(`${s.url}/sdapi/v1/samplers`)).json();
    const names = list.map((x: Json) => x.name);
    for (const n of ["Euler a", "Euler", "DPM++ 2M", "DDIM", "PLMS", "Heun", "UniPC", "LCM", "DDPM"]) {
      assert(names.includes(n), `${n} listed`);
    }
    for (const item of list) {
      assert(Array.isArray(item.aliases) && typeof item.options === "object", "SamplerItem");
    }
    assertEquals(
      list.find((x: Json) => x.name === "DPM++ 2M").options,
      { scheduler: "karras" },
      "DPM++ 2M's default",
    );
    const schedulers = (await (await fetch(`${s.url}/sdapi/v1/schedulers`)).json()).map((x: Json) => x.label);
    assertEquals(schedulers, ["Automatic", "Uniform", "Karras", "Normal"], "schedulers");

    const cases: [Record<string, string>, string][] = [
      [{ sampler_name: "Euler a" }, "euler_a"],
      [{ sampler_name: "Euler" }, "euler"],
      [{ sampler_name: "DPM++ 2M" }, "dpmpp_2m_karras"],
      [{ sampler_name: "DPM++ 2M", scheduler: "Karras" }, "dpmpp_2m_karras"],
      [{ sampler_name: "DPM++ 2M", scheduler: "Uniform" }, "dpmpp_2m"],
      [{ sampler_name: "DPM++ 2M Karras" }, "dpmpp_2m_karras"],
      [{ sampler_name: "DDIM" }, "ddim"],
      [{ sampler_name: "PLMS" }, "pndm"],
      [{ sampler_name: "Heun", scheduler: "Automatic" }, "heun"],
      [{ sampler_name: "UniPC" }, "unipc"],
      [{ sampler_name: "LCM" }, "lcm"],
      [{ sampler_name: "DDPM" }, "ddpm"],
      [{ sampler_name: "k_euler_a" }, "euler_a"],
      [{ sampler_name: "euler a" }, "euler_a"],
      [{ sampler_name: "dpmpp_2m" }, "dpmpp_2m"],
      [{ sampler_index: "Heun" }, "heun"],
    ];
    for (const [fields, want] of cases) {
      const { status, json } = await txt2img(s, { prompt: "x", width: 32, height: 32, steps: 1, ...fields });
      assertEquals(status, 200, `${JSON.stringify(fields)}: ${JSON.stringify(json)}`);
      assertEquals(s.fake!.runs.at(-1)!.request.sampler, want, JSON.stringify(fields));
    }
  });
});
