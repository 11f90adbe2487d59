-- worker_check: one worker's record and its heartbeat entry, checked and (when asked) repaired
-- atomically (hopper check).
-- KEYS: 1 worker hash, 2 workers zset
-- ARGV: 1 wid, 2 '1' to repair
-- Returns the problems: {'worker without record', ''} (the heartbeat entry is dropped) or
-- {'worker without heartbeat', ''} (the entry is made from the record's last beat).
local wid, fix = ARGV[1], ARGV[2] == '1'
local beat = redis.call('ZSCORE', KEYS[2], wid)
if redis.call('EXISTS', KEYS[1]) == 0 then
  if beat then
    if fix then redis.call('ZREM', KEYS[2], wid) end
    return {{'worker without record', ''}}
  end
elseif not beat then
  if fix then redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'beat') or 0, wid) end
  return {{'worker without heartbeat', ''}}
end
return {}
