// `inspect PATH`: what a model folder or single-file checkpoint is, and what is missing.

import { describeModel } from "../models/checkpoint/index.ts";

export async function inspectCommand(args: string[]): Promise<number> {
  if (args.length !== 1) {
    console.error("usage: inspect MODEL_DIR_OR_FILE");
    return 2;
  }
  console.log(await describeModel(args[0]));
  return 0;
}
