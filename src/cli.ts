// Command-line entry: one binary, several subcommands.
//   serve [--port N] [--host H]        HTTP server (PORT / HOST environment variables too)
//   gpu-check                          prints the adapter report and runs one kernel (used by the compile test)

import { parseArgs } from "node:util";
import { Gpu } from "./gpu/device.ts";
import { createApp, type ServerState } from "./server/app.ts";
import { emptyTensor, readTensor, uploadTensor } from "./gpu/tensor.ts";

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  serve,
  "gpu-check": gpuCheck,
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
  const { values } = parseArgs({
    args,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "no-f16": { type: "boolean" },
    },
  });
  const port = Number(values.port ?? Deno.env.get("PORT") ?? 8000);
  const hostname = values.host ?? Deno.env.get("HOST") ?? "127.0.0.1";
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${values.port}`);
  const state: ServerState = { gpu: Gpu.create({ disableF16: values["no-f16"] }) };
  state.gpu.then((g) => (state.gpuReady = g), (e) => (state.gpuError = String(e?.message ?? e)));
  const app = createApp(state);
  const server = Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) => console.log(`listening on http://${hostname}:${port}`),
  }, app.fetch);
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
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
