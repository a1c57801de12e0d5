// Floating-point operation counts of one model call (multiply-add = 2 FLOPs), for "effective GFLOP/s"
// figures in benchmarks. Only GEMM-like work is counted (convs, linears, attention), as is customary; norms
// and elementwise ops are a rounding error. Each count comes from the model's own forward, recorded by the
// model builder over the declared weight shapes, so it cannot drift from what runs.

export { unetFlops } from "./unet/unet.ts";
export { vaeDecodeFlops } from "./vae/vae.ts";
export { clipFlops } from "./clip/clip.ts";
