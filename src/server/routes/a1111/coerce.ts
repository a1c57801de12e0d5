// pydantic 1's lenient types, as A1111's FastAPI models apply them: "20" is an integer, 20.7 is 20, "yes" is
// true, numbers are text where text is wanted; what does not convert is an issue with pydantic's message and
// type ("value is not a valid integer", "type_error.integer"), and so is a value out of bounds.

import type { ValidationIssue } from "./errors.ts";

export type FieldType = "int" | "float" | "bool" | "str" | "list" | "dict";

/** pydantic 1's message for a bound: "ensure this value is greater than or equal to 1". */
export function bound(key: string, op: ">=" | "<=" | ">", limit: number): ValidationIssue {
  const [words, type] = op === ">="
    ? ["greater than or equal to", "not_ge"]
    : op === "<="
    ? ["less than or equal to", "not_le"]
    : ["greater than", "not_gt"];
  return {
    loc: ["body", key],
    msg: `ensure this value is ${words} ${limit}`,
    type: `value_error.number.${type}`,
    ctx: { limit_value: limit },
  };
}

export const BOOL_TEXT: Record<string, boolean> = {
  "0": false,
  off: false,
  f: false,
  false: false,
  n: false,
  no: false,
  "1": true,
  on: true,
  t: true,
  true: true,
  y: true,
  yes: true,
};

const INT_TEXT = /^\s*[-+]?\d+\s*$/;
const FLOAT_TEXT = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/** pydantic 1's coercion of one value, or undefined after adding the issue. */
export function coerce(v: unknown, type: FieldType, path: string[], issues: ValidationIssue[]): unknown {
  const fail = (msg: string, t: string) => {
    issues.push({ loc: ["body", ...path], msg, type: t });
    return undefined;
  };
  switch (type) {
    case "int":
      if (typeof v === "number" && Number.isFinite(v)) return Math.trunc(v);
      if (typeof v === "string" && INT_TEXT.test(v)) return Number(v);
      return fail("value is not a valid integer", "type_error.integer");
    case "float":
      if (typeof v === "number" && Number.isFinite(v)) return v;
      if (typeof v === "string" && FLOAT_TEXT.test(v)) return Number(v);
      return fail("value is not a valid float", "type_error.float");
    case "bool":
      if (typeof v === "boolean") return v;
      if (v === 0 || v === 1) return v === 1;
      if (typeof v === "string" && Object.hasOwn(BOOL_TEXT, v.trim().toLowerCase())) {
        return BOOL_TEXT[v.trim().toLowerCase()];
      }
      return fail("value could not be parsed to a boolean", "type_error.bool");
    case "str":
      if (typeof v === "string") return v;
      if (typeof v === "number" && Number.isFinite(v)) return String(v);
      return fail("str type expected", "type_error.str");
    case "list":
      return Array.isArray(v) ? v : fail("value is not a valid list", "type_error.list");
    case "dict":
      return typeof v === "object" && v !== null && !Array.isArray(v)
        ? v
        : fail("value is not a valid dict", "type_error.dict");
  }
}
