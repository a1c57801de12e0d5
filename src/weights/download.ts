// `weights`: downloads exactly the fp16 diffusers files a model needs from the Hugging Face Hub into
// DIR/<model>/ (the layout src/weights/checkpoint.ts opens).
//
// Where each file comes from: `${HF_ENDPOINT:-https://huggingface.co}/{repo}/resolve/{revision}/{path}`,
// with `Authorization: Bearer $HF_TOKEN` when set. A HEAD request (redirects not followed, as
// huggingface_hub does) gives the file's size and checksum: LFS files answer with a redirect to the CDN
// carrying X-Linked-Size and X-Linked-Etag (the file's sha256); small git files answer 200 with their git
// blob SHA-1 as ETag. X-Repo-Commit pins the revision: every file of a run (and of later runs resuming it)
// comes from that one commit.
//
// Why a file under its final name is always complete: bytes go to `path.part`; a later attempt or run
// continues it with `Range: bytes=N-` (206 appends; 200 means the server ignored the range, so the part
// restarts; 416 restarts it too). Only when the part's size and hash match is it renamed into place; a
// checksum mismatch deletes the part and fails. `weights.lock.json` records path, size, sha256 and commit
// of each finished file and doubles as the pin list for later runs; a rerun whose files all match it
// (size, or sha256 with --verify) does not touch the network.
//
// Transient failures (connection lost mid-body, stalls, 408/429/5xx) are retried with exponential backoff,
// a bounded number of consecutive times; an attempt that received bytes resets the count.

import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import cliProgress from "cli-progress";

/** Every file a diffusers SD model needs for fp16 inference (configs and small files first). */
export const DIFFUSERS_FP16_FILES: readonly string[] = [
  "model_index.json",
  "scheduler/scheduler_config.json",
  "text_encoder/config.json",
  "tokenizer/merges.txt",
  "tokenizer/special_tokens_map.json",
  "tokenizer/tokenizer_config.json",
  "tokenizer/vocab.json",
  "unet/config.json",
  "vae/config.json",
  "text_encoder/model.fp16.safetensors",
  "vae/diffusion_pytorch_model.fp16.safetensors",
  "unet/diffusion_pytorch_model.fp16.safetensors",
];

export interface HubModel {
  repo: string;
  files: readonly string[];
}

export const HUB_MODELS = {
  sd15: { repo: "stable-diffusion-v1-5/stable-diffusion-v1-5", files: DIFFUSERS_FP16_FILES },
  sd21: { repo: "stabilityai/stable-diffusion-2-1", files: DIFFUSERS_FP16_FILES },
  "sd-turbo": { repo: "stabilityai/sd-turbo", files: DIFFUSERS_FP16_FILES },
} as const satisfies Record<string, HubModel>;

export type HubModelName = keyof typeof HUB_MODELS;

export const DEFAULT_ENDPOINT = "https://huggingface.co";
export const LOCK_FILE = "weights.lock.json";

