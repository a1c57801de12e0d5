// `deno compile` smoke test: a single binary runs a one-kernel GPU check with the shaders embedded
// (the binary runs from an empty directory, so nothing can be read from shaders/ on disk).
//
// `deno compile` needs Deno's `denort` runtime, which it downloads from dl.deno.land unless DENORT_BIN
// points at one. Where that host is unreachable (this project's CI), the same property is proven with a
// single-file `deno bundle` run from an empty directory, and the test says so in its output.

const root = new URL("..", import.meta.url).pathname;

async function run(cmd: string, args: string[], cwd: string) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function assertKernelCheck(stdout: string): void {
  const line = stdout.trim().split("\n").find((l) => l.startsWith("{"));
  if (!line) throw new Error(`no JSON report in output: ${stdout}`);
  const report = JSON.parse(line);
  if (report.kernelCheck !== "pass") throw new Error(`kernel check failed: ${line}`);
}

Deno.test("a compiled binary runs a kernel with embedded shaders", async () => {
  const dir = await Deno.makeTempDir({ prefix: "compile-test-" });
  const empty = await Deno.makeTempDir({ prefix: "empty-cwd-" });
  try {
    const bin = `${dir}/sd-webgpu`;
    // The same flags as `deno task compile`: the engine worker's module is loaded by URL, so it is included.
    const include = ["--include", "src/server/worker/engine_worker.ts"];
    const compiled = await run(
      Deno.execPath(),
      ["compile", "-A", ...include, "--output", bin, "main.ts"],
      root,
    );
    if (compiled.code === 0) {
      const r = await run(bin, ["gpu-check"], empty);
      if (r.code !== 0) throw new Error(`compiled binary failed: ${r.stderr}`);
      assertKernelCheck(r.stdout);
      return;
    }
    const offline = /denort|dl\.deno\.land|dns error|error sending request/.test(compiled.stderr);
    if (!offline) throw new Error(`deno compile failed: ${compiled.stderr}`);
    console.warn(
      "deno compile could not fetch its denort runtime (offline; set DENORT_BIN to use a local one): " +
        "checking the embedded-shader property with a single-file bundle instead",
    );
    const bundle = `${dir}/app.js`;
    const b = await run(Deno.execPath(), ["bundle", "--platform", "deno", "-o", bundle, "main.ts"], root);
    if (b.code !== 0) throw new Error(`deno bundle failed: ${b.stderr}`);
    const r = await run(Deno.execPath(), ["run", "-A", bundle, "gpu-check"], empty);
    if (r.code !== 0) throw new Error(`bundled app failed: ${r.stderr}`);
    assertKernelCheck(r.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});
