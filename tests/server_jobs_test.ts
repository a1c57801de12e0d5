// The jobs API over real loopback HTTP on the fake engine: POST /v1/jobs (202, not tied to the connection),
// polling GET /v1/jobs/:id, the event stream with replay from Last-Event-ID (header or query), heartbeats,
// DELETE, and the retention bounds on finished jobs.

import { decodeImage } from "../src/image/codec.ts";
import {
  collectSse,
  fakeEngineFactory,
  postJson,
  readSse,
  type SseEvent,
  type TestEngineFactory,
  type TestServer,
  waitFor,
  withServer,
} from "./server_harness.ts";
import { assert, assertEquals } from "./util.ts";

const ENGINE: TestEngineFactory = fakeEngineFactory({ stepDelayMs: 2 });
const SLOW_ENGINE: TestEngineFactory = fakeEngineFactory({ stepDelayMs: 40 });

const SMALL = { width: 16, height: 16 };

/** POST /v1/jobs; returns the 202 body. */
// deno-lint-ignore no-explicit-any
async function submit(s: TestServer, body: Record<string, unknown>): Promise<any> {
  const res = await postJson(`${s.url}/v1/jobs`, { ...SMALL, ...body });
  const json = await res.json();
  assertEquals(res.status, 202, `POST /v1/jobs (${JSON.stringify(json)})`);
  return json;
}

/** Polls GET /v1/jobs/:id until the job has ended. */
// deno-lint-ignore no-explicit-any
async function waitEnded(s: TestServer, id: string, timeoutMs = 10_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await fetch(`${s.url}/v1/jobs/${id}`);
    const body = await res.json();
    assertEquals(res.status, 200, "GET while polling");
    if (!["queued", "running"].includes(body.status)) return body;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`job ${id} did not end`);
}

function events(
  s: TestServer,
  id: string,
  headers: Record<string, string> = {},
  query = "",
): Promise<Response> {
  return fetch(`${s.url}/v1/jobs/${id}/events${query}`, { headers });
}

/** Checks that ids run 1, 2, … n with nothing missing or repeated. */
function assertWholeLog(log: { id?: string }[], what: string): void {
  assertEquals(log.map((e) => Number(e.id)), log.map((_, i) => i + 1), `${what}: ids 1..n`);
}

Deno.test("POST /v1/jobs answers 202 at once with Location; polling GET reaches succeeded with the result", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const res = await postJson(`${s.url}/v1/jobs`, {
      prompt: "a lighthouse",
      width: 40,
      height: 24,
      steps: 8,
      seed: 5,
    });
    const body = await res.json();
    assertEquals(res.status, 202, "status");
    assert(/^job-[0-9a-f-]{36}$/.test(body.id), `id ${body.id}`);
    assertEquals(res.headers.get("location"), `/v1/jobs/${body.id}`, "Location");
    assertEquals(
      [body.object, body.url, body.events_url],
      ["job", `/v1/jobs/${body.id}`, `/v1/jobs/${body.id}/events`],
      "links",
    );
    // The GPU was idle: the job starts at once, first in line.
    assert(["queued", "running"].includes(body.status), `status ${body.status}`);
    assertEquals(body.position, 0, "position");

    const ended = await waitEnded(s, body.id);
    assertEquals([ended.id, ended.object, ended.status], [body.id, "job", "succeeded"], "final status");
    assertEquals(ended.progress, { step: 8, steps: 8 }, "progress");
    assert(!("position" in ended) && !("error" in ended), "no position or error once succeeded");
    assert(Math.abs(ended.created_at - Date.now() / 1000) < 60, `created_at ${ended.created_at}`);
    const img = decodeImage(Uint8Array.fromBase64(ended.result.image));
    assertEquals([img.width, img.height, img.mime], [40, 24, "image/png"], "result image");

    // The result is /v1/generate's JSON answer for the same request (same fields, same image).
    const direct = await (await postJson(`${s.url}/v1/generate`, {
      prompt: "a lighthouse",
      width: 40,
      height: 24,
      steps: 8,
      seed: 5,
    })).json();
    assertEquals(Object.keys(ended.result).sort(), Object.keys(direct).sort(), "result fields");
    assertEquals(ended.result.job_id, body.id, "result job_id");
    assertEquals(
      [ended.result.seed, ended.result.parameters],
      [direct.seed, direct.parameters],
      "seed, parameters",
    );
    assert(ended.result.image === direct.image, "same image as /v1/generate");

    // Previews default to every ceil(steps/4) steps, as on a streamed /v1/generate.
    const log = await collectSse(await events(s, body.id));
    assertEquals(log.filter((e) => e.event === "preview").map((e) => e.json.step), [2, 4, 6], "previews");
  });
});

