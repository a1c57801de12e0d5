// `serve` configuration from flags and environment variables (flags win), with errors naming the flag.

import { parseArgs } from "node:util";
import { DEFAULT_SERVER_OPTIONS, type ServerOptions } from "./options.ts";
import type { RedisQueueOptions } from "./queue/redis_queue.ts";
import type { WarmupSize } from "./worker/protocol.ts";
import { DEFAULT_BATCH_BUDGET_BYTES } from "../pipeline/batch.ts";
import { type DecoderName, DECODERS } from "../pipeline/types.ts";
import { findTaesdBeside } from "../models/taesd/load.ts";
import { gpuChoicesFromEnv, parseGpuChoices } from "../gpu/choices.ts";

export interface ServeConfig {
  hostname: string;
  port: number;
  /** Diffusers folder or single-file checkpoint given with --model (or SD_MODEL / MODEL); undefined: the
   * default model (server/default_model.ts), or none with `noModel`. */
  model?: string;
  /** --no-model: serve without a model (generation answers 503). */
  noModel: boolean;
  /** Where the default model lives and is downloaded to (`<weightsDir>/sd-turbo`). */
  weightsDir: string;
  /** Activation budget of one batched UNet evaluation (pipeline/batch.ts). */
  batchBudgetBytes?: number;
  /** Tokenizer folder for single-file checkpoints. */
  tokenizer?: string;
  /** Folder of LoRA .safetensors files requests name by file stem. */
  loraDir?: string;
  /** false: LoRA keys that match nothing are skipped with a warning instead of failing the request. */
  loraStrict: boolean;
  /** TAESD folder loaded beside the model: --taesd / TAESD, else a taesd/ folder in or next to the model
   * (`findTaesdBeside`); undefined: none (previews default to cheap, preview taesd is a 400). */
  taesd?: string;
  /** What decodes the final image: vae (default) or taesd (needs TAESD weights). */
  decoder: DecoderName;
  disableF16: boolean;
  /** --gpu-choices: forced GPU choices (checked here; the engine worker merges them over SD_GPU_FORCE). */
  gpuChoices?: string;
  /** --retune: measure the kernel-tile autotuning again rather than reuse the cache. */
  retune: boolean;
  /** Sizes built and run once while loading, so that "ready" means warm: the default size (the model's, or
   * --default-size) unless `--warmup none`, then those of --warmup. */
  warmup: WarmupSize[];
  /** Whether the default size is warmed (false with `--warmup none`). */
  warmupDefault: boolean;
  /** SD_WEBGPU_TEST_HOOKS=1: POST /debug/lose-device destroys the GPU device (tests of recovery). */
  testHooks: boolean;
  /** How long a running job may take to finish after SIGINT/SIGTERM before it is aborted. */
  shutdownGraceMs: number;
  /** --redis URL: the queue shared with other servers (queue/redis_queue.ts); absent: this server's own. */
  redis?: RedisQueueOptions;
  options: ServerOptions;
}

