// The shared queue's data in Redis, and every change to it as one Lua script, so that each change is atomic
// between servers: no job is taken twice, a job's log never gets two final events, and a worker that lost
// its job (another one took it over) can no longer write to it.
//
// Keys, under a prefix P (default "sd"):
//
//   P:queue              stream of waiting and running jobs (field `job`: the job id); consumer group
//                        `workers`: an entry a worker has read stays pending (XPENDING) until the job ends
//   P:job:ID             hash: request, created, status (queued | running | succeeded | failed | cancelled),
//                        events (the last log id), attempt (runs started), entry (its P:queue entry),
//                        worker (consumer running it), progress, cancel (a requested cancel's reason)
//   P:job:ID:events      the job's log: stream entry `0-N` is event N (field `e`), so the log ids are the
//                        stream's ids and a reader resumes with XRANGE (0-LAST
//   P:finished           sorted set of finished jobs by end time (the retainJobs bound)
//   P:workers            sorted set of ready workers by last heartbeat (Redis's clock)
//   P:stats              hash: avg_ms, the mean job time behind Retry-After
//   channels P:events (a job id: its log grew) and P:cancel (a job id: cancel it where it runs)
//
// Active jobs expire after a day unless a worker touches them; finished ones after retainMs. Every key
// a script touches is derived from P inside it, so this is for a single Redis (or a primary with
// replicas), not Redis Cluster.

export const GROUP = "workers";

/** Shared by every script: ARGV[1] is the prefix. */
const PRELUDE = `
local P = ARGV[1]
local GROUP = '${GROUP}'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function is_final(st)
  return st == 'succeeded' or st == 'failed' or st == 'cancelled'
end
local function error_event(code, message)
  return '{"type":"error","code":' .. cjson.encode(code) .. ',"message":' .. cjson.encode(message) .. '}'
end
local function cancel_event(reason)
  if reason == 'shutting_down' then return error_event('shutting_down', 'the server is shutting down') end
  return error_event('cancelled', 'the generation was cancelled')
end
-- Appends an event as the next log id and tells every server. A final event (final_status set) also sets
-- the status, releases the job's queue entry and starts retention: kept retain_ms, at most retain_jobs.
local function append(id, event, final_status, retain_ms, retain_jobs)
  local hk = P .. ':job:' .. id
  local n = redis.call('HINCRBY', hk, 'events', 1)
  redis.call('XADD', hk .. ':events', '0-' .. n, 'e', event)
  if final_status then
    redis.call('HSET', hk, 'status', final_status)
    local entry = redis.call('HGET', hk, 'entry')
    if entry then
      redis.call('XACK', P .. ':queue', GROUP, entry)
      redis.call('XDEL', P .. ':queue', entry)
    end
    redis.call('PEXPIRE', hk, retain_ms)
    redis.call('PEXPIRE', hk .. ':events', retain_ms)
    local now = now_ms()
    local fz = P .. ':finished'
    redis.call('ZADD', fz, now, id)
    redis.call('ZREMRANGEBYSCORE', fz, '-inf', now - retain_ms)
    local over = redis.call('ZCARD', fz) - retain_jobs
    if over > 0 then
      local popped = redis.call('ZPOPMIN', fz, over)
      for i = 1, #popped, 2 do
        -- Out of P:finished, the job is no longer found; its keys stay a moment for readers still on it.
        local old = P .. ':job:' .. popped[i]
        redis.call('PEXPIRE', old, 2000)
        redis.call('PEXPIRE', old .. ':events', 2000)
      end
    end
  end
  redis.call('PUBLISH', P .. ':events', id)
  return n
end
local function ensure_group(q)
  pcall(redis.call, 'XGROUP', 'CREATE', q, GROUP, '0', 'MKSTREAM')
end
`;

/** ARGV: P, maxQueued, staleMs, liveTtlMs, owner, n, then n × (id, request). Returns {1, position…} or,
 * when the queue is full, {0, waiting, running, workers, avg_ms}. */
const SUBMIT = `
local max_queued, stale, live_ttl, owner, n = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local q = P .. ':queue'
ensure_group(q)
local now = now_ms()
local running = redis.call('XPENDING', q, GROUP)[1]
local waiting = redis.call('XLEN', q) - running
local workers = redis.call('ZCOUNT', P .. ':workers', now - stale, '+inf')
-- As in one server's queue: maxQueued may wait, plus one per idle worker (it takes it at once).
if n > max_queued + math.max(0, workers - running) - waiting then
  return {0, waiting, running, workers, tonumber(redis.call('HGET', P .. ':stats', 'avg_ms') or '5000')}
end
local out = {1}
for i = 1, n do
  local id, request = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  local hk = P .. ':job:' .. id
  local entry = redis.call('XADD', q, '*', 'job', id)
  redis.call('HSET', hk, 'request', request, 'created', now, 'status', 'queued', 'events', 0, 'attempt', 0,
    'entry', entry, 'owner', owner)
  -- Jobs ahead that must start or end first: those waiting and running, less the workers.
  local position = math.max(0, waiting + i - 1 + running - math.max(workers, 1) + 1)
  append(id, '{"type":"queued","position":' .. position .. '}', nil)
  redis.call('PEXPIRE', hk, live_ttl)
  redis.call('PEXPIRE', hk .. ':events', live_ttl)
  out[#out + 1] = position
end
return out
`;

