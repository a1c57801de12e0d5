// `weights.lock.json`: path, size, sha256 and commit of each finished file. It doubles as the pin list
// for later runs: a rerun whose files all match it (size, or sha256 with --verify) does not touch the
// network, and missing files come from the commit it recorded.

export const LOCK_FILE = "weights.lock.json";

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

export function setEntry(lock: WeightsLock, entry: LockEntry): void {
  lock.files = [...lock.files.filter((e) => e.path !== entry.path), entry];
}

/** Written to a temporary name and renamed, so the lock is never half-written either. */
export async function writeLock(path: string, lock: WeightsLock): Promise<void> {
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(lock, null, 2) + "\n");
  await Deno.rename(tmp, path);
}
