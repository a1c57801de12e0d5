// Per-request bookkeeping that runs before every route: the client's abort signal for the handlers, and
// the response count by status for /metrics.

import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../context.ts";
import type { Metrics } from "../metrics.ts";

/** Sets `clientSignal`; must run before anything replaces c.req.raw (the JSON body middleware does). */
export function clientSignal() {
  return createMiddleware<AppEnv>(async function clientSignal(c, next) {
    c.set("clientSignal", c.req.raw.signal);
    await next();
  });
}

export function countResponses(metrics: Metrics) {
  return createMiddleware(async function countResponses(c, next) {
    await next();
    metrics.response(c.res.status);
  });
}
