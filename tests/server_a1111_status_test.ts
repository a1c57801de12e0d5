// A1111's progress and control endpoints against the fake engine: GET /sdapi/v1/progress (ProgressResponse
// {progress, eta_relative, state, current_image, textinfo}) while a request runs, POST /sdapi/v1/skip (the
// running iteration ends, the next goes on) and /sdapi/v1/interrupt (the request answers with what finished);
// the model, options and LoRA lists; auth (bearer, or HTTP Basic with the token as password); 404, 405, 429.

import { LoraLibrary } from "../src/models/lora/library.ts";
import { decodeImage } from "../src/image/codec.ts";
import { fakeEngineFactory, postJson, type TestServer, waitFor, withServer } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE = fakeEngineFactory({ stepDelayMs: 1 });
const SLOW_ENGINE = fakeEngineFactory({ stepDelayMs: 60 });

// deno-lint-ignore no-explicit-any
type Json = any;

async function progress(s: TestServer, query = ""): Promise<Json> {
  return await (await fetch(`${s.url}/sdapi/v1/progress${query}`)).json();
}

/** Polls progress until `cond` holds. */
async function progressWhen(s: TestServer, cond: (p: Json) => boolean, what: string): Promise<Json> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const p = await progress(s);
    if (cond(p)) return p;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(
    `timed out waiting for ${what}: ${JSON.stringify(await progress(s, "?skip_current_image=true"))}`,
  );
}

Deno.test("progress while a request runs; skip ends an iteration, interrupt the request, which answers what finished", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const idle = await progress(s);
    assertEquals(idle.progress, 0, "idle progress");
    assertEquals(idle.eta_relative, 0, "idle eta");
    assertEquals(idle.current_image, null, "idle image");
    assertEquals(
      Object.keys(idle.state).sort(),
      [
        "interrupted",
        "job",
        "job_count",
        "job_no",
        "job_timestamp",
        "sampling_step",
        "sampling_steps",
        "skipped",
        "stopping_generation",
      ],
      "state keys",
    );
    assertEquals([idle.state.job_count, idle.state.job], [0, ""], "idle state");

    const answer = postJson(`${s.url}/sdapi/v1/txt2img`, {
      prompt: "a slow lighthouse",
      seed: 50,
      steps: 10,
      width: 32,
      height: 32,
      n_iter: 3,
    });
    // Iteration 0 running with a preview.
    const p = await progressWhen(
      s,
      (p) => p.state.sampling_step >= 3 && p.current_image,
      "step 3 with a preview",
    );
    assertEquals([p.state.job, p.state.job_count, p.state.job_no, p.state.sampling_steps], [
      "scripts_txt2img",
      3,
      0,
      10,
    ], "state");
    assert(p.progress > 0.01 && p.progress < 0.34, `progress ${p.progress}`);
    assert(p.eta_relative > 0, `eta ${p.eta_relative}`);
    assert(/^task\(txt2img-[A-Z0-9]{7}\)$/.test(p.current_task), `task ${p.current_task}`);
    assert(/^\d{14}$/.test(p.state.job_timestamp), `timestamp ${p.state.job_timestamp}`);
    const preview = decodeImage(Uint8Array.fromBase64(p.current_image));
    assertEquals([preview.mime, preview.width], ["image/png", 32], "current_image is a PNG preview");
    assertEquals((await progress(s, "?skip_current_image=true")).current_image, null, "skip_current_image");
    const bad = await fetch(`${s.url}/sdapi/v1/progress?skip_current_image=perhaps`);
    assertEquals(
      [bad.status, (await bad.json()).detail[0].loc],
      [422, ["query", "skip_current_image"]],
      "bad query",
    );

    // Iteration 1: skipped after a step; iteration 2 starts.
    await progressWhen(s, (p) => p.state.job_no === 1 && p.state.sampling_step >= 1, "iteration 1");
    const skip = await fetch(`${s.url}/sdapi/v1/skip`, { method: "POST" });
    assertEquals([skip.status, await skip.json()], [200, null], "skip answers null");
    const third = await progressWhen(
      s,
      (p) => p.state.job_no === 2 && p.state.sampling_step >= 1,
      "iteration 2",
    );
    assert(third.progress > 0.67, `progress ${third.progress}`);
    // Interrupt: iteration 2 stops.
    const interrupt = await fetch(`${s.url}/sdapi/v1/interrupt`, { method: "POST" });
    assertEquals([interrupt.status, await interrupt.json()], [200, {}], "interrupt answers {}");
    const res = await answer;
    const json = await res.json();
    assertEquals(res.status, 200, JSON.stringify(json));
    assertEquals(json.images.length, 1, "the finished iteration's image");
    const info = JSON.parse(json.info);
    assertEquals([info.interrupted, info.skipped_iterations], [true, 1], "interrupted, one skipped");
    assertEquals(info.all_seeds, [50, 51, 52], "all seeds planned");
    assertEquals(info.infotexts.length, 1, "infotexts of what was made");
    assert(info.infotexts[0].includes("Seed: 50,"), "iteration 0's");
    const runs = s.fake!.runs;
    assertEquals(runs.map((r) => r.outcome), ["done", "aborted", "aborted"], "runs");
    assert(runs[1].stepsDone < 10 && runs[2].stepsDone < 10, "skipped and interrupted runs stopped early");
    assertEquals((await progress(s)).state.job_count, 0, "idle again");
  });
});

