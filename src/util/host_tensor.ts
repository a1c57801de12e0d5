// Host tensors (row-major f32, as the fixtures and the samplers hold them) and NCHW ↔ NHWC on the host.

/** A host tensor: row-major f32 data (NCHW for images, as the fixtures store them). */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export function nchwToNhwc(t: HostTensor): HostTensor {
  const [B, C, H, W] = t.shape;
  const out = new Float32Array(t.data.length);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          out[((b * H + y) * W + x) * C + c] = t.data[((b * C + c) * H + y) * W + x];
        }
      }
    }
  }
  return { shape: [B, H, W, C], data: out };
}

export function nhwcToNchw(t: HostTensor): HostTensor {
  const [B, H, W, C] = t.shape;
  const out = new Float32Array(t.data.length);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          out[((b * C + c) * H + y) * W + x] = t.data[((b * H + y) * W + x) * C + c];
        }
      }
    }
  }
  return { shape: [B, C, H, W], data: out };
}
