// TEST DOUBLE entry point: the `serve` command's exact path (parseServeConfig → createApp → serveApp with
// signal handling) with the fake engine in place of a model, so tests can run the server as a separate
// process (signals, crash-freedom under fuzzing). Takes serve's flags and environment variables, plus
// FAKE_STEP_DELAY_MS. Prints "listening on http://HOST:PORT" once it accepts connections.

import { createApp } from "../src/server/app.ts";
import { parseServeConfig } from "../src/server/config.ts";
import { redisJobQueue } from "../src/server/queue/redis_queue.ts";
import { serveApp } from "../src/server/serve.ts";
import { FAKE_GPU_INFO, fakeEngineLoader } from "./server_fake_engine.ts";

if (import.meta.main) {
  const config = parseServeConfig(Deno.args, Deno.env.toObject());
  const { loader } = fakeEngineLoader({ stepDelayMs: Number(Deno.env.get("FAKE_STEP_DELAY_MS") ?? 5) });
  // With --redis --no-worker: a front end, with no engine at all (as `serve` loads no model then).
  const frontEnd = config.redis?.worker === false;
  const sd = createApp({
    engine: frontEnd ? undefined : loader,
    gpu: Promise.resolve(FAKE_GPU_INFO),
    options: config.options,
    jobs: config.redis ? redisJobQueue(config.redis) : undefined,
  });
  const handle = serveApp(sd, {
    hostname: config.hostname,
    port: config.port,
    shutdownGraceMs: config.shutdownGraceMs,
    handleSignals: true,
    onListen: ({ hostname, port }) => console.log(`listening on http://${hostname}:${port}`),
  });
  await handle.finished;
  console.log("stopped");
}
