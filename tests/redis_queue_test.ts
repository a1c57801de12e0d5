// The shared queue (src/server/queue/redis_*.ts) against a real redis-server, with several apps in this
// process on the fake engine: where jobs run, streaming and resuming from any server, cancels reaching the
// worker, the global bound, takeover of a silent worker's job, a worker shutting down mid-job, retention,
// and the scripts' exactly-once rules. tests/redis_process_test.ts runs servers as processes on the tiny
// real model.

import { decodeImage } from "../src/image/codec.ts";
import { RedisConnection } from "../src/server/queue/redis_connection.ts";
import { redisJobQueue } from "../src/server/queue/redis_queue.ts";
import { GROUP } from "../src/server/queue/redis_scripts.ts";
import { REDIS_SKIP, type RedisServer, startRedis } from "./redis_harness.ts";
import {
  collectSse,
  fakeEngineFactory,
  postJson,
  readSse,
  startTestServer,
  type TestServer,
  waitFor,
} from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const SMALL = { width: 16, height: 16 };

interface Cluster {
  redis: RedisServer;
  workers: TestServer[];
  front: TestServer;
  /** Every server, workers first. */
  all: TestServer[];
}

/** `workers` servers on the fake engine and one front end, all on one fresh Redis. */
async function withCluster(
  init: { workers?: number; stepDelayMs?: number; visibilityMs?: number; options?: Record<string, number> },
  fn: (c: Cluster) => Promise<void>,
): Promise<void> {
  const redis = await startRedis();
  const servers: TestServer[] = [];
  try {
    const queue = (worker: boolean) =>
      redisJobQueue({ url: redis.url, worker, visibilityMs: init.visibilityMs ?? 2_000 });
    for (let i = 0; i < (init.workers ?? 2); i++) {
      servers.push(
        await startTestServer({
          engine: fakeEngineFactory({ stepDelayMs: init.stepDelayMs ?? 20 }),
          options: init.options,
          jobs: queue(true),
        }),
      );
    }
    const front = await startTestServer({ options: init.options, jobs: queue(false) });
    servers.push(front);
    await waitWorkers(front, init.workers ?? 2);
    await fn({ redis, workers: servers.slice(0, -1), front, all: servers });
  } finally {
    for (const s of servers) await s.close();
    await redis.close();
  }
}

/** Until /healthz says Redis is ok and `n` workers are taking jobs. */
async function waitWorkers(s: TestServer, n: number): Promise<void> {
  await waitForAsync(
    async () => {
      const h = await (await fetch(`${s.url}/healthz`)).json();
      return h.redis === "ok" && h.queue.workers === n;
    },
    10_000,
    `${n} workers`,
  );
}

async function waitForAsync(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// deno-lint-ignore no-explicit-any
async function submit(s: TestServer, body: Record<string, unknown>): Promise<any> {
  const res = await postJson(`${s.url}/v1/jobs`, { ...SMALL, ...body });
  const json = await res.json();
  assertEquals(res.status, 202, `POST /v1/jobs (${JSON.stringify(json)})`);
  return json;
}

const events = (s: TestServer, id: string, headers: Record<string, string> = {}) =>
  fetch(`${s.url}/v1/jobs/${id}/events`, { headers });

// deno-lint-ignore no-explicit-any
async function getJob(s: TestServer, id: string): Promise<[number, any]> {
  const res = await fetch(`${s.url}/v1/jobs/${id}`);
  return [res.status, await res.json()];
}

function assertWholeLog(log: { id?: string }[], what: string): void {
  assertEquals(log.map((e) => Number(e.id)), log.map((_, i) => i + 1), `${what}: ids 1..n`);
}

async function metric(s: TestServer, line: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return Number(found?.split(" ")[1] ?? NaN);
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: REDIS_SKIP !== undefined, sanitizeOps: false, sanitizeResources: false, fn });

