-- fetch: reserve up to N of the oldest jobs of one queue for a worker, atomically per job.
-- KEYS: 1 jobs hash, 2 queue list, 3 working zset, 4 meta hash, 5 due:working, 6 holders hash,
--       7 the worker's held set, 8 expiring zset, 9 stats hash, 10 final hash, 11 finished zset,
--       12 due:finished, 13 jid index, 14 progress hash, 15 awaited zset, 16 prioritized zset
-- ARGV: 1 now, 2 default reservation, 3 minimum, 4 maximum (seconds), 5 N, 6 queue name,
--       7 wid ('' = a connection that is no worker), 8 finished jobs kept per queue,
--       9 finished channel
-- Returns {jid1, payload1, jid2, payload2, ...}, oldest first, empty when the queue is paused
-- (until its resume_at, if it has one) or empty; {seconds} when the queue's limits hold its
-- jobs back (they stay queued): try again after that long. Limits (meta): concurrency (jobs
-- reserved at once), rate and burst (a token bucket, tokens and refilled kept in meta); meta's
-- expiring says the queue may hold jobs with an expiry (set by whatever adds one).
-- Guarantees: each job leaves the queue and enters the working set in one step, with expiry
-- now + its reserve_for (0 or absent means the default; clamped to [min, max]), and the queue
-- is in the due index no later than its earliest expiry; a worker's jobs are noted as held by
-- it (holders, its held set). The stored payload has `reserve_for` right after `enqueued_at`
-- (see broker/jobs.py), so no JSON is decoded here. A queued jid without a record (never
-- written by Hopper itself) is dropped. Each kind of read or write is
-- one call per batch. A job whose expiry (custom.expires_at, in the expiring zset) has passed
-- is not handed out: it ends expired (kept like a done one, counted in stats). Events: fetched,
-- expired.
local CONCURRENCY_WAIT = '0.25'  -- seconds before a FETCH held back by concurrency looks again
local found = {}
local paused, resume, concurrency, rate, burst, tokens, refilled, expiring, prioritized = unpack(
  redis.call('HMGET', KEYS[4], 'paused', 'resume_at', 'concurrency', 'rate', 'burst', 'tokens',
  'refilled', 'expiring', 'prioritized'))
if paused then  -- a timed pause ends at the first FETCH after its time
  if not resume or tonumber(resume) > tonumber(ARGV[1]) then return found end
  redis.call('HDEL', KEYS[4], 'paused', 'resume_at')
end
local now, default = tonumber(ARGV[1]), tonumber(ARGV[2])
local lowest, highest = tonumber(ARGV[3]), tonumber(ARGV[4])
local wanted = tonumber(ARGV[5])
if concurrency then  -- at most that many reserved at once, by every broker together
  local free = tonumber(concurrency) - redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[1], '+inf')
  if free <= 0 then return {CONCURRENCY_WAIT} end
  wanted = math.min(wanted, free)
end
if rate then  -- a token bucket: `rate` tokens a second, at most `burst` saved
  rate = tonumber(rate)
  burst = tonumber(burst or 1)
  tokens = math.min(burst, (tonumber(tokens) or burst) + (now - (tonumber(refilled) or now)) * rate)
  if tokens < 1 then return {tostring((1 - tokens) / rate)} end
  wanted = math.min(wanted, math.floor(tokens))
end
-- Up to `need` waiting jids, in the order they run: priorities 6-9 (prioritized zset), the
-- list (priority 5), then priorities 1-4; false when none waits.
local function take(need)
  if not prioritized then return redis.call('RPOP', KEYS[2], need) end
  local jids = redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', '(' .. HIGH, 'LIMIT', 0, need)
  if #jids > 0 then redis.call('ZREM', KEYS[16], unpack(jids)) end
  if #jids < need then
    for _, jid in ipairs(redis.call('RPOP', KEYS[2], need - #jids) or {}) do
      jids[#jids + 1] = jid
    end
  end
  if #jids < need then
    local low = redis.call('ZPOPMIN', KEYS[16], need - #jids)
    for i = 1, #low, 2 do jids[#jids + 1] = low[i] end
    if redis.call('EXISTS', KEYS[16]) == 0 then
      redis.call('HDEL', KEYS[4], 'prioritized')
      prioritized = nil
    end
  end
  return #jids > 0 and jids or false
end

local reserved, earliest, holders, held = {}, nil, {}, {}
local expired, started = {}, {}  -- expiring jobs: past their time; handed out before it
for _ = 1, 100 do  -- more than one round only when queued jids had no record
  local need = wanted - #found / 2
  local jids = take(need)
  if not jids then break end
  local payloads = redis.call('HMGET', KEYS[1], unpack(jids))
  local expiries = expiring and redis.call('ZMSCORE', KEYS[8], unpack(jids)) or {}
  for i, jid in ipairs(jids) do
    local payload = payloads[i]
    if payload and expiries[i] then
      if tonumber(expiries[i]) <= now then
        expired[#expired + 1] = jid
        payload = nil
      else
        started[#started + 1] = jid
      end
    end
    if payload then
      local seconds = tonumber(
        string.match(payload, '^{"enqueued_at":"[^"]*","reserve_for":(%-?%d+)')
        or string.match(payload, '^{"reserve_for":(%-?%d+)')) or 0
      if seconds == 0 then seconds = default end
      local expiry = now + math.min(math.max(seconds, lowest), highest)
      reserved[#reserved + 1] = expiry
      reserved[#reserved + 1] = jid
      if not earliest or expiry < earliest then earliest = expiry end
      found[#found + 1] = jid
      found[#found + 1] = payload
      holders[#holders + 1] = jid
      holders[#holders + 1] = ARGV[7]
      held[#held + 1] = ARGV[6] .. ':' .. jid
    end
  end
  if #jids < need or #found >= 2 * wanted then break end
end
if #expired > 0 or #started > 0 then
  for _, jid in ipairs(expired) do started[#started + 1] = jid end
  redis.call('ZREM', KEYS[8], unpack(started))
end
if #expired > 0 then
  local notes = {}
  for _, jid in ipairs(expired) do
    notes[#notes + 1] = jid
    notes[#notes + 1] = note('expired', '')
  end
  local k = {jobs = KEYS[1], final = KEYS[10], finished = KEYS[11], due = KEYS[12],
    index = KEYS[13], progress = KEYS[14]}
  local payloads = listening() and redis.call('HMGET', KEYS[1], unpack(expired))
  finish(k, ARGV[6], expired, notes, ARGV[1], ARGV[8])
  announce(KEYS[15], ARGV[9], expired)
  redis.call('HINCRBY', KEYS[9], 'expired', #expired)
  if payloads then
    local at, events = clock(), {}
    for i, jid in ipairs(expired) do
      events[i] = event('expired', jid, ARGV[6], payloads[i], at, '')
    end
    publish(events)
  end
end
if rate then
  redis.call('HSET', KEYS[4], 'tokens', tokens - #found / 2, 'refilled', now)
end
if earliest then
  redis.call('ZADD', KEYS[3], unpack(reserved))
  redis.call('ZADD', KEYS[5], 'LT', earliest, ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[6], unpack(holders))
    redis.call('SADD', KEYS[7], unpack(held))
  end
  if listening() then
    local at, events, wid = clock(), {}, ',"wid":' .. cjson.encode(ARGV[7])
    for i = 1, #found, 2 do
      events[#events + 1] = event('fetched', found[i], ARGV[6], found[i + 1], at, wid)
    end
    publish(events)
  end
end
return found
