// Lowering the calling thread's CPU scheduling priority. The engine worker does this before it creates the
// GPU device, so that the threads the driver starts with it inherit the lower priority too: on a CPU
// adapter (lavapipe) those threads are the "GPU", and at equal priority they delay the HTTP thread's
// answers (on 2 loaded cores, /healthz p99 56 ms during UNet steps).

const PRIO_PROCESS = 0;

/**
 * Sets the calling thread's nice value (Linux: setpriority on its thread id, which affects that thread
 * alone and the threads it creates afterwards). Returns false where that is not possible (other systems,
 * no FFI permission, a libc without gettid); the engine then simply runs at normal priority.
 */
export function lowerThreadPriority(nice: number): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    const libc = Deno.dlopen("libc.so.6", {
      gettid: { parameters: [], result: "i32" },
      setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
    });
    try {
      return libc.symbols.setpriority(PRIO_PROCESS, libc.symbols.gettid(), nice) === 0;
    } finally {
      libc.close();
    }
  } catch {
    return false;
  }
}
