// Prometheus text exposition (format 0.0.4) of the server's counters and gauges.

import type { GenerationTimings } from "../pipeline/types.ts";

export type JobOutcome = "completed" | "failed" | "cancelled" | "rejected";

export interface MetricsSnapshot {
  queueLength: number;
  running: number;
  gpuBytes: number;
  modelReady: boolean;
  /** The process's resident set size in bytes (`Deno.memoryUsage().rss`). */
  residentBytes: number;
}

export class Metrics {
  readonly jobs: Record<JobOutcome, number> = { completed: 0, failed: 0, cancelled: 0, rejected: 0 };
  readonly responses = new Map<number, number>();
  /** Jobs this server took over from a worker that went silent (shared queue). */
  requeued = 0;
  stepsTotal = 0;
  stepSecondsTotal = 0;
  /** Steps per second of the last completed job's denoising loop. */
  lastStepsPerSecond = 0;

  jobFinished(outcome: Exclude<JobOutcome, "rejected">): void {
    this.jobs[outcome]++;
  }

  jobRejected(count: number): void {
    this.jobs.rejected += count;
  }

  jobRequeued(): void {
    this.requeued++;
  }

  stepsDone(steps: number, seconds: number): void {
    this.stepsTotal += steps;
    this.stepSecondsTotal += seconds;
  }

  jobTimings(t: GenerationTimings): void {
    if (Number.isFinite(t.stepsPerSecond)) this.lastStepsPerSecond = t.stepsPerSecond;
  }

  response(status: number): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1);
  }

  render(s: MetricsSnapshot): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${formatValue(value)}`);
    };
    metric("sd_queue_length", "gauge", "Generation jobs waiting behind the running one.", [[
      "",
      s.queueLength,
    ]]);
    metric("sd_jobs_running", "gauge", "Generation jobs running on the GPU (0 or 1).", [["", s.running]]);
    metric(
      "sd_jobs_total",
      "counter",
      "Generation jobs by outcome (rejected: refused with 429 because the queue was full).",
      Object.entries(this.jobs).map(([outcome, n]) => [`{outcome="${outcome}"}`, n]),
    );
    metric(
      "sd_jobs_requeued_total",
      "counter",
      "Jobs this server reran after the worker running them went away (shared queue).",
      [["", this.requeued]],
    );
    metric("sd_steps_total", "counter", "Denoising steps run.", [["", this.stepsTotal]]);
    metric("sd_step_seconds_total", "counter", "Seconds spent in denoising steps.", [[
      "",
      this.stepSecondsTotal,
    ]]);
    const avg = this.stepSecondsTotal > 0 ? this.stepsTotal / this.stepSecondsTotal : 0;
    metric(
      "sd_steps_per_second",
      "gauge",
      "Denoising steps per second (last job, and average since start).",
      [
        ['{window="last_job"}', this.lastStepsPerSecond],
        ['{window="lifetime"}', avg],
      ],
    );
    metric("sd_gpu_bytes", "gauge", "Bytes the engine holds on the GPU (weights and activations).", [[
      "",
      s.gpuBytes,
    ]]);
    metric("sd_model_ready", "gauge", "1 once the model is loaded.", [["", s.modelReady ? 1 : 0]]);
    metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [[
      "",
      s.residentBytes,
    ]]);
    metric(
      "sd_http_responses_total",
      "counter",
      "HTTP responses by status code.",
      [...this.responses.entries()].sort((a, b) => a[0] - b[0]).map(([code, n]) => [`{code="${code}"}`, n]),
    );
    return lines.join("\n") + "\n";
  }
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  return String(Math.round(v * 1e6) / 1e6);
}