/** A worker read `entry` (its own, or reclaimed from a silent worker). ARGV: P, id, entry, consumer,
 * maxAttempts, liveTtlMs, retainMs, retainJobs, reason. Returns {'run', attempt, request} or {'skip'}. */
const CLAIM = `
local id, entry, consumer, max_attempts, live_ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local retain_ms, retain_jobs, reason = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local q = P .. ':queue'
local hk = P .. ':job:' .. id
local st = redis.call('HGET', hk, 'status')
if not st or is_final(st) or redis.call('HGET', hk, 'entry') ~= entry then
  redis.call('XACK', q, GROUP, entry)
  redis.call('XDEL', q, entry)
  return {'skip'}
end
local cancel = redis.call('HGET', hk, 'cancel')
if cancel then
  append(id, cancel_event(cancel), 'cancelled', retain_ms, retain_jobs)
  return {'skip'}
end
local attempt = redis.call('HINCRBY', hk, 'attempt', 1)
if attempt > max_attempts then
  append(id, error_event('engine_error', 'the job was abandoned by ' .. (attempt - 1) .. ' workers in a row'),
    'failed', retain_ms, retain_jobs)
  return {'skip'}
end
redis.call('HSET', hk, 'status', 'running', 'worker', consumer)
redis.call('HDEL', hk, 'progress')
redis.call('PEXPIRE', hk, live_ttl)
redis.call('PEXPIRE', hk .. ':events', live_ttl)
if attempt > 1 then
  reason = redis.call('HGET', hk, 'requeue_reason') or reason
  redis.call('HDEL', hk, 'requeue_reason')
  append(id, '{"type":"requeued","attempt":' .. attempt .. ',"reason":' .. cjson.encode(reason) .. '}', nil)
end
return {'run', attempt, redis.call('HGET', hk, 'request')}
`;

/** One event from the worker running attempt `attempt` ('*': anyone, e.g. a cancel). ARGV: P, id, attempt,
 * event, final status or '', progress JSON or '', retainMs, retainJobs, job ms (for the mean, or '').
 * Returns the event's log id, or -1 (no such job), -2 (already ended), -3 (not this worker's run). */
const APPEND = `
local id, attempt, event, final_status, progress = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local retain_ms, retain_jobs, job_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local hk = P .. ':job:' .. id
local st = redis.call('HGET', hk, 'status')
if not st then return -1 end
if is_final(st) then return -2 end
if attempt ~= '*' and (st ~= 'running' or redis.call('HGET', hk, 'attempt') ~= attempt) then return -3 end
if progress ~= '' then redis.call('HSET', hk, 'progress', progress) end
if job_ms then
  local avg = tonumber(redis.call('HGET', P .. ':stats', 'avg_ms') or job_ms)
  redis.call('HSET', P .. ':stats', 'avg_ms', math.floor(0.7 * avg + 0.3 * job_ms))
end
if final_status == '' then final_status = nil end
return append(id, event, final_status, retain_ms, retain_jobs)
`;

/** ARGV: P, consumer, ready ('1' | '0'), staleMs, then the running job's id, entry, attempt, liveTtlMs (or
 * nothing). Returns {'idle'}, {'ok', cancel reason or ''} or {'lost'} (the job is no longer this run's). */
const HEARTBEAT = `
local consumer, ready, stale = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local wz = P .. ':workers'
if ready == '1' then redis.call('ZADD', wz, now, consumer) else redis.call('ZREM', wz, consumer) end
redis.call('ZREMRANGEBYSCORE', wz, '-inf', now - 10 * stale)
local id, entry, attempt, live_ttl = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if not id then return {'idle'} end
local q = P .. ':queue'
local hk = P .. ':job:' .. id
if redis.call('HGET', hk, 'status') ~= 'running' or redis.call('HGET', hk, 'attempt') ~= attempt then
  return {'lost'}
end
local pending = redis.call('XPENDING', q, GROUP, entry, entry, 1)
if #pending == 0 or pending[1][2] ~= consumer then return {'lost'} end
-- Claiming its own entry again resets its idle time: the visibility timeout starts over.
redis.call('XCLAIM', q, GROUP, consumer, 0, entry, 'JUSTID')
redis.call('PEXPIRE', hk, live_ttl)
redis.call('PEXPIRE', hk .. ':events', live_ttl)
return {'ok', redis.call('HGET', hk, 'cancel') or ''}
`;

