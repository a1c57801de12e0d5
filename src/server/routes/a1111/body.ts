// Reading an A1111 route's JSON body under the server's size limit, with FastAPI's answers for what is not
// JSON (422 value_error.jsondecode) and a 413 for what is too large.

import type { Context } from "hono";
import type { AppEnv } from "../../context.ts";
import { readLimited } from "../../middleware/body.ts";
import { detailResponse, validationError } from "./errors.ts";

/** The JSON body under the size limit, or FastAPI's answer (413, or 422 for what is not JSON). */
export async function readJsonBody(
  c: Context<AppEnv>,
  maxBytes: number,
): Promise<{ value: unknown } | Response> {
  const tooLarge = () => detailResponse(413, `body: larger than the limit of ${maxBytes} bytes`);
  if (Number(c.req.header("content-length") ?? "0") > maxBytes) return tooLarge();
  let bytes: Uint8Array | "too-large";
  try {
    bytes = await readLimited(c.req.raw.body, maxBytes);
  } catch (e) {
    return validationError([{
      loc: ["body"],
      msg: `could not be read (${(e as Error).message})`,
      type: "value_error",
    }]);
  }
  if (bytes === "too-large") return tooLarge();
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return validationError([{ loc: ["body", 0], msg: "not valid UTF-8", type: "value_error.jsondecode" }]);
  }
  if (text.trim() === "") {
    return validationError([{ loc: ["body"], msg: "field required", type: "value_error.missing" }]);
  }
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    return validationError([
      { loc: ["body", 0], msg: `JSON decode error: ${(e as Error).message}`, type: "value_error.jsondecode" },
    ]);
  }
}
