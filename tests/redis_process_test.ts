// The shared queue as it is deployed: real `serve` processes on the tiny model (tests/fixtures/tiny_sd, 64²)
// around one redis-server started here: two workers and a front end (--no-worker). Jobs spread over the
// workers (their own metrics say so), a job submitted on one server streams from the others, Redis
// restarts mid-run (the servers report it in /healthz and reconnect, the running job still completes), and
// a worker killed with SIGKILL mid-job loses nothing: the other one reruns it, announced by a `requeued`
// event, and the job is done exactly once.

import { REDIS_SKIP, startRedis } from "./redis_harness.ts";
import {
  collectSse,
  postJson,
  readSse,
  type ServerProcess,
  spawnTinyModelServer,
  type SseEvent,
} from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

// deno-lint-ignore no-explicit-any
async function health(s: ServerProcess): Promise<[number, any]> {
  const res = await fetch(`${s.url}/healthz`);
  return [res.status, await res.json()];
}

async function until(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function metric(s: ServerProcess, line: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return Number(found?.split(" ")[1] ?? NaN);
}

async function submit(s: ServerProcess, body: Record<string, unknown>): Promise<string> {
  const res = await postJson(`${s.url}/v1/jobs`, body);
  const json = await res.json();
  assertEquals(res.status, 202, `POST /v1/jobs on ${s.url} (${JSON.stringify(json)})`);
  return json.id;
}

const events = (s: ServerProcess, id: string, headers: Record<string, string> = {}) =>
  fetch(`${s.url}/v1/jobs/${id}/events`, { headers });

function assertWholeLog(log: { id?: string }[], what: string): void {
  assertEquals(log.map((e) => Number(e.id)), log.map((_, i) => i + 1), `${what}: ids 1..n`);
}

const COMPLETED = 'sd_jobs_total{outcome="completed"}';

Deno.test({
  name: "shared queue on the tiny model: two workers and a front end around one Redis",
  ignore: REDIS_SKIP !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const redis = await startRedis({ persist: true });
  const args = ["--redis", redis.url, "--default-size", "64", "--visibility-timeout", "2"];
  const servers = await Promise.all([
    spawnTinyModelServer(args),
    spawnTinyModelServer(args),
    spawnTinyModelServer([...args, "--no-worker"]),
  ]);
  const workers = servers.slice(0, 2);
  const front = servers[2];
  try {
    // Loading and warming two tiny models (shaders compiled on a cold Mesa cache) takes a while on CI.
    await until(
      async () => {
        const [status, body] = await health(front);
        return status === 200 && body.queue.workers === 2;
      },
      180_000,
      "two ready workers",
    );
    const [, fe] = await health(front);
    assertEquals([fe.redis, fe.worker, fe.model], ["ok", false, null], "the front end's /healthz");

    await t.step("jobs spread over the workers, as each worker's metrics show", async () => {
      const ids = [
        await submit(front, { prompt: "one", steps: 12, seed: 1 }),
        await submit(front, { prompt: "two", steps: 12, seed: 2 }),
      ];
      const sawRunning = [false, false];
      const watch = (async () => {
        for (let i = 0; i < 400 && !sawRunning.every(Boolean); i++) {
          const running = await Promise.all(workers.map((w) => metric(w, "sd_jobs_running")));
          running.forEach((r, k) => sawRunning[k] ||= r === 1);
          await new Promise((r) => setTimeout(r, 25));
        }
      })();
      for (const id of ids) {
        const log = await collectSse(await events(front, id));
        assertEquals(log.at(-1)?.event, "done", `job ${id}`);
      }
      await watch;
      assertEquals(sawRunning, [true, true], "sd_jobs_running was 1 on each worker");
      // A worker counts a job once its engine run has returned, a moment after the `done` event.
      await until(
        async () => (await metric(workers[0], COMPLETED)) + (await metric(workers[1], COMPLETED)) === 2,
        5_000,
        "counts",
      );
      const completed = await Promise.all(workers.map((w) => metric(w, COMPLETED)));
      assertEquals(completed, [1, 1], "sd_jobs_total completed, per worker");
      assertEquals(await metric(front, COMPLETED), 0, "the front end ran none");
    });

    await t.step("a job submitted on one server streams from another and from the front end", async () => {
      const res = await postJson(`${workers[0].url}/v1/generate`, { prompt: "across", steps: 8, seed: 5 }, {
        accept: "text/event-stream",
      });
      const id = res.headers.get("x-job-id")!;
      // Read by hand: closing a /v1/generate stream would cancel its job.
      const own = readSse(res.body!);
      const first = (await own.next()).value as SseEvent;
      assertEquals([first.event, first.id], ["queued", "1"], "first event on the submitting server");
      const [other, fromFront] = await Promise.all([
        collectSse(await events(workers[1], id)),
        collectSse(await events(front, id)),
      ]);
      assertWholeLog(other, "the other worker's stream");
      assertEquals(fromFront, other, "the front end's stream");
      const rest: SseEvent[] = [first];
      for await (const ev of { [Symbol.asyncIterator]: () => own }) rest.push(ev);
      assertEquals(
        rest.map((e) => [e.id, e.event]),
        other.map((e) => [e.id, e.event]),
        "the submitter's stream",
      );
      assertEquals(other.at(-1)?.event, "done", "done");
      const resumed = await collectSse(await events(front, id, { "last-event-id": "4" }));
      assertEquals(resumed, other.slice(4), "resumed from Last-Event-ID 4 on the front end");
    });

    await t.step(
      "Redis restarts mid-run: /healthz says reconnecting, then ok; the running job completes",
      async () => {
        const id = await submit(front, { prompt: "through a restart", steps: 30, seed: 9, preview_every: 0 });
        const stream = events(front, id);
        await until(
          async () => (await Promise.all(workers.map((w) => metric(w, "sd_jobs_running")))).includes(1),
          30_000,
          "running",
        );
        await redis.stop();
        for (const s of servers) {
          await until(async () => (await health(s))[1].redis === "reconnecting", 10_000, "reconnecting");
        }
        const [status] = await health(front);
        assertEquals(status, 503, "/healthz is 503 while Redis is away");
        const refused = await postJson(`${front.url}/v1/jobs`, { prompt: "nowhere" });
        assertEquals(
          [refused.status, (await refused.json()).error.code],
          [503, "unavailable"],
          "submit meanwhile",
        );
        await redis.start();
        for (const s of servers) {
          await until(
            async () => {
              const [code, body] = await health(s);
              return code === 200 && body.redis === "ok";
            },
            15_000,
            "ok again",
          );
        }
        const log = await collectSse(await stream);
        assertWholeLog(log, "the job's log across the restart");
        assertEquals(log.filter((e) => e.event === "done").length, 1, "one done");
        assertEquals(log.at(-1)?.event, "done", "ends with done");
        // The data survived (append-only file): an earlier job is still there.
        const after = await submit(workers[1], { prompt: "after", steps: 2 });
        assertEquals(
          (await collectSse(await events(front, after))).at(-1)?.event,
          "done",
          "a job after the restart",
        );
      },
    );

    await t.step(
      "SIGKILL of the worker running a job: the other one reruns it; done exactly once",
      async () => {
        const before = await Promise.all(workers.map((w) => metric(w, COMPLETED)));
        const id = await submit(front, { prompt: "survivor", steps: 40, seed: 11, preview_every: 0 });
        const res = await events(front, id);
        const log: SseEvent[] = [];
        let victim: ServerProcess | undefined;
        for await (const ev of readSse(res.body!)) {
          log.push(ev);
          if (!victim && ev.event === "progress" && JSON.parse(ev.data).step >= 3) {
            const running = await Promise.all(workers.map((w) => metric(w, "sd_jobs_running")));
            victim = workers[running.indexOf(1)];
            assert(victim, `a worker runs it (${running})`);
            await victim.stop("SIGKILL");
          }
        }
        assert(victim, "the job ran");
        const survivor = workers.find((w) => w !== victim)!;
        assertWholeLog(log, "the job's log");
        const names = log.map((e) => e.event);
        const requeued = names.indexOf("requeued");
        assert(requeued > 0, `a requeued event (${names.join(",")})`);
        assertEquals(JSON.parse(log[requeued].data), {
          attempt: 2,
          reason: "the worker running it stopped responding",
        }, "requeued");
        assertEquals(names.filter((n) => n === "done").length, 1, "one done");
        assertEquals(names.at(-1), "done", "ends with done");
        const seeds = log.filter((e) => e.event === "started").map((e) => JSON.parse(e.data).seed);
        assertEquals(seeds, [11, 11], "both runs started, with the job's seed");
        const job = await (await fetch(`${front.url}/v1/jobs/${id}`)).json();
        assertEquals([job.status, job.progress.step], ["succeeded", job.progress.steps], "GET");
        const k = workers.indexOf(survivor);
        await until(
          async () => (await metric(survivor, COMPLETED)) > before[k],
          5_000,
          "the survivor's count",
        );
        assertEquals(await metric(survivor, COMPLETED), before[k] + 1, "the survivor completed it");
        assertEquals(await metric(survivor, "sd_jobs_requeued_total"), 1, "as a requeued job");
        await until(async () => (await health(front))[1].queue.workers === 1, 30_000, "one worker left");
      },
    );
  } finally {
    await Promise.all(servers.map((s) => s.stop("SIGTERM")));
    await redis.close();
  }
});
