// POST /v1/images/generations: OpenAI's Images API, plain (`data[].b64_json`) or, with `stream: true`,
// OpenAI's image_generation.partial_image / .completed events. n images run as one batched job (per-image
// seeds: image k is the image of seed + k, as when they ran as n jobs); partial images are the first image's.
// `answerImages` is shared with POST /v1/images/edits (routes/edits.ts), whose events are image_edit.*.

import { type Context, Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorBody, jobErrorResponse, methodNotAllowed } from "../errors.ts";
import { jsonBody } from "../middleware/body.ts";
import { validate } from "../middleware/validate.ts";
import { JOB_ERROR_STATUS } from "../queue.ts";
import { type OpenAIRequest, openAISchema } from "../openai_schema.ts";
import { sseResponse } from "../sse.ts";
import { cancelOnAbort, submitJobs } from "./submit.ts";

export function openAIRoutes(state: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post(
    "/v1/images/generations",
    jsonBody({ maxBytes: state.options.maxBodyBytes }),
    validate("json", openAISchema(state.options)),
    (c) => answerImages(c, state, c.req.valid("json") as OpenAIRequest, "image_generation"),
  );

  app.all("/v1/images/generations", methodNotAllowed("POST"));

  return app;
}

/** The prefix of the streamed event types: OpenAI names them image_generation.* and image_edit.*. */
export type ImageEventPrefix = "image_generation" | "image_edit";

/** Queues the request's job (n images) and answers as OpenAI does: JSON once done, or SSE with `stream`. */
export function answerImages(
  c: Context<AppEnv>,
  { jobs: queue, options }: AppState,
  parsed: OpenAIRequest,
  prefix: ImageEventPrefix,
): Response | Promise<Response> {
  return parsed.stream ? streamed() : whole();

  async function whole(): Promise<Response> {
    const jobs = await submitJobs(queue, [parsed.request], "connection");
    if (jobs instanceof Response) return jobs;
    const release = cancelOnAbort(c.get("clientSignal"), jobs);
    try {
      const data: { b64_json: string; revised_prompt?: string }[] = [];
      let size = parsed.size;
      for await (const { event: ev } of jobs[0].events()) {
        if (ev.type === "error") return jobErrorResponse(ev);
        if (ev.type === "done") {
          size = `${ev.width}x${ev.height}`;
          for (const image of ev.images ?? [ev.image]) data.push({ b64_json: image.toBase64() });
        }
      }
      return c.json({
        created: Math.floor(Date.now() / 1000),
        data,
        background: "opaque",
        output_format: parsed.outputFormat,
        quality: parsed.quality === "auto" ? "medium" : parsed.quality,
        size,
        usage: usage(parsed, data.length),
      });
    } finally {
      release();
    }
  }

  async function streamed(): Promise<Response> {
    const jobs = await submitJobs(queue, [parsed.request], "connection");
    if (jobs instanceof Response) return jobs;
    const common = {
      size: parsed.size,
      quality: parsed.quality,
      background: "opaque" as const,
      output_format: parsed.outputFormat,
    };
    return sseResponse(async (send, disconnected) => {
      const release = cancelOnAbort(disconnected, jobs);
      const emit = (data: Record<string, unknown>) =>
        send({ event: String(data.type), data: JSON.stringify(data) });
      try {
        let partials = 0;
        for await (const { event: ev } of jobs[0].events(0, disconnected)) {
          // The size once the job has started: the model's default when the request named none.
          if (ev.type === "started") common.size = `${ev.width}x${ev.height}`;
          if (ev.type === "preview" && partials < parsed.partialImages) {
            emit({
              type: `${prefix}.partial_image`,
              b64_json: ev.data.toBase64(),
              created_at: Math.floor(Date.now() / 1000),
              partial_image_index: partials++,
              ...common,
            });
          } else if (ev.type === "done") {
            // One completed event per image, in batch order.
            for (const image of ev.images ?? [ev.image]) {
              emit({
                type: `${prefix}.completed`,
                b64_json: image.toBase64(),
                created_at: Math.floor(Date.now() / 1000),
                ...common,
                usage: usage(parsed, 1),
              });
            }
          } else if (ev.type === "error") {
            // OpenAI's client raises an APIError for an `error` event.
            send({
              event: "error",
              data: JSON.stringify(errorBody(JOB_ERROR_STATUS[ev.code], ev.code, ev.message, ev.param)),
            });
            return;
          }
        }
      } finally {
        release();
      }
    }, { clientSignal: c.get("clientSignal"), heartbeatMs: options.heartbeatMs });
  }
}

/** OpenAI reports token usage; there are no tokens billed here, so these are rough counts for clients. */
function usage(parsed: OpenAIRequest, images: number) {
  const textTokens = Math.ceil(parsed.request.prompt.length / 4);
  const imageTokens = (parsed.request.initImage ? 1 : 0) + (parsed.request.mask ? 1 : 0);
  return {
    input_tokens: textTokens + imageTokens,
    input_tokens_details: { text_tokens: textTokens, image_tokens: imageTokens },
    output_tokens: images,
    total_tokens: textTokens + imageTokens + images,
  };
}
