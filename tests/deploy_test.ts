// Static consistency checks of deploy/: the Dockerfile ships the binary `deno task compile` produces, runs a
// `serve` command line the CLI accepts, exposes the port it listens on and health-checks /healthz there;
// the systemd unit starts a command the CLI has, with an environment file whose settings `serve` reads.
// (No container engine or systemd is exercised here.)

import { COMMANDS } from "../src/commands/cli.ts";
import { createApp } from "../src/server/app.ts";
import { parseServeConfig, SERVE_USAGE } from "../src/server/config.ts";

const root = new URL("..", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${root}${path}`);

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

function assertEquals<T>(got: T, want: T, msg: string): void {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`${msg}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions: comments dropped, `\`-continued lines joined. */
function dockerInstructions(text: string): Instruction[] {
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  const joined = lines.join("\n").replace(/\\\n/g, " ");
  return joined.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`unparsable Dockerfile line: ${l}`);
    return { op: m[1].toUpperCase(), args: m[2].trim() };
  });
}

function only(instructions: Instruction[], op: string): Instruction {
  const found = instructions.filter((i) => i.op === op);
  assert(found.length === 1, `expected one ${op}, found ${found.length}`);
  return found[0];
}

/** `--output PATH` of the compile task in deno.json. */
function compileOutput(): string {
  const task: string = JSON.parse(read("deno.json")).tasks.compile;
  const m = /--output[= ](\S+)/.exec(task);
  assert(m, `no --output in the compile task: ${task}`);
  return m[1];
}

Deno.test("Dockerfile: ships the compiled binary and runs a serve command the CLI accepts", async () => {
  const ins = dockerInstructions(read("deploy/Dockerfile"));
  assert(/^(debian|ubuntu):/.test(only(ins, "FROM").args), `Debian/Ubuntu base: ${only(ins, "FROM").args}`);

  const copy = only(ins, "COPY").args.split(/\s+/);
  assertEquals(copy[0], compileOutput(), "COPY source is what `deno task compile` writes");
  const installedAs = copy[1];
  assert(installedAs.startsWith("/usr/local/bin/"), `binary on PATH: ${installedAs}`);

  const cmd = JSON.parse(only(ins, "CMD").args) as string[];
  const binary = installedAs.slice(installedAs.lastIndexOf("/") + 1);
  assert(cmd[0] === binary || cmd[0] === installedAs, `CMD runs the copied binary: ${cmd[0]}`);
  assertEquals(cmd[1], "serve", "CMD subcommand");
  assert(cmd[1] in COMMANDS, "serve is a CLI command");
  const config = parseServeConfig(cmd.slice(2), {}); // throws on a flag serve does not have
  assertEquals(
    [config.hostname, config.port, config.model],
    ["0.0.0.0", 8000, "/weights/sd15"],
    "serve flags",
  );

  assertEquals(only(ins, "EXPOSE").args, String(config.port), "EXPOSE matches --port");
  assert(/["\s]\/weights["\s]/.test(` ${only(ins, "VOLUME").args} `), "a /weights volume");
  assert(config.model!.startsWith("/weights/"), "the model comes from the weights volume");

  const health = only(ins, "HEALTHCHECK").args;
  const url = /CMD\s+curl\s.*?(http:\/\/[^\s"]+)/.exec(health)?.[1];
  assert(url, `HEALTHCHECK runs curl on a URL: ${health}`);
  assert(/curl\s+-\w*f/.test(health), "curl -f: an HTTP error status fails the check");
  const parsed = new URL(url);
  assertEquals([parsed.port, parsed.pathname], [String(config.port), "/healthz"], "health check URL");
  // The route exists and answers JSON (503 until a model is ready, 200 without a model).
  const res = await createApp().fetch(new Request(`http://localhost${parsed.pathname}`));
  assert(res.status === 200 || res.status === 503, `/healthz status ${res.status}`);
  await res.body?.cancel();

  const env = ins.filter((i) => i.op === "ENV").map((i) => i.args).join(" ");
  const caps = /NVIDIA_DRIVER_CAPABILITIES=(\S+)/.exec(env)?.[1]?.split(",") ?? [];
  assert(["compute", "graphics", "utility"].every((c) => caps.includes(c)), `driver capabilities: ${caps}`);
  const run = ins.filter((i) => i.op === "RUN").map((i) => i.args).join(" ");
  for (const pkg of ["libvulkan1", "curl"]) assert(new RegExp(`\\b${pkg}\\b`).test(run), `installs ${pkg}`);
  assert(ins.some((i) => i.op === "USER" && i.args !== "root" && i.args !== "0"), "runs as a non-root user");

  // The Dockerfile-specific ignore file must let the COPY source through.
  const ignore = read("deploy/Dockerfile.dockerignore").split("\n").map((l) => l.trim());
  assert(ignore.includes(`!${copy[0]}`), "Dockerfile.dockerignore re-includes the binary");
});

