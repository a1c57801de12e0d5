// Server-sent events: a streamed Response whose producer learns at once when the client goes away
// (body cancelled or request aborted), with comment heartbeats so idle proxies keep the stream open.

export interface SseMessage {
  event?: string;
  id?: string;
  /** One line of JSON (no newlines). */
  data: string;
}

export type SseSend = (message: SseMessage) => void;

export interface SseOptions {
  /** Aborted when the client disconnects (the incoming request's signal). */
  clientSignal?: AbortSignal;
  heartbeatMs?: number;
  headers?: Record<string, string>;
}

const encoder = new TextEncoder();

export function formatSse(m: SseMessage): string {
  let out = "";
  if (m.event) out += `event: ${m.event}\n`;
  if (m.id !== undefined) out += `id: ${m.id}\n`;
  for (const line of m.data.split("\n")) out += `data: ${line}\n`;
  return out + "\n";
}

/**
 * Streams what `produce` sends. `produce` gets a signal that aborts when the client disconnects; the
 * stream closes when `produce` returns.
 */
export function sseResponse(
  produce: (send: SseSend, disconnected: AbortSignal) => Promise<void>,
  options: SseOptions = {},
): Response {
  const disconnect = new AbortController();
  const onClientAbort = () => disconnect.abort();
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (text: string) => {
        if (closed || disconnect.signal.aborted) return;
        try {
          controller.enqueue(encoder.encode(text));
        } catch {
          disconnect.abort();
        }
      };
      options.clientSignal?.addEventListener("abort", onClientAbort, { once: true });
      if (options.clientSignal?.aborted) disconnect.abort();
      heartbeat = setInterval(() => write(": keep-alive\n\n"), options.heartbeatMs ?? 15_000);
      // The producer runs in the background; errors inside it have already been sent as events.
      produce((m) => write(formatSse(m)), disconnect.signal)
        .catch((e) => console.error("SSE producer failed:", e))
        .finally(() => {
          clearInterval(heartbeat);
          options.clientSignal?.removeEventListener("abort", onClientAbort);
          if (!closed) {
            closed = true;
            try {
              controller.close();
            } catch { /* already cancelled */ }
          }
        });
    },
    cancel() {
      closed = true;
      clearInterval(heartbeat);
      disconnect.abort();
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
      ...options.headers,
    },
  });
}