test("shared queue: a job submitted on the front end runs on one worker; every server streams it with the same ids, resumes after Last-Event-ID and reports it", async () => {
  await withCluster({}, async ({ workers, front, all }) => {
    const health = await (await fetch(`${front.url}/healthz`)).json();
    assertEquals([health.redis, health.worker, health.model], ["ok", false, null], "front end /healthz");
    const job = await submit(front, { prompt: "shared", steps: 8, seed: 3 });
    assertEquals([job.status, job.position], ["queued", 0], "202: first in line");
    // Two servers follow it live at once.
    const [a, b] = await Promise.all([events(workers[1], job.id), events(front, job.id)]);
    const [logA, logB] = await Promise.all([collectSse(a), collectSse(b)]);
    assertWholeLog(logA, "stream from a worker");
    assertEquals(logB, logA, "the front end's stream");
    assertEquals(logA.map((e) => e.event).filter((e) => e !== "progress" && e !== "preview"), [
      "queued",
      "started",
      "done",
    ], "events");
    assertEquals(logA.at(-1)!.json.job_id, job.id, "done carries the job id");
    assertEquals(logA[1].json.seed, 3, "seed");
    // It ran exactly once, on one worker.
    const runs = workers.flatMap((w) => w.fake!.runs);
    await waitFor(() => runs[0]?.outcome !== "running", 2_000, "the engine run to return");
    assertEquals(runs.map((r) => r.outcome), ["done"], "engine runs");

    for (const s of all) {
      const resumed = await collectSse(await events(s, job.id, { "last-event-id": "3" }));
      assertEquals(resumed, logA.slice(3), `resumed after id 3 on ${s.url}`);
      const [status, body] = await getJob(s, job.id);
      assertEquals([status, body.status, body.progress], [200, "succeeded", { step: 8, steps: 8 }], "GET");
      const img = decodeImage(Uint8Array.fromBase64(body.result.image));
      assertEquals([img.width, img.height], [16, 16], "result image");
      const past = await events(s, job.id, { "last-event-id": String(logA.length) });
      assertEquals(past.status, 204, "nothing past the end");
      await past.body?.cancel();
    }
    const [missing] = await getJob(front, "job-00000000-0000-0000-0000-000000000000");
    assertEquals(missing, 404, "unknown id");
  });
});

test("shared queue: jobs spread over the idle workers, and each worker's metrics count its own", async () => {
  await withCluster({ stepDelayMs: 30 }, async ({ workers, front }) => {
    const jobs = [
      await submit(front, { prompt: "one", steps: 15 }),
      await submit(workers[0], { prompt: "two", steps: 15 }),
    ];
    await waitForAsync(
      async () => {
        const running = await Promise.all(workers.map((w) => metric(w, "sd_jobs_running")));
        return running.every((r) => r === 1);
      },
      5_000,
      "both workers running",
    );
    const health = await (await fetch(`${front.url}/healthz`)).json();
    assertEquals(health.queue, { queued: 0, running: 2, workers: 2 }, "the shared queue from the front end");
    for (const job of jobs) {
      assertEquals((await collectSse(await events(front, job.id))).at(-1)?.event, "done", "done");
    }
    for (const w of workers) {
      // Counted once the engine run has returned, a moment after `done`.
      await waitFor(() => w.sd.metrics.jobs.completed === 1, 2_000, "the count");
      assertEquals(await metric(w, 'sd_jobs_total{outcome="completed"}'), 1, "one job on each worker");
      assertEquals(w.fake!.runs.length, 1, "one run on each worker");
    }
    assertEquals(await metric(front, 'sd_jobs_total{outcome="completed"}'), 0, "the front end ran none");
  });
});

test("shared queue: DELETE on any server reaches the worker; a queued job is dropped; a /v1/generate client that hangs up cancels its job", async () => {
  await withCluster({ stepDelayMs: 50 }, async ({ workers, front }) => {
    const running = [
      await submit(front, { prompt: "r1", steps: 100 }),
      await submit(front, { prompt: "r2", steps: 100 }),
    ];
    const queued = await submit(front, { prompt: "waits", steps: 2 });
    assertEquals(queued.position, 1, "queued behind two running jobs on two workers");
    const [, waiting] = await getJob(workers[0], queued.id);
    assertEquals([waiting.status, waiting.position], ["queued", 1], "GET of the waiting job");

    const del = await fetch(`${workers[1].url}/v1/jobs/${queued.id}`, { method: "DELETE" });
    assertEquals([del.status, (await del.json()).state], [200, "queued"], "DELETE queued");
    const log = await collectSse(await events(front, queued.id));
    assertEquals(
      log.map((e) => [e.event, e.json.code]),
      [["queued", undefined], ["error", "cancelled"]],
      "dropped",
    );

    const t0 = performance.now();
    const del2 = await fetch(`${front.url}/v1/jobs/${running[0].id}`, { method: "DELETE" });
    assertEquals([del2.status, (await del2.json()).state], [200, "running"], "DELETE running");
    const last = (await collectSse(await events(workers[0], running[0].id))).at(-1)!;
    assertEquals([last.event, last.json.code], ["error", "cancelled"], "the running job ends cancelled");
    assert(performance.now() - t0 < 2_000, "cancelled promptly (pub/sub)");
    const runs = workers.flatMap((w) => w.fake!.runs);
    const aborted = runs.find((r) => r.request.prompt === "r1")!;
    await waitFor(() => aborted.outcome === "aborted", 2_000, "engine run aborted");
    assert(aborted.stepsDone < 50, `stopped early (${aborted.stepsDone} steps)`);
    assert(!runs.some((r) => r.request.prompt === "waits"), "the dropped job never ran");
    const [, gone] = await getJob(workers[1], running[0].id);
    assertEquals([gone.status, gone.error.code], ["cancelled", "cancelled"], "GET");
    const again = await fetch(`${front.url}/v1/jobs/${running[0].id}`, { method: "DELETE" });
    assertEquals(again.status, 409, "DELETE again");
    await again.body?.cancel();
    await fetch(`${front.url}/v1/jobs/${running[1].id}`, { method: "DELETE" }).then((r) => r.body?.cancel());

    // A streamed /v1/generate on the front end, its client gone after `started`.
    const res = await postJson(`${front.url}/v1/generate`, { prompt: "hang up", ...SMALL, steps: 100 }, {
      accept: "text/event-stream",
    });
    const id = res.headers.get("x-job-id")!;
    const reader = readSse(res.body!);
    while ((await reader.next()).value?.event !== "started") { /* until it runs */ }
    await reader.return(undefined);
    const end = (await collectSse(await events(workers[0], id))).at(-1)!;
    assertEquals([end.event, end.json.code], ["error", "cancelled"], "the hung-up job is cancelled");
  });
});

