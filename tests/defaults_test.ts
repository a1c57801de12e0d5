// Per-model defaults read from the folder (src/pipeline/defaults.ts), the server's resolution of a request
// draft (src/server/defaults.ts) and the serve flags that choose the model (--no-model, SD_MODEL, the default
// model's folder).

import { readModelDefaults, turboName } from "../src/pipeline/defaults.ts";
import { effectiveDefaults, resolveRequest } from "../src/server/defaults.ts";
import { DEFAULT_LIMITS } from "../src/server/schema_fields.ts";
import { parseServeConfig } from "../src/server/config.ts";
import { chooseDefaultModel, downloadAdvice } from "../src/weights/download/index.ts";
import { assertEquals } from "./util.ts";

const tiny = new URL("./fixtures/tiny_sd", import.meta.url).pathname;

async function rejects(fn: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (pattern.test((e as Error).message)) return;
    throw new Error(`wrong error: ${(e as Error).message}`);
  }
  throw new Error(`no error (wanted ${pattern})`);
}

const facts = { sampleSize: 16, vaeLevels: 4, defaultSampler: "pndm" as const };

Deno.test("model defaults: diffusers' (50 steps, 7.5, sample_size × VAE scale), turbo by name, sd-webgpu.json", async () => {
  const d = await readModelDefaults(tiny, facts);
  assertEquals(
    [d.width, d.height, d.steps, d.guidanceScale, d.sampler],
    [128, 128, 50, 7.5, "pndm"],
    "tiny_sd",
  );
  const sd2 = await readModelDefaults(tiny, { ...facts, sampleSize: 96 });
  assertEquals([sd2.width, sd2.steps], [768, 50], "SD 2.x 768-v");

  const dir = await Deno.makeTempDir();
  try {
    // The folder name, or the repo weights recorded in its lock, says turbo.
    await Deno.mkdir(`${dir}/sd-turbo`);
    const t = await readModelDefaults(`${dir}/sd-turbo`, { ...facts, sampleSize: 96 });
    assertEquals([t.width, t.height, t.steps, t.guidanceScale, t.sampler], [512, 512, 1, 0, "pndm"], "turbo");
    await Deno.mkdir(`${dir}/renamed`);
    assertEquals(await turboName(`${dir}/renamed`), undefined, "no turbo name");
    await Deno.writeTextFile(
      `${dir}/renamed/weights.lock.json`,
      JSON.stringify({ repo: "stabilityai/sd-turbo" }),
    );
    assertEquals(
      await turboName(`${dir}/renamed`),
      "weights.lock.json: stabilityai/sd-turbo",
      "from the lock",
    );

    // sd-webgpu.json overrides, field by field; mistakes name the file and the field.
    await Deno.writeTextFile(
      `${dir}/renamed/sd-webgpu.json`,
      JSON.stringify({ steps: 4, guidance_scale: 1.5, sampler: "euler_a", size: 640, height: 512 }),
    );
    const f = await readModelDefaults(`${dir}/renamed`, facts);
    assertEquals(
      [f.width, f.height, f.steps, f.guidanceScale, f.sampler],
      [640, 512, 4, 1.5, "euler_a"],
      "file",
    );
    for (
      const [body, pattern] of [
        [{ steps: 0 }, /sd-webgpu\.json: steps must be an integer ≥ 1/],
        [{ width: 100 }, /width must be an integer ≥ 8, a multiple of 8/],
        [{ sampler: "x" }, /sampler must be one of/],
        [{ cfg: 2 }, /unknown field "cfg"/],
      ] as const
    ) {
      await Deno.writeTextFile(`${dir}/renamed/sd-webgpu.json`, JSON.stringify(body));
      await rejects(() => readModelDefaults(`${dir}/renamed`, facts), pattern);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("request drafts: model defaults under explicit server ones; previews spread over the steps", () => {
  const model = { width: 768, height: 768, steps: 50, guidanceScale: 7.5, source: "m" };
  const limits = { ...DEFAULT_LIMITS, maxSize: 512, maxSteps: 40 };
  const d = effectiveDefaults(model, limits);
  assertEquals([d.width, d.height, d.steps, d.guidanceScale], [512, 512, 40, 7.5], "within the limits");
  const o = effectiveDefaults(model, { ...limits, defaultSize: 256, defaultSteps: 10, defaultGuidance: 2 });
  assertEquals([o.width, o.steps, o.guidanceScale], [256, 10, 2], "explicit server defaults win");
  const r = resolveRequest({ prompt: "x", autoPreviews: "quarter" }, o, limits);
  assertEquals(
    [r.width, r.height, r.steps, r.guidanceScale, r.previewEvery],
    [256, 256, 10, 2, 3],
    "quarter",
  );
  const q = resolveRequest({ prompt: "x", stepsFactor: 1.5, autoPreviews: 2, height: 64 }, o, limits);
  assertEquals([q.steps, q.previewEvery, q.height], [15, 5, 64], "OpenAI quality and partial images");
  const i = resolveRequest(
    { prompt: "x", steps: 20, autoPreviews: 1, initImage: new Uint8Array(1), strength: 0.5 },
    o,
    limits,
  );
  assertEquals(i.previewEvery, 5, "img2img: spread over the 10 steps that run");
  assertEquals(resolveRequest({ prompt: "x" }, o, limits).previewEvery, 0, "no previews unless asked");
});

Deno.test("serve config: --no-model, SD_MODEL, --weights-dir; default size and steps only when given", () => {
  const plain = parseServeConfig([], {});
  assertEquals(
    [plain.model, plain.noModel, plain.weightsDir, plain.options.defaultSize, plain.options.defaultSteps],
    [undefined, false, "weights", undefined, undefined],
    "defaults",
  );
  assertEquals(parseServeConfig([], { SD_MODEL: "m" }).model, "m", "SD_MODEL");
  assertEquals(parseServeConfig(["--model", "f"], { SD_MODEL: "m" }).model, "f", "the flag wins");
  const none = parseServeConfig(["--no-model"], { SD_MODEL: "m" });
  assertEquals([none.model, none.noModel], [undefined, true], "--no-model");
  const given = parseServeConfig(["--default-size", "640", "--weights-dir", "w", "--batch-memory-mb", "64"], {
    DEFAULT_STEPS: "4",
  });
  assertEquals(
    [given.options.defaultSize, given.options.defaultSteps, given.weightsDir, given.batchBudgetBytes],
    [640, 4, "w", 64 * 2 ** 20],
    "given",
  );
  let message = "";
  try {
    parseServeConfig(["--no-model", "--model", "x"], {});
  } catch (e) {
    message = (e as Error).message;
  }
  assertEquals(message, "--no-model and --model exclude each other", "conflict");
});

Deno.test("default model: weights/sd-turbo as is, through the downloader when it has a lock or is absent", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(await chooseDefaultModel(dir), {
      kind: "download",
      model: "sd-turbo",
      dir,
      path: `${dir}/sd-turbo`,
    }, "absent");
    await Deno.mkdir(`${dir}/sd-turbo`);
    assertEquals(
      await chooseDefaultModel(`${dir}/`),
      { kind: "path", path: `${dir}/sd-turbo` },
      "copied by hand",
    );
    await Deno.writeTextFile(`${dir}/sd-turbo/weights.lock.json`, "{}");
    assertEquals((await chooseDefaultModel(dir)).kind, "download", "a lock: resume or check");
    const advice = downloadAdvice({ model: "sd-turbo", dir: "weights" }, "offline");
    if (!advice.includes("`deno task weights --model sd-turbo`") || !advice.includes("--model DIR")) {
      throw new Error(advice);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