Deno.test("systemd unit: ExecStart runs the binary's serve command; its environment file is read by serve", () => {
  const unit = read("deploy/sd-webgpu.service");
  const keys = new Map<string, string[]>();
  for (const line of unit.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1], [...(keys.get(m[1]) ?? []), m[2]]);
  }
  const one = (k: string) => {
    const v = keys.get(k);
    assert(v?.length === 1, `one ${k}= in the unit, found ${v?.length ?? 0}`);
    return v[0];
  };
  const exec = one("ExecStart").split(/\s+/);
  assert(exec[0].startsWith("/"), "ExecStart uses an absolute path");
  assert(
    exec[0].endsWith(`/${compileOutput().split("/").pop()}`),
    `ExecStart runs the compiled binary: ${exec[0]}`,
  );
  assert(exec[1] in COMMANDS, `ExecStart names a CLI command: ${exec[1]}`);
  assertEquals(exec[1], "serve", "ExecStart command");
  parseServeConfig(exec.slice(2), {}); // any flags on ExecStart are ones serve has
  assertEquals(one("Restart"), "on-failure", "Restart");
  assert(!["root", "0"].includes(one("User")), "dedicated user");
  for (const k of ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"]) {
    assert(keys.has(k), `hardening option ${k}`);
  }
  assert(!keys.has("PrivateDevices"), "PrivateDevices would hide the GPU");

  // The example environment file: every variable is one serve documents, and serve accepts the values.
  const envFile = one("EnvironmentFile").replace(/^-/, "");
  assert(
    unit.includes(`deploy/sd-webgpu.env ${envFile}`),
    "install comment copies deploy/sd-webgpu.env there",
  );
  const env: Record<string, string> = {};
  for (const line of read("deploy/sd-webgpu.env").split("\n")) {
    const m = /^#?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    assert(new RegExp(`\\s${m[1]}\\s`).test(SERVE_USAGE), `${m[1]} is a serve setting`);
    if (!line.trim().startsWith("#")) env[m[1]] = m[2];
  }
  const config = parseServeConfig([], env);
  assert(config.model, "the environment file names a model");
  assertEquals(config.port, 8000, "port");
  // Stop timeout leaves room for the shutdown grace period.
  const stopSeconds = Number(/^(\d+)s?$/.exec(one("TimeoutStopSec"))?.[1]);
  assert(stopSeconds * 1000 > config.shutdownGraceMs, `TimeoutStopSec ${stopSeconds}s > grace`);
});

Deno.test("compose: Redis, GPU workers and a front end whose serve commands share one queue", () => {
  const text = read("deploy/compose.yaml");
  // The commands are JSON-style flow sequences (deno fmt may break them over lines, with a trailing comma).
  const commands = [...text.matchAll(/command:\s*(\[[\s\S]*?\])/g)]
    .map((m) => JSON.parse(m[1].replace(/,\s*\]$/, "]")) as string[]);
  const serves = commands.filter((c) => c[1] === "serve");
  assertEquals(serves.length, 2, "the workers' command and the front end's");
  for (const c of serves) assert(c[0] === "sd-webgpu", `runs the image's binary: ${c[0]}`);
  const configs = serves.map((c) => parseServeConfig(c.slice(2), {}));
  const worker = configs.find((c) => c.redis?.worker);
  const front = configs.find((c) => c.redis?.worker === false);
  assert(worker?.model && front, "a worker with a model and a --no-worker front end");
  assertEquals(worker.redis!.url, front.redis!.url, "one Redis");
  const redisHost = new URL(worker.redis!.url).hostname;
  assert(new RegExp(`\\n  ${redisHost}:\\n`).test(text), `a "${redisHost}" service`);
  assert(/--appendonly", "yes"/.test(text), "Redis persists its data");
  const workers = [...text.matchAll(/\n {2}(worker-\d+):\n {4}<<: \*gpu-worker\n/g)].map((m) => m[1]);
  assertEquals(workers, ["worker-1", "worker-2"], "two workers");
  const devices = [...text.matchAll(/device_ids: \["(\d+)"\]/g)].map((m) => m[1]);
  assertEquals(devices, ["0", "1"], "one GPU each");
  assert(text.includes(`- "${front.port}:${front.port}"`), "the front end publishes its port");
  for (const name of text.matchAll(/^ {4}([A-Z_]+): /gm)) {
    assert(new RegExp(`\\s${name[1]}\\s`).test(SERVE_USAGE), `${name[1]} is a serve setting`);
  }
});
