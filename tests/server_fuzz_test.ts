// Fuzzing the HTTP surface: well over 1000 malformed or hostile requests over loopback (random JSON, wrong
// types, huge and negative numbers, odd unicode, oversized and truncated bodies, junk query strings and
// paths, multipart image-edit forms with odd parts, raw malformed HTTP, SSE clients that hang up
// mid-stream). Then: no response was a 5xx, the server
// process is still alive, and a normal generation still succeeds. Seeded, so a failure reproduces;
// bounded in count and in time.

import { decode as decodePng } from "fast-png";
import { encodeImage } from "../src/image/codec.ts";
import { collectSse, postJson, readSse, spawnFakeServer, waitReady } from "./server_harness.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261126);
const REQUESTS = 1200;
const CONCURRENCY = 12;
const TIME_BUDGET_MS = 60_000;

/** mulberry32: a small seeded PRNG. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

type Rng = ReturnType<typeof rng>;

const ODD_STRINGS = [
  "",
  " ",
  "\u0000",
  "\ud800", // lone surrogate
  "\udfff\ud800",
  "\u202e\u202dRTL override",
  "zero\u200bwidth\u200d",
  "👩‍👩‍👧‍👦🏳️‍🌈",
  "\ufeffBOM",
  "e\u0301\u0301\u0301\u0301",
  "<script>alert(1)</script>",
  "'; DROP TABLE jobs; --",
  "${7*7}{{7*7}}",
  "../../etc/passwd",
  "%00%ff%",
  "\r\n\r\nevent: done\ndata: {}\n\n",
  "a".repeat(5000),
  "ǅǈǋ".repeat(400),
];

const ODD_NUMBERS = [
  0,
  -0,
  -1,
  1,
  7,
  8,
  9,
  63,
  64,
  65,
  2 ** 31,
  -(2 ** 31),
  2 ** 53,
  2 ** 64,
  1e308,
  -1e308,
  5e-324,
  0.5,
  -0.5,
  3.14159,
  Number.MAX_SAFE_INTEGER,
  Number.MIN_SAFE_INTEGER,
];

const FIELDS = [
  "prompt",
  "negative_prompt",
  "width",
  "height",
  "steps",
  "guidance_scale",
  "sampler",
  "seed",
  "preview_every",
  "preview",
  "output_format",
  "image",
  "mask",
  "strength",
  "n",
  "size",
  "response_format",
  "stream",
  "partial_images",
  "quality",
  "model",
  "__proto__",
  "constructor",
];

function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick(ODD_NUMBERS) * (r.next() < 0.2 ? -1 : 1);
    case 3:
      return r.pick(ODD_STRINGS);
    case 4:
      return r.int(2000) - 1000;
    case 5:
      return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    case 6:
      return Object.fromEntries(
        Array.from({ length: r.int(5) }, () => [r.pick(FIELDS), randomValue(r, depth + 1)]),
      );
    default:
      return `${r.pick(ODD_STRINGS)}${r.int(1e6)}`;
  }
}

/** A PNG as a Blob part (a copy: Blob takes ArrayBuffer-backed views only). */
function png(w: number, h: number): Blob {
  return new Blob([encodeImage(new Uint8Array(w * h * 3).fill(90), w, h, "png").bytes.slice()], {
    type: "image/png",
  });
}

/** A valid /v1/images/edits form (image, mask, prompt, size, steps) with one to three parts replaced by
 * something hostile: odd text, random bytes as a file, repeated parts, images of odd sizes. */
