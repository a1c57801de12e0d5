// The native generation endpoint.
//
//   POST /v1/generate   JSON body; SSE with `Accept: text/event-stream` (queued, started, progress, preview,
//                       done, error, each with an id), else JSON once done
//   GET  /v1/generate?… the same as query parameters, always SSE (for EventSource)
//
// Events go out as the queue yields them (src/server/wire.ts turns them into JSON); the job id rides on
// the events that open and close a job: queued (so a client can cancel it), started and done. The SSE ids
// are the job's log ids, so a client whose stream broke can resume with GET /v1/jobs/:id/events and
// Last-Event-ID, as long as the job lives: closing this stream cancels its job (use POST /v1/jobs for a
// job that outlives its connection).

import { type Context, Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse, jobErrorResponse, methodNotAllowed } from "../errors.ts";
import { jsonBody } from "../middleware/body.ts";
import { validate } from "../middleware/validate.ts";
import { type NativeRequest, nativeSchema } from "../native_schema.ts";
import { sseResponse } from "../sse.ts";
import { jobEventMessage, jobEventPayload } from "../wire.ts";
import { cancelOnAbort, streamedRequest, submitJobs } from "./submit.ts";

export function nativeRoutes({ jobs: queue, options }: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post(
    "/v1/generate",
    jsonBody({ maxBytes: options.maxBodyBytes }),
    validate("json", nativeSchema(options, false)),
    (c) => {
      const parsed = c.req.valid("json") as NativeRequest;
      const wantsSse = (c.req.header("accept") ?? "").includes("text/event-stream");
      return wantsSse ? streamed(c, parsed) : whole(c, parsed);
    },
  );

  app.get("/v1/generate", validate("query", nativeSchema(options, true)), (c) => {
    // An EventSource reconnects after the stream ends; a reconnect must not start a second generation.
    if (c.req.header("last-event-id")) return c.body(null, 204);
    return streamed(c, c.req.valid("query") as NativeRequest);
  });

  app.all("/v1/generate", methodNotAllowed("GET, POST"));

  async function streamed(c: Context<AppEnv>, parsed: NativeRequest): Promise<Response> {
    const jobs = await submitJobs(queue, [streamedRequest(parsed)], "connection");
    if (jobs instanceof Response) return jobs;
    const job = jobs[0];
    return sseResponse(async (send, disconnected) => {
      const release = cancelOnAbort(disconnected, jobs);
      try {
        for await (const logged of job.events(0, disconnected)) send(jobEventMessage(logged, job.id));
      } finally {
        release();
      }
    }, {
      clientSignal: c.get("clientSignal"),
      heartbeatMs: options.heartbeatMs,
      headers: { "x-job-id": job.id },
    });
  }

  async function whole(c: Context<AppEnv>, parsed: NativeRequest): Promise<Response> {
    const jobs = await submitJobs(queue, [{ ...parsed.request, previewEvery: 0 }], "connection");
    if (jobs instanceof Response) return jobs;
    const release = cancelOnAbort(c.get("clientSignal"), jobs);
    try {
      for await (const { event: ev } of jobs[0].events()) {
        if (ev.type === "error") return jobErrorResponse(ev);
        if (ev.type === "done") return c.json(jobEventPayload(ev, jobs[0].id));
      }
      return errorResponse(500, "engine_error", "the generation ended without a result");
    } finally {
      release();
    }
  }

  return app;
}
