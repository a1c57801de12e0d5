// OpenAI's error shape, used by every endpoint: `{error: {message, type, param, code}}`, and the handlers
// that answer with it (404, 405, uncaught errors, a job's error).

import type { ErrorHandler, Handler, NotFoundHandler } from "hono";
import { UnavailableError } from "./engine_host.ts";
import { JOB_ERROR_STATUS, type JobErrorCode, type JobErrorEvent } from "./queue.ts";

export type ErrorCode =
  | JobErrorCode
  | "invalid_request"
  | "invalid_api_key"
  | "unauthorized"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  | "queue_full"
  | "job_finished"
  | "internal";

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  405: "invalid_request_error",
  409: "invalid_request_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
};

export function errorBody(status: number, code: ErrorCode, message: string, param?: string) {
  return { error: { message, type: ERROR_TYPES[status] ?? "server_error", param: param ?? null, code } };
}

export function errorResponse(
  status: number,
  code: ErrorCode,
  message: string,
  param?: string,
  headers?: Record<string, string>,
): Response {
  return new Response(JSON.stringify(errorBody(status, code, message, param)), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** A job's error event as the HTTP answer of a non-streamed request. */
export function jobErrorResponse(ev: JobErrorEvent): Response {
  return errorResponse(JOB_ERROR_STATUS[ev.code], ev.code, ev.message, ev.param);
}

/** 405 with an Allow header: register after a path's routes (`app.all(path, methodNotAllowed("GET"))`). */
export function methodNotAllowed(allow: string): Handler {
  return (c) =>
    errorResponse(
      405,
      "method_not_allowed",
      `${c.req.method} is not allowed here (allowed: ${allow})`,
      undefined,
      { allow },
    );
}

export const notFound: NotFoundHandler = (c) =>
  errorResponse(404, "not_found", `no route for ${c.req.method} ${c.req.path}`);

/** Hono's own 4xx (HTTPException) keep their status; an UnavailableError (a shared queue whose Redis is
 * down) is a 503; anything else is a 500 and is logged. */
export const onError: ErrorHandler = (err) => {
  const status = (err as { status?: number }).status;
  if (typeof status === "number" && status >= 400 && status < 500) {
    return errorResponse(status, "invalid_request", err.message, "body");
  }
  if (err instanceof UnavailableError) {
    return errorResponse(503, "unavailable", err.message, undefined, { "retry-after": "5" });
  }
  console.error(err);
  return errorResponse(500, "internal", err.message);
};