function mutatedEditForm(r: Rng): FormData {
  const form = new FormData();
  const parts: [string, string | Blob][] = [
    ["prompt", "a cat"],
    ["size", "32x32"],
    ["steps", "2"],
    ["image", png(32, 32)],
  ];
  if (r.next() < 0.5) parts.push(["mask", png(32, 32)]);
  for (let k = 0; k <= r.int(3); k++) {
    const name = r.pick([...FIELDS, "image[]"]);
    const value = r.pick([
      () => String(randomValue(r)).toWellFormed().slice(0, 300),
      () => new Blob([Uint8Array.from({ length: r.int(200) }, () => r.int(256))]),
      () => {
        return png(1 + r.int(64), 1 + r.int(64));
      },
    ])();
    if (r.next() < 0.3) parts.push([name, value]);
    else {
      const i = parts.findIndex(([n]) => n === name);
      if (i >= 0) parts.splice(i, 1, [name, value]);
      else parts.push([name, value]);
    }
  }
  for (const [name, value] of parts) form.append(name, value);
  return form;
}

/** A valid small request with one to three fields replaced by something hostile. */
function mutatedRequest(r: Rng, openai: boolean): Record<string, unknown> {
  const base: Record<string, unknown> = openai
    ? { prompt: "a cat", size: "32x32", steps: 2, n: 1 }
    : { prompt: "a cat", width: 32, height: 32, steps: 2 };
  for (let k = 0; k <= r.int(3); k++) {
    const field = r.pick(FIELDS);
    if (r.next() < 0.15) delete base[field];
    // defineProperty: "__proto__" must become an own key of the JSON, not the object's prototype.
    else {Object.defineProperty(base, field, {
        value: randomValue(r),
        enumerable: true,
        writable: true,
        configurable: true,
      });}
  }
  return base;
}

interface Probe {
  kind: string;
  status: number | "network-error" | "aborted";
}

