// Runs a ServerApp on Deno.serve, with a clean shutdown: stop accepting connections, cancel waiting jobs,
// let the running one finish (or abort it after a grace period), close the streams, then resolve.

import type { ServerApp } from "./app.ts";

export interface ServeOptions {
  hostname: string;
  port: number;
  /** Time the running job gets to finish on shutdown before it is aborted. */
  shutdownGraceMs: number;
  /** Install SIGINT/SIGTERM handlers that shut down (a second signal exits at once). */
  handleSignals?: boolean;
  onListen?: (addr: Deno.NetAddr) => void;
}

export interface ServeHandle {
  addr: Deno.NetAddr;
  url: string;
  /** Resolves once the server has shut down. */
  finished: Promise<void>;
  /** Starts the clean shutdown (idempotent) and resolves when it is complete. */
  shutdown(): Promise<void>;
}

export function serveApp(sd: ServerApp, options: ServeOptions): ServeHandle {
  let listened!: Deno.NetAddr;
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: (addr) => {
      listened = addr as Deno.NetAddr;
      options.onListen?.(listened);
    },
    onError: (e) => {
      console.error("request failed:", e);
      return new Response(JSON.stringify({ error: { message: "internal error", type: "server_error" } }), {
        status: 500,
        headers: { "content-type": "application/json" },
      });
    },
  }, sd.fetch);
  const addr = listened ?? (server.addr as Deno.NetAddr);

  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      // Stop accepting first; in-flight requests (the SSE streams) end once their jobs do.
      const httpDone = server.shutdown();
      await sd.drain(options.shutdownGraceMs);
      // A client that never finishes its request must not hold the process forever.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([httpDone, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
      clearTimeout(timer);
    })();
    return stopping;
  };

  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const onSignal = () => {
    if (stopping) {
      console.error("second signal: exiting now");
      Deno.exit(130);
    }
    console.error(
      `shutting down: ${sd.queue.waiting} waiting job(s) cancelled, ` +
        `${
          sd.queue.running
            ? `running job gets ${options.shutdownGraceMs / 1000} s to finish`
            : "no running job"
        }`,
    );
    shutdown();
  };
  if (options.handleSignals) { for (const s of signals) Deno.addSignalListener(s, onSignal); }

  const finished = (async () => {
    await server.finished;
    if (stopping) await stopping;
    if (options.handleSignals) { for (const s of signals) Deno.removeSignalListener(s, onSignal); }
  })();

  return {
    addr,
    url: `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`,
    finished,
    shutdown,
  };
}
