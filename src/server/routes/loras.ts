// GET /v1/loras: the LoRAs requests may name — the .safetensors files of the --lora-dir folder, by file stem —
// with size in bytes, tensor count and key family. Listed afresh on every call, so files added while the
// server runs show up (and validate) at once. Without a LoRA folder the list is empty.

import { Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse, methodNotAllowed } from "../errors.ts";

export function loraRoutes({ options }: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.get("/v1/loras", async (c) => {
    try {
      const data = options.loras ? await options.loras.list() : [];
      return c.json({ object: "list", data });
    } catch (e) {
      return errorResponse(500, "internal", `cannot list the LoRA folder: ${(e as Error).message}`);
    }
  });

  app.all("/v1/loras", methodNotAllowed("GET"));
  return app;
}