export const SERVE_USAGE =
  `serve [flags]                          HTTP server (web page, native and OpenAI-compatible API)
  --host H            HOST            listen address (default 127.0.0.1)
  --port N            PORT            listen port (default 8000)
  --model PATH        SD_MODEL        diffusers folder or single-file .safetensors checkpoint (also read
                                      from MODEL as before); without it: weights/sd-turbo, downloaded there
                                      first if absent
  --no-model                          serve without a model (generation answers 503)
  --weights-dir DIR   WEIGHTS_DIR     where the default model is looked for and downloaded (default weights)
  --tokenizer DIR     TOKENIZER       tokenizer folder for single-file checkpoints
  --lora-dir DIR      LORA_DIR        folder of LoRA .safetensors files, named by file stem in requests
                                      ("loras": [{name, scale}] or <lora:NAME:SCALE> in the prompt)
  --lora-strict B     LORA_STRICT     false: skip LoRA keys that match nothing with a warning (default true)
  --taesd DIR         TAESD           TAESD weights (config.json + diffusion_pytorch_model.safetensors) for
                                      previews and --decoder taesd; default: a taesd/ folder with a
                                      config.json in the model folder, else next to it. With TAESD the
                                      default preview is taesd
  --decoder NAME      DECODER         vae (default) or taesd: what decodes the final image; taesd is faster
                                      and lower quality (drafts, CPU-only hosts)
  --token T           API_TOKEN       require "Authorization: Bearer T" on /v1/*, /sdapi/* and /metrics
                                      (/sdapi/* also takes HTTP Basic auth with T as the password)
  --queue-length N    QUEUE_LENGTH    jobs allowed to wait behind the running one (default ${DEFAULT_SERVER_OPTIONS.maxQueued})
  --max-size PX       MAX_SIZE        largest width/height (default ${DEFAULT_SERVER_OPTIONS.maxSize})
  --max-steps N       MAX_STEPS       most denoising steps per request (default ${DEFAULT_SERVER_OPTIONS.maxSteps})
  --max-images N      MAX_IMAGES      most images per request: OpenAI n, num_images (default ${DEFAULT_SERVER_OPTIONS.maxImages})
  --batch-memory-mb N BATCH_MEMORY_MB activations one batched UNet call may hold; larger batches are split
                                      (default ${DEFAULT_BATCH_BUDGET_BYTES / 2 ** 20})
  --max-body-mb N     MAX_BODY_MB     largest request body (default ${
    DEFAULT_SERVER_OPTIONS.maxBodyBytes / 2 ** 20
  })
  --default-size PX   DEFAULT_SIZE    width/height when a request names none (default: the model's, e.g.
                                      512 for SD 1.5 and SD-Turbo, 768 for SD 2.x 768-v)
  --default-steps N   DEFAULT_STEPS   steps when a request names none (default: the model's, e.g. 50, or 1
                                      for SD-Turbo)
  --warmup LIST       WARMUP          more sizes to warm while loading, e.g. 512x512,768x768 (the default
                                      size is always warmed); "none" warms nothing
  --shutdown-grace S  SHUTDOWN_GRACE  seconds a running job may finish after SIGINT/SIGTERM (default 30)
  --redis URL         REDIS_URL       share one queue between servers through Redis (redis://host:6379);
                                      every server with a model takes jobs, any server answers for any job
  --redis-prefix P    REDIS_PREFIX    key prefix in Redis (default sd): servers with one prefix share a queue
  --no-worker         NO_WORKER       with --redis: take no jobs, load no model (a front end; NO_WORKER=1)
  --visibility-timeout S  VISIBILITY_TIMEOUT
                                      with --redis: seconds a running job's worker may stay silent before
                                      another worker takes the job over and reruns it (default 30)
  --no-f16                            force the f32 shader path
  --gpu-choices SPEC  SD_GPU_FORCE    force GPU choices, e.g. tiling=workgroup,f16=off (see README)
  --retune                            measure the kernel-tile autotuning again (cached per adapter)`;

type Env = Record<string, string | undefined>;

