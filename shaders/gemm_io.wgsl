// Shared by matmul.wgsl and conv.wgsl (pulled in with `//#include gemm_io`): the two GEMM operands (x and
// the packed weight, 8 f16 per rgba32uint texel, from textures on llvmpipe — TEX — else storage buffers),
// the output, the fused-epilogue inputs, and the texel → 8 floats unpackers. The including file declares
// `struct Params` and the {{…_BINDING}} defines.

//#if TEX
@group(0) @binding(0) var xs: texture_2d<u32>;
@group(0) @binding(1) var ws: texture_2d<u32>;
fn load_x(t: u32) -> vec4<u32> { return textureLoad(xs, vec2<u32>(t & 8191u, t >> 13u), 0); }
fn load_w(t: u32) -> vec4<u32> { return textureLoad(ws, vec2<u32>(t & 8191u, t >> 13u), 0); }
//#else
//#if X16_LOADS
// f16 accumulation in a register tile on storage buffers: the same texels read as two vec4<f16> halves
// (K offsets 0-3 and 4-7), no unpacking. (naga rejects bitcast from u32 to vec2<f16>, so the halves of a
// u32 texel can only be had through unpack2x16float and a conversion.)
@group(0) @binding(0) var<storage, read> xs: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> ws: array<vec4<f16>>;
fn x16(t: u32, h: u32) -> vec4<f16> { return xs[2u * t + h]; }
fn w16(t: u32, h: u32) -> vec4<f16> { return ws[2u * t + h]; }
//#else
@group(0) @binding(0) var<storage, read> xs: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> ws: array<vec4<u32>>;
fn load_x(t: u32) -> vec4<u32> { return xs[t]; }
fn load_w(t: u32) -> vec4<u32> { return ws[t]; }
//#endif
//#endif

//#if VEC_OUT
@group(0) @binding(2) var<storage, read_write> out: array<act4>;
//#else
@group(0) @binding(2) var<storage, read_write> out: array<act>;
//#endif
@group(0) @binding(3) var<uniform> p: Params;
//#if HAS_BIAS
@group(0) @binding({{BIAS_BINDING}}) var<storage, read> bias: array<u32>;   // f16 pairs [N]
//#endif
//#if HAS_TIME_BIAS
@group(0) @binding({{TIME_BIAS_BINDING}}) var<storage, read> time_bias: array<act>;   // [B, ≥ N] (conv)
//#endif
//#if HAS_RESIDUAL
//#if VEC_OUT
@group(0) @binding({{RESIDUAL_BINDING}}) var<storage, read> residual: array<act4>;
//#else
@group(0) @binding({{RESIDUAL_BINDING}}) var<storage, read> residual: array<act>;
//#endif
//#endif

// The 8 f16 values of a texel, as two vec4<f32> (K offsets 0-3 and 4-7).
fn lo8(v: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
fn hi8(v: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)); }
