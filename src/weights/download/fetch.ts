// One file's transfer, resumable and checksum-checked. Why a file under its final name is always
// complete: bytes go to `path.part`; a later attempt or run continues it with `Range: bytes=N-` (206
// appends; 200 means the server ignored the range, so the part restarts; 416 restarts it too). Only when
// the part's size and hash match is it renamed into place; a checksum mismatch deletes the part and fails.

import { createHash } from "node:crypto";
import {
  type Context,
  DownloadError,
  errorText,
  httpError,
  RetriesExhausted,
  StallError,
  timedRequest,
  TransientError,
  withRetries,
} from "./http.ts";

/** What the file must turn out to be (from the hub's HEAD answer or the lock). */
export interface Expected {
  size: number | null;
  sha256: string | null;
  gitSha1: string | null;
}

/** One file's transfer as it goes, for whoever shows it (the weights command draws a bar). */
export interface TransferProgress {
  /** An attempt starts, with `done` bytes already in the part file. */
  start(done: number): void;
  update(done: number): void;
  /** The transfer ended, finished or failed. */
  stop(): void;
}

/** Makes the progress of one file: its path in the repository and its size (null: unknown). */
export type ProgressFactory = (path: string, total: number | null) => TransferProgress;

const noProgress: ProgressFactory = () => ({ start() {}, update() {}, stop() {} });

export async function downloadFile(
  ctx: Context,
  url: string,
  path: string,
  finalPath: string,
  expected: Expected,
  progressOf: ProgressFactory = noProgress,
): Promise<{ size: number; sha256: string }> {
  const part = `${finalPath}.part`;
  const progress = progressOf(path, expected.size);
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
  progress: TransferProgress,
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

// ---- hashes, files ----------------------------------------------------------------------------------------

export interface FileHashes {
  sha256: string;
  gitSha1: string | null;
}

/** sha256 of a file, plus its git blob SHA-1 when `gitSize` is given. Read in 8 MiB chunks. */
export async function hashFile(path: string, gitSize: number | null): Promise<FileHashes> {
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

export function matches(expected: Expected, got: FileHashes): boolean {
  if (expected.sha256) return got.sha256 === expected.sha256;
  if (expected.gitSha1) return got.gitSha1 === expected.gitSha1;
  return true;
}

export async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await Deno.stat(path);
    return s.isFile ? s.size : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  for (; v >= 1024 && u < units.length - 1; u++) v /= 1024;
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}
