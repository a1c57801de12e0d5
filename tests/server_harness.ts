// Shared helpers for the server tests: start the real app on a free loopback port with an injectable
// engine, and parse server-sent events from a fetch Response.
//
// The engine is a parameter: `startTestServer({ engine: fakeEngineFactory() })` runs the test double from
// tests/server_fake_engine.ts; a real-model factory (e.g. the tiny model in tests/fixtures/tiny_sd) can be
// passed instead with the same shape.

import type { Engine } from "../src/pipeline/types.ts";
import { createApp, type CreateAppInit, type ServerApp, type ServerOptions } from "../src/server/app.ts";
import type { EngineHost, EngineLoader, GpuInfo } from "../src/server/engine_host.ts";
import { serveApp, type ServeHandle } from "../src/server/serve.ts";
import { WorkerEngineHost, type WorkerHostOptions } from "../src/server/worker/host.ts";
import { FAKE_GPU_INFO, FakeEngine, fakeEngineLoader, type FakeEngineOptions } from "./server_fake_engine.ts";

const testsDir = new URL(".", import.meta.url).pathname;

/** What a test needs to run the server on some engine. */
export interface TestEngine {
  /** The real engine's host (a worker owns the GPU), or … */
  host?: EngineHost;
  /** … an engine on the test's thread. */
  engine?: Engine | EngineLoader;
  gpu?: Promise<GpuInfo>;
  /** Set for the test double, so tests can inspect its runs. */
  fake?: FakeEngine;
}

export type TestEngineFactory = () => TestEngine;

/** The test double, loaded through the loader path (as the real model is), after `loadDelayMs`. */
export function fakeEngineFactory(
  options: FakeEngineOptions & { loadDelayMs?: number } = {},
): TestEngineFactory {
  return () => {
    const { loader, engine } = fakeEngineLoader(options);
    return { engine: loader, gpu: Promise.resolve(FAKE_GPU_INFO), fake: engine };
  };
}

/** The real engine, in its worker, on the tiny diffusers model in tests/fixtures/tiny_sd. */
export function tinyModelEngineFactory(options: Partial<WorkerHostOptions> = {}): TestEngineFactory {
  return () => ({
    host: new WorkerEngineHost({
      model: `${testsDir}fixtures/tiny_sd`,
      warmup: [{ width: 64, height: 64 }],
      ...options,
    }),
  });
}

export interface TestServer {
  url: string;
  sd: ServerApp;
  handle: ServeHandle;
  fake?: FakeEngine;
  close(): Promise<void>;
}

export async function startTestServer(
  init: {
    engine?: TestEngineFactory;
    options?: Partial<ServerOptions>;
    waitReady?: boolean;
    /** A shared queue (e.g. `redisJobQueue(…)`). */
    jobs?: CreateAppInit["jobs"];
  } = {},
): Promise<TestServer> {
  const made = init.engine?.();
  const sd = createApp({
    host: made?.host,
    engine: made?.engine,
    gpu: made?.gpu,
    options: { heartbeatMs: 1000, ...init.options },
    jobs: init.jobs,
  });
  const handle = serveApp(sd, { hostname: "127.0.0.1", port: 0, shutdownGraceMs: 2000 });
  const server: TestServer = {
    url: handle.url,
    sd,
    handle,
    fake: made?.fake,
    close: async () => {
      await handle.shutdown();
      await handle.finished;
    },
  };
  if (init.waitReady !== false && made) await waitReady(server.url);
  return server;
}

/** Runs `fn` against a started test server and always closes it. */
export async function withServer(
  init: Parameters<typeof startTestServer>[0],
  fn: (s: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startTestServer(init);
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

export async function waitReady(url: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/healthz`);
    const body = await res.json();
    if (body.status === "ready") return body;
    if (body.status === "failed") throw new Error(`engine failed: ${body.reason}`);
    last = JSON.stringify(body);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`server not ready: ${last}`);
}

export interface SseEvent {
  event: string;
  id?: string;
  data: string;
}

/** Parses a text/event-stream body (per the HTML spec: fields, comments, CRLF, multi-line data). */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.pipeThrough(textDecoder()).getReader();
  let buffer = "";
  let event = "";
  let id: string | undefined;
  let data: string[] = [];
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += value;
      let nl: number;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { event: event || "message", id, data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** All events of a stream, with their JSON payloads. */
// deno-lint-ignore no-explicit-any
export async function collectSse(res: Response): Promise<{ event: string; id?: string; json: any }[]> {
  const out = [];
  for await (const ev of readSse(res.body!)) {
    out.push({ event: ev.event, id: ev.id, json: JSON.parse(ev.data) });
  }
  return out;
}

export function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export async function waitFor(cond: () => boolean, timeoutMs = 5_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export interface ServerProcess {
  url: string;
  child: Deno.ChildProcess;
  /** Everything the process printed on stdout so far, and stderr once it has exited. */
  stdout: string[];
  stderr(): Promise<string>;
  /** Sends the signal (unless the process has already exited) and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
  /** Waits for the process to exit by itself. */
  exited(): Promise<Deno.CommandStatus>;
}

/** Runs tests/server_fake_serve.ts (serve's real code path on the fake engine) as a separate process. */
export function spawnFakeServer(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  return spawnServer([`${testsDir}server_fake_serve.ts`, "--port", "0", ...args], env);
}

/**
 * Runs the real `serve` command on the tiny model in its own process, so a test that drives a browser never
 * shares its event loop with a server compiling shaders or recording GPU work.
 */
export function spawnTinyModelServer(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  return spawnServer([
    `${testsDir}../main.ts`,
    "serve",
    "--model",
    `${testsDir}fixtures/tiny_sd`,
    "--port",
    "0",
    ...args,
  ], env);
}

/** Runs `deno run -A ...runArgs` from the repository root; resolves once it prints "listening on URL". */
export async function spawnServer(
  runArgs: string[],
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...runArgs],
    cwd: `${testsDir}..`,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout: string[] = [];
  const lines = child.stdout.pipeThrough(textDecoder()).getReader();
  let pending = "";
  let url = "";
  while (!url) {
    const { done, value } = await lines.read();
    if (done) throw new Error(`server exited before listening: ${await new Response(child.stderr).text()}`);
    pending += value;
    const m = /listening on (http:\/\/\S+)/.exec(pending);
    if (m) url = m[1];
  }
  stdout.push(...pending.split("\n").filter(Boolean));
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (true) {
      const { done, value } = await lines.read();
      if (done) return;
      stdout.push(...value.split("\n").filter(Boolean));
    }
  })();
  const stderrText = new Response(child.stderr).text();
  let exited = false;
  child.status.then(() => (exited = true));
  return {
    url,
    child,
    stdout,
    stderr: () => stderrText,
    stop: async (signal: Deno.Signal = "SIGTERM") => {
      if (!exited) {
        try {
          child.kill(signal);
        } catch { /* already exited */ }
      }
      const status = await child.status;
      await drained;
      return status;
    },
    exited: async () => {
      const status = await child.status;
      await drained;
      return status;
    },
  };
}

/** A TextDecoderStream typed so the call type-checks with and without the DOM lib in the program. */
function textDecoder(): TransformStream<Uint8Array, string> {
  return new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>;
}
