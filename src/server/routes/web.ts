// GET /: the web page (bundled from src/web/, embedded).

import { Hono } from "hono";
import { INDEX_HTML } from "../../web/bundle.generated.ts";
import type { AppEnv } from "../context.ts";

export function webRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/", (c) => {
    c.header("cache-control", "no-cache");
    c.header(
      "content-security-policy",
      "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    );
    return c.html(INDEX_HTML);
  });
  return app;
}
