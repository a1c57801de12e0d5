// The Hono application: the web page, /healthz, /metrics, the native generation endpoint (JSON or SSE),
// and the OpenAI Images API (plain and streamed), all in front of one GPU queue.
//
//   GET  /                        the web page (bundled from src/web/, embedded)
//   GET  /healthz                 starting | loading {progress} | ready {model, adapter, f16} | failed {reason}
//   GET  /metrics                 Prometheus text
//   GET  /v1/models               OpenAI model list
//   POST /v1/generate             JSON body; SSE with `Accept: text/event-stream` (queued, started, progress,
//                                 preview, done, error, each with an id), else JSON once done
//   GET  /v1/generate?…           the same as query parameters, always SSE (for EventSource)
//   DELETE /v1/jobs/:id           cancel a job (its id comes in the first event)
//   POST /v1/images/generations   OpenAI Images API; `stream: true` answers OpenAI's image_generation.* events
// Errors everywhere are OpenAI-shaped: {error: {message, type, param, code}}; /v1/* and /metrics need the
// bearer token when one is configured.
//
// The engine is injected (`createApp({ engine, gpu, options })`): a ready `Engine` or an `EngineLoader`
// that builds one in the background, so tests run the same app on a test double or a tiny real model.

import { type Context, Hono, type MiddlewareHandler } from "hono";
import { zValidator } from "@hono/zod-validator";
import type { z } from "zod";
import type { Engine } from "../pipeline/types.ts";
import { INDEX_HTML } from "../web/bundle.generated.ts";
import { EngineHost, type EngineLoader, type GpuInfo, UnavailableError } from "./engine_host.ts";
import { Metrics } from "./metrics.ts";
import { GenerationQueue, type Job, type JobEvent, QueueFullError } from "./queue.ts";
import {
  DEFAULT_LIMITS,
  fieldErrorFromZod,
  type NativeRequest,
  nativeSchema,
  type OpenAIRequest,
  openAISchema,
  type RequestLimits,
} from "./schemas.ts";
import { sseResponse, type SseSend } from "./sse.ts";

export interface ServerOptions extends RequestLimits {
  /** Jobs allowed to wait behind the running one; more answer 429. */
  maxQueued: number;
  /** Largest accepted request body (JSON with a base64 init image). */
  maxBodyBytes: number;
  /** When set, every /v1 route and /metrics need `Authorization: Bearer TOKEN`. */
  token?: string;
  /** SSE comment heartbeat interval. */
  heartbeatMs: number;
}

export const DEFAULT_SERVER_OPTIONS: ServerOptions = {
  ...DEFAULT_LIMITS,
  maxQueued: 8,
  maxBodyBytes: 20 * 1024 * 1024,
  heartbeatMs: 15_000,
};

export interface CreateAppInit {
  /** A ready engine or a loader (run once, in the background). Absent: no model, generation answers 503. */
  engine?: Engine | EngineLoader;
  /** Adapter report for /healthz (the real server passes `Gpu.create()` mapped to `GpuInfo`). */
  gpu?: Promise<GpuInfo>;
  options?: Partial<ServerOptions>;
}

export interface ServerApp {
  app: Hono<Env>;
  fetch: (request: Request) => Response | Promise<Response>;
  queue: GenerationQueue;
  engineHost: EngineHost;
  metrics: Metrics;
  options: ServerOptions;
  /** Stops taking jobs, cancels waiting ones, lets the running one finish for up to `graceMs`, then aborts it. */
  drain(graceMs: number): Promise<void>;
}

type Env = { Variables: { clientSignal: AbortSignal } };

type ErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  | "queue_full"
  | "unavailable"
  | "shutting_down"
  | "cancelled"
  | "engine_error"
  | "internal";

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  405: "invalid_request_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
};

/** OpenAI's error shape, used by every endpoint: `{error: {message, type, param, code}}`. */
export function errorBody(status: number, code: ErrorCode | string, message: string, param?: string) {
  return { error: { message, type: ERROR_TYPES[status] ?? "server_error", param: param ?? null, code } };
}

