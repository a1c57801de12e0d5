// Jobs that outlive their connection, and access to any job by its id.
//
//   POST   /v1/jobs             the body of POST /v1/generate; 202 at once, with Location (not tied to the
//                               connection: it runs until done or DELETE)
//   GET    /v1/jobs/:id         status, position, progress, result (the /v1/generate JSON answer) or error
//   GET    /v1/jobs/:id/events  SSE of the job's log (the same ids as a /v1/generate stream), after
//                               Last-Event-ID or ?last_event_id=, then live until the final event
//   DELETE /v1/jobs/:id         cancels a waiting or running job (409 once finished)
//
// Finished jobs answer for a while (ServerOptions.retainJobs / retainMs), then 404. Ids are unguessable, so
// knowing one is what grants access to the job.

import { type Context, Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse, methodNotAllowed } from "../errors.ts";
import { jsonBody } from "../middleware/body.ts";
import { validate } from "../middleware/validate.ts";
import type { JobHandle } from "../queue/types.ts";
import { type NativeRequest, nativeSchema } from "../native_schema.ts";
import { sseResponse } from "../sse.ts";
import { jobEventMessage, jobEventPayload } from "../wire.ts";
import { streamedRequest, submitJobs } from "./submit.ts";

export function jobRoutes({ jobs: queue, options }: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const lookup = async (c: Context<AppEnv>): Promise<JobHandle | Response> =>
    await queue.find(c.req.param("id") ?? "") ??
      errorResponse(404, "not_found", "no such job (finished jobs are kept only for a while)", "id");

  app.post(
    "/v1/jobs",
    jsonBody({ maxBytes: options.maxBodyBytes }),
    validate("json", nativeSchema(options, false)),
    async (c) => {
      const jobs = await submitJobs(
        queue,
        [streamedRequest(c.req.valid("json") as NativeRequest)],
        "detached",
      );
      if (jobs instanceof Response) return jobs;
      const job = jobs[0];
      const url = `/v1/jobs/${job.id}`;
      c.header("location", url);
      // The status is what it is by now: a job that found the GPU idle is already running.
      return c.json(
        {
          id: job.id,
          object: "job",
          status: job.status,
          position: job.position,
          url,
          events_url: `${url}/events`,
        },
        202,
      );
    },
  );

  app.get("/v1/jobs/:id", async (c) => {
    const job = await lookup(c);
    return job instanceof Response ? job : c.json(describe(job));
  });

  app.get("/v1/jobs/:id/events", async (c) => {
    // The header wins: EventSource sends it on reconnecting, when the URL's parameter is stale.
    const given = c.req.header("last-event-id") || c.req.query("last_event_id");
    const afterId = given === undefined ? 0 : /^\d{1,15}$/.test(given) ? Number(given) : -1;
    if (afterId < 0) {
      const message = `last_event_id: must be a non-negative integer (an event id), got ${
        JSON.stringify(given)
      }`;
      return errorResponse(400, "invalid_request", message, "last_event_id");
    }
    const job = await lookup(c);
    if (job instanceof Response) return job;
    // Nothing left to send: 204 tells EventSource to stop reconnecting.
    if (job.state === "finished" && afterId >= job.eventCount) return c.body(null, 204);
    // Closing this stream leaves the job running: only DELETE cancels it.
    return sseResponse(async (send, disconnected) => {
      for await (const logged of job.events(afterId, disconnected)) send(jobEventMessage(logged, job.id));
    }, {
      clientSignal: c.get("clientSignal"),
      heartbeatMs: options.heartbeatMs,
      headers: { "x-job-id": job.id },
    });
  });

  app.delete("/v1/jobs/:id", async (c) => {
    const job = await lookup(c);
    if (job instanceof Response) return job;
    if (job.state === "finished") {
      return errorResponse(409, "job_finished", `the job has already ended (${job.status})`, "id");
    }
    const state = job.state;
    await job.cancel();
    return c.json({ id: job.id, cancelled: true, state });
  });

  app.all("/v1/jobs", methodNotAllowed("POST"));
  app.all("/v1/jobs/:id", methodNotAllowed("GET, DELETE"));
  app.all("/v1/jobs/:id/events", methodNotAllowed("GET"));
  return app;
}

/** GET /v1/jobs/:id: each field only once it means something. */
function describe(job: JobHandle): Record<string, unknown> {
  const outcome = job.outcome;
  return {
    id: job.id,
    object: "job",
    status: job.status,
    ...(job.state === "queued" ? { position: job.position } : {}),
    ...(job.progress ? { progress: job.progress } : {}),
    ...(outcome?.type === "done" ? { result: jobEventPayload(outcome, job.id) } : {}),
    ...(outcome?.type === "error"
      ? {
        error: {
          code: outcome.code,
          message: outcome.message,
          ...(outcome.param ? { param: outcome.param } : {}),
        },
      }
      : {}),
    created_at: Math.floor(job.createdAt / 1000),
  };
}
