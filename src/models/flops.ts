// Floating-point operation counts of one model call (multiply-add = 2 FLOPs), for "effective GFLOP/s"
// figures in benchmarks. Only GEMM-like work is counted (convs, linears, attention), as is customary;
// norms and elementwise ops are a rounding error.

import type { ClipTextConfig } from "./clip/config.ts";
import { unetAttentionLevels, type UNetConfig, unetTimeEmbedDim } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";

const conv = (b: number, h: number, w: number, cin: number, cout: number, k: number) =>
  2 * b * h * w * cin * cout * k * k;
const lin = (m: number, k: number, n: number) => 2 * m * k * n;
const attn = (b: number, nq: number, nk: number, c: number) => 4 * b * nq * nk * c;

export function unetFlops(c: UNetConfig, batch: number, h: number, w: number, contextTokens = 77): number {
  const levels = unetAttentionLevels(c);
  const crossDim = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
  const temb = unetTimeEmbedDim(c);
  let f = lin(batch, c.block_out_channels[0], temb) + lin(batch, temb, temb);
  const resnet = (hh: number, ww: number, cin: number, cout: number) =>
    conv(batch, hh, ww, cin, cout, 3) + conv(batch, hh, ww, cout, cout, 3) + lin(batch, temb, cout) +
    (cin !== cout ? conv(batch, hh, ww, cin, cout, 1) : 0);
  const transformer = (hh: number, ww: number, ch: number, layers: number) => {
    const n = batch * hh * ww;
    const block = 4 * lin(n, ch, ch) + attn(batch, hh * ww, hh * ww, ch) + // self-attention
      2 * lin(n, ch, ch) + 2 * lin(batch * contextTokens, crossDim, ch) +
      attn(batch, hh * ww, contextTokens, ch) + // cross
      lin(n, ch, 8 * ch) + lin(n, 4 * ch, ch); // GEGLU feed-forward
    return 2 * lin(n, ch, ch) + layers * block;
  };
  f += conv(batch, h, w, c.in_channels, c.block_out_channels[0], 3);
  let hh = h;
  let ww = w;
  for (const level of levels.down) {
    for (let j = 0; j < level.layers; j++) {
      f += resnet(hh, ww, j === 0 ? level.inChannels : level.channels, level.channels);
      if (level.hasAttention) f += transformer(hh, ww, level.channels, level.transformerLayers);
    }
    if (level.hasDownsampler) {
      hh /= 2;
      ww /= 2;
      f += conv(batch, hh, ww, level.channels, level.channels, 3);
    }
  }
  f += 2 * resnet(hh, ww, levels.mid.channels, levels.mid.channels) +
    transformer(hh, ww, levels.mid.channels, levels.mid.transformerLayers);
  for (const level of levels.up) {
    for (let j = 0; j < level.layers; j++) {
      f += resnet(hh, ww, level.resnetInChannels[j], level.channels);
      if (level.hasAttention) f += transformer(hh, ww, level.channels, level.transformerLayers);
    }
    if (level.hasUpsampler) {
      hh *= 2;
      ww *= 2;
      f += conv(batch, hh, ww, level.channels, level.channels, 3);
    }
  }
  return f + conv(batch, h, w, c.block_out_channels[0], c.out_channels, 3);
}

export function vaeDecodeFlops(c: VaeConfig, h: number, w: number): number {
  const rev = [...c.block_out_channels].reverse();
  const resnet = (hh: number, ww: number, cin: number, cout: number) =>
    conv(1, hh, ww, cin, cout, 3) + conv(1, hh, ww, cout, cout, 3) +
    (cin !== cout ? conv(1, hh, ww, cin, cout, 1) : 0);
  let f = conv(1, h, w, c.latent_channels, c.latent_channels, 1) +
    conv(1, h, w, c.latent_channels, rev[0], 3);
  f += 2 * resnet(h, w, rev[0], rev[0]) + 4 * lin(h * w, rev[0], rev[0]) + attn(1, h * w, h * w, rev[0]);
  let hh = h;
  let ww = w;
  let prev = rev[0];
  rev.forEach((ch, i) => {
    for (let j = 0; j < c.layers_per_block + 1; j++) {
      f += resnet(hh, ww, j === 0 ? prev : ch, ch);
    }
    prev = ch;
    if (i < rev.length - 1) {
      hh *= 2;
      ww *= 2;
      f += conv(1, hh, ww, ch, ch, 3);
    }
  });
  return f + conv(1, hh, ww, rev[rev.length - 1], c.out_channels, 3);
}

export function clipFlops(c: ClipTextConfig, batch: number, tokens: number): number {
  const n = batch * tokens;
  const C = c.hidden_size;
  const layer = 4 * lin(n, C, C) + attn(batch, tokens, tokens, C) / 2 + lin(n, C, c.intermediate_size) * 2;
  return c.num_hidden_layers * layer;
}
