// `serve [--port N] [--host H] [--model PATH] …`: the HTTP server; `serve --help` lists every flag and
// environment variable. The GPU, the model and every generation live in the engine worker
// (src/server/worker/); this thread only serves HTTP.

import { createApp } from "../server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../server/config.ts";
import { redisJobQueue } from "../server/queue/redis_queue.ts";
import { serveApp } from "../server/serve.ts";
import { WorkerEngineHost } from "../server/worker/host.ts";
import { chooseDefaultModel } from "../weights/download/index.ts";
import { LoraLibrary } from "../models/lora/library.ts";

export async function serveCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const env = Deno.env.toObject();
  const config = parseServeConfig(args, env);
  if (config.loraDir && !(await Deno.stat(config.loraDir).catch(() => null))?.isDirectory) {
    throw new Error(`--lora-dir ${config.loraDir} is not a folder`);
  }
  // A front end of a shared queue (--no-worker) runs nothing, so it loads no model and needs no GPU.
  const frontEnd = config.redis?.worker === false;
  // Without --model: weights/sd-turbo, downloaded there first by the engine worker when missing (the HTTP
  // thread serves /healthz meanwhile: downloading {bytes, total_bytes, progress}).
  const choice = config.noModel || frontEnd
    ? undefined
    : config.model !== undefined
    ? { kind: "path" as const, path: config.model }
    : await chooseDefaultModel(config.weightsDir);
  const download = choice?.kind === "download"
    ? { model: choice.model, dir: choice.dir, endpoint: env.HF_ENDPOINT, token: env.HF_TOKEN || undefined }
    : undefined;
  // The model loads and warms in the background; /healthz reports starting → (downloading →) loading
  // {progress, stage} → ready | failed, and recovering after a lost device.
  const host = frontEnd ? undefined : new WorkerEngineHost({
    model: choice?.path,
    download,
    tokenizerDir: config.tokenizer,
    loraDir: config.loraDir,
    loraStrict: config.loraStrict,
    taesd: config.taesd,
    decoder: config.decoder,
    disableF16: config.disableF16,
    gpuChoices: config.gpuChoices,
    retune: config.retune,
    warmupDefault: config.warmupDefault,
    warmup: config.warmup,
    defaultSize: config.options.defaultSize,
    defaultGuidance: config.options.defaultGuidance,
    batchBudgetBytes: config.batchBudgetBytes,
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
            : !choice
            ? config.redis
              ? " (--no-model: takes no jobs from the shared queue)"
              : " (--no-model: generation answers 503)"
            : download
            ? ` (no --model: fetching ${choice.path} if needed, then loading it; progress in /healthz)`
            : ` (loading ${choice.path}${config.taesd ? `, TAESD ${config.taesd}` : ""})`),
      ),
  });
  await handle.finished;
  return 0;
}