Deno.test("GET /v1/jobs/:id of a waiting job shows its position; the events route streams it to the end", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const first = await submit(s, { prompt: "first", steps: 4 });
    const second = await submit(s, { prompt: "second", steps: 2, preview_every: 0 });
    assertEquals([second.status, second.position], ["queued", 1], "second is queued behind the first");
    const waiting = await (await fetch(`${s.url}/v1/jobs/${second.id}`)).json();
    assertEquals(
      [waiting.status, waiting.position, "progress" in waiting],
      ["queued", 1, false],
      "queued job",
    );
    const running = await (await fetch(`${s.url}/v1/jobs/${first.id}`)).json();
    assertEquals([running.status, "position" in running], ["running", false], "running job");

    const log = await collectSse(await events(s, second.id));
    assertWholeLog(log, "second job");
    // Queued one behind the first; it starts when the first ends.
    assertEquals(log.map((e) => e.event), ["queued", "started", "progress", "progress", "done"], "events");
    assertEquals(log[0].json.position, 1, "position");
    assertEquals(log.at(-1)!.json.job_id, second.id, "done carries the job id");
  });
});

Deno.test("a dropped event stream resumes with Last-Event-ID: replay, then live, no gap, no duplicate", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "resume me", steps: 12 });
    const job = s.sd.queue.find(id)!;

    // First connection: read a few events, then drop it.
    const client = new AbortController();
    const res = await fetch(`${s.url}/v1/jobs/${id}/events`, { signal: client.signal });
    assertEquals(res.headers.get("x-job-id"), id, "X-Job-Id");
    const before: SseEvent[] = [];
    for await (const ev of readSse(res.body!)) {
      before.push(ev);
      if (ev.event === "progress" && JSON.parse(ev.data).step === 2) break;
    }
    client.abort();
    // Let events pile up while disconnected, so the reconnect has something to replay.
    await waitFor(() => (job.progress?.step ?? 0) >= 5, 5_000, "step 5");
    assertEquals(job.status, "running", "the disconnect did not cancel the job");
    const loggedAtReconnect = job.eventCount;

    const after = [];
    for await (const ev of readSse((await events(s, id, { "last-event-id": before.at(-1)!.id! })).body!)) {
      after.push(ev);
    }
    const union = [...before, ...after];
    assertWholeLog(union, "union");
    assert(Number(after[0].id) === before.length + 1, "resumed right after the last id seen");
    assert(after.some((e) => Number(e.id) > loggedAtReconnect), "live events followed the replay");
    assert(after.some((e) => Number(e.id) <= loggedAtReconnect), "missed events were replayed");
    assertEquals(union.at(-1)!.event, "done", "ends with done");
    assertEquals(s.fake!.runs[0].outcome, "done", "engine run completed");

    // The union is exactly the job's log.
    const full = [];
    for await (const ev of readSse((await events(s, id)).body!)) full.push(ev);
    assertEquals(union, full, "union equals the full log");
  });
});

