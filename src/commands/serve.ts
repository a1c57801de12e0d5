// `serve [--port N] [--host H] [--model PATH] …`: the HTTP server; `serve --help` lists every flag and
// environment variable.

import { Gpu } from "../gpu/device.ts";
import { createApp } from "../server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../server/config.ts";
import { gpuInfoOf, modelEngineLoader } from "../server/model_loader.ts";
import { serveApp } from "../server/serve.ts";

export async function serveCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const config = parseServeConfig(args, Deno.env.toObject());
  const gpu = Gpu.create({ disableF16: config.disableF16 });
  const sd = createApp({
    // The model loads in the background; /healthz reports starting → loading {progress} → ready | failed.
    engine: config.model
      ? modelEngineLoader(config.model, gpu, { tokenizerDir: config.tokenizer })
      : undefined,
    gpu: gpu.then(gpuInfoOf),
    options: config.options,
  });
  const handle = serveApp(sd, {
    hostname: config.hostname,
    port: config.port,
    shutdownGraceMs: config.shutdownGraceMs,
    handleSignals: true,
    onListen: ({ hostname, port }) =>
      console.log(
        `listening on http://${hostname}:${port}` +
          (config.model ? ` (loading ${config.model})` : " (no --model: generation answers 503)"),
      ),
  });
  await handle.finished;
  return 0;
}
