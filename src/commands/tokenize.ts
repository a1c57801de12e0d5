// `tokenize [--tokenizer DIR] "prompt"`: prints BOS, every token (untruncated) and EOS as one JSON array.
// Without --tokenizer: the bundled CLIP tokenizer (SD 1.x/2.x vocabulary).

import { parseArgs } from "node:util";
import { ClipTokenizer } from "../text/tokenizer.ts";
import { bundledClipTokenizer } from "../text/default_tokenizer.ts";

export async function tokenizeCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { tokenizer: { type: "string" } },
  });
  if (positionals.length !== 1) {
    console.error('usage: tokenize [--tokenizer DIR] "prompt"');
    return 2;
  }
  const tokenizer = values.tokenizer
    ? await ClipTokenizer.load(values.tokenizer)
    : bundledClipTokenizer("sd1");
  console.log(JSON.stringify(tokenizer.encodeIds(positionals[0])));
  return 0;
}
