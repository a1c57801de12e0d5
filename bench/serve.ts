// `deno task bench:serve [--model DIR] [--size 256] [--steps 3] [--port 0] [-- SERVE FLAGS…]`
//
// The server as a client sees it: starts the real `serve` command in its own process and measures
//   1. load: time from start to /healthz "ready", and the stages /healthz reports while loading;
//   2. one generation (SSE) while /healthz is polled every 100 ms: the polls' latencies (does the HTTP side
//      stay responsive while the GPU works?), the first step's time (from the run's start, so text encoding
//      included) and the warm step time (median gap between consecutive `progress` events' elapsed_ms);
//   3. a longer generation cancelled with DELETE /v1/jobs/:id at its first `progress` event: time from the
//      DELETE to the stream's final `cancelled` error, and /healthz showing the queue idle again.
//
// Without --model it writes full-size synthetic SD 1.5 weights to a temporary folder (deleted afterwards).
// Targets are printed next to the figures, never asserted. The last line has a fixed form for scripts:
//   healthz p50=… ms p99=… ms max=… ms; first step …s, warm step …s; cancel took …s
// Flags after `--` go to `serve` unchanged (e.g. `-- --no-f16`).

import { parseArgs } from "node:util";
import { synthWeightsMain } from "../src/commands/synth_weights.ts";
import { readSse } from "../tests/server_harness.ts";

const USAGE = `usage: deno task bench:serve [--model DIR] [--size PX] [--steps N] [--port N] [-- SERVE FLAGS…]
  --model DIR   diffusers folder or checkpoint (default: synthetic SD 1.5 weights in a temporary folder)
  --size PX     width and height of both generations, also passed as serve's --default-size (default 256)
  --steps N     steps of the measured generation, at least 2 (default 3); the cancelled one runs N+5
  --port N      the server's port (default 0: any free port)
  -- FLAGS…     passed on to \`main.ts serve\` (e.g. -- --no-f16)`;

/** Time between the starts of two consecutive /healthz polls (a slow poll delays the next one). */
const POLL_INTERVAL_MS = 100;
/** How long the server gets to exit after SIGTERM before it is killed. */
const STOP_GRACE_MS = 3_000;
const mainTs = new URL("../main.ts", import.meta.url).pathname;

// ---- flags ---------------------------------------------------------------------------------------------

const dashDash = Deno.args.indexOf("--");
const ownArgs = dashDash < 0 ? Deno.args : Deno.args.slice(0, dashDash);
const serveExtra = dashDash < 0 ? [] : Deno.args.slice(dashDash + 1);
function parseFlags() {
  try {
    return parseArgs({
      args: ownArgs,
      strict: true,
      options: {
        model: { type: "string" },
        size: { type: "string", default: "256" },
        steps: { type: "string", default: "3" },
        port: { type: "string", default: "0" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
}
const values = parseFlags();
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
function intFlag(name: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`--${name} must be an integer between ${min} and ${max}, got "${text}"\n${USAGE}`);
    Deno.exit(2);
  }
  return n;
}
const size = intFlag("size", values.size, 8, 8192);
if (size % 8) {
  console.error(`--size must be a multiple of 8, got ${size}`);
  Deno.exit(2);
}
const steps = intFlag("steps", values.steps, 2, 140);
const cancelSteps = steps + 5;
const port = intFlag("port", values.port, 0, 65535);

// ---- cleanup: the server process and the temporary folder go away on every exit path ---------------------

const cleanups: (() => Promise<void>)[] = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  return cleaning ??= (async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch (e) {
        console.error(`cleanup: ${(e as Error).message}`);
      }
    }
  })();
}
let interrupted = false;
const signalHandlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
  const handler = () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping the server and cleaning up`);
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener(signal, handler);
  return { signal, handler };
});

// A stray rejection must not skip the cleanup either.
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  console.error(`bench:serve failed: ${(e.reason as Error)?.message ?? e.reason}`);
  cleanup().finally(() => Deno.exit(1));
});

// ---- helpers -------------------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const now = () => performance.now();
const s2 = (ms: number) => (ms / 1000).toFixed(2);
const ms1 = (ms: number) => ms.toFixed(1);

/** Nearest-rank percentile of unsorted values. */
function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}
function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

interface Server {
  url: string;
  /** Rejects (with the server's last output) if the process exits before `stop`. */
  exited: Promise<never>;
  /** The server's last lines of output, stdout and stderr interleaved. */
  tail(): string;
}

/** Starts `main.ts serve`, registers its stop in `cleanups`, and resolves once it prints its URL. */
async function startServer(model: string): Promise<Server> {
  const args = [
    "run",
    "-A",
    mainTs,
    "serve",
    "--model",
    model,
    "--port",
    String(port),
    "--default-size",
    String(size),
    ...(size > 1024 ? ["--max-size", String(size)] : []),
    ...serveExtra,
  ];
  if (cleaning) throw new Error("interrupted");
  console.log(`starting: deno ${args.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).spawn();
  let stopping = false;
  const status = child.status;
  cleanups.push(async () => {
    stopping = true;
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
    }, STOP_GRACE_MS);
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
    await status;
    clearTimeout(timer);
  });

  const lines: string[] = [];
  let onUrl: (url: string) => void;
  const urlSeen = new Promise<string>((r) => (onUrl = r));
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      const parts = pending.split("\n");
      pending = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        if (lines.length > 40) lines.shift();
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) onUrl(m[1]);
      }
    }
    if (pending) lines.push(pending);
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const tail = () => lines.map((l) => `  | ${l}`).join("\n");
  const exited = status.then(async (st) => {
    await drained;
    throw new Error(
      stopping
        ? "the server was stopped"
        : `the server exited (code ${st.code}); its last output:\n${tail()}`,
    );
  });
  exited.catch(() => {});
  const url = await Promise.race([urlSeen, exited]);
  return { url, exited, tail };
}

