// The server as a process: flag/env parsing, and clean shutdown on SIGTERM/SIGINT (stop accepting, let the
// running job finish within the grace period or cancel it, then exit 0). Runs serve's real code path on
// the fake engine (tests/server_fake_serve.ts).

import { parseServeConfig } from "../src/server/config.ts";
import { collectSse, postJson, spawnFakeServer, waitReady } from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

Deno.test("serve config: flags win over environment variables; defaults; errors name the flag", () => {
  const d = parseServeConfig([], {});
  assertEquals(
    [d.hostname, d.port, d.model, d.options.token],
    ["127.0.0.1", 8000, undefined, undefined],
    "defaults",
  );
  const env = {
    HOST: "0.0.0.0",
    PORT: "9001",
    MODEL: "weights/sd15",
    API_TOKEN: "t",
    QUEUE_LENGTH: "3",
    MAX_SIZE: "768",
    MAX_STEPS: "50",
    MAX_BODY_MB: "2",
    SHUTDOWN_GRACE: "7",
  };
  const e = parseServeConfig([], env);
  assertEquals(
    [
      e.hostname,
      e.port,
      e.model,
      e.options.token,
      e.options.maxQueued,
      e.options.maxSize,
      e.options.maxSteps,
    ],
    ["0.0.0.0", 9001, "weights/sd15", "t", 3, 768, 50],
    "from env",
  );
  assertEquals([e.options.maxBodyBytes, e.shutdownGraceMs], [2 * 2 ** 20, 7000], "body limit and grace");
  const f = parseServeConfig([
    "--port",
    "9002",
    "--model",
    "x.safetensors",
    "--token",
    "u",
    "--queue-length",
    "0",
  ], env);
  assertEquals(
    [f.port, f.model, f.options.token, f.options.maxQueued],
    [9002, "x.safetensors", "u", 0],
    "flags win",
  );
  for (
    const [args, pattern] of [
      [["--port", "99999"], /--port/],
      [["--max-size", "100"], /--max-size must be a multiple of 8/],
      [["--max-steps", "abc"], /--max-steps/],
      [["--bogus"], /bogus/],
    ] as [string[], RegExp][]
  ) {
    let message = "";
    try {
      parseServeConfig(args, {});
    } catch (err) {
      message = (err as Error).message;
    }
    assert(pattern.test(message), `${args.join(" ")}: ${message || "no error"}`);
  }
  const badEnv = (() => {
    try {
      parseServeConfig([], { PORT: "http" });
    } catch (err) {
      return (err as Error).message;
    }
  })();
  assert(badEnv?.includes("PORT"), `env error names PORT: ${badEnv}`);
});

Deno.test("serve config: --lora-dir / LORA_DIR and --lora-strict / LORA_STRICT", () => {
  const d = parseServeConfig([], {});
  assertEquals([d.loraDir, d.loraStrict], [undefined, true], "defaults");
  const e = parseServeConfig([], { LORA_DIR: "loras", LORA_STRICT: "false" });
  assertEquals([e.loraDir, e.loraStrict], ["loras", false], "from env");
  const f = parseServeConfig(["--lora-dir", "mine", "--lora-strict=true"], {
    LORA_DIR: "loras",
    LORA_STRICT: "false",
  });
  assertEquals([f.loraDir, f.loraStrict], ["mine", true], "flags win");
  let message = "";
  try {
    parseServeConfig(["--lora-strict", "maybe"], {});
  } catch (err) {
    message = (err as Error).message;
  }
  assert(/--lora-strict must be true or false/.test(message), message || "no error");
});

Deno.test("SIGTERM: the running job finishes within the grace period, waiting jobs are cancelled, exit 0", async () => {
  const server = await spawnFakeServer(["--shutdown-grace", "20"], { FAKE_STEP_DELAY_MS: "20" });
  try {
    await waitReady(server.url);
    const running = await postJson(`${server.url}/v1/generate`, {
      prompt: "a",
      width: 16,
      height: 16,
      steps: 15,
    }, {
      accept: "text/event-stream",
    });
    const waiting = await postJson(`${server.url}/v1/generate`, {
      prompt: "b",
      width: 16,
      height: 16,
      steps: 5,
    }, {
      accept: "text/event-stream",
    });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    server.child.kill("SIGTERM");
    const [runningEvents, waitingEvents] = await Promise.all([collectSse(running), collectSse(waiting)]);
    assertEquals(runningEvents.at(-1)?.event, "done", "running job finished");
    const last = waitingEvents.at(-1)!;
    assertEquals([last.event, last.json.code], ["error", "shutting_down"], "waiting job cancelled");
    const status = await server.exited();
    assertEquals(status.code, 0, `exit code (stderr: ${await server.stderr()})`);
    assert(performance.now() - t0 < 10_000, "exited promptly");
    assert(server.stdout.includes("stopped"), "serve returned");
    const after = await fetch(`${server.url}/healthz`).then((r) => r.body?.cancel(), (e) => e);
    assert(after instanceof Error, "no longer accepting connections");
  } finally {
    await server.stop("SIGKILL");
  }
});

Deno.test("SIGINT with no grace: the running job is cancelled between steps and the process exits 0", async () => {
  const server = await spawnFakeServer(["--shutdown-grace", "0"], { FAKE_STEP_DELAY_MS: "50" });
  try {
    await waitReady(server.url);
    const running = await postJson(`${server.url}/v1/generate`, {
      prompt: "a",
      width: 16,
      height: 16,
      steps: 150,
    }, {
      accept: "text/event-stream",
    });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    server.child.kill("SIGINT");
    const events = await collectSse(running);
    const last = events.at(-1)!;
    assertEquals([last.event, last.json.code], ["error", "shutting_down"], "running job cancelled");
    const status = await server.exited();
    assertEquals(status.code, 0, `exit code (stderr: ${await server.stderr()})`);
    assert(performance.now() - t0 < 5_000, "exited promptly");
  } finally {
    await server.stop("SIGKILL");
  }
});
