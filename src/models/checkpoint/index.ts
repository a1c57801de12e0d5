// Checkpoints: opening a diffusers folder or a single-file checkpoint, each component's config and
// tensors by diffusers names, validation, and a description for `inspect`.

export { ComponentSource, type TensorMeta } from "./component.ts";
export { describeModel, describeOpenedModel } from "./describe.ts";
export { inferSingleFileConfigJson, type SingleFileConfigs } from "./infer_config.ts";
export { openModel } from "./open.ts";
export type { OpenedModel, OpenModelOptions } from "./opened.ts";
export { assertValid, validate, type ValidationIssue, type ValidationReport } from "./validate.ts";