Deno.test("a finished job replays from 0, from the middle (header or query), and 204 past the end", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "replay", steps: 6 });
    await waitEnded(s, id);
    const full = await collectSse(await events(s, id));
    assertWholeLog(full, "full log");
    assertEquals(full.map((e) => e.event), [
      "queued",
      "started",
      "progress",
      "progress",
      "preview",
      "progress",
      "progress",
      "preview",
      "progress",
      "progress",
      "done",
    ], "event names");
    assertEquals(full.filter((e) => e.event === "done").length, 1, "one done");

    const fromHeader = await collectSse(await events(s, id, { "last-event-id": "4" }));
    assertEquals(fromHeader, full.slice(4), "from Last-Event-ID 4");
    const fromQuery = await collectSse(await events(s, id, {}, "?last_event_id=7"));
    assertEquals(fromQuery, full.slice(7), "from ?last_event_id=7");
    // EventSource sends the header on reconnecting, when the URL's parameter is stale: the header wins.
    const both = await collectSse(await events(s, id, { "last-event-id": "9" }, "?last_event_id=2"));
    assertEquals(both, full.slice(9), "header over query");

    // Nothing left: 204, which stops an EventSource from reconnecting forever.
    for (const last of [String(full.length), "999"]) {
      const done = await events(s, id, { "last-event-id": last });
      assertEquals(done.status, 204, `after id ${last}`);
      await done.body?.cancel();
    }
  });
});

Deno.test("several subscribers at once each get the whole log", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "fan out", steps: 5 });
    const streams = await Promise.all([events(s, id), events(s, id), events(s, id, {}, "?last_event_id=0")]);
    const logs = await Promise.all(streams.map((r) => collectSse(r)));
    assertWholeLog(logs[0], "first subscriber");
    assertEquals(logs[0].at(-1)?.event, "done", "ends with done");
    assertEquals(logs[1], logs[0], "second subscriber");
    assertEquals(logs[2], logs[0], "third subscriber");
  });
});

Deno.test("a /v1/generate stream's ids are the job's: a second client picks up where it left off", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const res = await postJson(`${s.url}/v1/generate`, { prompt: "shared", ...SMALL, steps: 6 }, {
      accept: "text/event-stream",
    });
    const id = res.headers.get("x-job-id")!;
    // Read by hand: leaving a for-await loop would close the stream, and that cancels a /v1/generate job.
    const iterator = readSse(res.body!);
    const seen: SseEvent[] = [];
    while (seen.at(-1)?.event !== "started") seen.push((await iterator.next()).value as SseEvent);
    assertEquals(JSON.parse(seen[0].data).job_id, id, "queued carries the X-Job-Id");
    // The /v1/generate stream is still open; a second client resumes after the last id the first one saw.
    const resumed = [];
    for await (const ev of readSse((await events(s, id, { "last-event-id": seen.at(-1)!.id! })).body!)) {
      resumed.push(ev);
    }
    const union = [...seen, ...resumed];
    assertWholeLog(union, "ids continue");
    assertEquals(resumed.at(-1)?.event, "done", "done");
    // And the original stream got the same events under the same ids.
    const rest = [];
    for await (const ev of { [Symbol.asyncIterator]: () => iterator }) rest.push(ev);
    assertEquals([...seen, ...rest], union, "the /v1/generate stream");
  });
});

Deno.test("Last-Event-ID that is not a non-negative integer is a 400; unknown ids are 404", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "p", steps: 1 });
    const bad: [Record<string, string>, string][] = [
      [{ "last-event-id": "abc" }, ""],
      [{ "last-event-id": "-1" }, ""],
      [{ "last-event-id": "1.5" }, ""],
      [{ "last-event-id": "1e3" }, ""],
      [{}, "?last_event_id=x"],
      [{}, "?last_event_id=-3"],
    ];
    for (const [headers, query] of bad) {
      const res = await events(s, id, headers, query);
      const body = await res.json();
      assertEquals(
        [res.status, body.error.code, body.error.param],
        [400, "invalid_request", "last_event_id"],
        `${JSON.stringify(headers)}${query}`,
      );
    }
    for (const [method, path] of [["GET", ""], ["GET", "/events"], ["DELETE", ""]]) {
      const res = await fetch(`${s.url}/v1/jobs/job-unknown${path}`, { method });
      const body = await res.json();
      assertEquals(
        [res.status, body.error.code, body.error.param],
        [404, "not_found", "id"],
        `${method} ${path}`,
      );
    }
  });
});

