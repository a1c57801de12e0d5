// Bearer-token authentication with OpenAI-shaped 401 answers. The comparison takes the same time whatever
// the token's first wrong byte, so timing does not leak it.

import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { errorResponse } from "../errors.ts";

export interface BearerAuthOptions {
  token: string;
  /** Named in the WWW-Authenticate challenge. */
  realm: string;
  /** The query parameters that may carry the token on this request (none by default): EventSource cannot
   * send headers. */
  queryTokenParams?: (c: Context) => readonly string[];
}

export function bearerAuth(options: BearerAuthOptions) {
  const expected = new TextEncoder().encode(options.token);
  const challenge = { "www-authenticate": `Bearer realm="${options.realm}"` };
  return createMiddleware(async function bearerAuth(c, next) {
    const m = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "");
    const given = m?.[1].trim() ??
      options.queryTokenParams?.(c).map((name) => c.req.query(name)).find((v) => v !== undefined);
    if (given === undefined) {
      return errorResponse(
        401,
        "unauthorized",
        "missing bearer token (Authorization: Bearer TOKEN)",
        undefined,
        challenge,
      );
    }
    if (!constantTimeEqual(new TextEncoder().encode(given), expected)) {
      return errorResponse(401, "invalid_api_key", "invalid bearer token", undefined, challenge);
    }
    await next();
  });
}

function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
