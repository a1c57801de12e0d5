// `tokenize [--tokenizer DIR] "prompt"`: prints BOS, every token (untruncated) and EOS as one JSON array.

import { parseArgs } from "node:util";
import { ClipTokenizer } from "../sampling/tokenizer.ts";

export async function tokenizeCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { tokenizer: { type: "string", default: defaultTokenizerDir() } },
  });
  if (positionals.length !== 1) {
    console.error('usage: tokenize [--tokenizer DIR] "prompt"');
    return 2;
  }
  const tokenizer = await ClipTokenizer.load(values.tokenizer!);
  console.log(JSON.stringify(tokenizer.encodeIds(positionals[0])));
  return 0;
}

/** SD 1.5's tokenizer files as shipped in the tests' fixtures (the same vocab every SD 1.x/2.x uses). */
function defaultTokenizerDir(): string {
  return new URL("../../tests/fixtures/tokenizer", import.meta.url).pathname;
}
