// Validation of a component against its config: every expected tensor present with the expected shape and
// a floating dtype, nothing unexpected. Reports name each tensor (and its file key for single files).

import type { ComponentKind } from "../expected.ts";
import type { SafetensorsDType } from "../../weights/safetensors.ts";
import { type ComponentSource, sameShape } from "./component.ts";
import { describeMismatch } from "./looks_like.ts";

export interface ValidationIssue {
  kind: "missing" | "extra" | "shape" | "dtype";
  /** The diffusers name (for "extra" tensors of single files: the file's own key). */
  tensor: string;
  message: string;
}

export interface ValidationReport {
  component: ComponentKind;
  ok: boolean;
  issues: ValidationIssue[];
  /** When the tensors don't fit the config: which model the file looks like instead, or null. */
  looksLike: string | null;
  /** Human-readable, one issue per line (at most 20 lines of issues). */
  summary: string;
}

const FLOAT_DTYPES: SafetensorsDType[] = ["F16", "BF16", "F32"];

/**
 * Every expected tensor present with the expected shape and a floating dtype, nothing unexpected
 * (known non-weights such as position_ids are ignored). Issues name the tensor; for single files the
 * file key too. When the tensors don't fit, says which model the file looks like.
 */
export function validate(component: ComponentSource): ValidationReport {
  const issues: ValidationIssue[] = [];
  const where = (name: string) =>
    component.map ? ` (file key "${component.map.byName.get(name)?.original}")` : "";
  for (const [name, shape] of component.expectedTensors()) {
    if (!component.has(name)) {
      issues.push({
        kind: "missing",
        tensor: name,
        message: `missing tensor "${name}"${where(name)} [${shape}]`,
      });
      continue;
    }
    const meta = component.tensor(name);
    const entry = component.map?.byName.get(name);
    const raw = entry?.rows ? component.fileInfo(entry.original).shape : null;
    if (entry && raw && !sameShape(raw, entry.originalShape)) {
      // A fused q/k/v tensor of the wrong size: its slice could have any shape, so report the file's.
      issues.push({
        kind: "shape",
        tensor: name,
        message: `tensor "${name}"${
          where(name)
        }: the fused tensor has shape [${raw}], expected [${entry.originalShape}]`,
      });
    } else if (!sameShape(meta.shape, shape)) {
      issues.push({
        kind: "shape",
        tensor: name,
        message: `tensor "${name}"${where(name)} has shape [${meta.shape}], expected [${shape}]`,
      });
    }
    if (!FLOAT_DTYPES.includes(meta.dtype)) {
      issues.push({
        kind: "dtype",
        tensor: name,
        message: `tensor "${name}"${where(name)} is ${meta.dtype}, not a float`,
      });
    }
  }
  for (const key of component.unknownKeys()) {
    issues.push({
      kind: "extra",
      tensor: key,
      message: `unexpected tensor "${key}" (not part of this ${component.kind} config)`,
    });
  }
  const looksLike = issues.length > 0 ? describeMismatch(component) : null;
  const lines = [
    `${component.kind} (${component.source}): ${issues.length === 0 ? "OK" : `${issues.length} problem(s)`}`,
  ];
  for (const i of issues.slice(0, 20)) lines.push(`  ${i.message}`);
  if (issues.length > 20) lines.push(`  ... and ${issues.length - 20} more`);
  if (looksLike) lines.push(`  ${looksLike}`);
  return { component: component.kind, ok: issues.length === 0, issues, looksLike, summary: lines.join("\n") };
}

/** Throws with the validation summary unless the component is valid. */
export function assertValid(component: ComponentSource): void {
  const r = validate(component);
  if (!r.ok) throw new Error(r.summary);
}