Deno.test("interrupt of a waiting request cancels it; skip and interrupt with nothing running do nothing", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    assertEquals(
      await (await fetch(`${s.url}/sdapi/v1/interrupt`, { method: "POST" })).json(),
      {},
      "idle interrupt",
    );
    assertEquals(await (await fetch(`${s.url}/sdapi/v1/skip`, { method: "POST" })).json(), null, "idle skip");
    // A native job holds the GPU; the A1111 request waits behind it.
    const native = postJson(`${s.url}/v1/generate`, { prompt: "native", width: 32, height: 32, steps: 6 });
    await waitFor(() => s.fake!.runs.length === 1, 5_000, "native job");
    const a1111 = postJson(`${s.url}/sdapi/v1/txt2img`, {
      prompt: "queued",
      width: 32,
      height: 32,
      steps: 2,
    });
    const waiting = await progressWhen(s, (p) => p.state.job_count === 1, "the waiting task");
    assertEquals([waiting.progress, waiting.textinfo], [0, "Waiting in queue (position 1)"], "waiting");
    await fetch(`${s.url}/sdapi/v1/interrupt`, { method: "POST" });
    const json = await (await a1111).json();
    assertEquals([json.images, JSON.parse(json.info).interrupted], [[], true], "interrupted before it ran");
    assertEquals((await native).status, 200, "the native job went on");
    assertEquals(s.fake!.runs.length, 1, "the A1111 job never ran");
  });
});