export interface DownloadOptions {
  model: HubModelName;
  /** Parent folder: files go to `${dir}/${model}/`. */
  dir: string;
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Hub address (default https://huggingface.co). */
  endpoint?: string;
  /** Hugging Face access token, sent as `Authorization: Bearer`. */
  token?: string;
  /** Re-hash files already present instead of trusting their size and the lock. */
  verify?: boolean;
  /** Consecutive failed attempts allowed per request after the first (default 5). */
  retries?: number;
  /** First backoff delay; doubles per failure, capped at 30 s (default 1000). */
  retryDelayMs?: number;
  /** A request that receives nothing for this long is aborted and retried (default 60 000). */
  stallTimeoutMs?: number;
  /** Show a cli-progress bar (it draws only on a terminal unless `progressStream` says otherwise). */
  progress?: boolean;
  /** Where the bar draws (default process.stderr); tests pass a fake stream. */
  progressStream?: NodeJS.WritableStream;
  /** One line per event (default console.log). */
  log?: (line: string) => void;
}

export interface LockEntry {
  path: string;
  size: number;
  sha256: string;
  /** Commit the file was downloaded from. */
  revision: string;
}

export interface WeightsLock {
  model: string;
  repo: string;
  /** Revision as requested (branch, tag or commit). */
  revision: string;
  /** The commit it resolved to; later runs download missing files from this commit. */
  commit: string | null;
  files: LockEntry[];
}

export interface DownloadResult {
  modelDir: string;
  lockPath: string;
  commit: string | null;
  downloaded: string[];
  /** Already complete (matching the lock, or an unlocked file whose hash matched the hub's). */
  skipped: string[];
}

/** A failure that retrying will not fix; its message is meant for the user. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

/** Transient failures went on for longer than the retries allowed. */
class RetriesExhausted extends DownloadError {
  override name = "RetriesExhausted";
}

/** A failure worth retrying; `progressed` when the attempt received bytes before it failed. */
class TransientError extends Error {
  override name = "TransientError";
  constructor(message: string, readonly progressed = false, readonly retryAfterMs = 0) {
    super(message);
  }
}

interface Context {
  repo: string;
  endpoint: string;
  revision: string;
  headers: Record<string, string>;
  hasToken: boolean;
  retries: number;
  retryDelayMs: number;
  stallTimeoutMs: number;
  log: (line: string) => void;
  progress: boolean;
  progressStream?: NodeJS.WritableStream;
}

interface RemoteFile {
  path: string;
  size: number | null;
  /** X-Linked-Etag of an LFS file. */
  sha256: string | null;
  /** ETag of a regular git file: sha1("blob {size}\0" + content). */
  gitSha1: string | null;
  /** X-Repo-Commit. */
  commit: string | null;
}

interface Expected {
  size: number | null;
  sha256: string | null;
  gitSha1: string | null;
}

// ---------------------------------------------------------------------------------------------------------

export async function downloadModel(opts: DownloadOptions): Promise<DownloadResult> {
  const spec: HubModel = HUB_MODELS[opts.model];
  if (!spec) throw new DownloadError(`unknown model "${opts.model}" (${Object.keys(HUB_MODELS).join(", ")})`);
  const endpoint = (opts.endpoint || DEFAULT_ENDPOINT).replace(/\/+$/, "");
  const revision = opts.revision ?? "main";
  const headers: Record<string, string> = {
    "accept-encoding": "identity", // sizes and hashes are of the stored bytes
    "user-agent": "sd-webgpu-weights",
  };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const ctx: Context = {
    repo: spec.repo,
    endpoint,
    revision,
    headers,
    hasToken: !!opts.token,
    retries: opts.retries ?? 5,
    retryDelayMs: opts.retryDelayMs ?? 1000,
    stallTimeoutMs: opts.stallTimeoutMs ?? 60_000,
    log: opts.log ?? ((line) => console.log(line)),
    progress: opts.progress ?? false,
    progressStream: opts.progressStream,
  };
  const modelDir = `${opts.dir.replace(/\/+$/, "") || "."}/${opts.model}`;
  const lockPath = `${modelDir}/${LOCK_FILE}`;

  const previous = await readLock(lockPath, ctx.log);
  const lockMatches = previous !== null && previous.repo === spec.repo && previous.revision === revision;
  if (previous && !lockMatches) {
    ctx.log(
      `${lockPath} is for ${previous.repo}@${previous.revision}; starting a new lock for ${spec.repo}@${revision} ` +
        `(files already present are kept if their hashes match)`,
    );
  }
  const lock: WeightsLock = lockMatches ? previous : {
    model: opts.model,
    repo: spec.repo,
    revision,
    commit: null,
    files: [],
  };
  const pinned = new Map(lock.files.map((e) => [e.path, e]));

  // Local pass: files that match the lock need no network at all.
  const skipped: string[] = [];
  const missing: string[] = [];
  for (const path of spec.files) {
    const entry = pinned.get(path);
    const finalPath = `${modelDir}/${path}`;
    const size = await fileSize(finalPath);
    if (entry && size === entry.size) {
      if (!opts.verify) {
        skipped.push(path);
        continue;
      }
      const got = await hashFile(finalPath, null);
      if (got.sha256 === entry.sha256) {
        skipped.push(path);
        continue;
      }
      ctx.log(
        `${path}: sha256 ${got.sha256} does not match ${LOCK_FILE} (${entry.sha256}); downloading again`,
      );
    } else if (entry && size !== null) {
      ctx.log(`${path}: ${size} bytes on disk, ${entry.size} in ${LOCK_FILE}; downloading again`);
    }
    missing.push(path);
  }
  if (missing.length === 0) {
    ctx.log(`${modelDir}: all ${spec.files.length} files present and matching ${LOCK_FILE}`);
    return { modelDir, lockPath, commit: lock.commit, downloaded: [], skipped };
  }

  ctx.log(`${spec.repo}@${lock.commit ?? revision} → ${modelDir}: ${missing.length} file(s) to fetch`);
  const downloaded: string[] = [];
  for (const path of missing) {
    const remote = await withRetries(ctx, path, () => headFile(ctx, lock.commit ?? revision, path));
    if (lock.commit === null) {
      lock.commit = remote.commit ?? revision;
      if (remote.commit && remote.commit !== revision) {
        ctx.log(`revision ${revision} is commit ${remote.commit}`);
      }
      // Pinned at once, so parts left by an interrupted run are continued from the same commit.
      await Deno.mkdir(modelDir, { recursive: true });
      await writeLock(lockPath, lock);
    }
    const expected = expectedOf(ctx, remote, pinned.get(path));
    const finalPath = `${modelDir}/${path}`;
    await Deno.mkdir(dirname(finalPath), { recursive: true });

    // A file already in place (copied by hand, or from another lock) is kept if it checks out.
    const existingSize = await fileSize(finalPath);
    if (existingSize !== null && (expected.sha256 || expected.gitSha1)) {
      if (expected.size === null || existingSize === expected.size) {
        const got = await hashFile(finalPath, expected.gitSha1 ? existingSize : null);
        if (matches(expected, got)) {
          ctx.log(`${path}: already present, checksum ok`);
          setEntry(lock, { path, size: existingSize, sha256: got.sha256, revision: lock.commit });
          await writeLock(lockPath, lock);
          skipped.push(path);
          continue;
        }
      }
    }

    const url = resolveUrl(ctx, lock.commit, path);
    const { size, sha256 } = await downloadFile(ctx, url, path, finalPath, expected);
    setEntry(lock, { path, size, sha256, revision: lock.commit });
    await writeLock(lockPath, lock);
    downloaded.push(path);
  }
  ctx.log(`${modelDir}: complete (${downloaded.length} downloaded, ${skipped.length} already present)`);
  return { modelDir, lockPath, commit: lock.commit, downloaded, skipped };
}

// ---- hub requests -----------------------------------------------------------------------------------------

function resolveUrl(ctx: Context, revision: string, path: string): string {
  const repo = ctx.repo.split("/").map(encodeURIComponent).join("/");
  const file = path.split("/").map(encodeURIComponent).join("/");
  return `${ctx.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file}`;
}

/** Size, checksum and commit of one file from a HEAD request (relative redirects followed, CDN ones not). */
async function headFile(ctx: Context, revision: string, path: string): Promise<RemoteFile> {
  let url = resolveUrl(ctx, revision, path);
  for (let hops = 0;; hops++) {
    const res = await timedRequest(ctx, url, { method: "HEAD", redirect: "manual" });
    await res.body?.cancel();
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location && isRelative(location) && hops < 5) {
      url = new URL(location, url).href; // renamed repository
      continue;
    }
    if (res.status >= 400) throw httpError(ctx, res, path, revision, url);
    const linkedEtag = res.headers.get("x-linked-etag");
    const etag = normalizeEtag(linkedEtag ?? res.headers.get("etag"));
    const linkedSize = res.headers.get("x-linked-size");
    const length = res.status === 200 ? res.headers.get("content-length") : null;
    const size = parseSize(linkedSize ?? length);
    return {
      path,
      size,
      sha256: etag && /^[0-9a-f]{64}$/.test(etag) ? etag : null,
      gitSha1: !linkedEtag && etag && /^[0-9a-f]{40}$/.test(etag) ? etag : null,
      commit: res.headers.get("x-repo-commit"),
    };
  }
}

