-- beat: record a worker's heartbeat and move its state forward only, atomically.
-- KEYS: 1 worker hash, 2 workers zset
-- ARGV: 1 wid, 2 now, 3 rss_kb, 4 requested state ('' = none)
-- States only move running -> quiet -> terminate. Returns the state after the beat, or false
-- when the worker is not registered.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local rank = {running = 0, quiet = 1, terminate = 2}
local state = redis.call('HGET', KEYS[1], 'state') or 'running'
local wanted = ARGV[4]
if rank[wanted] and rank[wanted] > (rank[state] or 0) then
  state = wanted
  redis.call('HSET', KEYS[1], 'state', state)
end
redis.call('HSET', KEYS[1], 'rss_kb', ARGV[3], 'beat', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return state
