// `weights` downloads: the hub's model list, resumable sha256-checked transfers, and the lock file.

export {
  DEFAULT_ENDPOINT,
  DIFFUSERS_FP16_FILES,
  HUB_MODELS,
  type HubModel,
  type HubModelName,
  TAESD_FILES,
} from "./hub.ts";
export { formatBytes, type ProgressFactory, type TransferProgress } from "./fetch.ts";
export { DownloadError } from "./http.ts";
export { LOCK_FILE, type LockEntry, readLock, type WeightsLock } from "./lock.ts";
export { downloadModel, type DownloadOptions, type DownloadResult, type ModelTransfer } from "./model.ts";
export { chooseDefaultModel, DEFAULT_MODEL, downloadAdvice, type ModelChoice } from "./default_model.ts";
