// Test hooks, mounted only with SD_WEBGPU_TEST_HOOKS=1 (never in a normal run):
//
//   POST /debug/lose-device   the engine worker destroys its GPU device, as a driver reset would; the
//                             running job fails with device_lost and the server recovers by itself

import { Hono } from "hono";
import type { AppEnv, AppState } from "../context.ts";
import { errorResponse } from "../errors.ts";

export function debugRoutes({ engineHost }: AppState): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/debug/lose-device", (c) => {
    if (!engineHost.loseDevice) {
      return errorResponse(404, "not_found", "this engine has no GPU device to lose");
    }
    engineHost.loseDevice();
    return c.json({ lost: true }, 202);
  });
  return app;
}
