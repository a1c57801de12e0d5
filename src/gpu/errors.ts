// The one error type of the GPU layer: what was being done, and what the driver said.

export class GpuError extends Error {
  constructor(readonly operation: string, message: string) {
    super(`GPU error during ${operation}: ${message}`);
    this.name = "GpuError";
  }
}
