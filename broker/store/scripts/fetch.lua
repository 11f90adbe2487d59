-- fetch: reserve up to N of the oldest jobs of one queue for a worker, atomically per job.
-- KEYS: 1 jobs hash, 2 queue list, 3 working zset, 4 meta hash, 5 due:working, 6 holders hash,
--       7 the worker's held set, 8 expiring zset, 9 stats hash, 10 final hash, 11 finished zset,
--       12 due:finished, 13 jid index, 14 progress hash, 15 awaited zset, 16 prioritized zset,
--       17 workers zset, 18 holding zset
-- ARGV: 1 now, 2 default reservation, 3 minimum, 4 maximum (seconds), 5 N, 6 queue name,
--       7 wid ('' = a connection that is no worker), 8 the keep policy (lib.lua),
--       9 finished channel
-- Returns {jid1, payload1, jid2, payload2, ...}, oldest first, empty when the queue is paused
-- (until its resume_at, if it has one) or empty; {seconds} when the queue's limits hold its
-- jobs back (they stay queued): try again after that long. Limits (meta): concurrency (jobs
-- reserved at once), rate and burst (a token bucket, tokens and refilled kept in meta),
-- worker_concurrency (per wid, counted as lane 'w:<wid>'), group_* (each group's lane) and
-- t:<jobtype>:<limit> (note jobtype_limits); meta's expiring says the queue may hold jobs with
-- an expiry (set by whatever adds one), lanes that it may have lanes (see lanes_of() in
-- lib_lanes.lua): then the list and the lanes take turns (take_fair).
-- Guarantees: each job leaves the queue and enters the working set in one step, with expiry
-- now + its reserve_for (0 or absent means the default; clamped to [min, max]), and the queue
-- is in the due index no later than its earliest expiry; a worker's jobs are noted as held by
-- it (holders, its held set); a worker no longer registered (forgotten by a broker while this
-- connection, on another, stayed open) enters holding, so its jobs are failed worker_ttl later
-- unless it says HELLO again (worker_join.lua). The stored payload has `reserve_for` right
-- after `enqueued_at` (see client/schema/jobs.py), so no JSON is decoded here. A queued jid
-- without a record (never written by Hopper itself) is dropped. Each kind of read or write is
-- one call per batch. A job whose expiry (custom.expires_at, in the expiring zset) has passed
-- is not handed out: it ends expired (kept like a done one, counted in stats). Events: fetched,
-- expired.
local CONCURRENCY_WAIT = '0.25'  -- seconds before a FETCH held back by concurrency looks again
local REST_CHECK = 10  -- seconds before a lane resting at its concurrency is looked at anyway
local found = {}
local paused, resume, concurrency, rate, burst, tokens, refilled, expiring, prioritized, lanes,
  typed, group_concurrency, group_rate, group_burst, worker_concurrency = unpack(redis.call(
  'HMGET', KEYS[4], 'paused', 'resume_at', 'concurrency', 'rate', 'burst', 'tokens',
  'refilled', 'expiring', 'prioritized', 'lanes', 'jobtype_limits', 'group_concurrency',
  'group_rate', 'group_burst', 'worker_concurrency'))
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
local l = (lanes or typed or worker_concurrency) and lanes_of(KEYS[4]) or nil  -- lane keys, if used
-- at most worker_concurrency reserved at once by one worker (its wid counts as lane 'w:<wid>')
local per_worker = worker_concurrency and ARGV[7] ~= '' and 'w:' .. ARGV[7]
if per_worker then
  local free = tonumber(worker_concurrency)
    - (tonumber(redis.call('HGET', l.running, per_worker)) or 0)
  if free <= 0 then return {CONCURRENCY_WAIT} end
  wanted = math.min(wanted, free)
end
-- Up to `need` waiting jids of the list and the prioritized zset, in the order they run:
-- priorities 6-9 (prioritized zset), the list (priority 5), then priorities 1-4; false when
-- none waits.
local function take_line(need)
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

-- Fair turns (when the queue has lanes or jobtype limits, see lanes_of() in lib_lanes.lua): the list
-- and each lane that may be served take turns, one job a turn; a lane at its limits rests; a
-- job of a jobtype at its limits waits in its jobtype's lane. Each step is a few calls,
-- whatever the number of lanes.
local limits, running, bucket = {}, {}, {}  -- per lane, read once per call
local leased = {}  -- jid -> the lanes with a concurrency limit its reservation counts towards
local hint = nil  -- seconds until a lane that rests may be served

-- A lane's limits {concurrency, rate, burst}, false for none.
local function limits_of(lane)
  if limits[lane] == nil then
    local c, r, b = group_concurrency, group_rate, group_burst
    if string.sub(lane, 1, 2) == 't:' then
      c, r, b = unpack(redis.call('HMGET', KEYS[4], lane .. ':concurrency', lane .. ':rate',
        lane .. ':burst'))
    end
    limits[lane] = (c or r) and {tonumber(c), tonumber(r), tonumber(b or 1)} or false
  end
  return limits[lane]
end

-- Seconds before `lane` may give a job: 0 now, math.huge when one of its reservations ends.
local function wait_of(lane)
  local spec = limits_of(lane)
  if not spec then return 0 end
  local most, pace, most_saved = spec[1], spec[2], spec[3]
  if most then
    running[lane] = running[lane] or tonumber(redis.call('HGET', l.running, lane)) or 0
    if running[lane] >= most then return math.huge end
  end
  if pace then
    if not bucket[lane] then
      local saved, at = string.match(redis.call('HGET', l.buckets, lane) or '', '^(%S+) (%S+)$')
      saved, at = tonumber(saved) or most_saved, tonumber(at) or now
      bucket[lane] = math.min(most_saved, saved + (now - at) * pace)
    end
    if bucket[lane] < 1 then return (1 - bucket[lane]) / pace end
  end
  return 0
end

local used = {}  -- jid -> the lanes whose slot or token it took (given back if not handed out)

-- A job taken from (or for) `lane` uses one of its slots and tokens.
local function use(lane, jid)
  local spec = limits_of(lane)
  if not spec then return end
  used[jid] = used[jid] or {}
  table.insert(used[jid], lane)
  if spec[1] then
    running[lane] = running[lane] + 1
    leased[jid] = leased[jid] or {}
    table.insert(leased[jid], lane)
  end
  if spec[2] then bucket[lane] = bucket[lane] - 1 end
end

-- A job taken out of line but not handed out (expired, or no record) gives back what it used.
local function unuse(jid)
  for _, lane in ipairs(used[jid] or {}) do
    local spec = limits[lane]
    if spec[1] then running[lane] = running[lane] - 1 end
    if spec[2] then bucket[lane] = bucket[lane] + 1 end
  end
  used[jid], leased[jid] = nil, nil
end

-- `lane` rests for `seconds` (math.huge: until a reservation of it ends, or REST_CHECK).
local function rest(lane, seconds)
  redis.call('ZREM', l.ring, lane)
  redis.call('ZADD', l.resting, now + math.min(seconds, REST_CHECK), lane)
  seconds = math.min(seconds, tonumber(CONCURRENCY_WAIT))
  hint = hint and math.min(hint, seconds) or seconds
end

-- The jobtype lane of a waiting job when its jobtype has limits in this queue, else nil.
local function typed_lane(jid)
  if not typed then return nil end
  local payload = redis.call('HGET', KEYS[1], jid)
  local lane = payload and 't:' .. jobtype_of(payload)
  return lane and limits_of(lane) and lane or nil
end

local function take_fair(need)
  for _, lane in ipairs(redis.call('ZRANGEBYSCORE', l.resting, '-inf', now, 'LIMIT', 0, need + 8)) do
    redis.call('ZREM', l.resting, lane)
    redis.call('ZADD', l.ring, redis.call('HINCRBY', KEYS[4], 'turn', 1), lane)
  end
  local jids, line_open = {}, true
  local line_turn = tonumber(redis.call('HGET', KEYS[4], 'line_turn')) or 0
  local steps = 0
  for _ = 1, 4 * need + 8 do
    if #jids >= need then break end
    steps = steps + 1
    local head = redis.call('ZRANGE', l.ring, 0, 0, 'WITHSCORES')
    if line_open and (not head[1] or line_turn <= tonumber(head[2])) then
      local got = take_line(1)
      if not got then
        line_open = false
      else
        line_turn = redis.call('HINCRBY', KEYS[4], 'turn', 1)
        local jid = got[1]
        local lane = typed_lane(jid)
        local wait = lane and wait_of(lane) or 0
        if wait > 0 then  -- it waits in its jobtype's lane, at the back of it
          local priority = head_of(redis.call('HGET', KEYS[1], jid))
          local arrival = redis.call('HINCRBY', KEYS[4], 'arrivals', 1)
          enter_lane(l, lane, (10 - (priority or 5)) * PRIORITY_STEP + arrival, jid)
          rest(lane, wait)
        else
          if lane then use(lane, jid) end
          jids[#jids + 1] = jid
        end
      end
    elseif head[1] then
      local lane = head[1]
      local wait = wait_of(lane)
      local first = wait == 0 and redis.call('ZRANGE', l.lane .. lane, 0, 0)[1]
      local other = first and string.sub(lane, 1, 2) == 'g:' and typed_lane(first)
      if other and wait_of(other) > 0 then  -- its first job's jobtype is at its limits
        wait = math.min(wait_of(other), tonumber(CONCURRENCY_WAIT))
      end
      if wait > 0 then
        rest(lane, wait)
      elseif not first then  -- an empty lane (mended)
        redis.call('ZREM', l.ring, lane)
      else
        exit_lane(l, lane, first)
        if redis.call('EXISTS', l.lane .. lane) == 1 then
          redis.call('ZADD', l.ring, redis.call('HINCRBY', KEYS[4], 'turn', 1), lane)
        end
        use(lane, first)
        if other then use(other, first) end
        jids[#jids + 1] = first
      end
    else
      break
    end
  end
  redis.call('HSET', KEYS[4], 'line_turn', line_turn)
  if #jids == 0 and steps == 4 * need + 8 then hint = 0 end  -- out of steps, not of jobs: look again now
  return #jids > 0 and jids or false
end

-- The lanes' bookkeeping for the jobs handed out (jids): slots, leases, tokens.
local function settle_lanes(jids)
  local leases, counts = {}, {}
  for _, jid in ipairs(jids) do
    if leased[jid] then
      leases[#leases + 1] = jid
      leases[#leases + 1] = cjson.encode(leased[jid])
      for _, lane in ipairs(leased[jid]) do counts[lane] = (counts[lane] or 0) + 1 end
    end
  end
  if #leases > 0 then redis.call('HSET', l.leases, unpack(leases)) end
  for lane, n in pairs(counts) do redis.call('HINCRBY', l.running, lane, n) end
  local full = redis.call('ZRANGEBYSCORE', l.refills, '-inf', now, 'LIMIT', 0, 8)
  if #full > 0 then  -- buckets full again are forgotten (a missing bucket is a full one)
    redis.call('HDEL', l.buckets, unpack(full))
    redis.call('ZREM', l.refills, unpack(full))
  end
  for lane, left in pairs(bucket) do
    local spec = limits[lane]
    if left >= spec[3] then
      redis.call('HDEL', l.buckets, lane)
      redis.call('ZREM', l.refills, lane)
    else
      redis.call('HSET', l.buckets, lane, left .. ' ' .. ARGV[1])
      redis.call('ZADD', l.refills, now + (spec[3] - left) / spec[2], lane)
    end
  end
  if redis.call('EXISTS', l.ring) == 0 and redis.call('EXISTS', l.resting) == 0 then
    redis.call('HDEL', KEYS[4], 'lanes', 'laned')
    lanes = nil
  end
end
local take = (lanes or typed) and take_fair or take_line

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
    if not payload then unuse(jid) end
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
  finish(k, ARGV[6], expired, notes, ARGV[1], ARGV[8], 'expired')
  batch_count(KEYS[4], KEYS[13], expired, 'end', now)
  announce(KEYS[15], ARGV[9], expired)
  global('HINCRBY', KEYS[9], 'expired', #expired)
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
if take ~= take_line or per_worker then
  local handed = {}
  for i = 1, #found, 2 do
    local jid = found[i]
    handed[#handed + 1] = jid
    if per_worker then
      leased[jid] = leased[jid] or {}
      table.insert(leased[jid], per_worker)
    end
  end
  settle_lanes(handed)
  if #found == 0 and not hint then  -- lanes that rest since an earlier call
    local first = redis.call('ZRANGE', l.resting, 0, 0, 'WITHSCORES')[2]
    hint = first and math.min(tonumber(first) - now, tonumber(CONCURRENCY_WAIT))
  end
  if #found == 0 and hint then return {tostring(math.max(hint, 0.01))} end
end
if earliest then
  redis.call('ZADD', KEYS[3], unpack(reserved))
  due_add(KEYS[5], earliest, ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[6], unpack(holders))
    defer('hold', 3, KEYS[7], KEYS[17], KEYS[18], ARGV[7], ARGV[1], held)
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
