// `serve` configuration from flags and environment variables (flags win), with errors naming the flag.

import { parseArgs } from "node:util";
import { DEFAULT_SERVER_OPTIONS, type ServerOptions } from "./options.ts";
import type { RedisQueueOptions } from "./queue/redis_queue.ts";
import type { WarmupSize } from "./worker/protocol.ts";

export interface ServeConfig {
  hostname: string;
  port: number;
  /** Diffusers folder or single-file checkpoint; undefined: serve without a model (generation → 503). */
  model?: string;
  /** Tokenizer folder for single-file checkpoints. */
  tokenizer?: string;
  disableF16: boolean;
  /** Sizes built and run once while loading, so that "ready" means warm: the default size, then those of
   * --warmup (none with `--warmup none`). */
  warmup: WarmupSize[];
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
  --model PATH        MODEL           diffusers folder or single-file .safetensors checkpoint
  --tokenizer DIR     TOKENIZER       tokenizer folder for single-file checkpoints
  --token T           API_TOKEN       require "Authorization: Bearer T" on /v1/* and /metrics
  --queue-length N    QUEUE_LENGTH    jobs allowed to wait behind the running one (default ${DEFAULT_SERVER_OPTIONS.maxQueued})
  --max-size PX       MAX_SIZE        largest width/height (default ${DEFAULT_SERVER_OPTIONS.maxSize})
  --max-steps N       MAX_STEPS       most denoising steps per request (default ${DEFAULT_SERVER_OPTIONS.maxSteps})
  --max-images N      MAX_IMAGES      most images per OpenAI request (default ${DEFAULT_SERVER_OPTIONS.maxImages})
  --max-body-mb N     MAX_BODY_MB     largest request body (default ${
    DEFAULT_SERVER_OPTIONS.maxBodyBytes / 2 ** 20
  })
  --default-size PX   DEFAULT_SIZE    width/height when a request names none (default ${DEFAULT_SERVER_OPTIONS.defaultSize})
  --default-steps N   DEFAULT_STEPS   steps when a request names none (default ${DEFAULT_SERVER_OPTIONS.defaultSteps})
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
  --no-f16                            force the f32 shader path`;

type Env = Record<string, string | undefined>;

export function parseServeConfig(args: string[], env: Env): ServeConfig {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      model: { type: "string" },
      tokenizer: { type: "string" },
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
      redis: { type: "string" },
      "redis-prefix": { type: "string" },
      "no-worker": { type: "boolean" },
      "visibility-timeout": { type: "string" },
    },
  });
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
  const defaultSize = int("default-size", "DEFAULT_SIZE", Math.min(d.defaultSize, maxSize), 8, maxSize);
  if (defaultSize % 8) throw new Error(`--default-size must be a multiple of 8, got ${defaultSize}`);
  const maxSteps = int("max-steps", "MAX_STEPS", d.maxSteps, 1, 10_000);
  const token = pick("token", "API_TOKEN")?.v;
  const warmup = parseWarmup(pick("warmup", "WARMUP"), defaultSize, maxSize);
  const redisUrl = pick("redis", "REDIS_URL")?.v;
  const noWorker = values["no-worker"] ?? env.NO_WORKER === "1";
  if (noWorker && !redisUrl) throw new Error("--no-worker needs --redis URL (a front end of a shared queue)");
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) {
    throw new Error(`--redis must be a redis:// or rediss:// URL, got "${redisUrl}"`);
  }
  return {
    hostname: pick("host", "HOST")?.v ?? "127.0.0.1",
    port: int("port", "PORT", 8000, 0, 65535),
    model: pick("model", "MODEL")?.v,
    tokenizer: pick("tokenizer", "TOKENIZER")?.v,
    disableF16: values["no-f16"] ?? false,
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
      defaultSteps: int("default-steps", "DEFAULT_STEPS", Math.min(d.defaultSteps, maxSteps), 1, maxSteps),
      token: token || undefined,
    },
  };
}

/** `512x512,768x768` (or `none`) → the sizes to warm, the default size first, without repeats. */
function parseWarmup(
  got: { v: string; what: string } | undefined,
  defaultSize: number,
  maxSize: number,
): WarmupSize[] {
  if (got?.v.trim() === "none") return [];
  const sizes: WarmupSize[] = [{ width: defaultSize, height: defaultSize }];
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
