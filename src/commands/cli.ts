// Command-line entry: one binary, several subcommands.
//   serve [--port N] [--host H] [--model PATH] …   HTTP server; `serve --help` lists every flag and env variable
//   gpu-check                          prints the adapter report and runs one kernel (used by the compile test)
//   weights [--model sd15] [--dir weights]   downloads a model's fp16 diffusers files from the Hugging Face Hub

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { createApp } from "../server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../server/config.ts";
import { gpuInfoOf, modelEngineLoader } from "../server/model_loader.ts";
import { serveApp } from "../server/serve.ts";
import { emptyTensor, readTensor, uploadTensor } from "../gpu/tensor.ts";
import { componentCommand } from "./component.ts";
import { tokenizeCommand } from "./tokenize.ts";
import { generateCommand } from "./generate.ts";
import { synthWeightsMain } from "../models/synth.ts";
import { benchCommand } from "./bench.ts";
import { inspectCommand } from "./inspect.ts";
import { weightsCommand } from "./weights.ts";

type Command = (args: string[]) => Promise<number>;

export const COMMANDS: Record<string, Command> = {
  serve,
  "gpu-check": gpuCheck,
  component: componentCommand,
  tokenize: tokenizeCommand,
  generate: generateCommand,
  "synth-weights": synthWeightsMain,
  bench: benchCommand,
  inspect: inspectCommand,
  weights: weightsCommand,
};

export async function runCli(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  const name = first === undefined || first.startsWith("-") ? "serve" : first;
  const args = name === first ? rest : argv;
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`unknown command "${name}". Commands: ${Object.keys(COMMANDS).join(", ")}`);
    return 2;
  }
  try {
    return await cmd(args);
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

async function serve(args: string[]): Promise<number> {
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

/** Adapter report plus one real kernel: proves shaders are embedded and the device computes. */
async function gpuCheck(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { "no-f16": { type: "boolean" } } });
  const gpu = await Gpu.create({ disableF16: values["no-f16"] });
  const n = 1028;
  const a = uploadTensor(gpu, Float32Array.from({ length: n }, (_, i) => i), [n], "f32", "a");
  const w = uploadTensor(gpu, Float32Array.from({ length: n }, (_, i) => (i % 7) * 0.25), [n], "f16", "w");
  const out = emptyTensor(gpu, [n], "f32", "out");
  const pipeline = gpu.kernel("selftest", { ACT: "f32" });
  gpu.run([gpu.dispatch(pipeline, [a.buffer, w.buffer, out.buffer], [Math.ceil(n / 64)])], "gpu-check");
  const got = await readTensor(gpu, out);
  const ok = got.every((v, i) => v === i * 2 + (i % 7) * 0.25);
  console.log(JSON.stringify({ ...gpu.report, kernelCheck: ok ? "pass" : "fail" }));
  return ok ? 0 : 1;
}