Deno.test("DELETE cancels a POSTed job: its stream ends with error cancelled; DELETE again is 409", async () => {
  await withServer({ engine: SLOW_ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "stop me", steps: 100 });
    const log: SseEvent[] = [];
    for await (const ev of readSse((await events(s, id)).body!)) {
      log.push(ev);
      if (ev.event === "progress" && JSON.parse(ev.data).step === 2) {
        const del = await fetch(`${s.url}/v1/jobs/${id}`, { method: "DELETE" });
        assertEquals([del.status, (await del.json()).state], [200, "running"], "DELETE");
      }
    }
    assertWholeLog(log, "cancelled job");
    const last = log.at(-1)!;
    assertEquals([last.event, JSON.parse(last.data).code], ["error", "cancelled"], "stream ends cancelled");
    await waitFor(() => s.fake!.runs[0]?.outcome === "aborted", 5_000, "engine run aborted");
    assert(s.fake!.runs[0].stepsDone < 10, "stopped early");

    const state = await (await fetch(`${s.url}/v1/jobs/${id}`)).json();
    assertEquals(
      [state.status, state.error.code, "result" in state],
      ["cancelled", "cancelled", false],
      "GET",
    );
    const again = await fetch(`${s.url}/v1/jobs/${id}`, { method: "DELETE" });
    const body = await again.json();
    assertEquals([again.status, body.error.code], [409, "job_finished"], "DELETE finished");
  });
});

Deno.test("a failing job reads as failed with its error", async () => {
  await withServer({ engine: ENGINE }, async (s) => {
    const { id } = await submit(s, { prompt: "[fake:request-error]", steps: 2 });
    const ended = await waitEnded(s, id);
    assertEquals(
      [ended.status, ended.error.code, ended.error.param],
      ["failed", "invalid_request", "prompt"],
      "failed job",
    );
    const succeeded = await waitEnded(s, (await submit(s, { prompt: "fine", steps: 2 })).id);
    assertEquals(succeeded.status, "succeeded", "the next job");
  });
});

Deno.test("an idle event stream carries heartbeat comments", async () => {
  await withServer({ engine: SLOW_ENGINE, options: { heartbeatMs: 50 } }, async (s) => {
    const first = await submit(s, { prompt: "long", steps: 100 });
    const second = await submit(s, { prompt: "waits", steps: 2 });
    // The waiting job sends `queued` and then nothing until the first job ends.
    const res = await events(s, second.id);
    const reader = res.body!.pipeThrough(
      new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>,
    )
      .getReader();
    let text = "";
    // Give up after a while (a read with nothing coming would wait for the first job to end).
    const giveUp = setTimeout(() => reader.cancel(), 2_000);
    while (!/^:/m.test(text)) {
      const { done, value } = await reader.read();
      if (done) break;
      text += value;
    }
    clearTimeout(giveUp);
    await reader.cancel();
    assert(/^: ?keep-alive$/m.test(text), `no heartbeat comment in ${JSON.stringify(text)}`);
    assert(text.startsWith("event: queued\n"), "the queued event came first");
    for (const job of [first, second]) {
      const del = await fetch(`${s.url}/v1/jobs/${job.id}`, { method: "DELETE" });
      await del.body?.cancel();
    }
  });
});

Deno.test("retention: at most retainJobs finished jobs, oldest dropped first; each for at most retainMs", async () => {
  await withServer({ engine: ENGINE, options: { retainJobs: 2 } }, async (s) => {
    const ids = [];
    for (const prompt of ["one", "two", "three"]) {
      const { id } = await submit(s, { prompt, steps: 1 });
      await waitEnded(s, id);
      ids.push(id);
    }
    const statuses = [];
    for (const id of ids) {
      const res = await fetch(`${s.url}/v1/jobs/${id}`);
      await res.body?.cancel();
      statuses.push(res.status);
    }
    assertEquals(statuses, [404, 200, 200], "the oldest is gone");
    const replay = await events(s, ids[0]);
    await replay.body?.cancel();
    assertEquals(replay.status, 404, "no replay of a dropped job");
  });
  await withServer({ engine: ENGINE, options: { retainMs: 150 } }, async (s) => {
    const { id } = await submit(s, { prompt: "brief", steps: 1 });
    await waitEnded(s, id);
    await new Promise((r) => setTimeout(r, 300));
    const res = await fetch(`${s.url}/v1/jobs/${id}`);
    await res.body?.cancel();
    assertEquals(res.status, 404, "expired");
  });
});

