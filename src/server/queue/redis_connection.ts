// One server's connections to Redis (ioredis): commands and scripts, pub/sub, and (for a worker) one for
// blocking reads, which would stall every other command on a shared connection. Each reconnects by itself
// with a short backoff. Commands fail at once while disconnected (no offline queue), so an HTTP request
// answers 503 instead of hanging; /healthz reports `redis` as connecting, ok or reconnecting.
//
// Pub/sub only wakes readers early: a message lost in a reconnect delays a reader by its poll interval,
// never loses an event, because the events themselves are read from streams.

import { Redis, type RedisOptions } from "ioredis";
import { UnavailableError } from "../engine_host.ts";
import { keys, type ScriptName, SCRIPTS } from "./redis_scripts.ts";

export type RedisHealth = "connecting" | "ok" | "reconnecting" | "closed";

type ScriptFn = (...args: (string | number)[]) => Promise<unknown>;

export class RedisConnection {
  readonly command: Redis;
  readonly subscriber: Redis;
  #blocking?: Redis;
  readonly keys: ReturnType<typeof keys>;
  #everReady = false;
  #closed = false;
  #waiters = new Map<string, Set<() => void>>();
  #onCancel?: (jobId: string) => void;

  constructor(readonly url: string, readonly prefix: string) {
    this.keys = keys(prefix);
    this.command = this.#client("commands", { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      this.command.defineCommand(name, { numberOfKeys: 0, lua });
    }
    this.command.on("ready", () => (this.#everReady = true));
    // Subscriptions made before the first connection are queued and sent on it, and renewed after every
    // reconnect (autoResubscribe).
    this.subscriber = this.#client("pub/sub", { enableOfflineQueue: true, maxRetriesPerRequest: null });
    this.subscriber.on("message", (channel: string, jobId: string) => {
      if (channel === this.keys.eventsChannel) this.#wake(jobId);
      else if (channel === this.keys.cancelChannel) this.#onCancel?.(jobId);
    });
    // Messages may have been missed while it was away: every reader looks again.
    this.subscriber.on("ready", () => this.#wakeAll());
    this.subscriber.subscribe(this.keys.eventsChannel, this.keys.cancelChannel).catch(() => {});
  }

  /** The connection for XREADGROUP BLOCK (made on first use: only workers read that way). */
  get blocking(): Redis {
    this.#blocking ??= this.#client("worker", { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    return this.#blocking;
  }

  /** Closes the blocking connection (a pending XREADGROUP fails at once), if there is one. */
  closeBlocking(): void {
    this.#blocking?.disconnect();
  }

  get health(): RedisHealth {
    if (this.#closed) return "closed";
    if (this.command.status === "ready") return "ok";
    return this.#everReady ? "reconnecting" : "connecting";
  }

  get ready(): boolean {
    return this.command.status === "ready";
  }

  /** Runs one of redis_scripts.ts's scripts; the prefix is its first argument. Throws UnavailableError
   * when Redis cannot be reached. */
  async script(name: ScriptName, ...args: (string | number)[]): Promise<unknown> {
    if (!this.ready) throw this.unavailable();
    try {
      return await (this.command as unknown as Record<ScriptName, ScriptFn>)[name](this.prefix, ...args);
    } catch (e) {
      throw this.ready ? e : this.unavailable();
    }
  }

  unavailable(): UnavailableError {
    return new UnavailableError(`the shared queue is unavailable: Redis is ${this.health}`);
  }

  /** Called with a job id for each cancel published (workers). */
  onCancel(handler: (jobId: string) => void): void {
    this.#onCancel = handler;
  }

  /** Resolves on the next notification for the job, after `timeoutMs`, or when `signal` aborts. Arm it
   * before reading, so that an event appended in between still wakes it. */
  arm(jobId: string, timeoutMs: number, signal?: AbortSignal): { wait: Promise<void>; dispose(): void } {
    let wake!: () => void;
    const wait = new Promise<void>((resolve) => (wake = resolve));
    const set = this.#waiters.get(jobId) ?? new Set();
    this.#waiters.set(jobId, set);
    set.add(wake);
    const timer = setTimeout(wake, timeoutMs);
    signal?.addEventListener("abort", wake, { once: true });
    return {
      wait,
      dispose: () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", wake);
        set.delete(wake);
        if (set.size === 0 && this.#waiters.get(jobId) === set) this.#waiters.delete(jobId);
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wakeAll();
    const clients = [this.command, this.subscriber, this.#blocking].filter((c): c is Redis => !!c);
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    for (const c of clients) c.disconnect();
  }

  #wake(jobId: string): void {
    for (const wake of this.#waiters.get(jobId) ?? []) wake();
  }

  #wakeAll(): void {
    for (const set of this.#waiters.values()) for (const wake of set) wake();
  }

  #client(role: string, options: RedisOptions): Redis {
    const client = new Redis(this.url, {
      connectTimeout: 2_000,
      // Reconnect forever, soon: a restarted Redis is back within a second or two.
      retryStrategy: (times) => Math.min(100 * times, 1_000),
      ...options,
    });
    let down = false;
    client.on("error", (e: Error) => {
      // One line per outage, not one per retry.
      if (!down && !this.#closed) console.error(`redis (${role}): ${e.message}; reconnecting`);
      down = true;
    });
    client.on("ready", () => {
      if (down) console.error(`redis (${role}): connected again`);
      down = false;
    });
    return client;
  }
}
