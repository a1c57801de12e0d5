// Requests to the hub: a stall timeout on every request, failures sorted into fatal ones (DownloadError,
// with a message meant for the user) and transient ones (connection lost mid-body, stalls, 408/429/5xx),
// which are retried with exponential backoff a bounded number of consecutive times; an attempt that
// received bytes resets the count.

/** A failure that retrying will not fix; its message is meant for the user. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

/** Transient failures went on for longer than the retries allowed. */
export class RetriesExhausted extends DownloadError {
  override name = "RetriesExhausted";
}

/** A failure worth retrying; `progressed` when the attempt received bytes before it failed. */
export class TransientError extends Error {
  override name = "TransientError";
  constructor(message: string, readonly progressed = false, readonly retryAfterMs = 0) {
    super(message);
  }
}

/** One download run: where it asks, with which headers, and how patiently. */
export interface Context {
  repo: string;
  endpoint: string;
  revision: string;
  headers: Record<string, string>;
  hasToken: boolean;
  retries: number;
  retryDelayMs: number;
  stallTimeoutMs: number;
  log: (line: string) => void;
}

/** fetch with a stall timeout, network failures turned into DownloadError (fatal) or TransientError. */
export async function timedRequest(
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

export class StallError extends Error {
  constructor(ms: number) {
    super(`no data for ${ms / 1000} s`);
  }
}

export function errorText(e: unknown): string {
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

export function httpError(ctx: Context, res: Response, path: string, revision: string, url: string): Error {
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

export async function withRetries<T>(ctx: Context, what: string, attempt: () => Promise<T>): Promise<T> {
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