function errorResponse(
  status: number,
  code: ErrorCode | string,
  message: string,
  param?: string,
  headers?: Record<string, string>,
): Response {
  return new Response(JSON.stringify(errorBody(status, code, message, param)), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

export function createApp(init: CreateAppInit = {}): ServerApp {
  const options: ServerOptions = { ...DEFAULT_SERVER_OPTIONS, ...init.options };
  const metrics = new Metrics();
  const engineHost = new EngineHost({ engine: init.engine, gpu: init.gpu });
  const queue = new GenerationQueue(engineHost, { maxQueued: options.maxQueued }, metrics);
  if (engineHost.hasModel) engineHost.start();

  const app = new Hono<Env>();

  app.use(async (c, next) => {
    // Kept before anything replaces c.req.raw: aborts when the client disconnects.
    c.set("clientSignal", c.req.raw.signal);
    await next();
    metrics.response(c.res.status);
  });

  // ---- open routes: the page and the health check ---------------------------------------------------

  app.get("/", (c) => {
    c.header("cache-control", "no-cache");
    c.header(
      "content-security-policy",
      "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    );
    return c.html(INDEX_HTML);
  });

  app.get("/healthz", (c) => {
    const state = engineHost.status();
    const gpu = engineHost.gpuInfo();
    const queueInfo = { queued: queue.waiting, running: queue.running ? 1 : 0 };
    if (state.status !== "ready") return c.json({ ...state, queue: queueInfo }, 503);
    return c.json({
      status: "ready",
      model: state.model,
      ...(gpu ?? {}),
      ...(state.model === null ? { note: "no model configured (--model DIR): generation answers 503" } : {}),
      queue: queueInfo,
    });
  });

  // ---- authenticated API ----------------------------------------------------------------------------

  if (options.token) {
    const auth = bearerAuth(options.token);
    app.use("/v1/*", auth);
    app.use("/metrics", auth);
  }

  app.get("/metrics", (c) => {
    const engine = engineHost.current;
    const body = metrics.render({
      queueLength: queue.waiting,
      running: queue.running ? 1 : 0,
      gpuBytes: engine ? safeGpuBytes(engine) : 0,
      modelReady: engine !== undefined,
    });
    return c.body(body, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  const startedAt = Date.now();
  app.get("/v1/models", (c) => {
    const engine = engineHost.current;
    const created = Math.floor(startedAt / 1000);
    return c.json({
      object: "list",
      data: engine ? [{ id: engine.modelName, object: "model", created, owned_by: "sd-webgpu" }] : [],
    });
  });

  const nativeBody = nativeSchema(options, false);
  const nativeQuery = nativeSchema(options, true);
  const openAIBody = openAISchema(options);

  app.post(
    "/v1/generate",
    jsonBody(options.maxBodyBytes),
    zValidator("json", nativeBody, validationHook),
    (c) => {
      const parsed = c.req.valid("json") as NativeRequest;
      const wantsSse = (c.req.header("accept") ?? "").includes("text/event-stream");
      return wantsSse ? nativeSse(c, parsed) : nativeJson(c, parsed);
    },
  );

  app.get("/v1/generate", zValidator("query", nativeQuery, validationHook), (c) => {
    // An EventSource reconnects after the stream ends; a reconnect must not start a second generation.
    if (c.req.header("last-event-id")) return c.body(null, 204);
    return nativeSse(c, c.req.valid("query") as NativeRequest);
  });

  app.post(
    "/v1/images/generations",
    jsonBody(options.maxBodyBytes),
    zValidator("json", openAIBody, validationHook),
    (c) => {
      const parsed = c.req.valid("json") as OpenAIRequest;
      return parsed.stream ? openAISse(c, parsed) : openAIJson(c, parsed);
    },
  );

  // Explicit cancellation (browsers may keep an aborted stream's connection open for a while).
  app.delete("/v1/jobs/:id", (c) => {
    const job = queue.find(c.req.param("id"));
    if (!job) return errorResponse(404, "not_found", "no such job (it may have finished already)", "id");
    const state = job.state;
    job.cancel();
    return c.json({ id: job.id, cancelled: true, state });
  });

  const ALLOWED_METHODS: Record<string, string> = {
    "/v1/generate": "GET, POST",
    "/v1/images/generations": "POST",
    "/v1/jobs/:id": "DELETE",
    "/v1/models": "GET",
    "/metrics": "GET",
    "/healthz": "GET",
  };
  for (const [path, allow] of Object.entries(ALLOWED_METHODS)) {
    const headers = { allow };
    const message = (method: string) => `${method} is not allowed here (allowed: ${allow})`;
    app.all(path, (c) => errorResponse(405, "method_not_allowed", message(c.req.method), undefined, headers));
  }

  app.notFound((c) => errorResponse(404, "not_found", `no route for ${c.req.method} ${c.req.path}`));
  app.onError((err) => {
    const status = (err as { status?: number }).status;
    if (typeof status === "number" && status >= 400 && status < 500) {
      return errorResponse(status, "invalid_request", err.message, "body");
    }
    console.error(err);
    return errorResponse(500, "internal", err.message);
  });

  // ---- handlers -------------------------------------------------------------------------------------

  /** Queues the requests, or answers 429 / 503 right away. */
  function submit(requests: Parameters<GenerationQueue["submit"]>[0]): Job[] | Response {
    try {
      return queue.submit(requests);
    } catch (e) {
      if (e instanceof QueueFullError) {
        return errorResponse(429, "queue_full", e.message, undefined, {
          "retry-after": String(e.retryAfterSeconds),
        });
      }
      if (e instanceof UnavailableError) {
        const code = queue.closed ? "shutting_down" : "unavailable";
        return errorResponse(503, code, e.message, undefined, { "retry-after": "10" });
      }
      throw e;
    }
  }

  /** Cancels the jobs when the client goes away (connection closed or response body cancelled). */
  function cancelOnAbort(signal: AbortSignal, jobs: Job[]): () => void {
    const cancel = () => jobs.forEach((j) => j.cancel());
    if (signal.aborted) cancel();
    signal.addEventListener("abort", cancel, { once: true });
    return () => signal.removeEventListener("abort", cancel);
  }

  function nativeSse(c: Context<Env>, parsed: NativeRequest): Response {
    const request = { ...parsed.request };
    if (!parsed.previewEveryGiven) request.previewEvery = Math.max(1, Math.ceil(request.steps / 4));
    const jobs = submit([request]);
    if (jobs instanceof Response) return jobs;
    const job = jobs[0];
    return sseResponse(async (send, disconnected) => {
      const release = cancelOnAbort(disconnected, jobs);
      let id = 0;
      const emit = (event: string, data: unknown) =>
        send({ event, id: String(++id), data: JSON.stringify(data) });
      try {
        for await (const ev of job.events()) {
          if (disconnected.aborted) break;
          const [name, data] = nativeEvent(ev, job);
          emit(name, data);
        }
      } finally {
        release();
      }
    }, {
      clientSignal: c.get("clientSignal"),
      heartbeatMs: options.heartbeatMs,
      headers: { "x-job-id": job.id },
    });
  }

  async function nativeJson(c: Context<Env>, parsed: NativeRequest): Promise<Response> {
    const jobs = submit([{ ...parsed.request, previewEvery: 0 }]);
    if (jobs instanceof Response) return jobs;
    const release = cancelOnAbort(c.get("clientSignal"), jobs);
    try {
      for await (const ev of jobs[0].events()) {
        if (ev.type === "error") return jobErrorResponse(ev);
        if (ev.type === "done") return c.json(nativeEvent(ev, jobs[0])[1] as Record<string, unknown>);
      }
      return errorResponse(500, "engine_error", "the generation ended without a result");
    } finally {
      release();
    }
  }

  async function openAIJson(c: Context<Env>, parsed: OpenAIRequest): Promise<Response> {
    const jobs = submit(openAIRequests(parsed));
    if (jobs instanceof Response) return jobs;
    const release = cancelOnAbort(c.get("clientSignal"), jobs);
    try {
      const data: { b64_json: string; revised_prompt?: string }[] = [];
      for (const job of jobs) {
        for await (const ev of job.events()) {
          if (ev.type === "error") {
            jobs.forEach((j) => j.cancel());
            return jobErrorResponse(ev);
          }
          if (ev.type === "done") data.push({ b64_json: ev.image.toBase64() });
        }
      }
      return c.json({
        created: Math.floor(Date.now() / 1000),
        data,
        background: "opaque",
        output_format: parsed.outputFormat,
        quality: parsed.quality === "auto" ? "medium" : parsed.quality,
        size: parsed.size,
        usage: usage(parsed, data.length),
      });
    } finally {
      release();
    }
  }

  function openAISse(c: Context<Env>, parsed: OpenAIRequest): Response {
    const jobs = submit(openAIRequests(parsed));
    if (jobs instanceof Response) return jobs;
    const common = {
      size: parsed.size,
      quality: parsed.quality,
      background: "opaque" as const,
      output_format: parsed.outputFormat,
    };
    return sseResponse(async (send: SseSend, disconnected) => {
      const release = cancelOnAbort(disconnected, jobs);
      const emit = (data: Record<string, unknown>) =>
        send({ event: String(data.type), data: JSON.stringify(data) });
      try {
        for (const job of jobs) {
          let partials = 0;
          for await (const ev of job.events()) {
            if (disconnected.aborted) return;
            if (ev.type === "preview" && partials < parsed.partialImages) {
              emit({
                type: "image_generation.partial_image",
                b64_json: ev.image.toBase64(),
                created_at: Math.floor(Date.now() / 1000),
                partial_image_index: partials++,
                ...common,
              });
            } else if (ev.type === "done") {
              emit({
                type: "image_generation.completed",
                b64_json: ev.image.toBase64(),
                created_at: Math.floor(Date.now() / 1000),
                ...common,
                usage: usage(parsed, 1),
              });
            } else if (ev.type === "error") {
              jobs.forEach((j) => j.cancel());
              // OpenAI's client raises an APIError for an `error` event.
              send({
                event: "error",
                data: JSON.stringify(errorBody(ev.status, ev.code, ev.message, ev.param)),
              });
              return;
            }
          }
        }
      } finally {
        release();
      }
    }, { clientSignal: c.get("clientSignal"), heartbeatMs: options.heartbeatMs });
  }

  return {
    app,
    fetch: (request: Request) => app.fetch(request),
    queue,
    engineHost,
    metrics,
    options,
    drain: (graceMs) => queue.drain(graceMs),
  };
}

// ---- helpers --------------------------------------------------------------------------------------

/** n images: n consecutive jobs; with a fixed seed the k-th image uses seed + k. */
function openAIRequests(parsed: OpenAIRequest) {
  return Array.from({ length: parsed.n }, (_, k) => ({
    ...parsed.request,
    seed: parsed.request.seed === undefined ? undefined : parsed.request.seed + k,
  }));
}

/** OpenAI reports token usage; there are no tokens billed here, so these are rough counts for clients. */
function usage(parsed: OpenAIRequest, images: number) {
  const textTokens = Math.ceil(parsed.request.prompt.length / 4);
  const imageTokens = parsed.request.initImage ? 1 : 0;
  return {
    input_tokens: textTokens + imageTokens,
    input_tokens_details: { text_tokens: textTokens, image_tokens: imageTokens },
    output_tokens: images,
    total_tokens: textTokens + imageTokens + images,
  };
}

/** A job event as the native endpoint's SSE event name and JSON payload. */
function nativeEvent(ev: JobEvent, job: Job): [string, unknown] {
  switch (ev.type) {
    case "queued":
      return ["queued", { job_id: job.id, position: ev.position }];
    case "started":
      return ["started", {
        job_id: job.id,
        seed: ev.seed,
        steps: ev.steps,
        width: ev.width,
        height: ev.height,
      }];
    case "progress":
      return ["progress", { step: ev.step, steps: ev.steps, elapsed_ms: ev.elapsedMs, eta_ms: ev.etaMs }];
    case "preview":
      return ["preview", {
        step: ev.step,
        mime: ev.mime,
        width: ev.width,
        height: ev.height,
        data: ev.image.toBase64(),
      }];
    case "done":
      return ["done", {
        job_id: job.id,
        image: ev.image.toBase64(),
        mime: ev.mime,
        seed: ev.seed,
        width: ev.width,
        height: ev.height,
        parameters: ev.parameters,
        timings: {
          total_ms: ev.timings.totalMs,
          text_encoder_ms: ev.timings.textEncoderMs,
          denoise_ms: ev.timings.denoiseMs,
          vae_ms: ev.timings.vaeMs,
          steps_per_second: ev.timings.stepsPerSecond,
        },
      }];
    case "error":
      return ["error", { code: ev.code, message: ev.message, ...(ev.param ? { param: ev.param } : {}) }];
  }
}

function jobErrorResponse(ev: Extract<JobEvent, { type: "error" }>): Response {
  // 499 (client closed) is nginx's convention; nobody is listening by then anyway.
  return errorResponse(ev.status, ev.code, ev.message, ev.param);
}

function validationHook(
  result: { success: boolean; error?: z.core.$ZodError; data?: unknown },
): Response | undefined {
  if (result.success || !result.error) return undefined;
  const { param, message } = fieldErrorFromZod(result.error, result.data);
  return errorResponse(400, "invalid_request", message, param);
}

/** Reads a JSON body under a size limit, answering 400 with the field "body" on any problem. */
function jsonBody(maxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (!/^application\/([\w.-]+\+)?json$/.test(type)) {
      return errorResponse(
        400,
        "invalid_request",
        `body: expected Content-Type application/json, got ${type ? JSON.stringify(type) : "none"}`,
        "body",
      );
    }
    // 400 like every other bad field (the API's contract), with its own code for clients that care.
    const tooLarge = () =>
      errorResponse(400, "payload_too_large", `body: larger than the limit of ${maxBytes} bytes`, "body");
    const declared = Number(c.req.header("content-length") ?? "0");
    if (declared > maxBytes) return tooLarge();
    let bytes: Uint8Array;
    try {
      const read = await readLimited(c.req.raw.body, maxBytes);
      if (read === "too-large") return tooLarge();
      bytes = read;
    } catch (e) {
      return errorResponse(
        400,
        "invalid_request",
        `body: could not be read (${(e as Error).message})`,
        "body",
      );
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      JSON.parse(text);
    } catch (e) {
      const why = e instanceof SyntaxError ? e.message : "not valid UTF-8";
      return errorResponse(400, "invalid_request", `body: not valid JSON (${why})`, "body");
    }
    // The validator parses c.req.raw again; hand it the bytes already read.
    c.req.raw = new Request(c.req.raw.url, { method: c.req.method, headers: c.req.raw.headers, body: text });
    await next();
  };
}

async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array | "too-large"> {
  if (!body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      reader.cancel().catch(() => {});
      return "too-large";
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function bearerAuth(token: string): MiddlewareHandler {
  const expected = new TextEncoder().encode(token);
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header);
    // EventSource cannot send headers: GET /v1/generate also takes ?access_token=.
    const given = m?.[1].trim() ??
      (c.req.method === "GET" && c.req.path === "/v1/generate" ? c.req.query("access_token") : undefined);
    if (given === undefined || !constantTimeEqual(new TextEncoder().encode(given), expected)) {
      return errorResponse(
        401,
        given === undefined ? "unauthorized" : "invalid_api_key",
        given === undefined ? "missing bearer token (Authorization: Bearer TOKEN)" : "invalid bearer token",
        undefined,
        { "www-authenticate": 'Bearer realm="sd-webgpu"' },
      );
    }
    await next();
  };
}

function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

function safeGpuBytes(engine: Engine): number {
  try {
    return engine.gpuBytes();
  } catch {
    return 0;
  }
}
