// The run command starts a server that answers GET /healthz with the adapter and the f16 self-test
// result, honours --port/--host and PORT/HOST, and exits cleanly on SIGTERM. It runs with --no-model (the
// model-less server answers 503 to generation; without --model it would fetch the default model).

const root = new URL("..", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitReady(url: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      const body = await res.json();
      if (body.status === "ready") return body;
      last = JSON.stringify(body);
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`server not ready: ${last}`);
}

for (const how of ["flags", "env"] as const) {
  Deno.test(`server answers /healthz (port and host via ${how})`, async () => {
    const port = freePort();
    const args = ["run", "-A", "main.ts", "serve", "--no-model"];
    const env: Record<string, string> = {};
    if (how === "flags") args.push("--port", String(port), "--host", "127.0.0.1");
    else Object.assign(env, { PORT: String(port), HOST: "127.0.0.1" });
    const child = new Deno.Command(Deno.execPath(), { args, cwd: root, env, stdout: "null", stderr: "piped" })
      .spawn();
    let health: Record<string, unknown>;
    try {
      health = await waitReady(`http://127.0.0.1:${port}/healthz`);
    } finally {
      child.kill("SIGTERM");
    }
    const status = await child.status;
    await child.stderr.cancel();
    if (!status.success && status.signal !== "SIGTERM") throw new Error(`server exited with ${status.code}`);
    if (typeof health.adapter !== "string" || !health.adapter) {
      throw new Error(`no adapter: ${JSON.stringify(health)}`);
    }
    if (typeof health.f16 !== "boolean") throw new Error("no f16 flag");
    if (!["pass", "fail", "not-offered", "disabled"].includes(String(health.f16SelfTest))) {
      throw new Error(`bad f16SelfTest ${health.f16SelfTest}`);
    }
  });
}
