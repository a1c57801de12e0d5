// `synth-weights --model sd15|sd21|taesd --out DIR [--seed N] [--tokenizer DIR] [--force]`: writes a complete
// diffusers folder (or a TAESD folder) of seeded random weights with the real names and shapes
// (src/models/synth.ts), for load, memory and speed tests without a trained checkpoint.

import { parseArgs } from "node:util";
import { referenceConfigs, type ReferenceModel } from "../models/presets.ts";
import { synthModelFolder, synthTaesdFolder } from "../models/synth.ts";

const USAGE = "usage: synth-weights --model sd15|sd21|taesd --out DIR [--seed N] [--tokenizer DIR] [--force]";

/** The bundled tokenizer (tests/fixtures/tokenizer) when running from a source checkout. */
function defaultTokenizerDir(): string | null {
  try {
    const url = new URL("../../tests/fixtures/tokenizer", import.meta.url);
    if (url.protocol !== "file:") return null;
    const path = decodeURIComponent(url.pathname);
    return Deno.statSync(`${path}/vocab.json`).isFile ? path : null;
  } catch {
    return null;
  }
}

export async function synthWeightsMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      out: { type: "string" },
      seed: { type: "string" },
      tokenizer: { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const model = values.model as ReferenceModel | "taesd" | undefined;
  if (model !== "sd15" && model !== "sd21" && model !== "taesd") {
    console.error(`--model must be sd15, sd21 or taesd\n${USAGE}`);
    return 2;
  }
  if (!values.out) {
    console.error(`--out is required\n${USAGE}`);
    return 2;
  }
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isSafeInteger(seed)) {
    console.error(`--seed must be an integer, got ${values.seed}`);
    return 2;
  }
  const out = values.out;
  let nonEmpty = false;
  try {
    for await (const _ of Deno.readDir(out)) {
      nonEmpty = true;
      break;
    }
  } catch {
    // does not exist yet
  }
  if (nonEmpty && !values.force) {
    console.error(`${out} exists and is not empty; pass --force to overwrite the model files in it`);
    return 2;
  }
  if (model === "taesd") {
    const report = await synthTaesdFolder(out, { seed });
    console.log(
      `wrote synthetic TAESD weights (seed ${seed}, ${
        report.bytes.toLocaleString("en-US")
      } bytes) to ${report.dir}`,
    );
    return 0;
  }
  const tokenizerDir = values.tokenizer ?? defaultTokenizerDir();
  if (!tokenizerDir) {
    console.error("no tokenizer found: pass --tokenizer DIR (a folder with vocab.json and merges.txt)");
    return 2;
  }
  const configs = referenceConfigs(model);
  console.log(`writing synthetic ${model} weights (seed ${seed}) to ${out}`);
  const report = await synthModelFolder(out, configs, {
    seed,
    tokenizerDir,
    tokenizerPadToken: model === "sd21" ? "!" : undefined,
    log: (line) => console.log(line),
  });
  console.log(
    `done: ${report.bytes.toLocaleString("en-US")} bytes of weights (${
      (report.bytes / 2 ** 30).toFixed(2)
    } GiB) ` +
      `in ${report.seconds.toFixed(1)} s`,
  );
  return 0;
}