/** Races a step of the benchmark against the server's exit, so a crashed server fails the run at once. */
function orExit<T>(server: Server, p: Promise<T>): Promise<T> {
  return Promise.race([p, server.exited]);
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function healthz(url: string): Promise<{ body: Json; ms: number }> {
  const t = now();
  const res = await fetch(`${url}/healthz`);
  const body = await res.json();
  return { body, ms: now() - t };
}

/**
 * Polls /healthz one request at a time: the next poll starts POLL_INTERVAL_MS after the previous one started,
 * or as soon as it ended where it took longer. `stop` waits for the poll in flight and returns every latency;
 * a failed poll ends the polling and is rethrown by `stop`.
 */
function startPoller(url: string) {
  const latencies: number[] = [];
  let stopped = false;
  let failure: unknown;
  let wake = () => {};
  const loop = (async () => {
    while (!stopped) {
      const started = now();
      latencies.push((await healthz(url)).ms);
      const wait = started + POLL_INTERVAL_MS - now();
      if (wait > 0 && !stopped) {
        await new Promise<void>((r) => {
          const timer = setTimeout(r, wait);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
      }
    }
  })().catch((e) => (failure = e));
  return {
    async stop(): Promise<number[]> {
      stopped = true;
      wake();
      await loop;
      if (failure) throw new Error(`a /healthz poll failed: ${(failure as Error).message}`);
      return latencies;
    },
  };
}

function generate(url: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${url}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
}

async function expectStream(res: Response): Promise<ReadableStream<Uint8Array>> {
  if (!res.ok || !res.body) {
    throw new Error(`POST /v1/generate answered ${res.status}: ${await res.text()}`);
  }
  return res.body;
}

// ---- the benchmark -------------------------------------------------------------------------------------

async function run(): Promise<void> {
  let model = values.model;
  if (!model) {
    const dir = await Deno.makeTempDir({ prefix: "sd-bench-serve-" });
    cleanups.push(() => Deno.remove(dir, { recursive: true }));
    console.log(`no --model: writing synthetic SD 1.5 weights to ${dir} (deleted afterwards)`);
    const code = await synthWeightsMain(["--model", "sd15", "--out", dir]);
    if (code !== 0) throw new Error(`synth-weights failed (exit code ${code})`);
    model = dir;
  }

  // 1. Start and load.
  const t0 = now();
  const server = await startServer(model);
  const { url } = server;
  console.log(`listening on ${url} after ${s2(now() - t0)} s; waiting for /healthz "ready"`);
  const stages: { at: number; label: string }[] = [];
  const loadPolls: number[] = [];
  let ready: Json;
  while (true) {
    const { body, ms } = await orExit(server, healthz(url));
    loadPolls.push(ms);
    if (body.status === "ready") {
      ready = body;
      break;
    }
    if (body.status === "failed") throw new Error(`/healthz reports the load failed: ${body.reason}`);
    const label = body.status === "loading"
      ? (body.stage ? `loading ${body.stage}` : "loading")
      : body.status;
    if (stages.at(-1)?.label !== label) {
      stages.push({ at: now() - t0, label });
      const pct = typeof body.progress === "number" ? ` (${Math.round(body.progress * 100)}%)` : "";
      console.log(`  ${s2(now() - t0).padStart(7)} s  ${label}${pct}`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
  const loadMs = now() - t0;
  if (ready.model === null) throw new Error("the server reports no model");
  console.log(`  ${s2(loadMs).padStart(7)} s  ready: ${ready.model} on ${ready.adapter}`);

  // 2. One generation, with /healthz polled throughout.
  console.log(`\nrun 1: ${size}×${size}, ${steps} steps, /healthz polled every ${POLL_INTERVAL_MS} ms`);
  const progress: { step: number; steps: number; elapsedMs: number }[] = [];
  let timings: Json;
  let doneAt = 0;
  const submitted = now();
  const poller = startPoller(url);
  let polls: number[] = [];
  let runError: unknown;
  try {
    const res = await orExit(
      server,
      generate(url, {
        prompt: "a lighthouse on a cliff",
        width: size,
        height: size,
        steps,
        seed: 1,
        preview_every: 0,
      }),
    );
    const stream = await expectStream(res);
    await orExit(
      server,
      (async () => {
        for await (const ev of readSse(stream)) {
          const data = JSON.parse(ev.data);
          if (ev.event === "progress") {
            progress.push({ step: data.step, steps: data.steps, elapsedMs: data.elapsed_ms });
            console.log(`  step ${data.step}/${data.steps}: ${s2(data.elapsed_ms)} s since the run started`);
          } else if (ev.event === "done") {
            timings = data.timings;
            doneAt = now();
            return;
          } else if (ev.event === "error") {
            throw new Error(`run 1 failed: ${data.code}: ${data.message}`);
          }
        }
        throw new Error("run 1: the stream ended without a done event");
      })(),
    );
  } catch (e) {
    runError = e;
  }
  // The run's own error first: a dead server fails the polls too.
  try {
    polls = await poller.stop();
  } catch (e) {
    runError ??= e;
  }
  if (runError) throw runError;
  const runMs = doneAt - submitted;
  if (progress.length < 2) throw new Error(`run 1: only ${progress.length} progress events`);
  const firstStepMs = progress[0].elapsedMs;
  const gaps = progress.slice(1).map((p, i) => p.elapsedMs - progress[i].elapsedMs);
  const warmStepMs = median(gaps);

  // 3. A longer generation, cancelled at its first progress event.
  console.log(`\nrun 2: ${cancelSteps} steps, DELETE /v1/jobs/:id at the first progress event`);
  const res2 = await orExit(
    server,
    generate(url, {
      prompt: "a red fox in the snow",
      width: size,
      height: size,
      steps: cancelSteps,
      seed: 2,
      preview_every: 0,
    }),
  );
  let jobId = res2.headers.get("x-job-id") ?? undefined;
  const stream2 = await expectStream(res2);
  let deleteAt = 0;
  let deleted: Promise<{ status: number; ms: number; body: string }> | undefined;
  let stepsAfterDelete = 0;
  const cancelledAt = await orExit(
    server,
    (async () => {
      for await (const ev of readSse(stream2)) {
        const data = JSON.parse(ev.data);
        if (typeof data.job_id === "string") jobId ??= data.job_id;
        if (ev.event === "progress") {
          if (deleted) {
            stepsAfterDelete++;
            continue;
          }
          if (!jobId) throw new Error("run 2: no job id in the X-Job-Id header or the queued/started events");
          console.log(
            `  step ${data.step}/${data.steps} at ${s2(data.elapsed_ms)} s: DELETE /v1/jobs/${jobId}`,
          );
          deleteAt = now();
          deleted = fetch(`${url}/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }).then(
            async (r) => ({ status: r.status, ms: now() - deleteAt, body: await r.text() }),
          );
        } else if (ev.event === "error") {
          if (data.code !== "cancelled") throw new Error(`run 2 failed: ${data.code}: ${data.message}`);
          if (!deleted) throw new Error("run 2 was cancelled before the DELETE was sent");
          return now();
        } else if (ev.event === "done") {
          throw new Error(`run 2 was not cancelled: it finished all ${cancelSteps} steps`);
        }
      }
      throw new Error("run 2: the stream ended without an error event");
    })(),
  );
  const cancelMs = cancelledAt - deleteAt;
  const del = await deleted!;
  if (del.status !== 200) throw new Error(`DELETE /v1/jobs/${jobId} answered ${del.status}: ${del.body}`);
  let idleMs = -1;
  let idleHealth: Json;
  for (const deadline = now() + 30_000; now() < deadline;) {
    idleHealth = (await orExit(server, healthz(url))).body;
    if (idleHealth.queue?.running === 0) {
      idleMs = now() - deleteAt;
      break;
    }
    await sleep(20);
  }
  if (idleMs < 0) {
    throw new Error(
      `/healthz still shows a running job 30 s after the DELETE: ${JSON.stringify(idleHealth)}`,
    );
  }

  // Summary.
  const p50 = percentile(polls, 50);
  const p99 = percentile(polls, 99);
  const max = Math.max(...polls);
  const met = (ok: boolean) => (ok ? "met" : "MISSED");
  const stepList = [firstStepMs, ...gaps].map((ms, i) => `${i + 1}: ${s2(ms)}`).join(", ");
  console.log(`
== bench:serve ==
adapter      ${ready.adapter}${ready.f16 ? " (f16)" : ""}
model        ${ready.model} (${model}${values.model ? "" : ", synthetic SD 1.5"})
size, steps  ${size}×${size}, ${steps} steps${
    progress[0].steps !== steps ? ` (the sampler runs ${progress[0].steps})` : ""
  }; run 2: ${cancelSteps} steps, cancelled
load         ${s2(loadMs)} s from spawn to "ready"; stages: ${
    stages.map((s) => `${s.label} @ ${s2(s.at)} s`).join(", ") || "(none seen)"
  }; /healthz while loading: ${loadPolls.length} polls, max ${ms1(Math.max(...loadPolls))} ms
run 1        ${s2(runMs)} s submit → done${
    timings
      ? ` (server: text encoder ${s2(timings.text_encoder_ms)} s, denoise ${s2(timings.denoise_ms)} s, ` +
        `VAE ${s2(timings.vae_ms)} s)`
      : ""
  }
step times   ${stepList} s (step 1 from the run's start, text encoding included)
first step   ${s2(firstStepMs)} s vs warm step (median gap) ${s2(warmStepMs)} s: ${
    (firstStepMs / warmStepMs).toFixed(2)
  }× — target ≤ 1.5× ${met(firstStepMs <= 1.5 * warmStepMs)}
healthz      ${polls.length} polls during run 1, sequential (each starts ${POLL_INTERVAL_MS} ms after the previous one started, or when it ends if slower)
             p50 ${ms1(p50)} ms, p99 ${ms1(p99)} ms, max ${ms1(max)} ms — target p99 ≤ 50 ms ${met(p99 <= 50)}
cancel       DELETE answered ${del.status} in ${ms1(del.ms)} ms; "cancelled" event ${
    s2(cancelMs)
  } s after the DELETE; ${stepsAfterDelete} step(s) finished after it;
             /healthz queue.running 0 ${s2(idleMs)} s after the DELETE — target within one warm step (${
    s2(warmStepMs)
  } s) ${met(cancelMs <= warmStepMs)}`);
  console.log(
    `healthz p50=${ms1(p50)} ms p99=${ms1(p99)} ms max=${ms1(max)} ms; ` +
      `first step ${s2(firstStepMs)}s, warm step ${s2(warmStepMs)}s; cancel took ${s2(cancelMs)}s`,
  );
}

let code = 0;
try {
  await run();
} catch (e) {
  if (!interrupted) {
    console.error(`bench:serve failed: ${(e as Error).message}`);
    code = 1;
  }
} finally {
  await cleanup();
  for (const { signal, handler } of signalHandlers) Deno.removeSignalListener(signal, handler);
}
Deno.exit(interrupted ? 130 : code);
