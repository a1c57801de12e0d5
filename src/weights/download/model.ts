// Downloading a model: exactly the fp16 diffusers files it needs, from the Hugging Face Hub into
// DIR/<model>/ (the layout src/models/checkpoint/ opens), every file checked and recorded in the lock.

import {
  DEFAULT_ENDPOINT,
  headFile,
  HUB_MODELS,
  type HubModel,
  type HubModelName,
  type RemoteFile,
  resolveUrl,
} from "./hub.ts";
import { downloadFile, type Expected, fileSize, hashFile, matches, type ProgressFactory } from "./fetch.ts";
import { type Context, DownloadError, withRetries } from "./http.ts";
import { LOCK_FILE, type LockEntry, readLock, setEntry, type WeightsLock, writeLock } from "./lock.ts";

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
  /** Reports each file's transfer (the weights command draws a progress bar); default: nothing. */
  progress?: ProgressFactory;
  /** Reports the whole model's transfer: bytes on disk of the files to fetch, of `totalBytes` (null while a
   * size is unknown), once every file's size is known and then as bytes arrive. */
  onBytes?: (p: ModelTransfer) => void;
  /** One line per event (default console.log). */
  log?: (line: string) => void;
}

export interface ModelTransfer {
  bytes: number;
  totalBytes: number | null;
  /** The file being fetched. */
  file?: string;
}

export interface DownloadResult {
  modelDir: string;
  lockPath: string;
  commit: string | null;
  downloaded: string[];
  /** Already complete (matching the lock, or an unlocked file whose hash matched the hub's). */
  skipped: string[];
}

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
  // Every file's size and checksum first (one HEAD each), so the whole transfer's size is known.
  const remotes = new Map<string, RemoteFile>();
  for (const path of missing) {
    const remote = await withRetries(ctx, path, () => headFile(ctx, lock.commit ?? revision, path));
    remotes.set(path, remote);
    if (lock.commit === null) {
      lock.commit = remote.commit ?? revision;
      if (remote.commit && remote.commit !== revision) {
        ctx.log(`revision ${revision} is commit ${remote.commit}`);
      }
      // Pinned at once, so parts left by an interrupted run are continued from the same commit.
      await Deno.mkdir(modelDir, { recursive: true });
      await writeLock(lockPath, lock);
    }
  }
  const sizes = [...remotes.values()].map((r) => r.size);
  const totalBytes = sizes.includes(null) ? null : (sizes as number[]).reduce((a, b) => a + b, 0);
  const commit = lock.commit ?? revision;
  let finished = 0;
  opts.onBytes?.({ bytes: 0, totalBytes });
  const downloaded: string[] = [];
  for (const path of missing) {
    const remote = remotes.get(path)!;
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
          setEntry(lock, { path, size: existingSize, sha256: got.sha256, revision: commit });
          await writeLock(lockPath, lock);
          skipped.push(path);
          finished += existingSize;
          opts.onBytes?.({ bytes: finished, totalBytes, file: path });
          continue;
        }
      }
    }

    const url = resolveUrl(ctx, commit, path);
    const progress = opts.onBytes
      ? withTotals(opts.progress, (done) => {
        opts.onBytes!({ bytes: finished + done, totalBytes, file: path });
      })
      : opts.progress;
    const { size, sha256 } = await downloadFile(ctx, url, path, finalPath, expected, progress);
    finished += size;
    setEntry(lock, { path, size, sha256, revision: commit });
    await writeLock(lockPath, lock);
    downloaded.push(path);
  }
  ctx.log(`${modelDir}: complete (${downloaded.length} downloaded, ${skipped.length} already present)`);
  return { modelDir, lockPath, commit: lock.commit, downloaded, skipped };
}

/** The factory's progress (if any), also telling `onDone` each file's bytes so far. */
function withTotals(inner: ProgressFactory | undefined, onDone: (done: number) => void): ProgressFactory {
  return (path, total) => {
    const p = inner?.(path, total);
    return {
      start: (done) => {
        p?.start(done);
        onDone(done);
      },
      update: (done) => {
        p?.update(done);
        onDone(done);
      },
      stop: () => p?.stop(),
    };
  };
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

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}
