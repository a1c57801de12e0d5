// Command-line entry: one binary, several subcommands; this file only dispatches (no command: serve).
//   serve [--port N] [--host H] [--model PATH] …   HTTP server; `serve --help` lists every flag and env variable
//   gpu-check                          prints the adapter report and runs one kernel (used by the compile test)
//   generate, bench, component, tokenize, synth-weights   developer commands (see each file's header)
//   weights [--model sd15] [--dir weights]   downloads a model's fp16 diffusers files from the Hugging Face Hub

import { componentCommand } from "./component.ts";
import { tokenizeCommand } from "./tokenize.ts";
import { generateCommand } from "./generate.ts";
import { synthWeightsMain } from "./synth_weights.ts";
import { benchCommand } from "./bench.ts";
import { inspectCommand } from "./inspect.ts";
import { weightsCommand } from "./weights.ts";
import { gpuCheckCommand } from "./gpu_check.ts";
import { serveCommand } from "./serve.ts";

type Command = (args: string[]) => Promise<number>;

export const COMMANDS: Record<string, Command> = {
  serve: serveCommand,
  "gpu-check": gpuCheckCommand,
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
