// A1111's error answers. A body that does not validate is FastAPI's 422,
// `{"detail": [{"loc": ["body", "steps"], "msg": "...", "type": "..."}]}`, with pydantic 1's messages and
// types for wrong types and ranges; other failures have the shape of A1111's own exception handler,
// `{"error": NAME, "detail": TEXT, "body": "", "errors": TEXT}`, and the status the native API gives them.

import { JOB_ERROR_STATUS, type JobErrorEvent } from "../../queue.ts";

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
  ctx?: Record<string, unknown>;
}

const JSON_HEADERS = { "content-type": "application/json" };

/** FastAPI's 422 for a body that does not validate. */
export function validationError(issues: ValidationIssue[]): Response {
  return new Response(JSON.stringify({ detail: issues }), { status: 422, headers: JSON_HEADERS });
}

/** One issue at `body.<field>…` (our own rules: type "value_error", as pydantic's validators raise). */
export function issue(path: (string | number)[], msg: string, type = "value_error"): ValidationIssue {
  return { loc: ["body", ...path], msg, type };
}

/** A1111's exception-handler shape. */
export function a1111Error(
  status: number,
  error: string,
  detail: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ error, detail, body: "", errors: detail }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}

/** FastAPI's `{"detail": TEXT}` (404, 405, 401). */
export function detailResponse(
  status: number,
  detail: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ detail }), { status, headers: { ...JSON_HEADERS, ...headers } });
}

/** The engine's field names (RequestError.field, a job error's param) as A1111's. */
const A1111_FIELDS: Record<string, string> = {
  guidance_scale: "cfg_scale",
  sampler: "sampler_name",
  image: "init_images",
  strength: "denoising_strength",
  num_images: "batch_size",
  seed_mode: "batch_size",
  loras: "prompt",
};

export function a1111Field(param: string): string {
  const head = param.split(".")[0];
  return A1111_FIELDS[head] ?? head;
}

/** A job's error as the answer of an A1111 route: a request the engine refused is a 422 naming the field. */
export function jobErrorResponse(ev: JobErrorEvent): Response {
  if (ev.code === "invalid_request") {
    return validationError([issue(ev.param ? [a1111Field(ev.param)] : [], ev.message)]);
  }
  const name = ev.code.replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase()) + "Error";
  return a1111Error(JOB_ERROR_STATUS[ev.code], name, ev.message);
}
