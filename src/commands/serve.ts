// `serve [--port N] [--host H] [--model PATH] …`: the HTTP server; `serve --help` lists every flag and
// environment variable. The GPU, the model and every generation live in the engine worker
// (src/server/worker/); this thread only serves HTTP.

import { createApp } from "../server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../server/config.ts";
import { serveApp } from "../server/serve.ts";
import { WorkerEngineHost } from "../server/worker/host.ts";

export async function serveCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const config = parseServeConfig(args, Deno.env.toObject());
  // The model loads and warms in the background; /healthz reports starting → loading {progress, stage} →
  // ready | failed, and recovering after a lost device.
  const host = new WorkerEngineHost({
    model: config.model,
    tokenizerDir: config.tokenizer,
    taesd: config.taesd,
    decoder: config.decoder,
    disableF16: config.disableF16,
    gpuChoices: config.gpuChoices,
    retune: config.retune,
    warmup: config.warmup,
    warmupGuidance: config.options.defaultGuidance,
    testHooks: config.testHooks,
  });
  const sd = createApp({ host, options: { ...config.options, testHooks: config.testHooks } });
  const handle = serveApp(sd, {
    hostname: config.hostname,
    port: config.port,
    shutdownGraceMs: config.shutdownGraceMs,
    handleSignals: true,
    onListen: ({ hostname, port }) =>
      console.log(
        `listening on http://${hostname}:${port}` +
          (config.model
            ? ` (loading ${config.model}${config.taesd ? `, TAESD ${config.taesd}` : ""})`
            : " (no --model: generation answers 503)"),
      ),
  });
  await handle.finished;
  return 0;
}