test("shared queue: the bound is global: 429 with Retry-After from any server once the shared queue is full", async () => {
  await withCluster({ stepDelayMs: 50, options: { maxQueued: 1 } }, async ({ workers, front }) => {
    const jobs = [
      await submit(front, { prompt: "a", steps: 100 }),
      await submit(workers[0], { prompt: "b", steps: 100 }),
      await submit(workers[1], { prompt: "c", steps: 100 }),
    ];
    for (const s of [front, workers[0]]) {
      const refused = await postJson(`${s.url}/v1/jobs`, { prompt: "d", ...SMALL });
      const body = await refused.json();
      assertEquals([refused.status, body.error.code], [429, "queue_full"], "full");
      assert(Number(refused.headers.get("retry-after")) >= 1, "Retry-After");
    }
    assertEquals(await metric(front, 'sd_jobs_total{outcome="rejected"}'), 1, "counted where refused");
    for (const job of jobs) {
      await fetch(`${front.url}/v1/jobs/${job.id}`, { method: "DELETE" }).then((r) => r.body?.cancel());
    }
    // Room again once they are gone.
    await waitForAsync(
      async () =>
        (await postJson(`${front.url}/v1/jobs`, { prompt: "e", ...SMALL, steps: 1 })).status === 202,
      5_000,
      "room",
    );
  });
});

test("shared queue: a job whose worker goes silent is taken over after the visibility timeout and rerun, with a requeued event; the silent run's late events are refused", async () => {
  await withCluster({ workers: 0, visibilityMs: 1_000 }, async ({ redis, front }) => {
    const job = await submit(front, { prompt: "orphan", steps: 4 });
    // A worker that takes the job, starts it, and falls silent (it never renews its claim).
    const ghost = new RedisConnection(redis.url, "sd");
    try {
      await waitFor(() => ghost.ready, 5_000, "ghost connected");
      await ghost.command.xreadgroup("GROUP", GROUP, "ghost", "COUNT", 1, "STREAMS", "sd:queue", ">");
      const entry = await ghost.command.hget(`sd:job:${job.id}`, "entry");
      const claim = await ghost.script(
        "sdClaim",
        job.id,
        entry!,
        "ghost",
        3,
        60_000,
        60_000,
        100,
        "x",
      ) as unknown[];
      assertEquals(claim.slice(0, 2), ["run", 1], "the ghost's claim");
      const started = JSON.stringify({ type: "started", seed: 1, steps: 4, width: 16, height: 16 });
      assertEquals(
        await ghost.script("sdAppend", job.id, "1", started, "", "", 60_000, 100, ""),
        2,
        "ghost event",
      );

      // A real worker joins; after the timeout it takes the job over.
      const worker = await startTestServer({
        engine: fakeEngineFactory({ stepDelayMs: 5 }),
        jobs: redisJobQueue({ url: redis.url, worker: true, visibilityMs: 1_000 }),
      });
      try {
        const log = await collectSse(await events(front, job.id));
        assertWholeLog(log, "log");
        const names = log.map((e) => e.event);
        assertEquals(names.slice(0, 4), ["queued", "started", "requeued", "started"], "takeover");
        assertEquals(
          log[2].json,
          { attempt: 2, reason: "the worker running it stopped responding" },
          "requeued",
        );
        assertEquals(names.filter((n) => n === "done").length, 1, "one done");
        assertEquals(names.at(-1), "done", "ends with done");
        assertEquals(await metric(worker, "sd_jobs_requeued_total"), 1, "requeue counted");
        // The ghost comes back: its run is no longer the job's.
        assertEquals(
          await ghost.script("sdAppend", job.id, "1", started, "", "", 60_000, 100, ""),
          -2,
          "late",
        );
      } finally {
        await worker.close();
      }
    } finally {
      await ghost.close();
    }
  });
});