function isRelative(location: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith("//");
}

function normalizeEtag(etag: string | null): string | null {
  if (!etag) return null;
  return etag.replace(/^W\//, "").replace(/"/g, "").trim().toLowerCase();
}

function parseSize(v: string | null): number | null {
  if (v === null || !/^\d+$/.test(v.trim())) return null;
  return Number(v);
}

/** Pins from the lock win; a hub that now reports something else for a pinned file is an error. */
function expectedOf(ctx: Context, remote: RemoteFile, pin: LockEntry | undefined): Expected {
  if (pin) {
    if (remote.sha256 && remote.sha256 !== pin.sha256) {
      throw new DownloadError(
        `${ctx.repo}/${remote.path}: the hub reports sha256 ${remote.sha256}, but ${LOCK_FILE} pins ` +
          `${pin.sha256} (commit ${pin.revision}); delete the lock file to accept the new file`,
      );
    }
    if (remote.size !== null && remote.size !== pin.size) {
      throw new DownloadError(
        `${ctx.repo}/${remote.path}: the hub reports ${remote.size} bytes, but ${LOCK_FILE} pins ` +
          `${pin.size} (commit ${pin.revision}); delete the lock file to accept the new file`,
      );
    }
    return { size: pin.size, sha256: pin.sha256, gitSha1: remote.gitSha1 };
  }
  if (!remote.sha256 && !remote.gitSha1) {
    ctx.log(
      `${remote.path}: the hub reported no checksum; recording the downloaded file's sha256 unverified`,
    );
  }
  return { size: remote.size, sha256: remote.sha256, gitSha1: remote.gitSha1 };
}

/** fetch with a stall timeout, network failures turned into DownloadError (fatal) or TransientError. */
async function timedRequest(
  ctx: Context,
  url: string,
  init: { method?: string; redirect?: RequestRedirect; headers?: Record<string, string> },
  controller = new AbortController(),
): Promise<Response> {
  const timer = setTimeout(() => controller.abort(new StallError(ctx.stallTimeoutMs)), ctx.stallTimeoutMs);
  try {
    return await fetch(url, {
      method: init.method ?? "GET",
      redirect: init.redirect ?? "follow",
      headers: { ...ctx.headers, ...init.headers },
      signal: controller.signal,
    });
  } catch (e) {
    throw networkError(ctx, e, url);
  } finally {
    clearTimeout(timer);
  }
}

class StallError extends Error {
  constructor(ms: number) {
    super(`no data for ${ms / 1000} s`);
  }
}

function errorText(e: unknown): string {
  const parts: string[] = [];
  for (let x: unknown = e, depth = 0; x && depth < 4; x = (x as { cause?: unknown }).cause, depth++) {
    parts.push(x instanceof Error ? x.message : String(x));
  }
  return parts.join(": ");
}

function networkError(ctx: Context, e: unknown, url: string): Error {
  if (e instanceof StallError) return new TransientError(e.message);
  const text = errorText(e);
  const origin = new URL(url).origin;
  const what = origin === new URL(ctx.endpoint).origin
    ? `the Hugging Face endpoint ${origin} (set HF_ENDPOINT to use another)`
    : origin;
  if (/connection refused|os error 111|ECONNREFUSED/i.test(text)) {
    return new DownloadError(`cannot connect to ${what}: connection refused`);
  }
  if (/dns error|failed to lookup|name or service not known|nodename nor servname|no address/i.test(text)) {
    return new DownloadError(`cannot resolve the host of ${what}: ${text} (offline?)`);
  }
  return new TransientError(`request to ${origin} failed: ${text}`);
}

function httpError(ctx: Context, res: Response, path: string, revision: string, url: string): Error {
  const code = res.headers.get("x-error-code") ?? "";
  const hubMessage = res.headers.get("x-error-message");
  const detail = `HTTP ${res.status}${code ? ` ${code}` : ""}${hubMessage ? `: ${hubMessage}` : ""}`;
  const tokenHint = ctx.hasToken
    ? "HF_TOKEN is set but was refused: check that it is valid and that its account accepted the model's license"
    : "gated or private repositories need a token: accept the license on the model's page and set HF_TOKEN";
  if (res.status === 401 || res.status === 403) {
    if (code === "RepoNotFound") {
      return new DownloadError(
        `repository ${ctx.repo} not found at ${ctx.endpoint} (${detail}); ${tokenHint}`,
      );
    }
    return new DownloadError(`access to ${path} in ${ctx.repo} was refused (${detail}); ${tokenHint}`);
  }
  if (res.status === 404) {
    if (code === "RevisionNotFound") {
      return new DownloadError(`revision "${revision}" not found in ${ctx.repo} (${detail})`);
    }
    if (code === "RepoNotFound") {
      return new DownloadError(`repository ${ctx.repo} not found at ${ctx.endpoint} (${detail})`);
    }
    return new DownloadError(`${path} not found in ${ctx.repo} at revision ${revision} (${detail}, ${url})`);
  }
  if (res.status === 408 || res.status === 429 || res.status >= 500) {
    const retryAfter = Number(res.headers.get("retry-after"));
    return new TransientError(
      `${path}: ${detail}`,
      false,
      Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter, 60) * 1000 : 0,
    );
  }
  return new DownloadError(`${path} from ${ctx.repo}: unexpected ${detail} (${url})`);
}