/** One hostile HTTP exchange; never throws. */
async function probe(url: string, r: Rng, bodyLimit: number): Promise<Probe> {
  const kind = r.pick(
    [
      "random-json",
      "mutated-native",
      "mutated-openai",
      "mutated-edits",
      "bytes",
      "truncated-json",
      "content-type",
      "method",
      "query",
      "path",
      "headers",
      "oversized",
      "sse-hangup",
    ] as const,
  );
  const timeout = AbortSignal.timeout(5_000);
  const client = new AbortController();
  const signal = AbortSignal.any([timeout, client.signal]);
  const endpoint = r.pick(["/v1/generate", "/v1/images/generations", "/v1/images/edits"]);
  let init: RequestInit = { method: "POST", headers: { "content-type": "application/json" } };
  let path = endpoint;
  switch (kind) {
    case "random-json":
      init.body = JSON.stringify(randomValue(r));
      break;
    case "mutated-native":
      path = "/v1/generate";
      init.body = JSON.stringify(mutatedRequest(r, false));
      break;
    case "mutated-openai":
      path = "/v1/images/generations";
      init.body = JSON.stringify(mutatedRequest(r, true));
      break;
    case "mutated-edits":
      path = "/v1/images/edits";
      // fetch sets the multipart Content-Type with its boundary.
      init = { method: "POST", body: mutatedEditForm(r) };
      break;
    case "bytes":
      init.body = Uint8Array.from({ length: r.int(300) }, () => r.int(256));
      break;
    case "truncated-json": {
      const text = JSON.stringify(mutatedRequest(r, endpoint.includes("images")));
      init.body = text.slice(0, r.int(text.length));
      break;
    }
    case "content-type":
      init.headers = {
        "content-type": r.pick([
          "text/plain",
          "application/xml",
          "multipart/form-data; boundary=x",
          "",
          "json",
        ]),
      };
      init.body = JSON.stringify({ prompt: "p" });
      break;
    case "method":
      init = { method: r.pick(["PUT", "DELETE", "PATCH", "OPTIONS", "GET"]) };
      path = r.pick(["/v1/generate", "/v1/images/generations", "/v1/models", "/metrics", "/healthz", "/"]);
      break;
    case "query": {
      const params = Array.from({ length: r.int(6) }, () => {
        const key = r.pick([...FIELDS, "access_token", "_", "%ZZ", "a[]"]);
        const value = encodeURIComponent(String(randomValue(r)).toWellFormed()).slice(0, 200);
        return `${key}=${r.next() < 0.2 ? "%E0%A4%A" : value}`;
      });
      init = { method: "GET" };
      path = `/v1/generate?${params.join("&")}`;
      break;
    }
    case "path":
      init = { method: r.pick(["GET", "POST"]) };
      path = r.pick([
        "//v1//generate",
        "/v1/generate/../models",
        "/v1/%2e%2e/metrics",
        `/${"a".repeat(4000)}`,
        "/v1/generate%00",
        "/v1/images/generations/extra",
        "/%E2%82",
      ]);
      break;
    case "headers":
      init.headers = {
        "content-type": "application/json",
        accept: r.pick([
          "text/event-stream",
          "*/*",
          "text/event-stream;q=0",
          "\u00ff\u00fe",
          "a/b, text/event-stream",
        ]),
        authorization: r.pick(["Bearer", "Bearer \u00ff", `Bearer ${"x".repeat(3000)}`, "Basic Og=="]),
        "last-event-id": r.pick(["", "1", "x".repeat(100)]),
      };
      init.body = JSON.stringify(mutatedRequest(r, endpoint.includes("images")));
      break;
    case "oversized":
      init.body = JSON.stringify({ prompt: "p", image: "A".repeat(bodyLimit + r.int(10_000)) });
      if (r.next() < 0.5) {
        // Streamed (no Content-Length), so the limit applies while reading.
        const bytes = new TextEncoder().encode(init.body as string);
        init.body = new ReadableStream({
          start(c) {
            c.enqueue(bytes);
            c.close();
          },
        });
      }
      break;
    case "sse-hangup":
      path = "/v1/generate";
      init.headers = { "content-type": "application/json", accept: "text/event-stream" };
      init.body = JSON.stringify({ prompt: "hang up", width: 32, height: 32, steps: 20, preview_every: 1 });
      break;
  }
  let request: Request;
  try {
    request = new Request(`${url}${path}`, { ...init, signal });
  } catch (e) {
    throw new Error(`the fuzzer built a request fetch refuses (${kind}): ${e}`);
  }
  try {
    const res = await fetch(request);
    if (kind === "sse-hangup" && res.ok && res.body) {
      // Read a few events, then drop the connection mid-stream.
      let n = 0;
      for await (const _ of readSse(res.body)) if (++n >= 1 + r.int(4)) break;
      client.abort();
      return { kind, status: res.status };
    }
    await res.arrayBuffer().catch(() => {});
    return { kind, status: res.status };
  } catch (e) {
    return {
      kind,
      status: signal.aborted ? "aborted" : (e instanceof TypeError ? "network-error" : "aborted"),
    };
  }
}

/** Malformed HTTP straight on the socket: the server must shrug it off. */
async function rawProbe(url: string, r: Rng): Promise<void> {
  const { hostname, port } = new URL(url);
  const payload = r.pick([
    "GARBAGE\r\n\r\n",
    'POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n{"pro',
    "GET / HTTP/1.1\r\nHost: x\r\n" + "X-Long: " + "a".repeat(100_000) + "\r\n\r\n",
    "POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GET /healthz HTTP/1.1\r\n",
    "\u0000\u0001\u0002\r\n\r\n",
  ]);
  try {
    const conn = await Deno.connect({ hostname, port: Number(port) });
    try {
      await conn.write(new TextEncoder().encode(payload));
      const buf = new Uint8Array(512);
      await Promise.race([conn.read(buf), new Promise((r) => setTimeout(r, 50))]);
    } finally {
      conn.close();
    }
  } catch { /* the server may reset the connection: fine */ }
}

Deno.test("fuzz: 1000+ hostile requests get no 5xx, the process survives, and generation still works", async () => {
  const bodyLimit = 64 * 1024;
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
          results.push(await probe(server.url, r, bodyLimit * 16 + 1));
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
