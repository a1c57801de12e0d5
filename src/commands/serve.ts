// `serve [--port N] [--host H] [--model PATH] …`: the HTTP server; `serve --help` lists every flag and
// environment variable. The GPU, the model and every generation live in the engine worker
// (src/server/worker/); this thread only serves HTTP.

import { createApp } from "../server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../server/config.ts";
import { redisJobQueue } from "../server/queue/redis_queue.ts";
import { serveApp } from "../server/serve.ts";
import { WorkerEngineHost } from "../server/worker/host.ts";
import { LoraLibrary } from "../models/lora/library.ts";

export async function serveCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const config = parseServeConfig(args, Deno.env.toObject());
  if (config.loraDir && !(await Deno.stat(config.loraDir).catch(() => null))?.isDirectory) {
    throw new Error(`--lora-dir ${config.loraDir} is not a folder`);
  }
  // A front end of a shared queue (--no-worker) runs nothing, so it loads no model and needs no GPU.
  const frontEnd = config.redis?.worker === false;
  // The model loads and warms in the background; /healthz reports starting → loading {progress, stage} →
  // ready | failed, and recovering after a lost device.
  const host = frontEnd ? undefined : new WorkerEngineHost({
    model: config.model,
    tokenizerDir: config.tokenizer,
    loraDir: config.loraDir,
    loraStrict: config.loraStrict,
    taesd: config.taesd,
    decoder: config.decoder,
    disableF16: config.disableF16,
    warmup: config.warmup,
    warmupGuidance: config.options.defaultGuidance,
    testHooks: config.testHooks,
  });
  // The HTTP side validates LoRA names against the folder; the worker reads the files.
  const loras = config.loraDir ? new LoraLibrary(config.loraDir) : undefined;
  const sd = createApp({
    host,
    options: { ...config.options, loras, testHooks: config.testHooks },
    jobs: config.redis ? redisJobQueue(config.redis) : undefined,
  });
  const handle = serveApp(sd, {
    hostname: config.hostname,
    port: config.port,
    shutdownGraceMs: config.shutdownGraceMs,
    handleSignals: true,
    onListen: ({ hostname, port }) =>
      console.log(
        `listening on http://${hostname}:${port}` +
          (frontEnd
            ? " (front end of the shared queue: takes no jobs)"
            : config.model
            ? ` (loading ${config.model}${config.taesd ? `, TAESD ${config.taesd}` : ""})`
            : config.redis
            ? " (no --model: takes no jobs from the shared queue)"
            : " (no --model: generation answers 503)"),
      ),
  });
  await handle.finished;
  return 0;
}
