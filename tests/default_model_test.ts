// The default model: `serve` and `generate` without --model use <weights dir>/sd-turbo, downloading it first.
// A local fake of the Hugging Face Hub (HF_ENDPOINT) serves the tiny model's files as stabilityai/sd-turbo:
// the server answers /healthz with `downloading` {bytes, total_bytes} while the engine worker fetches, then
// loads and serves it with SD-Turbo's defaults (1 step, no guidance), and answers a batched native request.
// Without network, /healthz fails with what to run, and `generate` exits saying the same.

import { createHash } from "node:crypto";
import { DIFFUSERS_FP16_FILES, HUB_MODELS } from "../src/weights/download/index.ts";
import { decodeImage } from "../src/image/codec.ts";
import { postJson, type ServerProcess, spawnServer } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const root = new URL("..", import.meta.url).pathname;
const tiny = `${root}tests/fixtures/tiny_sd`;
const REPO = HUB_MODELS["sd-turbo"].repo;

/** The tiny model's files under the Hub's URL layout; the UNet weights answer after `delayMs`. */
async function fakeHub(delayMs: number): Promise<{ endpoint: string; close(): Promise<void> }> {
  const files = new Map<string, Uint8Array>();
  for (const path of DIFFUSERS_FP16_FILES) files.set(path, await Deno.readFile(`${tiny}/${path}`));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(new URL(req.url).pathname);
    const data = m && m[1] === REPO ? files.get(decodeURIComponent(m[3])) : undefined;
    if (!data) return new Response("not found", { status: 404 });
    const etag = createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
    const headers = { etag: `"${etag}"`, "x-repo-commit": "c0ffee", "content-length": String(data.length) };
    if (req.method === "HEAD") return new Response(null, { headers });
    if (m![3].startsWith("unet/")) await new Promise((r) => setTimeout(r, delayMs));
    return new Response(data.slice(), { headers });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}

/** A loopback port nothing listens on. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function health(s: ServerProcess): Promise<Record<string, unknown>> {
  return await (await fetch(`${s.url}/healthz`)).json();
}

Deno.test("serve without --model downloads SD-Turbo (downloading in /healthz), then serves it with its defaults", async () => {
  const hub = await fakeHub(1500);
  const dir = await Deno.makeTempDir();
  let server: ServerProcess | undefined;
  try {
    server = await spawnServer(
      ["main.ts", "serve", "--port", "0", "--weights-dir", dir, "--default-size", "64"],
      { HF_ENDPOINT: hub.endpoint },
    );
    const seen: Record<string, unknown>[] = [];
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const h = await health(server);
      seen.push(h);
      if (h.status === "ready" || h.status === "failed") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const last = seen.at(-1)!;
    assertEquals(last.status, "ready", `final state ${JSON.stringify(last)}`);
    const downloading = seen.find((h) => h.status === "downloading");
    assert(downloading, `never saw downloading: ${JSON.stringify(seen.map((h) => h.status))}`);
    assert(typeof downloading.bytes === "number" && typeof downloading.totalBytes === "number", "bytes");
    assert(Number(downloading.bytes) < Number(downloading.totalBytes), "seen before the end");
    assertEquals(last.model, "sd-turbo", "the default model");
    const lock = JSON.parse(await Deno.readTextFile(`${dir}/sd-turbo/weights.lock.json`));
    assertEquals(lock.repo, REPO, "lock");

    // SD-Turbo's defaults (recognised by its folder name), the size from --default-size.
    const models = await (await fetch(`${server.url}/v1/models`)).json();
    const d = models.data[0].defaults;
    assertEquals([d.steps, d.guidance_scale, d.width, d.height], [1, 0, 64, 64], "defaults");

    // A batched native request on the real (tiny) model: per-image seeds, image 1 is seed 4's image.
    const res = await postJson(`${server.url}/v1/generate`, {
      prompt: "a red fox",
      num_images: 2,
      seed: 3,
      seed_mode: "per-image",
    });
    const batch = await res.json();
    assertEquals(
      [res.status, batch.images?.length, batch.image, batch.seeds],
      [200, 2, undefined, [3, 4]],
      "batch",
    );
    for (const b64 of batch.images) {
      const img = decodeImage(Uint8Array.fromBase64(b64));
      assertEquals([img.width, img.height], [64, 64], "image size");
    }
    const single = await (await postJson(`${server.url}/v1/generate`, { prompt: "a red fox", seed: 4 }))
      .json();
    const a = decodeImage(Uint8Array.fromBase64(batch.images[1])).rgba;
    const b = decodeImage(Uint8Array.fromBase64(single.image)).rgba;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert(worst <= 2, `image 1 of the batch differs from seed 4's image by up to ${worst}`);
  } finally {
    await server?.stop();
    await hub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without network: /healthz fails saying what to run; generate exits saying the same", async () => {
  const dir = await Deno.makeTempDir();
  const env = { HF_ENDPOINT: `http://127.0.0.1:${closedPort()}` };
  let server: ServerProcess | undefined;
  try {
    server = await spawnServer(["main.ts", "serve", "--port", "0", "--weights-dir", dir], env);
    let h: Record<string, unknown> = {};
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && h.status !== "failed") {
      h = await health(server);
      await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(h.status, "failed", "status");
    assert(String(h.reason).includes("deno task weights --model sd-turbo"), `reason: ${h.reason}`);
    assert(String(h.reason).includes("--model DIR"), `reason: ${h.reason}`);
    const res = await postJson(`${server.url}/v1/generate`, { prompt: "x" });
    assertEquals(res.status, 503, "generation");
    await res.body?.cancel();
    await server.stop();
    assert((await server.stderr()).includes("deno task weights --model sd-turbo"), "the log says it too");

    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "generate",
        "--prompt",
        "x",
        "--out",
        `${dir}/x.png`,
        "--weights-dir",
        dir,
      ],
      cwd: root,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 1, `generate exit code (${stderr})`);
    assert(stderr.includes("deno task weights --model sd-turbo"), stderr);
  } finally {
    await server?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
