// POST /v1/images/edits: OpenAI's image edits as inpainting. A multipart form (what the official client
// sends): `image` (or `image[]`, one file), optional `mask`, `prompt`, `n`, `size`, `response_format`,
// `stream` + `partial_images`, and the generations route's extensions (steps, seed, strength, …). The
// image is repainted where the mask's alpha is 0 (OpenAI's definition); without a mask, everywhere, as
// image-to-image guided by the image (openai_schema.ts: openAIEditSchema). Answers and streamed events are
// the generations route's, named image_edit.partial_image / image_edit.completed.

import { Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse, methodNotAllowed } from "../errors.ts";
import { formBody } from "../middleware/body.ts";
import { fieldErrorFromZod } from "../schema_fields.ts";
import { openAIEditSchema } from "../openai_schema.ts";
import { answerImages } from "./openai.ts";

export function editRoutes(state: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const schema = openAIEditSchema(state.options);

  app.post("/v1/images/edits", formBody({ maxBytes: state.options.maxBodyBytes }), async (c) => {
    let form: Record<string, unknown>;
    try {
      form = await formFields(await c.req.parseBody({ all: true }));
    } catch (e) {
      const message = `body: not a valid multipart form (${(e as Error).message})`;
      return errorResponse(400, "invalid_request", message, "body");
    }
    const result = schema.safeParse(form);
    if (!result.success) {
      const { param, message } = fieldErrorFromZod(result.error, form);
      return errorResponse(400, "invalid_request", message, param);
    }
    return answerImages(c, state, result.data, "image_edit");
  });

  app.all("/v1/images/edits", methodNotAllowed("POST"));

  return app;
}

/** Parts as the schema reads them: file parts → bytes, text parts → strings, a repeated part → an array;
 * `image[]` (the client's name for a list of images) → `image`. */
async function formFields(body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    const name = key === "image[]" ? "image" : key;
    const parts = await Promise.all(
      (Array.isArray(value) ? value : [value]).map(async (v) =>
        v instanceof Blob ? new Uint8Array(await v.arrayBuffer()) : v
      ),
    );
    const all = Object.hasOwn(out, name) ? [...[out[name]].flat(), ...parts] : parts;
    // defineProperty: a part named "__proto__" must stay a field (and fail validation), not a prototype.
    Object.defineProperty(out, name, {
      value: all.length === 1 ? all[0] : all,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}
