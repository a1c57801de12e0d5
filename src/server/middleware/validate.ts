// zod validation of the body or the query, answering 400 naming the first offending field.

import { zValidator } from "@hono/zod-validator";
import type { z } from "zod";
import { errorResponse } from "../errors.ts";
import { fieldErrorFromZod } from "../schema_fields.ts";

export function validate<T extends z.ZodType>(target: "json" | "query", schema: T) {
  return zValidator(target, schema, (result) => {
    if (result.success) return undefined;
    const { param, message } = fieldErrorFromZod(result.error, result.data);
    return errorResponse(400, "invalid_request", message, param);
  });
}