export function parseServeConfig(args: string[], env: Env): ServeConfig {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      model: { type: "string" },
      "no-model": { type: "boolean" },
      "weights-dir": { type: "string" },
      "batch-memory-mb": { type: "string" },
      tokenizer: { type: "string" },
      "lora-dir": { type: "string" },
      "lora-strict": { type: "string" },
      taesd: { type: "string" },
      decoder: { type: "string" },
      token: { type: "string" },
      "queue-length": { type: "string" },
      "max-size": { type: "string" },
      "max-steps": { type: "string" },
      "max-images": { type: "string" },
      "max-body-mb": { type: "string" },
      "default-size": { type: "string" },
      "default-steps": { type: "string" },
      "shutdown-grace": { type: "string" },
      warmup: { type: "string" },
      "no-f16": { type: "boolean" },
      "gpu-choices": { type: "string" },
      retune: { type: "boolean" },
      redis: { type: "string" },
      "redis-prefix": { type: "string" },
      "no-worker": { type: "boolean" },
      "visibility-timeout": { type: "string" },
    },
  });
  const gpuChoices = values["gpu-choices"];
  if (gpuChoices !== undefined) parseGpuChoices(gpuChoices, "--gpu-choices"); // errors before anything starts
  gpuChoicesFromEnv(); // a malformed SD_GPU_FORCE too
  const pick = (flag: keyof typeof values, name: string) => {
    const v = values[flag];
    return typeof v === "string"
      ? { v, what: `--${flag}` }
      : env[name] !== undefined && env[name] !== ""
      ? { v: env[name]!, what: name }
      : undefined;
  };
  const int = (flag: keyof typeof values, name: string, def: number, min: number, max: number): number => {
    const got = pick(flag, name);
    if (!got) return def;
    const n = Number(got.v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`${got.what} must be an integer between ${min} and ${max}, got "${got.v}"`);
    }
    return n;
  };
  const d = DEFAULT_SERVER_OPTIONS;
  const maxSize = int("max-size", "MAX_SIZE", d.maxSize, 8, 8192);
  if (maxSize % 8) throw new Error(`--max-size must be a multiple of 8, got ${maxSize}`);
  // Given explicitly, these override the model's own defaults; otherwise they stay undefined.
  const given = (flag: keyof typeof values, name: string) => pick(flag, name) !== undefined;
  const defaultSize = given("default-size", "DEFAULT_SIZE")
    ? int("default-size", "DEFAULT_SIZE", 0, 8, maxSize)
    : undefined;
  if (defaultSize !== undefined && defaultSize % 8) {
    throw new Error(`--default-size must be a multiple of 8, got ${defaultSize}`);
  }
  const maxSteps = int("max-steps", "MAX_STEPS", d.maxSteps, 1, 10_000);
  const token = pick("token", "API_TOKEN")?.v;
  const warmupGot = pick("warmup", "WARMUP");
  const warmup = parseWarmup(warmupGot, maxSize);
  const strict = pick("lora-strict", "LORA_STRICT");
  if (strict && strict.v !== "true" && strict.v !== "false") {
    throw new Error(`${strict.what} must be true or false, got "${strict.v}"`);
  }
  const model = pick("model", "SD_MODEL")?.v ?? (env.MODEL || undefined);
  const noModel = values["no-model"] ?? false;
  if (noModel && values.model !== undefined) throw new Error("--no-model and --model exclude each other");
  const weightsDir = pick("weights-dir", "WEIGHTS_DIR")?.v ?? "weights";
  // TAESD beside the model: the named one, or the default model's folder (server/default_model.ts).
  const { taesd, decoder } = parseTaesd(
    pick("taesd", "TAESD"),
    pick("decoder", "DECODER"),
    noModel ? undefined : model ?? `${weightsDir.replace(/\/+$/, "")}/sd-turbo`,
  );
  const batchMb = given("batch-memory-mb", "BATCH_MEMORY_MB")
    ? int("batch-memory-mb", "BATCH_MEMORY_MB", 0, 1, 1 << 20)
    : undefined;
  const redisUrl = pick("redis", "REDIS_URL")?.v;
  const noWorker = values["no-worker"] ?? env.NO_WORKER === "1";
  if (noWorker && !redisUrl) throw new Error("--no-worker needs --redis URL (a front end of a shared queue)");
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) {
    throw new Error(`--redis must be a redis:// or rediss:// URL, got "${redisUrl}"`);
  }
  return {
    hostname: pick("host", "HOST")?.v ?? "127.0.0.1",
    port: int("port", "PORT", 8000, 0, 65535),
    model: noModel ? undefined : model,
    noModel,
    weightsDir,
    batchBudgetBytes: batchMb === undefined ? undefined : batchMb * 2 ** 20,
    warmupDefault: warmupGot?.v.trim() !== "none",
    tokenizer: pick("tokenizer", "TOKENIZER")?.v,
    loraDir: pick("lora-dir", "LORA_DIR")?.v,
    loraStrict: strict?.v !== "false",
    taesd,
    decoder,
    disableF16: values["no-f16"] ?? false,
    gpuChoices,
    retune: values.retune ?? false,
    warmup,
    testHooks: env.SD_WEBGPU_TEST_HOOKS === "1",
    shutdownGraceMs: int("shutdown-grace", "SHUTDOWN_GRACE", 30, 0, 3600) * 1000,
    redis: redisUrl
      ? {
        url: redisUrl,
        prefix: pick("redis-prefix", "REDIS_PREFIX")?.v ?? "sd",
        worker: !noWorker,
        visibilityMs: int("visibility-timeout", "VISIBILITY_TIMEOUT", 30, 1, 3600) * 1000,
      }
      : undefined,
    options: {
      ...d,
      maxQueued: int("queue-length", "QUEUE_LENGTH", d.maxQueued, 0, 10_000),
      maxSize,
      maxSteps,
      maxImages: int("max-images", "MAX_IMAGES", d.maxImages, 1, 64),
      maxBodyBytes: int("max-body-mb", "MAX_BODY_MB", d.maxBodyBytes / 2 ** 20, 1, 4096) * 2 ** 20,
      defaultSize,
      defaultSteps: given("default-steps", "DEFAULT_STEPS")
        ? int("default-steps", "DEFAULT_STEPS", 0, 1, maxSteps)
        : undefined,
      token: token || undefined,
      taesd: taesd !== undefined,
    },
  };
}

