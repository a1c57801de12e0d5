// Reads a JSON (or multipart) request body under a size limit, answering 400 with the field "body" on any
// problem (the API's contract for every bad field; too large has its own code for clients that care). The
// validator after it parses the body again: it gets the bytes already read.

import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { errorResponse } from "../errors.ts";

export interface JsonBodyOptions {
  maxBytes: number;
}

/** The body's bytes after the type and size checks, or the 400 that answers the request. */
async function readBody(
  c: Context,
  maxBytes: number,
  accepts: (type: string) => boolean,
  expected: string,
): Promise<Uint8Array | Response> {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (!accepts(type)) {
    const got = type ? JSON.stringify(type) : "none";
    return errorResponse(
      400,
      "invalid_request",
      `body: expected Content-Type ${expected}, got ${got}`,
      "body",
    );
  }
  const tooLarge = () =>
    errorResponse(400, "payload_too_large", `body: larger than the limit of ${maxBytes} bytes`, "body");
  if (Number(c.req.header("content-length") ?? "0") > maxBytes) return tooLarge();
  try {
    const read = await readLimited(c.req.raw.body, maxBytes);
    return read === "too-large" ? tooLarge() : read;
  } catch (e) {
    return errorResponse(400, "invalid_request", `body: could not be read (${(e as Error).message})`, "body");
  }
}

export function jsonBody({ maxBytes }: JsonBodyOptions) {
  return createMiddleware(async function jsonBody(c, next) {
    const isJson = (type: string) => /^application\/([\w.-]+\+)?json$/.test(type);
    const bytes = await readBody(c, maxBytes, isJson, "application/json");
    if (bytes instanceof Response) return bytes;
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      JSON.parse(text);
    } catch (e) {
      const why = e instanceof SyntaxError ? e.message : "not valid UTF-8";
      return errorResponse(400, "invalid_request", `body: not valid JSON (${why})`, "body");
    }
    c.req.raw = new Request(c.req.raw.url, { method: c.req.method, headers: c.req.raw.headers, body: text });
    await next();
  });
}

/**
 * The same for a `multipart/form-data` body (OpenAI's /v1/images/edits): the type and the size limit are
 * checked here, the parts are parsed by the route (`c.req.parseBody()`), which gets the bytes already read.
 */
export function formBody({ maxBytes }: JsonBodyOptions) {
  return createMiddleware(async function formBody(c, next) {
    const isForm = (type: string) => type === "multipart/form-data";
    const bytes = await readBody(c, maxBytes, isForm, "multipart/form-data");
    if (bytes instanceof Response) return bytes;
    c.req.raw = new Request(c.req.raw.url, {
      method: c.req.method,
      headers: c.req.raw.headers,
      body: bytes as Uint8Array<ArrayBuffer>,
    });
    await next();
  });
}

/** The whole body, or "too-large" as soon as it passes `maxBytes` (a chunked body declares no length). */
export async function readLimited(
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
