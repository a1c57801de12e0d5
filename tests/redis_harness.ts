// A real redis-server for the shared-queue tests, on a free loopback port, in a temporary folder. CI
// installs it (.ci/apt-packages); where the binary is missing the tests are skipped with a message saying
// so, never passed silently.

const REDIS_BIN = findOnPath("redis-server");

/** Why the Redis tests are skipped here, or undefined when they run. */
export const REDIS_SKIP = REDIS_BIN
  ? undefined
  : "redis-server is not installed (apt-get install -y redis-server): the shared-queue tests are SKIPPED";

if (REDIS_SKIP) console.error(`\n*** ${REDIS_SKIP} ***\n`);

function findOnPath(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const path = `${dir}/${name}`;
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not here */ }
  }
  return undefined;
}

export interface RedisServer {
  url: string;
  port: number;
  /** Stops it (SIGTERM: with persistence on, it writes its data first) and waits for the exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and folder (the same data, with persistence on). */
  start(): Promise<void>;
  /** Stops it for good and removes its folder. */
  close(): Promise<void>;
}

/** `persist`: append-only file, so a restart keeps the queue (as a production Redis would). */
export async function startRedis(options: { persist?: boolean } = {}): Promise<RedisServer> {
  if (!REDIS_BIN) throw new Error(REDIS_SKIP);
  const dir = await Deno.makeTempDir({ prefix: "sd-redis-" });
  const port = freePort();
  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = new Deno.Command(REDIS_BIN, {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--save",
        "",
        "--appendonly",
        options.persist ? "yes" : "no",
        "--appendfsync",
        "always",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await waitPong(port, child);
  };
  const stop = async () => {
    if (!child) return;
    const c = child;
    child = undefined;
    try {
      c.kill("SIGTERM");
    } catch { /* already gone */ }
    await c.stderr.cancel().catch(() => {});
    await c.status;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    close: async () => {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Waits until the server answers PING (raw RESP: the tests' own check, independent of the client). */
async function waitPong(port: number, child: Deno.ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  let exited = false;
  child.status.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`redis-server exited: ${await new Response(child.stderr).text()}`);
    }
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode("PING\r\n"));
        const buf = new Uint8Array(16);
        const n = await conn.read(buf);
        if (n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG")) return;
      } finally {
        conn.close();
      }
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server did not answer on port ${port}`);
}