/** ARGV: P, id, reason, staleMs, retainMs, retainJobs. Returns 'missing', 'finished', 'queued' (dropped
 * now) or 'running' (its worker was told; or it had none alive, and it ended now). */
const CANCEL = `
local id, reason, stale, retain_ms, retain_jobs = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local hk = P .. ':job:' .. id
local st = redis.call('HGET', hk, 'status')
if not st then return 'missing' end
if is_final(st) then return 'finished' end
if st == 'queued' then
  append(id, cancel_event(reason), 'cancelled', retain_ms, retain_jobs)
  return 'queued'
end
local seen = redis.call('ZSCORE', P .. ':workers', redis.call('HGET', hk, 'worker') or '')
if not seen or tonumber(seen) < now_ms() - stale then
  append(id, cancel_event(reason), 'cancelled', retain_ms, retain_jobs)
  return 'running'
end
redis.call('HSET', hk, 'cancel', reason)
redis.call('PUBLISH', P .. ':cancel', id)
return 'running'
`;

/** A worker gives its running job back (it is shutting down): the job goes to the end of the queue, and
 * the next worker's run starts with a requeued event. ARGV: P, id, entry, attempt, reason. */
const RELEASE = `
local id, entry, attempt, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local q = P .. ':queue'
local hk = P .. ':job:' .. id
if redis.call('HGET', hk, 'status') ~= 'running' or redis.call('HGET', hk, 'attempt') ~= attempt then return 0 end
redis.call('XACK', q, GROUP, entry)
redis.call('XDEL', q, entry)
local fresh = redis.call('XADD', q, '*', 'job', id)
redis.call('HSET', hk, 'status', 'queued', 'entry', fresh, 'requeue_reason', reason)
redis.call('HDEL', hk, 'worker')
return 1
`;

/** ARGV: P, id, staleMs. Returns nil (unknown, expired or over the retained count) or {status, created,
 * events, progress, position (-1 unless queued), the last event when finished (else '')}. */
const DESCRIBE = `
local id, stale = ARGV[2], tonumber(ARGV[3])
local hk = P .. ':job:' .. id
local f = redis.call('HMGET', hk, 'status', 'created', 'events', 'progress', 'entry')
if not f[1] then return nil end
local position, last = -1, ''
if f[1] == 'queued' then
  local ahead = #redis.call('XRANGE', P .. ':queue', '-', '(' .. f[5])
  local workers = redis.call('ZCOUNT', P .. ':workers', now_ms() - stale, '+inf')
  position = math.max(0, ahead + 1 - math.max(workers, 1))
elseif is_final(f[1]) then
  if not redis.call('ZSCORE', P .. ':finished', id) then return nil end
  local tail = redis.call('XREVRANGE', hk .. ':events', '+', '-', 'COUNT', 1)
  if tail[1] then last = tail[1][2][2] end
end
return {f[1], f[2], f[3], f[4] or '', position, last}
`;

/** ARGV: P, staleMs. Returns {waiting, running, workers}. */
const STATS = `
local q = P .. ':queue'
ensure_group(q)
local running = redis.call('XPENDING', q, GROUP)[1]
local workers = redis.call('ZCOUNT', P .. ':workers', now_ms() - tonumber(ARGV[2]), '+inf')
return {redis.call('XLEN', q) - running, running, workers}
`;

export const SCRIPTS = {
  sdSubmit: PRELUDE + SUBMIT,
  sdClaim: PRELUDE + CLAIM,
  sdAppend: PRELUDE + APPEND,
  sdHeartbeat: PRELUDE + HEARTBEAT,
  sdCancel: PRELUDE + CANCEL,
  sdRelease: PRELUDE + RELEASE,
  sdDescribe: PRELUDE + DESCRIBE,
  sdStats: PRELUDE + STATS,
} as const;

export type ScriptName = keyof typeof SCRIPTS;

/** Key names, for the code outside the scripts. */
export function keys(prefix: string) {
  return {
    queue: `${prefix}:queue`,
    job: (id: string) => `${prefix}:job:${id}`,
    events: (id: string) => `${prefix}:job:${id}:events`,
    eventsChannel: `${prefix}:events`,
    cancelChannel: `${prefix}:cancel`,
    workers: `${prefix}:workers`,
  };
}
