// DELETE /v1/jobs/:id: cancels a waiting or running job by the id from its first event. Explicit, because
// browsers may keep an aborted stream's connection open for a while.

import { Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse, methodNotAllowed } from "../errors.ts";

export function jobRoutes({ queue }: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.delete("/v1/jobs/:id", (c) => {
    const job = queue.find(c.req.param("id"));
    if (!job) {
      return errorResponse(404, "not_found", "no such job (finished jobs are kept only for a while)", "id");
    }
    if (job.state === "finished") {
      return errorResponse(409, "job_finished", `the job has already ended (${job.status})`, "id");
    }
    const state = job.state;
    job.cancel();
    return c.json({ id: job.id, cancelled: true, state });
  });
  app.all("/v1/jobs/:id", methodNotAllowed("DELETE"));
  return app;
}