Deno.test("sd-models, options (sd_model_checkpoint), loras; 404 and 405 in FastAPI's shape", async () => {
  const loraDir = new URL("./fixtures/lora", import.meta.url).pathname;
  await withServer({ engine: ENGINE, options: { loras: new LoraLibrary(loraDir) } }, async (s) => {
    const models = await (await fetch(`${s.url}/sdapi/v1/sd-models`)).json();
    assertEquals(models, [{
      title: "fake-sd-test-double",
      model_name: "fake-sd-test-double",
      hash: null,
      sha256: null,
      filename: "fake-sd-test-double",
      config: null,
    }], "sd-models");
    const options = await (await fetch(`${s.url}/sdapi/v1/options`)).json();
    assertEquals(options.sd_model_checkpoint, "fake-sd-test-double", "options");
    const post = (body: unknown) => postJson(`${s.url}/sdapi/v1/options`, body);
    const same = await post({
      sd_model_checkpoint: "fake-sd-test-double [0123abcd45]",
      samples_format: "jpg",
    });
    assertEquals([same.status, await same.json()], [200, null], "the loaded checkpoint");
    const other = await post({ sd_model_checkpoint: "v1-5-pruned-emaonly.safetensors" });
    const detail = (await other.json()).detail;
    assertEquals([other.status, detail[0].loc], [422, ["body", "sd_model_checkpoint"]], "another checkpoint");
    assert(detail[0].msg.includes("cannot switch"), detail[0].msg);
    assertEquals((await post([1])).status, 422, "not a dict");

    const loras = await (await fetch(`${s.url}/sdapi/v1/loras`)).json();
    const names = loras.map((l: Json) => l.name);
    assert(names.includes("style_kohya") && names.includes("style_diffusers"), `loras ${names}`);
    for (const l of loras) {
      assertEquals(Object.keys(l).sort(), ["alias", "metadata", "name", "path"], "LoRA keys");
      assertEquals(l.alias, l.name, "alias");
      assert(l.path.startsWith("/") && l.path.endsWith(`/${l.name}.safetensors`), `path ${l.path}`);
      assertEquals(typeof l.metadata, "object", "metadata");
    }
    const tagged = await postJson(`${s.url}/sdapi/v1/txt2img`, {
      prompt: "a fox <lora:style_kohya:0.5>",
      width: 32,
      height: 32,
      steps: 1,
    });
    assertEquals(tagged.status, 200, "a LoRA tag");
    assertEquals(
      s.fake!.runs.at(-1)!.request.prompt,
      "a fox <lora:style_kohya:0.5>",
      "tags reach the engine",
    );
    const disabled = await postJson(`${s.url}/sdapi/v1/txt2img`, {
      prompt: "a fox <lora:style_kohya:0.5>",
      disable_extra_networks: true,
      width: 32,
      height: 32,
      steps: 1,
    });
    assertEquals(disabled.status, 200, "disable_extra_networks");
    assertEquals(s.fake!.runs.at(-1)!.request.prompt, "a fox ", "tags removed");

    const wrongMethod = await fetch(`${s.url}/sdapi/v1/txt2img`);
    assertEquals(
      [wrongMethod.status, await wrongMethod.json()],
      [405, { detail: "Method Not Allowed" }],
      "405",
    );
    const missing = await fetch(`${s.url}/sdapi/v1/extra-single-image`, { method: "POST" });
    assertEquals([missing.status, await missing.json()], [404, { detail: "Not Found" }], "404");
  });
});

Deno.test("auth: with a token /sdapi takes it as a bearer token or as HTTP Basic's password", async () => {
  await withServer({ engine: ENGINE, options: { token: "s3cret" } }, async (s) => {
    const get = (headers: Record<string, string> = {}) => fetch(`${s.url}/sdapi/v1/samplers`, { headers });
    const none = await get();
    assertEquals([none.status, await none.json()], [401, { detail: "Not authenticated" }], "no credentials");
    assert(none.headers.get("www-authenticate")?.includes("Basic"), "Basic challenge");
    const wrong = await get({ authorization: `Basic ${btoa("user:nope")}` });
    assertEquals(
      [wrong.status, await wrong.json()],
      [401, { detail: "Incorrect username or password" }],
      "wrong",
    );
    const basic = await get({ authorization: `Basic ${btoa("anyone:s3cret")}` });
    assertEquals(basic.status, 200, "basic");
    await basic.body?.cancel();
    const bearer = await get({ authorization: "Bearer s3cret" });
    assertEquals(bearer.status, 200, "bearer");
    await bearer.body?.cancel();
    const post = await postJson(`${s.url}/sdapi/v1/txt2img`, { prompt: "x" });
    assertEquals(post.status, 401, "txt2img too");
    await post.body?.cancel();
    // The native API keeps taking bearer tokens only.
    const native = await fetch(`${s.url}/v1/models`, {
      headers: { authorization: `Basic ${btoa("a:s3cret")}` },
    });
    assertEquals(native.status, 401, "native: no Basic");
    await native.body?.cancel();
  });
});

Deno.test("a full queue answers 429 in A1111's error shape, with Retry-After", async () => {
  await withServer({ engine: SLOW_ENGINE, options: { maxQueued: 1 } }, async (s) => {
    const native = postJson(`${s.url}/v1/generate`, { prompt: "busy", width: 32, height: 32, steps: 4 });
    await waitFor(() => s.fake!.runs.length === 1, 5_000, "native job");
    const res = await postJson(`${s.url}/sdapi/v1/txt2img`, {
      prompt: "x",
      width: 32,
      height: 32,
      n_iter: 2,
    });
    const json = await res.json();
    assertEquals([res.status, json.error], [429, "QueueFullError"], JSON.stringify(json));
    assert(res.headers.get("retry-after"), "Retry-After");
    assertEquals((await native).status, 200, "the running job");
  });
});
