-- lib: helpers prepended to every script below (see Script in store/base.py).

-- The payload with `enqueued_at` set to `text` as its first field. A stored payload keeps
-- `enqueued_at` first whenever it has one (broker/jobs.py orders Job's fields so), so the old
-- value, if any, is the prefix replaced here; no JSON is decoded.
local function stamp(payload, text)
  local rest = string.match(payload, '^{"enqueued_at":"[^"]*",(.*)$') or string.sub(payload, 2)
  return '{"enqueued_at":"' .. text .. '",' .. rest
end

-- Make `queue`'s entry in the due index `due` exact for the sorted set `set`: the score of its
-- earliest entry, or no entry once the set is empty.
local function refresh_due(due, set, queue)
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', due, first[2], queue)
  else
    redis.call('ZREM', due, queue)
  end
end

-- Drop the jid index entry of a job of `queue` that has left the broker.
local function forget(jids, jid, queue)
  if redis.call('HGET', jids, jid) == queue then redis.call('HDEL', jids, jid) end
end

-- The entries a script acts on, from ARGV[first] on: 'due' <now> <limit> selects those of
-- `set` whose score is <= now; 'all' <limit> the first ones of `set`; 'jids' <jid> <score> ... the
-- given jids, each only while its score in `set` is still the one the caller read (so a caller
-- never acts on an entry that moved and came back). Returns the jids that are in `set` now.
local function pick(set, first)
  local mode = ARGV[first]
  if mode == 'due' then
    return redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[first + 1], 'LIMIT', 0, ARGV[first + 2])
  elseif mode == 'all' then
    return redis.call('ZRANGE', set, 0, tonumber(ARGV[first + 1]) - 1)
  end
  local jids = {}
  for i = first + 1, #ARGV, 2 do jids[#jids + 1] = ARGV[i] end
  if #jids == 0 then return jids end
  local scores = redis.call('ZMSCORE', set, unpack(jids))
  local chosen, seen = {}, {}
  for i, jid in ipairs(jids) do
    local read = ARGV[first + 2 * i]
    if scores[i] and tonumber(scores[i]) == tonumber(read) and not seen[jid] then
      seen[jid] = true
      chosen[#chosen + 1] = jid
    end
  end
  return chosen
end

