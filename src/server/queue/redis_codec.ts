// Requests and events as Redis strings: JSON, with byte arrays (images, masks, previews) at any depth as
// `{"$b64": "…"}`, so new fields (batches, LoRA lists) cross without changes here.

const BYTES = "$b64";

export function encode(value: unknown): string {
  return JSON.stringify(value, (_key, v) => v instanceof Uint8Array ? { [BYTES]: v.toBase64() } : v);
}

export function decode<T>(text: string): T {
  return JSON.parse(text, (_key, v) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === BYTES && typeof v[BYTES] === "string") {
        return Uint8Array.fromBase64(v[BYTES]);
      }
    }
    return v;
  }) as T;
}
