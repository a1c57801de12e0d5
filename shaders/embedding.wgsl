// CLIP text embeddings: out[b, t, :] = token_embedding[ids[b, t], :] + position_embedding[t, :].
// One invocation per output pair of channels (weights are read as f16 pairs; C is even for every CLIP).

struct Params { tokens: u32, half_channels: u32, total: u32, vocab: u32 }

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> token_embedding: array<wvec2>;
@group(0) @binding(2) var<storage, read> position_embedding: array<wvec2>;
@group(0) @binding(3) var<storage, read_write> outp: array<act>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= params.total) { return; }
  let c2 = i % params.half_channels;
  let row = i / params.half_channels; // b * tokens + t
  let t = row % params.tokens;
  let id = min(ids[row], params.vocab - 1u);
  let v = w2(token_embedding[id * params.half_channels + c2]) + w2(position_embedding[t * params.half_channels + c2]);
  outp[2u * i] = act(v.x);
  outp[2u * i + 1u] = act(v.y);
}
