// numpy's float32 matmul GFLOP/s on the same cores, for ratios quoted next to our own figures.
// OpenBLAS variables that force slower kernels on this workplace's machines are removed for this command
// only. Returns null (with the reason) where Python or numpy is missing.

export interface NumpyResult {
  /** GFLOP/s per "MxKxN" shape key. */
  gflops: Map<string, number>;
  kernel: string;
}

export async function numpyMatmulGflops(
  shapes: [number, number, number][],
  seconds = 1.0,
): Promise<NumpyResult | { error: string }> {
  const script = `
import json, sys, time
import numpy as np
shapes = json.loads(sys.argv[1]); budget = float(sys.argv[2]); out = {}
for m, k, n in shapes:
    a = np.random.rand(m, k).astype(np.float32); b = np.random.rand(k, n).astype(np.float32)
    a @ b
    best = 0.0; t_end = time.perf_counter() + budget
    while True:
        t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
        best = max(best, 2 * m * k * n / dt / 1e9)
        if time.perf_counter() > t_end: break
    out[f"{m}x{k}x{n}"] = best
cfg = np.__config__.CONFIG if hasattr(np.__config__, "CONFIG") else {}
blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
print(json.dumps({"gflops": out, "kernel": str(blas.get("name", "?")) + " " + str(blas.get("openblas configuration", ""))}))
`;
  const env = { ...Deno.env.toObject() };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  try {
    const out = await new Deno.Command("python3", {
      args: ["-c", script, JSON.stringify(shapes), String(seconds)],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) {
      return { error: new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "python failed" };
    }
    const parsed = JSON.parse(new TextDecoder().decode(out.stdout));
    return { gflops: new Map(Object.entries(parsed.gflops)), kernel: parsed.kernel };
  } catch (e) {
    return { error: `python3 not available (${(e as Error).message})` };
  }
}