async function withRetries<T>(ctx: Context, what: string, attempt: () => Promise<T>): Promise<T> {
  let failures = 0;
  for (;;) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof TransientError)) throw e;
      failures = e.progressed ? 1 : failures + 1;
      if (failures > ctx.retries) {
        throw new RetriesExhausted(
          `${what}: giving up after ${failures} failed attempt${failures > 1 ? "s" : ""}: ${e.message}`,
        );
      }
      const backoff = Math.min(ctx.retryDelayMs * 2 ** (failures - 1), 30_000) * (0.75 + Math.random() / 4);
      const delay = Math.max(backoff, e.retryAfterMs);
      ctx.log(`${what}: ${e.message}; retry ${failures}/${ctx.retries} in ${(delay / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

// ---- one file ----------------------------------------------------------------------------------------------

async function downloadFile(
  ctx: Context,
  url: string,
  path: string,
  finalPath: string,
  expected: Expected,
): Promise<{ size: number; sha256: string }> {
  const part = `${finalPath}.part`;
  const progress = new FileProgress(ctx, path, expected.size);
  ctx.log(`${path}: fetching ${expected.size === null ? "(size unknown)" : formatBytes(expected.size)}`);
  try {
    await withRetries(ctx, path, () => fetchIntoPart(ctx, url, path, part, expected, progress));
  } catch (e) {
    progress.stop();
    const kept = await fileSize(part);
    if (e instanceof RetriesExhausted && kept) {
      throw new DownloadError(`${e.message}; ${kept} bytes are kept in ${part}: run again to resume`);
    }
    throw e;
  }
  progress.stop();

  const size = (await fileSize(part)) ?? 0;
  if (expected.size !== null && size !== expected.size) {
    await removeIfExists(part);
    throw new DownloadError(`${path}: got ${size} bytes, expected ${expected.size}; deleted ${part}`);
  }
  if (size > 256 * 2 ** 20) ctx.log(`${path}: verifying sha256 of ${formatBytes(size)}`);
  const got = await hashFile(part, expected.gitSha1 ? size : null);
  if (!matches(expected, got)) {
    await removeIfExists(part);
    const [kind, want, have] = expected.sha256
      ? ["sha256", expected.sha256, got.sha256]
      : ["git blob sha1", expected.gitSha1, got.gitSha1];
    throw new DownloadError(
      `${path} from ${ctx.repo}: ${kind} mismatch: expected ${want}, got ${have}; ` +
        `deleted the partial file ${part} (run again to download it afresh)`,
    );
  }
  await Deno.rename(part, finalPath);
  ctx.log(
    `${path}: ${formatBytes(size)}, ${
      expected.sha256 ? "sha256" : expected.gitSha1 ? "git sha1" : "size"
    } ok`,
  );
  return { size, sha256: got.sha256 };
}

/** One attempt: continue `part` from where it stopped (or start it), until the body ends. */
async function fetchIntoPart(
  ctx: Context,
  url: string,
  path: string,
  part: string,
  expected: Expected,
  progress: FileProgress,
): Promise<void> {
  let offset = (await fileSize(part)) ?? 0;
  if (expected.size !== null && offset > expected.size) {
    ctx.log(`${path}: ${part} is longer than the file (${offset} > ${expected.size}); starting over`);
    await removeIfExists(part);
    offset = 0;
  }
  if (expected.size !== null && offset === expected.size) return; // complete: the caller verifies it
  if (offset > 0) ctx.log(`${path}: resuming at byte ${offset}`);

  const controller = new AbortController();
  const res = await timedRequest(
    ctx,
    url,
    { headers: offset > 0 ? { range: `bytes=${offset}-` } : {} },
    controller,
  );
  let truncate = false;
  if (res.status === 206) {
    const range = parseContentRange(res.headers.get("content-range"));
    if (!range || range.start !== offset) {
      await res.body?.cancel();
      await removeIfExists(part);
      throw new TransientError(
        `asked for bytes ${offset}- but got "${res.headers.get("content-range")}"; starting over`,
      );
    }
  } else if (res.status === 200) {
    if (offset > 0) {
      ctx.log(`${path}: the server ignored the Range request (200, not 206); starting over from byte 0`);
      truncate = true;
      offset = 0;
    }
  } else if (res.status === 416) {
    await res.body?.cancel();
    const total = parseContentRange(res.headers.get("content-range"))?.total;
    if (expected.size === null && total === offset) return; // already complete
    await removeIfExists(part);
    throw new TransientError(`range ${offset}- not satisfiable (HTTP 416); starting over`);
  } else {
    await res.body?.cancel();
    throw httpError(ctx, res, path, ctx.revision, url);
  }
  if (!res.body) throw new TransientError("response without a body");

  progress.start(offset);
  const file = await Deno.open(
    part,
    truncate ? { write: true, create: true, truncate: true } : {
      write: true,
      create: true,
      append: true,
    },
  );
  let progressed = false;
  let stall = setTimeout(() => controller.abort(new StallError(ctx.stallTimeoutMs)), ctx.stallTimeoutMs);
  try {
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        clearTimeout(stall);
        stall = setTimeout(() => controller.abort(new StallError(ctx.stallTimeoutMs)), ctx.stallTimeoutMs);
        if (expected.size !== null && offset + value.length > expected.size) {
          await reader.cancel();
          throw new DownloadError(
            `${path}: the server sent more than the ${expected.size} bytes the hub announced`,
          );
        }
        for (let written = 0; written < value.length;) written += await file.write(value.subarray(written));
        offset += value.length;
        progressed = true;
        progress.update(offset);
      }
    } catch (e) {
      if (e instanceof DownloadError) {
        await removeIfExists(part);
        throw e;
      }
      const reason = controller.signal.aborted && controller.signal.reason instanceof StallError
        ? controller.signal.reason.message
        : errorText(e);
      throw new TransientError(`connection lost at byte ${offset}: ${reason}`, progressed);
    }
    await file.syncData();
  } finally {
    clearTimeout(stall);
    file.close();
  }
  if (expected.size !== null && offset < expected.size) {
    throw new TransientError(`connection closed at byte ${offset} of ${expected.size}`, progressed);
  }
}

function parseContentRange(v: string | null): { start: number; total: number | null } | null {
  if (!v) return null;
  const m = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return null;
  return { start: m[1] === undefined ? -1 : Number(m[1]), total: m[2] === "*" ? null : Number(m[2]) };
}

// ---- hashes, files, lock ----------------------------------------------------------------------------------

interface FileHashes {
  sha256: string;
  gitSha1: string | null;
}

/** sha256 of a file, plus its git blob SHA-1 when `gitSize` is given. Read in 8 MiB chunks. */
async function hashFile(path: string, gitSize: number | null): Promise<FileHashes> {
  const sha256 = createHash("sha256");
  const sha1 = gitSize === null ? null : createHash("sha1").update(`blob ${gitSize}\0`);
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(8 * 2 ** 20);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      const chunk = buf.subarray(0, n);
      sha256.update(chunk);
      sha1?.update(chunk);
    }
  } finally {
    file.close();
  }
  return { sha256: sha256.digest("hex"), gitSha1: sha1 ? sha1.digest("hex") : null };
}

function matches(expected: Expected, got: FileHashes): boolean {
  if (expected.sha256) return got.sha256 === expected.sha256;
  if (expected.gitSha1) return got.gitSha1 === expected.gitSha1;
  return true;
}

async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await Deno.stat(path);
    return s.isFile ? s.size : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}

export async function readLock(
  path: string,
  log: (line: string) => void = () => {},
): Promise<WeightsLock | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const lock = JSON.parse(text) as WeightsLock;
    const ok = typeof lock.repo === "string" && typeof lock.revision === "string" &&
      Array.isArray(lock.files) &&
      lock.files.every((f) =>
        typeof f.path === "string" && Number.isInteger(f.size) && /^[0-9a-f]{64}$/.test(f.sha256)
      );
    if (ok) return lock;
  } catch {
    // fall through
  }
  log(`${path} is not a valid lock file; ignoring it (files are checked against the hub again)`);
  return null;
}

function setEntry(lock: WeightsLock, entry: LockEntry): void {
  lock.files = [...lock.files.filter((e) => e.path !== entry.path), entry];
}

/** Written to a temporary name and renamed, so the lock is never half-written either. */
async function writeLock(path: string, lock: WeightsLock): Promise<void> {
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(lock, null, 2) + "\n");
  await Deno.rename(tmp, path);
}

// ---- progress ---------------------------------------------------------------------------------------------

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  for (; v >= 1024 && u < units.length - 1; u++) v /= 1024;
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** A cli-progress bar per file: bytes, rate and ETA; nothing when progress is off. */
class FileProgress {
  private bar: cliProgress.SingleBar | null = null;
  private startedAt = 0;
  private startBytes = 0;

  constructor(
    private readonly ctx: Context,
    private readonly path: string,
    private readonly total: number | null,
  ) {}

  start(done: number): void {
    if (!this.ctx.progress || this.total === null) return;
    this.startedAt = performance.now();
    this.startBytes = done;
    if (!this.bar) {
      this.bar = new cliProgress.SingleBar({
        format: "{bar} {percentage}% | {done}/{size} | {rate} | eta {eta_formatted} | {file}",
        hideCursor: true,
        stream: this.ctx.progressStream,
        noTTYOutput: this.ctx.progressStream !== undefined,
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

// ---- command ----------------------------------------------------------------------------------------------

const MODEL_LIST = Object.entries(HUB_MODELS).map(([name, m]) => `${name} (${m.repo})`).join(", ");

export const WEIGHTS_USAGE =
  `usage: weights [--model NAME] [--dir DIR] [--revision REV] [--verify] [--retries N] [--quiet]
  Downloads the fp16 diffusers files of a model from the Hugging Face Hub into DIR/<model>/, resumably,
  each checked against its sha256 and recorded in DIR/<model>/${LOCK_FILE}.
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
    progress: !values.quiet,
  });
  console.log(`ready: serve it with --model ${result.modelDir}`);
  return 0;
}
