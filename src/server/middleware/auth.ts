// Bearer-token authentication with OpenAI-shaped 401 answers (or the caller's own). The comparison takes the
// same time whatever the token's first wrong byte, so timing does not leak it. With `basic`, HTTP Basic
// credentials whose password is the token are accepted too, whatever the user name: A1111's clients
// authenticate that way (`--api-auth user:password` there).

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
  /** Also accept `Authorization: Basic base64(user:TOKEN)`, any user. */
  basic?: boolean;
  /** The 401 answer (default: OpenAI's shape): `missing` without credentials, else `invalid`. */
  reject?: (why: "missing" | "invalid", headers: Record<string, string>) => Response;
}

export function bearerAuth(options: BearerAuthOptions) {
  const expected = new TextEncoder().encode(options.token);
  const challenge = {
    "www-authenticate": `Bearer realm="${options.realm}"` +
      (options.basic ? `, Basic realm="${options.realm}"` : ""),
  };
  return createMiddleware(async function bearerAuth(c, next) {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m?.[1].trim() ?? (options.basic ? basicPassword(header) : undefined) ??
      options.queryTokenParams?.(c).map((name) => c.req.query(name)).find((v) => v !== undefined);
    if (given === undefined) {
      if (options.reject) return options.reject("missing", challenge);
      return errorResponse(
        401,
        "unauthorized",
        "missing bearer token (Authorization: Bearer TOKEN)",
        undefined,
        challenge,
      );
    }
    if (!constantTimeEqual(new TextEncoder().encode(given), expected)) {
      if (options.reject) return options.reject("invalid", challenge);
      return errorResponse(401, "invalid_api_key", "invalid bearer token", undefined, challenge);
    }
    await next();
  });
}

/** The password of `Basic base64(user:password)`, or undefined. */
function basicPassword(header: string): string | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.fromBase64(m[1]));
    const colon = text.indexOf(":");
    return colon < 0 ? undefined : text.slice(colon + 1);
  } catch {
    return undefined;
  }
}

function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