Deno.test("POST /v1/jobs validates as /v1/generate does, and answers 429 / 503 likewise", async () => {
  await withServer({ engine: SLOW_ENGINE, options: { maxQueued: 1 } }, async (s) => {
    const bad = await postJson(`${s.url}/v1/jobs`, { prompt: "p", steps: 0 });
    const err = await bad.json();
    assertEquals([bad.status, err.error.param], [400, "steps"], "bad field");
    const first = await submit(s, { prompt: "a", steps: 50 });
    const second = await submit(s, { prompt: "b", steps: 50 });
    const refused = await postJson(`${s.url}/v1/jobs`, { prompt: "c", ...SMALL });
    const body = await refused.json();
    assertEquals([refused.status, body.error.code], [429, "queue_full"], "queue full");
    assert(Number(refused.headers.get("retry-after")) >= 1, "Retry-After");
    for (const { id } of [second, first]) {
      const del = await fetch(`${s.url}/v1/jobs/${id}`, { method: "DELETE" });
      await del.body?.cancel();
    }
    const wrong = await fetch(`${s.url}/v1/jobs`);
    assertEquals([wrong.status, wrong.headers.get("allow")], [405, "POST"], "GET /v1/jobs");
    await wrong.body?.cancel();
    const put = await fetch(`${s.url}/v1/jobs/${first.id}`, { method: "PUT" });
    assertEquals([put.status, put.headers.get("allow")], [405, "GET, DELETE"], "PUT /v1/jobs/:id");
    await put.body?.cancel();
    const post = await fetch(`${s.url}/v1/jobs/${first.id}/events`, { method: "POST" });
    assertEquals([post.status, post.headers.get("allow")], [405, "GET"], "POST events");
    await post.body?.cancel();
  });
  await withServer({}, async (s) => {
    const res = await postJson(`${s.url}/v1/jobs`, { prompt: "p" });
    const body = await res.json();
    assertEquals([res.status, body.error.code], [503, "unavailable"], "no model");
  });
});

Deno.test("bearer token: the event stream also takes it as ?token= or ?access_token= (EventSource)", async () => {
  await withServer({ engine: ENGINE, options: { token: "s3cret" } }, async (s) => {
    const auth = { authorization: "Bearer s3cret" };
    const noToken = await postJson(`${s.url}/v1/jobs`, { prompt: "p", ...SMALL });
    assertEquals(noToken.status, 401, "POST without the token");
    await noToken.body?.cancel();
    const res = await postJson(`${s.url}/v1/jobs`, { prompt: "p", ...SMALL, steps: 2 }, auth);
    const { id } = await res.json();
    assertEquals(res.status, 202, "POST with the token");
    for (const query of ["?token=s3cret", "?access_token=s3cret"]) {
      const log = await collectSse(await events(s, id, {}, query));
      assertEquals(log.at(-1)?.event, "done", `events${query}`);
    }
    const cases: [string, number][] = [
      [`/v1/jobs/${id}/events`, 401],
      [`/v1/jobs/${id}/events?token=wrong`, 401],
      [`/v1/jobs/${id}?token=s3cret`, 401], // only the stream, which EventSource opens, takes the query
    ];
    for (const [path, status] of cases) {
      const r = await fetch(`${s.url}${path}`);
      await r.body?.cancel();
      assertEquals(r.status, status, path);
    }
    const ok = await fetch(`${s.url}/v1/jobs/${id}`, { headers: auth });
    assertEquals([ok.status, (await ok.json()).status], [200, "succeeded"], "GET with the header");
  });
});
