// JSON as Python's json module writes it: it emits the non-standard tokens NaN, Infinity and -Infinity
// (diffusers' scheduler configs hold e.g. "lambda_min_clipped": -Infinity).

/** Parses JSON, accepting Python's NaN / Infinity / -Infinity outside strings (NaN becomes null). */
export function parsePythonJson(text: string): unknown {
  let out = "";
  let i = 0;
  let last = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
      continue;
    }
    if (c === "N" && text.startsWith("NaN", i)) {
      out += text.slice(last, i) + "null";
      i += 3;
      last = i;
      continue;
    }
    if (c === "I" && text.startsWith("Infinity", i)) {
      // 1e999 overflows to ±Infinity in JSON.parse; a preceding '-' stays in place.
      out += text.slice(last, i) + "1e999";
      i += 8;
      last = i;
      continue;
    }
    i++;
  }
  return JSON.parse(out + text.slice(last));
}

export async function readJsonFile(path: string): Promise<unknown> {
  const text = await Deno.readTextFile(path);
  try {
    return parsePythonJson(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}
