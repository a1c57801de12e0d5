// Register-tile code generation for the GEMM kernels of linear / GEGLU (shaders/matmul.wgsl) and conv
// (shaders/conv.wgsl).
//
// The tile body is generated here as straight-line WGSL (one variable per accumulator) and spliced into the
// kernel through the {{SETUP}}/{{TAP}}/{{STEP}}/{{COLLECT}} defines; pipelines are cached per variant, not
// per shape (shapes travel in a uniform).

import type { ShaderDefines } from "../gpu/pipelines.ts";

export interface TileCodeOptions {
  tm: number;
  /** A multiple of 4 (the epilogue works on groups of 4 columns). */
  tn: number;
  /** x texels hold f16 (one per k-step) instead of f32 (two per k-step). */
  xf16: boolean;
  /** GEGLU: second accumulator set g_i_j over the gate weight rows (offset p.gate). */
  geglu?: boolean;
  /** conv: x offsets come from the per-tap TAP block and zero-padding taps are masked. */
  conv?: boolean;
  /**
   * f16 accumulation (needs xf16 and shader-f16): each k-step's 8 products are summed in f16 and the run is
   * added into the f32 accumulator.
   */
  acc16?: boolean;
  /**
   * With acc16 on storage buffers: operands bound as vec4<f16> arrays (x16/w16 in gemm_io.wgsl, define
   * X16_LOADS), so texels need no unpacking; otherwise (textures) halves are unpacked and converted.
   */
  f16Loads?: boolean;
}

/**
 * Straight-line WGSL for the register tile (see matmul.wgsl / conv.wgsl): SETUP (offsets, accumulators),
 * TAP (conv: per-tap input offsets), STEP (one k-step), COLLECT (accumulators → the epilogue's vec4 array),
 * plus the TILE_VEC4S / TN4 sizes.
 */