/** The TAESD folder (given, or found beside the model) and the decoder, checked before anything loads. */
function parseTaesd(
  given: { v: string; what: string } | undefined,
  decoderGot: { v: string; what: string } | undefined,
  model: string | undefined,
): { taesd?: string; decoder: DecoderName } {
  const decoder = (decoderGot?.v ?? "vae") as DecoderName;
  if (!DECODERS.includes(decoder)) {
    throw new Error(`${decoderGot!.what} must be ${DECODERS.join(" or ")}, got "${decoderGot!.v}"`);
  }
  if (given) {
    try {
      Deno.statSync(`${given.v}/config.json`);
    } catch {
      throw new Error(`${given.what}: ${given.v} is not a TAESD folder (no config.json)`);
    }
  }
  // Without a model nothing is loaded, TAESD included.
  const taesd = model === undefined ? undefined : given?.v ?? findTaesdBeside(model);
  if (decoder === "taesd" && !taesd) {
    throw new Error(
      `${
        decoderGot!.what
      } taesd needs TAESD weights: --taesd DIR (TAESD), or a taesd/ folder in or next to ` +
        "the model",
    );
  }
  return { taesd, decoder };
}

/** `512x512,768x768` (or `none`) → the sizes to warm after the default size, without repeats. */
function parseWarmup(got: { v: string; what: string } | undefined, maxSize: number): WarmupSize[] {
  if (got?.v.trim() === "none") return [];
  const sizes: WarmupSize[] = [];
  for (const item of (got?.v ?? "").split(",").map((x) => x.trim()).filter(Boolean)) {
    const m = /^(\d+)x(\d+)$/.exec(item);
    const [width, height] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
    if (!m || [width, height].some((v) => v < 8 || v > maxSize || v % 8)) {
      throw new Error(
        `${
          got!.what
        } must list sizes like 512x512,768x768 (multiples of 8, at most ${maxSize}) or be "none", ` +
          `got "${item}"`,
      );
    }
    if (!sizes.some((s) => s.width === width && s.height === height)) sizes.push({ width, height });
  }
  return sizes;
}
