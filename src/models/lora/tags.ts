// A1111's LoRA prompt tags: `<lora:NAME>` or `<lora:NAME:SCALE>` (scale 1 when absent) anywhere in the prompt.
// The tags are taken out of the text before it is tokenized and name LoRAs to merge for the run, as A1111
// does. Only the prompt's tags count; the negative prompt is text. A1111's `<lora:NAME:TE:UNET>` split scales
// are not supported (an error, not a silent misreading).

import { LoraError } from "./file.ts";

export interface LoraRequest {
  /** A file stem in the LoRA folder. */
  name: string;
  scale: number;
}

const TAG = /<lora:([^>]*)>/gi;

/** The prompt without its LoRA tags, and the LoRAs they name, in order. */
export function splitLoraTags(prompt: string): { prompt: string; loras: LoraRequest[] } {
  const loras: LoraRequest[] = [];
  const text = prompt.replace(TAG, (tag, body: string) => {
    const fields = body.split(":").map((f) => f.trim());
    if (fields.length > 2 || !fields[0]) {
      throw new LoraError(`${tag}: write <lora:NAME> or <lora:NAME:SCALE>`, "prompt");
    }
    const scale = fields.length === 2 ? Number(fields[1]) : 1;
    if (fields.length === 2 && (fields[1] === "" || !Number.isFinite(scale))) {
      throw new LoraError(`${tag}: the scale must be a number`, "prompt");
    }
    loras.push({ name: fields[0], scale });
    return "";
  });
  return { prompt: text, loras };
}
