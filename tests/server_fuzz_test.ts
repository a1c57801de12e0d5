// Fuzzing the HTTP surface: well over 1000 malformed or hostile requests over loopback (random JSON, wrong
// types, huge and negative numbers, odd unicode, oversized and truncated bodies, junk query strings and
// paths, raw malformed HTTP, SSE clients that hang up mid-stream). Then: no response was a 5xx, the server
// process is still alive, and a normal generation still succeeds. Seeded, so a failure reproduces;
// bounded in count and in time.

import { decode as decodePng } from "fast-png";
import {
  type FuzzShape,
  HOSTILE_KINDS,
  hostileRequest,
  type Probe,
  rawProbe,
  rng,
  sendHostile,
} from "./fuzz_cases.ts";
import { collectSse, postJson, spawnFakeServer, waitReady } from "./server_harness.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261126);
const REQUESTS = 1200;
const CONCURRENCY = 12;
const TIME_BUDGET_MS = 60_000;

/** Sizes for the test double: tiny images, many steps for the SSE clients that hang up. */
const SHAPE: FuzzShape = {
  overLimit: 2 ** 20 + 1,
  native: { prompt: "a cat", width: 32, height: 32, steps: 2 },
  openai: { prompt: "a cat", size: "32x32", steps: 2, n: 1 },
  sseHangup: { prompt: "hang up", width: 32, height: 32, steps: 20, preview_every: 1 },
};

Deno.test("fuzz: 1000+ hostile requests get no 5xx, the process survives, and generation still works", async () => {
  const server = await spawnFakeServer(
    ["--max-size", "128", "--max-steps", "20", "--queue-length", "4", "--max-body-mb", "1"],
    { FAKE_STEP_DELAY_MS: "1" },
  );
  try {
    await waitReady(server.url);
    const r = rng(SEED);
    const results: Probe[] = [];
    const t0 = performance.now();
    let issued = 0;
    const worker = async () => {
      while (issued < REQUESTS && performance.now() - t0 < TIME_BUDGET_MS) {
        issued++;
        if (r.next() < 0.03) {
          await rawProbe(server.url, r);
          results.push({ kind: "raw", status: 0 });
        } else {
          results.push(await sendHostile(server.url, hostileRequest(r.pick(HOSTILE_KINDS), r, SHAPE)));
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = performance.now() - t0;

    const byStatus = new Map<string, number>();
    for (const p of results) byStatus.set(String(p.status), (byStatus.get(String(p.status)) ?? 0) + 1);
    const summary = [...byStatus.entries()].sort().map(([s, n]) => `${s}: ${n}`).join(", ");
    console.log(`${results.length} requests in ${(elapsed / 1000).toFixed(1)} s (seed ${SEED}): ${summary}`);

    if (results.length < 1000) throw new Error(`only ${results.length} requests within the time budget`);
    const serverErrors = results.filter((p) => typeof p.status === "number" && p.status >= 500);
    if (serverErrors.length) {
      throw new Error(
        `5xx answers: ${JSON.stringify(serverErrors.slice(0, 10))}\n${await stderrSoFar(server)}`,
      );
    }
    const networkErrors = results.filter((p) => p.status === "network-error" && p.kind !== "oversized");
    if (networkErrors.length > results.length * 0.01) {
      throw new Error(`too many failed connections: ${JSON.stringify(networkErrors.slice(0, 10))}`);
    }

    // Still alive, the queue drains, and a normal generation works end to end.
    const status = await Promise.race([
      server.child.status,
      new Promise((r) => setTimeout(() => r("alive"), 50)),
    ]);
    if (status !== "alive") throw new Error(`server exited: ${JSON.stringify(status)}`);
    await waitReady(server.url);
    const res = await postJson(`${server.url}/v1/generate`, {
      prompt: "after the storm",
      width: 64,
      height: 32,
      steps: 4,
      preview_every: 1,
    }, { accept: "text/event-stream" });
    if (res.status !== 200) throw new Error(`generation after fuzzing: ${res.status} ${await res.text()}`);
    const events = await collectSse(res);
    const done = events.at(-1)!;
    if (done.event !== "done") throw new Error(`last event ${done.event}: ${JSON.stringify(done.json)}`);
    if (events.filter((e) => e.event === "preview").length !== 3) throw new Error("previews");
    const png = decodePng(Uint8Array.fromBase64(done.json.image));
    if (png.width !== 64 || png.height !== 32) throw new Error(`size ${png.width}x${png.height}`);
  } finally {
    await server.stop();
  }
  const stderr = await server.stderr();
  if (/Uncaught|panicked|unhandled/i.test(stderr)) {
    throw new Error(`server stderr:\n${stderr.slice(0, 4000)}`);
  }
});

async function stderrSoFar(server: { stop(): Promise<unknown>; stderr(): Promise<string> }): Promise<string> {
  await server.stop();
  return (await server.stderr()).slice(0, 4000);
}
