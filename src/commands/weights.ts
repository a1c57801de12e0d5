// `weights [--model M] [--dir DIR] …`: downloads a model's fp16 diffusers files from the Hugging Face Hub
// (src/weights/download/), with a progress bar per file.

import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import {
  DEFAULT_ENDPOINT,
  downloadModel,
  formatBytes,
  HUB_MODELS,
  type HubModelName,
  LOCK_FILE,
  type ProgressFactory,
  type TransferProgress,
} from "../weights/download/index.ts";

const MODEL_LIST = Object.entries(HUB_MODELS).map(([name, m]) => `${name} (${m.repo})`).join(", ");

export const WEIGHTS_USAGE =
  `usage: weights [--model NAME] [--dir DIR] [--revision REV] [--verify] [--retries N] [--quiet]
  Downloads the fp16 diffusers files of a model from the Hugging Face Hub into DIR/<model>/, resumably,
  each checked against its sha256 and recorded in DIR/<model>/${LOCK_FILE}. "taesd" is the tiny
  autoencoder for previews and drafts: DIR/taesd is found by every model folder in DIR.
  --model NAME   ${MODEL_LIST}; default sd15
  --dir DIR      parent folder (default weights)
  --revision R   branch, tag or commit (default main; the lock pins the commit its first run resolved)
  --verify       re-hash files already present instead of trusting their size and the lock
  --retries N    consecutive failed attempts allowed per request (default 5)
  --quiet        no progress bar
  Environment: HF_ENDPOINT (default ${DEFAULT_ENDPOINT}), HF_TOKEN (gated or private repositories).`;

/** `weights [--model M] [--dir DIR] …`: 0 when the model is complete, 2 on a usage error. */
export async function weightsCommand(
  args: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        model: { type: "string", default: "sd15" },
        dir: { type: "string", default: "weights" },
        revision: { type: "string" },
        verify: { type: "boolean" },
        retries: { type: "string" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${WEIGHTS_USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(WEIGHTS_USAGE);
    return 0;
  }
  if (!Object.hasOwn(HUB_MODELS, values.model)) {
    console.error(`unknown model "${values.model}"\n${WEIGHTS_USAGE}`);
    return 2;
  }
  const retries = values.retries === undefined ? undefined : Number(values.retries);
  if (retries !== undefined && (!Number.isInteger(retries) || retries < 0 || retries > 100)) {
    console.error(`--retries must be an integer between 0 and 100, got "${values.retries}"`);
    return 2;
  }
  const result = await downloadModel({
    model: values.model as HubModelName,
    dir: values.dir,
    revision: values.revision,
    endpoint: env.HF_ENDPOINT,
    token: env.HF_TOKEN || undefined,
    verify: values.verify,
    retries,
    progress: values.quiet ? undefined : progressBars(),
  });
  console.log(
    HUB_MODELS[values.model as HubModelName].kind === "taesd"
      ? `ready: models in ${values.dir} find it there (or pass --taesd ${result.modelDir})`
      : `ready: serve it with --model ${result.modelDir}`,
  );
  return 0;
}

/**
 * A cli-progress bar per file: bytes, rate and ETA. It draws only on a terminal unless `stream` is given
 * (default process.stderr; tests pass a fake stream).
 */
export function progressBars(stream?: NodeJS.WritableStream): ProgressFactory {
  return (path, total) => new FileProgressBar(path, total, stream);
}

/** Nothing is drawn for a file of unknown size. */
class FileProgressBar implements TransferProgress {
  private bar: cliProgress.SingleBar | null = null;
  private startedAt = 0;
  private startBytes = 0;

  constructor(
    private readonly path: string,
    private readonly total: number | null,
    private readonly stream: NodeJS.WritableStream | undefined,
  ) {}

  start(done: number): void {
    if (this.total === null) return;
    this.startedAt = performance.now();
    this.startBytes = done;
    if (!this.bar) {
      this.bar = new cliProgress.SingleBar({
        format: "{bar} {percentage}% | {done}/{size} | {rate} | eta {eta_formatted} | {file}",
        hideCursor: true,
        stream: this.stream,
        noTTYOutput: this.stream !== undefined,
        notTTYSchedule: 2000,
        etaBuffer: 50,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(this.total, done, this.payload(done));
    } else {
      this.bar.update(done, this.payload(done));
    }
  }

  update(done: number): void {
    this.bar?.update(done, this.payload(done));
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }

  private payload(done: number): Record<string, string> {
    const seconds = (performance.now() - this.startedAt) / 1000;
    const rate = seconds > 0.5 ? `${formatBytes((done - this.startBytes) / seconds)}/s` : "…";
    return { file: this.path, done: formatBytes(done), size: formatBytes(this.total ?? 0), rate };
  }
}