export function tileCode(o: TileCodeOptions): ShaderDefines {
  if (o.tn % 4 !== 0) throw new Error(`GEMM tiling: tn=${o.tn} must be a multiple of 4`);
  if (o.acc16 && !o.xf16) throw new Error("GEMM tiling: f16 accumulation needs f16 activations");
  if (o.f16Loads && !o.acc16) throw new Error("GEMM tiling: f16 loads are for f16 accumulation");
  const rows = [...Array(o.tm).keys()];
  const cols = [...Array(o.tn).keys()];
  const setup: string[] = [];
  const tap: string[] = [];
  const step: string[] = [];
  const collect: string[] = [];
  if (o.conv) {
    for (const i of rows) {
      setup.push(
        // pb: the image's first texel relative to the operand's first texel (wrapping u32 arithmetic: a
        // row band's operand starts at global texel xTex0, and only in-image taps are ever selected).
        `  let m${i} = min(row0 + ${i}u, p.M - 1u); let r${i} = m${i} % p.HWo;` +
          ` let pb${i} = (m${i} / p.HWo) * p.H * p.W * p.xPix - p.xTex0;`,
        `  let iy${i} = i32(r${i} / p.Wo + p.oy0) * i32(p.stride) - i32(p.padTop);` +
          ` let ix${i} = i32(r${i} % p.Wo) * i32(p.stride) - i32(p.padLeft);`,
      );
      tap.push(
        `    let y${i} = iy${i} + ky; let x${i} = ix${i} + kx;`,
        `    let ok${i} = y${i} >= 0 && y${i} < i32(p.H) && x${i} >= 0 && x${i} < i32(p.W);`,
        `    let xr${i} = select(0u, pb${i} + (u32(y${i}) * p.W + u32(x${i})) * p.xPix, ok${i});`,
      );
    }
    for (const j of cols) setup.push(`  let wr${j} = min(col0 + ${j}u, p.N - 1u) * p.taps * p.C8;`);
  } else {
    for (const i of rows) setup.push(`  let xr${i} = min(row0 + ${i}u, p.M - 1u) * p.xRow;`);
    for (const j of cols) setup.push(`  let wr${j} = p.wOff + min(col0 + ${j}u, p.N - 1u) * p.K8;`);
  }
  for (const i of rows) {
    for (const j of cols) setup.push(`  var a${i}_${j} = 0.0;${o.geglu ? ` var g${i}_${j} = 0.0;` : ""}`);
  }
  // One k-step: 8 values of K. Conv masks padding taps on the raw texels (zero bits are 0.0 in f16 and f32).
  const k = o.conv ? "c" : "k";
  const wOff = o.conv ? `wt + c` : "k";
  const xLoad = (i: number, t: string) =>
    o.conv ? `select(vec4<u32>(), load_x(${t}), ok${i})` : `load_x(${t})`;
  // Texel → halves a (K offsets 0-3) and b (4-7): f32 vectors, or f16 ones with acc16.
  const unpack = (t: string, a: string, b: string) =>
    o.acc16
      ? `let ${a} = vec4<f16>(lo8(${t})); let ${b} = vec4<f16>(hi8(${t}));`
      : `let ${a} = lo8(${t}); let ${b} = hi8(${t});`;
  for (const i of rows) {
    if (o.f16Loads) {
      const half = (h: number) => {
        const load = `x16(xr${i} + ${k}, ${h}u)`;
        return o.conv ? `select(vec4<f16>(), ${load}, ok${i})` : load;
      };
      step.push(`      let xa${i} = ${half(0)}; let xb${i} = ${half(1)};`);
    } else if (o.xf16) {
      step.push(`      let xt${i} = ${xLoad(i, `xr${i} + ${k}`)}; ${unpack(`xt${i}`, `xa${i}`, `xb${i}`)}`);
    } else {
      step.push(
        `      let xa${i} = bitcast<vec4<f32>>(${xLoad(i, `xr${i} + 2u * ${k}`)});` +
          ` let xb${i} = bitcast<vec4<f32>>(${xLoad(i, `xr${i} + 2u * ${k} + 1u`)});`,
      );
    }
  }
  // acc += x·w over one k-step (8 values: halves a and b); with acc16 the 8-term sum is f16.
  const fma = (acc: string, i: number, wa: string, wb: string) => {
    const run = `dot(xa${i}, ${wa}) + dot(xb${i}, ${wb})`;
    return `      ${acc} += ${o.acc16 ? `f32(${run})` : run};`;
  };
  const weight = (t: string, a: string, b: string, at: string) =>
    o.f16Loads
      ? `      let ${a} = w16(${at}, 0u); let ${b} = w16(${at}, 1u);`
      : `      let ${t} = load_w(${at}); ${unpack(t, a, b)}`;
  for (const j of cols) {
    step.push(weight(`wt${j}`, `wa${j}`, `wb${j}`, `wr${j} + ${wOff}`));
    for (const i of rows) step.push(fma(`a${i}_${j}`, i, `wa${j}`, `wb${j}`));
    if (o.geglu) {
      step.push(weight(`vt${j}`, `va${j}`, `vb${j}`, `wr${j} + p.gate + ${wOff}`));
      for (const i of rows) step.push(fma(`g${i}_${j}`, i, `va${j}`, `vb${j}`));
    }
  }
  const tn4 = o.tn / 4;
  for (const i of rows) {
    for (let c = 0; c < tn4; c++) {
      const q = i * tn4 + c;
      const v = (s: string) => `vec4<f32>(${[0, 1, 2, 3].map((d) => `${s}${i}_${4 * c + d}`).join(", ")})`;
      collect.push(`  o[${q}] = ${v("a")};${o.geglu ? ` og[${q}] = ${v("g")};` : ""}`);
    }
  }
  return {
    SETUP: setup.join("\n"),
    TAP: tap.join("\n"),
    STEP: step.join("\n"),
    COLLECT: collect.join("\n"),
    TILE_VEC4S: o.tm * tn4,
    TN4: tn4,
  };
}
