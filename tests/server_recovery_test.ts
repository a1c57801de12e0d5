// Device loss on the real server: a test hook (SD_WEBGPU_TEST_HOOKS=1, POST /debug/lose-device) destroys the
// engine worker's GPU device in the middle of a job. The job ends with a device_lost error event, /healthz
// reports recovering, the worker is replaced (fresh device, weights reloaded, warmed), and the next job
// succeeds without a restart. The server runs in its own process (`main.ts serve`), as in production.

import { decodeImage } from "../src/image/codec.ts";
import { collectSse, postJson, readSse, spawnTinyModelServer, waitReady } from "./server_harness.ts";
import { assert } from "./util.ts";

Deno.test("a lost GPU device fails the running job, the server recovers, and the next job succeeds", async () => {
  const server = await spawnTinyModelServer(["--default-size", "64", "--max-steps", "1000"], {
    SD_WEBGPU_TEST_HOOKS: "1",
  });
  try {
    await waitReady(server.url, 120_000);
    const res = await postJson(
      `${server.url}/v1/generate`,
      { prompt: "a lighthouse", width: 64, height: 64, steps: 1000, seed: 1 },
      { accept: "text/event-stream" },
    );
    const events: { event: string; json: Record<string, unknown> }[] = [];
    for await (const ev of readSse(res.body!)) {
      const json = JSON.parse(ev.data);
      events.push({ event: ev.event, json });
      if (ev.event === "progress" && json.step === 2) {
        const lose = await fetch(`${server.url}/debug/lose-device`, { method: "POST" });
        assert(lose.status === 202, `lose-device answered ${lose.status}`);
        await lose.body?.cancel();
      }
    }
    const last = events.at(-1)!;
    assert(last.event === "error", `the job ended with ${last.event}, not error`);
    assert(last.json.code === "device_lost", `error code ${last.json.code}: ${last.json.message}`);
    assert(/device was lost/.test(String(last.json.message)), `message: ${last.json.message}`);
    const steps = events.filter((e) => e.event === "progress").length;
    assert(steps >= 2 && steps < 1000, `${steps} steps ran before the loss`);

    // Recovery has started by the time the job's error is out.
    const during = await (await fetch(`${server.url}/healthz`)).json();
    assert(during.status === "recovering", `healthz after the loss: ${JSON.stringify(during)}`);
    assert(/device was lost/.test(during.reason), `reason: ${during.reason}`);
    const ready = await waitReady(server.url, 120_000);
    assert(ready.status === "ready" && ready.model === "tiny_sd", `healthz ${JSON.stringify(ready)}`);

    const next = await postJson(`${server.url}/v1/generate`, {
      prompt: "a lighthouse",
      width: 64,
      height: 64,
      steps: 2,
      seed: 1,
    }, { accept: "text/event-stream" });
    const done = (await collectSse(next)).at(-1)!;
    assert(done.event === "done", `next job: ${done.event} ${JSON.stringify(done.json)}`);
    const img = decodeImage(Uint8Array.fromBase64(done.json.image));
    assert(img.width === 64 && img.height === 64, `image ${img.width}×${img.height}`);
  } finally {
    const status = await server.stop("SIGTERM");
    const stderr = await server.stderr();
    assert(status.code === 0, `server exited ${status.code}: ${stderr}`);
    assert(/restarting the engine/.test(stderr), `no recovery logged: ${stderr}`);
  }
});
