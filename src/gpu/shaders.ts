// Every WGSL file in shaders/, imported as text so that `deno compile` embeds them in the binary.
// Add a line here when adding a shader file.

import attention from "../../shaders/attention.wgsl" with { type: "text" };
import elementwise from "../../shaders/elementwise.wgsl" with { type: "text" };
import norm from "../../shaders/norm.wgsl" with { type: "text" };
import embedding from "../../shaders/embedding.wgsl" with { type: "text" };
import selftest from "../../shaders/selftest.wgsl" with { type: "text" };
import matmul from "../../shaders/matmul.wgsl" with { type: "text" };
import conv from "../../shaders/conv.wgsl" with { type: "text" };
import gemm_io from "../../shaders/gemm_io.wgsl" with { type: "text" };
import lora from "../../shaders/lora.wgsl" with { type: "text" };
import sampler from "../../shaders/sampler.wgsl" with { type: "text" };

export const SHADERS: Record<string, string> = {
  attention,
  elementwise,
  norm,
  embedding,
  selftest,
  matmul,
  conv,
  gemm_io,
  lora,
  sampler,
};