test("shared queue: the scripts write one final event: a second done, a stale run and a cancel after the end are refused", async () => {
  await withCluster({ workers: 0 }, async ({ redis, front }) => {
    const conn = new RedisConnection(redis.url, "sd");
    try {
      await waitFor(() => conn.ready, 5_000, "connected");
      const job = await submit(front, { prompt: "p", steps: 1 });
      const take = async (consumer: string, reclaim: boolean) => {
        let entry: string;
        if (reclaim) {
          const [, claimed] = await conn.command.xautoclaim("sd:queue", GROUP, consumer, 0, "0-0") as [
            string,
            [string, string[]][],
          ];
          entry = claimed[0][0];
        } else {
          const read = await conn.command.xreadgroup(
            "GROUP",
            GROUP,
            consumer,
            "STREAMS",
            "sd:queue",
            ">",
          ) as [
            string,
            [string, string[]][],
          ][];
          entry = read[0][1][0][0];
        }
        return await conn.script(
          "sdClaim",
          job.id,
          entry,
          consumer,
          3,
          60_000,
          60_000,
          100,
          "gone",
        ) as unknown[];
      };
      const append = (attempt: string, event: object, final = "") =>
        conn.script("sdAppend", job.id, attempt, JSON.stringify(event), final, "", 60_000, 100, "");
      const done = { type: "done", image: { $b64: "" }, mime: "image/png", seed: 1, width: 8, height: 8 };

      assertEquals((await take("w1", false)).slice(0, 2), ["run", 1], "w1 runs it");
      assertEquals((await take("w2", true)).slice(0, 2), ["run", 2], "w2 takes it over");
      assertEquals(await append("1", { type: "started" }), -3, "w1's run is fenced off");
      assertEquals(await append("2", done, "succeeded"), 3, "w2's done (after queued and requeued)");
      assertEquals(await append("2", done, "succeeded"), -2, "a second done");
      assertEquals(
        await append("*", { type: "error", code: "cancelled" }, "cancelled"),
        -2,
        "an error after done",
      );
      const del = await fetch(`${front.url}/v1/jobs/${job.id}`, { method: "DELETE" });
      assertEquals(del.status, 409, "DELETE after the end");
      await del.body?.cancel();
      const log = await collectSse(await events(front, job.id));
      assertEquals(log.map((e) => e.event), ["queued", "requeued", "done"], "the log");
      const [, body] = await getJob(front, job.id);
      assertEquals(body.status, "succeeded", "status");
      assertEquals(await conn.command.xlen("sd:queue"), 0, "the entry is gone from the queue");
    } finally {
      await conn.close();
    }
  });
});

test("shared queue: a worker shutting down mid-job gives it back, and another worker finishes it", async () => {
  await withCluster({ stepDelayMs: 40 }, async ({ workers, front }) => {
    // startTestServer's grace is 2 s; this job needs about 3 s.
    const job = await submit(front, { prompt: "long", steps: 70, preview_every: 0 });
    await waitForAsync(async () => (await getJob(front, job.id))[1].status === "running", 5_000, "running");
    const busy = workers.find((w) => w.fake!.runs.length === 1)!;
    const other = workers.find((w) => w !== busy)!;
    const stream = events(front, job.id);
    await busy.close();
    const log = await collectSse(await stream);
    assertWholeLog(log, "log");
    const requeued = log.find((e) => e.event === "requeued");
    assertEquals(requeued?.json.reason, "the worker running it shut down", "requeued");
    assertEquals(log.filter((e) => e.event === "done").length, 1, "one done");
    await waitFor(() => other.fake!.runs[0]?.outcome !== "running", 2_000, "the engine run to return");
    assertEquals(other.fake!.runs.map((r) => r.outcome), ["done"], "finished on the other worker");
  });
});

test("shared queue: retention: at most retainJobs finished jobs, on every server", async () => {
  await withCluster({ options: { retainJobs: 1 } }, async ({ workers, front }) => {
    const first = await submit(front, { prompt: "one", steps: 1 });
    await collectSse(await events(front, first.id));
    const second = await submit(front, { prompt: "two", steps: 1 });
    await collectSse(await events(front, second.id));
    for (const s of [front, ...workers]) {
      assertEquals((await getJob(s, first.id))[0], 404, "the older one is gone");
      assertEquals((await getJob(s, second.id))[0], 200, "the newer one stays");
    }
  });
});
